//! A throw-away qemu guest with a pure cgroup v2 hierarchy, for tests of behaviour the hybrid host cannot show.
//!
//! The guest boots the host's kernel under TCG with a tiny busybox initramfs, sees the host's `/` read-only over
//! virtio-9p with a tmpfs overlay on top (so a test binary built here runs there unchanged, and its writes vanish
//! with the guest), mounts cgroup2 at `/sys/fs/cgroup` with every controller enabled for children, runs one
//! command and powers off. The command's stdout, stderr and exit code come back through a second, writable 9p
//! share, never by scraping the serial console.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cpio::{CpioWriter, Entry};
use crate::kernel::{Kernel, KernelError};

/// Modules the guest needs before it can mount the host: virtio transport, 9p and overlayfs.
const GUEST_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

const QEMU: &str = "qemu-system-x86_64";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// This machine cannot run the VM at all; tests print the reason and skip.
    #[error("test VM unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("test VM: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("test VM timed out after {0:?}; console tail:\n{1}")]
    Timeout(Duration, String),
    #[error("test VM did not report an exit code (guest failed to boot or to mount the host); console tail:\n{0}")]
    NoExitCode(String),
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VmError {
    let context = context.into();
    move |source| VmError::Io { context, source }
}

/// What a command printed and returned inside the guest.
#[derive(Debug, Clone)]
pub struct VmOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Everything the guest printed on its serial console (kernel messages and init's own lines).
    pub console: String,
}

/// How to boot the guest. `TestVm::new` picks the host's newest kernel and modest defaults.
#[derive(Debug, Clone)]
pub struct TestVm {
    kernel: Kernel,
    memory_mb: u32,
    cpus: u32,
    timeout: Duration,
    env: Vec<(String, String)>,
    modules: Vec<String>,
}

impl TestVm {
    /// Checks that qemu and a kernel exist; `Err(VmError::Unavailable)` is the only reason a test may skip.
    pub fn new() -> Result<TestVm, VmError> {
        if which(QEMU).is_none() {
            return Err(VmError::Unavailable(format!(
                "{QEMU} not found (install Debian's qemu-system-x86)"
            )));
        }
        let kernel = Kernel::host_default().map_err(|e| VmError::Unavailable(e.to_string()))?;
        if !Path::new("/bin/busybox").exists() {
            return Err(VmError::Unavailable(
                "/bin/busybox not found (install Debian's busybox-static)".into(),
            ));
        }
        Ok(TestVm {
            kernel,
            memory_mb: 1024,
            cpus: 2,
            timeout: Duration::from_secs(600),
            env: Vec::new(),
            modules: Vec::new(),
        })
    }

    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Loads these kernel modules (and what they depend on) too, before the command runs.
    pub fn modules(mut self, names: &[&str]) -> Self {
        self.modules.extend(names.iter().map(|s| s.to_string()));
        self
    }

