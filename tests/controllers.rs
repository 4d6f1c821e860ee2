//! The controllers of `basalt server`, driven as a user drives them: kubectl against the server, fake
//! nodes (Node objects with capacity that nothing runs), and the test playing the kubelet — it marks bound
//! pods Running and Ready through the status subresource and removes pods once they are terminating,
//! as a kubelet confirms a pod's end. Every scenario runs on the embedded SQLite and on a three-member etcd.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use basalt_testsupport::kube::{Datastore, KubeServer};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
        Cluster::with_server(KubeServer::start(bin(), datastore)?)
    }

    fn with_server(s: KubeServer) -> Result<Cluster> {
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

    fn replicasets(&self, ns: &str) -> Result<Vec<ReplicaSet>> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        Ok(self.rt.block_on(api.list(&ListParams::default()))?.items)
    }

    fn deployment(&self, ns: &str, name: &str) -> Result<Deployment> {
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        Ok(self.rt.block_on(api.get(name))?)
    }

    fn replicaset(&self, ns: &str, name: &str) -> Result<ReplicaSet> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), ns);
        Ok(self.rt.block_on(api.get(name))?)
    }

    /// One pass of a kubelet over `ns`: bound pods not yet ready become Running and Ready (at most
    /// `limit` of them: a slow kubelet makes a rollout go through its steps one look at a time);
    /// terminating pods are confirmed gone. Gives how many pods it changed.
    fn kubelet(&self, ns: &str, limit: usize) -> Result<usize> {
        let mut readied = 0;
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
                    // Gone, or changed meanwhile: the next pass sees it again.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            } else if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && !ready(&p)
                && readied < limit
            {
                readied += 1;
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
                    // Gone, or changed meanwhile: the next pass sees it again.
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
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
            c.kubelet(ns, usize::MAX)?;
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

const DNS: &str = "deploy";

/// The ReplicaSets the Deployment controls, oldest first.
fn replicasets_of(c: &Cluster, d: &Deployment) -> Result<Vec<ReplicaSet>> {
    let uid = d.uid().unwrap_or_default();
    let mut rss: Vec<ReplicaSet> = c
        .replicasets(DNS)?
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect();
    rss.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(rss)
}

fn annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> String {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .cloned()
        .unwrap_or_default()
}

fn image_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// Plays the kubelet until the Deployment runs `replicas` ready pods of `image`, all reported in its
/// status; checks at every look that the ReplicaSets stay within replicas + maxSurge and keep
/// replicas - maxUnavailable available, and that the ready pods do too. Gives the distinct steps (the
/// ReplicaSets' sizes) it saw.
fn roll(
    c: &Cluster,
    replicas: i32,
    image: &str,
    surge: i32,
    unavailable: i32,
) -> Result<Vec<Vec<i32>>> {
    let mut steps: Vec<Vec<i32>> = Vec::new();
    let mut reached = false;
    // A Deployment scaled down starts above the new bound.
    let d = c.deployment(DNS, "web")?;
    let start: i32 = replicasets_of(c, &d)?
        .iter()
        .map(|rs| rs.spec.replicas.unwrap_or(0))
        .sum();
    let max_total = (replicas + surge).max(start);
    wait(&format!("web at {replicas} replicas of {image}"), || {
        let d = c.deployment(DNS, "web")?;
        let rss = replicasets_of(c, &d)?;
        let sizes: Vec<i32> = rss.iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
        let total: i32 = sizes.iter().sum();
        let available: i32 = rss
            .iter()
            .map(|rs| {
                let a = rs
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0);
                a.min(rs.spec.replicas.unwrap_or(0))
            })
            .sum();
        let pods = c.pods(DNS)?;
        let ready_pods = pods.iter().filter(|p| !terminating(p) && ready(p)).count() as i32;
        ensure!(
            total <= max_total,
            "ReplicaSets sized {sizes:?}: more than {max_total}"
        );
        // Once reached, the minimum is kept (a Deployment growing or starting has not reached it yet).
        reached |= ready_pods >= replicas - unavailable;
        if reached {
            ensure!(
                available >= replicas - unavailable && ready_pods >= replicas - unavailable,
                "ReplicaSets sized {sizes:?} have {available} available ({ready_pods} ready pods): fewer than {replicas} - {unavailable}"
            );
        }
        if steps.last() != Some(&sizes) {
            steps.push(sizes.clone());
        }
        c.kubelet(DNS, 2)?;
        let st = d.status.clone().unwrap_or_default();
        let live: Vec<&Pod> = pods.iter().filter(|p| !terminating(p)).collect();
        let done = st.observed_generation >= d.metadata.generation
            && st.replicas == Some(replicas)
            && st.updated_replicas == Some(replicas)
            && st.available_replicas == Some(replicas)
            && st.ready_replicas == Some(replicas)
            && live.len() == replicas as usize
            && live.iter().all(|p| image_of(p) == image && ready(p));
        Ok(done.then_some(()))
    })?;
    Ok(steps)
}

fn history(c: &Cluster) -> Result<Vec<String>> {
    let out = c.kubectl(&["rollout", "history", "deployment/web", "-n", DNS])?;
    Ok(out
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// A Deployment of 10 scales to 20 and back; a new image rolls out within maxSurge 25% /
/// maxUnavailable 25% while `kubectl rollout status` follows it; `kubectl rollout undo` brings the first
/// template back as revision 3; `history` shows the revisions with their change causes; Recreate stops
/// every old pod before a new one is made.
fn deployment(c: &Cluster) -> Result<()> {
    c.apply(&[namespace(DNS), node("d-1"), node("d-2"), node("d-3")])?;
    let d = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": DNS,
            "annotations": {"kubernetes.io/change-cause": "v1"}},
        "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": template("web", "registry.invalid/web:1")},
    });
    c.apply(&[d])?;
    roll(c, 10, "registry.invalid/web:1", 3, 2)?;
    let d = c.deployment(DNS, "web")?;
    let rss = replicasets_of(c, &d)?;
    ensure!(rss.len() == 1, "{} ReplicaSets", rss.len());
    let first = rss[0].name_any();
    let hash = rss[0]
        .labels()
        .get("pod-template-hash")
        .cloned()
        .context("hash label")?;
    ensure!(first == format!("web-{hash}"), "ReplicaSet {first}");
    ensure!(annotation(&d.metadata, "deployment.kubernetes.io/revision") == "1");
    ensure!(annotation(&rss[0].metadata, "deployment.kubernetes.io/revision") == "1");
    ensure!(annotation(&rss[0].metadata, "kubernetes.io/change-cause") == "v1");

    c.kubectl(&["scale", "deployment/web", "-n", DNS, "--replicas=20"])?;
    roll(c, 20, "registry.invalid/web:1", 5, 5)?;
    c.kubectl(&["scale", "deployment/web", "-n", DNS, "--replicas=10"])?;
    roll(c, 10, "registry.invalid/web:1", 3, 2)?;
    // kubectl describe's story of it, in upstream's words.
    let evs = events_about(c, DNS, "web", "ScalingReplicaSet")?;
    for want in [
        format!("Scaled up replica set {first} from 0 to 10"),
        format!("Scaled up replica set {first} from 10 to 20"),
        format!("Scaled down replica set {first} from 20 to 10"),
    ] {
        ensure!(evs.iter().any(|(_, m)| *m == want), "{want}: {evs:?}");
    }
    let evs = events_about(c, DNS, &first, "SuccessfulCreate")?;
    ensure!(
        evs.iter()
            .any(|(r, m)| r == "SuccessfulDelete" && m.starts_with("Deleted pod: ")),
        "{evs:?}"
    );
    let d = c.deployment(DNS, "web")?;
    ensure!(
        replicasets_of(c, &d)?.len() == 1,
        "scaling made a ReplicaSet"
    );

    // A new image, with rollout status following it.
    c.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        DNS,
        "c=registry.invalid/web:2",
    ])?;
    // The cause annotated once the template changed, as upstream's docs advise: annotated before, the
    // ReplicaSet still current would take it.
    c.kubectl(&[
        "annotate",
        "deployment/web",
        "-n",
        DNS,
        "kubernetes.io/change-cause=v2",
        "--overwrite",
    ])?;
    let status =
        c.s.kubectl()
            .args([
                "rollout",
                "status",
                "deployment/web",
                "-n",
                DNS,
                "--timeout=120s",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
    let steps = roll(c, 10, "registry.invalid/web:2", 3, 2)?;
    let out = status.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "rollout status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("kubectl rollout status:\n{text}");
    let lines: Vec<&str> = text.lines().collect();
    ensure!(
        lines.last() == Some(&"deployment \"web\" successfully rolled out"),
        "rollout status: {text}"
    );
    // The rollout is paced by the fake kubelet: kubectl saw it under way.
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("Waiting for deployment \"web\" rollout to finish: ")),
        "rollout status: {text}"
    );
    for l in &lines[..lines.len() - 1] {
        // kubectl's line while the controller has not yet seen the new generation.
        if *l == "Waiting for deployment spec update to be observed..." {
            continue;
        }
        let rest = l
            .strip_prefix("Waiting for deployment \"web\" rollout to finish: ")
            .with_context(|| format!("rollout status line {l:?}"))?;
        ensure!(
            rest.ends_with(" new replicas have been updated...")
                || rest.ends_with(" old replicas are pending termination...")
                || rest.ends_with(" updated replicas are available..."),
            "rollout status line {l:?}"
        );
    }
    // The old and the new ReplicaSet were seen side by side, not only before and after.
    println!("rolling update steps: {steps:?}");
    ensure!(
        steps.iter().any(|s| s.len() == 2 && s[0] > 0 && s[1] > 0),
        "no step of the rollout seen: {steps:?}"
    );
    let d = c.deployment(DNS, "web")?;
    let rss = replicasets_of(c, &d)?;
    let sizes: Vec<i32> = rss.iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
    ensure!(sizes == [0, 10], "ReplicaSets sized {sizes:?}");
    ensure!(annotation(&d.metadata, "deployment.kubernetes.io/revision") == "2");
    ensure!(annotation(&rss[1].metadata, "deployment.kubernetes.io/revision") == "2");
    let cond = |t: &str| {
        d.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|x| x.type_.as_deref() == Some(t)).cloned())
            .unwrap_or_default()
    };
    let progressing = cond("Progressing");
    ensure!(
        progressing.reason.as_deref() == Some("NewReplicaSetAvailable")
            && progressing.message
                == Some(format!(
                    "ReplicaSet \"{}\" has successfully progressed.",
                    rss[1].name_any()
                )),
        "Progressing {progressing:?}"
    );
    let available = cond("Available");
    ensure!(
        available.status.as_deref() == Some("True")
            && available.reason.as_deref() == Some("MinimumReplicasAvailable")
            && available.message.as_deref() == Some("Deployment has minimum availability."),
        "Available {available:?}"
    );
    ensure!(
        history(c)?
            == [
                "deployment.apps/web",
                "REVISION  CHANGE-CAUSE",
                "1         v1",
                "2         v2"
            ],
        "history {:?}",
        history(c)?
    );

    // Undo: kubectl patches the first template back; that ReplicaSet becomes revision 3.
    let undo = c.kubectl(&["rollout", "undo", "deployment/web", "-n", DNS])?;
    ensure!(
        undo.trim() == "deployment.apps/web rolled back",
        "undo: {undo}"
    );
    roll(c, 10, "registry.invalid/web:1", 3, 2)?;
    let d = c.deployment(DNS, "web")?;
    let rss = replicasets_of(c, &d)?;
    ensure!(
        rss.len() == 2 && rss[0].name_any() == first,
        "ReplicaSets after undo"
    );
    ensure!(annotation(&rss[0].metadata, "deployment.kubernetes.io/revision") == "3");
    ensure!(
        annotation(
            &rss[0].metadata,
            "deployment.kubernetes.io/revision-history"
        ) == "1"
    );
    ensure!(annotation(&d.metadata, "deployment.kubernetes.io/revision") == "3");
    ensure!(
        history(c)?
            == [
                "deployment.apps/web",
                "REVISION  CHANGE-CAUSE",
                "2         v2",
                "3         v1"
            ],
        "history {:?}",
        history(c)?
    );

    // Recreate: no new pod while an old one runs.
    c.kubectl(&[
        "patch",
        "deployment/web",
        "-n",
        DNS,
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ])?;
    c.kubectl(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        DNS,
        "c=registry.invalid/web:3",
    ])?;
    wait("web recreated with web:3", || {
        let pods = c.pods(DNS)?;
        let live: Vec<&Pod> = pods.iter().filter(|p| !terminating(p)).collect();
        let new = pods
            .iter()
            .filter(|p| image_of(p) == "registry.invalid/web:3")
            .count();
        // Old pods, terminating ones too, are all gone before the first new one is made.
        ensure!(
            new == 0 || new == pods.len(),
            "{new} new pods beside {} old ones",
            pods.len() - new
        );
        c.kubelet(DNS, usize::MAX)?;
        Ok((new == 10 && live.iter().all(|p| ready(p))).then_some(()))
    })?;
    Ok(())
}

