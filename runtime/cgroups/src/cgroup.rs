//! A cgroup through cgroups-rs: v2 unified where the host has it, v1 on v1 and hybrid hosts (like the
//! development VM). Paths in systemd's `slice:prefix:name` form are mapped onto cgroupfs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cgroups_rs::manager::{FsManager, Manager};
use cgroups_rs::{CgroupPid, FreezerState};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};

use crate::device_filter;
use crate::device_rules::{self, Policy};
use crate::error::{Error, Result};

/// How long [`Cgroup::freeze`] waits for the kernel: freezing a few processes takes milliseconds.
pub const FREEZE_PATIENCE: Duration = Duration::from_secs(5);

/// A freezer's state as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Freezer {
    Frozen,
    Thawed,
    /// FREEZING on v1: on its way.
    Changing,
    /// Not readable (no freezer where we look).
    Unknown,
}

pub struct Cgroup {
    path: String,
    mgr: FsManager,
}

/// Is `/sys/fs/cgroup` itself a cgroup2 mount (a pure v2 host)?
pub fn unified() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The cgroupfs path for a container: `linux.cgroupsPath` as given, a systemd `slice:prefix:name` mapped to
/// `/<slices…>/<prefix>-<name>.scope`, or `/basalt/<id>` when the spec names none.
pub fn resolve_path(spec_path: Option<&str>, id: &str, systemd: bool) -> Result<String> {
    match spec_path {
        None | Some("") => Ok(format!("/basalt/{id}")),
        Some(p) if systemd || (p.matches(':').count() == 2 && !p.starts_with('/')) => {
            let parts: Vec<&str> = p.split(':').collect();
            let [slice, prefix, name] = parts[..] else {
                return Err(Error::spec(
                    "linux.cgroupsPath",
                    format!("{p:?} is not slice:prefix:name (as --systemd-cgroup expects)"),
                ));
            };
            let slice = if slice.is_empty() {
                "system.slice"
            } else {
                slice
            };
            let mut path = expand_slice(slice)
                .map_err(|m| Error::spec("linux.cgroupsPath", format!("{p:?}: {m}")))?;
            path.push('/');
            path.push_str(&if prefix.is_empty() {
                format!("{name}.scope")
            } else {
                format!("{prefix}-{name}.scope")
            });
            Ok(path)
        }
        Some(p) if p.starts_with('/') => Ok(p.to_owned()),
        // runc treats a relative path as relative to the root of each hierarchy too.
        Some(p) => Ok(format!("/{p}")),
    }
}

/// The resources with the device rules a v1 devices controller gets: the spec's rules and then runc's
/// defaults, each spelled out (`-1` for a wildcard number, `rwm` for a missing access) because cgroups-rs
/// would write a missing number as 0. On cgroup v2 the rules are left out: [`device_filter`] enforces them.
fn for_cgroupfs(resources: Option<&LinuxResources>) -> Result<(LinuxResources, Option<Policy>)> {
    let mut r = resources.cloned().unwrap_or_default();
    let rules = r.devices().clone().unwrap_or_default();
    if unified() {
        let policy = Policy::for_container(&rules, DEVICES_FIELD)?;
        r.set_devices(None);
        return Ok((r, Some(policy)));
    }
    let mut checked = device_rules::check_all(&rules, DEVICES_FIELD)?;
    checked.extend(device_rules::default_rules());
    r.set_devices(Some(checked.iter().map(v1_rule).collect()));
    Ok((r, None))
}

/// The JSON path device rule errors name.
const DEVICES_FIELD: &str = "linux.resources.devices";

fn v1_rule(r: &device_rules::Rule) -> LinuxDeviceCgroup {
    let num = |n: Option<u32>| Some(n.map_or(-1, i64::from));
    let (typ, major, minor) = match r.target {
        None => (LinuxDeviceType::A, Some(-1), Some(-1)),
        Some(m) => (
            match m.kind {
                device_rules::Kind::Block => LinuxDeviceType::B,
                device_rules::Kind::Char => LinuxDeviceType::C,
            },
            num(m.major),
            num(m.minor),
        ),
    };
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(r.allow);
    d.set_typ(Some(typ));
    d.set_major(major);
    d.set_minor(minor);
    d.set_access(Some(r.access.to_string()));
    d
}

/// Checks `linux.resources.devices` before anything is created, so a bad rule leaves nothing behind.
pub fn check_device_rules(resources: Option<&LinuxResources>) -> Result<()> {
    let rules = resources
        .and_then(|r| r.devices().clone())
        .unwrap_or_default();
    if unified() {
        Policy::for_container(&rules, DEVICES_FIELD).map(drop)
    } else {
        // The v1 devices controller takes any rule list in order; only the v2 filter needs the whole policy to
        // be expressible, so v1 hosts keep accepting what their kernel accepts.
        device_rules::check_all(&rules, DEVICES_FIELD).map(drop)
    }
}

