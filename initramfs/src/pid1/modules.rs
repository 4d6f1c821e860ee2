//! Loading the kernel modules the builder put into the image, in the builder's order.

use std::os::fd::AsRawFd;

use super::log;
use crate::layout;

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
    let (mut loaded, mut failed, mut absent) = (0, 0, Vec::new());
    for line in order.lines() {
        let Some((name, file)) = line.split_once(' ') else {
            continue;
        };
        if file == "-" {
            log::error(format!(
                "module {name}: not in this kernel (missing when the image was built)"
            ));
            failed += 1;
            continue;
        }
        let path = format!("{}/{file}", layout::MODULES_DIR);
        match load(&path) {
            Ok(()) => loaded += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => absent.push(name),
            Err(e) => {
                log::error(format!("module {name}: {e}"));
                failed += 1;
            }
        }
    }
    log::info(format!(
        "kernel modules: {loaded} loaded, {failed} failed or missing, {} for absent hardware ({})",
        absent.len(),
        absent.join(" ")
    ));
    (loaded, failed)
}

fn load(path: &str) -> std::io::Result<()> {
    let f = std::fs::File::open(path)?;
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
