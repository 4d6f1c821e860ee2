//! The kubelet's static-pod suite (issue #7), run against both CRI endpoints: manifests are dropped into a
//! temp manifest dir and the outcome is watched through the kubelet (status, API) and the CRI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_cri_tests::{api, cri_test, Endpoint, Harness};
use basalt_kubelet::Kubelet;
use k8s_openapi::api::core::v1::Pod;

const BUSYBOX: &str = "busybox";

struct Node {
    kubelet: Arc<Kubelet>,
    dir: tempfile::TempDir,
    api: SocketAddr,
    token: String,
    cert: String,
    cgroup_root: String,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    async fn start(h: &Harness) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("basalt-kubelet-")
            .tempdir()
            .unwrap();
        let name = format!("n{}", h.token);
        let cgroup_root = format!("/basalt-critests/{}/kubepods", h.token);
        let settings = basalt_kubelet::Settings {
            node_name: name.clone(),
            host_ip: "127.0.0.1".into(),
            manifest_dir: dir.path().join("manifests"),
            log_root: dir.path().join("logs"),
            pods_root: dir.path().join("pods"),
            cgroup_root: cgroup_root.clone(),
            seccomp_default: true,
            backoff: Default::default(),
            sync_period: Duration::from_millis(500),
            file_check_frequency: Duration::from_secs(20),
        };
        std::fs::create_dir_all(&settings.manifest_dir).unwrap();
        let cri = basalt_kubelet::cri::Cri::connect(h.socket()).unwrap();
        let kubelet = Kubelet::new(cri, settings);
        let creds = basalt_kubelet::api::credentials(dir.path(), &[name]).unwrap();
        let (token, cert) = (creds.token.clone(), creds.cert_pem.clone());
        let api =
            basalt_kubelet::api::serve(kubelet.clone(), "127.0.0.1:0".parse().unwrap(), creds)
                .await
                .unwrap();
        let task = tokio::spawn(kubelet.clone().run());
        Node {
            kubelet,
            dir,
            api,
            token,
            cert,
            cgroup_root,
            task,
        }
    }

    /// Written elsewhere and renamed in, as an operator's `cp` + `mv` would: never a half-written file.
    fn put(&self, file: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("manifests").join(file)).unwrap();
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.path().join("manifests").join(file)).unwrap();
    }

    fn pod(&self, name: &str) -> Option<Pod> {
        self.kubelet.pods().into_iter().find(|p| {
            p.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(&format!("{name}-")))
        })
    }

    /// Polls the pod's status until `ok` holds (a deadline, not a sleep: it returns as soon as it holds).
    async fn wait(&self, name: &str, what: &str, ok: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(p) = self.pod(name) {
                if ok(&p) {
                    return p;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{name}: {what}: still {}",
                        serde_json::to_string_pretty(&p.status).unwrap()
                    );
                }
            } else if Instant::now() > deadline {
                panic!("{name}: {what}: no such pod");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// After a manifest is removed: the kubelet forgets the pod and the runtime has nothing of it.
    async fn wait_gone(&self, h: &Harness, uid: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut rt = h.cri.runtime.clone();
        loop {
            let mut sel = HashMap::new();
            sel.insert("io.kubernetes.pod.uid".to_owned(), uid.to_owned());
            let sandboxes = rt
                .list_pod_sandbox(api::ListPodSandboxRequest {
                    filter: Some(api::PodSandboxFilter {
                        label_selector: sel,
                        ..Default::default()
                    }),
                })
                .await
                .unwrap()
                .into_inner()
                .items;
            let known = self
                .kubelet
                .pods()
                .iter()
                .any(|p| p.metadata.uid.as_deref() == Some(uid));
            let pod_dir = self.dir.path().join("pods").join(uid);
            if sandboxes.is_empty() && !known && !pod_dir.exists() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pod {uid} not gone: {} sandboxes, known {known}",
                sandboxes.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let ca = ureq::tls::Certificate::from_pem(self.cert.as_bytes())
            .unwrap()
            .to_owned();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                    .build(),
            )
            .build()
            .into();
        let mut req = agent.get(&format!("https://127.0.0.1:{}{path}", self.api.port()));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().unwrap();
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.task.abort();
        // The QoS levels this node made; each pod's own cgroup is checked gone by the tests.
        for ctrl in [
            "",
            "memory",
            "cpu,cpuacct",
            "pids",
            "blkio",
            "devices",
            "freezer",
            "hugetlb",
            "net_cls,net_prio",
            "perf_event",
            "cpuset",
            "systemd",
            "rdma",
            "misc",
        ] {
            let base = Path::new("/sys/fs/cgroup")
                .join(ctrl)
                .join(self.cgroup_root.trim_start_matches('/'));
            for d in [
                base.join("burstable"),
                base.join("besteffort"),
                base.clone(),
            ] {
                let _ = std::fs::remove_dir(&d);
            }
        }
    }
}

