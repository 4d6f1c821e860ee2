//! The kubelet in API mode against `basalt server` (apiserver and scheduler on SQLite) with our CRI: the
//! node registers itself with its node credentials (`system:node:<name>`, so the Node authorizer and
//! NodeRestriction apply), heartbeats through its Lease, runs the pod the scheduler binds to it, writes the
//! pod's status back, and on a graceful delete stops the pod and removes it from the API; nothing of the pod
//! is left in the runtime. Then `basalt server` as a whole node, as a newcomer runs it: one process that is
//! the control plane and the node.

use std::path::Path;
use std::time::{Duration, Instant};

use basalt_cri_tests::{api, endpoint::basalt_bin, remove_kubelet_cgroups, Harness};
use basalt_kubelet::cluster::Cluster;
use basalt_kubelet::Kubelet;
use basalt_testsupport::kube::{Datastore, KubeServer};
use serde_json::Value;

mod common;

const BUSYBOX: &str = "busybox";

/// `kubectl get <args> -o json` as the admin.
fn get(s: &KubeServer, args: &[&str]) -> Option<Value> {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend(["-o", "json"]);
    let out = s.run(&a);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Waits for the pod to run; on failure says what its status was.
async fn running(s: &KubeServer, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let p = get(s, &["pod", name]);
        if let Some(p) = p.as_ref().filter(|p| p["status"]["phase"] == "Running") {
            return p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} not Running: {}",
            p.map(|p| p["status"].to_string()).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `f` until it gives a value; the deadline only bounds a failure.
async fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sandboxes_of(h: &Harness, uid: &str) -> usize {
    h.cri.sandboxes_of(uid).await.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_joins_runs_its_pods_and_reports_them() {
    let Some(h) = Harness::start_basalt_only("kubelet_cluster").await else {
        return;
    };
    h.pull(BUSYBOX).await;
    let server =
        tokio::task::spawn_blocking(|| KubeServer::start(&basalt_bin(), Datastore::Sqlite))
            .await
            .unwrap()
            .unwrap();
    let name = common::node_name(&h);
    let kubeconfig = server
        .kubeconfig_for(&format!("system:node:{name}"), "system:nodes")
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("basalt-kubelet-")
        .tempdir()
        .unwrap();
    let cgroup_root = common::cgroup_root(&h);
    let settings = common::settings(&h, dir.path());
    let cri = basalt_kubelet::cri::Cri::connect(h.socket()).unwrap();
    let kubelet = Kubelet::new(cri, settings);
    let cluster = Cluster::connect(&kubeconfig, &name).await.unwrap();
    let pods = cluster.start(kubelet.clone(), kubelet.terminations());
    let task = tokio::spawn(kubelet.clone().run_with(Some(pods)));

    // Registered, Ready, with the machine's capacity; the Lease held by the node and pointing at it.
    let node = wait("the node to register", || get(&server, &["node", &name])).await;
    let cond = |n: &Value, t: &str| {
        n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(cond(&node, "Ready")["status"], "True", "{node}");
    assert_eq!(cond(&node, "Ready")["reason"], "KubeletReady");
    assert!(
        node["status"]["capacity"]["cpu"].as_str().is_some(),
        "{node}"
    );
    assert!(node["status"]["allocatable"]["memory"]
        .as_str()
        .unwrap()
        .ends_with("Ki"));
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        name.as_str()
    );
    assert_eq!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .split("://")
            .next(),
        Some("basalt")
    );
    let lease = wait("the node's lease", || {
        get(&server, &["lease", "-n", "kube-node-lease", &name])
    })
    .await;
    assert_eq!(lease["spec"]["holderIdentity"], name.as_str());
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["uid"],
        node["metadata"]["uid"]
    );
    assert!(lease["spec"]["renewTime"].as_str().is_some());

    // A pod for the scheduler to bind here; it runs and its status comes back through the API.
    let img = h.image(BUSYBOX);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: default}}\nspec:\n  automountServiceAccountToken: false\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {{name: c, image: \"{img}\", imagePullPolicy: IfNotPresent, command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]}}\n"
    );
    let out = server.run_with_input(&["apply", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = wait("web Running and Ready", || {
        let p = get(&server, &["pod", "web"])?;
        let ready = p["status"]["containerStatuses"][0]["ready"] == true;
        (p["status"]["phase"] == "Running" && ready).then_some(p)
    })
    .await;
    assert_eq!(pod["spec"]["nodeName"], name.as_str());
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    assert!(
        pod["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "{pod}"
    );
    assert_eq!(pod["status"]["containerStatuses"][0]["restartCount"], 0);
    assert!(pod["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
    // The QoS class the apiserver set is kept by the kubelet's status writes.
    assert_eq!(pod["status"]["qosClass"], "BestEffort");
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(sandboxes_of(&h, &uid).await, 1);
    let out = server.run(&["get", "pods", "-o", "wide"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains("Running") && l.contains(&name)),
        "{table}"
    );

    // A graceful delete: the kubelet stops the pod (its TERM trap ends it well within the grace period),
    // then deletes it with grace 0; `kubectl delete` returns once it is gone from the API.
    let out = server.run(&["delete", "pod", "web", "--wait", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get(&server, &["pod", "web"]).is_none());
    assert_eq!(sandboxes_of(&h, &uid).await, 0, "the sandbox is removed");
    wait("the kubelet to forget the pod", || {
        (!kubelet
            .pods()
            .iter()
            .any(|p| p.metadata.uid.as_deref() == Some(&uid)))
        .then_some(())
    })
    .await;
    assert!(!dir.path().join("pods").join(&uid).exists());

    // Node admission: a pod placed here by name (no scheduler) asking for more CPU than the machine has
    // is refused by the kubelet with upstream's reason, and never gets a sandbox.
    let cpus = node["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap()
        .parse::<i64>()
        .unwrap();
    let greedy = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: greedy, namespace: default}}\nspec:\n  nodeName: {name}\n  automountServiceAccountToken: false\n  containers:\n  - {{name: c, image: \"{img}\", resources: {{requests: {{cpu: \"{}\"}}}}}}\n",
        cpus + 1
    );
    let out = server.run_with_input(&["apply", "-f", "-"], &greedy);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refused = wait("greedy refused", || {
        let p = get(&server, &["pod", "greedy"])?;
        (p["status"]["phase"] == "Failed").then_some(p)
    })
    .await;
    assert_eq!(refused["status"]["reason"], "OutOfcpu", "{refused}");
    let message = refused["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "Pod was rejected: Node didn't have enough resource: cpu, requested: {}",
            (cpus + 1) * 1000
        )),
        "{message}"
    );
    let greedy_uid = refused["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(sandboxes_of(&h, &greedy_uid).await, 0);
    let out = server.run(&["delete", "pod", "greedy", "--wait", "--timeout=60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    task.abort();
    remove_kubelet_cgroups(&cgroup_root);
}

/// `basalt server` is a whole single-node cluster (as `k3s server`): its own node registers with the
/// credentials the server signed for it, and a pod applied with kubectl runs there with an IP from the
/// node's network. SIGTERM stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basalt_server_is_a_whole_node() {
    let Some(h) = Harness::start_basalt_only("server_node").await else {
        return;
    };
    let tmp = tempfile::Builder::new()
        .prefix("basalt-server-node-")
        .tempdir()
        .unwrap();
    let d = tmp.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(format!("{d}/m")).unwrap();
    let cgroup = format!("/basalt-critests/{}/server", h.token);
    // The kubelet API listens on loopback only, so the node says it is there: the apiserver reaches the
    // kubelet at the Node's InternalIP.
    let flags = node_flags(&h, &d, &cgroup);
    let server = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        KubeServer::start_node(&basalt_bin(), &flags)
    })
    .await
    .unwrap()
    .unwrap();
    // The node is the machine's (the test server's --node-name), registered with node credentials.
    let node = wait("the server's own node Ready", || {
        let n = get(&server, &["node", "basalt-test"])?;
        let ready = n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(n)
    })
    .await;
    assert!(
        server.data_dir().join("server/node.kubeconfig").exists(),
        "{node}"
    );
    // The pod a newcomer writes: the default service account token mounted (the projected volume the
    // ServiceAccount admission adds), and a config map and a secret as volumes.
    let img = h.image(BUSYBOX);
    // A static pod from the manifest directory, and its mirror pod in the apiserver: owned by the Node,
    // with the static pod's status; deleted by a user it comes back (the pod itself runs on); gone with
    // the manifest.
    let lamp = format!("{d}/m/lamp.yaml");
    std::fs::write(
        &lamp,
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: lamp, namespace: default}}\nspec:\n  containers:\n  - {{name: c, image: \"{img}\", command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]}}\n"),
    )
    .unwrap();
    let mirror = wait("the static pod's mirror Running", || {
        let p = get(&server, &["pod", "lamp-basalt-test"])?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await;
    assert!(
        mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "{mirror}"
    );
    assert_eq!(mirror["metadata"]["ownerReferences"][0]["kind"], "Node");
    assert_eq!(
        mirror["metadata"]["ownerReferences"][0]["name"],
        "basalt-test"
    );
    let container = mirror["status"]["containerStatuses"][0]["containerID"].clone();
    assert!(
        container.as_str().is_some_and(|c| !c.is_empty()),
        "{mirror}"
    );
    let out = server.run(&["delete", "pod", "lamp-basalt-test", "--wait=false"]);
    assert!(out.status.success());
    wait(
        "the mirror pod back, the same container in its status",
        || {
            let p = get(&server, &["pod", "lamp-basalt-test"])?;
            (p["metadata"]["uid"] != mirror["metadata"]["uid"]
                && p["status"]["containerStatuses"][0]["containerID"] == container)
                .then_some(())
        },
    )
    .await;
    std::fs::remove_file(&lamp).unwrap();
    wait("the mirror pod gone with its manifest", || {
        get(&server, &["pod", "lamp-basalt-test"])
            .is_none()
            .then_some(())
    })
    .await;
    let manifest = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: default}}\ndata: {{greeting: hello-from-cfg}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: sec, namespace: default}}\nstringData: {{password: s3cret}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: hello, namespace: default}}\nspec:\n  volumes:\n  - {{name: cfg, configMap: {{name: cfg}}}}\n  - {{name: sec, secret: {{secretName: sec, defaultMode: 0400}}}}\n  containers:\n  - name: c\n    image: \"{img}\"\n    volumeMounts: [{{name: cfg, mountPath: /etc/cfg}}, {{name: sec, mountPath: /etc/sec}}]\n    command: [sh, -c, \"SA=/var/run/secrets/kubernetes.io/serviceaccount; echo cfg=$(cat /etc/cfg/greeting) sec=$(cat /etc/sec/password) ns=$(cat $SA/namespace) token=$(cat $SA/token) ca=$(head -1 $SA/ca.crt); trap 'exit 0' TERM; while true; do sleep 0.2; done\"]\n"
    );
    let out = server.run_with_input(&["apply", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = running(&server, "hello").await;
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let log_dir = std::path::PathBuf::from(format!("{d}/logs/default_hello_{uid}/c"));
    let line = wait("the container's first line", || {
        let text = std::fs::read_to_string(log_dir.join("0.log")).ok()?;
        text.lines()
            .find(|l| l.contains("cfg="))
            .map(str::to_string)
    })
    .await;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("cfg"), "hello-from-cfg", "{line}");
    assert_eq!(field("sec"), "s3cret", "{line}");
    assert_eq!(field("ns"), "default", "{line}");
    assert!(line.contains("ca=-----BEGIN"), "{line}");
    // The token is the apiserver's, for the pod's service account, bound to the pod.
    let review = format!(
        "{{\"apiVersion\": \"authentication.k8s.io/v1\", \"kind\": \"TokenReview\", \"spec\": {{\"token\": \"{}\"}}}}",
        field("token")
    );
    let out = server.run_with_input(
        &[
            "create",
            "--raw",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "-f",
            "-",
        ],
        &review,
    );
    let review: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        review["status"]["authenticated"],
        true,
        "{review} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    // kubectl logs and exec, through the apiserver to the kubelet API (SPDY or WebSocket, spliced).
    let kubectl = |args: &[&str]| {
        let out = server.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The kubelet's events, as `kubectl describe` shows them (upstream's reasons and messages).
    let described = wait("the kubelet's events about hello", || {
        let out = server.run(&["describe", "pod", "hello"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("Started container c").then_some(text)
    })
    .await;
    for want in ["Pulled", "Created container: c", "kubelet"] {
        assert!(described.contains(want), "{want}: {described}");
    }
    let events = get(
        &server,
        &["events", "--field-selector", "involvedObject.name=hello"],
    )
    .unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"]["component"] == "kubelet")
        .map(|e| e["reason"].as_str().unwrap_or_default())
        .collect();
    for want in ["Pulled", "Created", "Started"] {
        assert!(reasons.contains(&want), "{reasons:?}");
    }
    let logs = kubectl(&["logs", "hello"]);
    assert!(logs.contains("cfg=hello-from-cfg"), "{logs}");
    let out = kubectl(&[
        "exec",
        "hello",
        "--",
        "sh",
        "-c",
        "echo $((6*7)) $(cat /etc/cfg/greeting)",
    ]);
    assert_eq!(out.trim(), "42 hello-from-cfg");
    let out = server.run_with_input(&["exec", "-i", "hello", "--", "cat"], "through stdin\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    // The same over SPDY, the protocol kubectl falls back to.
    let out = server
        .kubectl()
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .args(["exec", "hello", "--", "cat", "/etc/sec/password"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "s3cret",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.run(&["logs", "hello", "-c", "nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("container nope is not valid for pod hello"),
        "{err}"
    );
    // The kubelet API itself: a certificate of the cluster CA names the caller, and the apiserver's
    // SubjectAccessReview decides (nodes/proxy: the apiserver's user may, another may not).
    let node = get(&server, &["node", "basalt-test"]).unwrap();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/containerLogs/default/hello/c");
    for (user, code) in [("nobody", "403"), ("kube-apiserver-kubelet-client", "200")] {
        let (cert, key) = server.client_cert_for(user, "").unwrap();
        let out = std::process::Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--cert"])
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg(&url)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), code, "{user}");
    }

    let prefix = h.net.subnet.rsplit_once('.').unwrap().0.to_string();
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(
        ip.starts_with(&prefix),
        "pod IP {ip} outside {}",
        h.net.subnet
    );
    let out = server.run(&["delete", "pod", "hello", "--wait", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!server.data_dir().join("pods").join(&uid).exists());

    // A Deployment, as a user applies one: the controllers make its pods, the scheduler puts them on this
    // node, and each serves HTTP on its pod IP to the other (asked from inside the pods, through the
    // node's own CRI socket: pod traffic stays on the node's network).
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: httpd\n        image: \"{img}\"\n        command: [sh, -c, \"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www\"]\n        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n"
    );
    let out = server.run_with_input(&["apply", "-f", "-"], &deployment);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.run(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = get(&server, &["pods", "-l", "app=web"]).unwrap();
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    let cri = basalt_cri_tests::Cri::wait_ready(
        Path::new(&format!("{d}/run/cri.sock")),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let id_ip_name = |p: &Value| {
        let id = p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap();
        (
            id.split_once("://").unwrap().1.to_string(),
            p["status"]["podIP"].as_str().unwrap().to_string(),
            p["metadata"]["name"].as_str().unwrap().to_string(),
        )
    };
    let (a, b) = (id_ip_name(&pods[0]), id_ip_name(&pods[1]));
    for ((from, _, _), (_, ip, name)) in [(&a, &b), (&b, &a)] {
        let out = cri
            .runtime
            .clone()
            .exec_sync(api::ExecSyncRequest {
                container_id: from.clone(),
                cmd: ["wget", "-qO-", &format!("http://{ip}:8080/")]
                    .map(str::to_string)
                    .into(),
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        let page = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            page.trim(),
            name,
            "{name} at {ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A Service over the Deployment: its Endpoints name both pods by the IPs the kubelet reported and the
    // port its targetPort resolves to.
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let out = server.run_with_input(&["apply", "-f", "-"], service);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut want = vec![format!("{}:8080", a.1), format!("{}:8080", b.1)];
    want.sort();
    wait("the Service's endpoints", || {
        let e = get(&server, &["endpoints", "web"])?;
        let subset = &e["subsets"][0];
        let mut got: Vec<String> = subset["addresses"]
            .as_array()?
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    a["ip"].as_str().unwrap_or(""),
                    subset["ports"][0]["port"]
                )
            })
            .collect();
        got.sort();
        (got == want).then_some(())
    })
    .await;
    let slices = get(
        &server,
        &["endpointslices", "-l", "kubernetes.io/service-name=web"],
    )
    .unwrap();
    let endpoints = &slices["items"][0]["endpoints"];
    assert_eq!(endpoints.as_array().map(Vec::len), Some(2), "{slices}");
    // kubectl port-forward: host traffic to the forwarded local port, into the pod's network namespace
    // through the kubelet (never to the pod IP itself).
    let mut pf = server
        .kubectl()
        .args([
            "port-forward",
            "deployment/web",
            ":8080",
            "--address",
            "127.0.0.1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    // Kept open: kubectl writes a line for each connection it handles.
    let mut pf_out = std::io::BufReader::new(pf.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut pf_out, &mut first).unwrap();
    // "Forwarding from 127.0.0.1:NNNNN -> 8080"
    let local = first
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            &format!("http://{local}/"),
        ])
        .output()
        .unwrap();
    let _ = pf.kill();
    let pf = pf.wait_with_output().unwrap();
    let page = String::from_utf8_lossy(&curl.stdout).trim().to_string();
    assert!(
        [&a.2, &b.2].contains(&&page),
        "port-forward ({first}) served {page:?}: {} {}",
        String::from_utf8_lossy(&curl.stderr),
        String::from_utf8_lossy(&pf.stderr)
    );
    let out = server.run(&["delete", "deployment", "web", "--wait", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait("the deployment's pods gone", || {
        let pods = get(&server, &["pods", "-l", "app=web"])?;
        pods["items"].as_array()?.is_empty().then_some(())
    })
    .await;

    // An Indexed Job: each pod reads its index from the downward API, exits 0, and the kubelet's
    // Succeeded phase is what the job controller counts.
    let job = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: count, namespace: default}}\nspec:\n  completions: 3\n  parallelism: 2\n  completionMode: Indexed\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - name: work\n        image: \"{img}\"\n        command: [sh, -c, \"echo index=$JOB_COMPLETION_INDEX host=$(hostname)\"]\n"
    );
    let out = server.run_with_input(&["apply", "-f", "-"], &job);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.run(&[
        "wait",
        "--for=condition=complete",
        "job/count",
        "--timeout=120s",
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let job = get(&server, &["job", "count"]).unwrap();
    assert_eq!(job["status"]["completedIndexes"], "0-2", "{job}");
    assert_eq!(job["status"]["succeeded"], 3, "{job}");
    let pods = get(&server, &["pods", "-l", "job-name=count"]).unwrap();
    let pods = pods["items"].as_array().unwrap().clone();
    assert_eq!(pods.len(), 3, "one pod per index, none failed");
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Succeeded", "{p}");
        let ix = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap();
        let (name, uid) = (
            p["metadata"]["name"].as_str().unwrap(),
            p["metadata"]["uid"].as_str().unwrap(),
        );
        let log = std::fs::read_to_string(format!("{d}/logs/default_{name}_{uid}/work/0.log"))
            .unwrap_or_default();
        assert!(
            log.contains(&format!("index={ix} host=count-{ix}")),
            "{name}: {log}"
        );
    }
    let out = server.run(&["delete", "job", "count", "--wait", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait("the job's pods gone", || {
        let pods = get(&server, &["pods", "-l", "job-name=count"])?;
        pods["items"].as_array()?.is_empty().then_some(())
    })
    .await;
    // Finished pods leave the API at once (grace 0, as upstream's); the kubelet tears them down after.
    for p in &pods {
        let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cri.sandboxes_of(&uid).await.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{uid}'s sandbox outlived the pod"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A DaemonSet: its pod pinned to this node, bound by the scheduler and run by the kubelet; kubectl's
    // rollout status reads the controller's status; the pod goes with the DaemonSet.
    let ds = format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: \"{img}\"\n        command: [sleep, \"3600\"]\n"
    );
    let out = server.run_with_input(&["apply", "-f", "-"], &ds);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = server.run(&["rollout", "status", "daemonset/agent", "--timeout=120s"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let pods = get(&server, &["pods", "-l", "app=agent"]).unwrap();
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 1, "one daemon pod on the one node");
    assert_eq!(pods[0]["status"]["phase"], "Running", "{}", pods[0]);
    assert_eq!(pods[0]["spec"]["nodeName"], "basalt-test", "{}", pods[0]);
    let out = server.run(&["delete", "daemonset", "agent", "--wait", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait("the daemon pod gone", || {
        let pods = get(&server, &["pods", "-l", "app=agent"])?;
        pods["items"].as_array()?.is_empty().then_some(())
    })
    .await;
    drop(server);
    remove_kubelet_cgroups(&cgroup);
}

/// A node's flags with everything under `d`: loopback for the kubelet API (the Node says 127.0.0.1, so
/// the apiserver reaches it there), the harness's network, registry and a cgroup parent of its own.
fn node_flags(h: &Harness, d: &str, cgroup: &str) -> Vec<String> {
    [
        "--run-dir",
        &format!("{d}/run"),
        "--node-ip",
        "127.0.0.1",
        "--kubelet-address",
        "127.0.0.1:0",
        "--streaming-address",
        "127.0.0.1:0",
        "--manifest-dir",
        &format!("{d}/m"),
        "--pod-log-dir",
        &format!("{d}/logs"),
        "--cgroup-parent",
        cgroup,
        "--cni-conf-dir",
        h.net.conf_dir.to_str().unwrap(),
        "--cni-bin-dir",
        basalt_cri_tests::network::CNI_BIN_DIR,
        "--insecure-registry",
        &h.registry.host(),
    ]
    .map(str::to_string)
    .into()
}

/// `basalt agent` as its own process, joined to `basalt server` with node credentials.
struct Agent {
    args: Vec<String>,
    log: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Agent {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = std::process::Command::new(basalt_bin())
            .arg("agent")
            .args(&self.args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
    }
}

/// Crash-only, as a node lives it: the agent (CRI server and kubelet) is SIGKILLed. The node lifecycle
/// controller marks the node Unknown and taints it unreachable; a pod deleted meanwhile waits. When the
/// agent is back, the pods that kept running are the same containers (no restart, no second sandbox), the
/// node is Ready again without the taints, and the pod deleted while it was down is stopped and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_survives_its_agent_being_killed() {
    let Some(h) = Harness::start_basalt_only("agent_killed").await else {
        return;
    };
    let server = tokio::task::spawn_blocking(|| {
        KubeServer::start_with(
            &basalt_bin(),
            Datastore::Sqlite,
            &[
                "--controllers",
                "*",
                "--node-monitor-period",
                "500ms",
                "--node-monitor-grace-period",
                "4s",
            ],
        )
    })
    .await
    .unwrap()
    .unwrap();
    let name = format!("{}-agent", common::node_name(&h));
    // The agent joins as a k3s agent does, with the token the server wrote (read from the file, which
    // `ps` does not show).
    let token = server.data_dir().join("server/node-token");
    let tmp = tempfile::Builder::new()
        .prefix("basalt-agent-")
        .tempdir()
        .unwrap();
    let d = tmp.path().to_str().unwrap().to_string();
    let cgroup = format!("/basalt-critests/{}/agent", h.token);
    let mut agent = Agent {
        args: [
            "--data-dir",
            &format!("{d}/data"),
            "--server",
            &server.url,
            "--token-file",
            token.to_str().unwrap(),
            "--node-name",
            &name,
        ]
        .map(str::to_string)
        .into_iter()
        .chain(node_flags(&h, &d, &cgroup))
        .collect(),
        log: tmp.path().join("agent.log"),
        child: None,
    };
    std::fs::create_dir_all(format!("{d}/m")).unwrap();
    agent.spawn();
    let node_ready = |status: &str| {
        let n = get(&server, &["node", &name])?;
        let c = n["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (c["status"] == status).then_some(n)
    };
    wait("the agent's node Ready", || node_ready("True")).await;
    // Its credentials came through a certificate request the controllers approved and signed, and are
    // kept private under its data dir (the restart below uses them again).
    let csrs = get(&server, &["csr"]).unwrap();
    let joined = csrs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["spec"]["username"]
                .as_str()
                .is_some_and(|u| u.starts_with("system:bootstrap:"))
        })
        .unwrap_or_else(|| panic!("no CSR from the bootstrap token: {csrs}"));
    assert!(
        joined["status"]["certificate"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
            && joined["status"]["conditions"][0]["reason"] == "AutoApproved",
        "{joined}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let kept = std::fs::metadata(format!("{d}/data/kubelet.kubeconfig")).unwrap();
        assert_eq!(kept.permissions().mode() & 0o777, 0o600);
    }

    let img = h.image(BUSYBOX);
    let pod = |n: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {n}, namespace: default}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {name}}}\n  terminationGracePeriodSeconds: 5\n  containers:\n  - {{name: c, image: \"{img}\", command: [sh, -c, \"trap 'exit 0' TERM; while true; do sleep 0.2; done\"]}}\n")
    };
    let out = server.run_with_input(
        &["apply", "-f", "-"],
        &format!("{}---\n{}", pod("keep"), pod("doomed")),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep = running(&server, "keep").await;
    let doomed = running(&server, "doomed").await;
    let container = |p: &Value| p["status"]["containerStatuses"][0]["containerID"].clone();

    // Killed: the node goes Unknown, tainted; the pods are no longer Ready but stay (300 s tolerations).
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    let n = wait("the node Unknown", || node_ready("Unknown")).await;
    let taints: Vec<String> = wait("the unreachable taints", || {
        let n = get(&server, &["node", &name])?;
        let t: Vec<String> = n["spec"]["taints"]
            .as_array()?
            .iter()
            .map(|t| {
                format!(
                    "{}:{}",
                    t["key"].as_str().unwrap(),
                    t["effect"].as_str().unwrap()
                )
            })
            .collect();
        (t.len() == 2).then_some(t)
    })
    .await;
    assert!(
        taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
            && taints.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()),
        "{taints:?} {n}"
    );
    let out = server.run(&["delete", "pod", "doomed", "--wait=false"]);
    assert!(out.status.success());

    // Its credentials near their end (past 90% of their life, two minutes left): back, it renews them
    // with themselves and restarts on the new ones.
    let kept = format!("{d}/data/kubelet.kubeconfig");
    let aging = server
        .kubeconfig_aging(
            &format!("system:node:{name}"),
            "system:nodes",
            Duration::from_secs(3600),
            Duration::from_secs(120),
        )
        .unwrap();
    std::fs::copy(&aging, &kept).unwrap();
    let aging = std::fs::read_to_string(&aging).unwrap();

    // Back: Ready, untainted; the kept pod is the same container; the deleted one is cleaned up.
    agent.spawn();
    wait("the node Ready again", || node_ready("True")).await;
    wait("the taints lifted", || {
        let n = get(&server, &["node", &name])?;
        n["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t.is_empty())
            .then_some(())
    })
    .await;
    wait("the pod deleted while the agent was down to go", || {
        get(&server, &["pod", "doomed"]).is_none().then_some(())
    })
    .await;
    // Renewed: the node's own request, approved as the node renewing itself, and new credentials kept;
    // the agent restarted on them and the node is Ready on them.
    wait("the node's credentials renewed", || {
        let csrs = get(&server, &["csr"])?;
        let renewed = csrs["items"].as_array()?.iter().any(|c| {
            c["spec"]["username"] == format!("system:node:{name}").as_str()
                && c["status"]["conditions"][0]["message"]
                    == "Auto approving self kubelet client certificate after SubjectAccessReview."
                && c["status"]["certificate"].as_str().is_some()
        });
        let now = std::fs::read_to_string(&kept).ok()?;
        (renewed && now != aging).then_some(())
    })
    .await;
    // Restarted: the log says so, and the new process's CRI socket answers below.
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(
        log.contains("node credentials renewed: restarting the agent on them"),
        "{log}"
    );
    wait("the node Ready on its renewed credentials", || {
        node_ready("True")
    })
    .await;
    let cri = basalt_cri_tests::Cri::wait_ready(
        Path::new(&format!("{d}/run/cri.sock")),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let sandboxes = |uid: String| {
        let cri = cri.clone();
        async move { cri.sandboxes_of(&uid).await.len() }
    };
    let uid = |p: &Value| p["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(
        sandboxes(uid(&doomed)).await,
        0,
        "the deleted pod's sandbox"
    );
    assert_eq!(
        sandboxes(uid(&keep)).await,
        1,
        "one sandbox for the kept pod"
    );
    let after = wait("keep Ready again", || {
        let p = get(&server, &["pod", "keep"])?;
        (p["status"]["containerStatuses"][0]["ready"] == true).then_some(p)
    })
    .await;
    assert_eq!(
        container(&after),
        container(&keep),
        "the container kept running"
    );
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(after["metadata"]["uid"], keep["metadata"]["uid"]);

    let out = server.run(&["delete", "pod", "keep", "--wait", "--timeout=60s"]);
    assert!(out.status.success());
    assert_eq!(sandboxes(uid(&keep)).await, 0);
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    drop(server);
    remove_kubelet_cgroups(&cgroup);
}
