//! The controllers of `basalt server`, driven as a user drives them: kubectl against the server, fake
//! nodes (Node objects with capacity that nothing runs), and the test playing the kubelet — it marks bound
//! pods Running and Ready through the status subresource and removes pods once they are terminating,
//! as a kubelet confirms a pod's end. Every scenario runs on the embedded SQLite and on a three-member etcd.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use basalt_testsupport::kube::{Datastore, KubeServer};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_basalt"))
}

/// The server, kubectl, and a kube-rs client for what the test does many times a second.
struct Cluster {
    s: KubeServer,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
}

impl Cluster {
    fn start(datastore: Datastore) -> Result<Cluster> {
        let s = KubeServer::start(bin(), datastore)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = rt.block_on(async {
            let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig)?;
            let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            anyhow::Ok(kube::Client::try_from(cfg)?)
        })?;
        Ok(Cluster { s, rt, client })
    }

    fn kubectl(&self, args: &[&str]) -> Result<String> {
        let out = self.s.run(args);
        ensure!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    fn apply(&self, objects: &[Value]) -> Result<()> {
        let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
        let out = self
            .s
            .run_with_input(&["apply", "-f", "-"], &docs.join("\n---\n"));
        ensure!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    fn pods(&self, ns: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        Ok(self.rt.block_on(api.list(&ListParams::default()))?.items)
    }

    fn replicaset(&self, ns: &str, name: &str) -> Result<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        Ok(self.rt.block_on(api.get(name))?)
    }

    /// One pass of a kubelet over `ns`: bound pods not yet ready become Running and Ready; terminating
    /// pods are confirmed gone. Gives how many pods it changed.
    fn kubelet(&self, ns: &str) -> Result<usize> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut changed = 0;
        for p in self.pods(ns)? {
            let name = p.name_any();
            if p.metadata.deletion_timestamp.is_some() {
                let r = self.rt.block_on(api.delete(
                    &name,
                    &DeleteParams {
                        grace_period_seconds: Some(0),
                        ..Default::default()
                    },
                ));
                match r {
                    Ok(_) => changed += 1,
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            } else if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() && !ready(&p) {
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let cond =
                    |t: &str| json!({"type": t, "status": "True", "lastTransitionTime": now});
                let patch = json!({"status": {"phase": "Running", "conditions": [
                    cond("PodScheduled"), cond("Initialized"), cond("ContainersReady"), cond("Ready")]}});
                let r = self.rt.block_on(api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ));
                match r {
                    Ok(_) => changed += 1,
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(changed)
    }
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

/// Polls `f` until it gives a value (the condition is the test's; the deadline only bounds a failure).
fn wait<T>(what: &str, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node(name: &str) -> Value {
    let res = json!({"cpu": "64", "memory": "256Gi", "pods": "110"});
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"capacity": res, "allocatable": res},
    })
}

fn namespace(ns: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
}

fn template(app: &str, image: &str) -> Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "c", "image": image,
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    })
}

/// The pods of `ns` controlled by the object with `uid`, not terminating.
fn owned_by(pods: &[Pod], uid: &str) -> Vec<Pod> {
    pods.iter()
        .filter(|p| !terminating(p))
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .cloned()
        .collect()
}

/// Waits until the ReplicaSet has exactly `want` pods and reports them all in its status (ready and
/// available when `ready`), checking at every look that it never made more than `want` (or than it had,
/// when scaling down).
fn settle_replicaset(c: &Cluster, ns: &str, name: &str, want: usize, ready: bool) -> Result<()> {
    let rs = c.replicaset(ns, name)?;
    let before = owned_by(&c.pods(ns)?, &rs.uid().unwrap_or_default()).len();
    let at_most = want.max(before);
    wait(&format!("{ns}/{name} at {want} replicas"), || {
        let rs = c.replicaset(ns, name)?;
        let uid = rs.uid().unwrap_or_default();
        let pods = owned_by(&c.pods(ns)?, &uid);
        ensure!(
            pods.len() <= at_most,
            "{name} has {} pods, more than {at_most}",
            pods.len()
        );
        if ready {
            c.kubelet(ns)?;
        }
        let st = rs.status.clone().unwrap_or_default();
        let n = want as i32;
        let counted = st.replicas == n
            && st.observed_generation == rs.metadata.generation
            && (!ready
                || (st.ready_replicas.unwrap_or(0) == n
                    && st.available_replicas.unwrap_or(0) == n));
        Ok((pods.len() == want && counted).then_some(()))
    })
}

