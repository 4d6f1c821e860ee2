//! The Python `kubernetes` client (PyPI) against basalt server: a stock client of another language, through
//! its generated models (tests/py/kubernetes_client.py).

use std::path::Path;
use std::process::Command;

use basalt_testsupport::kube::{Datastore, KubeServer};

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

#[test]
fn the_python_kubernetes_client_works_against_basalt_server() {
    let s = KubeServer::start(Path::new(BIN), Datastore::Sqlite).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/kubernetes_client.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(&s.kubeconfig)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "{stdout}{stderr}\nserver log:\n{}",
        s.log_tail()
    );
    assert_eq!(stdout.trim(), "ok");
}
