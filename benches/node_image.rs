//! The node image as shipped: the release `basalt` as `/init`, one preloaded busybox image and a static httpd
//! pod. Prints the image size and boot-to-pod-serving time (guest uptime at the pod's first answer, qemu TCG),
//! each against its aim (20 MB of initramfs, 5 s): there is no peer node image to run side by side here.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use basalt_initramfs::boot::BootOptions;
use basalt_initramfs::builder;
use basalt_initramfs::testing;

const HTTPD_PORT: u16 = 8081;
const SIZE_AIM_BYTES: f64 = 20e6;
const SERVING_AIM_SECS: f64 = 5.0;

fn main() -> Result<()> {
    // `cargo test` builds benches with the debug profile: a 400 MB binary would measure nothing the shipped
    // image has, and tests/node_image_pod.rs already boots that build.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("node_image bench: measured by `cargo bench` only (the release build)");
        return Ok(());
    }
    let Some(kernel) = testing::kernel_or_skip("node_image bench") else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let fx = basalt_testsupport::Fixtures::build()?;
    // The release binary exactly as `cargo build --release` leaves it (debug info already stripped).
    let report = builder::build(&testing::httpd_node_spec(
        kernel,
        Path::new(env!("CARGO_BIN_EXE_basalt")),
        dir,
        "bench-node",
        &fx.get("busybox").oci_archive,
        HTTPD_PORT,
    )?)?;
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_basalt"))?.len();
    println!(
        "node image: basalt {:.1} MiB; initramfs {:.1} MiB (gzip: basalt, {} modules, libraries, 1 image) + kernel {:.1} MiB",
        binary as f64 / 1048576.0,
        report.initramfs_bytes as f64 / 1048576.0,
        report.modules.len(),
        report.kernel_bytes as f64 / 1048576.0,
    );
    println!(
        "node image: initramfs {:.1} MB = {:.2}x the 20 MB aim",
        report.initramfs_bytes as f64 / 1e6,
        report.initramfs_bytes as f64 / SIZE_AIM_BYTES
    );

    // State in RAM (no disk): what the node itself costs, without formatting a disk.
    let port = testing::free_port()?;
    let mut o = BootOptions::new(dir.join("image"));
    o.serial_log = Some(dir.join("console.log"));
    o.memory_mb = 1024;
    o.cpus = 2;
    o.no_reboot = true;
    o.hostfwd = vec![format!("tcp:127.0.0.1:{port}-:{HTTPD_PORT}")];
    let (vm, log, _) = testing::boot_and_wait(&o, "network ready", Duration::from_secs(240))?;
    let serving = testing::wait_serving(port, Duration::from_secs(180))?;
    let console = testing::console(&log);
    let at = |needle: &str| testing::uptime_at(&console, needle).unwrap_or(f64::NAN);
    println!(
        "node image boot (TCG): init {:.2} s, modules {:.2} s, network {:.2} s, agent started {:.2} s, pod serving {:.2} s = {:.2}x the 5 s aim",
        at("init starting"),
        at("kernel modules:"),
        at("network ready"),
        at("agent started"),
        serving.uptime,
        serving.uptime / SERVING_AIM_SECS
    );
    testing::power_off(vm, &log, Duration::from_secs(90))?;
    Ok(())
}
