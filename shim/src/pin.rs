//! The pod's shared namespaces without a pause container: a child is cloned into new net, ipc, uts (and
//! optionally pid) namespaces, configures them (hostname, sysctls), and its `/proc/<pid>/ns/<name>` files are
//! bind-mounted onto `<dir>/ns/<name>`, which keeps each namespace alive with no process in it (as CRI-O's
//! pinns does). A pid namespace dies with its first process, so only then does the child stay, as the
//! namespace's init.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;
use serde::{Deserialize, Serialize};

/// A namespace the monitor can pin for the pod.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    /// A user namespace with the pod's id mappings (`hostUsers: false`); the others are created inside it,
    /// so that they belong to it and the pod's root may use them.
    User,
    Net,
    Ipc,
    Uts,
    Pid,
}

impl Namespace {
    /// The name under `/proc/<pid>/ns/` (and under `<dir>/ns/`).
    pub fn name(self) -> &'static str {
        match self {
            Namespace::User => "user",
            Namespace::Net => "net",
            Namespace::Ipc => "ipc",
            Namespace::Uts => "uts",
            Namespace::Pid => "pid",
        }
    }

    fn flag(self) -> CloneFlags {
        match self {
            Namespace::User => CloneFlags::CLONE_NEWUSER,
            Namespace::Net => CloneFlags::CLONE_NEWNET,
            Namespace::Ipc => CloneFlags::CLONE_NEWIPC,
            Namespace::Uts => CloneFlags::CLONE_NEWUTS,
            Namespace::Pid => CloneFlags::CLONE_NEWPID,
        }
    }

    pub const ALL: [Namespace; 5] = [
        Namespace::User,
        Namespace::Net,
        Namespace::Ipc,
        Namespace::Uts,
        Namespace::Pid,
    ];
}

/// A request the namespaces cannot take: refused before anything is made, naming the flag or the sysctl.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("sysctl {key:?}: not a valid sysctl name")]
    SysctlName { key: String },
    #[error(
        "sysctl {key:?} is not namespaced: a pod may only set net.*, fs.mqueue.*, kernel.shm*, \
         kernel.msg*, kernel.sem and kernel.{{host,domain}}name"
    )]
    NotNamespaced { key: String },
    #[error("sysctl {key:?} belongs to the {} namespace, which is not pinned (--pin {})", .namespace.name(), .namespace.name())]
    NotPinned { key: String, namespace: Namespace },
    #[error("sysctl {key:?} is not a network sysctl")]
    NotNetwork { key: String },
    #[error("{text:?}: expected KEY=VALUE")]
    SysctlArg { text: String },
    #[error("{text:?}: expected CONTAINER:HOST:SIZE")]
    IdMap { text: String },
    #[error("{text:?}: expected CONTAINER:HOST:SIZE with a size above 0")]
    IdMapValues { text: String },
    #[error("--pin user needs --uid-map and --gid-map")]
    UserWithoutMaps,
    #[error("--uid-map/--gid-map need the user namespace pinned (--pin user)")]
    MapsWithoutUser,
    #[error("--hostname {0:?} needs the uts namespace pinned (--pin uts)")]
    HostnameWithoutUts(String),
    #[error("--hostname {0:?}: must be 1 to 64 bytes long")]
    HostnameLength(String),
}

/// Why the namespaces could not be made or configured. The message says which step, then the system's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("{what}: {error}")]
    Sys { what: String, error: nix::Error },
    /// What the pinning child reported (its own `Error`, as text over the socket).
    #[error("{0}")]
    Child(String),
    #[error("the pinning child died before it was ready")]
    ChildDied,
    #[error("the thread making the network namespace panicked")]
    ThreadPanicked,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |error| Error::Io { what, error }
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
    let what = what.into();
    move |error| Error::Sys { what, error }
}

/// Which pinned namespace a sysctl belongs to, or why it cannot be set for a pod.
pub fn sysctl_namespace(key: &str) -> Result<Namespace, Invalid> {
    if key.is_empty()
        || key.contains("..")
        || key.starts_with(['.', '/'])
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return Err(Invalid::SysctlName { key: key.into() });
    }
    // Kubernetes accepts '/' as the separator too (for names with dots in them, like VLAN interfaces); the
    // runtime's table is the one runc keeps.
    match basalt_runtime::spec::sysctl_namespace(key) {
        Some(LinuxNamespaceType::Network) => Ok(Namespace::Net),
        Some(LinuxNamespaceType::Ipc) => Ok(Namespace::Ipc),
        Some(LinuxNamespaceType::Uts) => Ok(Namespace::Uts),
        _ => Err(Invalid::NotNamespaced { key: key.into() }),
    }
}

