//! The files under a monitor's directory.

use std::path::{Path, PathBuf};

pub fn socket(dir: &Path) -> PathBuf {
    dir.join("shim.sock")
}
pub fn pid_file(dir: &Path) -> PathBuf {
    dir.join("shim.pid")
}
pub fn log(dir: &Path) -> PathBuf {
    dir.join("shim.log")
}
/// Where a container's last known [`crate::protocol::ContainerStatus`] is kept.
pub fn status(dir: &Path, id: &str) -> PathBuf {
    dir.join("containers").join(id).join("status.json")
}
