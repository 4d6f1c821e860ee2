//! The apiserver as API clients meet it, through kube-rs: upstream's status codes for bad input, 401 and
//! 403 on every resource, no acknowledged write lost to a SIGKILL (SQLite and etcd) or to an etcd member
//! dying, watches that survive a server restart, 410 Expired after compaction, and one
//! flooding client queued and refused (API Priority and Fairness) without starving the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_testsupport::kube::{Datastore, KubeServer};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Client;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

async fn client(s: &KubeServer) -> Client {
    let kc = Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

/// A client that authenticates with `token` only (no client certificate).
async fn token_client(s: &KubeServer, token: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    cfg.auth_info.client_certificate_data = None;
    cfg.auth_info.client_key_data = None;
    cfg.auth_info.token = token.map(|t| t.to_string().into());
    Client::try_from(cfg).unwrap()
}

/// Sends a raw request; the status and the body as JSON.
async fn raw(
    c: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .body(body)
        .unwrap();
    match c.request_text(req).await {
        Ok(t) => (200, serde_json::from_str(&t).unwrap_or(Value::String(t))),
        Err(kube::Error::Api(s)) => (s.code, serde_json::to_value(&*s).unwrap()),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

fn cm(name: &str, ns: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"a": "b"}})).unwrap()
}

