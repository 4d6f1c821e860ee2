//! User namespaces for `hostUsers: false` pods. Each such pod gets 65536 host ids of its own, mapped to its
//! ids 0–65535, as upstream kubelet's user-namespace manager hands them out: no two pods share a host id, so a
//! process escaping one pod is nobody in another, nor on the node.
//!
//! The allocation is kept in `<pod dir>/userns` (upstream's file name and JSON) before the sandbox is asked
//! for, so a kubelet killed at any point finds on restart every range a running pod uses, and a restarted
//! pod keeps its range (its volumes' files keep their owners).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use basalt_proto::cri;
use serde::{Deserialize, Serialize};

/// Host ids per pod: a whole 16-bit id space, what images and `runAsUser` values expect.
pub const IDS_PER_POD: u32 = 65536;
const FILE: &str = "userns";

/// Why a range or a pod's allocation is refused or unreadable; each names the file or the numbers.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "user namespace range {first}+{length}: must start above 0 at a multiple of {IDS_PER_POD}, \
         hold whole blocks of {IDS_PER_POD} and end below 2^32 - 1"
    )]
    Range { first: u32, length: u32 },
    /// A subordinate-id file's `kubelet` line is not `kubelet:<first id>:<count>`.
    #[error("{}: {line:?} is not kubelet:<first id>:<count>", .path.display())]
    SubidLine { path: PathBuf, line: String },
    /// The range in a subordinate-id file is not one the kubelet can use.
    #[error("{}: {error}", .path.display())]
    SubidRange {
        path: PathBuf,
        error: Box<UsernsError>,
    },
    #[error("the kubelet user's ranges differ: {} {uid:?}, {} {gid:?}", .subuid.display(), .subgid.display())]
    RangesDiffer {
        subuid: PathBuf,
        uid: Option<(u32, u32)>,
        subgid: PathBuf,
        gid: Option<(u32, u32)>,
    },
    #[error("spec.hostUsers false: all {blocks} user namespace ranges are in use")]
    Exhausted { blocks: u32 },
    #[error("{}: {error}", .path.display())]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", .path.display())]
    Record {
        path: PathBuf,
        error: serde_json::Error,
    },
    #[error("{}: not one block of {IDS_PER_POD} ids", .0.display())]
    NotOneBlock(PathBuf),
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> UsernsError + '_ {
    move |error| UsernsError::File {
        path: path.to_owned(),
        error,
    }
}

/// The host ids the kubelet hands out, whole blocks of [`IDS_PER_POD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    first: u32,
    blocks: u32,
}

impl Default for Range {
    /// Upstream's default: from 65536 (the node's own users stay below), up to the last whole block below
    /// 2^32 - 1, which is `(uid_t)-1` and no id.
    fn default() -> Self {
        Range {
            first: IDS_PER_POD,
            blocks: u32::MAX / IDS_PER_POD - 1,
        }
    }
}

impl Range {
    /// `first` must start a block and the range must hold at least one, below 2^32 - 1.
    pub fn new(first: u32, length: u32) -> Result<Range, UsernsError> {
        let blocks = length / IDS_PER_POD;
        let fits =
            u64::from(first) + u64::from(blocks) * u64::from(IDS_PER_POD) <= u64::from(u32::MAX);
        if first == 0
            || !first.is_multiple_of(IDS_PER_POD)
            || !length.is_multiple_of(IDS_PER_POD)
            || blocks == 0
            || !fits
        {
            return Err(UsernsError::Range { first, length });
        }
        Ok(Range { first, blocks })
    }

    /// Upstream's configuration: the `kubelet` user's entries in `/etc/subuid` and `/etc/subgid`, which must
    /// be the same range; None when there are none (the default range applies).
    pub fn from_subid_files(subuid: &Path, subgid: &Path) -> Result<Option<Range>, UsernsError> {
        let entry = |file: &Path| -> Result<Option<(u32, u32)>, UsernsError> {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(file_error(file)(e)),
            };
            let Some(line) = text
                .lines()
                .find(|l| l.split(':').next() == Some("kubelet"))
            else {
                return Ok(None);
            };
            let bad = || UsernsError::SubidLine {
                path: file.to_owned(),
                line: line.to_owned(),
            };
            match line.split(':').collect::<Vec<_>>()[..] {
                [_, first, count] => Ok(Some((
                    first.trim().parse().map_err(|_| bad())?,
                    count.trim().parse().map_err(|_| bad())?,
                ))),
                _ => Err(bad()),
            }
        };
        match (entry(subuid)?, entry(subgid)?) {
            (None, None) => Ok(None),
            (Some(u), Some(g)) if u == g => {
                Range::new(u.0, u.1)
                    .map(Some)
                    .map_err(|e| UsernsError::SubidRange {
                        path: subuid.to_owned(),
                        error: Box::new(e),
                    })
            }
            (uid, gid) => Err(UsernsError::RangesDiffer {
                subuid: subuid.to_owned(),
                uid,
                subgid: subgid.to_owned(),
                gid,
            }),
        }
    }

    fn base(&self, block: u32) -> u32 {
        self.first + block * IDS_PER_POD
    }

    fn block_of(&self, base: u32) -> Option<u32> {
        let off = base.checked_sub(self.first)?;
        (off.is_multiple_of(IDS_PER_POD) && off / IDS_PER_POD < self.blocks)
            .then_some(off / IDS_PER_POD)
    }
}

