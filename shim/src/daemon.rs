//! From `basalt shim ARGS` to a serving daemon: the foreground process checks the arguments and the directory,
//! double-forks, and waits for the daemon's one-line report (ready, or the error after it undid everything).

use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use nix::unistd::{fork, ForkResult};

use crate::monitor::Monitor;
use crate::pin::{PinSpec, Pins};
use crate::spawn::Ready;

/// What the daemon is started with (what `basalt shim ARGS` says).
#[derive(Debug, Clone)]
pub struct Config {
    /// The pod sandbox this monitor belongs to (answered to `Ping`).
    pub sandbox_id: String,
    /// The monitor's own directory (created 0700; must be empty if it exists).
    pub dir: std::path::PathBuf,
    /// The runtime library's state root for this pod's containers.
    pub runtime_root: std::path::PathBuf,
    /// The pod's namespaces, hostname, sysctls and id maps.
    pub pins: PinSpec,
    /// A tracing filter for `DIR/shim.log`.
    pub log_level: String,
}

/// Starts the daemon and returns what it reported once it serves.
pub(crate) fn start(mut args: Config) -> anyhow::Result<Ready> {
    let spec = args.pins.clone();
    spec.validate()?;
    if args.sandbox_id.is_empty() {
        bail!("--sandbox-id must not be empty");
    }
    args.dir = std::path::absolute(&args.dir).context("--dir")?;
    args.runtime_root = std::path::absolute(&args.runtime_root).context("--runtime-root")?;
    let created = prepare_dir(&args.dir)?;
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    // SAFETY: the child only forks again (or exits); the grandchild becomes the daemon and leaves through
    // `exit`, never returning into the caller.
    match unsafe { fork() } {
        Err(e) => {
            undo_dir(&args.dir, created);
            Err(anyhow!("fork: {e}"))
        }
        Ok(ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            // SAFETY: as above.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => daemon(args, spec, created, w),
                // SAFETY: leaving the intermediate child without running the caller's destructors.
                _ => unsafe { libc::_exit(0) },
            }
        }
        Ok(ForkResult::Parent { child }) => {
            drop(w);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut line = String::new();
            let _ = std::io::BufReader::new(std::fs::File::from(r)).read_line(&mut line);
            if let Some(json) = line.strip_prefix("ok ") {
                return serde_json::from_str(json.trim_end()).context("the daemon's ready line");
            }
            if let Some(e) = line.strip_prefix("error ") {
                return Err(anyhow!("{}", e.trim_end()));
            }
            // The daemon died before it could report: undo what it may have left.
            let _ = crate::pin::unpin(&args.dir);
            undo_dir(&args.dir, created);
            Err(anyhow!("the monitor died during startup"))
        }
    }
}

/// Creates `dir` (0700), or accepts an existing empty one. Returns whether it was created.
fn prepare_dir(dir: &Path) -> anyhow::Result<bool> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut entries =
                std::fs::read_dir(dir).with_context(|| format!("--dir {}", dir.display()))?;
            if entries.next().is_some() {
                bail!(
                    "--dir {}: not empty (is a monitor already running there?)",
                    dir.display()
                );
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("--dir {}", dir.display()))?;
            Ok(false)
        }
        Err(e) => Err(anyhow!("--dir {}: {e}", dir.display())),
    }
}

/// Removes `dir` if we created it, else empties it again.
fn undo_dir(dir: &Path, created: bool) {
    if created {
        let _ = std::fs::remove_dir_all(dir);
    } else if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

/// In the daemon: set up, report, serve, exit. Never returns.
fn daemon(args: Config, spec: PinSpec, created: bool, report: OwnedFd) -> ! {
    let mut report = std::fs::File::from(report);
    let code = match setup(&args, &spec) {
        Ok((monitor, listener, ready, _log)) => {
            let line = format!(
                "ok {}\n",
                serde_json::to_string(&ready).expect("ready serializes")
            );
            let _ = report.write_all(line.as_bytes());
            drop(report);
            match crate::server::run(monitor, listener) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "monitor failed");
                    1
                }
            }
        }
        Err(e) => {
            undo_dir(&args.dir, created);
            let _ = report
                .write_all(format!("error {}\n", format!("{e:#}").replace('\n', " ")).as_bytes());
            1
        }
    };
    std::process::exit(code)
}

type Setup = (
    Monitor,
    std::os::unix::net::UnixListener,
    Ready,
    tracing::dispatcher::DefaultGuard,
);

fn setup(args: &Config, spec: &PinSpec) -> anyhow::Result<Setup> {
    let _ = std::env::set_current_dir("/");
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd).context("stdio onto /dev/null")?;
    }
    // SAFETY: prctl with constant arguments. Processes exec'd in containers (whose intermediate parent exits)
    // come back to us to be reaped.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        );
    }
    let pins = Pins::create(&args.dir, spec)?;

    let log_path = crate::paths::log(&args.dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("{}", log_path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(std::sync::Mutex::new(log))
        .with_ansi(false)
        .with_env_filter(filter)
        .finish();
    // Thread-local (we have one thread): wins over whatever global subscriber the binary set up.
    let log_guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(subscriber));

    let sock = crate::paths::socket(&args.dir);
    let listener = std::os::unix::net::UnixListener::bind(&sock)
        .with_context(|| format!("listening on {}", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}", sock.display()))?;
    let pid = std::process::id() as i32;
    let pid_file = crate::paths::pid_file(&args.dir);
    std::fs::write(&pid_file, pid.to_string())
        .with_context(|| format!("{}", pid_file.display()))?;
    let ready = Ready {
        pid,
        namespaces: pins
            .paths
            .iter()
            .map(|(ns, p)| (ns.name().to_owned(), p.clone()))
            .collect(),
    };
    tracing::info!(sandbox = %args.sandbox_id, pid, holder = ?pins.holder(), "monitor started");
    let monitor = Monitor {
        sandbox_id: args.sandbox_id.clone(),
        dir: args.dir.clone(),
        runtime_root: args.runtime_root.clone(),
        containers: Default::default(),
        waiters: Default::default(),
        pins,
    };
    Ok((monitor, listener, ready, log_guard))
}