/// POSTs each (path, body) as the admin; every create must succeed.
async fn create_all(admin: &Client, posts: impl IntoIterator<Item = (String, Value)>) {
    for (path, body) in posts {
        let (code, st) = raw(
            admin,
            "POST",
            &path,
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
        assert_eq!(code, 200, "{path}: {st}");
    }
}

/// A bound token for a service account, through the TokenRequest subresource.
async fn sa_token(admin: &Client, ns: &str, sa: &str) -> String {
    let (code, tr) = raw(
        admin,
        "POST",
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
        "application/json",
        serde_json::to_vec(
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{tr}");
    tr["status"]["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_upstreams_codes_and_leaves_nothing() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let c = client(&s).await;
    let ns = "bad-input";
    let base = format!("/api/v1/namespaces/{ns}/configmaps");
    assert_eq!(
        raw(
            &c,
            "POST",
            "/api/v1/namespaces",
            "application/json",
            serde_json::to_vec(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
            )
            .unwrap()
        )
        .await
        .0,
        200
    );

    let (code, st) = raw(
        &c,
        "POST",
        &base,
        "application/json",
        b"{\"apiVersion\": \"v1\", \"kind\": ".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"].as_str().unwrap().contains("line 1 column"),
        "the position of the error: {st}"
    );

    let (code, st) = raw(
        &c,
        "POST",
        &base,
        "application/json",
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}))
            .unwrap(),
    )
    .await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (400, Some("BadRequest")),
        "{st}"
    );
    assert_eq!(
        st["message"],
        "the kind in the data (Pod) does not match the expected kind (ConfigMap)"
    );

    let (code, st) = raw(
        &c,
        "POST",
        &base,
        "application/json",
        serde_json::to_vec(
            &json!({"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(code, 400, "{st}");
    assert_eq!(
        st["message"],
        "the API version in the data (apps/v1) does not match the expected API version (v1)"
    );

    let (code, st) = raw(&c, "GET", "/api/v1/bogus", "application/json", vec![]).await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (404, Some("NotFound")),
        "{st}"
    );
    let (code, _) = raw(
        &c,
        "GET",
        "/apis/nosuch.example.com/v1/things",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 404);

    let mut big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big", "namespace": ns}, "data": {}});
    big["data"]["x"] = json!("a".repeat(4 * 1024 * 1024));
    let (code, st) = raw(
        &c,
        "POST",
        &base,
        "application/json",
        serde_json::to_vec(&big).unwrap(),
    )
    .await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (413, Some("RequestEntityTooLarge")),
        "{st}"
    );

    let (code, st) = raw(&c, "POST", &base, "application/json", cm("Not_Valid", ns)).await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (422, Some("Invalid")),
        "{st}"
    );
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    assert!(st["message"].as_str().unwrap().starts_with("ConfigMap \"Not_Valid\" is invalid: metadata.name: Invalid value: \"Not_Valid\": a lowercase RFC 1123 subdomain"), "{st}");

    let (code, st) = raw(&c, "POST", &format!("{base}?fieldValidation=Strict"), "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strict", "namespace": ns}, "dta": {}})).unwrap()).await;
    assert_eq!(code, 400, "{st}");
    assert_eq!(
        st["message"],
        "strict decoding error: unknown field \"dta\""
    );

    let (code, st) = raw(&c, "POST", &base, "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typed", "namespace": ns}, "immutable": "yes"})).unwrap()).await;
    assert_eq!(code, 400, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("cannot unmarshal string into Go struct field immutable of type boolean"),
        "{st}"
    );

    // A stale resourceVersion is a conflict, and the object keeps its newer value.
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_slice(&cm("kept", ns)).unwrap(),
        )
        .await
        .unwrap();
    let mut newer = created.clone();
    newer.data = Some(BTreeMap::from([("a".to_string(), "new".to_string())]));
    api.replace("kept", &PostParams::default(), &newer)
        .await
        .unwrap();
    let mut stale = created.clone();
    stale.data = Some(BTreeMap::from([("a".to_string(), "stale".to_string())]));
    match api.replace("kept", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
            assert_eq!(e.message, "Operation cannot be fulfilled on configmaps \"kept\": the object has been modified; please apply your changes to the latest version and try again");
        }
        other => panic!("a stale update must conflict: {other:?}"),
    }
    assert_eq!(api.get("kept").await.unwrap().data.unwrap()["a"], "new");
    let (code, st) = raw(&c, "POST", &base, "application/json", cm("kept", ns)).await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (409, Some("AlreadyExists")),
        "{st}"
    );
    assert_eq!(st["message"], "configmaps \"kept\" already exists");

    // Nothing of the refused requests was stored.
    let names: Vec<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert_eq!(names, vec!["kept", "kube-root-ca.crt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_and_unauthorized_requests_are_refused_on_every_resource() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let admin = client(&s).await;
    let anon = token_client(&s, None).await;
    let forged = token_client(&s, Some("eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl")).await;
    // Every resource the server lists in discovery.
    let mut paths = Vec::new();
    for (group, version) in [
        ("", "v1"),
        ("apps", "v1"),
        ("batch", "v1"),
        ("rbac.authorization.k8s.io", "v1"),
        ("storage.k8s.io", "v1"),
        ("policy", "v1"),
        ("coordination.k8s.io", "v1"),
        ("apiextensions.k8s.io", "v1"),
    ] {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let (_, list) = raw(&admin, "GET", &base, "application/json", vec![]).await;
        for r in list["resources"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            if name.contains('/') || !r["verbs"].as_array().unwrap().iter().any(|v| v == "list") {
                continue;
            }
            paths.push((
                format!("{base}/{name}"),
                r["namespaced"].as_bool().unwrap(),
                name.to_string(),
                group.to_string(),
            ));
        }
    }
    assert!(paths.len() > 30, "{paths:?}");
    for (p, _, _, _) in &paths {
        for c in [&anon, &forged] {
            let (code, st) = raw(c, "GET", p, "application/json", vec![]).await;
            assert_eq!(
                (code, st["reason"].as_str()),
                (401, Some("Unauthorized")),
                "{p}: {st}"
            );
        }
    }
    for open in ["/healthz", "/livez", "/readyz", "/version"] {
        let (code, _) = raw(&anon, "GET", open, "application/json", vec![]).await;
        assert_eq!(code, 200, "{open} is public");
    }
    // A service account with a Role on pods in one namespace sees exactly that.
    let ns = "authz";
    let core = |kind: &str, body: Value| (kind.to_string(), body);
    create_all(
        &admin,
        [
        core(
            "/api/v1/namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        ),
        core(
            &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "limited"}}),
        ),
        core(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pods"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
        ),
        core(
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "pods"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pods"}, "subjects": [{"kind": "ServiceAccount", "name": "limited", "namespace": ns}]}),
        ),
    ],
    )
    .await;
    let token = sa_token(&admin, ns, "limited").await;
    let sa = token_client(&s, Some(&token)).await;
    let user = format!("system:serviceaccount:{ns}:limited");
    for (p, namespaced, name, group) in &paths {
        let path = if *namespaced {
            p.replacen(&format!("/{name}"), &format!("/namespaces/{ns}/{name}"), 1)
        } else {
            p.clone()
        };
        let (code, st) = raw(&sa, "GET", &path, "application/json", vec![]).await;
        if group.is_empty() && name == "pods" {
            assert_eq!(code, 200, "{path}: {st}");
            continue;
        }
        assert_eq!(
            (code, st["reason"].as_str()),
            (403, Some("Forbidden")),
            "{path}: {st}"
        );
        let scope = if *namespaced {
            format!("in the namespace \"{ns}\"")
        } else {
            "at the cluster scope".into()
        };
        let what = if group.is_empty() {
            name.clone()
        } else {
            format!("{name}.{group}")
        };
        assert_eq!(
            st["message"].as_str().unwrap(),
            format!("{what} is forbidden: User \"{user}\" cannot list resource \"{name}\" in API group \"{group}\" {scope}"),
            "{path}"
        );
    }
    let (code, _) = raw(
        &sa,
        "GET",
        "/api/v1/namespaces/default/pods",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 403, "the Role is only in its namespace");
    let (code, _) = raw(&sa, "POST", &format!("/api/v1/namespaces/{ns}/pods"), "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap()).await;
    assert_eq!(code, 403, "and only its verbs");
}

