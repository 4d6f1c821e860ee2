//! What a pod puts on the host, found from the outside (procfs, sysfs, mountinfo, the IPAM directory) so the
//! same checker works for any CRI server: processes in the pod's cgroup parent, the pod's netns (by the path
//! the runtime pinned it at, or through a process in it; then by inode, so a bind mount of it under any name
//! is found), the host end of its veth, its IP lease, its cgroups (v1 hierarchies or the v2 tree) and mounts.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything a running pod was seen to own.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pub sandbox_id: String,
    pub container_ids: Vec<String>,
    /// The pod's cgroup parent as given in the sandbox config (unique per pod).
    pub cgroup_parent: String,
    pub pids: Vec<u32>,
    pub netns_inode: Option<u64>,
    /// Where the pod's netns was bind-mounted when observed (inode numbers are reused once a netns is freed,
    /// so a leftover is the same mount point still holding the same inode).
    pub netns_mounts: Vec<String>,
    pub host_veth: Option<String>,
    pub ip: Option<String>,
    pub lease: Option<PathBuf>,
}

impl Footprint {
    /// Reads the pod's processes, netns and veth from the host. `netns_path` is where the runtime pinned the
    /// pod's network namespace (PodSandboxStatus' verbose info, see [`netns_path_from_info`]): a pod with no
    /// running process (ours has no pause process) is found by it; without it, through a process in the pod.
    pub fn observe(
        sandbox_id: &str,
        container_ids: Vec<String>,
        cgroup_parent: &str,
        netns_path: Option<&Path>,
        ip: Option<String>,
        lease: Option<PathBuf>,
    ) -> Footprint {
        let pids = pids_in_cgroup(cgroup_parent);
        let host_ns = ns_inode(Path::new("/proc/self/ns/net"));
        let mut netns_inode = None;
        let mut host_veth = None;
        if let Some(path) = netns_path {
            let ino = std::fs::metadata(path).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.ino()
            });
            if ino.is_some() && ino != host_ns {
                netns_inode = ino;
                host_veth = peer_veth(&format!("--net={}", path.display()));
            }
        }
        for pid in pids.iter().filter(|_| netns_inode.is_none()) {
            let ino = ns_inode(&PathBuf::from(format!("/proc/{pid}/ns/net")));
            if ino.is_some() && ino != host_ns {
                netns_inode = ino;
                host_veth = peer_veth(&format!("--net=/proc/{pid}/ns/net"));
                break;
            }
        }
        let netns_mounts = netns_inode.map(netns_mount_points).unwrap_or_default();
        Footprint {
            netns_mounts,
            sandbox_id: sandbox_id.to_owned(),
            container_ids,
            cgroup_parent: cgroup_parent.to_owned(),
            pids,
            netns_inode,
            host_veth,
            ip,
            lease,
        }
    }

    /// Whatever of this pod is still on the host, one line each; empty when the pod is fully gone.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for pid in pids_in_cgroup(&self.cgroup_parent) {
            left.push(format!(
                "process {pid} ({}) in the pod's cgroups",
                comm(pid)
            ));
        }
        for pid in pids_naming(&self.sandbox_id) {
            left.push(format!(
                "process {pid} ({}) naming the sandbox id in its command line",
                comm(pid)
            ));
        }
        let ids: Vec<&str> = std::iter::once(self.sandbox_id.as_str())
            .chain(self.container_ids.iter().map(String::as_str))
            .collect();
        let netns_root = self.netns_inode.map(|i| format!("net:[{i}]"));
        for m in mountinfo() {
            let pod_netns = netns_root.as_deref() == Some(m.root.as_str())
                && self.netns_mounts.contains(&m.mount_point);
            if ids.iter().any(|id| m.mount_point.contains(id)) || pod_netns {
                left.push(format!("mount {} ({})", m.mount_point, m.fs_type));
            }
        }
        for dir in cgroup_dirs(&self.cgroup_parent) {
            for child in crate::network::list_dir(&dir) {
                if dir.join(&child).is_dir() {
                    left.push(format!("cgroup {}", dir.join(child).display()));
                }
            }
        }
        if let Some(v) = &self.host_veth {
            if Path::new("/sys/class/net").join(v).exists() {
                left.push(format!("host veth {v}"));
            }
        }
        if let Some(l) = &self.lease {
            if l.exists() {
                left.push(format!("IP lease {}", l.display()));
            }
        }
        left
    }
}

/// One line of /proc/self/mountinfo.
pub struct MountEntry {
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
}