/// `a-b-c.slice` → `/a.slice/a-b.slice/a-b-c.slice`, as systemd nests slices.
fn expand_slice(slice: &str) -> std::result::Result<String, &'static str> {
    let stem = slice
        .strip_suffix(".slice")
        .ok_or("a slice must end in .slice")?;
    if stem == "-" {
        return Ok(String::new());
    }
    if stem.contains('/') || stem.starts_with('-') || stem.ends_with('-') || stem.contains("--") {
        return Err("invalid slice name");
    }
    let mut out = String::new();
    let mut prefix = String::new();
    for part in stem.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        out.push('/');
        out.push_str(&prefix);
        out.push_str(".slice");
    }
    Ok(out)
}

fn err(path: &str) -> impl Fn(cgroups_rs::manager::Error) -> Error + '_ {
    move |e| Error::Cgroup {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

impl Cgroup {
    /// Prepares the manager; nothing is created until [`Cgroup::apply`].
    pub fn new(path: &str) -> Result<Cgroup> {
        // cgroups-rs joins the path onto each mount point: it must be relative, or it would escape cgroupfs.
        let mgr = FsManager::new(path.trim_start_matches('/')).map_err(err(path))?;
        Ok(Cgroup {
            path: path.to_owned(),
            mgr,
        })
    }

    /// Like [`Cgroup::new`] for a cgroup that is about to be created. On cgroup v2 the directories are made
    /// first, with every available controller enabled down the path: cgroups-rs reads a v2 cgroup's
    /// controllers from its own directory when it loads it, so it must exist by then.
    pub fn create(path: &str) -> Result<Cgroup> {
        if unified() {
            let root = PathBuf::from("/sys/fs/cgroup");
            let mut dir = root.clone();
            for part in path
                .trim_start_matches('/')
                .split('/')
                .filter(|p| !p.is_empty())
            {
                let controllers =
                    std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
                let enabled =
                    std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
                let enabled: Vec<&str> = enabled.split_whitespace().collect();
                // Only what is missing: enabling a controller is real kernel work, and after the first
                // container every parent has them all.
                for c in controllers
                    .split_whitespace()
                    .filter(|c| !enabled.contains(c))
                {
                    // A controller the parent cannot delegate (e.g. with processes in it) is simply not enabled.
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
                dir.push(part);
                match std::fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        return Err(Error::Cgroup {
                            path: path.to_owned(),
                            message: format!("creating {}: {e}", dir.display()),
                        })
                    }
                }
            }
        }
        Self::new(path)
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Creates the cgroup, moves `pid` in and applies the resource limits. The device rules always end
    /// with the devices every container gets (as runc's defaults), so a deny-all spec still has /dev/null.
    pub fn apply(&mut self, pid: i32, resources: Option<&LinuxResources>) -> Result<()> {
        self.mgr
            .add_proc(CgroupPid::from(pid as u64))
            .map_err(err(&self.path))?;
        self.set_all(resources)
    }

    /// Moves `pid` in (creating the cgroup if need be), with no limits and no device rules: for an `exec`'d
    /// process joining its container, and for helpers that need what their host process has.
    pub fn add_process(&mut self, pid: i32) -> Result<()> {
        self.mgr
            .add_proc(CgroupPid::from(pid as u64))
            .map_err(err(&self.path))
    }

    /// Like [`Cgroup::apply`] for an init that was born in the cgroup (clone3 `CLONE_INTO_CGROUP`).
    pub fn set_resources(&mut self, resources: Option<&LinuxResources>) -> Result<()> {
        self.set_all(resources)
    }

    /// Applies limits and device rules; on v2 the device filter is (re)installed, replacing an earlier one.
    /// The filter goes first: the verifier can refuse it, and a refused `update` must leave the limits as
    /// they were.
    fn set_all(&mut self, resources: Option<&LinuxResources>) -> Result<()> {
        let (r, policy) = for_cgroupfs(resources)?;
        if let Some(policy) = policy {
            let dir = self.v2_dir();
            device_filter::install(&dir, &policy).map_err(|e| Error::Cgroup {
                path: self.path.clone(),
                message: format!(
                    "installing the eBPF device filter on {}: {e}",
                    dir.display()
                ),
            })?;
        }
        self.mgr.set(&r).map_err(err(&self.path))?;
        Ok(())
    }

    /// The cgroup's directory on a unified host.
    pub fn v2_dir(&self) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup").join(self.path.trim_start_matches('/'))
    }

    /// Usage in the shape of runc's `events --stats` (`data` of a `stats` event).
    pub fn stats_json(&self) -> serde_json::Value {
        let st = self.mgr.stats();
        let cpu = st.cpu.cpu_acct.unwrap_or_default();
        let thr = st.cpu.cpu_throttling.unwrap_or_default();
        let mem = |m: Option<cgroups_rs::stats::MemoryStats>| {
            let m = m.unwrap_or_default();
            serde_json::json!({"usage": m.usage, "max": m.max_usage, "limit": m.limit, "failcnt": m.fail_cnt})
        };
        serde_json::json!({
            "cpu": {
                "usage": {"total": cpu.total_usage, "percpu": cpu.usage_percpu, "kernel": cpu.system_usage,
                          "user": cpu.user_usage},
                "throttling": {"periods": thr.periods, "throttledPeriods": thr.throttled_periods,
                               "throttledTime": thr.throttled_time}
            },
            "memory": {
                "usage": mem(st.memory.memory),
                "swap": mem(st.memory.memory_swap),
                "kernel": mem(st.memory.kernel_memory),
                "cache": st.memory.cache,
                "oom_kill": self.oom_kills(),
            },
            "pids": {"current": st.pids.current, "limit": st.pids.limit}
        })
    }

    /// How many processes the kernel's OOM killer has killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let rel = self.path.trim_start_matches('/');
        let (file, key) = if unified() {
            (
                PathBuf::from("/sys/fs/cgroup")
                    .join(rel)
                    .join("memory.events"),
                "oom_kill",
            )
        } else {
            (
                PathBuf::from("/sys/fs/cgroup/memory")
                    .join(rel)
                    .join("memory.oom_control"),
                "oom_kill",
            )
        };
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `update`: new limits; device rules, when given, replace the old ones (with the defaults added again).
    pub fn set(&mut self, resources: &LinuxResources) -> Result<()> {
        if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return self.set_all(Some(resources));
        }
        let mut r = resources.clone();
        r.set_devices(None);
        self.mgr.set(&r).map_err(err(&self.path))
    }

    pub fn exists(&self) -> bool {
        self.mgr.exists()
    }

    pub fn pids(&self) -> Vec<i32> {
        self.mgr
            .pids()
            .map(|v| v.into_iter().map(|p| p.pid as i32).collect())
            .unwrap_or_default()
    }

    /// Freezes or thaws the cgroup's processes and returns once the kernel reports it done, as runc does:
    /// freezing is asynchronous (a v1 freezer reads FREEZING meanwhile), and a `pause` that returned early
    /// would leave `state` saying "running". Gives up after [`FREEZE_PATIENCE`]; a state it cannot read is
    /// not waited for.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        self.mgr.freeze(state).map_err(err(&self.path))?;
        let deadline = Instant::now() + FREEZE_PATIENCE;
        loop {
            match self.freezer() {
                Freezer::Frozen if frozen => return Ok(()),
                Freezer::Thawed if !frozen => return Ok(()),
                Freezer::Unknown => return Ok(()),
                _ if Instant::now() >= deadline => {
                    let want = if frozen { "frozen" } else { "thawed" };
                    return Err(Error::cgroup(
                        &self.path,
                        format!("not {want} after {FREEZE_PATIENCE:?}"),
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }

    /// What the kernel says of the cgroup's freezer.
    fn freezer(&self) -> Freezer {
        let rel = self.path.trim_start_matches('/');
        if unified() {
            let events = std::fs::read_to_string(
                PathBuf::from("/sys/fs/cgroup")
                    .join(rel)
                    .join("cgroup.events"),
            );
            match events
                .ok()
                .as_deref()
                .and_then(|e| e.lines().find_map(|l| l.strip_prefix("frozen ")))
            {
                Some("1") => Freezer::Frozen,
                Some("0") => Freezer::Thawed,
                _ => Freezer::Unknown,
            }
        } else {
            let state = std::fs::read_to_string(
                PathBuf::from("/sys/fs/cgroup/freezer")
                    .join(rel)
                    .join("freezer.state"),
            );
            match state.as_deref().map(str::trim) {
                Ok("FROZEN") => Freezer::Frozen,
                Ok("THAWED") => Freezer::Thawed,
                Ok(_) => Freezer::Changing,
                Err(_) => Freezer::Unknown,
            }
        }
    }

    /// Removes the cgroup (every hierarchy). Missing is fine: delete is idempotent.
    pub fn destroy(&mut self) -> Result<()> {
        self.mgr.destroy().map_err(err(&self.path))
    }

    /// For a v1 host: each mounted hierarchy's name and the host directory of this cgroup in it, which the
    /// container's /sys/fs/cgroup shows.
    pub fn v1_dirs(&self) -> Vec<(String, PathBuf)> {
        if unified() {
            return Vec::new();
        }
        // Co-mounted controllers (cpu,cpuacct) share one mount point: bind each mount point once.
        let mut mountpoints: Vec<&String> = self.mgr.mounts().values().collect();
        mountpoints.sort();
        mountpoints.dedup();
        mountpoints
            .into_iter()
            .filter_map(|mp| {
                let dir = PathBuf::from(mp);
                let name = dir.file_name()?.to_string_lossy().into_owned();
                Some((name, dir.join(self.path.trim_start_matches('/'))))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_map_to_cgroupfs() {
        assert_eq!(
            resolve_path(Some("system.slice:docker:abc"), "abc", true).unwrap(),
            "/system.slice/docker-abc.scope"
        );
        assert_eq!(
            resolve_path(Some("kubepods-besteffort-pod1.slice:cri-basalt:c1"), "c1", true).unwrap(),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-basalt-c1.scope"
        );
        assert_eq!(resolve_path(None, "c1", false).unwrap(), "/basalt/c1");
        assert_eq!(resolve_path(Some("/a/b"), "c1", false).unwrap(), "/a/b");
        let e = resolve_path(Some("bad:x"), "c1", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux.cgroupsPath") && e.contains("bad:x"),
            "{e}"
        );
    }
}