/// `/proc/sys/...` for a sysctl key in either notation.
fn sysctl_path(key: &str) -> PathBuf {
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    Path::new("/proc/sys").join(rel)
}

/// What the pod's namespaces are set up with.
#[derive(Debug, Clone, Default)]
pub struct PinSpec {
    pub namespaces: Vec<Namespace>,
    pub hostname: Option<String>,
    pub sysctls: Vec<(String, String)>,
    /// The user namespace's uid and gid mappings (container id, host id, size), with `Namespace::User`.
    pub uid_map: Vec<IdMap>,
    pub gid_map: Vec<IdMap>,
}

/// One line of a uid_map or gid_map: container id, host id, size.
pub type IdMap = (u32, u32, u32);

/// Parses `CONTAINER:HOST:SIZE`.
pub fn parse_id_map(s: &str) -> Result<IdMap, Invalid> {
    let parts: Vec<&str> = s.split(':').collect();
    match parts[..] {
        [c, h, n] => match (c.parse(), h.parse(), n.parse::<u32>()) {
            (Ok(c), Ok(h), Ok(n)) if n > 0 => Ok((c, h, n)),
            _ => Err(Invalid::IdMapValues { text: s.into() }),
        },
        _ => Err(Invalid::IdMap { text: s.into() }),
    }
}

/// Parses `KEY=VALUE`.
pub fn parse_sysctl(s: &str) -> Result<(String, String), Invalid> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(Invalid::SysctlArg { text: s.into() }),
    }
}

fn id_map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|(c, h, n)| format!("{c} {h} {n}\n"))
        .collect()
}

impl PinSpec {
    /// Refuses, before anything is made, what the namespaces cannot take.
    pub fn validate(&self) -> Result<(), Invalid> {
        let user = self.namespaces.contains(&Namespace::User);
        if user && (self.uid_map.is_empty() || self.gid_map.is_empty()) {
            return Err(Invalid::UserWithoutMaps);
        }
        if !user && (!self.uid_map.is_empty() || !self.gid_map.is_empty()) {
            return Err(Invalid::MapsWithoutUser);
        }
        if let Some(h) = &self.hostname {
            if !self.namespaces.contains(&Namespace::Uts) {
                return Err(Invalid::HostnameWithoutUts(h.clone()));
            }
            if h.is_empty() || h.len() > 64 {
                return Err(Invalid::HostnameLength(h.clone()));
            }
        }
        for (key, _) in &self.sysctls {
            let namespace = sysctl_namespace(key)?;
            if !self.namespaces.contains(&namespace) {
                return Err(Invalid::NotPinned {
                    key: key.clone(),
                    namespace,
                });
            }
        }
        Ok(())
    }
}

/// Namespaces pinned under `<dir>/ns`; [`Pins::remove`] undoes everything.
#[derive(Debug)]
pub struct Pins {
    ns_dir: PathBuf,
    pub paths: Vec<(Namespace, PathBuf)>,
    /// The pid namespace's init, when one is pinned.
    holder: Option<Pid>,
}

/// The holder's pid, for [`cleanup`] when the monitor is gone.
pub const HOLDER_PID_FILE: &str = "holder.pid";