pub fn mountinfo() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            Some(MountEntry {
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                fs_type: f.get(sep + 1)?.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

pub fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Processes whose command line contains `needle` (a sandbox id, a marker in a container's command).
pub fn pids_naming(needle: &str) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            contains(&cmdline, needle.as_bytes())
        })
        .collect()
}

/// The first process whose command line holds `needle`, waiting up to `limit` for one: a container the runtime
/// reports RUNNING may still be between the runtime's init and the container's own program.
pub async fn wait_pid_naming(needle: &str, limit: std::time::Duration) -> Option<u32> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let found = pids_naming(needle).first().copied();
        if found.is_some() || std::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Processes with a cgroup (in any hierarchy) at or below `parent`.
pub fn pids_in_cgroup(parent: &str) -> Vec<u32> {
    let needle = format!(":{parent}");
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map(|c| {
                    c.lines().any(|l| {
                        l.find(&needle).is_some_and(|i| {
                            let rest = &l[i + needle.len()..];
                            rest.is_empty() || rest.starts_with('/')
                        })
                    })
                })
                .unwrap_or(false)
        })
        .collect()
}

/// `parent` in each mounted v1 hierarchy (and the hybrid unified one), or in the v2 tree, where it exists.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    cgroup_dirs_under(Path::new("/sys/fs/cgroup"), parent)
}

