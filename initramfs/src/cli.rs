//! `basalt node-image build` and `basalt node-image boot`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;

use crate::boot::{BootOptions, Vm};
use crate::builder::{BuildSpec, NODE_MODULES};
use crate::kernel::Kernel;

/// Build vmlinuz + initramfs.cpio.gz with `basalt` as PID 1.
#[derive(Parser, Debug)]
#[command(name = "basalt node-image build")]
pub struct BuildArgs {
    /// Kernel image (vmlinuz-<release>; modules come from /lib/modules/<release>) [default: newest in /boot]
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Node config to embed as /etc/basalt/config.yaml [default: all defaults, DHCP]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory of static pod manifests (*.yaml, *.yml, *.json) for /etc/basalt/manifests
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// OCI or docker image archive to pre-load (repeatable)
    #[arg(long, value_name = "ARCHIVE")]
    pub preload: Vec<PathBuf>,
    /// The program to embed as /init [default: this basalt binary]
    #[arg(long, value_name = "FILE")]
    pub binary: Option<PathBuf>,
    /// Extra kernel module to include (repeatable); one this kernel lacks is a warning
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Leave out mke2fs (PID 1 then cannot format a blank state disk)
    #[arg(long)]
    pub no_mkfs: bool,
    /// Output directory
    #[arg(short = 'o', long = "output", value_name = "OUTDIR")]
    pub out: PathBuf,
}

/// Boot a built image in qemu (TCG).
#[derive(Parser, Debug)]
#[command(name = "basalt node-image boot")]
pub struct BootArgs {
    /// Directory written by `basalt node-image build`
    pub image_dir: PathBuf,
    /// Forward a host port: tcp:HOSTADDR:PORT-:GUESTPORT (repeatable)
    #[arg(long, value_name = "RULE")]
    pub hostfwd: Vec<String>,
    /// Write the serial console to FILE [default: this terminal]
    #[arg(long, value_name = "FILE")]
    pub serial_log: Option<PathBuf>,
    /// Raw disk image for /var/lib/basalt; created blank when missing and formatted by the guest
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// Size of a newly created --disk, MiB
    #[arg(long, default_value_t = 1024, value_name = "MB")]
    pub disk_size: u64,
    /// Guest memory, MiB
    #[arg(long, default_value_t = 512, value_name = "MB")]
    pub memory: u32,
    /// Guest CPUs
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Extra kernel command-line argument, e.g. basalt.ip=10.0.2.15/24 (repeatable)
    #[arg(long, value_name = "ARG")]
    pub append: Vec<String>,
    /// Exit when the guest reboots
    #[arg(long)]
    pub no_reboot: bool,
}

pub fn build(args: Vec<OsString>) -> ExitCode {
    let args = match BuildArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run_build(args) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("basalt node-image build: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run_build(a: BuildArgs) -> anyhow::Result<crate::builder::BuildReport> {
    let kernel = match &a.kernel {
        Some(k) => Kernel::from_image(k)?,
        None => Kernel::host_default()?,
    };
    let binary = match a.binary {
        Some(b) => b,
        None => std::env::current_exe()?,
    };
    let mkfs = PathBuf::from("/usr/sbin/mke2fs");
    let spec = BuildSpec {
        kernel,
        binary,
        config: a.config,
        manifests: a.manifests,
        preload: a.preload,
        extra_modules: a.modules,
        mkfs: (!a.no_mkfs && mkfs.exists()).then_some(mkfs),
        out_dir: a.out,
    };
    if let Some(c) = &spec.config {
        // Fail early on a config the node would reject; the node itself copes, but a build should not.
        crate::pid1::config::check_file(c)?;
    }
    let report = crate::builder::build(&spec)?;
    for m in &report.missing_modules {
        let default = if NODE_MODULES.contains(&m.as_str()) {
            " (default set)"
        } else {
            ""
        };
        eprintln!(
            "warning: module {m}{default} is not in kernel {}",
            spec.kernel.release
        );
    }
    Ok(report)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn boot(args: Vec<OsString>) -> ExitCode {
    let a = match BootArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let opts = BootOptions {
        image_dir: a.image_dir,
        hostfwd: a.hostfwd,
        serial_log: a.serial_log,
        disk: a.disk,
        disk_size_mb: a.disk_size,
        memory_mb: a.memory,
        cpus: a.cpus,
        append: a.append,
        no_reboot: a.no_reboot,
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    }
    let mut vm = match Vm::start(&opts) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("basalt node-image boot: {e:#}");
            return ExitCode::from(1);
        }
    };
    loop {
        match vm.wait_timeout(Duration::from_millis(200)) {
            Ok(Some(status)) => {
                return ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
            }
            Ok(None) => {}
            Err(e) => {
                eprintln!("basalt node-image boot: {e:#}");
                return ExitCode::from(1);
            }
        }
        if STOP.load(Ordering::SeqCst) {
            eprintln!("basalt node-image boot: asking the guest to power down (ACPI)");
            if let Err(e) = vm.powerdown() {
                eprintln!("basalt node-image boot: {e:#}");
            }
            return match vm.wait_timeout(Duration::from_secs(60)) {
                Ok(Some(status)) => ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8),
                _ => {
                    eprintln!(
                        "basalt node-image boot: guest did not power down in 60 s; killing qemu"
                    );
                    vm.kill();
                    ExitCode::from(1)
                }
            };
        }
    }
}