fn web(replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": DNS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": template("web", "registry.invalid/web:1")},
    })
}

fn deployment_opt(c: &Cluster) -> Result<Option<Deployment>> {
    let api: Api<Deployment> = Api::namespaced(c.client.clone(), DNS);
    Ok(c.rt.block_on(api.get_opt("web"))?)
}

/// Deleting a Deployment: in the background its ReplicaSets and pods go after it; in the foreground it
/// stays, with the `foregroundDeletion` finalizer, until they are gone; orphaned, they stay and lose
/// their reference to it.
fn garbage_collection(c: &Cluster) -> Result<()> {
    // Background (kubectl's default), from the Deployment the last scenario left.
    ensure!(!c.replicasets(DNS)?.is_empty() && !c.pods(DNS)?.is_empty());
    c.kubectl(&["delete", "deployment", "web", "-n", DNS, "--wait=false"])?;
    wait("ReplicaSets and pods collected", || {
        c.kubelet(DNS, usize::MAX)?;
        Ok((c.replicasets(DNS)?.is_empty() && c.pods(DNS)?.is_empty()).then_some(()))
    })?;

    // Foreground: with no kubelet confirming, the pods stay terminating and so does the Deployment.
    c.apply(&[web(4)])?;
    roll(c, 4, "registry.invalid/web:1", 1, 1)?;
    c.kubectl(&[
        "delete",
        "deployment",
        "web",
        "-n",
        DNS,
        "--cascade=foreground",
        "--wait=false",
    ])?;
    let finalizers = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.finalizers.clone().unwrap_or_default()
    };
    wait("the dependents deleted in the foreground", || {
        let d = deployment_opt(c)?.with_context(|| {
            format!(
                "the Deployment went before its dependents\n{}",
                c.s.log_tail()
            )
        })?;
        ensure!(
            d.metadata.deletion_timestamp.is_some()
                && finalizers(&d.metadata) == ["foregroundDeletion"],
            "Deployment metadata {:?}",
            d.metadata
        );
        let rss = c.replicasets(DNS)?;
        let pods = c.pods(DNS)?;
        let all_terminating = !pods.is_empty() && pods.iter().all(terminating);
        let rs_waiting = rss.len() == 1
            && rss[0].metadata.deletion_timestamp.is_some()
            && finalizers(&rss[0].metadata) == ["foregroundDeletion"];
        Ok((all_terminating && rs_waiting).then_some(()))
    })?;
    wait("the Deployment gone after its pods", || {
        let d = deployment_opt(c)?;
        let rss = c.replicasets(DNS)?;
        let pods = c.pods(DNS)?;
        if d.is_none() {
            ensure!(
                rss.is_empty() && pods.is_empty(),
                "the Deployment went first"
            );
            return Ok(Some(()));
        }
        c.kubelet(DNS, usize::MAX)?;
        Ok(None)
    })?;

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, without the reference.
    c.apply(&[web(4)])?;
    roll(c, 4, "registry.invalid/web:1", 1, 1)?;
    c.kubectl(&["delete", "deployment", "web", "-n", DNS, "--cascade=orphan"])?;
    wait("the Deployment gone", || {
        Ok(deployment_opt(c)?.is_none().then_some(()))
    })?;
    let rss = c.replicasets(DNS)?;
    ensure!(rss.len() == 1, "{} ReplicaSets", rss.len());
    ensure!(
        rss[0].metadata.owner_references.is_none(),
        "the ReplicaSet still has owner references: {:?}",
        rss[0].metadata.owner_references
    );
    let rs_uid = rss[0].uid().context("uid")?;
    ensure!(
        owned_by(&c.pods(DNS)?, &rs_uid).len() == 4,
        "the pods did not stay with their ReplicaSet"
    );
    c.kubectl(&["delete", "rs", "--all", "-n", DNS])?;
    wait("the orphaned ReplicaSet and pods collected", || {
        c.kubelet(DNS, usize::MAX)?;
        Ok((c.replicasets(DNS)?.is_empty() && c.pods(DNS)?.is_empty()).then_some(()))
    })?;
    Ok(())
}

/// The manager leads the `kube-controller-manager` Lease under its own identity, and each loop runs as its
/// service account, bound to upstream's `system:controller:` role.
fn identity(c: &Cluster) -> Result<()> {
    let id = std::fs::read_to_string(c.s.data_dir().join("server/controller-manager.id"))?;
    let holder = wait("the controller manager to lead", || lease_holder(c))?;
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

/// A PKCS#10 request (PEM) for `cn` in `orgs`, with its private key (PEM).
fn certificate_request(cn: &str, orgs: &[&str]) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    Ok((p.serialize_request(&key)?.pem()?, key.serialize_pem()))
}

fn csr(name: &str, signer: &str, request: &str, usages: &[&str], expiration: Option<i64>) -> Value {
    use base64::Engine;
    let mut spec = json!({"signerName": signer, "usages": usages,
        "request": base64::engine::general_purpose::STANDARD.encode(request)});
    if let Some(e) = expiration {
        spec["expirationSeconds"] = json!(e);
    }
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name}, "spec": spec})
}

/// The request's conditions (`type/reason`) and its certificate, if issued.
fn csr_state(c: &Cluster, name: &str) -> Result<(Vec<String>, Option<String>)> {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let api: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    let r = c.rt.block_on(api.get(name))?;
    let status = r.status.unwrap_or_default();
    let conds = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| format!("{}/{}", c.type_, c.reason.unwrap_or_default()))
        .collect();
    let cert = status
        .certificate
        .map(|b| String::from_utf8_lossy(&b.0).into_owned());
    Ok((conds, cert))
}

/// A client of the server authenticated by `auth` alone.
fn client_as(c: &Cluster, auth: kube::config::AuthInfo) -> Result<kube::Client> {
    c.rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&c.s.kubeconfig)?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        cfg.auth_info = auth;
        anyhow::Ok(kube::Client::try_from(cfg)?)
    })
}

/// A bootstrap token that expires `secs` from now (before now when negative).
fn bootstrap_token(id: &str, secs: i64) -> Result<Value> {
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let at = k8s_openapi::jiff::Timestamp::from_second(now + secs)?.to_string();
    Ok(
        json!({"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": {"token-id": id, "token-secret": "0123456789abcdef", "expiration": at,
            "usage-bootstrap-authentication": "true"}}),
    )
}

fn secret_exists(c: &Cluster, name: &str) -> Result<bool> {
    let api: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(c.client.clone(), "kube-system");
    Ok(c.rt.block_on(api.get_opt(name))?.is_some())
}