fn container_id(p: &Pod, name: &str) -> String {
    let st = p.status.as_ref().unwrap();
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .and_then(|c| c.container_id.clone())
        .map(|id| id.split("://").nth(1).unwrap_or_default().to_owned())
        .unwrap_or_default()
}

fn find<'a>(p: &'a Pod, name: &str) -> Option<&'a k8s_openapi::api::core::v1::ContainerStatus> {
    let st = p.status.as_ref()?;
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

fn status<'a>(p: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    find(p, name).unwrap_or_else(|| panic!("no status for {name}"))
}

fn running(p: &Pod, name: &str) -> bool {
    find(p, name).is_some_and(|s| s.state.as_ref().is_some_and(|s| s.running.is_some()))
}

fn restarts(p: &Pod, name: &str) -> i32 {
    find(p, name).map(|s| s.restart_count).unwrap_or(0)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

/// A port for host-network pods that parallel tests (and the two endpoints) do not share.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A web server with readiness (httpGet) and liveness (exec) probes; a liveness failure restarts it, a second
/// one soon after is held back (CrashLoopBackOff). Its pod cgroup sits under the burstable QoS level with the
/// pod's memory limit. The kubelet API serves its status and logs to token holders only.
async fn web_pod_probes_restart_and_api(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let port = free_port();
    node.put(
        "web.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: {img}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && touch /tmp/healthy && echo serving && exec httpd -f -p 127.0.0.1:{port} -h /www"]
    ports: [{{name: http, containerPort: {port}}}]
    resources: {{requests: {{memory: 16Mi}}, limits: {{memory: 64Mi}}}}
    readinessProbe: {{httpGet: {{path: /index.html, port: http}}, periodSeconds: 1}}
    livenessProbe: {{exec: {{command: [test, -f, /tmp/healthy]}}, periodSeconds: 1, failureThreshold: 1}}
"#,
            img = h.image(BUSYBOX)
        ),
    );
    let p = node
        .wait("web", "ready", |p| phase(p) == "Running" && ready(p))
        .await;
    assert_eq!(
        p.status.as_ref().unwrap().qos_class.as_deref(),
        Some("Burstable")
    );
    let pod_uid = uid(&p);

    // The pod cgroup: burstable, with the summed memory limit.
    let rel = format!(
        "{}/burstable/pod{}",
        node.cgroup_root.trim_start_matches('/'),
        pod_uid
    );
    let limit = if basalt_runtime_v2() {
        std::fs::read_to_string(Path::new("/sys/fs/cgroup").join(&rel).join("memory.max"))
    } else {
        std::fs::read_to_string(
            Path::new("/sys/fs/cgroup/memory")
                .join(&rel)
                .join("memory.limit_in_bytes"),
        )
    };
    assert_eq!(limit.unwrap().trim(), (64u64 << 20).to_string());

    // Liveness: remove the marker, the container is killed and started again.
    let first = container_id(&p, "web");
    h.exec_sync(&first, &["rm", "/tmp/healthy"], 10)
        .await
        .unwrap();
    let p = node
        .wait("web", "restarted after a liveness failure", |p| {
            restarts(p, "web") >= 1
                && find(p, "web").is_some_and(|s| {
                    s.last_state
                        .as_ref()
                        .is_some_and(|s| s.terminated.is_some())
                })
        })
        .await;
    assert_ne!(container_id(&p, "web"), first);
    let p = node.wait("web", "ready again", ready).await;
    // A second failure within the back-off: the restart waits, and the status says why.
    h.exec_sync(&container_id(&p, "web"), &["rm", "/tmp/healthy"], 10)
        .await
        .unwrap();
    node.wait("web", "in CrashLoopBackOff", |p| {
        find(p, "web")
            .and_then(|s| s.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.as_deref())
            == Some("CrashLoopBackOff")
    })
    .await;

    // The kubelet API.
    assert_eq!(node.get("/healthz", None), (200, "ok".to_owned()));
    assert_eq!(node.get("/pods", None).0, 401);
    assert_eq!(node.get("/pods", Some("wrong")).0, 401);
    let (code, body) = node.get("/pods", Some(&node.token));
    assert_eq!(code, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"][0]["metadata"]["uid"], pod_uid.as_str());
    let name = p.metadata.name.clone().unwrap();
    let (code, logs) = node.get(
        &format!("/containerLogs/default/{name}/web?previous=true"),
        Some(&node.token),
    );
    assert_eq!((code, logs.as_str()), (200, "serving\n"));
    let (code, metrics) = node.get("/metrics", Some(&node.token));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("basalt_kubelet_static_pods 1"),
        "{metrics}"
    );

    node.remove("web.yaml");
    node.wait_gone(&h, &pod_uid).await;
    let cg = if basalt_runtime_v2() {
        Path::new("/sys/fs/cgroup").join(&rel)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(&rel)
    };
    assert!(!cg.exists(), "{} left behind", cg.display());
}

