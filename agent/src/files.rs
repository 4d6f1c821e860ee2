//! The per-pod files every container of a pod shares by bind mount: hostname, resolv.conf, hosts and a
//! /dev/shm tmpfs (with a pod IPC namespace, shared memory must be shared too).

use std::path::Path;

use basalt_proto::cri;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Writes `hostname`, `resolv.conf` and `hosts` into `dir`.
pub fn write_pod_files(
    dir: &Path,
    config: &cri::PodSandboxConfig,
    host_network: bool,
) -> std::io::Result<()> {
    let hostname = if host_network || config.hostname.is_empty() {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    } else {
        config.hostname.clone()
    };
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(
        dir.join("resolv.conf"),
        resolv_conf(config.dns_config.as_ref())?,
    )?;
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"
            .to_owned()
    };
    std::fs::write(dir.join("hosts"), hosts)
}

/// Gives the pod's files to its root: `(uid, gid)` on the host that id 0 of the pod's user namespace maps to.
/// Without it they would show up as the overflow id inside, readable but not writable by the pod's root.
pub fn give_pod_files_to(dir: &Path, (uid, gid): (u32, u32)) -> std::io::Result<()> {
    for f in ["hostname", "resolv.conf", "hosts"] {
        std::os::unix::fs::chown(dir.join(f), Some(uid), Some(gid))?;
    }
    Ok(())
}

/// The pod's resolv.conf: from the DNS config when the kubelet gives one, else the host's (as containerd does).
pub fn resolv_conf(dns: Option<&cri::DnsConfig>) -> std::io::Result<String> {
    let Some(dns) =
        dns.filter(|d| !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty())
    else {
        return match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for s in &dns.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Ok(out)
}

/// Mounts the pod's shared-memory tmpfs (64 MiB, as Docker and containerd size it).
pub fn mount_shm(path: &Path) -> nix::Result<()> {
    std::fs::create_dir_all(path)
        .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
}

pub fn unmount_shm(path: &Path) -> nix::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}
