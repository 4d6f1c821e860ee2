//! Which namespaces the init process is cloned into, which existing ones it joins, and the id mappings of a
//! new user namespace (written by the parent, since a process cannot map itself).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The namespace plan of one container.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Namespaces created by clone(2).
    pub clone_flags: CloneFlags,
    /// Existing namespaces to join, in the order they must be joined (user first).
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
}

impl Plan {
    pub fn from_spec(spec: &Spec) -> Plan {
        let mut plan = Plan {
            clone_flags: CloneFlags::empty(),
            join: Vec::new(),
            uid_mappings: Vec::new(),
            gid_mappings: Vec::new(),
        };
        let Some(linux) = spec.linux() else {
            return plan;
        };
        for ns in linux.namespaces().iter().flatten() {
            match ns.path() {
                Some(p) => plan.join.push((ns.typ(), p.clone())),
                None => plan.clone_flags |= flag(ns.typ()),
            }
        }
        // Joining a user namespace first gives the capabilities needed to join the others.
        plan.join
            .sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
        plan.uid_mappings = linux.uid_mappings().clone().unwrap_or_default();
        plan.gid_mappings = linux.gid_mappings().clone().unwrap_or_default();
        plan
    }

    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.clone_flags.contains(flag(t)) || self.join.iter().any(|(j, _)| *j == t)
    }

    pub fn new_userns(&self) -> bool {
        self.clone_flags.contains(CloneFlags::CLONE_NEWUSER)
    }

    /// The existing user namespace to join, if any. The namespaces we create must be entered from inside
    /// it, or they would belong to our own user namespace and its root could not mount in them.
    pub fn joined_userns(&self) -> Option<&Path> {
        self.join
            .iter()
            .find(|(t, _)| *t == LinuxNamespaceType::User)
            .map(|(_, p)| p.as_path())
    }

    /// Sets up, in the parent, the namespaces that apply only to a process's children (PID and time): joins
    /// the listed ones, or unshares a new time namespace and writes its offsets. Returns a guard that puts
    /// the parent's children back into its own namespaces once the init has been cloned, so a library
    /// caller (the pod monitor) is left as it was.
    pub fn enter_for_children(&self, offsets: &[(String, i64, u32)]) -> Result<ChildrenGuard> {
        let mut guard = ChildrenGuard {
            restore: Vec::new(),
        };
        for (t, p) in &self.join {
            if matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
                guard.save(*t)?;
                join(*t, p)?;
            }
        }
        if self.clone_flags.contains(flag(LinuxNamespaceType::Time)) {
            guard.save(LinuxNamespaceType::Time)?;
            nix::sched::unshare(flag(LinuxNamespaceType::Time))
                .map_err(Error::sys("unshare time namespace"))?;
            let text: String = offsets
                .iter()
                .map(|(clock, secs, nanos)| format!("{clock} {secs} {nanos}\n"))
                .collect();
            if !text.is_empty() {
                std::fs::write("/proc/self/timens_offsets", text)
                    .map_err(|e| Error::spec("linux.timeOffsets", e.to_string()))?;
            }
        } else if !offsets.is_empty() {
            return Err(Error::spec(
                "linux.timeOffsets",
                "given without a new time namespace",
            ));
        }
        Ok(guard)
    }

    /// The flags for clone(2): time and cgroup namespaces are not created by clone itself (time cannot be,
    /// and the cgroup one is unshared by the init once it sits in its cgroup).
    pub fn flags_for_clone(&self) -> CloneFlags {
        self.clone_flags - flag(LinuxNamespaceType::Time) - CloneFlags::CLONE_NEWCGROUP
    }

    /// Opens, in the parent, the namespaces the init joins itself (all but user, PID and time): once in a
    /// joined user namespace it may no longer be allowed to reach their files.
    pub fn open_for_child(&self) -> Result<Vec<(LinuxNamespaceType, std::fs::File)>> {
        self.join
            .iter()
            .filter(|(t, _)| {
                !matches!(
                    t,
                    LinuxNamespaceType::User | LinuxNamespaceType::Pid | LinuxNamespaceType::Time
                )
            })
            .map(|(t, p)| Ok((*t, std::fs::File::open(p).map_err(Error::io(p))?)))
            .collect()
    }

    /// Writes /proc/<pid>/{uid,gid}_map for a child in a new user namespace.
    pub fn write_id_maps(&self, pid: i32) -> Result<()> {
        let fmt = |maps: &[LinuxIdMapping]| {
            maps.iter()
                .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
                .collect::<String>()
        };
        for (file, maps) in [
            ("uid_map", &self.uid_mappings),
            ("gid_map", &self.gid_mappings),
        ] {
            let p = format!("/proc/{pid}/{file}");
            std::fs::write(&p, fmt(maps)).map_err(Error::io(p))?;
        }
        Ok(())
    }
}

/// Restores the "for children" PID and time namespaces of the calling process on drop.
pub struct ChildrenGuard {
    restore: Vec<(LinuxNamespaceType, std::fs::File)>,
}

impl ChildrenGuard {
    fn save(&mut self, t: LinuxNamespaceType) -> Result<()> {
        let name = if t == LinuxNamespaceType::Pid {
            "pid"
        } else {
            "time"
        };
        let p = format!("/proc/self/ns/{name}");
        let f = std::fs::File::open(&p).map_err(Error::io(p))?;
        self.restore.push((t, f));
        Ok(())
    }
}

impl Drop for ChildrenGuard {
    fn drop(&mut self) {
        for (t, f) in self.restore.drain(..).rev() {
            let _ = setns(f.as_fd(), flag(t));
        }
    }
}

/// Joins the namespaces opened by [`Plan::open_for_child`]; called in the child.
pub fn join_in_child(opened: &[(LinuxNamespaceType, std::os::fd::RawFd)]) -> Result<()> {
    for (t, fd) in opened {
        // SAFETY: the parent keeps the descriptor open until the init is ready.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        setns(fd, flag(*t)).map_err(|e| Error::Sys {
            what: format!("joining the {t} namespace"),
            source: e,
        })?;
    }
    Ok(())
}

fn join(t: LinuxNamespaceType, path: &PathBuf) -> Result<()> {
    let f = std::fs::File::open(path).map_err(Error::io(path))?;
    setns(f.as_fd(), flag(t)).map_err(|e| Error::Sys {
        what: format!("joining the {t} namespace at {}", path.display()),
        source: e,
    })
}