/// A node joining with a bootstrap token asks for its client certificate: csrapproving approves it after
/// a SubjectAccessReview, csrsigning issues it from the cluster CA, and the apiserver then knows the node
/// by it. A request of the wrong shape is not approved and, approved by hand, fails; a client certificate
/// for a person waits for `kubectl certificate approve`, which takes `approve` on its signer, and lives
/// as long as it asked. Expired bootstrap tokens are deleted.
fn certificates(c: &Cluster) -> Result<()> {
    c.apply(&[
        bootstrap_token("live01", 3600)?,
        bootstrap_token("soon01", 4)?,
        bootstrap_token("old001", -3600)?,
    ])?;
    let joining = client_as(
        c,
        kube::config::AuthInfo {
            token: Some("live01.0123456789abcdef".to_string().into()),
            ..Default::default()
        },
    )?;
    let (request, key) = certificate_request("system:node:joiner", &["system:nodes"])?;
    let (wrong, _) = certificate_request("system:node:joiner", &["system:masters"])?;
    let (person, _) = certificate_request("alice", &["dev"])?;
    let kubelet = "kubernetes.io/kube-apiserver-client-kubelet";
    let client_usages = ["digital signature", "client auth"];
    {
        use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
        let api: Api<CertificateSigningRequest> = Api::all(joining.clone());
        for (name, req, signer) in [
            ("person", &person, "kubernetes.io/kube-apiserver-client"),
            ("wrong", &wrong, kubelet),
            ("join", &request, kubelet),
        ] {
            let exp = (name == "person").then_some(3600);
            let obj = serde_json::from_value(csr(name, signer, req, &client_usages, exp))?;
            c.rt.block_on(api.create(&PostParams::default(), &obj))
                .with_context(|| format!("create CSR {name} with the bootstrap token"))?;
        }
    }
    let cert = wait("the node's request approved and issued", || {
        let (conds, cert) = csr_state(c, "join")?;
        Ok(cert.filter(|_| conds == ["Approved/AutoApproved"]))
    })?;
    let shown = c.kubectl(&["get", "csr", "join", "--no-headers"])?;
    ensure!(
        shown.contains("Approved,Issued") && shown.contains("system:bootstrap:live01"),
        "{shown}"
    );
    for name in ["wrong", "person"] {
        let (conds, cert) = csr_state(c, name)?;
        ensure!(
            conds.is_empty() && cert.is_none(),
            "{name} approved by itself: {conds:?}"
        );
    }
    // The certificate is the node's identity.
    let node = client_as(
        c,
        kube::config::AuthInfo {
            client_certificate_data: Some(base64_of(&cert)),
            client_key_data: Some(base64_of(&key).into()),
            ..Default::default()
        },
    )?;
    let user = whoami(c, &node)?;
    ensure!(
        user.username.as_deref() == Some("system:node:joiner")
            && user
                .groups
                .unwrap_or_default()
                .contains(&"system:nodes".to_string()),
        "the issued certificate authenticates as {:?}",
        user.username
    );
    // Approved by hand, the wrong shape fails instead of being signed.
    c.kubectl(&["certificate", "approve", "wrong"])?;
    wait("the wrong request failed", || {
        let (conds, cert) = csr_state(c, "wrong")?;
        ensure!(
            cert.is_none(),
            "a certificate for system:masters was issued"
        );
        Ok(conds
            .contains(&"Failed/SignerValidationFailure".to_string())
            .then_some(()))
    })?;
    // Approving takes `approve` on the signer, beyond the right to update the approval.
    c.kubectl(&["create", "clusterrole", "csr-updater", "--verb=get,update",
        "--resource=certificatesigningrequests.certificates.k8s.io,certificatesigningrequests.certificates.k8s.io/approval"])?;
    c.kubectl(&[
        "create",
        "clusterrolebinding",
        "csr-updater",
        "--clusterrole=csr-updater",
        "--user=bob",
    ])?;
    let out = c.s.run(&["certificate", "approve", "person", "--as=bob"]);
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\""),
        "bob approved without approve on the signer: {err}"
    );
    // Nor does a status update approve: the approval conditions stay as they were.
    {
        use k8s_openapi::api::certificates::v1::{
            CertificateSigningRequest, CertificateSigningRequestCondition,
        };
        let api: Api<CertificateSigningRequest> = Api::all(c.client.clone());
        let mut r = c.rt.block_on(api.get("person"))?;
        r.status.get_or_insert_with(Default::default).conditions =
            Some(vec![CertificateSigningRequestCondition {
                type_: "Approved".into(),
                status: "True".into(),
                ..Default::default()
            }]);
        c.rt.block_on(api.replace_status("person", &PostParams::default(), &r))?;
        let (conds, cert) = csr_state(c, "person")?;
        ensure!(
            conds.is_empty() && cert.is_none(),
            "approved through status: {conds:?}"
        );
    }
    // And no request gets a system:masters certificate.
    let (masters, _) = certificate_request("mallory", &["system:masters"])?;
    let out = c.s.run_with_input(
        &["create", "-f", "-"],
        &csr(
            "masters",
            "kubernetes.io/kube-apiserver-client",
            &masters,
            &client_usages,
            None,
        )
        .to_string(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success()
            && err.contains("use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed"),
        "{err}"
    );
    c.kubectl(&["certificate", "approve", "person"])?;
    let cert = wait("the person's certificate", || Ok(csr_state(c, "person")?.1))?;
    let issued = rcgen::CertificateParams::from_ca_cert_pem(&cert)?;
    let life = issued.not_after - issued.not_before;
    ensure!(
        (life.whole_seconds() - 3900).abs() < 120,
        "a certificate asked for an hour lives {life} (with the 5-minute backdate)"
    );
    // A request whose certificate has expired is cleaned up (csrcleaner).
    {
        use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
        let (stale, _) = certificate_request("bob", &["dev"])?;
        c.apply(&[csr(
            "stale",
            "kubernetes.io/kube-apiserver-client",
            &stale,
            &client_usages,
            None,
        )])?;
        let key = rcgen::KeyPair::generate()?;
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired = p.self_signed(&key)?.pem();
        let api: Api<CertificateSigningRequest> = Api::all(c.client.clone());
        let mut r = c.rt.block_on(api.get("stale"))?;
        r.status.get_or_insert_with(Default::default).certificate =
            Some(k8s_openapi::ByteString(expired.into_bytes()));
        c.rt.block_on(api.replace_status("stale", &PostParams::default(), &r))?;
        wait("the request with an expired certificate deleted", || {
            Ok(c.rt.block_on(api.get_opt("stale"))?.is_none().then_some(()))
        })?;
    }
    // Bad requests are refused by name.
    let (short, _) = certificate_request("carol", &[])?;
    let out = c.s.run_with_input(
        &["create", "-f", "-"],
        &csr(
            "short",
            "kubernetes.io/kube-apiserver-client",
            &short,
            &client_usages,
            Some(60),
        )
        .to_string(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && err.contains("spec.expirationSeconds"),
        "{err}"
    );
    // Expired tokens are deleted, one expiring soon once its time comes; the live one stays.
    wait("expired bootstrap tokens deleted", || {
        Ok((!secret_exists(c, "bootstrap-token-old001")?
            && !secret_exists(c, "bootstrap-token-soon01")?)
        .then_some(()))
    })?;
    ensure!(
        secret_exists(c, "bootstrap-token-live01")?,
        "the live token was deleted"
    );
    join_refusals(c)
}

/// The server's node join token (k3s's format) is private and backed by its Secret; an agent given a
/// wrong secret, or a token pinning another CA, is refused with a message saying so, and has written
/// nothing — not even its data directory.
fn join_refusals(c: &Cluster) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = c.s.data_dir().join("server/node-token");
    ensure!(
        std::fs::metadata(&path)?.permissions().mode() & 0o777 == 0o600,
        "node-token mode"
    );
    let token = std::fs::read_to_string(&path)?.trim().to_string();
    let (hash, bootstrap) = token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .context("node-token is K10<hash>::<token>")?;
    let (id, _) = bootstrap.split_once('.').context("<id>.<secret>")?;
    ensure!(
        secret_exists(c, &format!("bootstrap-token-{id}"))?,
        "the node token's Secret"
    );
    let tmp = tempfile::tempdir()?;
    let agent = |token: &str| -> Result<String> {
        let data = tmp.path().join("data");
        let out = std::process::Command::new(bin())
            .args([
                "agent",
                "--node-name",
                "refused",
                "--server",
                &c.s.url,
                "--token",
                token,
            ])
            .arg("--data-dir")
            .arg(&data)
            .arg("--run-dir")
            .arg(tmp.path().join("run"))
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        ensure!(!out.status.success(), "the agent joined with {token}");
        ensure!(
            !data.exists() && !tmp.path().join("run").exists(),
            "a refused join left its directories"
        );
        Ok(err)
    };
    let err = agent(&format!("K10{hash}::{id}.0000000000000000"))?;
    ensure!(
        err.contains("refused the join token") && err.contains("Unauthorized"),
        "{err}"
    );
    ensure!(!err.contains(bootstrap), "the secret in {err}");
    let err = agent(&format!("K10{}::{bootstrap}", "0".repeat(64)))?;
    ensure!(
        err.contains("the join token names") && err.contains("refusing to join"),
        "{err}"
    );
    let err = agent("not-a-token")?;
    ensure!(err.contains("agent.token") && err.contains("K10"), "{err}");
    renewal(c, &token)
}

/// The client certificate of a `system:node:<name>` user in a kubeconfig.
fn kept_certificate(path: &Path) -> Result<String> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let data = kc.auth_infos[0]
        .auth_info
        .as_ref()
        .and_then(|a| a.client_certificate_data.clone())
        .context("client-certificate-data")?;
    use base64::Engine;
    Ok(String::from_utf8(
        base64::engine::general_purpose::STANDARD.decode(data)?,
    )?)
}

/// A joined node renews its credentials with its current certificate: a new key and certificate,
/// approved as the node renewing itself (selfnodeclient), which the apiserver knows as the node.
fn renewal(c: &Cluster, token: &str) -> Result<()> {
    let token = basalt_join::Token::parse(token)?;
    let dir = tempfile::tempdir()?;
    let path =
        c.rt.block_on(basalt_join::join(&c.s.url, &token, "renewer", dir.path()))?;
    let before = kept_certificate(&path)?;
    ensure!(
        !dir.path().join("kubelet-client-pending.key").exists(),
        "the pending key stayed"
    );
    ensure!(
        basalt_join::bootstrap::renewal_at(&path, 0.5).is_some(),
        "no renewal time for the kept credentials"
    );
    c.rt.block_on(basalt_join::bootstrap::renew(&path, "renewer"))?;
    let after = kept_certificate(&path)?;
    ensure!(before != after, "the certificate was not renewed");
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    let api: Api<CertificateSigningRequest> = Api::all(c.client.clone());
    let by_node: Vec<_> =
        c.rt.block_on(api.list(&ListParams::default()))?
            .items
            .into_iter()
            .filter(|r| r.spec.username.as_deref() == Some("system:node:renewer"))
            .collect();
    let messages: Vec<String> = by_node
        .iter()
        .flat_map(|r| r.status.iter().flat_map(|s| s.conditions.iter().flatten()))
        .filter_map(|c| c.message.clone())
        .collect();
    ensure!(
        messages == ["Auto approving self kubelet client certificate after SubjectAccessReview."],
        "the renewal's approval: {messages:?}"
    );
    let renewed = c.rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&path)?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        anyhow::Ok(kube::Client::try_from(cfg)?)
    })?;
    let user = whoami(c, &renewed)?;
    ensure!(
        user.username.as_deref() == Some("system:node:renewer"),
        "{user:?}"
    );
    Ok(())
}

