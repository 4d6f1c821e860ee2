//! The kubelet's static-pod suite (issue #7), run against both CRI endpoints: manifests are dropped into a
//! temp manifest dir and the outcome is watched through the kubelet (status, API) and the CRI.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_cri_tests::{api, cri_test, remove_kubelet_cgroups, Endpoint, Harness};
use basalt_kubelet::Kubelet;
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

mod common;

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
        Self::start_with(h, |_| {}).await
    }

    /// With settings changed by `tune` (a longer sync period, a manifest URL, …).
    async fn start_with(h: &Harness, tune: impl FnOnce(&mut basalt_kubelet::Settings)) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("basalt-kubelet-")
            .tempdir()
            .unwrap();
        Self::start_in(h, dir, tune).await
    }

    /// The kubelet stops where it is (as a SIGKILLed agent's would: its pods keep running), `meanwhile`
    /// runs, and a new kubelet starts on the same directories.
    async fn restart_after(
        mut self,
        h: &Harness,
        meanwhile: impl std::future::Future<Output = ()>,
    ) -> Node {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        self.task.abort();
        let _ = (&mut self.task).await;
        drop(self);
        meanwhile.await;
        Self::start_in(h, dir, |_| {}).await
    }

    async fn start_in(
        h: &Harness,
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut basalt_kubelet::Settings),
    ) -> Node {
        let name = common::node_name(h);
        let cgroup_root = common::cgroup_root(h);
        let settings = common::settings(h, dir.path());
        let mut settings = settings;
        tune(&mut settings);
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

    /// A pod the kubelet will not run: waits for the message in its status, checks the runtime has no
    /// sandbox of it, and returns its UID and the message.
    async fn refused(&self, name: &str) -> (String, String) {
        let p = self
            .wait(name, "refused", |p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.message.as_deref())
                    .is_some()
            })
            .await;
        let u = uid(&p);
        let sandboxes = self.kubelet.cri.pod_sandboxes(&u).await.unwrap();
        assert!(sandboxes.is_empty(), "{name} has sandboxes: {sandboxes:?}");
        (u, p.status.and_then(|s| s.message).unwrap_or_default())
    }

    /// After a manifest is removed: the kubelet forgets the pod and the runtime has nothing of it.
    async fn wait_gone(&self, h: &Harness, uid: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let sandboxes = h.cri.sandboxes_of(uid).await;
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

    /// A WebSocket to the kubelet API (TLS to its own certificate), speaking `v4.channel.k8s.io` as kubectl.
    async fn ws(&self, path: &str, token: Option<&str>) -> Result<Ws, String> {
        let tls = basalt_kubelet::api::connect(self.api, &self.cert)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = format!("wss://127.0.0.1:{}{path}", self.api.port())
            .into_client_request()
            .unwrap();
        let h = req.headers_mut();
        h.insert(
            "Sec-WebSocket-Protocol",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        if let Some(t) = token {
            h.insert("Authorization", format!("Bearer {t}").parse().unwrap());
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, tls)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap()),
            Some("v4.channel.k8s.io")
        );
        Ok(ws)
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
        remove_kubelet_cgroups(&self.cgroup_root);
    }
}

type Ws = tokio_tungstenite::WebSocketStream<basalt_kubelet::api::ClientStream>;

/// Reads channel frames until `done` holds for what came per channel (byte 0 of each frame), or fails at a
/// deadline; the stream ending is the end too.
async fn channels(
    ws: &mut Ws,
    done: impl Fn(&HashMap<u8, Vec<u8>>) -> bool,
) -> HashMap<u8, Vec<u8>> {
    let mut got: HashMap<u8, Vec<u8>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !done(&got) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) if !b.is_empty() => {
                got.entry(b[0]).or_default().extend_from_slice(&b[1..])
            }
            Ok(Some(Ok(_))) => {}
            Ok(_) => break,
            Err(_) => panic!("timed out; so far {got:?}"),
        }
    }
    got
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

