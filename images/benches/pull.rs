//! Pull-and-unpack benchmark: the `large` fixture (5 × 10 MiB incompressible layers plus busybox) from a local
//! plain-HTTP registry, with ours (`basalt image pull`, the shipped binary a user runs) and with containerd's
//! `ctr image pull` (which also unpacks into the overlayfs snapshotter), each from an empty store, in the same
//! run, the order alternating round by round. Both results are checked. Prints medians and ours/containerd.
//!
//! Run: `cargo bench -p basalt-images --bench pull` (as root; needs containerd, ctr, docker-registry, skopeo).
//! `BASALT_BENCH_ROUNDS` sets the rounds (default 3).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use basalt_images::Store;
use basalt_testsupport::{fixtures, require_tool, Fixtures, Registry, RegistryMode};

/// A containerd of our own: root, state and socket in a temp dir; killed and removed on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let bin = require_tool("containerd", "containerd").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("basalt-bench-containerd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
        );
        std::fs::write(d.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(d.join("containerd.log")).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.child.try_wait().unwrap() {
                panic!("containerd exited with {s}: {}", c.log());
            }
            if c.ctr(&["version"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "containerd not ready: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["-n", "bench"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The overlayfs snapshotter leaves no mounts after a pull; check rather than assume.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.dir.path().display().to_string();
        for l in mounts.lines() {
            if let Some(m) = l.split(' ').nth(4).filter(|m| m.starts_with(&root)) {
                let c = std::ffi::CString::new(m).unwrap();
                // SAFETY: valid C string.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` one round checks the benchmark still
    // works (its timings are of a debug build and mean nothing).
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let smoke = !std::env::args().any(|a| a == "--bench");
    require_tool("ctr", "containerd").unwrap();
    let rounds: usize = std::env::var("BASALT_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 });
    let fx = Fixtures::build_with_large().unwrap();
    let f = fx.get(fixtures::LARGE);
    let reg = Registry::start(RegistryMode::Plain).unwrap();
    reg.push(f, "basalt/large", "latest").unwrap();
    let reference = format!("{}/basalt/large:latest", reg.host());
    let bytes: u64 = f.image.layers.iter().map(|l| l.bytes.len() as u64).sum();
    println!(
        "pull+unpack {reference}: {} layers, {:.1} MiB compressed, {rounds} rounds",
        f.image.layers.len(),
        bytes as f64 / (1 << 20) as f64
    );

    let basalt = basalt_bin();
    if smoke && !basalt.is_file() {
        // `cargo test -p basalt-images` alone does not build the binary; the workspace run does.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED pull bench smoke run: {} not built",
            basalt.display()
        );
        return;
    }
    assert!(
        basalt.is_file(),
        "{} not found: build it first (`cargo build --release`, as tests/bench.sh does) or set BASALT_BIN",
        basalt.display()
    );
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds {
        // Whoever goes second finds the registry's blobs warm in the page cache: take turns.
        let ours_first = round % 2 == 0;
        let (mut ours_t, mut theirs_t) = (Duration::ZERO, Duration::ZERO);
        for side in [ours_first, !ours_first] {
            if side {
                ours_t = pull_with_basalt(&basalt, &reg.host(), &reference, f);
            } else {
                theirs_t = pull_with_ctr(&reference, f);
            }
        }
        println!(
            "round {} ({} first): ours {:.3}s, containerd {:.3}s",
            round + 1,
            if ours_first { "ours" } else { "containerd" },
            ours_t.as_secs_f64(),
            theirs_t.as_secs_f64()
        );
        ours.push(ours_t);
        theirs.push(theirs_t);
    }
    let (o, c) = (median(ours), median(theirs));
    println!(
        "median: ours {:.3}s, containerd {:.3}s, ratio ours/containerd = {:.2}x (goal <= 0.5x)",
        o.as_secs_f64(),
        c.as_secs_f64(),
        o.as_secs_f64() / c.as_secs_f64()
    );
}

/// The shipped `basalt` next to this bench executable (`<target>/<profile>/deps/pull-…` → `<profile>/basalt`),
/// or `$BASALT_BIN`: what a user runs, not a library call.
fn basalt_bin() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("BASALT_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("basalt")
}

/// `basalt image pull` into an empty data dir; checks the image is in the store, every layer unpacked.
fn pull_with_basalt(
    bin: &std::path::Path,
    host: &str,
    reference: &str,
    f: &fixtures::Fixture,
) -> Duration {
    let dir = tempfile::Builder::new()
        .prefix("basalt-bench-store-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "{}\n").unwrap();
    let t = Instant::now();
    let out = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["image", "--insecure-registry", host, "pull", reference])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "basalt image pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Store::open(dir.path().join("images")).unwrap();
    let rec = store.find_image(reference).unwrap();
    assert_eq!(rec.layers.len(), f.image.layers.len());
    assert_eq!(rec.manifest.to_string(), f.image.manifest.digest);
    elapsed
}

/// `ctr image pull` into a fresh containerd; checks every layer was unpacked into a snapshot.
fn pull_with_ctr(reference: &str, f: &fixtures::Fixture) -> Duration {
    let containerd = Containerd::start();
    let t = Instant::now();
    let out = containerd
        .ctr(&["image", "pull", "--plain-http", reference])
        .output()
        .unwrap();
    let elapsed = t.elapsed();
    assert!(
        out.status.success(),
        "ctr pull failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        containerd.log()
    );
    // ctr unpacks by default: the image's snapshots must be there.
    let snaps = containerd
        .ctr(&["snapshots", "ls"])
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    let n = String::from_utf8_lossy(&snaps.stdout)
        .lines()
        .count()
        .saturating_sub(1);
    assert_eq!(n, f.image.layers.len(), "containerd unpacked {n} snapshots");
    elapsed
}
