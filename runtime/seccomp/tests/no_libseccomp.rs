//! The point of this crate: nothing that ships links libseccomp (it is a dev-dependency for the differential
//! test only). Checked on the resolved dependency graph of the crate, the runtime and the `basalt` binary.

use std::process::Command;

#[test]
fn shipped_crates_do_not_depend_on_libseccomp() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .args([
            "-p",
            "basalt-seccomp",
            "-p",
            "basalt-runtime",
            "-p",
            "basalt",
        ])
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tree.lines().any(|l| l.starts_with("basalt-seccomp ")),
        "{tree}"
    );
    let offending: Vec<&str> = tree.lines().filter(|l| l.contains("libseccomp")).collect();
    assert!(
        offending.is_empty(),
        "libseccomp in the shipped graph: {offending:?}"
    );
}
