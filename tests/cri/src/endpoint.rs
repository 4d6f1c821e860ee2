//! Which CRI server a test talks to, and whether it can run on this machine.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// A CRI implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Debian's containerd 1.6 with its CRI plugin and runc: the reference.
    Containerd,
    /// `basalt agent --cri-only`, the binary from `BASALT_BIN` (default: see [`basalt_bin`]).
    Basalt,
    /// Debian's containerd again, with our runtime as its runc (`BinaryName` = a `basalt-runc` link to
    /// [`basalt_bin`]) and every container without a profile under RuntimeDefault seccomp (containerd's
    /// own profile, compiled by our runtime): what a containerd user who swaps runc for ours runs.
    ContainerdBasaltRunc,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Containerd => "containerd",
            Endpoint::Basalt => "basalt",
            Endpoint::ContainerdBasaltRunc => "containerd+basalt-runc",
        }
    }

    /// Whether containerd's CRI plugin answers (whatever runtime runs its containers).
    pub fn is_containerd(self) -> bool {
        matches!(self, Endpoint::Containerd | Endpoint::ContainerdBasaltRunc)
    }

    /// Whether the containers run on our runtime (`basalt-runc` or the agent's monitors).
    pub fn runs_our_runtime(self) -> bool {
        matches!(self, Endpoint::Basalt | Endpoint::ContainerdBasaltRunc)
    }

    /// `Err(reason)` when this endpoint cannot be started here.
    pub fn availability(self) -> Result<(), String> {
        match self {
            Endpoint::Containerd => {
                basalt_testsupport::require_tool("containerd", "containerd")
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
            Endpoint::ContainerdBasaltRunc => {
                Endpoint::Containerd.availability()?;
                let bin = basalt_bin();
                if !bin.is_file() {
                    return Err(format!(
                        "{} does not exist (set BASALT_BIN or `cargo build`)",
                        bin.display()
                    ));
                }
                Ok(())
            }
            Endpoint::Basalt => {
                let bin = basalt_bin();
                if !bin.is_file() {
                    return Err(format!(
                        "{} does not exist (set BASALT_BIN or `cargo build`)",
                        bin.display()
                    ));
                }
                let out = Command::new(&bin)
                    .args(["agent", "--help"])
                    .output()
                    .map_err(|e| format!("running {}: {e}", bin.display()))?;
                let help = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() || !help.contains("--cri-only") {
                    return Err(format!("{} has no `agent --cri-only` yet", bin.display()));
                }
                Ok(())
            }
        }
    }
}

/// The `basalt` binary to test: `$BASALT_BIN`; else the one cargo built next to this test executable (same
/// target dir and profile, so `CARGO_TARGET_DIR` is honoured); else `<workspace>/target/debug/basalt`.
pub fn basalt_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BASALT_BIN") {
        return PathBuf::from(p);
    }
    // Test and bench executables live in `<target>/<profile>/deps/`.
    let sibling = std::env::current_exe().ok().and_then(|exe| {
        let p = exe.parent()?.parent()?.join("basalt");
        p.is_file().then_some(p)
    });
    // CARGO_MANIFEST_DIR is tests/cri; the workspace root is two levels up.
    sibling.unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/basalt")
    })
}

/// True (after printing why, straight to the terminal so that `cargo test` shows it) when `endpoint` is not
/// available and the test `name` must be skipped. With `BASALT_CRI_REQUIRED` set, an unavailable endpoint
/// fails the test instead.
pub fn skip_unavailable(endpoint: Endpoint, name: &str) -> bool {
    match endpoint.availability() {
        Ok(()) => false,
        Err(why) if std::env::var_os("BASALT_CRI_REQUIRED").is_some() => {
            panic!(
                "{name} on {}: {why} (BASALT_CRI_REQUIRED is set)",
                endpoint.name()
            )
        }
        Err(why) => {
            // Written to the stderr handle, not with eprintln!: libtest captures the macros, not the handle.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {name} on {}: {why}",
                endpoint.name()
            );
            true
        }
    }
}
