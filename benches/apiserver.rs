//! The apiserver's throughput and footprint, on the embedded SQLite against a three-member etcd in the same
//! run: pod creates/s and updates/s from concurrent clients, the latency of a list of 10,000 pods, watch
//! delivery latency (p50/p99) to 100 watchers, and the server's RSS idle and with the pods stored.
//!
//! Aims (issue 17): SQLite ≥ 2,000 creates/s on this machine, watch p99 ≤ 10 ms, idle RSS ≤ 40 MiB, for
//! `basalt server` as the apiserver alone (`--disable scheduler,controllers`), as the issue measures it.
//! The whole server (with the scheduler and the controllers, which then try to place and manage the
//! 10,000 pods: no node fits them) is measured on SQLite in the same run and printed beside it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use basalt_testsupport::kube::{Datastore, KubeServer};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_basalt");
const PODS: usize = 10_000;
const WRITERS: usize = 32;
const WATCHERS: usize = 100;

async fn client(s: &KubeServer) -> Client {
    let kc = Kubeconfig::read_from(&s.kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.local/app:1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
    }))
    .unwrap()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Numbers {
    creates_per_s: f64,
    updates_per_s: f64,
    list_ms: f64,
    watch_p50: Duration,
    watch_p99: Duration,
    idle_rss: f64,
    loaded_rss: f64,
}

/// Runs `n` operations over `WRITERS` concurrent tasks; the rate per second.
async fn rate<F, Fut>(n: usize, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let (next, failed, op) = (next.clone(), failed.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if !op(i).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "every operation succeeds"
    );
    n as f64 / took.as_secs_f64()
}

/// The apiserver alone: what issue 17's aims are about.
const APISERVER_ONLY: &[&str] = &["--disable", "scheduler,controllers"];