/// A pod whose manifest went away while the kubelet was down is torn down by the next kubelet (its sandbox,
/// containers, pod directory and cgroup), as upstream's housekeeping does; a pod still declared is adopted,
/// not touched.
async fn orphaned_pods_are_cleaned_up_after_a_restart(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    for name in ["orphan", "kept"] {
        node.put(
            &format!("{name}.yaml"),
            &format!("kind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n"),
        );
    }
    let orphan = node.wait("orphan", "running", |p| running(p, "c")).await;
    let kept = node.wait("kept", "running", |p| running(p, "c")).await;
    let kept_id = container_id(&kept, "c");
    let pods_dir = node.dir.path().join("pods");
    assert!(pods_dir.join(uid(&orphan)).join("pod.json").is_file());
    // Down, and meanwhile the operator removes a manifest.
    let manifest = node.dir.path().join("manifests/orphan.yaml");
    let node = node
        .restart_after(&h, async {
            std::fs::remove_file(&manifest).unwrap();
        })
        .await;
    let mut runtime = h.cri.runtime.clone();
    node.wait_gone(&h, &uid(&orphan)).await;
    let kept = node.wait("kept", "adopted", |p| running(p, "c")).await;
    assert_eq!(
        container_id(&kept, "c"),
        kept_id,
        "the kept pod was restarted"
    );
    let all = runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(all.len(), 1, "{all:?}");
    node.remove("kept.yaml");
    node.wait_gone(&h, &uid(&kept)).await;
}

/// A fresh node with no CNI network: the runtime says NetworkReady=false and why, the kubelet asks for no
/// sandbox (a pod's status says upstream's "network is not ready"), and once a network appears the pod
/// runs without anyone touching it: its worker backed off, it did not give up.
async fn no_network_yet_is_reported_and_waited_out(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let conf = h.net.conf_dir.join("10-basalt-critest.conflist");
    let aside = h.dir().join("conflist.aside");
    std::fs::rename(&conf, &aside).unwrap();
    // containerd notices the removal through inotify: wait for what Status says, not for a clock.
    let deadline = Instant::now() + Duration::from_secs(30);
    let cond = loop {
        let st = h.runtime_status().await.status.unwrap();
        let c = st
            .conditions
            .into_iter()
            .find(|c| c.r#type == "NetworkReady")
            .unwrap();
        if !c.status {
            break c;
        }
        assert!(Instant::now() < deadline, "NetworkReady stayed true");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "[{}] NetworkReady=false: {} {}",
        endpoint.name(),
        cond.reason,
        cond.message
    );
    assert!(
        !cond.reason.is_empty() && !cond.message.is_empty(),
        "{cond:?}"
    );
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    node.put(
        "nonet.yaml",
        &format!("kind: Pod\nmetadata: {{name: nonet}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n"),
    );
    let p = node
        .wait("nonet", "waiting for the network", |p| {
            p.status
                .as_ref()
                .and_then(|s| s.message.as_deref())
                .is_some_and(|m| m.starts_with("network is not ready"))
        })
        .await;
    let u = uid(&p);
    assert!(
        node.kubelet.cri.pod_sandboxes(&u).await.unwrap().is_empty(),
        "a sandbox was asked for without a network"
    );
    // Written anew, as an operator (or a CNI daemonset) installs one.
    std::fs::copy(&aside, &conf).unwrap();
    std::fs::remove_file(&aside).unwrap();
    let p = node
        .wait("nonet", "running once the network is there", |p| {
            running(p, "c")
        })
        .await;
    node.remove("nonet.yaml");
    node.wait_gone(&h, &uid(&p)).await;
}

/// `/exec`, `/attach` and `/portForward` of the kubelet API: the kubelet asks the CRI for a streaming URL and
/// proxies the upgraded WebSocket to it. Without the bearer token the upgrade is refused.
async fn exec_attach_port_forward_through_the_kubelet_api(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    node.put(
        "stream.yaml",
        &format!(
            r#"kind: Pod
metadata: {{name: stream}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: web, image: "{img}", imagePullPolicy: IfNotPresent, command: [sh, -c, "mkdir -p /www && echo pf-ok > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www"]}}
  - {{name: ticker, image: "{img}", imagePullPolicy: IfNotPresent, command: [sh, -c, "while true; do echo tick; sleep 1; done"]}}
"#
        ),
    );
    let p = node
        .wait("stream", "running", |p| {
            running(p, "web") && running(p, "ticker")
        })
        .await;
    let name = p.metadata.name.clone().unwrap();

    let exec = format!(
        "/exec/default/{name}/web?command=sh&command=-c&command=echo%20out-%24((6*7))%3B%20echo%20err%20%3E%262%3B%20exit%203&stdout=1&stderr=1"
    );
    let refused = node.ws(&exec, None).await.err().unwrap_or_default();
    assert!(refused.contains("401"), "{refused}");
    let mut ws = node.ws(&exec, Some(&node.token)).await.unwrap();
    let got = channels(&mut ws, |g| g.get(&3).is_some_and(|s| !s.is_empty())).await;
    let text =
        |c: u8| String::from_utf8_lossy(got.get(&c).map(|v| &v[..]).unwrap_or(b"")).into_owned();
    assert_eq!(
        (text(1), text(2)),
        ("out-42\n".into(), "err\n".into()),
        "status {}",
        text(3)
    );
    let st: serde_json::Value = serde_json::from_slice(&got[&3]).unwrap();
    assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
    assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

    let mut ws = node
        .ws(
            &format!("/attach/default/{name}/ticker?stdout=1"),
            Some(&node.token),
        )
        .await
        .unwrap();
    let got = channels(&mut ws, |g| {
        g.get(&1)
            .is_some_and(|o| o.windows(4).any(|w| w == b"tick"))
    })
    .await;
    assert!(String::from_utf8_lossy(&got[&1]).contains("tick\n"));
    drop(ws);

    // Port 8080 on the pod's loopback: channel 0 carries data, channel 1 errors; the first frame of each
    // is the port (little-endian), as the port-forward WebSocket protocol has it.
    let mut ws = node
        .ws(
            &format!("/portForward/default/{name}?port=8080"),
            Some(&node.token),
        )
        .await
        .unwrap();
    let mut m = vec![0u8];
    m.extend_from_slice(b"GET /index.html HTTP/1.0\r\n\r\n");
    ws.send(Message::Binary(m.into())).await.unwrap();
    let got = channels(&mut ws, |g| {
        g.get(&0)
            .is_some_and(|o| o.windows(5).any(|w| w == b"pf-ok"))
    })
    .await;
    let data = &got[&0];
    assert_eq!(&data[..2], &8080u16.to_le_bytes(), "{data:?}");
    let http = String::from_utf8_lossy(&data[2..]);
    assert!(
        http.starts_with("HTTP/1.") && http.contains("pf-ok"),
        "{http}"
    );
    drop(ws);

    let u = uid(&p);
    node.remove("stream.yaml");
    node.wait_gone(&h, &u).await;
}

