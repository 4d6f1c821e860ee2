//! `basalt init`: PID 1 of the node image.
//!
//! Order of work: pseudo filesystems, log, configuration, kernel modules, host name, state directory,
//! preloaded images, network (in the background), then the supervision loop: reap zombies, keep the agent
//! running, redraw the console, and on a reboot/power-off request stop everything, release the DHCP lease,
//! sync, unmount and reset. Nothing here panics or exits on a bad part: the node comes up with what works and
//! shows what did not.
//!
//! The agent learns the node's address (status.hostIP) when it starts, so it starts once the network has an
//! address (or after [`NETWORK_WAIT`] without one), and is restarted when the address changes; its pods keep
//! running across that. PID 1 hands the address over as `agent.node-ip` in the effective config, unless the
//! operator set one.
//!
//! Signals (busybox/sysvinit conventions): SIGTERM and SIGINT (Ctrl-Alt-Del) reboot; SIGUSR1, SIGUSR2 and
//! SIGPWR (also raised by the ACPI power button) power off. SIGRTMIN only wakes the loop: the network thread
//! raises it when the address changes.

pub mod config;
mod disk;
mod log;
mod modules;
mod mounts;
mod net;
mod power;
mod status;
mod supervise;
mod switch_root;

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::layout;

/// Time a stopping node gives its processes between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// The status block is redrawn on change and at least this often.
const REDRAW: Duration = Duration::from_secs(30);
/// How long the agent's first start waits for the network's first address.
const NETWORK_WAIT: Duration = Duration::from_secs(10);

/// Runs as PID 1 (or `basalt init`); `args[0]` is the program name.
pub fn main(args: Vec<OsString>) -> ExitCode {
    if std::process::id() != 1 {
        eprintln!(
            "basalt init: refusing to run as pid {}: it mounts filesystems and reboots the machine, so it only \
             runs as PID 1 of the node image (`basalt node-image build`)",
            std::process::id()
        );
        return ExitCode::from(2);
    }
    run(&args)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Reboot,
    PowerOff,
}

