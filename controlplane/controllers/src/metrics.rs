//! Each loop's own metrics, served with the apiserver's at `/metrics` (the controllers run in the same
//! process): how many passes each loop made and how many failed, with controller-runtime's names, which
//! dashboards for Kubernetes controllers already know.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default, Clone, Copy)]
struct Counts {
    success: u64,
    error: u64,
}

static COUNTS: Mutex<BTreeMap<&'static str, Counts>> = Mutex::new(BTreeMap::new());

/// One pass of `controller`'s reconciler, and whether it succeeded.
pub fn record(controller: &'static str, ok: bool) {
    let mut counts = COUNTS.lock().unwrap();
    let c = counts.entry(controller).or_default();
    if ok {
        c.success += 1;
    } else {
        c.error += 1;
    }
}

/// The Prometheus text of every loop's counts.
pub fn render() -> String {
    let counts = COUNTS.lock().unwrap().clone();
    let mut out = String::new();
    out.push_str("# HELP controller_runtime_reconcile_total Total number of reconciliations per controller\n");
    out.push_str("# TYPE controller_runtime_reconcile_total counter\n");
    for (name, c) in &counts {
        for (result, n) in [("success", c.success), ("error", c.error)] {
            let _ = writeln!(
                out,
                "controller_runtime_reconcile_total{{controller=\"{name}\",result=\"{result}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP controller_runtime_reconcile_errors_total Total number of reconciliation errors per controller\n");
    out.push_str("# TYPE controller_runtime_reconcile_errors_total counter\n");
    for (name, c) in &counts {
        let _ = writeln!(
            out,
            "controller_runtime_reconcile_errors_total{{controller=\"{name}\"}} {}",
            c.error
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_per_controller() {
        record("metrics-test", true);
        record("metrics-test", true);
        record("metrics-test", false);
        let text = render();
        assert!(text.contains("controller_runtime_reconcile_total{controller=\"metrics-test\",result=\"success\"} 2"), "{text}");
        assert!(
            text.contains(
                "controller_runtime_reconcile_errors_total{controller=\"metrics-test\"} 1"
            ),
            "{text}"
        );
    }
}
