//! Who the container's first process runs as: `run_as_username` / `run_as_user` / `run_as_group`, else the
//! image's `User`, resolved against the image's own `/etc/passwd` and `/etc/group`, plus the supplemental groups
//! the `SupplementalGroupsPolicy` asks for.
//!
//! The databases are read through [`basalt_runtime::mounts::secure_join`], so a symlinked `/etc/passwd` in an
//! image can never make us read a file of the host.

use std::path::Path;

use basalt_proto::cri::{
    LinuxContainerSecurityContext, LinuxContainerUser, SupplementalGroupsPolicy,
};

use crate::error::{io_text, Error, Result};

/// The identity of the container's first process, as the CRI reports it in `ContainerStatus.user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveUser {
    pub uid: u32,
    pub gid: u32,
    /// All groups of the process, the primary `gid` first, as `id -G` prints them.
    pub supplemental_groups: Vec<u32>,
}

impl From<&EffectiveUser> for LinuxContainerUser {
    fn from(u: &EffectiveUser) -> Self {
        LinuxContainerUser {
            uid: u.uid.into(),
            gid: u.gid.into(),
            supplemental_groups: u.supplemental_groups.iter().map(|&g| g.into()).collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The image's user and group databases; a missing file is an empty database (scratch images have none).
struct Databases {
    passwd: Vec<PasswdEntry>,
    group: Vec<GroupEntry>,
}

impl Databases {
    fn read(rootfs: &Path) -> Result<Self> {
        let passwd = read_db(rootfs, "/etc/passwd")?
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if l.starts_with('#') || f.len() < 4 {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_owned(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                })
            })
            .collect();
        let group = read_db(rootfs, "/etc/group")?
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if l.starts_with('#') || f.len() < 3 {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0].to_owned(),
                    gid: f[2].parse().ok()?,
                    members: f
                        .get(3)
                        .map(|m| {
                            m.split(',')
                                .map(str::trim)
                                .filter(|s| !s.is_empty())
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default(),
                })
            })
            .collect();
        Ok(Databases { passwd, group })
    }

    fn user_by_name(&self, name: &str) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|e| e.name == name)
    }

    fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.passwd.iter().find(|e| e.uid == uid)
    }

    fn group_by_name(&self, name: &str) -> Option<&GroupEntry> {
        self.group.iter().find(|e| e.name == name)
    }
}

fn read_db(rootfs: &Path, path: &str) -> Result<String> {
    let file = basalt_runtime::mounts::secure_join(rootfs, Path::new(path));
    match std::fs::read(&file) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::precondition(format!(
            "reading the image's {path} ({}): {}",
            file.display(),
            io_text(&e)
        ))),
    }
}

fn id_from_cri(field: &str, v: i64) -> Result<u32> {
    // u32::MAX is (uid_t)-1, "no change" to the kernel: never a real id.
    u32::try_from(v)
        .ok()
        .filter(|&id| id != u32::MAX)
        .ok_or_else(|| Error::invalid(field, v, "not a valid id (0..4294967294)"))
}

/// Resolves the user of a container from its security context and the image config's `User`.
pub fn resolve(
    sc: &LinuxContainerSecurityContext,
    image_user: &str,
    rootfs: &Path,
) -> Result<EffectiveUser> {
    const SC: &str = "linux.security_context";
    let run_as_user = sc
        .run_as_user
        .as_ref()
        .map(|v| id_from_cri(&format!("{SC}.run_as_user"), v.value))
        .transpose()?;
    let run_as_group = sc
        .run_as_group
        .as_ref()
        .map(|v| id_from_cri(&format!("{SC}.run_as_group"), v.value))
        .transpose()?;
    let username = sc.run_as_username.as_str();
    if run_as_user.is_some() && !username.is_empty() {
        return Err(Error::invalid(
            format!("{SC}.run_as_username"),
            username,
            "only one of run_as_user and run_as_username may be set",
        ));
    }
    if let (Some(g), None, "") = (run_as_group, run_as_user, username) {
        return Err(Error::invalid(
            format!("{SC}.run_as_group"),
            g,
            "run_as_group needs run_as_user or run_as_username",
        ));
    }
    let policy =
        SupplementalGroupsPolicy::try_from(sc.supplemental_groups_policy).map_err(|_| {
            Error::invalid(
                format!("{SC}.supplemental_groups_policy"),
                sc.supplemental_groups_policy,
                "not Merge (0) or Strict (1)",
            )
        })?;
    let db = Databases::read(rootfs)?;

    // (uid, gid, user name in the image if it has one)
    let (uid, mut gid, name) = if let Some(uid) = run_as_user {
        match db.user_by_uid(uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone())),
            None => (uid, 0, None),
        }
    } else if !username.is_empty() {
        let e = db.user_by_name(username).ok_or_else(|| {
            Error::invalid(
                format!("{SC}.run_as_username"),
                username,
                "no such user in the image's /etc/passwd",
            )
        })?;
        (e.uid, e.gid, Some(e.name.clone()))
    } else {
        from_image_user(image_user, &db)?
    };
    if let Some(g) = run_as_group {
        gid = g;
    }

    let mut groups = vec![gid];
    if policy == SupplementalGroupsPolicy::Merge {
        if let Some(name) = &name {
            groups.extend(
                db.group
                    .iter()
                    .filter(|g| g.members.iter().any(|m| m == name))
                    .map(|g| g.gid),
            );
        }
    }
    for (i, &g) in sc.supplemental_groups.iter().enumerate() {
        groups.push(id_from_cri(&format!("{SC}.supplemental_groups[{i}]"), g)?);
    }
    let mut seen = std::collections::HashSet::new();
    groups.retain(|g| seen.insert(*g));
    Ok(EffectiveUser {
        uid,
        gid,
        supplemental_groups: groups,
    })
}

/// The image config's `User`: "", "name", "uid", "name:group", "uid:gid" and the mixed forms.
fn from_image_user(user: &str, db: &Databases) -> Result<(u32, u32, Option<String>)> {
    const FIELD: &str = "image config User";
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, mut gid, name) = if u.is_empty() {
        // Docker's default: root, whatever the image's passwd says.
        (0, 0, db.user_by_uid(0).map(|e| e.name.clone()))
    } else if let Ok(uid) = u.parse::<u32>() {
        match db.user_by_uid(uid) {
            Some(e) => (uid, e.gid, Some(e.name.clone())),
            None => (uid, 0, None),
        }
    } else {
        let e = db.user_by_name(u).ok_or_else(|| {
            Error::invalid(
                FIELD,
                user,
                format!("no user {u:?} in the image's /etc/passwd"),
            )
        })?;
        (e.uid, e.gid, Some(e.name.clone()))
    };
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                db.group_by_name(g)
                    .ok_or_else(|| {
                        Error::invalid(
                            FIELD,
                            user,
                            format!("no group {g:?} in the image's /etc/group"),
                        )
                    })?
                    .gid
            }
        };
    }
    Ok((uid, gid, name))
}