fn basalt_runtime_v2() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/sys/fs/cgroup") && l.contains(" - cgroup2 "))
}

/// Init containers run once each, in order, before the app container; their statuses say Completed.
async fn init_containers_run_once_in_order(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    node.put(
        "init.yaml",
        &format!(
            r#"kind: Pod
metadata: {{name: init}}
spec:
  initContainers:
  - {{name: one, image: "{img}", imagePullPolicy: IfNotPresent, command: [sh, -c, "echo one >> /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  - {{name: two, image: "{img}", imagePullPolicy: IfNotPresent, command: [sh, -c, "echo two >> /work/order"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  containers:
  - {{name: main, image: "{img}", imagePullPolicy: IfNotPresent, command: [sleep, "3600"], volumeMounts: [{{name: work, mountPath: /work}}]}}
  volumes: [{{name: work, emptyDir: {{}}}}]
"#
        ),
    );
    let p = node
        .wait("init", "running", |p| {
            phase(p) == "Running" && running(p, "main")
        })
        .await;
    for c in ["one", "two"] {
        let s = status(&p, c);
        assert_eq!(s.restart_count, 0, "{c}");
        let t = s.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (t.exit_code, t.reason.as_deref()),
            (0, Some("Completed")),
            "{c}"
        );
    }
    let out = h
        .exec_sync(&container_id(&p, "main"), &["cat", "/work/order"], 10)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    let init_done = p
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Initialized" && c.status == "True");
    assert!(init_done);
    let u = uid(&p);
    node.remove("init.yaml");
    node.wait_gone(&h, &u).await;
}

/// A sidecar (an init container with restartPolicy Always) keeps running while the app container crashes
/// and restarts.
async fn sidecar_outlives_app_restarts(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    node.put(
        "side.yaml",
        &format!(
            r#"kind: Pod
metadata: {{name: side}}
spec:
  terminationGracePeriodSeconds: 2
  initContainers:
  - {{name: proxy, image: "{img}", imagePullPolicy: IfNotPresent, restartPolicy: Always, command: [sleep, "3600"]}}
  containers:
  - {{name: app, image: "{img}", imagePullPolicy: IfNotPresent, command: [sh, -c, "exit 1"]}}
"#
        ),
    );
    let p = node
        .wait("side", "proxy running", |p| running(p, "proxy"))
        .await;
    let proxy = container_id(&p, "proxy");
    let p = node
        .wait("side", "app restarted", |p| restarts(p, "app") >= 1)
        .await;
    let s = status(&p, "proxy");
    assert_eq!(
        container_id(&p, "proxy"),
        proxy,
        "the sidecar was restarted"
    );
    assert_eq!(s.restart_count, 0);
    assert!(s.state.as_ref().unwrap().running.is_some());
    let u = uid(&p);
    node.remove("side.yaml");
    node.wait_gone(&h, &u).await;
}

/// OnFailure does not restart a container that succeeded; Never does not restart one that failed.
async fn on_failure_and_never(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    for (name, policy, code) in [("ok", "OnFailure", 0), ("bad", "Never", 3)] {
        node.put(
            &format!("{name}.yaml"),
            &format!(
                "kind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sh, -c, \"exit {code}\"]}}\n"
            ),
        );
    }
    let ok = node
        .wait("ok", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let bad = node.wait("bad", "Failed", |p| phase(p) == "Failed").await;
    // Another few sync passes: still not restarted.
    let passes = node
        .kubelet
        .metrics
        .pod_syncs
        .load(std::sync::atomic::Ordering::Relaxed);
    while node
        .kubelet
        .metrics
        .pod_syncs
        .load(std::sync::atomic::Ordering::Relaxed)
        < passes + 6
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (p, code) in [(node.pod("ok").unwrap(), 0), (node.pod("bad").unwrap(), 3)] {
        let s = status(&p, "c");
        assert_eq!(s.restart_count, 0, "{:?}", p.metadata.name);
        assert_eq!(
            s.state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            code
        );
    }
    for (f, p) in [("ok.yaml", ok), ("bad.yaml", bad)] {
        node.remove(f);
        node.wait_gone(&h, &uid(&p)).await;
    }
}

/// Removing the manifest: preStop runs first, then SIGTERM (trapped here), then SIGKILL once the grace
/// period is over; nothing of the pod is left.
async fn prestop_term_then_kill(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    let events = node.dir.path().join("events");
    std::fs::create_dir_all(&events).unwrap();
    node.put(
        "stop.yaml",
        &format!(
            r#"kind: Pod
metadata: {{name: stop}}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: c
    image: "{img}"
    imagePullPolicy: IfNotPresent
    command: [sh, -c, "trap 'echo term >> /events/log' TERM; echo started >> /events/log; while true; do sleep 1; done"]
    lifecycle: {{preStop: {{exec: {{command: [sh, -c, "echo prestop >> /events/log"]}}}}}}
    volumeMounts: [{{name: ev, mountPath: /events}}]
  volumes: [{{name: ev, hostPath: {{path: "{ev}", type: Directory}}}}]
"#,
            ev = events.display()
        ),
    );
    let log = events.join("log");
    let p = node
        .wait("stop", "started", |_| {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))
        })
        .await;
    let u = uid(&p);
    let t0 = Instant::now();
    node.remove("stop.yaml");
    node.wait_gone(&h, &u).await;
    let took = t0.elapsed();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "started\nprestop\nterm\n"
    );
    assert!(
        took >= Duration::from_secs(3),
        "SIGKILL came before the grace period ended: {took:?}"
    );
    // The hostPath content is the operator's: kept.
    assert!(events.join("log").exists());
    let logs: PathBuf = node.dir.path().join("logs");
    assert_eq!(
        std::fs::read_dir(&logs).map(|d| d.count()).unwrap_or(0),
        0,
        "pod logs left"
    );
}

