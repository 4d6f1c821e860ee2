//! Pod startup and memory, containerd+runc against Basalt, measured in the same run.
//!
//! 1. Startup: RunPodSandbox + CreateContainer + StartContainer until the container is RUNNING, image already
//!    present; N runs per endpoint, interleaved; medians and the ratio basalt/containerd.
//! 2. Memory: with M pods running, the summed VmRSS of the CRI daemon and its per-pod helpers (containerd +
//!    containerd-shim-runc-v2 processes of the instance; basalt + its shims), pods' own processes excluded.
//!
//! `cargo bench -p basalt-cri-tests --bench pod_startup` uses N = M = 10; under `cargo test` it runs 3 of each
//! as a smoke test. `BASALT_BENCH_ITERS` overrides both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basalt_cri_tests::harness::CGROUP_ROOT;
use basalt_cri_tests::{leaks, Endpoint, Harness, Pod};
use basalt_testsupport::fixtures::BUSYBOX;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n: usize = std::env::var("BASALT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10 } else { 3 });

    let mut harnesses = Vec::new();
    for endpoint in [Endpoint::Containerd, Endpoint::Basalt] {
        if basalt_cri_tests::endpoint::skip_unavailable(endpoint, "pod_startup bench") {
            continue;
        }
        let h = Harness::start(endpoint).await;
        h.pull(BUSYBOX).await;
        // Warm-up: containerd pulls its sandbox image on the first RunPodSandbox; that is not startup time.
        let (pod, _) = start_pod(&h, "warmup").await;
        h.remove_pod(&pod).await;
        harnesses.push(h);
    }

    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); harnesses.len()];
    for i in 0..n {
        // Interleaved, so drift in machine load hits every endpoint alike.
        for (k, h) in harnesses.iter().enumerate() {
            let (pod, took) = start_pod(h, &format!("bench{i}")).await;
            samples[k].push(took);
            h.remove_pod(&pod).await;
        }
    }
    println!("pod startup: RunPodSandbox + CreateContainer + StartContainer until RUNNING, image present, {n} runs");
    let mut medians = BTreeMap::new();
    for (h, s) in harnesses.iter().zip(&mut samples) {
        s.sort();
        let median = s[s.len() / 2];
        println!(
            "  {:<10} median {:>8.1} ms  (min {:.1}, max {:.1})",
            h.endpoint.name(),
            ms(median),
            ms(s[0]),
            ms(s[s.len() - 1])
        );
        medians.insert(h.endpoint.name(), median);
    }
    match (medians.get("basalt"), medians.get("containerd")) {
        (Some(b), Some(c)) => println!("  ratio basalt/containerd: {:.2}", ms(*b) / ms(*c)),
        // A benchmark is its ratio: one side missing is a failure, not a shorter report.
        _ if full => panic!("pod startup: no ratio, only {:?} ran", medians.keys()),
        _ => {}
    }

    println!("memory: VmRSS of the CRI daemon and its per-pod helpers with {n} pods running");
    let mut rss = BTreeMap::new();
    for h in &harnesses {
        let mut pods = Vec::new();
        for i in 0..n {
            pods.push(start_pod(h, &format!("rss{i}")).await.0);
        }
        let (total, by_comm) = runtime_rss_kib(h);
        println!(
            "  {:<10} {:>8} KiB total  {}",
            h.endpoint.name(),
            total,
            by_comm
                .iter()
                .map(|(c, (count, kib))| format!("{c}×{count}={kib} KiB"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        rss.insert(h.endpoint.name(), total);
        for p in &pods {
            h.remove_pod(p).await;
        }
    }
    match (rss.get("basalt"), rss.get("containerd")) {
        (Some(b), Some(c)) => println!("  ratio basalt/containerd: {:.2}", *b as f64 / *c as f64),
        _ if full => panic!("memory: no ratio, only {:?} ran", rss.keys()),
        _ => {}
    }
    if let Some(h) = harnesses.iter().find(|h| h.endpoint == Endpoint::Basalt) {
        kubelet_idle_rss(h, n).await;
    }
}

/// Issue #7's number: the whole agent (CRI server + kubelet) running `n` static pods, idle.
async fn kubelet_idle_rss(h: &Harness, n: usize) {
    let tmp = tempfile::Builder::new()
        .prefix("basalt-kubelet-rss-")
        .tempdir()
        .unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("m")).unwrap();
    std::fs::create_dir_all(d.join("cni")).unwrap();
    let cgroup = format!("{CGROUP_ROOT}/{}-kubelet", h.token);
    for i in 0..n {
        std::fs::write(
            d.join("m").join(format!("p{i}.yaml")),
            format!(
                "kind: Pod\nmetadata: {{name: p{i}}}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: \"{}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n",
                h.image(BUSYBOX)
            ),
        )
        .unwrap();
    }
    let mut agent = std::process::Command::new(basalt_cri_tests::endpoint::basalt_bin())
        .args(["--config", "/dev/null", "--log-level", "warn", "--data-dir"])
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
        .arg(d.join("cni"))
        .arg("--pod-log-dir")
        .arg(d.join("logs"))
        .args([
            "--cgroup-parent",
            &cgroup,
            "--insecure-registry",
            &h.registry.host(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let cri = basalt_cri_tests::Cri::wait_ready(&d.join("run/cri.sock"), Duration::from_secs(30))
        .await
        .unwrap();
    let running = || async {
        cri.runtime
            .clone()
            .list_containers(basalt_cri_tests::api::ListContainersRequest::default())
            .await
            .map(|r| {
                r.into_inner()
                    .containers
                    .iter()
                    .filter(|c| {
                        c.state == basalt_cri_tests::api::ContainerState::ContainerRunning as i32
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while running().await < n {
        assert!(
            Instant::now() < deadline,
            "{n} static pods did not start: {}",
            std::fs::read_to_string(d.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Idle: a few sync periods after the last start.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let dir = d.to_string_lossy().into_owned();
    let agent_kib = vm_rss_kib(agent.id());
    let monitors: Vec<u32> = leaks::pids_naming(&dir)
        .into_iter()
        .filter(|p| *p != agent.id())
        .collect();
    let monitors_kib: u64 = monitors.iter().map(|p| vm_rss_kib(*p)).sum();
    println!("kubelet: `basalt agent` (CRI server + kubelet) with {n} static pods running, idle");
    println!(
        "  agent {agent_kib} KiB, monitors x{} {monitors_kib} KiB, total {} KiB",
        monitors.len(),
        agent_kib + monitors_kib
    );
    // The manifests go, the pods go; then the agent stops.
    for i in 0..n {
        std::fs::remove_file(d.join("m").join(format!("p{i}.yaml"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = cri
            .runtime
            .clone()
            .list_pod_sandbox(basalt_cri_tests::api::ListPodSandboxRequest::default())
            .await
            .map(|r| r.into_inner().items.len())
            .unwrap_or(0);
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} static pods not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = agent.wait();
    basalt_cri_tests::remove_kubelet_cgroups(&cgroup);
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The clock covers the three CRI calls and the status polls until RUNNING; the harness's own bookkeeping
/// (where the pod's netns is mounted, for the leak check) comes after it.
async fn start_pod(h: &Harness, name: &str) -> (Pod, Duration) {
    let t = Instant::now();
    let pod = h
        .run_pod_with(h.pod_config(name))
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e}\n{}", h.daemon_log_tail()));
    h.create_start(
        &pod,
        h.container_config("main", BUSYBOX, &["sleep", "3600"]),
    )
    .await;
    let took = t.elapsed();
    h.track(&pod);
    (pod, took)
}

/// The daemon plus every process naming the harness directory in its command line (containerd's shims get
/// `-address <dir>/containerd.sock`; Basalt's shims their state path), minus the pods' own processes.
fn runtime_rss_kib(h: &Harness) -> (u64, BTreeMap<String, (usize, u64)>) {
    let dir = h.dir().to_string_lossy().into_owned();
    let in_pods = leaks::pids_in_cgroup(&format!("{CGROUP_ROOT}/{}", h.token));
    let mut by_comm: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for pid in leaks::all_pids() {
        if in_pods.contains(&pid) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if pid != h.daemon_pid() && !String::from_utf8_lossy(&cmdline).contains(&dir) {
            continue;
        }
        let kib = vm_rss_kib(pid);
        let e = by_comm.entry(leaks::comm(pid)).or_default();
        e.0 += 1;
        e.1 += kib;
    }
    (by_comm.values().map(|(_, k)| k).sum(), by_comm)
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
