//! Differential tests against youki's libcontainer, the engine our runtime is measured against: the same
//! bundle under both, compared on what the container sees. libcontainer forks, so it runs in a re-executed
//! copy of this test binary that does nothing else (`BASALT_YOUKI_RUN`).

use std::path::Path;
use std::process::{Command, Output};

use basalt_testsupport::bundle::TestBundle;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

/// In the re-executed copy: create, start and wait for one container with libcontainer, exit with its code.
#[test]
fn youki_runner() {
    let Ok(spec) = std::env::var("BASALT_YOUKI_RUN") else {
        return; // not the runner copy: nothing to do
    };
    let (root, bundle, id) = {
        let v: Vec<&str> = spec.splitn(3, '\n').collect();
        (v[0].to_owned(), v[1].to_owned(), v[2].to_owned())
    };
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let mut c = ContainerBuilder::new(id, SyscallType::default())
        .with_root_path(&root)
        .unwrap()
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(false)
        .build()
        .unwrap();
    c.start().unwrap();
    let status = nix::sys::wait::waitpid(c.pid().unwrap(), None).unwrap();
    c.delete(true).unwrap();
    let code = match status {
        nix::sys::wait::WaitStatus::Exited(_, code) => code,
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
        _ => 255,
    };
    std::process::exit(code);
}

fn run_youki(root: &Path, bundle: &Path, id: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "youki_runner",
            "--test-threads=1",
            "--nocapture",
            "--quiet",
        ])
        .env(
            "BASALT_YOUKI_RUN",
            format!("{}\n{}\n{id}", root.display(), bundle.display()),
        )
        .output()
        .unwrap()
}

fn run_ours(root: &Path, bundle: &Path, id: &str) -> Output {
    Command::new(BIN)
        .args(["runtime", "--root"])
        .arg(root)
        .arg("run")
        .arg("-b")
        .arg(bundle)
        .arg(id)
        .output()
        .unwrap()
}

/// The container's own output lines (the re-executed test harness adds its own around them).
fn lines_between_markers(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    s.split("<<BEGIN>>\n")
        .nth(1)
        .and_then(|r| r.split("<<END>>").next())
        .unwrap_or("")
        .to_owned()
}

fn compare(script: &str, adjust: &dyn Fn(&mut Value)) -> String {
    let tmp = tempfile::Builder::new()
        .prefix("basalt-youki-")
        .tempdir()
        .unwrap();
    let mut outs = Vec::new();
    for who in ["basalt", "youki"] {
        let bundle = tmp.path().join(format!("bundle-{who}"));
        let mut b = TestBundle::busybox(
            &bundle,
            &format!("echo '<<BEGIN>>'; {script}; echo '<<END>>'"),
        )
        .unwrap();
        adjust(&mut b.config);
        b.save().unwrap();
        let root = tmp.path().join(format!("root-{who}"));
        // Unique per test: the cgroup (/basalt/<id>) is shared by every runtime root on the host.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("yk{}-{n}-{who}", std::process::id());
        let out = if who == "basalt" {
            run_ours(&root, &bundle, &id)
        } else {
            run_youki(&root, &bundle, &id)
        };
        assert!(!root.join(&id).exists(), "{who} left its state dir");
        outs.push((
            lines_between_markers(&out.stdout),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    assert_eq!(
        (&outs[0].0, outs[0].1),
        (&outs[1].0, outs[1].1),
        "ours (left) vs libcontainer (right); stderr: {} / {}",
        outs[0].2,
        outs[1].2
    );
    outs.remove(0).0
}

#[test]
fn identity_capabilities_and_exit_code_match_libcontainer() {
    let out = compare(
        "id; hostname; grep -E '^(Cap|NoNewPrivs)' /proc/self/status; exit 3",
        &|c| {
            c["hostname"] = json!("vs-youki");
        },
    );
    assert!(
        out.contains("vs-youki") && out.contains("NoNewPrivs:\t1"),
        "{out}"
    );
    let out = compare("id; grep -E '^Cap(Eff|Bnd)' /proc/self/status", &|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [10]});
        c["process"]["capabilities"] = json!({"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"]});
    });
    assert!(out.contains("uid=1000"), "{out}");
}

#[test]
fn masked_paths_rlimits_and_namespaces_match_libcontainer() {
    // Which of the caller's namespaces the container still shares: the test's own links are written into the
    // script (inside the container, /proc/1 is the container's init, not the host's).
    let mut script = "wc -c < /proc/kcore; ls -A /proc/acpi; ulimit -n; ".to_owned();
    for n in ["ipc", "mnt", "net", "pid", "uts"] {
        let host = std::fs::read_link(format!("/proc/self/ns/{n}")).unwrap();
        script.push_str(&format!(
            "[ \"$(readlink /proc/self/ns/{n})\" = \"{}\" ] && echo shared-{n}; ",
            host.display()
        ));
    }
    script.push_str("echo end");
    let out = compare(&script, &|c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 777, "hard": 777}]);
    });
    assert!(out.contains("777"), "{out}");
    assert!(out.ends_with("end\n"), "{out}");
    assert!(
        !out.contains("shared-"),
        "a namespace of the caller's: {out}"
    );
}
