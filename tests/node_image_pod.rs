//! The node image running a real workload: the `basalt` binary as `/init` boots under qemu (TCG), its agent runs
//! a static busybox `httpd` pod from the preloaded image, the host reaches it through a hostfwd port, a marker the
//! pod writes to a hostPath on the state disk survives a reboot, and the node powers off cleanly.
//!
//! Prints the image size and the boot-to-serving time (guest uptime when the pod first answered).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};
use basalt_initramfs::boot::{self, BootOptions};
use basalt_initramfs::builder;
use basalt_initramfs::testing;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// From "network ready" to the pod's first answer: agent start, image import, pod start, all under TCG.
const SERVE_TIMEOUT: Duration = Duration::from_secs(180);
const HTTPD_PORT: u16 = 8081;

/// Boots the image with the state disk and waits for the pod to answer; returns the VM, its console log, the
/// guest uptime of the first answer and the marker the pod serves.
fn boot_until_serving(
    image: &Path,
    disk: &Path,
    log: PathBuf,
) -> Result<(boot::Vm, PathBuf, f64, String)> {
    let port = testing::free_port()?;
    let mut o = BootOptions::new(image);
    o.serial_log = Some(log);
    o.disk = Some(disk.to_owned());
    o.disk_size_mb = 512;
    o.memory_mb = 1024;
    o.cpus = 2;
    o.no_reboot = true;
    o.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:{HTTPD_PORT}")];
    let (mut vm, log, _) = testing::boot_and_wait(&o, "network ready", BOOT_TIMEOUT)?;
    let serving = match testing::wait_serving(port, SERVE_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let console = testing::console(&log);
            // The agent's log reaches the state disk at power-off.
            let _ = testing::power_off(vm, &log, Duration::from_secs(90));
            let agent_log = Command::new("debugfs")
                .args(["-R", "cat /init/last-agent.log"])
                .arg(disk)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            return Err(e.context(format!(
                "the pod never answered; console:\n{console}\nagent log:\n{agent_log}"
            )));
        }
    };
    // The console's status block is redrawn when something changes: it shows the agent and the pod running.
    for want in [
        "agent:     running",
        "pods:      1 (1 Running)",
        "default/web-web-node Running 1/1 0",
    ] {
        testing::wait_for_console(&mut vm, &log, want, Duration::from_secs(60))?;
    }
    Ok((vm, log, serving.uptime, serving.marker))
}

#[test]
fn static_httpd_pod_serves_and_its_hostpath_marker_survives_a_reboot() -> Result<()> {
    let Some(kernel) = testing::kernel_or_skip("node_image_pod") else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    // Symbols too: a debug build is 400 MB.
    let bin = testing::stripped(
        Path::new(env!("CARGO_BIN_EXE_basalt")),
        &dir.join("basalt"),
        true,
    )?;
    let fx = basalt_testsupport::Fixtures::build()?;
    let spec = testing::httpd_node_spec(
        kernel,
        &bin,
        dir,
        "web-node",
        &fx.get("busybox").oci_archive,
        HTTPD_PORT,
    )?;
    let report = builder::build(&spec)?;
    let total = report.kernel_bytes + report.initramfs_bytes;
    eprint!("{report}");
    eprintln!(
        "image size: kernel {:.1} MiB + initramfs (basalt, modules, libraries, 1 image) {:.1} MiB = {:.1} MiB \
         (aim: under 20 MB)",
        report.kernel_bytes as f64 / 1048576.0,
        report.initramfs_bytes as f64 / 1048576.0,
        total as f64 / 1048576.0
    );

    // Boot 1, blank disk: formatted, the pod writes a fresh marker and serves it.
    let disk = dir.join("state.img");
    let (vm, log, uptime1, marker1) =
        boot_until_serving(&dir.join("image"), &disk, dir.join("boot1.log"))?;
    let text = testing::power_off(vm, &log, Duration::from_secs(90))?;
    ensure!(text.contains("formatting blank disk"), "{text}");
    ensure!(!text.contains("ERROR: umount"), "clean unmount:\n{text}");
    eprintln!("boot 1: pod serving at guest uptime {uptime1:.2} s (aim: under 5 s)");

    // Boot 2, same disk: the pod finds the marker it wrote before the reboot.
    let (vm, log, uptime2, marker2) =
        boot_until_serving(&dir.join("image"), &disk, dir.join("boot2.log"))?;
    ensure!(
        marker2 == marker1,
        "marker written in boot 1 was {marker1:?}, boot 2 serves {marker2:?}"
    );
    let text = testing::power_off(vm, &log, Duration::from_secs(90))?;
    ensure!(
        text.contains("persistent on /dev/vda, boot #2") && !text.contains("formatting blank disk"),
        "{text}"
    );
    ensure!(!text.contains("ERROR: umount"), "clean unmount:\n{text}");
    eprintln!(
        "boot 2: pod serving at guest uptime {uptime2:.2} s; marker {marker1} survived the reboot"
    );
    Ok(())
}
