//! Node-level eviction signals, as upstream's eviction manager computes them without cAdvisor:
//! `memory.available` from `/proc/meminfo` and `nodefs.available` from statfs of the filesystem holding pod
//! data. They are reported (`/stats/summary`, `/metrics`); nothing is evicted on them yet.

use std::path::Path;

/// Memory of the node, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Memory {
    pub total: u64,
    /// `MemAvailable`: the memory.available signal.
    pub available: u64,
}

/// The one `/proc/meminfo` parser: `None` when a field is missing (a kernel older than 3.14 has no
/// MemAvailable) rather than a made-up zero.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let get = |key: &str| -> Option<u64> {
        let v = text.lines().find_map(|l| l.strip_prefix(key))?;
        let v = v.trim().strip_suffix("kB").unwrap_or(v).trim();
        v.parse::<u64>().ok()?.checked_mul(1024)
    };
    Some(Memory {
        total: get("MemTotal:")?,
        available: get("MemAvailable:")?,
    })
}

pub fn memory() -> Option<Memory> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// A filesystem's size, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fs {
    pub capacity: u64,
    /// Free to unprivileged users (statfs `f_bavail`): the nodefs.available signal.
    pub available: u64,
}

/// The filesystem holding `path`, or its nearest existing parent (the pods directory appears with the
/// first pod).
pub fn fs(path: &Path) -> Option<Fs> {
    let mut p = path.to_owned();
    while !p.exists() {
        if !p.pop() {
            return None;
        }
    }
    let s = nix::sys::statvfs::statvfs(&p).ok()?;
    let frag = s.fragment_size() as u64;
    Some(Fs {
        capacity: s.blocks() as u64 * frag,
        available: s.blocks_available() as u64 * frag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_parsed_in_bytes_and_missing_fields_are_none() {
        let text =
            "MemTotal:        8000000 kB\nMemFree:          100 kB\nMemAvailable:    6000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(Memory {
                total: 8_000_000 * 1024,
                available: 6_000_000 * 1024
            })
        );
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn nodefs_of_a_missing_dir_is_its_parents() {
        let dir = tempfile::tempdir().unwrap();
        let a = fs(dir.path()).unwrap();
        let b = fs(&dir.path().join("not/yet")).unwrap();
        assert!(a.capacity > 0 && a.available <= a.capacity);
        assert_eq!(a.capacity, b.capacity);
    }
}