/// [`cgroup_dirs`] with the cgroup mount at `root`: a pure v2 mount (its root has `cgroup.controllers`) is
/// one tree; otherwise every directory in it is a hierarchy (v1 controllers, `unified`, `systemd`).
pub fn cgroup_dirs_under(root: &Path, parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let trees: Vec<PathBuf> = if root.join("cgroup.controllers").is_file() {
        vec![root.to_owned()]
    } else {
        crate::network::list_dir(root)
            .into_iter()
            .map(|c| root.join(c))
            .collect()
    };
    trees
        .into_iter()
        .map(|t| t.join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Where a runtime pinned a sandbox's network namespace, from PodSandboxStatus' verbose `info`: ours says
/// `namespaces.net`; containerd puts the pause container's runtime spec there, whose network namespace
/// entry has the path.
pub fn netns_path_from_info(info: &std::collections::HashMap<String, String>) -> Option<PathBuf> {
    let v: serde_json::Value = serde_json::from_str(info.get("info")?).ok()?;
    if let Some(p) = v["namespaces"]["net"].as_str() {
        return Some(PathBuf::from(p));
    }
    v["runtimeSpec"]["linux"]["namespaces"]
        .as_array()?
        .iter()
        .find(|n| n["type"] == "network")?["path"]
        .as_str()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Mount points of nsfs bind mounts of the network namespace `inode`.
pub fn netns_mount_points(inode: u64) -> Vec<String> {
    let root = format!("net:[{inode}]");
    mountinfo()
        .into_iter()
        .filter(|m| m.root == root)
        .map(|m| m.mount_point)
        .collect()
}

fn ns_inode(path: &Path) -> Option<u64> {
    let link = std::fs::read_link(path).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The host end of the veth whose other end is `eth0` in the network namespace `nsenter` enters with
/// `net_arg` (`--net=FILE`).
fn peer_veth(net_arg: &str) -> Option<String> {
    let out = Command::new("nsenter")
        .args([net_arg, "ip", "-o", "link", "show", "eth0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "3: eth0@if12: <BROADCAST,..."
    let idx: u32 = text.split("@if").nth(1)?.split(':').next()?.parse().ok()?;
    crate::network::list_dir(Path::new("/sys/class/net"))
        .into_iter()
        .find(|n| {
            std::fs::read_to_string(format!("/sys/class/net/{n}/ifindex"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                == Some(idx)
        })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checker must see what a careless runtime leaves: a process in the pod's cgroup, a mount naming
    /// the sandbox, an IP lease file. Otherwise every "nothing left" assertion would pass vacuously.
    #[test]
    fn leftovers_are_found() {
        let id = format!("leakcheck{}", std::process::id());
        let parent = format!("/basalt-critests/unit-{id}/pod");
        let tmp = tempfile::tempdir().unwrap();
        let lease = tmp.path().join("10.0.0.9");
        std::fs::write(&lease, b"").unwrap();

        let cg = Path::new("/sys/fs/cgroup/pids").join(parent.trim_start_matches('/'));
        std::fs::create_dir_all(&cg).unwrap();
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        std::fs::write(cg.join("cgroup.procs"), child.id().to_string()).unwrap();
        let mp = tmp.path().join(format!("rootfs-{id}"));
        std::fs::create_dir(&mp).unwrap();
        nix::mount::mount(
            Some(tmp.path()),
            &mp,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();

        let fp = Footprint {
            sandbox_id: id.clone(),
            cgroup_parent: parent.clone(),
            lease: Some(lease.clone()),
            ..Default::default()
        };
        let left = fp.leftovers().join("\n");
        let cleanup = |child: &mut std::process::Child| {
            let _ = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH);
            let _ = child.kill();
            let _ = child.wait();
        };
        cleanup(&mut child);
        assert!(left.contains(&format!("process {}", child.id())), "{left}");
        assert!(left.contains(&format!("mount {}", mp.display())), "{left}");
        assert!(left.contains("IP lease"), "{left}");

        std::fs::remove_file(&lease).unwrap();
        std::fs::remove_dir(&cg).unwrap();
        assert_eq!(fp.leftovers(), Vec::<String>::new());
        let _ = std::fs::remove_dir(cg.parent().unwrap());
    }

    /// A pod with no process at all (ours has no pause process) is still found by its pinned netns: the
    /// netns mount and the host end of its veth are leftovers until removed, and so is a container cgroup
    /// left under the pod's.
    #[test]
    fn a_pinned_netns_its_veth_and_a_child_cgroup_are_found() {
        let id = format!("leakns{}", std::process::id());
        let tmp = tempfile::tempdir().unwrap();
        let pin = tmp.path().join("netns");
        std::fs::write(&pin, b"").unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let net = format!("--net={}", pin.display());
        run(&["unshare", &net, "true"]);
        let host_end = format!("lk{}", std::process::id() % 100_000);
        run(&[
            "nsenter", &net, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", &host_end,
        ]);
        run(&[
            "nsenter", &net, "ip", "link", "set", &host_end, "netns", "1",
        ]);
        let parent = format!("/basalt-critests/unit-{id}/pod");
        let cg = Path::new("/sys/fs/cgroup/pids").join(parent.trim_start_matches('/'));
        std::fs::create_dir_all(cg.join("container")).unwrap();

        let fp = Footprint::observe(&id, vec![], &parent, Some(&pin), None, None);
        let left = fp.leftovers().join("\n");
        let _ = Command::new("ip").args(["link", "del", &host_end]).status();
        let _ = nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(cg.join("container"));
        assert!(fp.netns_inode.is_some(), "{fp:?}");
        assert_eq!(fp.host_veth.as_deref(), Some(host_end.as_str()), "{fp:?}");
        assert!(left.contains(&format!("mount {}", pin.display())), "{left}");
        assert!(left.contains(&format!("host veth {host_end}")), "{left}");
        assert!(left.contains("container"), "{left}");
        assert_eq!(fp.leftovers(), Vec::<String>::new());
        std::fs::remove_dir(&cg).unwrap();
        let _ = std::fs::remove_dir(cg.parent().unwrap());
    }

    /// On a pure v2 mount the pod's cgroup is one directory of the tree, not one per hierarchy.
    #[test]
    fn cgroup_dirs_know_the_v1_and_the_v2_layout() {
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::create_dir_all(v2.path().join("kubepods/pod1")).unwrap();
        std::fs::create_dir_all(v2.path().join("other")).unwrap();
        assert_eq!(
            cgroup_dirs_under(v2.path(), "/kubepods/pod1"),
            [v2.path().join("kubepods/pod1")]
        );
        let v1 = tempfile::tempdir().unwrap();
        for h in ["memory", "pids", "unified"] {
            std::fs::create_dir_all(v1.path().join(h).join("kubepods/pod1")).unwrap();
        }
        std::fs::create_dir_all(v1.path().join("cpu")).unwrap();
        let mut got = cgroup_dirs_under(v1.path(), "/kubepods/pod1");
        got.sort();
        let want: Vec<PathBuf> = ["memory", "pids", "unified"]
            .iter()
            .map(|h| v1.path().join(h).join("kubepods/pod1"))
            .collect();
        assert_eq!(got, want);
        let info = std::collections::HashMap::from([(
            "info".to_owned(),
            r#"{"runtimeSpec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-1"}]}}}"#
                .to_owned(),
        )]);
        assert_eq!(
            netns_path_from_info(&info),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        let ours = std::collections::HashMap::from([(
            "info".to_owned(),
            r#"{"namespaces":{"net":"/run/basalt/pods/x/netns"}}"#.to_owned(),
        )]);
        assert_eq!(
            netns_path_from_info(&ours),
            Some(PathBuf::from("/run/basalt/pods/x/netns"))
        );
    }
}
