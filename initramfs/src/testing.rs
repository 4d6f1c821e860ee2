//! Booting a node image from a test and watching its serial console, with deadlines instead of sleeps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::boot::{BootOptions, Vm};

/// The serial console so far, without carriage returns.
pub fn console(log: &Path) -> String {
    std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default()
}

/// Whether `needle` is on a finished console line: qemu writes the serial port as it comes, so a
/// line read mid-write would make a test that checks the rest of it fail by chance.
pub fn shows_line(text: &str, needle: &str) -> bool {
    text.match_indices(needle)
        .any(|(i, _)| text[i..].contains('\n'))
}

/// Waits until the console contains `needle` on a finished line; fails at `timeout` or if qemu exits first.
pub fn wait_for_console(
    vm: &mut Vm,
    log: &Path,
    needle: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = console(log);
        if shows_line(&text, needle) {
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

/// A copy of `binary` at `out` without debug info (and without symbols when `all`): smaller images boot faster,
/// since the TCG guest decompresses every byte.
pub fn stripped(binary: &Path, out: &Path, all: bool) -> Result<PathBuf> {
    let st = std::process::Command::new("objcopy")
        .arg(if all { "--strip-all" } else { "--strip-debug" })
        .arg(binary)
        .arg(out)
        .status()
        .context("objcopy (binutils)")?;
    ensure!(st.success(), "objcopy failed on {}", binary.display());
    Ok(out.to_owned())
}

/// A static pod serving HTTP on the host network at `port`: on start it keeps (or, on a blank disk, writes)
/// a random marker on a hostPath volume under the state directory and serves it as `/marker`, next to
/// `/cgi-bin/uptime`, the guest's uptime at the moment of the request.
pub fn httpd_pod_manifest(port: u16) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  hostNetwork: true
  containers:
  - name: httpd
    image: busybox:latest
    command:
    - sh
    - -c
    - |
      set -e
      [ -s /data/marker ] || cat /proc/sys/kernel/random/uuid > /data/marker
      mkdir -p /www/cgi-bin
      cp /data/marker /www/marker
      printf '#!/bin/sh\necho Content-Type: text/plain\necho\ncut -d" " -f1 /proc/uptime\n' > /www/cgi-bin/uptime
      chmod +x /www/cgi-bin/uptime
      exec httpd -f -p {port} -h /www
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    hostPath:
      path: /var/lib/basalt/web-data
      type: DirectoryOrCreate
"#
    )
}

/// What [`httpd_pod_manifest`]'s pod answered first.
pub struct Serving {
    /// Guest uptime (seconds) when the pod first answered.
    pub uptime: f64,
    pub marker: String,
}

/// Polls the pod of [`httpd_pod_manifest`] through the host port `port` until it answers.
pub fn wait_serving(port: u16, timeout: Duration) -> Result<Serving> {
    let first = http_get_until(port, "/cgi-bin/uptime", timeout)?;
    ensure!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    let uptime: f64 = last_line(&first)
        .trim()
        .parse()
        .with_context(|| format!("uptime answer {first:?}"))?;
    let marker = http_get_until(port, "/marker", Duration::from_secs(30))?;
    ensure!(marker.starts_with("HTTP/1.1 200"), "{marker:?}");
    let marker = last_line(&marker).trim().to_owned();
    ensure!(marker.len() == 36, "marker {marker:?} is not a uuid");
    Ok(Serving { uptime, marker })
}

/// The one-line answer: the last non-empty line (busybox passes a CGI's own `\n` headers through).
fn last_line(answer: &str) -> &str {
    answer
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

/// The host kernel to build a node image from, or `None` after saying why (`SKIP …`) when qemu or a kernel is
/// missing, so a test or bench on such a machine passes without booting anything.
pub fn kernel_or_skip(what: &str) -> Option<crate::kernel::Kernel> {
    if !crate::boot::qemu_available() {
        eprintln!("SKIP {what}: qemu-system-x86_64 not installed");
        return None;
    }
    match crate::kernel::Kernel::host_default() {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("SKIP {what}: {e}");
            None
        }
    }
}

/// What to build for a node named `node_name` that runs [`httpd_pod_manifest`]'s pod from the preloaded image
/// archive `busybox` (named `busybox:latest`); config and manifest are written under `dir`, the image goes to
/// `dir/image`.
pub fn httpd_node_spec(
    kernel: crate::kernel::Kernel,
    binary: &Path,
    dir: &Path,
    node_name: &str,
    busybox: &Path,
    port: u16,
) -> Result<crate::builder::BuildSpec> {
    std::fs::write(dir.join("config.yaml"), format!("node-name: {node_name}\n"))?;
    std::fs::create_dir_all(dir.join("manifests"))?;
    std::fs::write(dir.join("manifests/web.yaml"), httpd_pod_manifest(port))?;
    Ok(crate::builder::BuildSpec {
        kernel,
        binary: binary.to_owned(),
        config: Some(dir.join("config.yaml")),
        manifests: Some(dir.join("manifests")),
        preload: vec![busybox.to_owned()],
        extra_modules: Vec::new(),
        mkfs: Some(PathBuf::from("/usr/sbin/mke2fs")).filter(|p| p.exists()),
        out_dir: dir.join("image"),
    })
}

#[cfg(test)]
mod tests {
    use super::shows_line;

    #[test]
    fn a_needle_counts_only_on_a_finished_line() {
        assert!(!shows_line(
            "a\nnetwork ready: 10.0.2.15/24 on eth0 (stati",
            "network ready"
        ));
        assert!(shows_line(
            "network ready: 10.0.2.15/24\nmore",
            "network ready"
        ));
        assert!(!shows_line("", "network ready"));
    }
}
