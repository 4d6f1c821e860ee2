//! /metrics in the Prometheus text format: upstream's request, watch and storage metric names.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS: [f64; 16] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 60.0,
];
const STORE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, buckets: &[f64], v: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; buckets.len()];
        }
        for (i, b) in buckets.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// Labels of a request: verb, group, version, resource, subresource, scope, code.
pub type RequestLabels = (String, String, String, String, String, String);

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(RequestLabels, u16), u64>,
    durations: BTreeMap<RequestLabels, Histogram>,
    store: BTreeMap<(String, String), Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Metrics {
    pub fn request(&self, labels: RequestLabels, code: u16, took: Duration) {
        let mut i = self.inner.lock().expect("metrics lock");
        *i.requests.entry((labels.clone(), code)).or_default() += 1;
        i.durations
            .entry(labels)
            .or_default()
            .observe(&BUCKETS, took.as_secs_f64());
    }

    /// A store round trip (`operation` get, list, create…; `kind` the resource).
    pub fn store(&self, operation: &str, kind: &str, took: Duration) {
        let mut i = self.inner.lock().expect("metrics lock");
        i.store
            .entry((operation.to_string(), kind.to_string()))
            .or_default()
            .observe(&STORE_BUCKETS, took.as_secs_f64());
    }

    pub fn render(&self, watchers: i64, backend: &str) -> String {
        let i = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let _ = writeln!(out, "# HELP apiserver_request_total [STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.");
        let _ = writeln!(out, "# TYPE apiserver_request_total counter");
        for (((verb, group, version, resource, sub, scope), code), n) in &i.requests {
            let _ = writeln!(out, "apiserver_request_total{{code=\"{code}\",component=\"apiserver\",dry_run=\"\",group=\"{}\",resource=\"{}\",scope=\"{scope}\",subresource=\"{}\",verb=\"{verb}\",version=\"{}\"}} {n}", esc(group), esc(resource), esc(sub), esc(version));
        }
        let _ = writeln!(out, "# HELP apiserver_request_duration_seconds [STABLE] Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.");
        let _ = writeln!(out, "# TYPE apiserver_request_duration_seconds histogram");
        for ((verb, group, version, resource, sub, scope), h) in &i.durations {
            let labels = format!("component=\"apiserver\",dry_run=\"\",group=\"{}\",resource=\"{}\",scope=\"{scope}\",subresource=\"{}\",verb=\"{verb}\",version=\"{}\"", esc(group), esc(resource), esc(sub), esc(version));
            for (b, c) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        let _ = writeln!(out, "# HELP apiserver_longrunning_requests [STABLE] Gauge of all active long-running apiserver requests broken out by verb, group, version, resource, scope and component.");
        let _ = writeln!(out, "# TYPE apiserver_longrunning_requests gauge");
        let _ = writeln!(
            out,
            "apiserver_longrunning_requests{{component=\"apiserver\",verb=\"WATCH\"}} {watchers}"
        );
        let _ = writeln!(out, "# HELP apiserver_registered_watchers Number of currently registered watchers for a given resources");
        let _ = writeln!(out, "# TYPE apiserver_registered_watchers gauge");
        let _ = writeln!(out, "apiserver_registered_watchers {watchers}");
        let _ = writeln!(out, "# HELP etcd_request_duration_seconds Etcd request latency in seconds for each operation and object type.");
        let _ = writeln!(out, "# TYPE etcd_request_duration_seconds histogram");
        for ((op, kind), h) in &i.store {
            let labels = format!(
                "operation=\"{op}\",type=\"{}\",backend=\"{backend}\"",
                esc(kind)
            );
            for (b, c) in STORE_BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "etcd_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "etcd_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "etcd_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "etcd_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            if let Some(rss) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
            {
                let _ = writeln!(
                    out,
                    "# HELP process_resident_memory_bytes Resident memory size in bytes."
                );
                let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
                let _ = writeln!(out, "process_resident_memory_bytes {}", rss * 4096);
            }
        }
        out
    }
}
