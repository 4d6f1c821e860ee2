//! Pod and container lifecycle, end to end, leaving nothing behind.

use std::time::Duration;

use basalt_cri_tests::{api, cri_test, Endpoint, Harness};
use basalt_testsupport::fixtures::BUSYBOX;

cri_test!(full_pod_lifecycle, runc);

/// pull, RunPodSandbox, Create, Start, RUNNING, Stop, Remove, RemovePodSandbox; then the lists are empty and no
/// netns, veth, cgroup, mount, IP lease or process of the pod is left.
async fn full_pod_lifecycle(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    let image_ref = h.pull(BUSYBOX).await;
    assert!(!image_ref.is_empty(), "PullImage returned no image ref");

    let pod = h.run_pod("lifecycle").await;
    let mut rt = h.cri.runtime.clone();
    let st = h.sandbox_status(&pod.id).await.unwrap();
    assert_eq!(st.state, api::PodSandboxState::SandboxReady as i32);
    let ip = st
        .network
        .as_ref()
        .map(|n| n.ip.clone())
        .unwrap_or_default();
    assert!(
        ip.starts_with(&format!("10.222.{}.", h.net.slot)),
        "pod IP {ip:?} not from the harness subnet {}",
        h.net.subnet
    );

    let cfg = h.container_config("main", BUSYBOX, &["sleep", "3600"]);
    let id = h.create_start(&pod, cfg).await;
    let status = h.container_status(&id).await.unwrap();
    assert_eq!(status.state, api::ContainerState::ContainerRunning as i32);
    assert!(status.started_at > 0);

    let r = h.exec_sync(&id, &["hostname"], 10).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "lifecycle\n",
        "pod hostname: {r:?}"
    );

    let fp = h.footprint(&pod).await;
    assert!(
        !fp.pids.is_empty(),
        "no process found in the pod cgroup {}",
        fp.cgroup_parent
    );
    assert!(fp.netns_inode.is_some(), "pod has no own netns: {fp:?}");
    assert!(fp.host_veth.is_some(), "pod has no veth: {fp:?}");
    assert!(
        fp.lease.as_ref().is_some_and(|l| l.exists()),
        "no IP lease: {fp:?}"
    );

    rt.stop_container(api::StopContainerRequest {
        container_id: id.clone(),
        timeout: 2,
    })
    .await
    .unwrap();
    let st = h
        .wait_state(
            &id,
            api::ContainerState::ContainerExited,
            Duration::from_secs(10),
        )
        .await;
    assert!(st.finished_at >= st.started_at);
    rt.remove_container(api::RemoveContainerRequest {
        container_id: id.clone(),
    })
    .await
    .unwrap();
    h.remove_pod(&pod).await;
    h.assert_empty().await;
    h.assert_gone(&fp).await;
}

cri_test!(daemon_sigkill_recovers);

