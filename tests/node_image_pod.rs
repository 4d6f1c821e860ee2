//! The node image running a real workload: the `basalt` binary as `/init` boots under qemu (TCG), its agent runs
//! a static busybox `httpd` pod from the preloaded image, the host reaches it through a hostfwd port, a marker the
//! pod writes to a hostPath on the state disk survives a reboot, and the node powers off cleanly.
//!
//! The image's config also runs the hostpath CSI plugin (`basalt csi`, started by `basalt init`, base directory
//! on the state disk), reached from the host over a hostfwd TCP port: the volumes and the snapshot made in the
//! first boot are there after the reboot, publish again (the image volume mounted again, the block volume's
//! loop device attached again), restore, and delete leaving nothing in the base directory.
//!
//! Prints the image size and the boot-to-serving time (guest uptime when the pod first answered).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use basalt_initramfs::boot::{self, BootOptions};
use basalt_initramfs::builder;
use basalt_initramfs::testing;

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
/// From "network ready" to the pod's first answer: agent start, image import, pod start, all under TCG.
const SERVE_TIMEOUT: Duration = Duration::from_secs(180);
const HTTPD_PORT: u16 = 8081;
/// Where the guest's CSI plugin listens (config `csi.csi-address`): TCP, so the host can reach it.
const CSI_PORT: u16 = 10001;