/// A ReplicaSet creates its pods with a controller reference, scales up and down without ever making
/// one too many, replaces a deleted pod, adopts a matching orphan, and reports what it sees.
fn replicaset(c: &Cluster) -> Result<()> {
    let ns = "rs";
    c.apply(&[namespace(ns), node("rs-1"), node("rs-2")])?;
    let rs = json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": template("web", "registry.invalid/web:1")},
    });
    c.apply(&[rs])?;
    settle_replicaset(c, ns, "web", 3, false)?;
    let rs = c.replicaset(ns, "web")?;
    let uid = rs.uid().context("uid")?;
    for p in owned_by(&c.pods(ns)?, &uid) {
        let r = &p.owner_references()[0];
        ensure!(
            r.kind == "ReplicaSet"
                && r.api_version == "apps/v1"
                && r.name == "web"
                && r.block_owner_deletion == Some(true),
            "owner reference {r:?}"
        );
        ensure!(
            p.name_any().starts_with("web-")
                && p.labels().get("app").map(String::as_str) == Some("web"),
            "pod {}",
            p.name_any()
        );
    }
    settle_replicaset(c, ns, "web", 3, true)?;

    c.kubectl(&["scale", "rs", "web", "-n", ns, "--replicas=5"])?;
    settle_replicaset(c, ns, "web", 5, true)?;
    c.kubectl(&["scale", "rs", "web", "-n", ns, "--replicas=2"])?;
    settle_replicaset(c, ns, "web", 2, true)?;

    // A pod gone is replaced.
    let victim = owned_by(&c.pods(ns)?, &uid)[0].name_any();
    c.kubectl(&[
        "delete",
        "pod",
        "-n",
        ns,
        &victim,
        "--force",
        "--grace-period=0",
    ])?;
    settle_replicaset(c, ns, "web", 2, true)?;
    ensure!(!owned_by(&c.pods(ns)?, &uid)
        .iter()
        .any(|p| p.name_any() == victim));

    // An orphan the selector matches is adopted (and, one too many, a pod is deleted).
    let orphan = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "stray", "namespace": ns, "labels": {"app": "web"}},
        "spec": template("web", "registry.invalid/web:1")["spec"]});
    c.apply(&[orphan])?;
    wait("the orphan adopted", || {
        let stray = c.pods(ns)?.into_iter().find(|p| p.name_any() == "stray");
        Ok(match stray {
            None => Some(()),
            Some(p) if terminating(&p) => Some(()),
            Some(p) => p
                .owner_references()
                .iter()
                .any(|r| r.uid == uid)
                .then_some(()),
        })
    })?;
    settle_replicaset(c, ns, "web", 2, true)?;

    c.kubectl(&["delete", "rs", "web", "-n", ns])?;
    c.kubectl(&[
        "delete",
        "pods",
        "--all",
        "-n",
        ns,
        "--force",
        "--grace-period=0",
    ])?;
    c.kubectl(&["delete", "node", "rs-1", "rs-2"])?;
    Ok(())
}

/// The manager leads the `kube-controller-manager` Lease under its own identity, and each loop runs as its
/// service account, bound to upstream's `system:controller:` role.
fn identity(c: &Cluster) -> Result<()> {
    let id = std::fs::read_to_string(c.s.data_dir().join("server/controller-manager.id"))?;
    let holder = wait("the controller manager to lead", || {
        let out = c.s.run(&[
            "get",
            "lease",
            "-n",
            "kube-system",
            "kube-controller-manager",
            "-o",
            "json",
        ]);
        if !out.status.success() {
            return Ok(None);
        }
        let l: Value = serde_json::from_slice(&out.stdout)?;
        Ok(l.pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .map(str::to_string))
    })?;
    ensure!(
        holder == format!("basalt-test_{}", id.trim()),
        "lease held by {holder}"
    );
    let sa = c.kubectl(&[
        "get",
        "sa",
        "-n",
        "kube-system",
        "replicaset-controller",
        "-o",
        "name",
    ])?;
    ensure!(sa.trim() == "serviceaccount/replicaset-controller");
    let can = c.kubectl(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "--as=system:serviceaccount:kube-system:replicaset-controller",
    ])?;
    ensure!(
        can.trim() == "yes",
        "replicaset-controller may create pods: {can}"
    );
    let cannot = c.s.run(&[
        "auth",
        "can-i",
        "create",
        "pods",
        "--as=system:kube-controller-manager",
    ]);
    ensure!(
        String::from_utf8_lossy(&cannot.stdout).trim() == "no",
        "the manager itself may create pods"
    );
    Ok(())
}

fn scenarios(c: Cluster) -> Result<()> {
    identity(&c).context("identity")?;
    replicaset(&c).context("replicaset")?;
    Ok(())
}

#[test]
fn controllers_on_sqlite() -> Result<()> {
    scenarios(Cluster::start(Datastore::Sqlite)?)
}

#[test]
fn controllers_on_etcd() -> Result<()> {
    scenarios(Cluster::start(Datastore::Etcd(3))?)
}