cri_test!(no_network_yet_is_reported_and_waited_out);
cri_test!(orphaned_pods_are_cleaned_up_after_a_restart);
cri_test!(web_pod_probes_restart_and_api);
cri_test!(init_containers_run_once_in_order);
cri_test!(sidecar_outlives_app_restarts);
cri_test!(on_failure_and_never);
cri_test!(prestop_term_then_kill);
cri_test!(malformed_manifest_is_skipped);
cri_test!(exec_attach_port_forward_through_the_kubelet_api);

/// The containers of a pod, as the runtime lists them: (container name, state).
async fn runtime_containers(h: &Harness, uid: &str) -> Vec<(String, i32)> {
    let mut sel = HashMap::new();
    sel.insert("io.kubernetes.pod.uid".to_owned(), uid.to_owned());
    h.list_containers(api::ContainerFilter {
        label_selector: sel,
        ..Default::default()
    })
    .await
    .into_iter()
    .map(|c| {
        (
            c.labels
                .get("io.kubernetes.container.name")
                .cloned()
                .unwrap_or_default(),
            c.state,
        )
    })
    .collect()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// A one-document HTTP server on 127.0.0.1 for the manifest URL: serves whatever `doc` holds (an empty
/// string answers 500). Stops when dropped.
struct DocServer {
    url: String,
    doc: Arc<std::sync::Mutex<String>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DocServer {
    fn start() -> DocServer {
        use std::io::{BufRead, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pods.yaml", l.local_addr().unwrap());
        let doc = Arc::new(std::sync::Mutex::new(String::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, s) = (doc.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let body = d.lock().unwrap().clone();
                let status = if body.is_empty() {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        DocServer {
            url,
            doc,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(&self, doc: &str) {
        *self.doc.lock().unwrap() = doc.to_owned();
    }
}

impl Drop for DocServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(
            self.url
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap(),
        );
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves `doc` and waits until the kubelet has counted a new manifest error for it.
async fn serve_and_wait_reported(node: &Node, server: &DocServer, doc: &str, what: &str) {
    let count = || {
        node.kubelet
            .metrics
            .manifest_errors
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = count();
    server.serve(doc);
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() == before {
        assert!(Instant::now() < deadline, "{what} was not reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The manifest URL source: a List declares two pods; a later document without one stops it and leaves the
/// other's container alone; a failing server keeps the pods; an empty List stops the last.
async fn manifest_url_source(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let server = DocServer::start();
    let img = h.image(BUSYBOX);
    let pod = |name: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}}, "spec": {{"terminationGracePeriodSeconds": 1, "containers": [{{"name": "c", "image": "{img}", "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}}]}}}}"#
        )
    };
    server.serve(&format!(
        r#"{{"kind": "List", "apiVersion": "v1", "items": [{}, {}]}}"#,
        pod("url-one"),
        pod("url-two")
    ));
    let url = server.url.clone();
    let node = Node::start_with(&h, |s| {
        s.manifest_url = Some(url);
        s.http_check_frequency = Duration::from_millis(500);
    })
    .await;
    let one = node.wait("url-one", "running", |p| running(p, "c")).await;
    let two = node.wait("url-two", "running", |p| running(p, "c")).await;
    assert_eq!(
        one.metadata.annotations.as_ref().unwrap()["kubernetes.io/config.source"],
        "http"
    );
    let id = container_id(&one, "c");

    // YAML with only the first pod: the second is stopped, the first untouched.
    server.serve(&format!(
        "kind: PodList\napiVersion: v1\nitems:\n- {}\n",
        pod("url-one")
    ));
    node.wait_gone(&h, &uid(&two)).await;
    assert_eq!(container_id(&node.pod("url-one").unwrap(), "c"), id);

    // The server failing: reported, and the pod keeps running.
    serve_and_wait_reported(&node, &server, "", "the failing URL").await;
    let err = node.kubelet.manifest_errors.lock().unwrap().clone();
    assert!(
        err.iter().any(|e| e.to_string().contains("HTTP 500")),
        "{err:?}"
    );
    let p = node.pod("url-one").unwrap();
    assert_eq!(container_id(&p, "c"), id);
    assert_eq!(phase(&p), "Running");

    // A 200 that is not a pod document (a maintenance page): reported, and the pod still keeps running.
    serve_and_wait_reported(
        &node,
        &server,
        "<html><body>down for maintenance</body></html>",
        "the unparsable document",
    )
    .await;
    let p = node.pod("url-one").unwrap();
    assert_eq!(container_id(&p, "c"), id);
    assert_eq!(phase(&p), "Running");

    server.serve("kind: List\napiVersion: v1\nitems: []\n");
    node.wait_gone(&h, &uid(&one)).await;
}

/// The PLEG: with a sync period far longer than the test, a container's exit is still acted on at once
/// (restarted), woken by the runtime's GetContainerEvents on our CRI and by the one-second relist on
/// containerd 1.6, which lacks the call; /metrics tells which path ran.
async fn pleg_wakes_the_worker_on_exit(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start_with(&h, |s| s.sync_period = Duration::from_secs(600)).await;
    let img = h.image(BUSYBOX);
    node.put(
        "pleg.yaml",
        &format!("kind: Pod\nmetadata: {{name: pleg}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sh, -c, \"sleep 2; exit 1\"]}}\n"),
    );
    // The wait gives up long before the 600 s sync period: a restart seen at all was not the periodic sync.
    let p = node
        .wait("pleg", "restarted", |p| restarts(p, "c") >= 1)
        .await;
    let (code, text) = node.get("/metrics", Some(&node.token));
    assert_eq!(code, 200);
    let (events, relists) = (
        metric(&text, "basalt_kubelet_pleg_events_total"),
        metric(&text, "basalt_kubelet_pleg_relists_total"),
    );
    match endpoint {
        Endpoint::Basalt => {
            assert!(
                events > 0 && relists == 0,
                "events {events}, relists {relists}"
            );
            assert_eq!(
                node.kubelet.pleg_mode(),
                Some(basalt_kubelet::pleg::Mode::Events)
            );
        }
        Endpoint::Containerd | Endpoint::ContainerdBasaltRunc => {
            assert!(
                events == 0 && relists > 0,
                "events {events}, relists {relists}"
            );
            assert_eq!(
                node.kubelet.pleg_mode(),
                Some(basalt_kubelet::pleg::Mode::Relist)
            );
        }
    }
    let u = uid(&p);
    node.remove("pleg.yaml");
    node.wait_gone(&h, &u).await;
}

/// Container GC keeps one dead container per container name (kubelet's default
/// --maximum-dead-containers-per-container) however often it crashed; the eviction signals memory.available
/// and nodefs.available are in /stats/summary and /metrics, as /proc/meminfo and df see them.
async fn container_gc_and_eviction_signals(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start_with(&h, |s| {
        s.backoff = basalt_kubelet::backoff::Policy {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(200),
            reset_after: Duration::from_secs(600),
        }
    })
    .await;
    let img = h.image(BUSYBOX);
    node.put(
        "gc.yaml",
        &format!("kind: Pod\nmetadata: {{name: gc}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sh, -c, \"exit 1\"]}}\n"),
    );
    let p = node
        .wait("gc", "crashed 4 times", |p| restarts(p, "c") >= 4)
        .await;
    let u = uid(&p);
    let exited = api::ContainerState::ContainerExited as i32;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let cs = runtime_containers(&h, &u).await;
        let dead = cs.iter().filter(|c| c.1 == exited).count();
        let gc = node
            .kubelet
            .metrics
            .containers_gc
            .load(std::sync::atomic::Ordering::Relaxed);
        if dead <= 1 && cs.len() <= 2 && gc >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{dead} dead of {} containers, {gc} collected",
            cs.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let meminfo = |key: &str| {
        std::fs::read_to_string("/proc/meminfo")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    };
    // memory.available is MemAvailable, which other tests running move: the reading must lie between what
    // /proc/meminfo said just before and just after the request (a band, not a guessed tolerance).
    let before = meminfo("MemAvailable:");
    let (code, body) = node.get("/stats/summary", Some(&node.token));
    let after = meminfo("MemAvailable:");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mem = &v["node"]["memory"];
    let avail = mem["availableBytes"].as_u64().unwrap();
    assert!(
        (before.min(after)..=before.max(after)).contains(&avail),
        "{mem} vs MemAvailable {before} before and {after} after"
    );
    assert!(avail < meminfo("MemTotal:"), "{mem}");
    // df on the filesystem of the pods dir (its parent: the dir appears with the first pod).
    let df = std::process::Command::new("df")
        .args(["-B1", "--output=size,avail"])
        .arg(node.dir.path())
        .output()
        .unwrap();
    let df = String::from_utf8_lossy(&df.stdout);
    let nums: Vec<u64> = df
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let fs = &v["node"]["fs"];
    assert_eq!(
        fs["capacityBytes"].as_u64(),
        Some(nums[0]),
        "{fs} vs df {df}"
    );
    let fs_avail = fs["availableBytes"].as_u64().unwrap();
    assert!(fs_avail.abs_diff(nums[1]) < 256 << 20, "{fs} vs df {df}");
    let (_, text) = node.get("/metrics", Some(&node.token));
    assert!(metric(&text, "basalt_kubelet_containers_gc_total") >= 2);
    assert!(
        metric(
            &text,
            "basalt_eviction_signal_available_bytes{signal=\"memory.available\"}"
        ) > 0
    );
    assert_eq!(
        metric(&text, "basalt_node_fs_capacity_bytes"),
        nums[0],
        "{text}"
    );
    assert!(
        metric(
            &text,
            "basalt_eviction_signal_available_bytes{signal=\"nodefs.available\"}"
        ) > 0
    );
    node.remove("gc.yaml");
    node.wait_gone(&h, &u).await;
}

cri_test!(manifest_url_source);
cri_test!(pleg_wakes_the_worker_on_exit);
cri_test!(container_gc_and_eviction_signals);

cri_test!(host_users_false_gets_a_range_of_its_own);

/// `hostUsers: false` (upstream's user-namespace manager): each such pod runs in a user namespace mapping its
/// ids 0–65535 to 65536 host ids no other pod has, recorded in `<pod dir>/userns` for a restarted kubelet and
/// handed back when the pod is gone. containerd 1.6 has no user namespaces: the kubelet refuses the pod, as
/// upstream's does, instead of running it with the node's ids.
async fn host_users_false_gets_a_range_of_its_own(endpoint: Endpoint) {
    let h = Harness::start(endpoint).await;
    h.pull(BUSYBOX).await;
    let node = Node::start(&h).await;
    let img = h.image(BUSYBOX);
    let manifest = |name: &str, extra: &str| {
        format!("kind: Pod\nmetadata: {{name: {name}}}\nspec:\n  hostUsers: false\n  terminationGracePeriodSeconds: 1\n{extra}  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sleep, \"3600\"]}}\n")
    };
    // Refused whatever the runtime: a host namespace with a pod user namespace.
    node.put(
        "hostnet.yaml",
        &manifest("hostnet", "  hostNetwork: true\n"),
    );
    let (u, msg) = node.refused("hostnet").await;
    assert!(msg.contains("spec.hostNetwork"), "{msg}");
    node.remove("hostnet.yaml");
    node.wait_gone(&h, &u).await;

    node.put("a.yaml", &manifest("a", ""));
    node.put("b.yaml", &manifest("b", ""));
    if endpoint == Endpoint::Containerd {
        let (_, msg) = node.refused("a").await;
        assert!(msg.contains("does not support user namespaces"), "{msg}");
        assert!(node.kubelet.userns.in_use().is_empty());
    } else {
        let mut maps = Vec::new();
        for name in ["a", "b"] {
            let p = node.wait(name, "running", |p| phase(p) == "Running").await;
            let r = h
                .exec_sync(
                    &container_id(&p, "c"),
                    &["cat", "/proc/self/uid_map", "/proc/self/gid_map"],
                    10,
                )
                .await
                .expect("ExecSync");
            let out = String::from_utf8_lossy(&r.stdout).into_owned();
            let lines: Vec<Vec<u64>> = out
                .lines()
                .map(|l| l.split_whitespace().map(|n| n.parse().unwrap()).collect())
                .collect();
            assert_eq!(lines.len(), 2, "{out}");
            assert_eq!(lines[0], lines[1], "uid and gid maps differ: {out}");
            let (inside, host, len) = (lines[0][0], lines[0][1], lines[0][2]);
            assert_eq!((inside, len), (0, 65536), "{out}");
            assert!(host >= 65536 && host % 65536 == 0, "{out}");
            let kept =
                std::fs::read_to_string(node.dir.path().join("pods").join(uid(&p)).join("userns"))
                    .expect("the pod's userns file");
            assert!(kept.contains(&format!("\"hostId\":{host}")), "{kept}");
            maps.push((uid(&p), host as u32));
        }
        assert_ne!(maps[0].1, maps[1].1, "two pods share host ids");
        let in_use = node.kubelet.userns.in_use();
        assert_eq!(in_use, maps.iter().cloned().collect());
        // What a kubelet restarted now (after SIGKILL) starts from.
        let pods_root = node.dir.path().join("pods");
        let restarted = basalt_kubelet::userns::Allocator::load(Default::default(), &pods_root);
        assert_eq!(restarted.in_use(), in_use);
    }
    for (file, name) in [("a.yaml", "a"), ("b.yaml", "b")] {
        let p = node.pod(name).expect("known");
        let u = uid(&p);
        // Everything the pod's sandbox made (netns, veth, lease, cgroups, mounts, processes), seen while it runs.
        let mut footprints = Vec::new();
        for s in node.kubelet.cri.pod_sandboxes(&u).await.unwrap() {
            let sandbox = basalt_cri_tests::Pod {
                id: s.id,
                config: api::PodSandboxConfig {
                    linux: Some(api::LinuxPodSandboxConfig {
                        cgroup_parent: basalt_kubelet::qos::pod_cgroup(&node.cgroup_root, &p),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            };
            footprints.push(h.footprint(&sandbox).await);
        }
        node.remove(file);
        node.wait_gone(&h, &u).await;
        for fp in &footprints {
            h.assert_gone(fp).await;
        }
    }
    assert!(node.kubelet.userns.in_use().is_empty());
}