/// Who the apiserver takes `client` for (`kubectl auth whoami`).
fn whoami(
    c: &Cluster,
    client: &kube::Client,
) -> Result<k8s_openapi::api::authentication::v1::UserInfo> {
    let review: k8s_openapi::api::authentication::v1::SelfSubjectReview = c.rt.block_on(
        client.request(
            http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
                .header("content-type", "application/json")
                .body(serde_json::to_vec(
                    &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
                )?)?,
        ),
    )?;
    Ok(review.status.and_then(|s| s.user_info).unwrap_or_default())
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `status.used` of a ResourceQuota, and whether its `status.hard` is its spec.
fn quota_used(
    c: &Cluster,
    ns: &str,
    name: &str,
) -> Result<(std::collections::BTreeMap<String, String>, bool)> {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let api: Api<ResourceQuota> = Api::namespaced(c.client.clone(), ns);
    let q = c.rt.block_on(api.get(name))?;
    let st = q.status.unwrap_or_default();
    let used = st
        .used
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    Ok((used, st.hard == q.spec.and_then(|s| s.hard)))
}

/// The resourcequota controller: `status.used` follows what the namespace holds — pods and their
/// requests (a finished pod no longer counts), config maps, Deployments counted through discovery, node
/// ports — with every limited resource reported, at zero when unused.
fn quotas(c: &Cluster) -> Result<()> {
    let ns = "quota";
    let pod = |name: &str, cpu: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}}}]}})
    };
    c.apply(&[
        namespace(ns),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "compute", "namespace": ns},
            "spec": {"hard": {"pods": "3", "requests.cpu": "1", "configmaps": "5",
                "count/deployments.apps": "2", "services.nodeports": "1"}}}),
    ])?;
    c.apply(&[
        pod("p1", "100m"),
        pod("p2", "150m"),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": ns}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "none", "namespace": ns},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "none"}}, "template": template("none", "busybox")}}),
    ])?;
    let configmaps = || -> Result<String> {
        Ok(c.kubectl(&["get", "configmaps", "-n", ns, "-o", "name"])?
            .lines()
            .count()
            .to_string())
    };
    let want = |pods: &str, cpu: &str, cms: String| -> std::collections::BTreeMap<String, String> {
        [
            ("pods", pods.to_string()),
            ("requests.cpu", cpu.to_string()),
            ("configmaps", cms),
            ("count/deployments.apps", "1".to_string()),
            ("services.nodeports", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    wait("the quota's usage", || {
        let (used, hard) = quota_used(c, ns, "compute")?;
        Ok((hard && used == want("2", "250m", configmaps()?)).then_some(()))
    })
    .with_context(|| format!("{:?}", quota_used(c, ns, "compute")))?;
    let p2 = c
        .pods(ns)?
        .into_iter()
        .find(|p| p.name_any() == "p2")
        .context("p2")?;
    end_pod(c, ns, &p2, "Succeeded")?;
    wait("a finished pod no longer counted", || {
        let (used, _) = quota_used(c, ns, "compute")?;
        Ok((used == want("1", "100m", configmaps()?)).then_some(()))
    })
    .with_context(|| format!("{:?}", quota_used(c, ns, "compute")))?;
    Ok(())
}

fn scenarios(c: Cluster) -> Result<()> {
    // Made first and looked at last: its one-minute schedule comes while the rest runs.
    c.apply(&[namespace("cron"), cronjob()])?;
    identity(&c).context("identity")?;
    replicaset(&c).context("replicaset")?;
    deployment(&c).context("deployment")?;
    garbage_collection(&c).context("garbage collection")?;
    jobs(&c).context("jobs")?;
    statefulset(&c).context("statefulset")?;
    volumes(&c).context("volumes")?;
    quotas(&c).context("quotas")?;
    daemonset(&c).context("daemonset")?;
    endpoints(&c).context("endpoints")?;
    disruption(&c).context("disruption")?;
    node_ipam(&c).context("node ipam")?;
    certificates(&c).context("certificates")?;
    cron(&c).context("cronjob")?;
    loop_metrics(&c).context("metrics")?;
    Ok(())
}

/// Each loop's passes at the apiserver's `/metrics` (controller-runtime's names): the loops that ran
/// above counted successful passes.
fn loop_metrics(c: &Cluster) -> Result<()> {
    let text = c.kubectl(&["get", "--raw", "/metrics"])?;
    for controller in [
        "replicaset",
        "deployment",
        "job",
        "persistentvolume-binder",
        "csrapproving",
    ] {
        let line = format!(
            "controller_runtime_reconcile_total{{controller=\"{controller}\",result=\"success\"}} "
        );
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .with_context(|| format!("no {line}"))?
            .trim()
            .parse()?;
        ensure!(n > 0, "{controller}: {n} passes");
    }
    Ok(())
}

fn pod_named<'a>(pods: &'a [Pod], name: &str) -> Option<&'a Pod> {
    pods.iter().find(|p| p.name_any() == name)
}

/// A StatefulSet of 3 makes db-0, db-1, db-2 in order, each only once the one before is Ready, each with
/// its own claim; scaled to 1 it removes db-2 before db-1, and the claims stay.
fn statefulset(c: &Cluster) -> Result<()> {
    let ns = "stateful";
    c.apply(&[namespace(ns), node("sts-1")])?;
    // Volumes for the claims, which the persistentvolume-binder binds as the set makes them.
    c.apply(
        &(0..3)
            .map(|i| volume(&format!("pv-db-{i}"), "1Gi", "", json!({})))
            .collect::<Vec<_>>(),
    )?;
    c.apply(&[json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})])?;
    wait("db-0, db-1 and db-2 Ready, in order", || {
        c.kubelet(ns, 1)?;
        let pods = c.pods(ns)?;
        for i in 1..3 {
            if pod_named(&pods, &format!("db-{i}")).is_some() {
                let before = pod_named(&pods, &format!("db-{}", i - 1));
                ensure!(
                    before.is_some_and(ready),
                    "db-{i} made before db-{} was Ready",
                    i - 1
                );
            }
        }
        Ok((pods.len() == 3 && pods.iter().all(ready)).then_some(()))
    })?;
    let api: Api<k8s_openapi::api::apps::v1::StatefulSet> = Api::namespaced(c.client.clone(), ns);
    let st = wait("the set's status", || {
        let st = c.rt.block_on(api.get("db"))?.status.unwrap_or_default();
        Ok((st.ready_replicas == Some(3)).then_some(st))
    })?;
    ensure!(
        st.current_revision.is_some() && st.current_revision == st.update_revision,
        "{st:?}"
    );
    let revision = st.update_revision.unwrap();
    for (i, p) in c.pods(ns)?.iter().enumerate() {
        let name = format!("db-{i}");
        ensure!(p.name_any() == name);
        let spec = p.spec.as_ref().unwrap();
        ensure!(
            spec.hostname.as_deref() == Some(name.as_str())
                && spec.subdomain.as_deref() == Some("db")
        );
        let claim = spec.volumes.iter().flatten().find(|v| v.name == "data");
        let claim = claim
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .context("no claim volume")?;
        ensure!(claim.claim_name == format!("data-{name}"));
        ensure!(p.labels().get("controller-revision-hash") == Some(&revision));
        ensure!(p.labels().get("apps.kubernetes.io/pod-index") == Some(&i.to_string()));
    }
    let revisions: Api<k8s_openapi::api::apps::v1::ControllerRevision> =
        Api::namespaced(c.client.clone(), ns);
    let r = c.rt.block_on(revisions.get(&revision))?;
    ensure!(r.revision == Some(1) && owners_uid(&r.metadata).is_some());

    c.kubectl(&["scale", "statefulset", "db", "-n", ns, "--replicas=1"])?;
    wait("db-2 then db-1 removed", || {
        c.kubelet(ns, 0)?;
        let pods = c.pods(ns)?;
        let live = |n: &str| pod_named(&pods, n).is_some_and(|p| !terminating(p));
        ensure!(!live("db-2") || live("db-1"), "db-1 went before db-2");
        Ok((pods.len() == 1 && live("db-0")).then_some(()))
    })?;
    let evs = events_about(c, ns, "db", "SuccessfulDelete")?;
    for want in [
        "create Pod db-0 in StatefulSet db successful",
        "create Claim data-db-2 Pod db-2 in StatefulSet db successful",
        "delete Pod db-2 in StatefulSet db successful",
    ] {
        ensure!(evs.iter().any(|(_, m)| m == want), "{want}: {evs:?}");
    }
    let claims = c.kubectl(&["get", "pvc", "-n", ns, "-o", "name"])?;
    ensure!(
        claims.lines().count() == 3,
        "the claims outlive their pods: {claims}"
    );
    Ok(())
}

/// A PersistentVolume of `size` in `class` (hostPath), with `extra` merged into its spec.
fn volume(name: &str, size: &str, class: &str, extra: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
        "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": class, "hostPath": {"path": format!("/tmp/{name}")}}});
    for (k, x) in extra.as_object().into_iter().flatten() {
        match x {
            Value::Null => {
                v["spec"].as_object_mut().map(|o| o.remove(k));
            }
            x => v["spec"][k] = x.clone(),
        }
    }
    v
}

fn claim(ns: &str, name: &str, size: &str, class: &str, extra: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
            "resources": {"requests": {"storage": size}}}});
    for (k, x) in extra.as_object().into_iter().flatten() {
        v["spec"][k] = x.clone();
    }
    v
}

/// `(phase, volumeName)` of a claim.
fn claim_state(c: &Cluster, ns: &str, name: &str) -> Result<(String, String)> {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let api: Api<PersistentVolumeClaim> = Api::namespaced(c.client.clone(), ns);
    let pvc = c.rt.block_on(api.get(name))?;
    Ok((
        pvc.status.and_then(|s| s.phase).unwrap_or_default(),
        pvc.spec.and_then(|s| s.volume_name).unwrap_or_default(),
    ))
}

/// `(phase, message, claimRef uid)` of a volume.
fn volume_state(c: &Cluster, name: &str) -> Result<(String, String, String)> {
    use k8s_openapi::api::core::v1::PersistentVolume;
    let api: Api<PersistentVolume> = Api::all(c.client.clone());
    let pv = c.rt.block_on(api.get(name))?;
    let st = pv.status.unwrap_or_default();
    Ok((
        st.phase.unwrap_or_default(),
        st.message.unwrap_or_default(),
        pv.spec
            .and_then(|s| s.claim_ref)
            .and_then(|r| r.uid)
            .unwrap_or_default(),
    ))
}