async fn measure(datastore: Datastore, extra: &[&str]) -> Numbers {
    let s = KubeServer::start_with(Path::new(BIN), datastore, extra).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = rss_mib(s.pid().unwrap());
    let c = client(&s).await;
    let api: Api<Pod> = Api::namespaced(c.clone(), "default");

    let a = api.clone();
    let creates_per_s = rate(PODS, move |i| {
        let a = a.clone();
        async move {
            a.create(&PostParams::default(), &pod(&format!("p{i}")))
                .await
                .is_ok()
        }
    })
    .await;

    let a = api.clone();
    let updates_per_s = rate(PODS / 2, move |i| {
        let a = a.clone();
        async move {
            let patch = json!({"metadata": {"labels": {"round": "1"}}});
            a.patch(
                &format!("p{i}"),
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .is_ok()
        }
    })
    .await;

    let mut lists = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let l = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(l.items.len(), PODS);
        lists.push(t.elapsed());
    }
    lists.sort();
    let list_ms = lists[lists.len() / 2].as_secs_f64() * 1000.0;

    // Watch delivery: each change is stamped when its request is sent; every watcher records when the
    // event reaches it.
    let latest = api
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        Default::default();
    let delays: Arc<std::sync::Mutex<Vec<Duration>>> = Default::default();
    let rounds = 50;
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let (api, sent, delays, rv) = (api.clone(), sent.clone(), delays.clone(), latest.clone());
        watchers.push(tokio::spawn(async move {
            let wp = WatchParams::default().fields("metadata.name=p0");
            let mut stream = api.watch(&wp, &rv).await.unwrap().boxed();
            let mut got = 0;
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Modified(p) = ev {
                    let at = Instant::now();
                    let tag = p
                        .metadata
                        .labels
                        .unwrap_or_default()
                        .get("tick")
                        .cloned()
                        .unwrap_or_default();
                    if let Some(t0) = sent.lock().unwrap().get(&tag) {
                        delays.lock().unwrap().push(at - *t0);
                    }
                    got += 1;
                    if got == rounds {
                        break;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in 0..rounds {
        let tag = format!("t{r}");
        sent.lock().unwrap().insert(tag.clone(), Instant::now());
        let patch = json!({"metadata": {"labels": {"tick": tag}}});
        api.patch(
            "p0",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for w in watchers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    let mut d = delays.lock().unwrap().clone();
    d.sort();
    assert!(
        d.len() >= WATCHERS * rounds * 9 / 10,
        "events were lost: {} of {}",
        d.len(),
        WATCHERS * rounds
    );
    let loaded_rss = rss_mib(s.pid().unwrap());
    Numbers {
        creates_per_s,
        updates_per_s,
        list_ms,
        watch_p50: percentile(&d, 0.5),
        watch_p99: percentile(&d, 0.99),
        idle_rss,
        loaded_rss,
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sqlite = rt.block_on(measure(Datastore::Sqlite, APISERVER_ONLY));
    let etcd = rt.block_on(measure(Datastore::Etcd(3), APISERVER_ONLY));
    let whole = rt.block_on(measure(Datastore::Sqlite, &[]));
    println!("apiserver benchmark: {PODS} pods, {WRITERS} concurrent clients, {WATCHERS} watchers");
    println!("apiserver alone (--disable scheduler,controllers), then the whole server on SQLite");
    println!("                         sqlite      etcd x3    sqlite/etcd   whole server");
    println!(
        "pod creates/s          {:>8.0}     {:>8.0}     {:>6.2}x     {:>8.0}",
        sqlite.creates_per_s,
        etcd.creates_per_s,
        sqlite.creates_per_s / etcd.creates_per_s,
        whole.creates_per_s
    );
    println!(
        "pod updates/s          {:>8.0}     {:>8.0}     {:>6.2}x     {:>8.0}",
        sqlite.updates_per_s,
        etcd.updates_per_s,
        sqlite.updates_per_s / etcd.updates_per_s,
        whole.updates_per_s
    );
    println!(
        "list {PODS} pods (ms)    {:>8.1}     {:>8.1}     {:>6.2}x     {:>8.1}",
        sqlite.list_ms,
        etcd.list_ms,
        sqlite.list_ms / etcd.list_ms,
        whole.list_ms
    );
    println!(
        "watch p50 (ms)         {:>8.2}     {:>8.2}     {:>6.2}x     {:>8.2}",
        ms(sqlite.watch_p50),
        ms(etcd.watch_p50),
        ms(sqlite.watch_p50) / ms(etcd.watch_p50),
        ms(whole.watch_p50)
    );
    println!(
        "watch p99 (ms)         {:>8.2}     {:>8.2}     {:>6.2}x     {:>8.2}",
        ms(sqlite.watch_p99),
        ms(etcd.watch_p99),
        ms(sqlite.watch_p99) / ms(etcd.watch_p99),
        ms(whole.watch_p99)
    );
    println!(
        "server RSS idle (MiB)  {:>8.1}     {:>8.1}                  {:>8.1}",
        sqlite.idle_rss, etcd.idle_rss, whole.idle_rss
    );
    println!(
        "server RSS {PODS} pods   {:>8.1}     {:>8.1}                  {:>8.1}",
        sqlite.loaded_rss, etcd.loaded_rss, whole.loaded_rss
    );
    println!(
        "aims: sqlite creates/s {:.0} / 2000 = {:.2}x; watch p99 {:.2} ms / 10 ms = {:.2}x; idle RSS {:.1} MiB / 40 MiB = {:.2}x",
        sqlite.creates_per_s,
        sqlite.creates_per_s / 2000.0,
        ms(sqlite.watch_p99),
        ms(sqlite.watch_p99) / 10.0,
        sqlite.idle_rss,
        sqlite.idle_rss / 40.0
    );
    println!(
        "whole server on sqlite: creates/s {:.2}x the apiserver alone, watch p99 {:.1}x, RSS with {PODS} pods {:.1}x",
        whole.creates_per_s / sqlite.creates_per_s,
        ms(whole.watch_p99) / ms(sqlite.watch_p99),
        whole.loaded_rss / sqlite.loaded_rss
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
