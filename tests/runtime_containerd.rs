//! A real client: Debian's containerd runs busybox through `ctr` with our binary as its runc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use basalt_testsupport::fixtures::{self, Fixtures};

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
    namespace: String,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("basalt-ctrd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("config.toml"),
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/sock\"\n",
                d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd (Debian package containerd)");
        let c = Containerd {
            child,
            namespace: format!("basalt-test-{}", std::process::id()),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "containerd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("-a")
            .arg(self.dir.path().join("sock"))
            .arg("-n")
            .arg(&self.namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn runc_link(&self) -> PathBuf {
        let link = self.dir.path().join("basalt-runc");
        if !link.exists() {
            std::os::unix::fs::symlink(BIN, &link).unwrap();
        }
        link
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshot mounts of the overlayfs snapshotter live under our root; make sure none stays.
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") {
            for line in mi.lines() {
                if let Some(mp) = line.split_whitespace().nth(4) {
                    if mp.starts_with(&root) {
                        let _ = nix_umount(mp);
                    }
                }
            }
        }
        for entry in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(entry.path().join(&self.namespace));
        }
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.namespace));
    }
}

fn nix_umount(mp: &str) -> std::io::Result<()> {
    let status = Command::new("umount").arg("-l").arg(mp).status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other("umount failed"))
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ctr_runs_busybox_with_our_runtime() {
    let fx = Fixtures::build().unwrap();
    let ctrd = Containerd::start();
    let archive = fx
        .get(fixtures::BUSYBOX)
        .docker_archive
        .to_string_lossy()
        .into_owned();
    let out = ctrd.ctr(&["image", "import", &archive]);
    assert!(out.status.success(), "{}", text(&out));
    let image = "docker.io/library/busybox:latest";
    let runc = ctrd.runc_link();
    let runc = runc.to_str().unwrap();

    // Foreground: output and exit code come back through containerd.
    let out = ctrd.ctr(&[
        "run",
        "--rm",
        "--runc-binary",
        runc,
        image,
        "fg",
        "sh",
        "-c",
        "echo from-basalt; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("from-basalt"),
        "{}",
        text(&out)
    );

    // Detached: kill and delete through containerd.
    let out = ctrd.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        runc,
        image,
        "bg",
        "sleep",
        "300",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status = |c: &Containerd| {
        let out = c.ctr(&["task", "ls"]);
        text(&out)
            .lines()
            .find(|l| l.starts_with("bg "))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(status(&ctrd).contains("RUNNING"), "{}", status(&ctrd));
    let state_dir = Path::new("/run/containerd/runc")
        .join(&ctrd.namespace)
        .join("bg");
    assert!(
        state_dir.join("state.json").exists(),
        "our state.json is where containerd's root says"
    );
    let out = ctrd.ctr(&["task", "kill", "-s", "SIGKILL", "bg"]);
    assert!(out.status.success(), "{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status(&ctrd).contains("STOPPED") {
        assert!(
            Instant::now() < deadline,
            "task never stopped: {}",
            status(&ctrd)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for args in [
        &["task", "delete", "bg"][..],
        &["container", "delete", "bg"][..],
    ] {
        let out = ctrd.ctr(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    }
    assert!(!state_dir.exists(), "state dir left behind");
    for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let cg = entry.path().join(&ctrd.namespace).join("bg");
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }
}
