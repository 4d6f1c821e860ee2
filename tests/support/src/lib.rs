//! Test support shared by every Basalt test suite: real OCI images built at test time from Debian's
//! `busybox-static` (no network), and a real local registry (Debian's `docker-registry`) to serve them.
//!
//! It also makes OCI bundles for runtime tests (`bundle`).
//!
//! Nothing here may reach past 127.0.0.1 or leave a process behind: every helper cleans up on drop.

pub mod bundle;
pub mod etcd;
pub mod fixtures;
pub mod image;
pub mod kube;
pub mod pki;
pub mod registry;
pub mod spdy;

pub use etcd::EtcdCluster;
pub use fixtures::{Fixture, Fixtures};
pub use image::{ImageBuilder, LayerBuilder, OciImage};
pub use registry::{Registry, RegistryMode};

use std::path::PathBuf;

/// Absolute path of `prog` on `PATH`, or a clear error naming the Debian package that brings it.
pub fn require_tool(prog: &str, package: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(prog))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "`{prog}` not found on PATH: install Debian's `{package}` (tests/deps.sh does)"
            )
        })
}

/// What a test does when the cgroup v2 test VM cannot run here (`why`): with `BASALT_VM_REQUIRED` set (as
/// tests/run.sh sets it, CI installs qemu) it fails; otherwise it says so on the terminal and the caller
/// skips. Written to the stderr handle: libtest captures `eprintln!` of passing tests, so a quiet skip would
/// look like a pass.
pub fn vm_unavailable(test: &str, why: &str) {
    if std::env::var_os("BASALT_VM_REQUIRED").is_some() {
        panic!("{test}: the test VM is unavailable: {why} (BASALT_VM_REQUIRED is set)");
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: test VM unavailable: {why}"
    );
}
