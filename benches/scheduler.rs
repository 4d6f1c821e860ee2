//! Scheduler throughput, as kube-scheduler's scheduler_perf measures it: 5,000 fake nodes (Node objects
//! nothing runs, 10 zones), then 10,000 pods created as fast as the apiserver takes them, and the rate
//! from the first create to the last binding — plain pods, pods with a zone topology spread constraint,
//! and pods with required and preferred node affinity; then 1,000 pods with preferred pod anti-affinity
//! (its cost grows with the pods already placed, for upstream as here, so fewer keep the run short).
//! Then a Deployment of 1,000 replicas: from its create to the last pod bound, through the deployment and
//! replicaset controllers and the scheduler, as a ratio to the plain pods' rate of the same run; and the
//! server's RSS with all of it in.
//! Printed as pods/s, as a ratio to the aim (2,000 pods/s on this 2-core machine;
//! scheduler_perf reports ~700–800 pods/s for upstream on 5,000 nodes in its CI) and to the rate the
//! apiserver took the creates at in the same run (the scheduler cannot bind faster than pods arrive).
//!
//! No peer runs here (kube-scheduler is not packaged in Debian or PyPI). Under `cargo test` (debug
//! build) a small cluster runs each variant once, to keep the benchmark's own code working; the numbers
//! come from `cargo bench`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use basalt_testsupport::kube::{Datastore, KubeServer, NO_KUBELET_CONTROLLERS};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::json;

const AIM: f64 = 2000.0;
const ZONES: usize = 10;
/// Creates in flight at once: what a busy client-go QPS allows on HTTP/2.
const CONCURRENCY: usize = 64;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_basalt"))
}

async fn create_nodes(client: &Client, n: usize) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    futures_util::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("node-{i}");
                let res = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": format!("zone-{}", i % ZONES),
                    }},
                    "status": {"capacity": res, "allocatable": res},
                }))?;
                api.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Variant {
    Plain,
    TopologySpread,
    NodeAffinity,
    PodAntiAffinity,
}

fn pod(v: Variant, ns: &str, i: usize) -> Result<Pod> {
    let app = format!("{v:?}").to_lowercase();
    let mut spec = json!({"containers": [{"name": "c", "image": "registry.invalid/pause:3.10",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]});
    match v {
        Variant::Plain => {}
        Variant::TopologySpread => {
            spec["topologySpreadConstraints"] = json!([{"maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": app}}}]);
        }
        Variant::NodeAffinity => {
            let zones: Vec<String> = (0..ZONES / 2).map(|z| format!("zone-{z}")).collect();
            spec["affinity"] = json!({
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": zones}]}]},
                    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "preference":
                        {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["zone-0"]}]}}],
                },
            });
        }
        Variant::PodAntiAffinity => {
            spec["affinity"] = json!({
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                    "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app": app}}}}]},
            });
        }
    }
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": ns, "labels": {"app": app}},
        "spec": spec,
    }))?)
}

struct Run {
    created: Duration,
    bound: Duration,
}

/// Creates `n` pods and waits until the scheduler has bound them all.
async fn run(client: &Client, v: Variant, n: usize) -> Result<Run> {
    let ns = format!("bench-{}", format!("{v:?}").to_lowercase());
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // The watch starts before the first create, so no binding is missed.
    let watch = bound_watch(client, &ns, n);
    // Let the watch's initial list finish before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let pods = pods.clone();
            async move {
                pods.create(&PostParams::default(), &pod(v, &ns_of(&pods), i)?)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let created = start.elapsed();
    let done = tokio::time::timeout(Duration::from_secs(900), watch)
        .await
        .context("all pods bound within 15 minutes")??;
    Ok(Run {
        created,
        bound: done - start,
    })
}

/// Waits until `n` pods of `ns` are bound; gives when.
fn bound_watch(client: &Client, ns: &str, n: usize) -> tokio::task::JoinHandle<Instant> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        let stream = watcher::watcher(pods, watcher::Config::default());
        futures_util::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            let p = match ev {
                Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                bound.insert(p.metadata.name.clone().unwrap_or_default());
                if bound.len() == n {
                    return Instant::now();
                }
            }
        }
        Instant::now()
    })
}

/// A Deployment of `n` replicas: the time from its create to its last pod bound.
async fn deployment(client: &Client, n: usize) -> Result<Duration> {
    let ns = "bench-deployment";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let watch = bound_watch(client, ns, n);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "big", "namespace": ns},
        "spec": {"replicas": n, "selector": {"matchLabels": {"app": "big"}},
            "template": {"metadata": {"labels": {"app": "big"}},
                "spec": {"containers": [{"name": "c", "image": "busybox",
                    "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    }))?;
    let start = Instant::now();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await?;
    let done = tokio::time::timeout(Duration::from_secs(900), watch)
        .await
        .context("the Deployment's pods bound within 15 minutes")??;
    Ok(done - start)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

fn ns_of(api: &Api<Pod>) -> String {
    api.namespace().unwrap_or_default().to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let measuring = std::env::args().any(|a| a == "--bench");
    let (nodes, pods) = if measuring { (5000, 10_000) } else { (60, 120) };
    // As scheduler_perf, no pod CIDRs: 5,000 nodes would use up the default /16 and measure the allocator.
    let controllers = format!("{NO_KUBELET_CONTROLLERS},-node-ipam-controller");
    let server =
        KubeServer::start_with(bin(), Datastore::Sqlite, &["--controllers", &controllers])?;
    let client = basalt_scheduler::client(&server.kubeconfig).await?;
    let t = Instant::now();
    create_nodes(&client, nodes).await?;
    println!(
        "scheduler throughput: {nodes} fake nodes created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut plain_rate = 0.0;
    for v in [
        Variant::Plain,
        Variant::TopologySpread,
        Variant::NodeAffinity,
        Variant::PodAntiAffinity,
    ] {
        let n = match v {
            Variant::PodAntiAffinity => pods / 10,
            _ => pods,
        };
        let r = run(&client, v, n).await?;
        let rate = n as f64 / r.bound.as_secs_f64();
        if matches!(v, Variant::Plain) {
            plain_rate = rate;
        }
        let created = n as f64 / r.created.as_secs_f64();
        println!(
            "scheduler throughput: {v:?}: {n} pods on {nodes} nodes, created in {:.1} s ({created:.0}/s), all bound after {:.1} s: {rate:.0} pods/s (aim {AIM:.0}: ratio {:.2}; to the create rate: {:.2})",
            r.created.as_secs_f64(),
            r.bound.as_secs_f64(),
            rate / AIM,
            rate / created,
        );
        ensure!(r.bound >= r.created, "bound before created?");
    }
    let replicas = if measuring { 1000 } else { 50 };
    let took = deployment(&client, replicas).await?;
    let rate = replicas as f64 / took.as_secs_f64();
    println!(
        "scheduler throughput: Deployment of {replicas} replicas: all pods bound {:.1} s after its create: {rate:.0} pods/s (ratio to plain pods created directly: {:.2})",
        took.as_secs_f64(),
        rate / plain_rate,
    );
    let pid = server.pid().context("server pid")?;
    println!(
        "scheduler throughput: basalt server RSS with {nodes} nodes and {} pods: {:.0} MiB",
        pods * 3 + pods / 10 + replicas,
        rss_mib(pid).context("server RSS")?
    );
    Ok(())
}
