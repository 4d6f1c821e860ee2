//! The node image end to end: reproducible build, then two qemu (TCG) boots of the same state disk.
//!
//! This test binary is also the image's `/init`: booted as PID 1 it runs `basalt_initramfs::pid1::main`,
//! started as `basalt agent …` it answers "not built yet" (exit 69) exactly as the real binary does today, and
//! with `boot-cli ARGS…` it is `basalt node-image boot ARGS…`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use basalt_initramfs::boot::{self, BootOptions};
use basalt_initramfs::builder::{self, BuildSpec};
use basalt_initramfs::kernel::Kernel;
use basalt_initramfs::testing;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if std::process::id() == 1 {
        return basalt_initramfs::pid1::main(args);
    }
    match args.get(1).and_then(|a| a.to_str()) {
        Some("agent") if std::env::var_os("stubborn_agent").is_some() => return stubborn_agent(),
        Some("orphan-maker") => {
            // Leaves a child behind that outlives us: PID 1 inherits it and must reap it.
            let _ = Command::new(std::env::current_exe().unwrap_or_default())
                .arg("sleep-briefly")
                .spawn();
            return ExitCode::SUCCESS;
        }
        Some("sleep-briefly") => {
            std::thread::sleep(Duration::from_millis(300));
            return ExitCode::SUCCESS;
        }
        Some("agent") => {
            // What PID 1 handed over: the node's address as the agent's node-ip (checked in the saved log).
            let config = args
                .iter()
                .position(|a| a == "--config")
                .and_then(|i| args.get(i + 1))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .unwrap_or_default();
            for line in config.lines().filter(|l| l.contains("node-ip")) {
                eprintln!("config: {}", line.trim());
            }
            eprintln!("basalt: `basalt agent` (kubelet and CRI server, issues #6 and #7) is not built yet");
            return ExitCode::from(69);
        }
        Some("build-cli") => {
            let rest =
                std::iter::once("basalt node-image build".into()).chain(args[2..].iter().cloned());
            return basalt_initramfs::cli::build(rest.collect());
        }
        Some("boot-cli") => {
            let rest =
                std::iter::once("basalt node-image boot".into()).chain(args[2..].iter().cloned());
            return basalt_initramfs::cli::boot(rest.collect());
        }
        Some("--list") => {
            println!("node_image: test");
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    if !boot::qemu_available() {
        eprintln!("SKIP node_image: qemu-system-x86_64 not installed");
        return ExitCode::SUCCESS;
    }
    let kernel = match Kernel::host_default() {
        Ok(k) => k,
        Err(e) => {
            eprintln!("SKIP node_image: {e}");
            return ExitCode::SUCCESS;
        }
    };
    let mut failed = 0;
    let tests: &[(&str, Test)] = &[
        (
            "init_refuses_to_run_outside_pid_1",
            init_refuses_to_run_outside_pid_1,
        ),
        (
            "cli_checks_inputs_and_warns_on_missing_modules",
            cli_checks_inputs_and_warns_on_missing_modules,
        ),
        (
            "build_is_reproducible_and_boots",
            build_is_reproducible_and_boots,
        ),
    ];
    for (name, t) in tests {
        eprintln!("test {name} ...");
        match t(&kernel) {
            Ok(()) => eprintln!("test {name} ... ok"),
            Err(e) => {
                eprintln!("test {name} ... FAILED: {e:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

type Test = fn(&Kernel) -> Result<()>;

/// The agent as the second boot runs it (`stubborn_agent=1` on the kernel command line reaches PID 1's
/// environment, and so ours): it makes an orphan, then ignores SIGTERM, so shutdown must fall back to SIGKILL.
fn stubborn_agent() -> ExitCode {
    // SAFETY: setting a signal disposition.
    unsafe { libc::signal(libc::SIGTERM, libc::SIG_IGN) };
    let me = std::env::current_exe().unwrap_or_default();
    let _ = Command::new(me).arg("orphan-maker").status();
    eprintln!("stubborn agent: running, ignoring SIGTERM");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn cli(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(std::env::current_exe()?).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn cli_checks_inputs_and_warns_on_missing_modules(_: &Kernel) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = |p: &str| tmp.path().join(p).display().to_string();
    std::fs::write(d("bad.yaml"), "log-level: loud\n")?;
    let (code, _, err) = cli(&[
        "build-cli",
        "--binary",
        "/bin/busybox",
        "--config",
        &d("bad.yaml"),
        "-o",
        &d("out1"),
    ])?;
    ensure!(
        code == 1 && err.contains("bad.yaml") && err.contains("loud"),
        "{code} {err}"
    );
    ensure!(
        !Path::new(&d("out1")).exists(),
        "a refused build must leave no output directory"
    );
    let (code, out, err) = cli(&[
        "build-cli",
        "--binary",
        "/bin/busybox",
        "--module",
        "no_such_module_xyz",
        "--no-mkfs",
        "-o",
        &d("out2"),
    ])?;
    ensure!(code == 0, "{code} {err}");
    ensure!(
        err.contains("warning: module no_such_module_xyz is not in kernel"),
        "{err}"
    );
    ensure!(
        out.contains("initramfs.cpio.gz: ") && out.contains(" MiB"),
        "size report: {out}"
    );
    let order = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zcat {} | cpio -i --quiet --to-stdout lib/modules/basalt/order",
            d("out2/initramfs.cpio.gz")
        ))
        .output()?;
    let order = String::from_utf8_lossy(&order.stdout);
    // `<name> <file> <stage>`; virtio_net needs virtio_ring (through virtio), so it loads in a later stage.
    let stage = |name: &str| -> Option<u32> {
        order.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&name) && f.len() == 3).then(|| f[2].parse().ok())?
        })
    };
    ensure!(
        order.contains("no_such_module_xyz -\n")
            && matches!((stage("virtio_net"), stage("virtio_ring")), (Some(n), Some(r)) if n > r),
        "{order}"
    );
    let (code, _, err) = cli(&["boot-cli", &d("nothing-here")])?;
    ensure!(
        code == 1 && err.contains("nothing-here/vmlinuz not found"),
        "{code} {err}"
    );
    let (code, _, err) = cli(&["boot-cli", &d("out2"), "--hostfwd", "8080:80"])?;
    ensure!(
        code == 1 && err.contains("--hostfwd \"8080:80\""),
        "{code} {err}"
    );
    Ok(())
}

fn init_refuses_to_run_outside_pid_1(_: &Kernel) -> Result<()> {
    let code = basalt_initramfs::pid1::main(vec!["basalt init".into()]);
    ensure!(
        code == ExitCode::from(2),
        "basalt init outside PID 1 must refuse with exit 2"
    );
    Ok(())
}

fn spec(kernel: &Kernel, binary: &Path, dir: &Path, out: &str) -> BuildSpec {
    BuildSpec {
        kernel: kernel.clone(),
        binary: binary.to_owned(),
        config: None,
        manifests: None,
        preload: Vec::new(),
        extra_modules: Vec::new(),
        mkfs: Some(PathBuf::from("/usr/sbin/mke2fs")).filter(|p| p.exists()),
        out_dir: dir.join(out),
    }
}

fn build_is_reproducible_and_boots(kernel: &Kernel) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let bin = testing::stripped(&std::env::current_exe()?, &dir.join("init-bin"), false)?;
    let fx = basalt_testsupport::Fixtures::build()?;
    let busybox = fx.get("busybox");
    std::fs::write(
        dir.join("config.yaml"),
        "node-name: basalt-test\ninit:\n  status-port: 8080\n",
    )?;
    std::fs::create_dir(dir.join("manifests"))?;
    std::fs::write(
        dir.join("manifests/httpd.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: httpd}\nspec:\n  containers: [{name: httpd, image: busybox:latest}]\n",
    )?;

    // 1. Reproducible: two builds of the same inputs are byte-identical.
    let mut s = spec(kernel, &bin, dir, "a");
    s.config = Some(dir.join("config.yaml"));
    s.manifests = Some(dir.join("manifests"));
    s.preload = vec![busybox.oci_archive.clone()];
    let report = builder::build(&s)?;
    let mut s2 = s.clone();
    s2.out_dir = dir.join("b");
    builder::build(&s2)?;
    for f in ["vmlinuz", "initramfs.cpio.gz"] {
        ensure!(
            std::fs::read(dir.join("a").join(f))? == std::fs::read(dir.join("b").join(f))?,
            "{f} differs between two builds of the same inputs"
        );
    }
    ensure!(
        report.images == ["docker.io/library/busybox:latest"],
        "{:?}",
        report.images
    );
    ensure!(
        report.modules.iter().any(|m| m == "virtio_net"),
        "{:?}",
        report.modules
    );
    eprint!("{report}");
    eprintln!(
        "image size: kernel {} + initramfs {} = {:.1} MiB ({} libraries: {:?})",
        report.kernel_bytes,
        report.initramfs_bytes,
        (report.kernel_bytes + report.initramfs_bytes) as f64 / 1048576.0,
        report.libraries.len(),
        report.libraries
    );

    // 2. First boot: blank disk is formatted, DHCP, the host reaches the node through hostfwd, ACPI power-off.
    let disk = dir.join("state.img");
    let port = testing::free_port()?;
    let mut o = BootOptions::new(dir.join("a"));
    o.serial_log = Some(dir.join("boot1.log"));
    o.disk = Some(disk.clone());
    o.disk_size_mb = 64;
    o.no_reboot = true;
    o.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:8080")];
    let (mut vm, log, _) = testing::boot_and_wait(&o, "network ready", BOOT_TIMEOUT)?;
    let answer = testing::http_get_until(port, "/healthz", Duration::from_secs(60))?;
    ensure!(
        answer.starts_with("HTTP/1.0 200") && answer.ends_with("\r\n\r\nok\n"),
        "{answer:?}"
    );
    // Supervision: the agent (exit 69 today) is restarted with back-off: 1 s, then 2 s.
    let text = testing::wait_for_console(
        &mut vm,
        &log,
        "ERROR: agent not available in this build (exit 69); restart #2 in 2s",
        Duration::from_secs(60),
    )?;
    ensure!(
        text.matches("basalt-init: agent started").count() >= 2,
        "{text}"
    );
    for want in [
        "mounted /proc /sys /dev /dev/pts /dev/shm /sys/fs/cgroup /run /tmp",
        "cgroup2 controllers for children: ",
        "failed or missing",
        "hostname basalt-test",
        "formatting blank disk /dev/vda as ext4",
        "state: /var/lib/basalt persistent on /dev/vda, boot #1",
        "preloaded image docker.io/library/busybox:latest",
        "network ready: 10.0.2.15/24 on ",
        "(dhcp), gateway 10.0.2.2",
        "DHCP: 10.0.2.15/24 from 10.0.2.2, lease ",
        "watching 1 power button(s)",
        "basalt node basalt-test",
        "1 preloaded, 1 static pod manifests",
        "agent not available in this build (exit 69); restart #1",
    ] {
        ensure!(text.contains(want), "console lacks {want:?}:\n{text}");
    }
    ensure!(
        text.contains("kernel modules: ") && text.contains(" stages, 0 failed or missing, "),
        "{text}"
    );
    ensure!(!text.contains("ERROR: mount"), "{text}");
    let ready = testing::uptime_at(&text, "network ready").context("uptime at network ready")?;
    let text = testing::power_off(vm, &log, Duration::from_secs(60))?;
    ensure!(
        text.contains("power button pressed") && text.contains("power-off now"),
        "{text}"
    );
    // The lease goes back to qemu's DHCP server at power-off, after the processes stopped.
    let released = text
        .find("DHCP: released 10.0.2.15 to 10.0.2.2")
        .with_context(|| format!("no DHCP release at power-off:\n{text}"))?;
    ensure!(
        text.find("stopping all processes")
            .is_some_and(|stop| stop < released),
        "{text}"
    );
    // The agent was given the leased address as its node IP.
    let agent_log = read_from_disk(&disk, "/init/last-agent.log")?;
    ensure!(
        agent_log.contains("config: node-ip: 10.0.2.15"),
        "the agent's config lacks the node's address:\n{agent_log}"
    );
    eprintln!("boot 1: network ready at guest uptime {ready:.2} s");

    // 3. Second boot through `basalt node-image boot`, stopped with SIGTERM: the disk keeps its state; a bad
    //    config, an unknown argument and a module missing from the kernel are shown and the node still comes up
    //    (with a static address from the kernel command line this time).
    std::fs::write(
        dir.join("bad.yaml"),
        "node-name: basalt-test\nlog-level: loud\n",
    )?;
    let mut s3 = spec(kernel, &bin, dir, "c");
    s3.config = Some(dir.join("bad.yaml"));
    s3.extra_modules = vec!["no_such_module_xyz".into()];
    let r3 = builder::build(&s3)?;
    ensure!(
        r3.missing_modules == ["no_such_module_xyz"],
        "{:?}",
        r3.missing_modules
    );
    let log2 = dir.join("boot2.log");
    let mut cli = Command::new(std::env::current_exe()?)
        .arg("boot-cli")
        .arg(dir.join("c"))
        .arg("--serial-log")
        .arg(&log2)
        .arg("--disk")
        .arg(&disk)
        .args(["--memory", "512", "--no-reboot", "--hostfwd"])
        .arg(format!("tcp:127.0.0.1:{port}-:8080"))
        .args([
            "--append",
            "basalt.status-port=8080",
            "--append",
            "basalt.bogus=1",
            "--append",
            "basalt.node-name=second",
            // Static this time (qemu's user network still routes 10.0.2.15); boot 1 used DHCP.
            "--append",
            "basalt.ip=10.0.2.15/24 basalt.gateway=10.0.2.2 basalt.dns=10.0.2.3",
            "--append",
            "stubborn_agent=1",
            // After `quiet`: the console also prints kernel-log lines below level 5, i.e. PID 1's errors.
            "--append",
            "loglevel=5",
        ])
        .spawn()?;
    let guard = KillOnDrop(cli.id());
    let deadline = std::time::Instant::now() + BOOT_TIMEOUT;
    let text = loop {
        let t = testing::console(&log2);
        if testing::shows_line(&t, "network ready") {
            break t;
        }
        ensure!(cli.try_wait()?.is_none(), "boot-cli exited early:\n{t}");
        ensure!(
            std::time::Instant::now() < deadline,
            "second boot: no network within {BOOT_TIMEOUT:?}:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let answer = testing::http_get_until(port, "/healthz", Duration::from_secs(60))?;
    ensure!(answer.ends_with("\r\n\r\nok\n"), "{answer:?}");
    for want in [
        "persistent on /dev/vda, boot #2",
        "ERROR: config.yaml: ",
        "loud",
        "ERROR: module no_such_module_xyz: not in this kernel",
        "ERROR: kernel command line: basalt.bogus=1: unknown key",
        "hostname second",
        "network ready: 10.0.2.15/24 on eth0 (static), gateway 10.0.2.2",
    ] {
        ensure!(text.contains(want), "console lacks {want:?}:\n{text}");
    }
    // The same error through /dev/kmsg: the kernel's own timestamp has six decimals, PID 1's three.
    ensure!(
        text.lines().any(
            |l| l.contains("basalt-init: ERROR: module no_such_module_xyz")
                && l.find(']').is_some_and(|i| i > 12)
        ),
        "no kernel-log copy of the module error:\n{text}"
    );
    ensure!(
        !text.contains("formatting blank disk"),
        "a used disk must not be formatted again:\n{text}"
    );
    // The status block lists the errors too (it is drawn after the network comes up), and the stubborn agent's
    // orphan is reaped while the node runs: both are awaited before the node is stopped.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = testing::console(&log2);
        if t.contains("basalt node second") && t.contains("reaped orphan pid ") {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no status block or no reaped orphan:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: signalling the child we started.
    unsafe { libc::kill(cli.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut cli, Duration::from_secs(90))?;
    // Reaped: its pid may be reused, so it must not be signalled again.
    std::mem::forget(guard);
    let text = testing::console(&log2);
    ensure!(status.success(), "boot-cli exited {status}:\n{text}");
    ensure!(text.contains("reboot: Power down"), "{text}");
    ensure!(
        text.contains("    ! "),
        "status block shows the last errors:\n{text}"
    );
    for want in [
        "reaped orphan pid ",
        "processes still running after the grace period; killing them",
    ] {
        ensure!(text.contains(want), "console lacks {want:?}:\n{text}");
    }
    ensure!(
        !text.contains("ERROR: umount"),
        "clean unmount at power-off:\n{text}"
    );
    // The errors are in the log file too: PID 1 saved it on the state disk before powering off.
    let saved = read_from_disk(&disk, "/init/last-boot.log")?;
    for want in [
        "ERROR: module no_such_module_xyz",
        "ERROR: config.yaml: ",
        "power-off requested",
    ] {
        ensure!(
            saved.contains(want),
            "saved init.log lacks {want:?}:\n{saved}"
        );
    }
    let tail: Vec<_> = text.lines().collect();
    eprintln!(
        "boot 2 console (tail):\n{}",
        tail[tail.len().saturating_sub(25)..].join("\n")
    );
    eprintln!(
        "boot 2: network ready at guest uptime {:.2} s",
        testing::uptime_at(&text, "network ready").unwrap_or(-1.0)
    );
    Ok(())
}

/// A file on the (ext4) state disk image, read without mounting it.
fn read_from_disk(disk: &Path, path: &str) -> Result<String> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(disk)
        .output()
        .context("debugfs (e2fsprogs)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn wait_child(c: &mut std::process::Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(s) = c.try_wait()? {
            return Ok(s);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills the boot-cli child (and so its qemu, which dies with its Vm) if the test bails out early.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: signalling a child of ours; harmless if it already exited and was reaped by wait_child.
        unsafe { libc::kill(self.0 as i32, libc::SIGTERM) };
    }
}