impl Pins {
    /// Clones the pinning child, configures its namespaces and bind-mounts them under `dir/ns`. Must be
    /// called single-threaded. On error nothing it made is left.
    pub fn create(dir: &Path, spec: &PinSpec) -> Result<Pins, Error> {
        let ns_dir = dir.join("ns");
        let mut pins = Pins {
            ns_dir: ns_dir.clone(),
            paths: Vec::new(),
            holder: None,
        };
        if spec.namespaces.is_empty() {
            return Ok(pins);
        }
        // `pins` drops (and undoes) itself on every early return below.
        std::fs::create_dir(&ns_dir).map_err(io(format!("creating {}", ns_dir.display())))?;
        let mut flags = CloneFlags::empty();
        for ns in &spec.namespaces {
            flags |= ns.flag();
        }
        let (mut ours, theirs) =
            UnixStream::pair().map_err(io("socketpair for the pinning child"))?;
        let keep_pid = spec.namespaces.contains(&Namespace::Pid);
        let mut stack = vec![0u8; 256 * 1024];
        let child_spec = spec.clone();
        let theirs_fd = theirs.as_raw_fd();
        // SAFETY: the monitor is single-threaded here; the child only configures its namespaces, talks
        // over the socket and exits (or pauses as the pid namespace's init); it never returns.
        let child = unsafe {
            nix::sched::clone(
                Box::new(move || pinning_child(&child_spec, theirs_fd, keep_pid)),
                &mut stack,
                flags,
                Some(libc::SIGCHLD),
            )
        }
        .map_err(sys(format!("cloning into new {flags:?} namespaces")))?;
        drop(theirs);
        let mut reap = ChildGuard(Some(child));
        if spec.namespaces.contains(&Namespace::User) {
            // A process cannot map itself: we write its maps, then tell it to go on.
            for (file, maps) in [("uid_map", &spec.uid_map), ("gid_map", &spec.gid_map)] {
                let p = format!("/proc/{child}/{file}");
                std::fs::write(&p, id_map_text(maps))
                    .map_err(io(format!("writing {p} ({maps:?})")))?;
            }
            ours.write_all(b"mapped\n")
                .map_err(io("telling the pinning child it is mapped"))?;
        }
        match read_line(&mut ours) {
            Some(l) if l == "ok" => {}
            Some(l) => {
                return Err(Error::Child(
                    l.strip_prefix("error: ").unwrap_or(&l).to_owned(),
                ))
            }
            None => return Err(Error::ChildDied),
        }
        for ns in &spec.namespaces {
            let target = ns_dir.join(ns.name());
            std::fs::write(&target, b"").map_err(io(format!("creating {}", target.display())))?;
            let source = format!("/proc/{child}/ns/{}", ns.name());
            mount(
                Some(source.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(sys(format!(
                "bind-mounting {source} onto {}",
                target.display()
            )))?;
            pins.paths.push((*ns, target));
        }
        if keep_pid {
            let file = ns_dir.join(HOLDER_PID_FILE);
            std::fs::write(&file, child.to_string())
                .map_err(io(format!("writing {}", file.display())))?;
            pins.holder = reap.0.take();
        }
        // EOF tells the child it is pinned: it exits, or stays as the pid namespace's init.
        drop(ours);
        drop(reap);
        Ok(pins)
    }

    pub fn holder(&self) -> Option<i32> {
        self.holder.map(Pid::as_raw)
    }

    /// Kills the pid namespace's init, unmounts every pin and removes `<dir>/ns`. Idempotent.
    pub fn remove(&mut self) {
        if let Some(pid) = self.holder.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        for (_, path) in self.paths.drain(..) {
            let _ = umount2(&path, MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.ns_dir);
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A new network namespace with `lo` up and `sysctls` (all `net.*`) set, bind-mounted onto the file `path`;
/// for a caller that wants the pod's network before its monitor runs (the agent, which starts CNI ADD while
/// the monitor starts). Made on a thread of its own, which exits after, so the caller's threads all stay in
/// their namespace. Blocking. On error nothing is left at `path`.
pub fn pin_network(path: &Path, sysctls: &[(String, String)]) -> Result<(), Error> {
    for (key, _) in sysctls {
        if sysctl_namespace(key)? != Namespace::Net {
            return Err(Invalid::NotNetwork { key: key.clone() }.into());
        }
    }
    let (path, sysctls) = (path.to_owned(), sysctls.to_vec());
    let made = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(sys("unshare(CLONE_NEWNET)"))?;
        configure(&PinSpec {
            namespaces: vec![Namespace::Net],
            sysctls,
            ..Default::default()
        })?;
        std::fs::write(&path, b"").map_err(io(format!("creating {}", path.display())))?;
        let pinned = mount(
            Some("/proc/thread-self/ns/net"),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        );
        pinned.map_err(|e| {
            let _ = std::fs::remove_file(&path);
            sys(format!(
                "bind-mounting the network namespace onto {}",
                path.display()
            ))(e)
        })
    })
    .join()
    .unwrap_or(Err(Error::ThreadPanicked));
    made
}

/// Undoes [`pin_network`]. Idempotent.
pub fn unpin_network(path: &Path) -> std::io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Kills and reaps the pinning child unless disarmed (by taking the pid).
struct ChildGuard(Option<Pid>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn read_line(s: &mut UnixStream) -> Option<String> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) if b[0] == b'\n' => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(1) => out.push(b[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            _ => return None,
        }
    }
}

/// In the cloned child, inside the new namespaces.
fn pinning_child(spec: &PinSpec, sock: RawFd, keep_pid: bool) -> isize {
    // SAFETY: the descriptor of our end of the socket pair, inherited from the parent and ours to own now.
    let mut sock = unsafe { <UnixStream as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    if spec.namespaces.contains(&Namespace::User)
        && read_line(&mut sock).as_deref() != Some("mapped")
    {
        // SAFETY: as below; the parent gave up.
        unsafe { libc::_exit(1) };
    }
    let msg = match configure(spec) {
        Ok(()) => "ok\n".to_owned(),
        Err(e) => format!("error: {}\n", e.to_string().replace('\n', " ")),
    };
    let _ = sock.write_all(msg.as_bytes());
    // Wait for the parent to bind-mount our namespaces (EOF), then leave or hold the pid namespace.
    let mut b = [0u8; 1];
    while matches!(sock.read(&mut b), Ok(1)) {}
    if !keep_pid || !msg.starts_with("ok") {
        // SAFETY: leaving the cloned child without running destructors that belong to the parent.
        unsafe { libc::_exit(0) };
    }
    drop(sock);
    // Nothing of the monitor's (its log, its socket) may be kept open by the holder.
    // SAFETY: close_range on descriptors this process no longer uses.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    loop {
        // As a pid namespace's init we get no signal we do not handle, except SIGKILL from outside.
        nix::unistd::pause();
    }
}

fn configure(spec: &PinSpec) -> Result<(), Error> {
    if spec.namespaces.contains(&Namespace::Net) {
        loopback_up().map_err(io("bringing up lo in the pod's network namespace"))?;
    }
    if let Some(h) = &spec.hostname {
        nix::unistd::sethostname(h).map_err(sys(format!("--hostname {h:?}: sethostname")))?;
    }
    // /proc/sys/net and the ipc/uts keys show the namespaces of whoever opens them: ours, now.
    for (key, value) in &spec.sysctls {
        let path = sysctl_path(key);
        std::fs::write(&path, value).map_err(io(format!(
            "sysctl {key}={value:?}: writing {}",
            path.display()
        )))?;
    }
    Ok(())
}

/// Sets `lo` up (a new network namespace has it down), as the CNI loopback plugin would.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket for interface ioctls, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is ours.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a valid ifreq naming lo.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Undoes the pins a monitor left under `dir/ns` when it died: kills the pid namespace holder and unmounts
/// every pinned namespace. Idempotent.
pub fn unpin(dir: &Path) -> std::io::Result<()> {
    let ns_dir = dir.join("ns");
    if let Ok(pid) = std::fs::read_to_string(ns_dir.join(HOLDER_PID_FILE)) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // Only if that pid still is the init of the pinned pid namespace (not a reused number).
            let ours = std::fs::metadata(ns_dir.join("pid")).map(|m| m.ino());
            let theirs = std::fs::metadata(format!("/proc/{pid}/ns/pid")).map(|m| m.ino());
            if let (Ok(a), Ok(b)) = (ours, theirs) {
                if a == b {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    for ns in Namespace::ALL {
        let p = ns_dir.join(ns.name());
        match umount2(&p, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "unmounting {}: {e}",
                    p.display()
                )))
            }
        }
    }
    match std::fs::remove_dir_all(&ns_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes what a monitor left when it died: its pins (see [`unpin`]) and its directory. Idempotent; a
/// missing `dir` is fine. The containers themselves are the runtime's (`Container::load(..).delete(true)`).
pub fn cleanup(dir: &Path) -> std::io::Result<()> {
    unpin(dir)?;
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Why `spec` is refused.
    fn refused(spec: PinSpec) -> String {
        spec.validate().unwrap_err().to_string()
    }

    #[test]
    fn sysctls_are_checked_against_the_pinned_namespaces() {
        let spec = |ns: &[Namespace], key: &str| PinSpec {
            namespaces: ns.to_vec(),
            hostname: None,
            sysctls: vec![(key.into(), "1".into())],
            ..PinSpec::default()
        };
        let all = [Namespace::Net, Namespace::Ipc, Namespace::Uts];
        for ok in [
            "net.ipv4.ip_unprivileged_port_start",
            "net/ipv4/conf/eth0.100/forwarding",
            "kernel.shm_rmid_forced",
            "fs.mqueue.msg_max",
            "kernel.domainname",
        ] {
            spec(&all, ok).validate().unwrap();
        }
        let e = refused(spec(&all, "kernel.pid_max"));
        assert!(e.contains("\"kernel.pid_max\" is not namespaced"), "{e}");
        let e = refused(spec(&[Namespace::Ipc], "net.core.somaxconn"));
        assert!(
            e.contains("net.core.somaxconn") && e.contains("--pin net"),
            "{e}"
        );
        let e = refused(spec(&all, "net/../../kernel/x"));
        assert!(e.contains("not a valid sysctl name"), "{e}");
        let e = refused(PinSpec {
            namespaces: vec![Namespace::Net],
            hostname: Some("pod".into()),
            sysctls: vec![],
            ..PinSpec::default()
        });
        assert!(e.contains("--pin uts"), "{e}");
    }

    #[test]
    fn errors_say_which_step_failed_in_one_line() {
        let e = Error::from(Invalid::UserWithoutMaps);
        assert_eq!(e.to_string(), "--pin user needs --uid-map and --gid-map");
        let eexist = || std::io::Error::from_raw_os_error(libc::EEXIST);
        let e = io("creating /run/p/ns")(eexist());
        assert_eq!(e.to_string(), format!("creating /run/p/ns: {}", eexist()));
        // The cause is in the message already: a caller printing the chain must not say it twice.
        assert!(std::error::Error::source(&e).is_none());
        let e = sys("unshare(CLONE_NEWNET)")(nix::Error::EPERM);
        assert_eq!(
            e.to_string(),
            format!("unshare(CLONE_NEWNET): {}", nix::Error::EPERM)
        );
        assert_eq!(
            Invalid::NotPinned {
                key: "kernel.shmmax".into(),
                namespace: Namespace::Ipc
            }
            .to_string(),
            "sysctl \"kernel.shmmax\" belongs to the ipc namespace, which is not pinned (--pin ipc)"
        );
        assert_eq!(
            parse_sysctl("net.core.somaxconn=1024"),
            Ok(("net.core.somaxconn".into(), "1024".into()))
        );
        assert_eq!(
            parse_sysctl("=1").unwrap_err().to_string(),
            "\"=1\": expected KEY=VALUE"
        );
        assert_eq!(
            parse_id_map("0:1").unwrap_err().to_string(),
            "\"0:1\": expected CONTAINER:HOST:SIZE"
        );
    }

    #[test]
    fn a_network_namespace_pinned_for_the_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("netns");
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let e = pin_network(&path, &[("kernel.shmmax".into(), "1".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("kernel.shmmax"), "{e}");
        assert!(!path.exists(), "a refused pin left {}", path.display());

        let sysctl = (
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "80".to_owned(),
        );
        pin_network(&path, std::slice::from_ref(&sysctl)).unwrap();
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").unwrap(),
            ours,
            "the caller's thread left its network namespace"
        );
        let inside = |cmd: &[&str]| {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={}", path.display()))
                .args(cmd)
                .output()
                .unwrap();
            assert!(out.status.success(), "{cmd:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_ne!(
            inside(&["readlink", "/proc/self/ns/net"]).trim(),
            ours.to_string_lossy()
        );
        assert!(inside(&["ip", "-o", "link", "show", "lo"]).contains(",UP"));
        assert_eq!(
            inside(&["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"]).trim(),
            "80"
        );
        unpin_network(&path).unwrap();
        unpin_network(&path).unwrap();
        assert!(!path.exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&path.display().to_string()), "{mounts}");
    }

    #[test]
    fn a_user_namespace_needs_both_maps() {
        assert_eq!(parse_id_map("0:1048576:65536"), Ok((0, 1_048_576, 65536)));
        for bad in ["0:1", "0:1:0", "a:1:2", "0:1:2:3"] {
            assert!(parse_id_map(bad).is_err(), "{bad}");
        }
        let user = |uid: Vec<IdMap>, gid: Vec<IdMap>| PinSpec {
            namespaces: vec![Namespace::User, Namespace::Net],
            uid_map: uid,
            gid_map: gid,
            ..PinSpec::default()
        };
        user(vec![(0, 1 << 20, 65536)], vec![(0, 1 << 20, 65536)])
            .validate()
            .unwrap();
        let e = refused(user(vec![(0, 1 << 20, 65536)], vec![]));
        assert!(e.contains("--gid-map"), "{e}");
        let e = refused(PinSpec {
            namespaces: vec![Namespace::Net],
            uid_map: vec![(0, 1, 1)],
            ..PinSpec::default()
        });
        assert!(e.contains("--pin user"), "{e}");
    }
}