/// One line of a uid or gid map, as upstream's `userns` file writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Mapping {
    container_id: u32,
    host_id: u32,
    length: u32,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    uid_mappings: Vec<Mapping>,
    gid_mappings: Vec<Mapping>,
}

impl Record {
    fn of(base: u32) -> Record {
        let m = vec![Mapping {
            container_id: 0,
            host_id: base,
            length: IDS_PER_POD,
        }];
        Record {
            uid_mappings: m.clone(),
            gid_mappings: m,
        }
    }

    /// The base of a record this kubelet could have written: one block, the same for uids and gids.
    fn base(&self) -> Option<u32> {
        match (&self.uid_mappings[..], &self.gid_mappings[..]) {
            ([u], [g]) if u == g && u.container_id == 0 && u.length == IDS_PER_POD => {
                Some(u.host_id)
            }
            _ => None,
        }
    }
}

/// The ranges in use, by block, with the pod UID holding each.
pub struct Allocator {
    range: Range,
    pods_root: PathBuf,
    used: Mutex<BTreeMap<u32, String>>,
}

impl Allocator {
    /// Starts from the allocations kept in the pod directories under `pods_root`.
    pub fn load(range: Range, pods_root: &Path) -> Allocator {
        let mut used = BTreeMap::new();
        for e in std::fs::read_dir(pods_root).into_iter().flatten().flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            match read(&e.path()) {
                Ok(Some(base)) => match range.block_of(base) {
                    Some(block) => {
                        used.insert(block, uid);
                    }
                    None => {
                        tracing::warn!(%uid, base, "a pod's user namespace is outside the range")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(%uid, "{e}"),
            }
        }
        Allocator {
            range,
            pods_root: pods_root.to_owned(),
            used: Mutex::new(used),
        }
    }

    /// The pod's range (kept from before, or the lowest free one, recorded), as CRI's userns options.
    pub fn allocate(&self, uid: &str) -> Result<cri::UserNamespace, UsernsError> {
        let dir = self.pods_root.join(uid);
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        let base = match read(&dir)? {
            Some(base) => base,
            None => {
                let block = (0..self.range.blocks)
                    .find(|b| !used.contains_key(b))
                    .ok_or(UsernsError::Exhausted {
                        blocks: self.range.blocks,
                    })?;
                let base = self.range.base(block);
                write(&dir, &Record::of(base))?;
                base
            }
        };
        if let Some(block) = self.range.block_of(base) {
            used.insert(block, uid.to_owned());
        }
        let ids = vec![cri::IdMapping {
            host_id: base,
            container_id: 0,
            length: IDS_PER_POD,
        }];
        Ok(cri::UserNamespace {
            mode: cri::NamespaceMode::Pod as i32,
            uids: ids.clone(),
            gids: ids,
        })
    }

    /// Hands the pod's range back, once nothing of the pod runs any more.
    pub fn release(&self, uid: &str) {
        let file = self.pods_root.join(uid).join(FILE);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                // Kept in use: handing it out while the file names it would give one range to two pods
                // after a restart.
                tracing::warn!(%uid, "removing {}: {e}", file.display());
                return;
            }
        }
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, holder| holder != uid);
    }

    /// The host id base of each pod holding a range.
    pub fn in_use(&self) -> BTreeMap<String, u32> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.iter()
            .map(|(b, uid)| (uid.clone(), self.range.base(*b)))
            .collect()
    }
}

fn read(pod_dir: &Path) -> Result<Option<u32>, UsernsError> {
    let file = pod_dir.join(FILE);
    let bytes = match std::fs::read(&file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(&file)(e)),
    };
    let rec: Record = serde_json::from_slice(&bytes).map_err(|error| UsernsError::Record {
        path: file.clone(),
        error,
    })?;
    rec.base().map(Some).ok_or(UsernsError::NotOneBlock(file))
}