/// Boots the image with the state disk and waits for the pod to answer; returns the VM, its console log, the
/// guest uptime of the first answer and the marker the pod serves.
fn boot_until_serving(
    image: &Path,
    disk: &Path,
    log: PathBuf,
    csi_port: u16,
) -> Result<(boot::Vm, PathBuf, f64, String)> {
    let port = testing::free_port()?;
    let mut o = BootOptions::new(image);
    o.serial_log = Some(log);
    o.disk = Some(disk.to_owned());
    o.disk_size_mb = 512;
    o.memory_mb = 1024;
    o.cpus = 2;
    o.no_reboot = true;
    o.hostfwd = vec![
        format!("tcp:127.0.0.1:{port}-:{HTTPD_PORT}"),
        format!("tcp:127.0.0.1:{csi_port}-:{CSI_PORT}"),
    ];
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
    let config = std::fs::read_to_string(dir.join("config.yaml"))?;
    std::fs::write(
        dir.join("config.yaml"),
        format!("{config}csi:\n  csi-address: tcp://0.0.0.0:{CSI_PORT}\n"),
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
    let csi_port = testing::free_port()?;
    let (vm, log, uptime1, marker1) =
        boot_until_serving(&dir.join("image"), &disk, dir.join("boot1.log"), csi_port)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let made = rt.block_on(csi_first_boot(csi_port));
    let text = testing::power_off(vm, &log, Duration::from_secs(90))?;
    let made =
        made.with_context(|| format!("CSI in boot 1; console:\n{text}\n{}", csi_log(&disk)))?;
    ensure!(text.contains("basalt-init: csi started"), "{text}");
    ensure!(text.contains("formatting blank disk"), "{text}");
    ensure!(!text.contains("ERROR: umount"), "clean unmount:\n{text}");
    eprintln!("boot 1: pod serving at guest uptime {uptime1:.2} s (aim: under 5 s)");

    // Boot 2, same disk: the pod finds the marker it wrote before the reboot.
    let (vm, log, uptime2, marker2) =
        boot_until_serving(&dir.join("image"), &disk, dir.join("boot2.log"), csi_port)?;
    let checked = rt.block_on(csi_second_boot(csi_port, &made));
    ensure!(
        marker2 == marker1,
        "marker written in boot 1 was {marker1:?}, boot 2 serves {marker2:?}"
    );
    let text = testing::power_off(vm, &log, Duration::from_secs(90))?;
    checked.with_context(|| format!("CSI in boot 2; console:\n{text}\n{}", csi_log(&disk)))?;
    ensure!(
        text.contains("persistent on /dev/vda, boot #2") && !text.contains("formatting blank disk"),
        "{text}"
    );
    // Deleted in boot 2: nothing left in the plugin's base directory on the disk, and an empty index.
    for d in ["/csi/volumes", "/csi/snapshots"] {
        let ls = debugfs(&disk, &format!("ls {d}"))?;
        let names: Vec<&str> = ls
            .split_whitespace()
            .filter(|n| {
                !n.starts_with('.') && n.contains(|c: char| c.is_ascii_hexdigit()) && n.len() >= 32
            })
            .collect();
        ensure!(
            names.is_empty(),
            "{d} on the state disk still holds {names:?}:\n{ls}"
        );
    }
    let index = debugfs(&disk, "cat /csi/index.json")?;
    ensure!(
        index.trim() == r#"{"volumes":{},"snapshots":{}}"#,
        "index after deleting everything: {index}"
    );
    ensure!(!text.contains("ERROR: umount"), "clean unmount:\n{text}");
    eprintln!(
        "boot 2: pod serving at guest uptime {uptime2:.2} s; marker {marker1} survived the reboot"
    );
    Ok(())
}

fn debugfs(disk: &Path, request: &str) -> Result<String> {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(disk)
        .output()
        .context("debugfs (e2fsprogs)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The plugin's log of the last boot, saved by PID 1 on the state disk.
fn csi_log(disk: &Path) -> String {
    debugfs(disk, "cat /init/last-csi.log").unwrap_or_default()
}

/// IDs of what the first boot made.
struct Made {
    fs: String,
    block: String,
    snapshot: String,
}

const MIB: i64 = 1 << 20;

async fn csi_first_boot(port: u16) -> Result<Made> {
    use basalt_csi::testing::{block_cap, create, mount_cap, publish};
    let mut c =
        basalt_csi::Client::wait_ready(&format!("tcp://127.0.0.1:{port}"), Duration::from_secs(60))
            .await?;
    let info = c
        .node
        .node_get_info(basalt_csi::api::NodeGetInfoRequest {})
        .await?
        .into_inner();
    ensure!(info.node_id == "web-node", "{info:?}");
    let fs = c
        .controller
        .create_volume(create("persist-fs", 16 * MIB, mount_cap()))
        .await?
        .into_inner()
        .volume
        .context("volume")?;
    let block = c
        .controller
        .create_volume(create("persist-block", 4 * MIB, block_cap()))
        .await?
        .into_inner()
        .volume
        .context("volume")?;
    // Published when the node goes down: the reboot takes the mount, the plugin must not keep the record.
    c.node
        .node_publish_volume(publish(
            &fs.volume_id,
            Path::new("/var/lib/basalt/csi-test/fs"),
            mount_cap(),
            false,
        ))
        .await?;
    let snapshot = c
        .controller
        .create_snapshot(basalt_csi::testing::snapshot(&fs.volume_id, "persist-snap"))
        .await?
        .into_inner()
        .snapshot
        .context("snapshot")?;
    Ok(Made {
        fs: fs.volume_id,
        block: block.volume_id,
        snapshot: snapshot.snapshot_id,
    })
}

async fn csi_second_boot(port: u16, made: &Made) -> Result<()> {
    use basalt_csi::api;
    use basalt_csi::testing::{block_cap, create, mount_cap, publish, unpublish};
    let mut c =
        basalt_csi::Client::wait_ready(&format!("tcp://127.0.0.1:{port}"), Duration::from_secs(60))
            .await?;
    let vols = c
        .controller
        .list_volumes(api::ListVolumesRequest::default())
        .await?
        .into_inner();
    let mut got: Vec<(String, i64)> = vols
        .entries
        .iter()
        .map(|e| {
            let v = e.volume.as_ref().unwrap();
            (v.volume_id.clone(), v.capacity_bytes)
        })
        .collect();
    got.sort();
    let mut want = vec![(made.fs.clone(), 16 * MIB), (made.block.clone(), 4 * MIB)];
    want.sort();
    ensure!(
        got == want,
        "volumes after the reboot: {got:?}, want {want:?}"
    );
    for e in &vols.entries {
        let st = e.status.as_ref().context("status")?;
        ensure!(
            st.published_node_ids.is_empty(),
            "a publish survived the reboot: {e:?}"
        );
        ensure!(
            !st.volume_condition.as_ref().context("condition")?.abnormal,
            "{e:?}"
        );
    }
    let snaps = c
        .controller
        .list_snapshots(api::ListSnapshotsRequest::default())
        .await?
        .into_inner();
    ensure!(
        snaps.entries.len() == 1
            && snaps.entries[0].snapshot.as_ref().unwrap().snapshot_id == made.snapshot,
        "{snaps:?}"
    );
    let (tf, tb) = (
        Path::new("/var/lib/basalt/csi-test/fs2"),
        Path::new("/var/lib/basalt/csi-test/dev"),
    );
    c.node
        .node_publish_volume(publish(&made.fs, tf, mount_cap(), false))
        .await?;
    let stats = c
        .node
        .node_get_volume_stats(api::NodeGetVolumeStatsRequest {
            volume_id: made.fs.clone(),
            volume_path: tf.display().to_string(),
            ..Default::default()
        })
        .await?
        .into_inner();
    ensure!(
        stats.usage[0].total > 8 * MIB && stats.usage[0].total <= 16 * MIB,
        "{stats:?}"
    );
    c.node
        .node_publish_volume(publish(&made.block, tb, block_cap(), false))
        .await?;
    c.node
        .node_unpublish_volume(unpublish(&made.fs, tf))
        .await?;
    c.node
        .node_unpublish_volume(unpublish(&made.block, tb))
        .await?;
    let mut r = create("restored", 16 * MIB, mount_cap());
    r.volume_content_source = basalt_csi::testing::from_snapshot(&made.snapshot);
    let restored = c
        .controller
        .create_volume(r)
        .await?
        .into_inner()
        .volume
        .context("volume")?;
    c.controller
        .delete_snapshot(api::DeleteSnapshotRequest {
            snapshot_id: made.snapshot.clone(),
            ..Default::default()
        })
        .await?;
    for id in [&made.fs, &made.block, &restored.volume_id] {
        c.controller
            .delete_volume(basalt_csi::testing::delete(id))
            .await?;
    }
    let left = c
        .controller
        .list_volumes(api::ListVolumesRequest::default())
        .await?
        .into_inner();
    ensure!(left.entries.is_empty(), "{left:?}");
    Ok(())
}
