//! Acting inside another network namespace: a short-lived thread `setns()`s into it and opens a netlink
//! socket there. The socket stays bound to that namespace, so the rest of the work runs on our own thread
//! and the process's namespace is never switched.

use std::fs::File;
use std::io;
use std::path::Path;

use nix::sched::{setns, CloneFlags};

use crate::netlink::Socket;

/// Opens the namespace file; `Ok(None)` if it no longer exists.
pub fn open(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Runs `f` on a thread that has joined the network namespace `ns`.
pub fn run_in<T: Send>(ns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // Affects only this thread, which ends right after `f`.
            setns(ns, CloneFlags::CLONE_NEWNET)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    })
}

/// A netlink socket of `protocol` living in the namespace `ns`.
pub fn socket_in(ns: &File, protocol: i32) -> io::Result<Socket> {
    run_in(ns, || Socket::open(protocol))
}