/// Writers creating config maps through the API until told to stop; the names acknowledged.
fn writers(
    c: &Client,
    ns: &str,
    n: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Arc<Mutex<Vec<String>>>, Vec<tokio::task::JoinHandle<usize>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..n {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
        let acked = acked.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0;
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let name = format!("w{w}-{i}");
                let obj: ConfigMap = serde_json::from_slice(&cm(&name, "")).unwrap();
                match api.create(&PostParams::default(), &obj).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            errors
        }));
    }
    (acked, tasks)
}

async fn wait_for_acks(acked: &Mutex<Vec<String>>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "writes stalled at {}",
            acked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigkill_under_load(datastore: Datastore) {
    let mut s = KubeServer::start(Path::new(BIN), datastore).unwrap();
    let c = client(&s).await;
    let ns = "durable";
    raw(
        &c,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap(),
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked, tasks) = writers(&c, ns, 8, stop.clone());
    wait_for_acks(&acked, 200).await;
    // No warning: the server dies with requests in flight.
    s.kill().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged = acked.lock().unwrap().clone();
    s.restart().unwrap();
    let c = client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(c, ns);
    let stored: std::collections::BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|n| !stored.contains(*n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_no_acknowledged_write_on_sqlite() {
    sigkill_under_load(Datastore::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_write_load_loses_no_acknowledged_write_on_etcd() {
    sigkill_under_load(Datastore::Etcd(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_member_killed_under_load_the_api_keeps_serving() {
    let mut s = KubeServer::start(Path::new(BIN), Datastore::Etcd(3)).unwrap();
    let c = client(&s).await;
    let ns = "ha";
    raw(
        &c,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap(),
    )
    .await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (acked, tasks) = writers(&c, ns, 4, stop.clone());
    wait_for_acks(&acked, 100).await;
    s.etcd.as_mut().unwrap().kill(0).unwrap();
    let at_kill = acked.lock().unwrap().len();
    wait_for_acks(&acked, at_kill + 200).await;
    // Reads go on too.
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    assert!(api.list(&ListParams::default()).await.unwrap().items.len() >= at_kill + 200);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged = acked.lock().unwrap().clone();
    let stored: std::collections::BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| c.metadata.name.unwrap())
        .collect();
    assert!(
        acknowledged.iter().all(|n| stored.contains(n)),
        "every acknowledged write is there"
    );
    drop(s);
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": image}]}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kube_rs_reflector_sees_every_change_in_order_across_a_server_restart() {
    let mut s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let c = client(&s).await;
    let ns = "reflected";
    raw(
        &c,
        "POST",
        "/api/v1/namespaces",
        "application/json",
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap(),
    )
    .await;
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let (reader, writer) = reflector::store::<Pod>();
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()))
        .touched_objects()
        .for_each(move |p| {
            if let Ok(p) = p {
                let image = p
                    .spec
                    .as_ref()
                    .map(|s| s.containers[0].image.clone().unwrap_or_default())
                    .unwrap_or_default();
                log.lock().unwrap().push((
                    p.metadata.name.clone().unwrap(),
                    p.metadata.resource_version.clone().unwrap(),
                    image,
                ));
            }
            futures::future::ready(())
        });
    let handle = tokio::spawn(stream);
    reader.wait_until_ready().await.unwrap();

    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..5 {
        api.create(&PostParams::default(), &pod(&format!("p{i}"), "one"))
            .await
            .unwrap();
        expected.insert(format!("p{i}"), "one".into());
    }
    for i in 0..3 {
        let mut p = api.get(&format!("p{i}")).await.unwrap();
        p.spec.as_mut().unwrap().containers[0].image = Some("two".into());
        api.replace(&format!("p{i}"), &PostParams::default(), &p)
            .await
            .unwrap();
        expected.insert(format!("p{i}"), "two".into());
    }
    api.delete("p4", &DeleteParams::default()).await.unwrap();
    expected.remove("p4");

    // SIGKILL and restart on the same port; the watch breaks and kube-rs resumes or relists.
    s.restart().unwrap();
    let c2 = client(&s).await;
    let api2: Api<Pod> = Api::namespaced(c2, ns);
    for i in 5..8 {
        api2.create(&PostParams::default(), &pod(&format!("p{i}"), "three"))
            .await
            .unwrap();
        expected.insert(format!("p{i}"), "three".into());
    }
    let mut p = api2.get("p0").await.unwrap();
    p.spec.as_mut().unwrap().containers[0].image = Some("four".into());
    api2.replace("p0", &PostParams::default(), &p)
        .await
        .unwrap();
    expected.insert("p0".into(), "four".into());
    api2.delete("p1", &DeleteParams::default()).await.unwrap();
    expected.remove("p1");

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state: BTreeMap<String, String> = reader
            .state()
            .iter()
            .map(|p| {
                (
                    p.metadata.name.clone().unwrap(),
                    p.spec.as_ref().unwrap().containers[0]
                        .image
                        .clone()
                        .unwrap(),
                )
            })
            .collect();
        if state == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reflector did not converge: {state:?} != {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Per object, the versions seen only move forward, and every change was seen.
    let seen = seen.lock().unwrap().clone();
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for (name, rv, _) in &seen {
        let rv: i64 = rv.parse().unwrap();
        if let Some(prev) = last.get(name) {
            assert!(
                rv >= *prev,
                "{name} went back from {prev} to {rv}: {seen:?}"
            );
        }
        last.insert(name.clone(), rv);
    }
    for (name, image) in [
        ("p0", "two"),
        ("p0", "four"),
        ("p2", "two"),
        ("p7", "three"),
    ] {
        assert!(
            seen.iter().any(|(n, _, i)| n == name && i == image),
            "{name} as {image} unseen: {seen:?}"
        );
    }
    handle.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_revision_gets_410_expired() {
    let s = KubeServer::start_with(
        Path::new(BIN),
        Datastore::Sqlite,
        &["--compaction-interval", "1"],
    )
    .unwrap();
    let c = client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let first = api
        .create(
            &PostParams::default(),
            &serde_json::from_slice(&cm("old", "default")).unwrap(),
        )
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.unwrap();
    // Two compaction ticks after more writes take the horizon past the first write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        i += 1;
        api.create(
            &PostParams::default(),
            &serde_json::from_slice(&cm(&format!("new{i}"), "default")).unwrap(),
        )
        .await
        .unwrap();
        let (code, st) = raw(&c, "GET", &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={old_rv}&timeoutSeconds=1"), "application/json", vec![]).await;
        let text = st
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| st.to_string());
        if text.contains("\"ERROR\"") {
            assert_eq!(code, 200);
            let first_line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_eq!(first_line["type"], "ERROR");
            assert_eq!(first_line["object"]["code"], 410);
            assert_eq!(first_line["object"]["reason"], "Expired");
            assert!(
                first_line["object"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("too old resource version: {old_rv} (")),
                "{first_line}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no 410 after compaction: {text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A list at the compacted revision is 410 too.
    let (code, st) = raw(&c, "GET", &format!("/api/v1/namespaces/default/configmaps?resourceVersion={old_rv}&resourceVersionMatch=Exact"), "application/json", vec![]).await;
    assert_eq!(
        (code, st["reason"].as_str()),
        (410, Some("Expired")),
        "{st}"
    );
    // A kube-rs watcher started now still works (it lists, then watches from the current revision).
    let events: Vec<_> = watcher(api, watcher::Config::default())
        .take(2)
        .try_collect()
        .await
        .unwrap();
    assert!(!events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_makes_the_pki_and_a_private_admin_kubeconfig() {
    use std::os::unix::fs::PermissionsExt;
    let mut s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let mode = std::fs::metadata(&s.kubeconfig)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the admin kubeconfig is the operator's alone");
    let tls = s.data_dir().join("server/tls");
    for key in ["server-ca.key", "service.key", "serving-kube-apiserver.key"] {
        assert_eq!(
            std::fs::metadata(tls.join(key))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600,
            "{key}"
        );
    }
    // The serving certificate names the in-cluster service and the advertised address.
    for name in [
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "localhost",
    ] {
        let kc = Kubeconfig::read_from(&s.kubeconfig).unwrap();
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .unwrap();
        cfg.tls_server_name = Some(name.into());
        let c = Client::try_from(cfg).unwrap();
        c.apiserver_version()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // A restart keeps the CA: the first kubeconfig still works.
    let before = std::fs::read(&s.kubeconfig).unwrap();
    s.restart().unwrap();
    std::fs::write(&s.kubeconfig, &before).unwrap();
    client(&s).await.apiserver_version().await.unwrap();
}

/// A client with a certificate for `cn` in `org`, signed by the server's CA.
async fn cert_client(s: &KubeServer, cn: &str, org: &str) -> Client {
    let kc = Kubeconfig::read_from(s.kubeconfig_for(cn, org).unwrap()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_only_what_its_own_pods_use() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let admin = client(&s).await;
    let ns = "default";
    for (secret, node) in [("s1", "n1"), ("s2", "n2")] {
        let (code, st) = raw(&admin, "POST", &format!("/api/v1/namespaces/{ns}/secrets"), "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret}, "data": {"k": "dg=="}})).unwrap()).await;
        assert_eq!(code, 200, "{st}");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("on-{node}")}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}], "volumes": [{"name": "s", "secret": {"secretName": secret}}]}});
        let (code, st) = raw(
            &admin,
            "POST",
            &format!("/api/v1/namespaces/{ns}/pods"),
            "application/json",
            serde_json::to_vec(&pod).unwrap(),
        )
        .await;
        assert_eq!(code, 200, "{st}");
    }
    let n1 = cert_client(&s, "system:node:n1", "system:nodes").await;
    let (code, st) = raw(
        &n1,
        "GET",
        &format!("/api/v1/namespaces/{ns}/secrets/s1"),
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 200, "its pod's secret: {st}");
    let (code, st) = raw(
        &n1,
        "GET",
        &format!("/api/v1/namespaces/{ns}/secrets/s2"),
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 403, "another node's: {st}");
    assert_eq!(
        st["message"].as_str().unwrap(),
        "secrets \"s2\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
    );
    let (code, _) = raw(
        &n1,
        "GET",
        &format!("/api/v1/namespaces/{ns}/secrets"),
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 403, "no listing of secrets");
    let (code, _) = raw(
        &n1,
        "GET",
        "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 200, "pods it may list");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let (code, st) = raw(
        &n1,
        "POST",
        "/api/v1/nodes",
        "application/json",
        serde_json::to_vec(&node).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "its own Node: {st}");
    let other = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}});
    let (code, _) = raw(
        &n1,
        "POST",
        "/api/v1/nodes",
        "application/json",
        serde_json::to_vec(&other).unwrap(),
    )
    .await;
    assert_eq!(code, 403, "not another's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_list_sends_initial_events_then_a_bookmark() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let c = client(&s).await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    for n in ["a", "b"] {
        api.create(
            &PostParams::default(),
            &serde_json::from_slice(&cm(n, "default")).unwrap(),
        )
        .await
        .unwrap();
    }
    let (code, body) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1", "application/json", vec![]).await;
    assert_eq!(code, 200);
    let text = body
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| body.to_string());
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "ADDED")
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["a", "b", "kube-root-ca.crt"]);
    let bookmark = &events[names.len()];
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // Without allowWatchBookmarks it is refused, as upstream refuses it.
    let (code, _) = raw(&c, "GET", "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", "application/json", vec![]).await;
    assert_eq!(code, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_with_two_versions_serves_each_object_as_the_version_asked() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let c = client(&s).await;
    let schema = json!({"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}});
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "gadgets", "kind": "Gadget"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "schema": schema}, {"name": "v2", "served": true, "storage": false, "schema": schema}]}});
    let (code, st) = raw(
        &c,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        serde_json::to_vec(&crd).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{st}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let g = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"x": 1}});
        let (code, _) = raw(
            &c,
            "POST",
            "/apis/example.com/v1/namespaces/default/gadgets",
            "application/json",
            serde_json::to_vec(&g).unwrap(),
        )
        .await;
        if code == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "gadgets never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for v in ["v1", "v2"] {
        let (code, g) = raw(
            &c,
            "GET",
            &format!("/apis/example.com/{v}/namespaces/default/gadgets/g"),
            "application/json",
            vec![],
        )
        .await;
        assert_eq!(
            (code, g["apiVersion"].as_str()),
            (200, Some(format!("example.com/{v}").as_str()))
        );
        let (_, l) = raw(
            &c,
            "GET",
            &format!("/apis/example.com/{v}/namespaces/default/gadgets"),
            "application/json",
            vec![],
        )
        .await;
        assert_eq!(l["items"][0]["apiVersion"], format!("example.com/{v}"));
    }
    let (_, crd) = raw(
        &c,
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
}