/// The persistentvolume-binder: a claim gets the smallest volume that satisfies it (class, size,
/// selector), a claim nothing satisfies waits with upstream's event, a released volume follows its
/// reclaim policy, and a WaitForFirstConsumer claim binds only once the scheduler places its pod — on the
/// node its local volume is on.
fn volumes(c: &Cluster) -> Result<()> {
    let ns = "volumes";
    let slow = json!({"matchLabels": {"tier": "slow"}});
    let mut small = volume("pv-small", "1Gi", "manual", json!({}));
    small["metadata"]["labels"] = json!({"tier": "slow"});
    c.apply(&[
        namespace(ns),
        small,
        volume("pv-big", "5Gi", "manual", json!({})),
        volume(
            "pv-delete",
            "1Gi",
            "manual-delete",
            // NFS: a volume type without a deleter, so Delete fails as upstream's does.
            json!({"persistentVolumeReclaimPolicy": "Delete", "hostPath": null,
                "nfs": {"server": "10.0.0.1", "path": "/exports/d"}}),
        ),
        claim(ns, "two", "2Gi", "manual", json!({})),
        claim(ns, "one", "1Gi", "manual", json!({"selector": slow})),
        claim(ns, "huge", "10Gi", "", json!({})),
        claim(ns, "del", "1Gi", "manual-delete", json!({})),
    ])?;
    for (cl, pv) in [("two", "pv-big"), ("one", "pv-small"), ("del", "pv-delete")] {
        wait(&format!("{cl} bound to {pv}"), || {
            let (phase, name) = claim_state(c, ns, cl)?;
            ensure!(
                name.is_empty() || name == pv,
                "{cl} bound to {name}, not {pv}"
            );
            Ok((phase == "Bound").then_some(()))
        })?;
        let (phase, _, uid) = volume_state(c, pv)?;
        let claim_uid =
            c.kubectl(&["get", "pvc", cl, "-n", ns, "-o", "jsonpath={.metadata.uid}"])?;
        ensure!(
            phase == "Bound" && uid == claim_uid,
            "{pv}: {phase}, claimRef uid {uid}"
        );
    }
    let shown = c.kubectl(&["get", "pvc", "two", "-n", ns, "--no-headers"])?;
    ensure!(
        shown.contains("Bound") && shown.contains("pv-big") && shown.contains("5Gi"),
        "{shown}"
    );
    let evs = events_about(c, ns, "huge", "FailedBinding")?;
    ensure!(
        evs.iter().any(|(_, m)| m
            == "no persistent volumes available for this claim and no storage class is set"),
        "{evs:?}"
    );
    ensure!(claim_state(c, ns, "huge")?.0 == "Pending");
    // Released under Retain; under Delete with no deleter for the volume type, Failed as upstream's.
    c.kubectl(&["delete", "pvc", "two", "del", "-n", ns])?;
    wait("pv-big Released", || {
        Ok((volume_state(c, "pv-big")?.0 == "Released").then_some(()))
    })?;
    let (phase, message, _) = wait("pv-delete Failed", || {
        let st = volume_state(c, "pv-delete")?;
        Ok((st.0 == "Failed").then_some(st))
    })?;
    ensure!(
        message.contains("no deletable volume plugin matched"),
        "{phase}: {message}"
    );

    // WaitForFirstConsumer: nothing until a pod uses the claim; then the volume on the pod's node.
    let affinity = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["vol-2"]}]}]}});
    c.apply(&[
        node("vol-1"),
        node("vol-2"),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "local"},
            "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"}),
        volume("pv-local", "1Gi", "local", json!({"nodeAffinity": affinity})),
        claim(ns, "local", "1Gi", "local", json!({})),
    ])?;
    events_about(c, ns, "local", "WaitForFirstConsumer")?;
    ensure!(claim_state(c, ns, "local")? == ("Pending".into(), String::new()));
    c.apply(&[
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "consumer", "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "local"}}]}}),
    ])?;
    wait("the claim bound to pv-local", || {
        Ok((claim_state(c, ns, "local")? == ("Bound".into(), "pv-local".into())).then_some(()))
    })?;
    let node = wait("the consumer bound", || {
        let n = c.kubectl(&[
            "get",
            "pod",
            "consumer",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.nodeName}",
        ])?;
        Ok((!n.is_empty()).then_some(n))
    })?;
    ensure!(
        node == "vol-2",
        "the consumer went to {node}, away from its volume"
    );
    Ok(())
}

/// The nodes the live (not terminating) pods of `ns` are pinned to, by their affinity: (node, pod).
fn daemon_pods(c: &Cluster, ns: &str) -> Result<Vec<(String, Pod)>> {
    let mut out = Vec::new();
    for p in c.pods(ns)?.into_iter().filter(|p| !terminating(p)) {
        let pin = p
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|r| r.node_selector_terms.first())
            .and_then(|t| t.match_fields.as_ref())
            .and_then(|f| f.first())
            .filter(|f| f.key == "metadata.name" && f.operator == "In")
            .and_then(|f| f.values.as_ref()?.first().cloned())
            .with_context(|| format!("{} is not pinned to a node", p.name_any()))?;
        if let Some(bound) = p.spec.as_ref().and_then(|s| s.node_name.as_ref()) {
            ensure!(
                *bound == pin,
                "{} pinned to {pin} but bound to {bound}",
                p.name_any()
            );
        }
        out.push((pin, p));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn on_nodes(pods: &[(String, Pod)]) -> Vec<&str> {
    pods.iter().map(|(n, _)| n.as_str()).collect()
}

/// A DaemonSet runs one pod on each node its selector picks, pinned there for the scheduler; it follows
/// a node that gains or loses the label, replaces a failed pod, rolls a new template out with at most one
/// node unavailable, and its pods go with it.
fn daemonset(c: &Cluster) -> Result<()> {
    use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
    let ns = "daemons";
    let labelled = |name: &str| {
        let mut n = node(name);
        n["metadata"]["labels"]["daemons"] = json!("yes");
        n
    };
    let mut cordoned = labelled("ds-2");
    cordoned["spec"] = json!({"unschedulable": true,
        "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]});
    c.apply(&[namespace(ns), labelled("ds-1"), cordoned, node("ds-3")])?;
    let mut t = template("agent", "busybox");
    t["spec"]["nodeSelector"] = json!({"daemons": "yes"});
    c.apply(&[json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": t}})])?;
    let api: Api<DaemonSet> = Api::namespaced(c.client.clone(), ns);
    let settled = |want: &[&str]| -> Result<Option<Vec<(String, Pod)>>> {
        c.kubelet(ns, 10)?;
        let pods = daemon_pods(c, ns)?;
        let ds = c.rt.block_on(api.get("agent"))?;
        let st = ds.status.unwrap_or_default();
        let n = want.len() as i32;
        let done = on_nodes(&pods) == want
            && pods.iter().all(|(_, p)| ready(p))
            && st.desired_number_scheduled == n
            && st.current_number_scheduled == n
            && st.number_ready == n
            && st.number_available == Some(n)
            && st.updated_number_scheduled == Some(n)
            && st.number_misscheduled == 0
            && st.observed_generation == ds.metadata.generation;
        Ok(done.then_some(pods))
    };
    let pods = wait("a Ready pod on ds-1 and on cordoned ds-2", || {
        settled(&["ds-1", "ds-2"])
    })?;
    for (_, p) in &pods {
        let tolerates = |key: &str| {
            p.spec
                .as_ref()
                .and_then(|s| s.tolerations.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key.as_deref() == Some(key)))
        };
        ensure!(
            tolerates("node.kubernetes.io/unschedulable")
                && tolerates("node.kubernetes.io/not-ready"),
            "{:?}",
            p.spec
        );
        ensure!(p.labels().contains_key("controller-revision-hash"));
    }

    c.kubectl(&["label", "node", "ds-3", "daemons=yes"])?;
    wait("a third pod, on ds-3", || {
        settled(&["ds-1", "ds-2", "ds-3"])
    })?;
    c.kubectl(&["label", "node", "ds-1", "daemons-"])?;
    let pods = wait("ds-1's pod gone", || settled(&["ds-2", "ds-3"]))?;

    // A failed pod is replaced by a new one.
    let failed = pods[0].1.clone();
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    c.rt.block_on(pods_api.patch_status(
        &failed.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"phase": "Failed"}})),
    ))?;
    wait("the failed pod replaced", || {
        let pods = settled(&["ds-2", "ds-3"])?;
        Ok(pods.filter(|p| p.iter().all(|(_, p)| p.uid() != failed.uid())))
    })?;
    let evs = events_about(c, ns, "agent", "FailedDaemonPod")?;
    ensure!(!evs.is_empty(), "no FailedDaemonPod event");

    // A new template: one node at a time (maxUnavailable 1), never both without a Ready pod.
    let old_hash = daemon_pods(c, ns)?[0].1.labels()["controller-revision-hash"].clone();
    c.kubectl(&["set", "image", "daemonset/agent", "-n", ns, "c=busybox:2"])?;
    // Looked at before each kubelet pass: an old pod deleted stays terminating until the pass removes it,
    // and the next is made only after, so two deleted at once are always seen.
    wait("the new template on both nodes", || {
        let pods = daemon_pods(c, ns)?;
        let up = pods.iter().filter(|(_, p)| ready(p)).count();
        ensure!(
            up >= 1,
            "both nodes unavailable at once: {:?}",
            on_nodes(&pods)
        );
        c.kubelet(ns, 1)?;
        let done = pods.len() == 2
            && pods.iter().all(|(_, p)| {
                ready(p)
                    && p.labels()["controller-revision-hash"] != old_hash
                    && image_of(p) == "busybox:2"
            });
        Ok(done.then_some(()))
    })?;
    wait("the status after the rollout", || {
        settled(&["ds-2", "ds-3"])
    })?;
    let revisions: Api<ControllerRevision> = Api::namespaced(c.client.clone(), ns);
    let history = c.rt.block_on(revisions.list(&ListParams::default()))?.items;
    let numbers: Vec<Option<i64>> = history.iter().map(|r| r.revision).collect();
    ensure!(
        history.len() == 2 && numbers.contains(&Some(2)),
        "{numbers:?}"
    );

    c.kubectl(&["delete", "daemonset", "agent", "-n", ns])?;
    wait("the daemon pods gone with their DaemonSet", || {
        c.kubelet(ns, 0)?;
        Ok(c.pods(ns)?.is_empty().then_some(()))
    })?;
    Ok(())
}

/// Marks a pod Running with `ip`, Ready or not, as its kubelet would.
fn run_pod(c: &Cluster, ns: &str, name: &str, ip: &str, ready: bool) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": status}]}});
    c.rt.block_on(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)))?;
    Ok(())
}

/// (ready, not ready) addresses of the Endpoints `name`, as `ip:port`.
fn endpoint_addresses(
    c: &Cluster,
    ns: &str,
    name: &str,
) -> Result<Option<(Vec<String>, Vec<String>)>> {
    use k8s_openapi::api::core::v1::Endpoints;
    let api: Api<Endpoints> = Api::namespaced(c.client.clone(), ns);
    let Some(e) = c.rt.block_on(api.get_opt(name))? else {
        return Ok(None);
    };
    let (mut ready, mut not) = (Vec::new(), Vec::new());
    for s in e.subsets.iter().flatten() {
        let port = s.ports.iter().flatten().map(|p| p.port).next().unwrap_or(0);
        for a in s.addresses.iter().flatten() {
            ready.push(format!("{}:{port}", a.ip));
        }
        for a in s.not_ready_addresses.iter().flatten() {
            not.push(format!("{}:{port}", a.ip));
        }
    }
    ready.sort();
    not.sort();
    Ok(Some((ready, not)))
}

/// An endpoint of a slice: (address, ready, zone).
type SliceEndpoint = (String, bool, String);

/// The endpoints in the Service's slices, and the ports they name.
fn slice_endpoints(c: &Cluster, ns: &str, svc: &str) -> Result<(Vec<SliceEndpoint>, Vec<i32>)> {
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let api: Api<EndpointSlice> = Api::namespaced(c.client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
    let (mut eps, mut ports) = (Vec::new(), Vec::new());
    for s in c.rt.block_on(api.list(&lp))?.items {
        ensure!(
            s.labels()
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str)
                == Some("endpointslice-controller.k8s.io"),
            "{:?}",
            s.metadata
        );
        ports.extend(s.ports.iter().flatten().filter_map(|p| p.port));
        for e in s.endpoints.iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            eps.push((
                e.addresses[0].clone(),
                ready,
                e.zone.clone().unwrap_or_default(),
            ));
        }
    }
    eps.sort();
    ports.sort();
    ports.dedup();
    Ok((eps, ports))
}