/// Crash-only: SIGKILL the CRI server while a pod runs, start it again on the same directories; the pod and its
/// container are still there and running, exec works, and removing them still cleans everything.
async fn daemon_sigkill_recovers(endpoint: Endpoint) {
    let mut h = Harness::start(endpoint).await;
    let (pod, id) = h.run_sleeping_pod("crash").await;
    // A second container that exits, with code 42, only while the daemon is down.
    let signal = tempfile::tempdir().unwrap();
    let marker = format!("exit-while-down-{}", h.token);
    let mut cfg = h.container_config(
        "exiter",
        BUSYBOX,
        &[
            "sh",
            "-c",
            &format!("until [ -f /signal/go ]; do sleep 0.1; done; exit 42 # {marker}"),
        ],
    );
    cfg.mounts.push(api::Mount {
        container_path: "/signal".into(),
        host_path: signal.path().to_string_lossy().into_owned(),
        ..Default::default()
    });
    let exiter = h.create_start(&pod, cfg).await;
    let before = h.footprint(&pod).await;
    let pid = basalt_cri_tests::leaks::wait_pid_naming(&marker, Duration::from_secs(10))
        .await
        .expect("the exiter's process");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    };
    h.kill_daemon();
    // The exit comes after this moment; the status read below is after the monitor recorded it.
    let signalled_at = now();
    std::fs::write(signal.path().join("go"), "").unwrap();
    // Gone from /proc only once reaped: its monitor (or containerd's shim) has seen the exit by then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exiter did not exit"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.start_daemon_again().await;
    let st = h
        .container_status(&exiter)
        .await
        .expect("the exiter is still known");
    let read_at = now();
    assert_eq!(
        st.state,
        api::ContainerState::ContainerExited as i32,
        "{st:?}"
    );
    assert_eq!(st.exit_code, 42, "{st:?}");
    assert!(
        st.finished_at > st.started_at
            && st.finished_at >= signalled_at
            && st.finished_at <= read_at,
        "finish time {} not after start {} and the go signal {signalled_at}, and before the status was \
         read {read_at}",
        st.finished_at,
        st.started_at
    );

    let st = h
        .container_status(&id)
        .await
        .expect("container survives a daemon crash");
    assert_eq!(
        st.state,
        api::ContainerState::ContainerRunning as i32,
        "{st:?}"
    );
    let pods = h
        .cri
        .runtime
        .clone()
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].id, pod.id);
    assert_eq!(pods[0].state, api::PodSandboxState::SandboxReady as i32);
    let r = h.exec_sync(&id, &["echo", "still here"], 10).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&r.stdout), "still here\n");
    let after = h.footprint(&pod).await;
    assert_eq!(after.ip, before.ip, "the pod keeps its IP");
    assert_eq!(
        after.netns_inode, before.netns_inode,
        "the pod keeps its netns"
    );

    h.remove_pod(&pod).await;
    h.assert_gone(&before).await;
    h.assert_empty().await;
}

/// A pod's monitor runs in the monitors' cgroup (`agent.monitor-cgroup`, default `/basalt-monitors`), apart from
/// the pod it watches, so that the pod's limits never count it and the node's overhead is accounted in one
/// place. The agent moves it there while RunPodSandbox runs CNI ADD and CreateContainer waits for the move, so
/// it is there once a container exists. Basalt only: containerd 1.6's shims stay in containerd's own cgroup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_run_in_their_own_cgroup() {
    let Some(h) = Harness::start_basalt_only("monitors_run_in_their_own_cgroup").await else {
        return;
    };
    let (pod, _) = h.run_sleeping_pod("monitorcg").await;
    let monitor = *basalt_cri_tests::leaks::pids_naming(&pod.id)
        .iter()
        .find(|p| basalt_cri_tests::leaks::comm(**p) == "basalt")
        .expect("the pod's monitor");
    let lines =
        std::fs::read_to_string(format!("/proc/{monitor}/cgroup")).expect("the monitor's cgroups");
    assert!(
        lines.lines().any(|l| l.ends_with(":/basalt-monitors")),
        "monitor {monitor} is not in /basalt-monitors:\n{lines}"
    );
    // Every resource controller (`<n>:<controllers>:<path>`; the v2 line has none, named hierarchies are not
    // controllers): on a v1 or hybrid host the monitor's memory, cpu and pids are all counted there.
    for line in lines.lines() {
        let controllers = line.split(':').nth(1).unwrap_or_default();
        if controllers.is_empty() || controllers.starts_with("name=") {
            continue;
        }
        assert!(line.ends_with(":/basalt-monitors"), "{line} in\n{lines}");
    }
    // And only monitors: the container they start is born in its own cgroup, not theirs.
    for pid in basalt_cri_tests::leaks::pids_in_cgroup("/basalt-monitors") {
        // Empty: it exited since the listing (other cases remove pods meanwhile).
        let comm = basalt_cri_tests::leaks::comm(pid);
        assert!(
            comm.is_empty() || comm == "basalt",
            "{comm} (pid {pid}) in /basalt-monitors"
        );
    }
    h.remove_pod(&pod).await;
    h.assert_empty().await;
}

