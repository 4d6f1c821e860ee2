//! Plugin tests, run as root. `harness = false`: this executable is also the plugin under test when started
//! through a symlink named `bridge` or `host-local` (see `common::dispatch_plugin`), so libtest-mimic is the
//! harness, as for the shim's tests (filters, `--list`, `--exact`, `--test-threads` as cargo test's). Each case
//! builds its own network namespaces (a "node" holding the bridge, pods, an "outside") and checks nothing is
//! left behind.

#[path = "../common/mod.rs"]
mod common;
mod support;

mod bridge;
mod caller;
mod containerd;

use common::dispatch_plugin;
use libtest_mimic::{Arguments, Trial};

fn main() -> std::process::ExitCode {
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
    let mut args = Arguments::from_args();
    // One case at a time unless asked otherwise, as they ran before libtest-mimic: they were written so.
    args.test_threads.get_or_insert(1);
    let trials = tests
        .into_iter()
        .map(|(name, case)| {
            Trial::test(name, move || {
                case();
                Ok(())
            })
        })
        .collect();
    libtest_mimic::run(&args, trials).exit_code()
}