/// A gauge or counter of API Priority and Fairness for one priority level, summed over its other labels.
async fn apf_gauge(admin: &Client, metric: &str, level: &str) -> u64 {
    let req = http::Request::get("/metrics").body(vec![]).unwrap();
    let text = admin.request_text(req).await.unwrap();
    let want = format!("priority_level=\"{level}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until workload-low has `executing` requests running and `queued` waiting (bounded: a level
/// that never gets there fails the test).
async fn wait_for_level(admin: &Client, executing: u64, queued: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let e = apf_gauge(
            admin,
            "apiserver_flowcontrol_current_executing_requests",
            "workload-low",
        )
        .await;
        let q = apf_gauge(
            admin,
            "apiserver_flowcontrol_current_inqueue_requests",
            "workload-low",
        )
        .await;
        if (e, q) == (executing, queued) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "workload-low: {e} executing, {q} queued; waited for {executing} and {queued}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// curl as a service account (bearer token, the server's CA), printing the headers and `code=<status>`.
fn curl(s: &KubeServer, token: &str, extra: &[&str], path: &str) -> std::process::Command {
    let mut c = std::process::Command::new("curl");
    c.args(["-sS", "-i", "--cacert"])
        .arg(s.data_dir().join("server/tls/server-ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-w", "\ncode=%{http_code}\n"])
        .args(extra)
        .arg(format!("{}{path}", s.url));
    c
}

/// API Priority and Fairness as upstream's suggested configuration: one service account flooding the
/// apiserver fills its own queue of the workload-low level and is refused beyond it (429 and
/// Retry-After, as kube-apiserver), another service account of the same level waits its turn instead of
/// being refused, and the admin (system:masters) is exempt.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_from_one_client_is_queued_and_refused_without_starving_others() {
    // 1 + 1 in flight: workload-low gets one seat (ceil(2 * 100 / 245)).
    let s = KubeServer::start_with(
        Path::new(BIN),
        Datastore::Sqlite,
        &[
            "--max-requests-inflight",
            "1",
            "--max-mutating-requests-inflight",
            "1",
        ],
    )
    .unwrap();
    let admin = client(&s).await;
    let ns = "apf";
    let mut posts = vec![(
        "/api/v1/namespaces".to_string(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )];
    for sa in ["noisy", "quiet"] {
        posts.push((
            format!("/api/v1/namespaces/{ns}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}),
        ));
    }
    posts.push((
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "edit"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"}, "subjects": [{"kind": "Group", "name": format!("system:serviceaccounts:{ns}")}]}),
    ));
    create_all(&admin, posts).await;
    let mut tokens = BTreeMap::new();
    for sa in ["noisy", "quiet"] {
        tokens.insert(sa, sa_token(&admin, ns, sa).await);
    }
    let configmaps = format!("/api/v1/namespaces/{ns}/configmaps");
    // The noisy client opens creates it never finishes: one takes the seat, fifty wait in its queue.
    let slow = |_| {
        curl(
            &s,
            &tokens["noisy"],
            &[
                "-X",
                "POST",
                "-T",
                "-",
                "-H",
                "Content-Type: application/json",
            ],
            &configmaps,
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
    };
    let mut flood: Vec<_> = (0..51).map(slow).collect();
    wait_for_level(&admin, 1, 50).await;

    // One more of its requests is refused at once, with upstream's 429 and Retry-After.
    let out = curl(&s, &tokens["noisy"], &[], &configmaps)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        text.contains("code=429") && text.contains("retry-after: 1"),
        "{text}"
    );

    // Another client of the same level is queued behind its own turn, not refused; the admin is exempt.
    let quiet = curl(&s, &tokens["quiet"], &[], &configmaps)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_level(&admin, 1, 51).await;
    let (code, _) = raw(&admin, "GET", &configmaps, "application/json", vec![]).await;
    assert_eq!(code, 200, "the admin is served while the level is full");

    // The noisy client gives up: the quiet one is served, and nothing of the flood is left.
    for c in &mut flood {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let out = quiet.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("code=200"), "{text}");
    wait_for_level(&admin, 0, 0).await;
    assert!(
        apf_gauge(
            &admin,
            "apiserver_flowcontrol_rejected_requests_total",
            "workload-low"
        )
        .await
            >= 1
    );
    let (_, list) = raw(&admin, "GET", &configmaps, "application/json", vec![]).await;
    let names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.iter().all(|n| n == "kube-root-ca.crt"),
        "half-written objects: {names:?}"
    );
}

/// RBAC's escalation prevention: a namespace admin may write roles and bindings within what it holds
/// (`edit` is part of `admin`), not bind itself `cluster-admin` or write a role with rules it lacks; the
/// refusal names the missing permissions, and nothing is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_admin_cannot_grant_itself_more_than_it_holds() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let admin = client(&s).await;
    let ns = "esc";
    create_all(
        &admin,
        [
            (
                "/api/v1/namespaces".to_string(),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            ),
            (
                format!("/api/v1/namespaces/{ns}/serviceaccounts"),
                json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "owner"}}),
            ),
            (
                format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings"),
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "owner-admin"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}, "subjects": [{"kind": "ServiceAccount", "name": "owner", "namespace": ns}]}),
            ),
        ],
    )
    .await;
    let owner = token_client(&s, Some(&sa_token(&admin, ns, "owner").await)).await;
    let roles = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles");
    let bindings = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings");
    let post = |path: &str, body: Value| {
        let (c, path) = (owner.clone(), path.to_string());
        async move {
            raw(
                &c,
                "POST",
                &path,
                "application/json",
                serde_json::to_vec(&body).unwrap(),
            )
            .await
        }
    };
    let binding = |name: &str, role: &str| json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": name}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}, "subjects": [{"kind": "User", "name": "someone"}]});
    // Within what it holds: a role on pods, a binding to edit.
    let (code, st) = post(
        &roles,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
    )
    .await;
    assert_eq!(code, 200, "{st}");
    let (code, st) = post(&bindings, binding("someone-edit", "edit")).await;
    assert_eq!(code, 200, "{st}");
    // Beyond it: cluster-admin, and a role on nodes.
    let (code, st) = post(&bindings, binding("someone-root", "cluster-admin")).await;
    assert_eq!(code, 403, "{st}");
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("is attempting to grant RBAC permissions not currently held")
            && msg.contains(r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#),
        "{msg}"
    );
    let (code, st) = post(
        &roles,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "node-reader"}, "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]}),
    )
    .await;
    assert_eq!(code, 403, "{st}");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains(r#"{APIGroups:[""], Resources:["nodes"], Verbs:["get"]}"#),
        "{st}"
    );
    // A binding to a role that does not exist could later grant anything: refused too.
    let (code, st) = post(&bindings, binding("someone-ghost", "no-such-role")).await;
    assert_eq!(code, 403, "{st}");
    // Nothing of the refused writes exists; the admin (system:masters) may still bind cluster-admin.
    let (_, list) = raw(&admin, "GET", &bindings, "application/json", vec![]).await;
    let mut names: Vec<_> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["owner-admin", "someone-edit"]);
    let (code, st) = raw(
        &admin,
        "POST",
        &bindings,
        "application/json",
        serde_json::to_vec(&binding("someone-root", "cluster-admin")).unwrap(),
    )
    .await;
    assert_eq!(code, 200, "{st}");
}

/// Events expire after `--event-ttl` from their last write, core and events.k8s.io alike (they share
/// storage), as etcd's leases expire them for kube-apiserver; other objects stay.
#[tokio::test(flavor = "multi_thread")]
async fn events_expire_after_the_event_ttl() {
    let s =
        KubeServer::start_with(Path::new(BIN), Datastore::Sqlite, &["--event-ttl", "2s"]).unwrap();
    let admin = client(&s).await;
    create_all(
        &admin,
        [
            (
                "/api/v1/namespaces/default/events".to_string(),
                json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "old.1"},
                    "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
                    "reason": "Started", "message": "m", "type": "Normal"}),
            ),
            (
                "/apis/events.k8s.io/v1/namespaces/default/events".to_string(),
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "old.2"},
                    "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "test",
                    "reportingInstance": "test-1", "action": "Started", "reason": "Started",
                    "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}, "type": "Normal"}),
            ),
            (
                "/api/v1/namespaces/default/configmaps".to_string(),
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stays"}}),
            ),
        ],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = raw(&admin, "GET", "/api/v1/events", "application/json", vec![]).await;
        if list["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "events left: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = raw(
        &admin,
        "GET",
        "/api/v1/namespaces/default/configmaps/stays",
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 200);
}
