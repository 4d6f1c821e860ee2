//! Loading the kernel modules the builder put into the image, stage by stage: the modules of one stage load
//! concurrently (the kernel links and initialises them in parallel), a stage after all of the ones before it.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use super::log;
use crate::layout;

/// One line of the order file.
#[derive(Debug, PartialEq, Eq)]
enum Entry<'a> {
    Load {
        name: &'a str,
        file: &'a str,
        stage: u32,
    },
    /// Named in the image's spec but absent from the kernel it was built for.
    Missing { name: &'a str },
}

fn parse(line: &str) -> Option<Entry<'_>> {
    let mut f = line.split_whitespace();
    let name = f.next()?;
    match f.next()? {
        "-" => Some(Entry::Missing { name }),
        file => Some(Entry::Load {
            name,
            file,
            stage: f.next()?.parse().ok()?,
        }),
    }
}

/// Loads every module of the order file; returns (loaded, failed or missing). A driver whose hardware is
/// absent (ENODEV, e.g. crc32c_intel without SSE4.2) is skipped, not an error.
pub fn load_all() -> (usize, usize) {
    let order = match std::fs::read_to_string(layout::MODULES_ORDER) {
        Ok(o) => o,
        Err(e) => {
            log::error(format!("{}: {e}; no modules loaded", layout::MODULES_ORDER));
            return (0, 1);
        }
    };
    let mut failed = 0;
    let mut stages: BTreeMap<u32, Vec<(&str, &str)>> = BTreeMap::new();
    for line in order.lines() {
        match parse(line) {
            Some(Entry::Load { name, file, stage }) => {
                stages.entry(stage).or_default().push((name, file))
            }
            Some(Entry::Missing { name }) => {
                log::error(format!(
                    "module {name}: not in this kernel (missing when the image was built)"
                ));
                failed += 1;
            }
            None if line.trim().is_empty() => {}
            None => {
                log::error(format!("{}: bad line {line:?}", layout::MODULES_ORDER));
                failed += 1;
            }
        }
    }
    let mut results = Vec::new();
    for group in stages.values() {
        std::thread::scope(|s| {
            let handles: Vec<_> = group
                .iter()
                .map(|&(name, file)| {
                    (
                        name,
                        s.spawn(move || {
                            let t = std::time::Instant::now();
                            (load(file), t.elapsed())
                        }),
                    )
                })
                .collect();
            for (name, h) in handles {
                let (r, took) = h.join().unwrap_or_else(|_| {
                    (
                        Err(std::io::Error::other("loader thread panicked")),
                        Default::default(),
                    )
                });
                results.push((name, r, took));
            }
        });
    }
    // The slowest few are named: what an operator trims from the image when boot time matters.
    let mut slowest: Vec<_> = results.iter().map(|(n, _, t)| (*t, *n)).collect();
    slowest.sort_unstable_by(|a, b| b.cmp(a));
    let slowest: Vec<String> = slowest
        .iter()
        .take(5)
        .map(|(t, n)| format!("{n} {} ms", t.as_millis()))
        .collect();
    let (mut loaded, mut absent) = (0, Vec::new());
    for (name, r, _) in results {
        match r {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => absent.push(name),
            Err(e) => {
                log::error(format!("module {name}: {e}"));
                failed += 1;
            }
        }
    }
    log::info(format!(
        "kernel modules: {loaded} loaded in {} stages, {failed} failed or missing, {} for absent hardware ({}); \
         slowest: {}",
        stages.len(),
        absent.len(),
        absent.join(" "),
        slowest.join(", ")
    ));
    (loaded, failed)
}

fn load(file: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(format!("{}/{file}", layout::MODULES_DIR))?;
    let params = c"";
    // SAFETY: a valid fd and NUL-terminated parameter string.
    let rc = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        return Ok(());
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_lines_parse() {
        assert_eq!(
            parse("veth veth.ko 1"),
            Some(Entry::Load {
                name: "veth",
                file: "veth.ko",
                stage: 1
            })
        );
        assert_eq!(parse("igb -"), Some(Entry::Missing { name: "igb" }));
        assert_eq!(parse("veth veth.ko x"), None);
        assert_eq!(parse("veth veth.ko"), None);
        assert_eq!(parse(""), None);
    }
}
