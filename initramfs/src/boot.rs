//! `basalt node-image boot`: the image in `qemu-system-x86_64 -accel tcg`, user-mode networking, serial console
//! to a file, a QMP socket so the host can press the (ACPI) power button.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// A bad argument, named with its value.
    #[error("{0}")]
    Invalid(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP: {0}")]
    Qmp(String),
}

type Result<T> = std::result::Result<T, BootError>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BootError {
    let context = context.into();
    move |source| BootError::Io { context, source }
}

/// How to boot an image built by [`crate::builder::build`].
#[derive(Debug, Clone)]
pub struct BootOptions {
    pub image_dir: PathBuf,
    /// `tcp:HOSTADDR:PORT-:GUESTPORT`, as qemu's `hostfwd=` takes it.
    pub hostfwd: Vec<String>,
    /// Serial console to this file; `None` = qemu's stdio.
    pub serial_log: Option<PathBuf>,
    /// A raw disk image for the state directory, created blank (sparse) when missing.
    pub disk: Option<PathBuf>,
    pub disk_size_mb: u64,
    pub memory_mb: u32,
    pub cpus: u32,
    /// Extra kernel command-line arguments (`basalt.KEY=VALUE`, ...).
    pub append: Vec<String>,
    /// Exit qemu when the guest reboots instead of booting again.
    pub no_reboot: bool,
}

impl BootOptions {
    pub fn new(image_dir: impl Into<PathBuf>) -> BootOptions {
        BootOptions {
            image_dir: image_dir.into(),
            hostfwd: Vec::new(),
            serial_log: None,
            disk: None,
            disk_size_mb: 1024,
            memory_mb: 512,
            cpus: 1,
            append: Vec::new(),
            no_reboot: false,
        }
    }
}

/// A running guest. Dropping it kills qemu.
pub struct Vm {
    child: Child,
    qmp: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vm {
    pub fn start(o: &BootOptions) -> Result<Vm> {
        let kernel = o.image_dir.join("vmlinuz");
        let initrd = o.image_dir.join("initramfs.cpio.gz");
        for f in [&kernel, &initrd] {
            if !f.is_file() {
                return Err(BootError::Invalid(format!(
                    "{} not found: is {} a `basalt node-image build` output?",
                    f.display(),
                    o.image_dir.display()
                )));
            }
        }
        for h in &o.hostfwd {
            if !h.starts_with("tcp:") && !h.starts_with("udp:") {
                return Err(BootError::Invalid(format!(
                    "--hostfwd {h:?}: expected tcp:HOSTADDR:PORT-:GUESTPORT"
                )));
            }
            if h.contains(',') {
                return Err(BootError::Invalid(format!(
                    "--hostfwd {h:?}: must not contain ','"
                )));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("basalt-boot-")
            .tempdir()
            .map_err(io("creating the QMP socket directory"))?;
        let qmp = dir.path().join("qmp.sock");
        let mut netdev = "user,id=n0".to_owned();
        for h in &o.hostfwd {
            netdev.push_str(&format!(",hostfwd={h}"));
        }
        let mut append = vec![
            "console=ttyS0".to_owned(),
            "panic=-1".into(),
            "quiet".into(),
        ];
        let mut q = Command::new(QEMU);
        q.args(["-accel", "tcg", "-nodefaults", "-display", "none"])
            .args(["-m", &o.memory_mb.to_string(), "-smp", &o.cpus.to_string()])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-netdev", &netdev, "-device", "virtio-net-pci,netdev=n0"])
            // The host's entropy: without it a first boot's key generation waits for the guest's random pool.
            .args(["-device", "virtio-rng-pci"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if o.no_reboot {
            q.arg("-no-reboot");
        }
        match &o.serial_log {
            Some(log) => {
                q.arg("-serial").arg(format!("file:{}", log.display()));
                q.stdin(Stdio::null()).stdout(Stdio::null());
                // A terminal's Ctrl-C must reach only us (we power the guest down); qemu would just quit.
                use std::os::unix::process::CommandExt;
                q.process_group(0);
            }
            None => {
                q.args(["-serial", "stdio"]);
            }
        }
        if let Some(disk) = &o.disk {
            if disk.display().to_string().contains(',') {
                return Err(BootError::Invalid(format!(
                    "--disk {}: path must not contain ','",
                    disk.display()
                )));
            }
            if !disk.exists() {
                let f = std::fs::File::create(disk)
                    .map_err(io(format!("--disk {}: creating", disk.display())))?;
                f.set_len(o.disk_size_mb << 20)
                    .map_err(io(format!("--disk {}: sizing", disk.display())))?;
            }
            q.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=writeback",
                disk.display()
            ));
            append.push("basalt.disk=/dev/vda".into());
        }
        append.extend(o.append.iter().cloned());
        q.arg("-append").arg(append.join(" "));
        let child = q.spawn().map_err(io(format!("starting {QEMU}")))?;
        Ok(Vm {
            child,
            qmp,
            _dir: dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Presses the ACPI power button (QMP `system_powerdown`); the guest's PID 1 shuts down cleanly.
    pub fn powerdown(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&self.qmp) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    // qemu creates the socket shortly after start; nothing to block on but its existence.
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(io("connecting to qemu's QMP socket")(e)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(io("QMP socket"))?;
        let mut r = BufReader::new(stream.try_clone().map_err(io("QMP socket"))?);
        let mut w = stream;
        let mut line = String::new();
        r.read_line(&mut line).map_err(io("QMP greeting"))?;
        for cmd in ["qmp_capabilities", "system_powerdown"] {
            writeln!(w, "{{\"execute\":\"{cmd}\"}}").map_err(io("QMP command"))?;
            loop {
                line.clear();
                if r.read_line(&mut line).map_err(io("QMP reply"))? == 0 {
                    return Err(BootError::Qmp(format!("connection closed during {cmd}")));
                }
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v.get("return").is_some() {
                    break;
                }
                if let Some(e) = v.get("error") {
                    return Err(BootError::Qmp(format!("{cmd}: {e}")));
                }
                // Asynchronous events interleave with replies; skip them.
            }
        }
        Ok(())
    }

    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child.try_wait().map_err(io("waiting for qemu"))
    }

    /// Waits up to `timeout` for qemu to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Whether qemu can run here at all.
pub fn qemu_available() -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|d| Path::new(&d).join(QEMU).is_file())
    })
}
