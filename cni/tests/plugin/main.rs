//! Plugin tests, run as root. `harness = false`: this executable is also the plugin under test when started
//! through a symlink named `bridge` or `host-local` (see `common::dispatch_plugin`). Each case builds its own
//! network namespaces (a "node" holding the bridge, pods, an "outside") and checks nothing is left behind.
//! Pass substrings as arguments to run only the matching cases.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod bridge;
mod caller;
mod containerd;

use common::dispatch_plugin;

fn main() {
    dispatch_plugin();
    let tests: Vec<(&str, fn())> = vec![
        ("version_and_errors", bridge::version_and_errors),
        ("two_pods_ping", bridge::two_pods_ping),
        ("masq_hostport_dual_stack", bridge::masq_hostport_dual_stack),
        ("concurrent_50", bridge::concurrent_50),
        ("sigkill_during_add", bridge::sigkill_during_add),
        ("gc_and_status", bridge::gc_and_status),
        ("prev_result_chaining", bridge::prev_result_chaining),
        ("host_local_plugin", bridge::host_local_plugin),
        (
            "caller_args_and_capabilities",
            caller::caller_args_and_capabilities,
        ),
        ("caller_load_dir", caller::caller_load_dir),
        ("caller_timeout", caller::caller_timeout),
        ("caller_reference_plugins", caller::caller_reference_plugins),
        ("caller_chains_our_bridge", caller::caller_chains_our_bridge),
        ("caller_gc_status", caller::caller_gc_status),
        ("containerd_ctr_run_cni", containerd::containerd_ctr_run_cni),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, t) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        print!("test {name} ... ");
        match std::panic::catch_unwind(t) {
            Ok(()) => {
                println!("ok");
                passed += 1;
            }
            Err(_) => {
                println!("FAILED");
                failed += 1;
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