/// Air-gapped nodes: an OCI archive dropped into `<data-dir>/images` is imported, pinned, when the agent
/// starts, and is then usable without any registry (k3s's agent/images). Basalt only: containerd has no such
/// directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airgap_archives_are_imported_at_start() {
    let Some(mut h) = Harness::start_basalt_only("airgap_archives_are_imported_at_start").await
    else {
        return;
    };
    let archive = &h
        .fixtures()
        .get(basalt_testsupport::fixtures::NONROOT)
        .oci_archive;
    let dir = h.dir().join("data/images");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(archive, dir.join("nonroot.oci.tar")).unwrap();
    h.restart_daemon().await;
    let images = h
        .cri
        .images
        .clone()
        .list_images(api::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    let img = images
        .iter()
        .find(|i| i.repo_tags.iter().any(|t| t.contains("nonroot")))
        .unwrap_or_else(|| panic!("the archive's image is not listed: {images:?}"));
    assert!(img.pinned, "{img:?}");
    // It runs, with no pull.
    let pod = h.run_pod("airgap").await;
    let name = img.repo_tags[0].clone();
    let mut cfg = h.container_config("c", BUSYBOX, &["id", "-u"]);
    cfg.image = Some(api::ImageSpec {
        image: name,
        ..Default::default()
    });
    let id = h.create_container(&pod, cfg).await.unwrap();
    h.start_container(&id).await.unwrap();
    let st = h
        .wait_state(
            &id,
            api::ContainerState::ContainerExited,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    // The image's own USER (1000) ran it.
    assert_eq!(st.user.and_then(|u| u.linux).map(|l| l.uid), Some(1000));
    h.remove_pod(&pod).await;
}

cri_test!(dead_monitor_is_cleaned_up);

/// The pod's monitor (our `basalt shim`, containerd's shim) is SIGKILLed while a container runs: the pod turns
/// NOTREADY, and RemovePodSandbox still leaves nothing behind (the container's processes, cgroup, mounts, netns).
async fn dead_monitor_is_cleaned_up(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    let (pod, _) = h.run_sleeping_pod("deadshim").await;
    let monitors = basalt_cri_tests::leaks::pids_naming(&pod.id);
    assert!(!monitors.is_empty(), "no process names the sandbox");
    for p in &monitors {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*p as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let mut state = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let s = h.sandbox_status(&pod.id).await.unwrap().state;
        state = Some(s);
        if s == api::PodSandboxState::SandboxNotready as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "[{}] sandbox state after its monitor died: {state:?}",
        endpoint.name()
    );
    if endpoint == Endpoint::Basalt {
        assert_eq!(state, Some(api::PodSandboxState::SandboxNotready as i32));
    }
    h.remove_pod(&pod).await;
    h.assert_empty().await;
}

/// Mount points under `dir` now.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_string_lossy();
    basalt_cri_tests::leaks::mountinfo()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(&*dir))
        .collect()
}

/// Names in `dir`, sorted; none when it does not exist.
fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A CreateContainer cut short by a SIGKILL after the container's root, its image-volume root and its bundle
/// were made but before its record was written (simulated by deleting the record while the agent is down):
/// the restarted agent unmounts and removes them before it serves, and leaves the recorded container alone.
/// Basalt only: these are our image store's and bundle directory's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roots_of_a_create_cut_short_are_removed_at_start() {
    let Some(mut h) =
        Harness::start_basalt_only("roots_of_a_create_cut_short_are_removed_at_start").await
    else {
        return;
    };
    let (pod, kept) = h.run_sleeping_pod("cutshort").await;
    h.pull(basalt_testsupport::fixtures::NONROOT).await;
    let mut cfg = h.container_config("cut", BUSYBOX, &["sleep", "3600"]);
    cfg.mounts.push(api::Mount {
        container_path: "/img".into(),
        readonly: true,
        image: Some(api::ImageSpec {
            image: h.image(basalt_testsupport::fixtures::NONROOT),
            ..Default::default()
        }),
        ..Default::default()
    });
    let cut = h.create_container(&pod, cfg).await.unwrap();
    let (roots, bundles) = (
        h.dir().join("data/images/containers"),
        h.dir().join("run/bundles"),
    );
    let cut_volume = format!("{cut}-image0");
    assert_eq!(names_in(&roots).len(), 3, "{:?}", names_in(&roots));
    assert!(
        names_in(&bundles).contains(&cut),
        "{:?}",
        names_in(&bundles)
    );

    h.kill_daemon();
    std::fs::remove_file(h.dir().join(format!("data/cri/containers/{cut}.json")))
        .expect("the cut container's record");
    h.start_daemon_again().await;

    assert_eq!(names_in(&roots), vec![kept.clone()]);
    assert!(
        !names_in(&bundles).contains(&cut),
        "{:?}",
        names_in(&bundles)
    );
    let mounts = mounts_under(h.dir());
    assert!(
        !mounts
            .iter()
            .any(|m| m.contains(&cut) || m.contains(&cut_volume)),
        "{mounts:#?}"
    );
    // The recorded container is untouched.
    let r = h.exec_sync(&kept, &["true"], 10).await.unwrap();
    assert_eq!(r.exit_code, 0);
    assert!(
        h.daemon_log()
            .contains("removed what interrupted creates left"),
        "{}",
        h.daemon_log()
    );
    h.remove_pod(&pod).await;
    h.assert_empty().await;
    assert_eq!(names_in(&roots), Vec::<String>::new());
}

