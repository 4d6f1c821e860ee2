//! Where PID 1 says what it does: the console, `/run/basalt/init.log` and the kernel log (`/dev/kmsg`), each
//! line stamped with the guest's uptime. Errors are also kept for the status block.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

struct Sinks {
    console: Option<File>,
    file: Option<File>,
    kmsg: Option<File>,
    errors: Vec<String>,
    error_count: usize,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    console: None,
    file: None,
    kmsg: None,
    errors: Vec::new(),
    error_count: 0,
});

const KEEP_ERRORS: usize = 3;

/// Seconds since boot (CLOCK_BOOTTIME), the time base of the kernel log.
pub fn uptime() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Opens the console and kernel log (after /dev is mounted) and the log file (after /run is).
pub fn open_sinks(log_file: Option<&str>) {
    let mut s = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    if s.console.is_none() {
        s.console = OpenOptions::new().write(true).open("/dev/console").ok();
    }
    if s.kmsg.is_none() {
        s.kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    }
    if let Some(p) = log_file {
        s.file = OpenOptions::new().create(true).append(true).open(p).ok();
    }
}

fn emit(level: u8, tag: &str, msg: &str) {
    let line = format!("[{:9.3}] basalt-init: {tag}{msg}\n", uptime());
    let mut s = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    match s.console.as_mut() {
        Some(c) => {
            let _ = c.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
    if let Some(f) = s.file.as_mut() {
        let _ = f.write_all(line.as_bytes());
    }
    if let Some(k) = s.kmsg.as_mut() {
        // Below the `quiet` console level, so the console does not show each line twice.
        let _ = k.write_all(format!("<{level}>basalt-init: {tag}{msg}\n").as_bytes());
    }
}

pub fn info(msg: impl AsRef<str>) {
    emit(6, "", msg.as_ref());
}

pub fn error(msg: impl AsRef<str>) {
    emit(4, "ERROR: ", msg.as_ref());
    let mut s = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    s.error_count += 1;
    s.errors.push(msg.as_ref().to_owned());
    if s.errors.len() > KEEP_ERRORS {
        s.errors.remove(0);
    }
}

/// Writes a block to the console and the log file only (the status display).
pub fn console_block(text: &str) {
    let mut s = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = s.console.as_mut() {
        let _ = c.write_all(text.as_bytes());
    }
    if let Some(f) = s.file.as_mut() {
        let _ = f.write_all(text.as_bytes());
    }
}

/// (how many errors so far, the last few).
pub fn errors() -> (usize, Vec<String>) {
    let s = SINKS.lock().unwrap_or_else(|e| e.into_inner());
    (s.error_count, s.errors.clone())
}