/// Atomic and durable: a lost allocation could hand a running pod's range to another pod after a reboot.
fn write(pod_dir: &Path, rec: &Record) -> Result<(), UsernsError> {
    let file = pod_dir.join(FILE);
    let err = |e| file_error(&file)(e);
    std::fs::create_dir_all(pod_dir).map_err(err)?;
    let tmp = pod_dir.join(".userns.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&serde_json::to_vec(rec).expect("plain data"))
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, pod_dir.join(FILE)).map_err(err)?;
    std::fs::File::open(pod_dir)
        .and_then(|d| d.sync_all())
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(ns: &cri::UserNamespace) -> u32 {
        assert_eq!(ns.uids, ns.gids);
        assert_eq!(ns.uids.len(), 1);
        assert_eq!(ns.uids[0].container_id, 0);
        assert_eq!(ns.uids[0].length, IDS_PER_POD);
        ns.uids[0].host_id
    }

    #[test]
    fn ranges_are_disjoint_kept_across_restarts_and_reused_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let range = Range::new(IDS_PER_POD, 3 * IDS_PER_POD).unwrap();
        let a = Allocator::load(range, dir.path());
        let (x, y, z) = (
            base(&a.allocate("x").unwrap()),
            base(&a.allocate("y").unwrap()),
            base(&a.allocate("z").unwrap()),
        );
        assert_eq!((x, y, z), (65536, 131072, 196608));
        assert_eq!(
            base(&a.allocate("y").unwrap()),
            y,
            "asked again: the same range"
        );
        let e = a.allocate("w").unwrap_err().to_string();
        assert!(e.contains("spec.hostUsers") && e.contains("in use"), "{e}");

        // A new kubelet (after SIGKILL) sees the same ranges in use.
        let b = Allocator::load(range, dir.path());
        assert_eq!(b.in_use(), a.in_use());
        assert_eq!(base(&b.allocate("x").unwrap()), x);
        assert!(b.allocate("w").is_err());

        b.release("y");
        assert!(!dir.path().join("y/userns").exists());
        assert_eq!(base(&b.allocate("w").unwrap()), y, "y's range, free again");
        assert_eq!(Allocator::load(range, dir.path()).in_use().len(), 3);
    }

    #[test]
    fn the_file_is_upstreams() {
        let dir = tempfile::tempdir().unwrap();
        Allocator::load(Range::default(), dir.path())
            .allocate("p")
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("p/userns")).unwrap()).unwrap();
        let m = serde_json::json!([{"containerId": 0, "hostId": 65536, "length": 65536}]);
        assert_eq!(v["uidMappings"], m);
        assert_eq!(v["gidMappings"], m);
    }

    #[test]
    fn the_kubelet_users_subordinate_ids() {
        let dir = tempfile::tempdir().unwrap();
        let (u, g) = (dir.path().join("subuid"), dir.path().join("subgid"));
        assert_eq!(Range::from_subid_files(&u, &g).unwrap(), None, "no files");
        std::fs::write(&u, "root:100000:65536\nkubelet:131072:196608\n").unwrap();
        std::fs::write(&g, "kubelet:131072:196608\n").unwrap();
        assert_eq!(
            Range::from_subid_files(&u, &g).unwrap(),
            Some(Range {
                first: 131072,
                blocks: 3
            })
        );
        std::fs::write(&g, "kubelet:131072:65536\n").unwrap();
        let e = Range::from_subid_files(&u, &g).unwrap_err().to_string();
        assert!(e.contains("differ"), "{e}");
        std::fs::write(&u, "kubelet:100000:65536\n").unwrap();
        std::fs::write(&g, "kubelet:100000:65536\n").unwrap();
        let e = Range::from_subid_files(&u, &g).unwrap_err().to_string();
        assert!(e.contains("subuid") && e.contains("100000"), "{e}");
        std::fs::write(&u, "kubelet:x\n").unwrap();
        let e = Range::from_subid_files(&u, &g).unwrap_err().to_string();
        assert!(e.contains("kubelet:x"), "{e}");
    }

    #[test]
    fn bad_ranges_and_files_are_named() {
        assert!(Range::new(1000, IDS_PER_POD).is_err());
        assert!(Range::new(IDS_PER_POD, 1000).is_err());
        assert!(Range::new(u32::MAX - IDS_PER_POD + 1, IDS_PER_POD).is_err());
        let last = Range::default();
        assert!(
            u64::from(last.base(last.blocks - 1)) + u64::from(IDS_PER_POD) <= u64::from(u32::MAX)
        );

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("p")).unwrap();
        std::fs::write(dir.path().join("p/userns"), "{").unwrap();
        let e = Allocator::load(Range::default(), dir.path())
            .allocate("p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("p/userns"), "{e}");
    }
}