/// A Service's Endpoints and EndpointSlices follow its pods: addresses once they have IPs, the named
/// target port resolved, ready and not ready apart, a relabelled pod dropped; both go with the Service.
fn endpoints(c: &Cluster) -> Result<()> {
    let ns = "endpoints";
    let mut n = node("ep-1");
    n["metadata"]["labels"]["topology.kubernetes.io/zone"] = json!("zone-a");
    c.apply(&[namespace(ns), n])?;
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
            "spec": {"nodeName": "ep-1", "containers": [{"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": 8080}]}]}})
    };
    c.apply(&[
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        pod("web-a"),
        pod("web-b"),
    ])?;
    run_pod(c, ns, "web-a", "10.42.7.2", true)?;
    run_pod(c, ns, "web-b", "10.42.7.3", true)?;
    let both = vec!["10.42.7.2:8080".to_string(), "10.42.7.3:8080".to_string()];
    wait("both pods in the Endpoints", || {
        Ok(endpoint_addresses(c, ns, "web")?.filter(|(r, n)| *r == both && n.is_empty()))
    })?;
    let want = |b_ready: bool| {
        vec![
            ("10.42.7.2".to_string(), true, "zone-a".to_string()),
            ("10.42.7.3".to_string(), b_ready, "zone-a".to_string()),
        ]
    };
    wait("both pods in the slices, port 8080, zone-a", || {
        let (eps, ports) = slice_endpoints(c, ns, "web")?;
        Ok((eps == want(true) && ports == [8080]).then_some(()))
    })?;
    let described = c.kubectl(&["describe", "service", "web", "-n", ns])?;
    ensure!(
        described.contains("10.42.7.2:8080") && described.contains("10.42.7.3:8080"),
        "kubectl describe shows the endpoints: {described}"
    );

    run_pod(c, ns, "web-b", "10.42.7.3", false)?;
    wait("web-b not ready in both", || {
        let e = endpoint_addresses(c, ns, "web")?;
        let (eps, _) = slice_endpoints(c, ns, "web")?;
        Ok(
            (e == Some((both[..1].to_vec(), both[1..].to_vec())) && eps == want(false))
                .then_some(()),
        )
    })?;
    c.kubectl(&[
        "label",
        "pod",
        "web-a",
        "-n",
        ns,
        "app=other",
        "--overwrite",
    ])?;
    wait("web-a dropped once relabelled", || {
        let e = endpoint_addresses(c, ns, "web")?;
        let (eps, _) = slice_endpoints(c, ns, "web")?;
        Ok((e == Some((vec![], both[1..].to_vec())) && eps.len() == 1).then_some(()))
    })?;

    c.kubectl(&["delete", "service", "web", "-n", ns])?;
    wait("the Endpoints and slices gone with the Service", || {
        let (eps, ports) = slice_endpoints(c, ns, "web")?;
        let e = endpoint_addresses(c, ns, "web")?;
        Ok((e.is_none() && eps.is_empty() && ports.is_empty()).then_some(()))
    })?;
    Ok(())
}

/// The budget's status: (expected, desired, healthy, allowed).
fn budget(c: &Cluster, ns: &str, name: &str) -> Result<(i32, i32, i32, i32)> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let api: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), ns);
    let st = c.rt.block_on(api.get(name))?.status.unwrap_or_default();
    Ok((
        st.expected_pods.unwrap_or(-1),
        st.desired_healthy.unwrap_or(-1),
        st.current_healthy.unwrap_or(-1),
        st.disruptions_allowed.unwrap_or(-1),
    ))
}

/// PodDisruptionBudgets get their status from the pods (minAvailable by count, maxUnavailable against the
/// Deployment's scale), and evictions spend it: of two back to back only one passes, the next only once
/// the replacement is Ready.
fn disruption(c: &Cluster) -> Result<()> {
    let ns = "disruption";
    c.apply(&[namespace(ns), node("pdb-1")])?;
    let deployment = |name: &str, replicas: i32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": template(name, "busybox")}})
    };
    let pdb = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["selector"] = json!({"matchLabels": {"app": name}});
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": ns}, "spec": spec})
    };
    c.apply(&[
        deployment("guarded", 3),
        deployment("halved", 4),
        pdb("guarded", json!({"minAvailable": 2})),
        pdb("halved", json!({"maxUnavailable": "50%"})),
    ])?;
    wait("both budgets computed from Ready pods", || {
        c.kubelet(ns, 10)?;
        let g = budget(c, ns, "guarded")?;
        let h = budget(c, ns, "halved")?;
        Ok((g == (3, 2, 3, 1) && h == (4, 2, 4, 2)).then_some(()))
    })?;
    // kube-rs retries a 429 (as client-go does) until the budget allows: this client takes the answer.
    let once = c.rt.block_on(async {
        let kc = kube::config::Kubeconfig::read_from(&c.s.kubeconfig)?;
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        cfg.default_retry = false;
        anyhow::Ok(kube::Client::try_from(cfg)?)
    })?;
    let once_client = once.clone();
    let pods_api: Api<Pod> = Api::namespaced(once, ns);
    let guarded: Vec<String> = c
        .pods(ns)?
        .iter()
        .filter(|p| p.labels().get("app").map(String::as_str) == Some("guarded"))
        .map(|p| p.name_any())
        .collect();
    // A dry run checks the budget but spends nothing and deletes nothing. Sent as client-go sends it
    // (kubectl drain --dry-run=server), in the body's deleteOptions; kube-rs's EvictParams names the field
    // `delete_options`, which an apiserver ignores.
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": guarded[0]},
        "deleteOptions": {"dryRun": ["All"]}});
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/pods/{}/eviction",
        guarded[0]
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&body)?)?;
    c.rt.block_on(once_client.request::<Value>(req))?;
    let still = c.rt.block_on(pods_api.get(&guarded[0]))?;
    ensure!(!terminating(&still), "a dry-run eviction deleted the pod");
    ensure!(
        budget(c, ns, "guarded")? == (3, 2, 3, 1),
        "a dry run spent the budget"
    );
    let ep = kube::api::EvictParams::default();
    c.rt.block_on(pods_api.evict(&guarded[0], &ep))?;
    match c.rt.block_on(pods_api.evict(&guarded[1], &ep)) {
        Err(kube::Error::Api(s)) if s.code == 429 => {}
        other => bail!("a second eviction within the budget's one disruption: {other:?}"),
    }
    wait(
        "the evicted pod replaced and the budget allowing one again",
        || {
            c.kubelet(ns, 10)?;
            Ok((budget(c, ns, "guarded")? == (3, 2, 3, 1)).then_some(()))
        },
    )?;
    c.rt.block_on(pods_api.evict(&guarded[1], &ep))?;
    Ok(())
}

fn pod_cidr(c: &Cluster, name: &str) -> Result<Option<String>> {
    let n =
        c.rt.block_on(Api::<Node>::all(c.client.clone()).get_opt(name))?;
    let spec = n.and_then(|n| n.spec).unwrap_or_default();
    if let (Some(one), Some(all)) = (&spec.pod_cidr, &spec.pod_cidrs) {
        ensure!(
            all.first() == Some(one),
            "podCIDR {one} is not podCIDRs[0] of {all:?}"
        );
    }
    Ok(spec.pod_cidr)
}

/// Every node gets its own /24 of 10.42.0.0/16; a deleted node's block goes to the next node.
fn node_ipam(c: &Cluster) -> Result<()> {
    c.apply(&[node("ipam-a"), node("ipam-b")])?;
    let a = wait("ipam-a's pod CIDR", || pod_cidr(c, "ipam-a"))?;
    let b = wait("ipam-b's pod CIDR", || pod_cidr(c, "ipam-b"))?;
    let nodes =
        c.rt.block_on(Api::<Node>::all(c.client.clone()).list(&ListParams::default()))?;
    let mut all: Vec<String> = Vec::new();
    for n in &nodes.items {
        let cidr = wait("every node's pod CIDR", || pod_cidr(c, &n.name_any()))?;
        ensure!(
            cidr.starts_with("10.42.") && cidr.ends_with(".0/24"),
            "{}: {cidr}",
            n.name_any()
        );
        ensure!(!all.contains(&cidr), "{cidr} given twice");
        all.push(cidr);
    }
    ensure!(a != b);
    c.kubectl(&["delete", "node", "ipam-a"])?;
    c.apply(&[node("ipam-c")])?;
    let c_cidr = wait("ipam-c's pod CIDR", || pod_cidr(c, "ipam-c"))?;
    ensure!(
        c_cidr == a,
        "ipam-c got {c_cidr}, not the block ipam-a left ({a})"
    );
    Ok(())
}

fn owners_uid(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

fn cronjob() -> Value {
    json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": "cron"},
        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid", "jobTemplate": {
            "metadata": {"labels": {"from": "tick"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}})
}

/// The CronJob fires at the minute: a Job named for the scheduled minute, owned by it and in its status;
/// when the Job completes the CronJob records the success.
fn cron(c: &Cluster) -> Result<()> {
    let ns = "cron";
    let api: Api<k8s_openapi::api::batch::v1::CronJob> = Api::namespaced(c.client.clone(), ns);
    let cj = c.rt.block_on(api.get("tick"))?;
    let uid = cj.uid().unwrap();
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), ns);
    let job = wait("the CronJob's first Job", || {
        let list = c.rt.block_on(jobs.list(&ListParams::default()))?.items;
        Ok(list.into_iter().find(|j| {
            j.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        }))
    })?;
    let at: k8s_openapi::jiff::Timestamp = job
        .annotations()
        .get("batch.kubernetes.io/cronjob-scheduled-timestamp")
        .context("no scheduled-timestamp annotation")?
        .parse()?;
    ensure!(
        at.as_second() % 60 == 0,
        "scheduled at {at}, not on the minute"
    );
    ensure!(
        job.name_any() == format!("tick-{}", at.as_second() / 60),
        "{}",
        job.name_any()
    );
    ensure!(job.labels().get("from").map(String::as_str) == Some("tick"));
    let created = cj.creation_timestamp().unwrap().0;
    ensure!(
        at > created && at.as_second() - created.as_second() <= 60,
        "scheduled {at} for a CronJob made at {created}"
    );
    let st = wait("the CronJob's status", || {
        let st = c.rt.block_on(api.get("tick"))?.status.unwrap_or_default();
        Ok(st
            .active
            .as_ref()
            .is_some_and(|a| !a.is_empty())
            .then_some(st))
    })?;
    ensure!(st.last_schedule_time.map(|t| t.0) == Some(at));
    ensure!(st.active.unwrap()[0].name.as_deref() == Some(job.name_any().as_str()));
    let juid = job.uid().unwrap();
    let pod = wait("the Job's pod", || {
        Ok(job_pods(c, ns, &juid)?.into_iter().next())
    })?;
    end_pod(c, ns, &pod, "Succeeded")?;
    let st = wait("the CronJob to see the success", || {
        let st = c.rt.block_on(api.get("tick"))?.status.unwrap_or_default();
        Ok((st.active.is_none() && st.last_successful_time.is_some()).then_some(st))
    })?;
    ensure!(st.last_successful_time.unwrap().0 >= at);
    let row = c.kubectl(&["get", "cronjob", "tick", "-n", ns, "--no-headers"])?;
    ensure!(row.contains("* * * * *"), "kubectl get cronjob: {row}");
    Ok(())
}