/// A malformed manifest is reported (log and metric) and skipped; the good pod next to it runs, and keeps
/// running when the bad file changes.
async fn malformed_manifest_is_skipped(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    node.put(
        "bad.yaml",
        "kind: Pod\nmetadata: {name: bad}\nspec: {containers: [{name: c}]}\n",
    );
    node.put(
        "good.yaml",
        &format!("kind: Pod\nmetadata: {{name: good}}\nspec:\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n"),
    );
    let p = node
        .wait("good", "running", |p| phase(p) == "Running")
        .await;
    let errs = node.kubelet.manifest_errors.lock().unwrap().clone();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].to_string().contains("bad.yaml")
            && errs[0].to_string().contains("spec.containers[0].image"),
        "{}",
        errs[0]
    );
    assert!(
        node.kubelet
            .metrics
            .manifest_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    assert!(node.pod("bad").is_none());
    let id = container_id(&p, "c");
    node.put("bad.yaml", "kind: Pod\nmetadata: [broken\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while node
        .kubelet
        .metrics
        .manifest_errors
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the changed bad manifest was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = node.pod("good").unwrap();
    assert_eq!(container_id(&p, "c"), id);
    assert_eq!(phase(&p), "Running");
    let u = uid(&p);
    node.remove("good.yaml");
    node.wait_gone(&h, &u).await;
}

cri_test!(web_pod_probes_restart_and_api);
cri_test!(init_containers_run_once_in_order);
cri_test!(sidecar_outlives_app_restarts);
cri_test!(on_failure_and_never);
cri_test!(prestop_term_then_kill);
cri_test!(malformed_manifest_is_skipped);