    /// Sets an environment variable for the command (the guest starts from a clean environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Runs `argv` in `cwd` (a host path, seen read-only-with-overlay in the guest) and returns its output.
    pub fn run(&self, argv: &[OsString], cwd: &Path) -> Result<VmOutput, VmError> {
        let initrd = self.initrd()?;
        let share = tempfile::Builder::new()
            .prefix("basalt-testvm-")
            .tempdir_in(cache_root())
            .map_err(io("creating the exchange directory"))?;
        std::fs::write(share.path().join("job.sh"), self.job_script(argv, cwd))
            .map_err(io("writing job.sh"))?;
        let console_path = share.path().join("console.log");

        let mut qemu = Command::new(QEMU);
        qemu.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
        ])
        .args([
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.memory_mb.to_string(),
        ])
        .arg("-kernel")
        .arg(&self.kernel.image)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", console_path.display()))
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=passthrough,readonly=on,multidevs=remap",
        ])
        .arg("-virtfs")
        .arg(format!(
            "local,path={},mount_tag=out,security_model=none,multidevs=remap",
            share.path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = qemu.spawn().map_err(io(format!("starting {QEMU}")))?;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io("waiting for qemu"))? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(VmError::Timeout(
                    self.timeout,
                    tail(&read_lossy(&console_path)),
                ));
            }
            // qemu gives no readiness signal to block on; a short poll of its exit is the honest wait here.
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut qemu_err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut qemu_err);
        }
        let console = strip_console(&read_lossy(&console_path));
        let code = std::fs::read_to_string(share.path().join("exit-code")).ok();
        let Some(exit_code) = code.and_then(|c| c.trim().parse().ok()) else {
            return Err(VmError::NoExitCode(format!(
                "qemu {status}; {}\n{}",
                qemu_err.trim(),
                tail(&console)
            )));
        };
        Ok(VmOutput {
            exit_code,
            stdout: read_lossy(&share.path().join("stdout")),
            stderr: read_lossy(&share.path().join("stderr")),
            console,
        })
    }

    fn job_script(&self, argv: &[OsString], cwd: &Path) -> Vec<u8> {
        let mut s = b"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root\n".to_vec();
        for (k, v) in &self.env {
            s.extend_from_slice(format!("export {k}=").as_bytes());
            s.extend_from_slice(&shell_quote(v.as_bytes()));
            s.push(b'\n');
        }
        s.extend_from_slice(b"cd ");
        s.extend_from_slice(&shell_quote(cwd.as_os_str().as_bytes()));
        s.extend_from_slice(b" || exit 125\nexec");
        for a in argv {
            s.push(b' ');
            s.extend_from_slice(&shell_quote(a.as_bytes()));
        }
        s.push(b'\n');
        s
    }

    /// Builds (once per kernel and init script) the initramfs, cached under /var/tmp; concurrent tests race
    /// safely because each writes a private file and renames it into place.
    fn initrd(&self) -> Result<PathBuf, VmError> {
        let wanted: Vec<&str> = GUEST_MODULES
            .iter()
            .copied()
            .chain(self.modules.iter().map(String::as_str))
            .collect();
        let modules = self.kernel.resolve_modules(&wanted)?;
        let mut key = Sha256::new();
        key.update(self.kernel.release.as_bytes());
        key.update(INIT_SCRIPT.as_bytes());
        for m in &modules {
            key.update(m.path.as_os_str().as_bytes());
        }
        let key = hex::encode(&key.finalize()[..8]);
        let path = cache_root().join(format!(
            "basalt-testvm-{}-{key}.cpio.gz",
            self.kernel.release
        ));
        if path.exists() {
            return Ok(path);
        }
        let busybox = std::fs::read("/bin/busybox").map_err(io("reading /bin/busybox"))?;
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut w = CpioWriter::new(gz);
        let mut order = String::new();
        for d in ["bin", "dev", "proc", "sys", "host", "newroot", "modules"] {
            add(&mut w, d, 0o755, Entry::Dir)?;
        }
        add(&mut w, "bin/busybox", 0o755, Entry::File(&busybox))?;
        add(&mut w, "bin/sh", 0o777, Entry::Symlink("busybox"))?;
        add(&mut w, "init", 0o755, Entry::File(INIT_SCRIPT.as_bytes()))?;
        for m in &modules {
            let data =
                std::fs::read(&m.path).map_err(io(format!("reading {}", m.path.display())))?;
            let file = m
                .path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            add(
                &mut w,
                &format!("modules/{file}"),
                0o644,
                Entry::File(&data),
            )?;
            order.push_str(&file);
            order.push('\n');
        }
        add(
            &mut w,
            "modules/order",
            0o644,
            Entry::File(order.as_bytes()),
        )?;
        let bytes = w
            .finish()
            .and_then(|gz| gz.finish())
            .map_err(io("compressing the initramfs"))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(cache_root()).map_err(io("initramfs temp file"))?;
        tmp.write_all(&bytes).map_err(io("writing the initramfs"))?;
        tmp.persist(&path).map_err(|e| VmError::Io {
            context: format!("saving {}", path.display()),
            source: e.error,
        })?;
        Ok(path)
    }
}

/// PID 1 of the guest. Kept as a busybox script: it must run before anything of ours is mounted.
const INIT_SCRIPT: &str = r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod /modules/$m || echo "testvm: insmod $m failed"; done
fail() { echo "testvm: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro host /host || fail "cannot mount the host over 9p"
mount -t tmpfs -o size=75% tmpfs /newroot
mkdir -p /newroot/upper /newroot/work /newroot/root
mount -t overlay overlay -o lowerdir=/host,upperdir=/newroot/upper,workdir=/newroot/work /newroot/root || fail "overlay"
r=/newroot/root
mount --move /proc $r/proc; mount --move /sys $r/sys; mount --move /dev $r/dev
mount -t tmpfs -o mode=755 tmpfs $r/run
mount -t cgroup2 -o nsdelegate cgroup2 $r/sys/fs/cgroup || fail "cannot mount cgroup2"
mkdir -p $r/dev/pts $r/dev/shm $r/run/testvm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $r/dev/pts; mount -t tmpfs -o mode=1777 shm $r/dev/shm
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out $r/run/testvm || fail "cannot mount the exchange share"
for c in $(cat $r/sys/fs/cgroup/cgroup.controllers); do echo "+$c" > $r/sys/fs/cgroup/cgroup.subtree_control; done
ip link set lo up
hostname testvm
chroot $r /bin/sh /run/testvm/job.sh > $r/run/testvm/stdout 2> $r/run/testvm/stderr < $r/dev/null
echo $? > $r/run/testvm/exit-code
sync
poweroff -f
"#;

fn add<W: Write>(
    w: &mut CpioWriter<W>,
    path: &str,
    perm: u32,
    entry: Entry<'_>,
) -> Result<(), VmError> {
    w.add(path, perm, entry)
        .map_err(io("writing the initramfs"))
}

fn cache_root() -> PathBuf {
    // /var/tmp, not /tmp: qemu's 9p share and the cached initramfs should survive a tmpfs /tmp being small.
    std::env::var_os("BASALT_TESTVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

fn shell_quote(s: &[u8]) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(prog))
            .find(|p| p.is_file())
    })
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn strip_console(s: &str) -> String {
    s.replace('\r', "")
}

fn tail(s: &str) -> String {
    let lines: Vec<_> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        let arg = "it's a \"test\" $HOME `x`";
        let out = Command::new("sh")
            .arg("-c")
            .arg(OsString::from(format!(
                "printf %s {}",
                String::from_utf8(shell_quote(arg.as_bytes())).unwrap()
            )))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), arg);
    }
}
