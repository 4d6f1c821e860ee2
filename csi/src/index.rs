//! The volume index: every volume and snapshot the plugin made, in `<base>/index.json`, rewritten atomically
//! (temporary file, fsync, rename, fsync of the directory) before any call that changed it is answered, so a
//! SIGKILL or a power cut loses no acknowledged change.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sys;

pub const FILE: &str = "index.json";
const TMP: &str = "index.json.tmp";

/// How a volume's bytes are kept and its capacity enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Kind {
    /// A directory in its own ext4/xfs project, whose quota limit is the capacity.
    ProjectQuota { project: u32 },
    /// An ext4 filesystem in a sparse image file of the capacity's size, loop-mounted on the volume directory.
    Image,
    /// Raw block: a sparse file of the capacity's size, published as a loop device.
    Block,
}

impl Kind {
    pub fn is_block(self) -> bool {
        self == Kind::Block
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::ProjectQuota { .. } => "project-quota",
            Kind::Image => "image",
            Kind::Block => "block",
        }
    }
}

/// What a volume was filled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Snapshot(String),
    Volume(String),
}

/// One NodePublishVolume that has not been undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publish {
    pub target: PathBuf,
    pub readonly: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub capacity: u64,
    #[serde(flatten)]
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publishes: Vec<Publish>,
}

/// How a snapshot's copy is kept (follows from the source volume's kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// A tar archive of a filesystem volume's files (either kind: it restores into any filesystem volume).
    Tar,
    /// A (reflinked or sparse) copy of a raw block file.
    Block,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Block => "block",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    pub source_volume: String,
    pub format: Format,
    /// Bytes of the copy (for a tar, the archive's size).
    pub size: u64,
    /// The source volume's capacity when the snapshot was taken: a volume made from it is at least as big.
    pub source_capacity: u64,
    pub created_secs: i64,
    pub created_nanos: i32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    pub volumes: BTreeMap<String, Volume>,
    pub snapshots: BTreeMap<String, Snapshot>,
}

impl Index {
    /// Reads the index beneath `base`; none yet is an empty index, a damaged one an error (never silently
    /// forgotten volumes).
    pub fn load(base: &OwnedFd, base_path: &Path) -> Result<Index, String> {
        let f = match sys::open_beneath(base, Path::new(FILE), libc::O_RDONLY, 0) {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(format!("{}/{FILE}: {e}", base_path.display())),
        };
        serde_json::from_reader(std::io::BufReader::new(f))
            .map_err(|e| format!("{}/{FILE}: {e}", base_path.display()))
    }

    /// Writes the index durably, replacing the old one in one step.
    pub fn save(&self, base: &OwnedFd) -> std::io::Result<()> {
        let fd = sys::open_beneath(
            base,
            Path::new(TMP),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
            0o600,
        )?;
        let mut f = std::fs::File::from(fd);
        serde_json::to_writer(&mut f, self)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        let (tmp, file) = (
            std::ffi::CString::new(TMP).expect("no NUL"),
            std::ffi::CString::new(FILE).expect("no NUL"),
        );
        // SAFETY: valid C strings; both names are relative to the base directory's descriptor.
        if unsafe {
            libc::renameat(
                base.as_raw_fd(),
                tmp.as_ptr(),
                base.as_raw_fd(),
                file.as_ptr(),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fsync of an open descriptor; makes the rename itself durable.
        if unsafe { libc::fsync(base.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn volume_by_name(&self, name: &str) -> Option<(&String, &Volume)> {
        self.volumes.iter().find(|(_, v)| v.name == name)
    }

    pub fn snapshot_by_name(&self, name: &str) -> Option<(&String, &Snapshot)> {
        self.snapshots.iter().find(|(_, s)| s.name == name)
    }
}
