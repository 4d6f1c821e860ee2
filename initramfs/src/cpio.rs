//! A writer for the "newc" cpio format the Linux kernel unpacks as an initramfs.
//!
//! Written here rather than taken from a crate because reproducibility is the point: every header field
//! (inode, mtime, uid, device numbers) is ours to fix, and entries are written in the order given.

use std::io::{self, Write};

const MAGIC: &str = "070701";
const TRAILER: &str = "TRAILER!!!";

/// Streams entries into a newc archive. Inode numbers are assigned in order, times are always zero.
pub struct CpioWriter<W: Write> {
    out: W,
    offset: u64,
    next_ino: u32,
}

/// The kind of an entry; its mode bits are given separately.
pub enum Entry<'a> {
    Dir,
    File(&'a [u8]),
    Symlink(&'a str),
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            offset: 0,
            next_ino: 1,
        }
    }

    /// Adds `path` (relative, no leading `/`) owned by root with permission bits `perm`.
    pub fn add(&mut self, path: &str, perm: u32, entry: Entry<'_>) -> io::Result<()> {
        let path = path.trim_start_matches('/');
        let (kind, data): (u32, &[u8]) = match entry {
            Entry::Dir => (libc::S_IFDIR, &[]),
            Entry::File(d) => (libc::S_IFREG, d),
            Entry::Symlink(t) => (libc::S_IFLNK, t.as_bytes()),
        };
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if kind == libc::S_IFDIR { 2 } else { 1 };
        self.header(ino, kind | (perm & 0o7777), nlink, data.len(), path)?;
        self.write_padded(data)
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(0, 0, 1, 0, TRAILER)?;
        // The kernel reads whole 512-byte blocks; pad as GNU cpio does.
        let pad = (512 - (self.offset % 512)) % 512;
        self.out.write_all(&vec![0u8; pad as usize])?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: usize,
        name: &str,
    ) -> io::Result<()> {
        let namesize = name.len() + 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            size as u32,
            0, // devmajor
            0, // devminor
            0, // rdevmajor
            0, // rdevminor
            namesize as u32,
            0, // check
        ];
        let mut h = String::with_capacity(110 + namesize);
        h.push_str(MAGIC);
        for f in fields {
            h.push_str(&format!("{f:08x}"));
        }
        h.push_str(name);
        h.push('\0');
        self.write_padded(h.as_bytes())
    }

    fn write_padded(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)?;
        self.offset += data.len() as u64;
        let pad = (4 - (self.offset % 4)) % 4;
        self.out.write_all(&[0u8; 3][..pad as usize])?;
        self.offset += pad;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.add("bin", 0o755, Entry::Dir).unwrap();
        w.add("bin/hello", 0o755, Entry::File(b"#!/bin/sh\necho hi\n"))
            .unwrap();
        w.add("bin/sh", 0o777, Entry::Symlink("busybox")).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(archive(), archive());
    }

    #[test]
    fn gnu_cpio_reads_it_back() {
        // The system cpio is the independent reader; the kernel's unpacker accepts the same format.
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&archive()).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("bin/hello")).unwrap(),
            "#!/bin/sh\necho hi\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("bin/sh")).unwrap(),
            std::path::Path::new("busybox")
        );
    }
}
