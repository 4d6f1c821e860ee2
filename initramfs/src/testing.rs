//! Booting a node image from a test and watching its serial console, with deadlines instead of sleeps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::boot::{BootOptions, Vm};

/// The serial console so far, without carriage returns.
pub fn console(log: &Path) -> String {
    std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

/// Waits until the console contains `needle`; fails at `timeout` or if qemu exits first.
pub fn wait_for_console(
    vm: &mut Vm,
    log: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = console(log);
        if text.contains(needle) {
            return Ok(text);
        }
        if let Some(status) = vm.try_wait()? {
            bail!(
                "qemu exited ({status}) before the console showed {needle:?}:\n{}",
                tail(&text)
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "console did not show {needle:?} within {timeout:?}:\n{}",
                tail(&text)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Boots `opts` (whose `serial_log` must be set) and waits for `needle` on the console.
pub fn boot_and_wait(
    opts: &BootOptions,
    needle: &str,
    timeout: Duration,
) -> Result<(Vm, PathBuf, String)> {
    let log = opts
        .serial_log
        .clone()
        .context("boot_and_wait needs BootOptions::serial_log")?;
    let mut vm = Vm::start(opts)?;
    let text = wait_for_console(&mut vm, &log, needle, timeout)?;
    Ok((vm, log, text))
}

/// Presses the ACPI power button and waits for a clean power-off: qemu exits 0 after the kernel's
/// `reboot: Power down`. Returns the whole console.
pub fn power_off(mut vm: Vm, log: &Path, timeout: Duration) -> Result<String> {
    vm.powerdown()?;
    let status = vm.wait_timeout(timeout)?;
    let text = console(log);
    match status {
        None => bail!(
            "guest did not power off within {timeout:?}:\n{}",
            tail(&text)
        ),
        Some(s) if !s.success() => bail!("qemu exited with {s}:\n{}", tail(&text)),
        Some(_) if !text.contains("reboot: Power down") => {
            bail!(
                "qemu exited without the kernel's `reboot: Power down`:\n{}",
                tail(&text)
            )
        }
        Some(_) => Ok(text),
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` on 127.0.0.1:port, retried until a complete answer or `timeout`; returns the whole response.
pub fn http_get_until(port: u16, path: &str, timeout: Duration) -> Result<String> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + timeout;
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut c = std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_secs(2),
            )?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(c, "GET {path} HTTP/1.0\r\nHost: node\r\n\r\n")?;
            let mut s = String::new();
            c.read_to_string(&mut s)?;
            Ok(s)
        })();
        let last = match attempt {
            Ok(s) if s.starts_with("HTTP/") => return Ok(s),
            Ok(s) => format!("incomplete answer {s:?}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            bail!("GET {path} on 127.0.0.1:{port}: no answer within {timeout:?} (last: {last})");
        }
        // qemu's hostfwd accepts before the guest listens; retry until the guest answers.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guest uptime stamped on the first console line containing `needle` (`[   3.123] basalt-init: …`).
pub fn uptime_at(console: &str, needle: &str) -> Option<f64> {
    let line = console.lines().find(|l| l.contains(needle))?;
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}

fn tail(s: &str) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