// ------------------------------------------------------------------------------------------------ jobs

/// The events about the object `name` of `ns`, as (reason, message), once one has `reason`.
fn events_about(c: &Cluster, ns: &str, name: &str, reason: &str) -> Result<Vec<(String, String)>> {
    use k8s_openapi::api::core::v1::Event;
    let api: Api<Event> = Api::namespaced(c.client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    wait(&format!("a {reason} event about {name}"), || {
        let evs: Vec<(String, String)> =
            c.rt.block_on(api.list(&lp))?
                .items
                .into_iter()
                .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
                .collect();
        Ok(evs.iter().any(|(r, _)| r == reason).then_some(evs))
    })
}

fn job_of(c: &Cluster, ns: &str, name: &str) -> Result<Option<Job>> {
    let api: Api<Job> = Api::namespaced(c.client.clone(), ns);
    Ok(c.rt.block_on(api.get_opt(name))?)
}

fn job_condition(j: &Job, type_: &str) -> Option<String> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone().unwrap_or_default())
}

/// Every pod the Job controls, terminating ones included.
fn job_pods(c: &Cluster, ns: &str, uid: &str) -> Result<Vec<Pod>> {
    Ok(c.pods(ns)?
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true))
        })
        .collect())
}

fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref()?.phase.as_deref()
}

fn finished(p: &Pod) -> bool {
    matches!(phase(p), Some("Succeeded" | "Failed"))
}

/// What a kubelet writes when the pod's containers exit.
fn end_pod(c: &Cluster, ns: &str, p: &Pod, ph: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let patch = json!({"status": {"phase": ph}});
    c.rt.block_on(api.patch_status(
        &p.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    ))?;
    Ok(())
}

fn job(name: &str, ns: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["template"] = json!({"spec": {"restartPolicy": "Never",
        "containers": [{"name": "work", "image": "busybox", "command": ["true"]}]}});
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// Completions 5 with parallelism 2 (never more than 2 running, exactly 5 pods made); a Job past its
/// backoffLimit fails after upstream's back-off; an Indexed Job completes each index once; a finished Job
/// with `ttlSecondsAfterFinished` is deleted with its pods.
fn jobs(c: &Cluster) -> Result<()> {
    let ns = "jobs";
    c.apply(&[namespace(ns)])?;
    c.apply(&[job("five", ns, json!({"completions": 5, "parallelism": 2}))])?;
    let uid = job_of(c, ns, "five")?.context("job five")?.uid().unwrap();
    let mut most = 0;
    let done = wait("job five to complete", || {
        let pods = job_pods(c, ns, &uid)?;
        let running: Vec<&Pod> = pods.iter().filter(|p| !finished(p)).collect();
        ensure!(running.len() <= 2, "{} pods running at once", running.len());
        ensure!(
            pods.len() <= 5,
            "{} pods made for 5 completions",
            pods.len()
        );
        most = most.max(running.len());
        if let Some(p) = running.first() {
            end_pod(c, ns, p, "Succeeded")?;
        }
        Ok(job_of(c, ns, "five")?.filter(|j| job_condition(j, "Complete").is_some()))
    })?;
    ensure!(
        most == 2,
        "parallelism 2 was never used: at most {most} ran"
    );
    let st = done.status.clone().unwrap_or_default();
    ensure!(st.succeeded == Some(5) && st.failed.is_none(), "{st:?}");
    ensure!(st.active.is_none() && st.completion_time.is_some() && st.start_time.is_some());
    ensure!(job_condition(&done, "SuccessCriteriaMet").as_deref() == Some("CompletionsReached"));
    let pods = job_pods(c, ns, &uid)?;
    ensure!(pods.len() == 5, "{} pods", pods.len());
    ensure!(
        pods.iter().all(|p| !p
            .finalizers()
            .iter()
            .any(|f| f == "batch.kubernetes.io/job-tracking")),
        "a counted pod keeps the tracking finalizer"
    );
    let evs = events_about(c, ns, "five", "Completed")?;
    let created = evs
        .iter()
        .filter(|(r, m)| r == "SuccessfulCreate" && m.starts_with("Created pod: five-"))
        .count();
    ensure!(created == 5, "{evs:?}");
    let row = c.kubectl(&["get", "job", "five", "-n", ns, "--no-headers"])?;
    ensure!(
        row.contains("Complete") && row.contains("5/5"),
        "kubectl get job: {row}"
    );

    // backoffLimit 1: the second failure fails the Job; the replacement waited upstream's 10 s.
    c.apply(&[job("flaky", ns, json!({"backoffLimit": 1}))])?;
    let uid = job_of(c, ns, "flaky")?.context("job flaky")?.uid().unwrap();
    let first = wait("flaky's pod", || {
        Ok(job_pods(c, ns, &uid)?.into_iter().find(|p| !finished(p)))
    })?;
    end_pod(c, ns, &first, "Failed")?;
    let failed_at = k8s_openapi::jiff::Timestamp::now();
    let second = wait("flaky's replacement", || {
        Ok(job_pods(c, ns, &uid)?.into_iter().find(|p| !finished(p)))
    })?;
    let created = second.creation_timestamp().context("created")?.0;
    ensure!(
        created.as_second() - failed_at.as_second() >= 9,
        "replaced {}s after the failure, not after the back-off",
        created.as_second() - failed_at.as_second()
    );
    end_pod(c, ns, &second, "Failed")?;
    let out = c.kubectl(&[
        "wait",
        "-n",
        ns,
        "--for=condition=failed",
        "job/flaky",
        "--timeout=60s",
    ])?;
    ensure!(out.contains("condition met"), "{out}");
    let j = job_of(c, ns, "flaky")?.context("flaky")?;
    ensure!(job_condition(&j, "Failed").as_deref() == Some("BackoffLimitExceeded"));
    ensure!(
        j.status.as_ref().and_then(|s| s.failed) == Some(2),
        "{:?}",
        j.status
    );
    ensure!(job_pods(c, ns, &uid)?.len() == 2);

    // Indexed: one pod per index, each index completed once.
    c.apply(&[job(
        "indexed",
        ns,
        json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}),
    )])?;
    let uid = job_of(c, ns, "indexed")?.context("indexed")?.uid().unwrap();
    let pods = wait("three indexed pods", || {
        let p = job_pods(c, ns, &uid)?;
        Ok((p.len() == 3).then_some(p))
    })?;
    let mut seen = Vec::new();
    for p in &pods {
        let ix = p
            .annotations()
            .get("batch.kubernetes.io/job-completion-index")
            .cloned();
        let ix = ix.context("no completion index")?;
        ensure!(p.labels().get("batch.kubernetes.io/job-completion-index") == Some(&ix));
        let spec = p.spec.as_ref().context("spec")?;
        ensure!(spec.hostname.as_deref() == Some(format!("indexed-{ix}").as_str()));
        let env = spec.containers[0].env.clone().unwrap_or_default();
        ensure!(
            env.iter().any(|e| e.name == "JOB_COMPLETION_INDEX"),
            "{env:?}"
        );
        seen.push(ix);
    }
    seen.sort();
    ensure!(seen == ["0", "1", "2"], "{seen:?}");
    let by_index = |i: &str| {
        pods.iter()
            .find(|p| {
                p.annotations()
                    .get("batch.kubernetes.io/job-completion-index")
                    .map(String::as_str)
                    == Some(i)
            })
            .unwrap()
    };
    end_pod(c, ns, by_index("1"), "Succeeded")?;
    wait("index 1 completed", || {
        let j = job_of(c, ns, "indexed")?.context("indexed")?;
        Ok((j.status.and_then(|s| s.completed_indexes).as_deref() == Some("1")).then_some(()))
    })?;
    end_pod(c, ns, by_index("0"), "Succeeded")?;
    end_pod(c, ns, by_index("2"), "Succeeded")?;
    let j = wait("indexed to complete", || {
        Ok(job_of(c, ns, "indexed")?.filter(|j| job_condition(j, "Complete").is_some()))
    })?;
    let st = j.status.unwrap_or_default();
    ensure!(
        st.completed_indexes.as_deref() == Some("0-2") && st.succeeded == Some(3),
        "{st:?}"
    );
    ensure!(job_pods(c, ns, &uid)?.len() == 3);

    // ttlSecondsAfterFinished 0: gone as soon as it is done, its pods with it.
    c.apply(&[job("brief", ns, json!({"ttlSecondsAfterFinished": 0}))])?;
    let uid = job_of(c, ns, "brief")?.context("brief")?.uid().unwrap();
    let p = wait("brief's pod", || {
        Ok(job_pods(c, ns, &uid)?.into_iter().next())
    })?;
    end_pod(c, ns, &p, "Succeeded")?;
    wait("brief and its pod to be deleted", || {
        c.kubelet(ns, 0)?;
        Ok((job_of(c, ns, "brief")?.is_none() && job_pods(c, ns, &uid)?.is_empty()).then_some(()))
    })?;
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

/// `--disable controllers` runs none: no identity of their own is made, and the apiserver's own cascading
/// deletion stands in (tests/kubectl.rs exercises it).
#[test]
fn controllers_disabled() -> Result<()> {
    let s = KubeServer::start_with(bin(), Datastore::Sqlite, &["--disable", "controllers"])?;
    ensure!(!s
        .data_dir()
        .join("server/controller-manager.kubeconfig")
        .exists());
    ensure!(!s.data_dir().join("server/controller-manager.id").exists());
    ensure!(!s.data_dir().join("server/controllers").exists());
    Ok(())
}

fn lease_holder(c: &Cluster) -> Result<Option<String>> {
    Ok(c.s
        .lease_holder("kube-controller-manager")?
        .map(|(holder, _)| holder))
}

