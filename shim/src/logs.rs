//! The container log file in the CRI format the kubelet reads: `<RFC3339Nano> <stdout|stderr> <P|F> <content>\n`,
//! one record per line of output. A line longer than [`MAX_LINE`] is split into partial (`P`) records, and
//! output that ends without a newline is flushed as a partial record at end of stream.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The longest record content; longer lines are split (the kubelet's and containerd's default).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One container's log: where it goes and the incomplete line of each stream.
pub struct CriLog {
    path: Option<PathBuf>,
    file: Option<File>,
    pending: [Vec<u8>; 2],
}

impl CriLog {
    /// Opens (appending) the log at `path`; `None` discards everything.
    pub fn open(path: Option<&Path>) -> std::io::Result<CriLog> {
        let mut log = CriLog {
            path: path.map(Path::to_owned),
            file: None,
            pending: [Vec::new(), Vec::new()],
        };
        log.reopen()?;
        Ok(log)
    }

    /// Closes and reopens the file at its path, after the agent rotated it away.
    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = match &self.path {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(())
    }

    /// Takes a chunk of a stream's output: every completed line becomes an `F` record, a pending line that
    /// reached [`MAX_LINE`] a `P` record; the rest waits for more output.
    pub fn write(&mut self, stream: Stream, data: &[u8]) {
        let mut out = Vec::new();
        let pending = &mut self.pending[stream as usize];
        let ts = timestamp();
        for &b in data {
            if b == b'\n' {
                record(&mut out, &ts, stream, 'F', pending);
                pending.clear();
            } else {
                pending.push(b);
                if pending.len() == MAX_LINE {
                    record(&mut out, &ts, stream, 'P', pending);
                    pending.clear();
                }
            }
        }
        self.append(&out);
    }

    /// End of a stream: what is left of its last line becomes a `P` record.
    pub fn finish(&mut self, stream: Stream) {
        let pending = std::mem::take(&mut self.pending[stream as usize]);
        if !pending.is_empty() {
            let mut out = Vec::new();
            record(&mut out, &timestamp(), stream, 'P', &pending);
            self.append(&out);
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(f) = &mut self.file {
            // A full disk must not stop the container: its output is then lost, as with any log driver.
            if let Err(e) = f.write_all(bytes) {
                tracing::warn!(path = ?self.path, error = %e, "writing the container log");
            }
        }
    }
}

fn record(out: &mut Vec<u8>, ts: &str, stream: Stream, tag: char, content: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.push(b' ');
    out.push(tag as u8);
    out.push(b' ');
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// Now, as containerd writes it: UTC with nine fractional digits.
fn timestamp() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.9fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap();
                assert!(
                    chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                    "timestamp {ts:?}"
                );
                (
                    p.next().unwrap().to_owned(),
                    p.next().unwrap().to_owned(),
                    p.next().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn lines_are_full_records_and_leftovers_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(Some(&path)).unwrap();
        log.write(Stream::Stdout, b"one\ntw");
        log.write(Stream::Stderr, b"err\n");
        log.write(Stream::Stdout, b"o\n\nthree");
        log.finish(Stream::Stdout);
        log.finish(Stream::Stderr);
        let r = records(&path);
        let want = [
            ("stdout", "F", "one"),
            ("stderr", "F", "err"),
            ("stdout", "F", "two"),
            ("stdout", "F", ""),
            ("stdout", "P", "three"),
        ];
        assert_eq!(r.len(), want.len(), "{r:?}");
        for (got, want) in r.iter().zip(want) {
            assert_eq!((got.0.as_str(), got.1.as_str(), got.2.as_str()), want);
        }
    }

    #[test]
    fn long_lines_are_split_at_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(Some(&path)).unwrap();
        let mut line = vec![b'x'; MAX_LINE * 2 + 10];
        line.push(b'\n');
        log.write(Stream::Stdout, &line);
        let r = records(&path);
        let tags: Vec<(&str, usize)> = r.iter().map(|(_, t, c)| (t.as_str(), c.len())).collect();
        assert_eq!(tags, [("P", MAX_LINE), ("P", MAX_LINE), ("F", 10)]);
    }

    #[test]
    fn reopen_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(Some(&path)).unwrap();
        log.write(Stream::Stdout, b"before\n");
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        log.write(Stream::Stdout, b"after\n");
        assert_eq!(records(&path)[0].2, "after");
        assert_eq!(records(&dir.path().join("c.log.1"))[0].2, "before");
    }
}
