//! The state directory: a persistent disk mounted at /var/lib/basalt when one is configured (formatted with
//! ext4 first if it is blank and formatting is allowed), else the RAM-backed root filesystem.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::{DiskFormat, Settings};
use super::{log, mounts};
use crate::layout;

/// Where state lives this boot.
#[derive(Debug, Clone)]
pub enum State {
    Ram,
    Disk { device: String, boot: u64 },
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::Ram => write!(f, "in RAM (lost at power-off)"),
            State::Disk { device, boot } => write!(f, "persistent on {device}, boot #{boot}"),
        }
    }
}

pub fn prepare(s: &Settings) -> State {
    let Some(dev) = &s.init.disk else {
        log::info(format!(
            "state: {} in RAM (no disk configured)",
            layout::STATE_DIR
        ));
        return State::Ram;
    };
    let device = dev.display().to_string();
    match mount_disk(dev, s.init.disk_format) {
        Ok(()) => match count_boot() {
            Ok(boot) => {
                let st = State::Disk { device, boot };
                log::info(format!("state: {} {st}", layout::STATE_DIR));
                st
            }
            Err(e) => {
                log::error(format!("state disk {device}: boot counter: {e}"));
                State::Disk { device, boot: 0 }
            }
        },
        Err(e) => {
            log::error(format!("state disk {device}: {e}; keeping state in RAM"));
            State::Ram
        }
    }
}

fn mount_disk(dev: &Path, format: DiskFormat) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dev.exists() {
        if Instant::now() >= deadline {
            return Err("device did not appear within 5 s".into());
        }
        // No udev to wait on; the block driver creates the node through devtmpfs shortly.
        std::thread::sleep(Duration::from_millis(100));
    }
    if is_blank(dev).map_err(|e| format!("reading: {e}"))? {
        if format == DiskFormat::Never {
            return Err("disk is blank and disk-format is `never`".into());
        }
        if !Path::new(layout::MKFS).exists() {
            return Err(format!(
                "disk is blank and the image has no {} to format it",
                layout::MKFS
            ));
        }
        log::info(format!("formatting blank disk {} as ext4", dev.display()));
        let out = std::process::Command::new(layout::MKFS)
            .args(["-t", "ext4", "-q", "-F", "-L", "basalt-state"])
            .arg(dev)
            .output()
            .map_err(|e| format!("running {}: {e}", layout::MKFS))?;
        if !out.status.success() {
            return Err(format!(
                "mke2fs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let _ = std::fs::create_dir_all(layout::STATE_DIR);
    mounts::mount(
        &dev.display().to_string(),
        layout::STATE_DIR,
        "ext4",
        libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID,
        "",
    )
    .map_err(|e| format!("mounting ext4 on {}: {e}", layout::STATE_DIR))
}

/// Blank = the first MiB is all zeroes: no partition table, no filesystem superblock, nothing to lose.
fn is_blank(dev: &Path) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 1 << 20];
    let mut f = std::fs::File::open(dev)?;
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(buf[..n].iter().all(|b| *b == 0))
}

/// Counts boots on the state disk (`init/boot-count`), written durably so a power cut cannot undo it.
fn count_boot() -> std::io::Result<u64> {
    let dir = Path::new(layout::STATE_DIR).join("init");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("boot-count");
    let n = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        + 1;
    let tmp = dir.join("boot-count.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{n}")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(n)
}