/// Two servers on one three-member etcd: one runs the controllers; SIGKILLed, the other takes the
/// `kube-controller-manager` Lease once it expires (15 s, as upstream's default) and its replicaset
/// controller makes the pods of a ReplicaSet created after the kill.
#[test]
fn controllers_fail_over_between_two_servers_on_etcd() -> Result<()> {
    const LEASE: u64 = 15;
    const RETRY: u64 = 2;
    let etcd = basalt_testsupport::EtcdCluster::start(3)?;
    let endpoint = etcd.datastore_endpoint();
    let mut servers = [
        Cluster::start(Datastore::Endpoint(endpoint.clone()))?,
        Cluster::start(Datastore::Endpoint(endpoint))?,
    ];
    let id = |c: &Cluster| -> Result<String> {
        let id = std::fs::read_to_string(c.s.data_dir().join("server/controller-manager.id"))?;
        Ok(format!("basalt-test_{}", id.trim()))
    };
    let ids = [id(&servers[0])?, id(&servers[1])?];
    let holder = wait("the controllers to lead", || lease_holder(&servers[1]))?;
    let leader = ids
        .iter()
        .position(|i| *i == holder)
        .context("the lease holder is one of the servers")?;
    let follower = 1 - leader;
    servers[leader].s.kill()?;
    let killed = Instant::now();
    let c = &servers[follower];
    let ns = "failover";
    c.apply(&[namespace(ns)])?;
    c.apply(&[json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": "after", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "after"}},
                 "template": template("after", "registry.invalid/web:1")},
    })])?;
    settle_replicaset(c, ns, "after", 2, false)?;
    let took = killed.elapsed();
    ensure!(
        lease_holder(c)?.as_deref() == Some(ids[follower].as_str()),
        "lease not taken by the survivor"
    );
    println!("controllers' leader killed → the other server's pods made in {took:?}");
    // The lease runs out at most LEASE after the last renewal; the candidate notices within RETRY; a
    // little more for its loops to get their tokens and list.
    ensure!(
        took < Duration::from_secs(LEASE + 2 * RETRY + 5),
        "took {took:?}"
    );
    Ok(())
}

// -------------------------------------------------------------------------------------- node lifecycle

fn node_of(c: &Cluster, name: &str) -> Result<Node> {
    Ok(c.rt.block_on(Api::<Node>::all(c.client.clone()).get(name))?)
}

fn node_condition(n: &Node, type_: &str) -> Option<(String, String)> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn taints(n: &Node) -> Vec<String> {
    let mut t: Vec<String> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    t.sort();
    t
}

/// What a kubelet posts: its Ready condition with a fresh heartbeat.
fn heartbeat(c: &Cluster, name: &str, ready: &str) -> Result<()> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady",
        "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    let api: Api<Node> = Api::all(c.client.clone());
    c.rt.block_on(api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch)))?;
    Ok(())
}

fn renew_lease(c: &Cluster, name: &str) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
    match c.rt.block_on(api.get_opt(name))? {
        None => {
            c.rt.block_on(api.create(&PostParams::default(), &serde_json::from_value(lease)?))?;
        }
        Some(_) => {
            let patch = json!({"spec": {"renewTime": now}});
            c.rt.block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))?;
        }
    }
    Ok(())
}

/// A node that stops heartbeating turns Unknown and is tainted unreachable; its pods are marked not ready
/// and those that do not tolerate the taint for long are evicted after their tolerationSeconds. A Lease
/// alone keeps a node alive; heartbeats again lift the taints; Ready False gives the not-ready taints; a
/// node that never posted a status is Unknown with upstream's other reason.
#[test]
fn node_lifecycle_on_sqlite() -> Result<()> {
    node_lifecycle(Datastore::Sqlite)
}

#[test]
fn node_lifecycle_on_etcd() -> Result<()> {
    node_lifecycle(Datastore::Etcd(3))
}

fn node_lifecycle(datastore: Datastore) -> Result<()> {
    let s = KubeServer::start_with(
        bin(),
        datastore,
        &[
            "--controllers",
            "*",
            "--node-monitor-period",
            "500ms",
            "--node-monitor-grace-period",
            "3s",
            "--node-startup-grace-period",
            "3s",
        ],
    )?;
    let c = Cluster::with_server(s)?;
    let ns = "lifecycle";
    c.apply(&[namespace(ns), node("silent"), node("mute")])?;
    heartbeat(&c, "silent", "True")?;
    let pod = |name: &str, tolerations: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": "silent", "tolerations": tolerations,
                "containers": [{"name": "c", "image": "busybox"}]}})
    };
    let unreachable = |secs: Option<i64>| {
        let mut t = json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"});
        if let Some(s) = secs {
            t["tolerationSeconds"] = json!(s);
        }
        json!([t])
    };
    c.apply(&[
        pod("brief", unreachable(Some(2))),
        pod("steadfast", unreachable(None)),
        pod("defaulted", json!([])),
    ])?;
    wait("pods ready", || {
        c.kubelet(ns, 10)?;
        Ok((c.pods(ns)?.iter().filter(|p| ready(p)).count() == 3).then_some(()))
    })?;

    // A Lease alone keeps the node alive past the grace period, as the kubelet's heartbeat.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        renew_lease(&c, "silent")?;
        let n = node_of(&c, "silent")?;
        ensure!(
            node_condition(&n, "Ready").map(|c| c.0).as_deref() == Some("True"),
            "a node renewing its Lease was marked {:?}",
            node_condition(&n, "Ready")
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Silence: Unknown, tainted, pods not ready, the short toleration evicted.
    let n = wait("silent to turn Unknown", || {
        let n = node_of(&c, "silent")?;
        Ok((node_condition(&n, "Ready").map(|c| c.0).as_deref() == Some("Unknown")).then_some(n))
    })?;
    ensure!(node_condition(&n, "Ready").unwrap().1 == "NodeStatusUnknown");
    ensure!(node_condition(&n, "MemoryPressure").map(|c| c.0).as_deref() == Some("Unknown"));
    let n = wait("unreachable taints", || {
        let n = node_of(&c, "silent")?;
        Ok((taints(&n).len() == 2).then_some(n))
    })?;
    ensure!(
        taints(&n)
            == [
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule"
            ],
        "{:?}",
        taints(&n)
    );
    wait("pods marked not ready", || {
        Ok(c.pods(ns)?.iter().all(|p| !ready(p)).then_some(()))
    })?;
    let evicted = wait("brief evicted", || {
        Ok(c.pods(ns)?
            .into_iter()
            .find(|p| p.name_any() == "brief" && terminating(p)))
    })?;
    let cond = evicted
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "DisruptionTarget").cloned())
        .context("no DisruptionTarget condition")?;
    ensure!(
        cond.reason.as_deref() == Some("DeletionByTaintManager"),
        "{cond:?}"
    );
    let added = n
        .spec
        .as_ref()
        .unwrap()
        .taints
        .as_ref()
        .unwrap()
        .iter()
        .find(|t| t.effect == "NoExecute")
        .unwrap();
    let added = added
        .time_added
        .as_ref()
        .context("NoExecute taint without timeAdded")?
        .0;
    let deleted = evicted.metadata.deletion_timestamp.as_ref().unwrap().0;
    // The deletion timestamp is the request's time plus the grace period (30 s by default).
    let after = deleted.as_second() - 30 - added.as_second();
    ensure!(
        (2..=5).contains(&after),
        "evicted {after}s after the taint, tolerationSeconds 2"
    );
    for p in c.pods(ns)? {
        if p.name_any() != "brief" {
            ensure!(
                !terminating(&p),
                "{} was evicted though it tolerates the taint",
                p.name_any()
            );
        }
    }
    // The mute node never posted a status: Unknown, for that reason.
    let mute = wait("mute to turn Unknown", || {
        let n = node_of(&c, "mute")?;
        Ok(node_condition(&n, "Ready").filter(|c| c.0 == "Unknown"))
    })?;
    ensure!(mute.1 == "NodeStatusNeverUpdated", "{mute:?}");

    // Back: the taints go. Then Ready False: the not-ready ones.
    heartbeat(&c, "silent", "True")?;
    wait("taints lifted", || {
        Ok(taints(&node_of(&c, "silent")?).is_empty().then_some(()))
    })?;
    heartbeat(&c, "silent", "False")?;
    let t = wait("not-ready taints", || {
        let t = taints(&node_of(&c, "silent")?);
        Ok((!t.is_empty()).then_some(t))
    })?;
    ensure!(
        t == [
            "node.kubernetes.io/not-ready:NoExecute",
            "node.kubernetes.io/not-ready:NoSchedule"
        ],
        "{t:?}"
    );
    Ok(())
}

/// The pod garbage collector with `--terminated-pod-gc-threshold 2`: of four ended pods the two oldest
/// go and a running one stays; a pod whose node is deleted is failed and removed after the quarantine; a
/// terminating pod on a NotReady node tainted out-of-service is removed without its kubelet.
#[test]
fn pod_gc_on_sqlite() -> Result<()> {
    let s = KubeServer::start_with(
        bin(),
        Datastore::Sqlite,
        &["--terminated-pod-gc-threshold", "2"],
    )?;
    let c = Cluster::with_server(s)?;
    let ns = "podgc";
    let mut out = node("gc-out");
    out["spec"] =
        json!({"taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]});
    out["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
    c.apply(&[namespace(ns), node("gc-1"), node("gc-2"), out])?;
    let pod = |name: &str, node: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                "tolerations": [{"operator": "Exists"}]}})
    };
    let api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    // Made one after another, so their creation times order them (the apiserver's are in seconds).
    for (i, phase) in ["Succeeded", "Failed", "Succeeded", "Failed"]
        .iter()
        .enumerate()
    {
        let name = format!("ended-{i}");
        c.apply(&[pod(&name, "gc-1")])?;
        let patch = json!({"status": {"phase": phase}});
        c.rt.block_on(api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)))?;
        std::thread::sleep(Duration::from_millis(1100));
    }
    c.apply(&[
        pod("running", "gc-1"),
        pod("orphan", "gc-2"),
        pod("stuck", "gc-out"),
    ])?;
    c.kubectl(&["delete", "node", "gc-2"])?;
    c.kubectl(&["delete", "pod", "stuck", "-n", ns, "--wait=false"])?;
    let names = || -> Result<Vec<String>> {
        let mut v: Vec<String> = c.pods(ns)?.iter().map(|p| p.name_any()).collect();
        v.sort();
        Ok(v)
    };
    wait("the two oldest ended pods and the stuck one gone", || {
        let n = names()?;
        Ok((!n
            .iter()
            .any(|n| n == "ended-0" || n == "ended-1" || n == "stuck"))
        .then_some(n))
    })?;
    let left = wait("the orphan gone after its node's quarantine", || {
        let n = names()?;
        Ok((!n.iter().any(|n| n == "orphan")).then_some(n))
    })?;
    ensure!(
        left == ["ended-2", "ended-3", "running"],
        "the newest ended pods and the running one stay: {left:?}"
    );
    Ok(())
}
