//! create + start + wait + delete of `/bin/true`, N times each, for our runtime, runc and (on a pure cgroup v2
//! system: crun refuses hybrid hierarchies) crun. Prints medians and ratios measured in the same run.
//!
//! `cargo bench --bench runtime` measures on this host and then, when the host is not cgroup v2, again inside
//! the test VM where crun works. Under `cargo test` it runs a few iterations as a smoke test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use basalt_testsupport::bundle::TestBundle;

const BIN: &str = env!("CARGO_BIN_EXE_basalt");

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let iters: usize = std::env::var("BASALT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100 } else { 3 });
    let v2 = basalt_runtime::cgroup::unified();
    let where_ = if std::env::var_os("BASALT_IN_TEST_VM").is_some() {
        "test VM (TCG), cgroup v2"
    } else if v2 {
        "host, cgroup v2"
    } else {
        "host, hybrid cgroups"
    };

    let tmp = tempfile::Builder::new()
        .prefix("basalt-bench-")
        .tempdir()
        .unwrap();
    let bundle = TestBundle::busybox(&tmp.path().join("bundle"), "true").unwrap();
    let mut b = bundle;
    b.config["process"]["args"] = serde_json::json!(["/bin/true"]);
    b.save().unwrap();

    // Each runtime as its users invoke it: ours under the drop-in name containerd is pointed at.
    let link = tmp.path().join("basalt-runc");
    std::os::unix::fs::symlink(BIN, &link).unwrap();
    let mut runtimes: Vec<(&str, Vec<String>)> = vec![
        ("basalt", vec![link.to_string_lossy().into_owned()]),
        ("runc", vec!["runc".into()]),
    ];
    if v2 && which("crun") {
        runtimes.push(("crun", vec!["crun".into()]));
    }
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); runtimes.len()];
    for i in 0..iters {
        // Interleaved, so drift in machine load hits every runtime alike.
        for (k, (name, cmd)) in runtimes.iter().enumerate() {
            let root = tmp.path().join(format!("{name}-root"));
            let id = format!("bench-{name}-{i}");
            samples[k].push(run_once(cmd, &root, &b.dir, &id));
        }
    }
    println!(
        "runtime benchmark: create+start+wait+delete of /bin/true, {iters} runs each, {where_}"
    );
    let medians: Vec<f64> = samples.iter_mut().map(|s| median_ms(s)).collect();
    for ((name, _), m) in runtimes.iter().zip(&medians) {
        println!("  {name:<7} median {m:8.2} ms");
    }
    let tcg = std::env::var_os("BASALT_IN_TEST_VM").is_some();
    for (k, (name, _)) in runtimes.iter().enumerate().skip(1) {
        // crun runs on pure cgroup v2 only, which here means the qemu guest: its ratio is emulated (TCG)
        // machine time, not a measurement of this host.
        let note = if *name == "crun" && tcg {
            "  (measured under qemu TCG only)"
        } else {
            ""
        };
        println!(
            "  ratio basalt/{name}: {:.2}x{note}",
            medians[0] / medians[k]
        );
    }

    // In-process: our runtime library against youki's libcontainer, both called from this (single-threaded)
    // process, as a pod monitor would call them.
    let mut lib_samples: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    for i in 0..iters {
        lib_samples[0].push(ours_in_process(
            &tmp.path().join("lib-basalt"),
            &b.dir,
            &format!("lb-{i}"),
        ));
        lib_samples[1].push(youki_in_process(
            &tmp.path().join("lib-youki"),
            &b.dir,
            &format!("ly-{i}"),
        ));
    }
    let lib: Vec<f64> = lib_samples.iter_mut().map(|s| median_ms(s)).collect();
    println!("  in-process library calls (no runtime binary exec'd):");
    println!("  basalt-runtime  median {:8.2} ms", lib[0]);
    println!("  libcontainer    median {:8.2} ms  (youki 0.7)", lib[1]);
    println!(
        "  ratio basalt-runtime/libcontainer: {:.2}x",
        lib[0] / lib[1]
    );

    if full && !v2 && std::env::var_os("BASALT_IN_TEST_VM").is_none() {
        run_in_vm(iters.min(30));
    }
}

fn run_once(cmd: &[String], root: &Path, bundle: &Path, id: &str) -> Duration {
    let start = Instant::now();
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .arg("--root")
        .arg(root)
        .arg("run")
        .arg("--bundle")
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let took = start.elapsed();
    assert!(
        status.success(),
        "{} run {id} failed: {status}",
        cmd.join(" ")
    );
    assert!(
        !root.join(id).exists(),
        "{} left its state for {id}",
        cmd[0]
    );
    took
}

fn ours_in_process(root: &Path, bundle: &Path, id: &str) -> Duration {
    use basalt_runtime::{Container, CreateOptions};
    let start = Instant::now();
    let opts = CreateOptions {
        root: root.to_owned(),
        id: id.to_owned(),
        bundle: bundle.to_owned(),
        ..Default::default()
    };
    let mut c = Container::create(&opts).unwrap();
    c.start().unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(c.pid()), None).unwrap();
    Container::load(root, id).unwrap().delete(true).unwrap();
    let took = start.elapsed();
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    took
}

fn youki_in_process(root: &Path, bundle: &Path, id: &str) -> Duration {
    use libcontainer::container::builder::ContainerBuilder;
    use libcontainer::syscall::syscall::SyscallType;
    let start = Instant::now();
    let mut c = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(root)
        .unwrap()
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(false)
        .build()
        .unwrap();
    c.start().unwrap();
    let pid = c.pid().unwrap();
    let status = nix::sys::wait::waitpid(pid, None).unwrap();
    c.delete(true).unwrap();
    let took = start.elapsed();
    assert!(
        matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)),
        "{status:?}"
    );
    took
}

fn median_ms(s: &mut [Duration]) -> f64 {
    s.sort();
    s[s.len() / 2].as_secs_f64() * 1000.0
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false)
}

/// crun only runs on pure cgroup v2: measure again inside the test VM (slower under TCG; the ratios are what
/// matter).
fn run_in_vm(iters: usize) {
    // The crun ratio exists only in the VM: a benchmark run that cannot boot it has no ratio to print, and
    // fails (tests/bench.sh installs qemu) rather than printing fewer ratios than it promises.
    let vm = basalt_initramfs::testvm::TestVm::new()
        .unwrap_or_else(|e| panic!("no cgroup v2 run, so no ratio against crun: {e}"));
    let exe: PathBuf = std::env::current_exe().unwrap();
    let out = vm
        .env("BASALT_IN_TEST_VM", "1")
        .env("BASALT_BENCH_ITERS", iters.to_string())
        .memory_mb(2048)
        .run(
            &[exe.into(), "--bench".into()],
            &std::env::current_dir().unwrap(),
        )
        .unwrap();
    print!("{}", out.stdout);
    if out.exit_code != 0 {
        eprintln!("{}", out.stderr);
        panic!("benchmark in the VM failed with {}", out.exit_code);
    }
}