fn run(args: &[OsString]) -> ! {
    // Returns only when already switched or when switching failed (reported once the log is open).
    let switched = switch_root::to_tmpfs(args);
    mounts::mount_all();
    let _ = std::fs::create_dir_all(layout::RUN_DIR);
    log::open_sinks(Some(layout::LOG));
    log::info(format!(
        "basalt {} init starting",
        env!("CARGO_PKG_VERSION")
    ));
    if let Err(e) = switched {
        log::error(format!(
            "switching the root to a tmpfs: {e} (containers cannot pivot_root from rootfs)"
        ));
    }

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let file =
        std::fs::read_to_string(layout::CONFIG).map_err(|e| format!("{}: {e}", layout::CONFIG));
    let settings = config::load(file, &cmdline);
    for e in &settings.errors {
        log::error(e);
    }
    write_effective_config(&settings, None);

    modules::load_all();
    let hostname = settings.hostname().to_owned();
    // SAFETY: pointer and length of a live string.
    if unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) } != 0 {
        log::error(format!(
            "hostname {hostname}: {}",
            std::io::Error::last_os_error()
        ));
    } else {
        log::info(format!("hostname {hostname}"));
    }

    // From here the signals we act on are only taken by sigtimedwait in the loop; threads inherit the mask.
    let waited = signal_set();
    // SAFETY: a valid, initialised set.
    unsafe { libc::sigprocmask(libc::SIG_BLOCK, &waited, std::ptr::null_mut()) };
    // Ctrl-Alt-Del becomes SIGINT to us instead of an immediate reset.
    // SAFETY: plain syscall.
    unsafe { libc::reboot(libc::LINUX_REBOOT_CMD_CAD_OFF) };
    power::watch_buttons();

    let state = disk::prepare(&settings).to_string();
    let images = link_preloaded();
    let manifests = std::fs::read_dir(layout::MANIFESTS_DIR).map_or(0, |d| d.count());

    if let Err(e) = net::loopback_up() {
        log::error(e);
    }
    let network_since = Instant::now();
    // SAFETY: signalling ourselves; the loop takes it with sigtimedwait.
    let network = net::Network::start(&settings, || unsafe {
        libc::kill(libc::getpid(), libc::SIGRTMIN());
    });
    let node_ip_pinned = settings
        .node
        .agent
        .as_ref()
        .and_then(|a| a.get("node-ip"))
        .is_some();
    // The address the effective config gives the agent.
    let mut handed_over: Option<Ipv4Addr> = None;
    if let Some(port) = settings.init.status_port {
        status::serve_healthz(port);
    }

    let mut agent = supervise::Supervised::new(
        "agent",
        "/init",
        &["agent", "--config", layout::EFFECTIVE_CONFIG],
        layout::AGENT_LOG,
    );
    // The hostpath CSI plugin, when the config asks for it (a `csi:` section): its base directory defaults to
    // <data-dir>/csi, on the state disk when there is one.
    let mut csi = settings.node.csi.is_some().then(|| {
        supervise::Supervised::new(
            "csi",
            "/init",
            &["csi", "--config", layout::EFFECTIVE_CONFIG],
            layout::CSI_LOG,
        )
    });
    let mut last_drawn = String::new();
    let mut drawn_at = Instant::now();
    loop {
        let node_ip = network.address();
        if !node_ip_pinned && node_ip.is_some() && node_ip != handed_over {
            write_effective_config(&settings, node_ip);
            if let (Some(old), Some(new)) = (handed_over, node_ip) {
                agent.restart(&format!("the node address changed from {old} to {new}"));
            } else if agent.pid.is_some() {
                agent.restart("the node has an address now");
            }
            handed_over = node_ip;
        }
        let waiting_for_network = !network.settled() && network_since.elapsed() < NETWORK_WAIT;
        let mut wait = if waiting_for_network {
            NETWORK_WAIT.saturating_sub(network_since.elapsed())
        } else {
            agent.tick().unwrap_or(REDRAW)
        }
        .min(Duration::from_secs(5));
        if let Some(w) = csi.as_mut().and_then(|c| c.tick()) {
            wait = wait.min(w);
        }
        if let Some(stop) = wait_signal(&waited, wait) {
            shutdown(stop, &network);
        }
        reap(|pid, status| {
            if !agent.reaped(pid, status) && !csi.as_mut().is_some_and(|c| c.reaped(pid, status)) {
                // An orphan re-parented to us (its parent died before waiting for it).
                log::info(format!("reaped orphan pid {pid} (wait status {status:#x})"));
            }
        });
        let net_now = network.shown();
        // A dead agent's last summary would show pods as running that nobody watches.
        let pods = agent
            .pid
            .and_then(|_| std::fs::read_to_string(layout::POD_SUMMARY).ok());
        let key = format!(
            "{net_now}|{}|{:?}|{:?}|{pods:?}",
            agent.restarts,
            agent.pid,
            log::errors().0
        );
        if key != last_drawn || drawn_at.elapsed() >= REDRAW {
            let agent_state = agent.state();
            let block = status::Status {
                node: &hostname,
                network: &net_now,
                state: &state,
                images,
                manifests,
                agent: &agent_state,
                pods: pods.as_deref(),
            }
            .render();
            log::console_block(&block);
            last_drawn = key;
            drawn_at = Instant::now();
        }
    }
}

fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [
            libc::SIGCHLD,
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPWR,
            libc::SIGRTMIN(),
        ] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Waits up to `timeout` for one of our signals; a reboot/power-off request is returned, SIGCHLD just wakes.
fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<Stop> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timeout; info may be null.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    match sig {
        libc::SIGTERM | libc::SIGINT => Some(Stop::Reboot),
        libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGPWR => Some(Stop::PowerOff),
        _ => None,
    }
}

/// Collects every exited child (zombies of any process reparented to us included).
fn reap(mut on_exit: impl FnMut(i32, libc::c_int)) -> bool {
    let mut any_left = true;
    loop {
        let mut status = 0;
        // SAFETY: valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            on_exit(pid, status);
            continue;
        }
        if pid < 0 {
            any_left = false;
        }
        return any_left;
    }
}