/// A newcomer's node: the whole agent (kubelet included) started with no CNI network configured writes the
/// default bridge network (k3s's layout: 10.42.0.0/16, this node's /24) and reports the network ready. Basalt
/// only: containerd writes no network of its own. The `--cri-only` case (nothing written, NetworkReady false)
/// is in the kubelet suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_network_writes_the_default_one() {
    if basalt_cri_tests::endpoint::skip_unavailable(Endpoint::Basalt, "default network") {
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("basalt-defnet-")
        .tempdir()
        .unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("m")).unwrap();
    let cni = d.join("cni");
    let cgroup = format!("/basalt-critests/defnet-{}", std::process::id());
    let mut agent = std::process::Command::new(basalt_cri_tests::endpoint::basalt_bin())
        .args(["--config", "/dev/null", "--data-dir"])
        .arg(d.join("data"))
        .arg("--run-dir")
        .arg(d.join("run"))
        .args([
            "agent",
            "--kubelet-address",
            "127.0.0.1:0",
            "--manifest-dir",
        ])
        .arg(d.join("m"))
        .arg("--cni-conf-dir")
        .arg(&cni)
        .arg("--pod-log-dir")
        .arg(d.join("logs"))
        .args(["--cgroup-parent", &cgroup])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let ready =
        basalt_cri_tests::Cri::wait_ready(&d.join("run/cri.sock"), Duration::from_secs(30)).await;
    let status = match ready {
        Ok(c) => c
            .runtime
            .clone()
            .status(api::StatusRequest { verbose: false })
            .await
            .map(|r| r.into_inner()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    let _ = agent.kill();
    let _ = agent.wait();
    // The kubelet's QoS levels under its cgroup parent (empty: no pod ran), deepest first.
    for top in basalt_cri_tests::leaks::cgroup_dirs(&cgroup) {
        for rel in ["kubepods/burstable", "kubepods/besteffort", "kubepods", ""] {
            let _ = std::fs::remove_dir(top.join(rel));
        }
    }
    let log = std::fs::read_to_string(d.join("agent.log")).unwrap_or_default();
    let status = status.unwrap_or_else(|e| panic!("{e}\n{log}"));
    let net = status
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(net.status, "{net:?}\n{log}");
    let conf: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cni.join("10-basalt.conflist")).unwrap()).unwrap();
    assert_eq!(conf["plugins"][0]["type"], "bridge", "{conf}");
    assert_eq!(
        conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"], "10.42.0.0/24",
        "{conf}"
    );
    assert!(log.contains("wrote the default bridge network"), "{log}");
    // The agent's own directories only: no pod ran, so no bridge, mount or process of it exists.
    let mounts: Vec<String> = basalt_cri_tests::leaks::mountinfo()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m.starts_with(&*d.to_string_lossy()))
        .collect();
    assert!(mounts.is_empty(), "{mounts:?}");
}
