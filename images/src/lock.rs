//! Advisory `flock` locks on files under the store: one lock per blob or snapshot makes threads of one process
//! and separate processes (the agent and a `basalt image pull`) wait for each other instead of downloading or
//! unpacking twice. The kernel drops the lock when its holder dies, even by SIGKILL.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{IoContext, Result};

pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Waits for the exclusive lock on `path`, creating the file if needed.
    pub fn exclusive(path: &Path) -> Result<FileLock> {
        Self::lock(path, libc::LOCK_EX).map(|l| l.expect("blocking flock returns a lock"))
    }

    /// Waits for a shared lock on `path`.
    pub fn shared(path: &Path) -> Result<FileLock> {
        Self::lock(path, libc::LOCK_SH).map(|l| l.expect("blocking flock returns a lock"))
    }

    /// The lock if nobody holds it now.
    pub fn try_exclusive(path: &Path) -> Result<Option<FileLock>> {
        Self::lock(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    fn lock(path: &Path, op: libc::c_int) -> Result<Option<FileLock>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .at(path)?;
        loop {
            // SAFETY: flock on a valid fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
                return Ok(Some(FileLock { _file: file }));
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Ok(None),
                _ => return Err(e).at(path),
            }
        }
    }
}
