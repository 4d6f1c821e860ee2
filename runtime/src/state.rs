//! What survives between CLI calls: `<root>/<id>/state.json` in runc's format, plus the exec FIFO that holds a
//! created container until `start`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The fields `runc state` prints, in its names, plus what we need to find the container again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, as runc writes it.
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    /// The init process's start time (clock ticks since boot): tells our pid from a recycled one.
    #[serde(rename = "basalt.init_start_time", default)]
    pub init_start_time: u64,
    /// The cgroup path given to the cgroup manager.
    #[serde(rename = "basalt.cgroup_path", default)]
    pub cgroup_path: String,
    /// The spec's hooks, kept so that `start` and `delete` need not parse config.json again.
    #[serde(
        rename = "basalt.hooks",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The container has no mount namespace of its own: its mounts are in the caller's, under the rootfs,
    /// and `delete` unmounts them.
    #[serde(
        rename = "basalt.mounts_in_caller_ns",
        default,
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub mounts_in_caller_ns: bool,
}

impl State {
    /// The state document a hook reads on stdin, with `status` as the hook sees it.
    pub fn for_hook(&self, status: &str) -> serde_json::Value {
        serde_json::json!({"ociVersion": self.oci_version, "id": self.id, "status": status, "pid": self.pid,
            "bundle": self.bundle, "annotations": self.annotations})
    }
}

/// A container's state directory under the runtime root.
pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    pub fn validate_id(id: &str) -> Result<()> {
        let ok = !id.is_empty()
            && id.len() <= 1024
            && !id.starts_with('.')
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'+'));
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidId(id.to_owned()))
        }
    }

    /// Reserves the directory for a new container; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        Self::validate_id(id)?;
        std::fs::create_dir_all(root).map_err(Error::io(root))?;
        let path = root.join(id);
        match std::fs::create_dir(&path) {
            Ok(()) => Ok(StateDir { path }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_owned()))
            }
            Err(e) => Err(Error::io(&path)(e)),
        }
    }

    pub fn open(root: &Path, id: &str) -> Result<StateDir> {
        Self::validate_id(id)?;
        let path = root.join(id);
        if path.join(STATE_FILE).exists() {
            Ok(StateDir { path })
        } else {
            Err(Error::NotFound(id.to_owned()))
        }
    }

    pub fn fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    pub fn read(&self) -> Result<State> {
        let p = self.path.join(STATE_FILE);
        let bytes = std::fs::read(&p).map_err(Error::io(&p))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::io(&p)(e.into()))
    }

    /// Writes state.json atomically: a crash leaves the old or the new file, never half of one.
    pub fn write(&self, state: &State) -> Result<()> {
        let tmp = self.path.join(".state.json.tmp");
        let bytes = serde_json::to_vec(state).map_err(|e| Error::io(&tmp)(e.into()))?;
        std::fs::write(&tmp, bytes).map_err(Error::io(&tmp))?;
        let p = self.path.join(STATE_FILE);
        std::fs::rename(&tmp, &p).map_err(Error::io(&p))
    }

    pub fn remove(self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path)(e)),
        }
    }
}

/// The start time of `pid` (field 22 of /proc/pid/stat), and whether it is a zombie.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = fields.first() == Some(&"Z") || fields.first() == Some(&"X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// Is the container's init still the process we started?
pub fn init_alive(state: &State) -> bool {
    match proc_start_time(state.pid) {
        Some((start, zombie)) => {
            !zombie && (state.init_start_time == 0 || start == state.init_start_time)
        }
        None => false,
    }
}

pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(20_513), (2026, 3, 1));
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-1_2.3", "0123456789abcdef"] {
            StateDir::validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", ".hidden", "a b"] {
            assert!(StateDir::validate_id(bad).is_err(), "{bad}");
        }
    }
}