fn shutdown(stop: Stop, network: &net::Network) -> ! {
    let what = match stop {
        Stop::Reboot => "reboot",
        Stop::PowerOff => "power-off",
    };
    log::info(format!(
        "{what} requested: stopping all processes (grace {GRACE:?})"
    ));
    // SAFETY: signalling every process but ourselves.
    unsafe { libc::kill(-1, libc::SIGTERM) };
    let set = signal_set();
    let deadline = Instant::now() + GRACE;
    let mut killed = false;
    while reap(|_, _| {}) {
        if Instant::now() >= deadline {
            if killed {
                break;
            }
            log::error("processes still running after the grace period; killing them");
            // SAFETY: as above.
            unsafe { libc::kill(-1, libc::SIGKILL) };
            killed = true;
        }
        // Woken by SIGCHLD as children exit; a further reboot request changes nothing.
        wait_signal(&set, Duration::from_millis(200));
    }
    // Nothing uses the address any more: give it back so the server can reuse it at once.
    network.release();
    keep_log();
    // SAFETY: plain syscalls.
    unsafe { libc::sync() };
    mounts::unmount_for_shutdown();
    unsafe { libc::sync() };
    log::info(format!("{what} now"));
    let cmd = match stop {
        Stop::Reboot => libc::RB_AUTOBOOT,
        Stop::PowerOff => libc::RB_POWER_OFF,
    };
    // SAFETY: PID 1 resetting the machine after syncing; returns only on failure.
    unsafe { libc::reboot(cmd) };
    log::error(format!("reboot(2): {}", std::io::Error::last_os_error()));
    // PID 1 must not exit; nothing is left to do but wait.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// The node config PID 1 hands to the agent and the CSI plugin, with the node's address as `agent.node-ip` once
/// it has one; replaced whole, so a program starting meanwhile reads the old or the new file, not half of one.
fn write_effective_config(settings: &config::Settings, node_ip: Option<Ipv4Addr>) {
    let mut node = settings.node.clone();
    if let Some(ip) = node_ip {
        let mut agent = match node.agent.take() {
            Some(serde_yaml::Value::Mapping(m)) => m,
            _ => serde_yaml::Mapping::new(),
        };
        agent.insert("node-ip".into(), ip.to_string().into());
        node.agent = Some(serde_yaml::Value::Mapping(agent));
    }
    let tmp = format!("{}.new", layout::EFFECTIVE_CONFIG);
    if let Err(e) = std::fs::write(&tmp, node.to_yaml())
        .and_then(|()| std::fs::rename(&tmp, layout::EFFECTIVE_CONFIG))
    {
        log::error(format!("{}: {e}", layout::EFFECTIVE_CONFIG));
    }
}

/// Copies this boot's log, the agent's and the CSI plugin's onto the state disk (`init/last-boot.log`,
/// `init/last-agent.log`, `init/last-csi.log`) so the next boot, or an operator
/// reading the disk, can see what happened; a RAM state directory just loses it with everything else.
fn keep_log() {
    let dir = std::path::Path::new(layout::STATE_DIR).join("init");
    if dir.is_dir() {
        log::info(format!(
            "saving this boot's log to {}/last-boot.log",
            dir.display()
        ));
        if let Err(e) = std::fs::copy(layout::LOG, dir.join("last-boot.log")) {
            log::error(format!("saving the log: {e}"));
        }
        if let Err(e) = std::fs::copy(layout::AGENT_LOG, dir.join("last-agent.log")) {
            log::error(format!("saving the agent log: {e}"));
        }
        if std::path::Path::new(layout::CSI_LOG).exists() {
            if let Err(e) = std::fs::copy(layout::CSI_LOG, dir.join("last-csi.log")) {
                log::error(format!("saving the CSI plugin's log: {e}"));
            }
        }
    }
}

/// Links each preloaded archive into the agent's air-gap import directory and names its images.
fn link_preloaded() -> usize {
    let list = std::fs::read_to_string(layout::PRELOAD_LIST).unwrap_or_default();
    let mut n = 0;
    for line in list.lines() {
        let Some((name, file)) = line.split_once(' ') else {
            continue;
        };
        let _ = std::fs::create_dir_all(layout::AIRGAP_DIR);
        let link = std::path::Path::new(layout::AIRGAP_DIR).join(file);
        let target = std::path::Path::new(layout::PRELOAD_DIR).join(file);
        let _ = std::fs::remove_file(&link);
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => {
                log::info(format!("preloaded image {name} ({file})"));
                n += 1;
            }
            Err(e) => log::error(format!(
                "preloaded image {name}: linking {}: {e}",
                link.display()
            )),
        }
    }
    n
}
