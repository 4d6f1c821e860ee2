//! Helpers for tests and benchmarks that run `basalt csi` (this crate's users: tests/csi.rs, the CRI suite's
//! CSI case, the node image test and benches/csi.rs): the plugin as a child process on private directories, an
//! ext4 filesystem with enforced project quotas on a loop device, request builders, and the leak check.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use basalt_proto::csi as api;

use crate::client::Client;

/// `basalt csi` on a private base directory and socket, its log in `<dir>/csi.log`.
pub struct PluginProcess {
    pub binary: PathBuf,
    pub dir: PathBuf,
    pub base: PathBuf,
    pub socket: PathBuf,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl PluginProcess {
    /// Starts the plugin with its base directory at `base` and everything else under `dir`, and waits until it
    /// answers a Probe.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        base: &Path,
        extra: &[&str],
    ) -> Result<PluginProcess> {
        let mut p = PluginProcess {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            base: base.to_owned(),
            socket: dir.join("run/csi/csi.sock"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        p.spawn()?;
        p.client().await?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("csi.log"))?;
        let child = Command::new(&self.binary)
            .arg("--config")
            .arg("/dev/null")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .args([
                "--node-name",
                "csi-test-node",
                "--log-level",
                "debug",
                "csi",
                "--base-dir",
            ])
            .arg(&self.base)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} csi", self.binary.display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn address(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A client, once the plugin answers (it fails early with the log if the plugin exited).
    pub async fn client(&mut self) -> Result<Client> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                anyhow::bail!("basalt csi exited ({st}):\n{}", self.log());
            }
            match Client::wait_ready(&self.address(), Duration::from_millis(500)).await {
                Ok(c) => return Ok(c),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(e.context(self.log()))
                }
                Err(_) => {}
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("csi.log")).unwrap_or_default()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the orderly stop.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        Ok(c.wait()?)
    }

    /// Starts it again on the same directories.
    pub async fn restart(&mut self) -> Result<Client> {
        self.spawn()?;
        self.client().await
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for PluginProcess {
    /// Kills the plugin and, for a test that failed half-way, undoes what it left under its directory (the
    /// passing path checks with [`leftovers`] that nothing was left before this runs).
    fn drop(&mut self) {
        self.kill();
        let mut points: Vec<PathBuf> = crate::sys::mounts()
            .into_iter()
            .map(|(m, _, _)| m)
            .filter(|m| m.starts_with(&self.dir) || m.starts_with(&self.base))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in points {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Ok(d) = std::fs::read_dir("/sys/block") {
            for e in d.flatten() {
                let backing =
                    std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
                let backing = Path::new(backing.trim());
                if backing.starts_with(&self.dir) || backing.starts_with(&self.base) {
                    let _ = crate::sys::loop_detach(&PathBuf::from(format!(
                        "/dev/{}",
                        e.file_name().to_string_lossy()
                    )));
                }
            }
        }
    }
}

/// An ext4 filesystem with the project quota feature, loop-mounted with `prjquota` at `<dir>/mnt`: where the
/// host's own filesystem does not enforce project quotas, this is how a test gets one. Unmounted on drop.
pub struct QuotaFs {
    pub mnt: PathBuf,
}

impl QuotaFs {
    pub fn make(dir: &Path, size_mb: u64) -> Result<QuotaFs> {
        let img = dir.join("prjquota.img");
        std::fs::File::create(&img)?.set_len(size_mb << 20)?;
        let out = Command::new("mke2fs")
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                "quota,project",
                "-E",
                "quotatype=prjquota",
            ])
            .arg(&img)
            .output()
            .context("mke2fs (e2fsprogs)")?;
        ensure!(
            out.status.success(),
            "mke2fs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        let out = Command::new("mount")
            .args(["-o", "loop,prjquota"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .context("mount")?;
        ensure!(
            out.status.success(),
            "mount -o loop,prjquota: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(QuotaFs { mnt })
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// What is left under `dir`: mount points at or beneath it and loop devices whose backing file is beneath it.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = crate::sys::mounts()
        .into_iter()
        .filter(|(m, _, _)| m.starts_with(dir))
        .map(|(m, t, s)| format!("mount {} ({t} from {s})", m.display()))
        .collect();
    if let Ok(d) = std::fs::read_dir("/sys/block") {
        for e in d.flatten() {
            let backing =
                std::fs::read_to_string(e.path().join("loop/backing_file")).unwrap_or_default();
            let backing = backing.trim();
            if !backing.is_empty() && Path::new(backing).starts_with(dir) {
                out.push(format!(
                    "loop device /dev/{} on {backing}",
                    e.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}

/// Entries of `<base>/volumes` and `<base>/snapshots`.
pub fn base_entries(base: &Path) -> Vec<String> {
    ["volumes", "snapshots"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(base.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path().display().to_string())
        .collect()
}

pub fn mount_cap() -> api::VolumeCapability {
    use api::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
    api::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

pub fn block_cap() -> api::VolumeCapability {
    use api::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume};
    api::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

pub fn create(name: &str, bytes: i64, cap: api::VolumeCapability) -> api::CreateVolumeRequest {
    api::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(api::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub fn publish(
    id: &str,
    target: &Path,
    cap: api::VolumeCapability,
    readonly: bool,
) -> api::NodePublishVolumeRequest {
    api::NodePublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn unpublish(id: &str, target: &Path) -> api::NodeUnpublishVolumeRequest {
    api::NodeUnpublishVolumeRequest {
        volume_id: id.into(),
        target_path: target.display().to_string(),
    }
}

/// CreateVolume's content source: the snapshot `id`.
pub fn from_snapshot(id: &str) -> Option<api::VolumeContentSource> {
    use api::volume_content_source::{SnapshotSource, Type};
    Some(api::VolumeContentSource {
        r#type: Some(Type::Snapshot(SnapshotSource {
            snapshot_id: id.into(),
        })),
    })
}

/// CreateVolume's content source: the volume `id` (a clone).
pub fn from_volume(id: &str) -> Option<api::VolumeContentSource> {
    use api::volume_content_source::{Type, VolumeSource};
    Some(api::VolumeContentSource {
        r#type: Some(Type::Volume(VolumeSource {
            volume_id: id.into(),
        })),
    })
}

pub fn delete(id: &str) -> api::DeleteVolumeRequest {
    api::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    }
}

pub fn snapshot(source: &str, name: &str) -> api::CreateSnapshotRequest {
    api::CreateSnapshotRequest {
        source_volume_id: source.into(),
        name: name.into(),
        ..Default::default()
    }
}
