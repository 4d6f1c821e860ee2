//! The pod network of one harness: a CNI bridge conflist on a private /24 with its own bridge name and IPAM
//! lease directory, using Debian's reference plugins. Slots are claimed with `flock` so that harnesses in
//! parallel tests and in concurrent test binaries never share a subnet or a bridge.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian's containernetworking-plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
const LOCK_DIR: &str = "/run/basalt-critests";

/// A claimed slot: `10.222.<slot>.0/24` on bridge `bcrit<slot>`.
pub struct Network {
    pub slot: u8,
    pub name: String,
    pub bridge: String,
    pub subnet: String,
    /// host-local's lease directory (`<ipam_dir>/<name>/<ip>`), inside the harness directory.
    pub ipam_dir: PathBuf,
    pub conf_dir: PathBuf,
    _lock: File,
}

impl Network {
    /// Claims a free slot and writes the conflist into `<dir>/cni`.
    pub fn create(dir: &Path) -> Result<Network> {
        std::fs::create_dir_all(LOCK_DIR)?;
        let start = (std::process::id() % 200) as u8;
        for i in 0..=250u8 {
            let slot = start.wrapping_add(i) % 250 + 1;
            let path = format!("{LOCK_DIR}/slot-{slot}.lock");
            let lock = File::create(&path).with_context(|| path.clone())?;
            // SAFETY: flock on a descriptor we own; released when the File (and so the fd) is closed.
            let r = unsafe {
                nix::libc::flock(lock.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB)
            };
            if r != 0 {
                continue;
            }
            let bridge = format!("bcrit{slot}");
            // A bridge left by a crashed run of ours on this slot: ours to remove, the lock proves it's stale.
            if Path::new("/sys/class/net").join(&bridge).exists() {
                let _ = Command::new("ip").args(["link", "del", &bridge]).status();
            }
            let net = Network {
                slot,
                name: format!("basalt-critest-{slot}"),
                bridge,
                subnet: format!("10.222.{slot}.0/24"),
                ipam_dir: dir.join("ipam"),
                conf_dir: dir.join("cni"),
                _lock: lock,
            };
            net.write_conf()?;
            return Ok(net);
        }
        bail!("no free CNI slot under {LOCK_DIR}")
    }

    fn write_conf(&self) -> Result<()> {
        std::fs::create_dir_all(&self.conf_dir)?;
        // No gateway, no masquerade, no routes: pods reach each other on this bridge and nothing else. No
        // `loopback` entry: a CRI brings the pod's `lo` up itself (containerd through its built-in loopback
        // network, Basalt's monitor when it makes the netns), and node conflists leave it out (containerd's
        // example bridge conflist, k3s's flannel one). With it, each ADD and DEL ran the plugin a second time.
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": false,
                    "ipMasq": false,
                    "hairpinMode": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": self.ipam_dir,
                        "ranges": [[{"subnet": self.subnet}]],
                    }
                }
            ]
        });
        std::fs::write(
            self.conf_dir.join("10-basalt-critest.conflist"),
            serde_json::to_vec_pretty(&conf)?,
        )?;
        Ok(())
    }

    /// Host interfaces enslaved to the bridge (the host ends of pod veths).
    pub fn bridge_ports(&self) -> Vec<String> {
        list_dir(&Path::new("/sys/class/net").join(&self.bridge).join("brif"))
    }

    /// The lease file host-local keeps for `ip`.
    pub fn lease_path(&self, ip: &str) -> PathBuf {
        self.ipam_dir.join(&self.name).join(ip)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // The bridge plugin creates the bridge but never deletes it: the harness owns it.
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .status();
        }
    }
}

pub(crate) fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
