//! The runc-compatible command line: `basalt runtime …` or the binary named `basalt-runc`. Flags and output
//! formats follow runc's, so containerd's shim and scripts written for runc drive it unchanged.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::container::{Container, CreateOptions};
use crate::error::{Error, Result};
use crate::state::Status;

#[derive(Parser)]
#[command(
    name = "basalt-runc",
    version,
    about = "Basalt's OCI runtime (runc-compatible command line)"
)]
struct Cli {
    /// Root directory for container state
    #[arg(long, global = true, default_value = "/run/basalt-runc")]
    root: PathBuf,
    /// Append errors to this file (containerd reads its last line)
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// text or json
    #[arg(long, global = true, default_value = "text")]
    log_format: String,
    /// Treat cgroupsPath as systemd's slice:prefix:name (mapped onto cgroupfs)
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone)]
struct CreateArgs {
    id: String,
    /// Bundle directory (holds config.json)
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket to send a terminal's master fd to (needed when process.terminal is true)
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Use a move mount + chroot instead of pivot_root (roots on ramfs)
    #[arg(long)]
    no_pivot: bool,
    /// Pass this many extra descriptors (from fd 3 on) to the container
    #[arg(long, default_value_t = 0)]
    preserve_fds: i32,
    /// Accepted for compatibility
    #[arg(long)]
    no_new_keyring: bool,
}

#[derive(clap::Args)]
struct ExecArgs {
    id: String,
    /// The program and its arguments (unless --process is given)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
    /// A JSON file with the whole OCI `process` object
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long)]
    console_socket: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// KEY=value, added to the container's environment
    #[arg(short, long)]
    env: Vec<String>,
    /// uid[:gid]
    #[arg(short, long)]
    user: Option<String>,
    /// Extra capability for the process
    #[arg(short, long)]
    cap: Vec<String>,
    #[arg(long)]
    no_new_privs: bool,
    #[arg(short = 'g', long)]
    additional_gids: Vec<u32>,
}

#[derive(clap::Args)]
struct UpdateArgs {
    id: String,
    /// OCI linux.resources JSON, or `-` for stdin
    #[arg(short = 'r', long)]
    resources: Option<PathBuf>,
    /// Memory limit in bytes
    #[arg(long)]
    memory: Option<i64>,
    /// Memory + swap limit in bytes (-1 unlimited)
    #[arg(long)]
    memory_swap: Option<i64>,
    #[arg(long)]
    memory_reservation: Option<i64>,
    #[arg(long)]
    pids_limit: Option<i64>,
    #[arg(long)]
    cpu_shares: Option<u64>,
    #[arg(long)]
    cpu_quota: Option<i64>,
    #[arg(long)]
    cpu_period: Option<u64>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long)]
    cpuset_mems: Option<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a container (its process waits until `start`)
    Create(CreateArgs),
    /// Run the created container's process
    Start { id: String },
    /// Create and start a container; waits for it unless --detach, exiting with its code
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON
    State { id: String },
    /// List containers
    List {
        #[arg(short, long, default_value = "table")]
        format: String,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Send a signal (default SIGTERM) to the container's init, or with --all to every process in it
    Kill {
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
        #[arg(short, long)]
        all: bool,
    },
    /// Delete a container's resources (--force kills it first)
    Delete {
        id: String,
        #[arg(short, long)]
        force: bool,
    },
    /// Freeze every process of the container
    Pause { id: String },
    /// Thaw a paused container
    Resume { id: String },
    /// List the container's processes (pids in its cgroup)
    Ps {
        id: String,
        #[arg(short, long, default_value = "table")]
        format: String,
    },
    /// Write a default config.json into the bundle directory
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Print what this runtime supports, as JSON
    Features,
    /// Run a new process in a running container
    Exec(ExecArgs),
    /// Change a running container's resources, from flags or an OCI `linux.resources` JSON (`-r FILE`, `-`)
    Update(UpdateArgs),
    /// Print statistics (`--stats`: once) or stream them with OOM events until the container stops
    Events {
        id: String,
        #[arg(long)]
        stats: bool,
        /// Time between stats events, as runc takes it (`5s`, `500ms`, `1m`)
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        interval: std::time::Duration,
    },
}

/// Runs the CLI with `args` (the first one is the program name, as in `std::env::args_os`).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let log = (cli.log.clone(), cli.log_format.clone());
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            report(&log.0, &log.1, &e.to_string());
            ExitCode::from(1)
        }
    }
}

fn report(log: &Option<PathBuf>, format: &str, msg: &str) {
    eprintln!("basalt-runc: {msg}");
    if let Some(path) = log {
        let line = if format == "json" {
            serde_json::json!({"level": "error", "msg": msg, "time": crate::state::now_rfc3339()})
                .to_string()
        } else {
            format!("level=error msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn create_opts(cli_root: &Path, systemd: bool, a: &CreateArgs) -> Result<CreateOptions> {
    Ok(CreateOptions {
        root: cli_root.to_path_buf(),
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        systemd_cgroup: systemd,
        preserve_fds: a.preserve_fds,
        console_socket: a.console_socket.clone(),
        keep_console: false,
        stdio: None,
    })
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let root = &cli.root;
    match cli.command {
        Cmd::Create(a) => {
            Container::create(&create_opts(root, cli.systemd_cgroup, &a)?)?;
        }
        Cmd::Start { id } => Container::load(root, &id)?.start()?,
        Cmd::Run {
            create,
            detach,
            keep,
        } => {
            let mut opts = create_opts(root, cli.systemd_cgroup, &create)?;
            // In the foreground, a terminal container talks through our own stdio, as with runc.
            opts.keep_console = !detach;
            let mut c = Container::create(&opts)?;
            if let Err(e) = c.start() {
                let _ = Container::load(root, &create.id).and_then(|c| c.delete(true));
                return Err(e);
            }
            if detach {
                return Ok(ExitCode::SUCCESS);
            }
            if let Some(master) = c.console.take() {
                crate::tty::proxy(master)?;
            }
            let code = wait_exit(c.pid());
            if !keep {
                Container::load(root, &create.id)?.delete(true)?;
            }
            return Ok(ExitCode::from(code));
        }
        Cmd::State { id } => {
            let c = Container::load(root, &id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&c.state).unwrap_or_default()
            );
        }
        Cmd::List { format, quiet } => {
            let all = Container::list(root)?;
            if quiet {
                for s in &all {
                    println!("{}", s.id);
                }
            } else if format == "json" {
                println!("{}", serde_json::to_string(&all).unwrap_or_default());
            } else {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<32} OWNER",
                    "ID", "PID", "STATUS", "BUNDLE", "CREATED"
                );
                for s in &all {
                    let pid = if s.status == Status::Stopped {
                        0
                    } else {
                        s.pid
                    };
                    println!(
                        "{:<24} {:<8} {:<10} {:<40} {:<32} {}",
                        s.id,
                        pid,
                        s.status,
                        s.bundle.display(),
                        s.created,
                        s.owner
                    );
                }
            }
        }
        Cmd::Kill { id, signal, all } => {
            let sig = parse_signal(&signal)?;
            Container::load(root, &id)?.kill(sig, all)?;
        }
        Cmd::Delete { id, force } => match Container::load(root, &id) {
            Ok(c) => c.delete(force)?,
            // runc: deleting a container that does not exist is an error, except with --force.
            Err(Error::NotFound(_)) if force => {}
            Err(e) => return Err(e),
        },
        Cmd::Pause { id } => Container::load(root, &id)?.pause(true)?,
        Cmd::Resume { id } => Container::load(root, &id)?.pause(false)?,
        Cmd::Ps { id, format } => {
            let c = Container::load(root, &id)?;
            let pids = crate::cgroup::Cgroup::new(&c.state.cgroup_path)?.pids();
            if format == "json" {
                println!("{}", serde_json::to_string(&pids).unwrap_or_default());
            } else {
                println!("PID");
                for p in pids {
                    println!("{p}");
                }
            }
        }
        Cmd::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                return Err(Error::Io {
                    path,
                    source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "File exists"),
                });
            }
            let spec = oci_spec::runtime::Spec::default();
            let json = serde_json::to_string_pretty(&spec).unwrap_or_default();
            std::fs::write(&path, json).map_err(Error::io(&path))?;
        }
        Cmd::Features => println!("{}", features()),
        Cmd::Exec(a) => {
            let c = Container::load(root, &a.id)?;
            if c.state.status != Status::Running {
                return Err(Error::WrongState {
                    id: a.id.clone(),
                    status: c.state.status,
                    action: "exec",
                    needs: "running",
                });
            }
            let process = exec_process(&c, &a)?;
            let bundle = crate::spec::Bundle::load(&c.state.bundle)?;
            let seccomp =
                crate::init::Seccomp::compile(&bundle.spec, &a.id, &root.join(".seccomp-cache"))?;
            let console = a.console_socket.as_deref();
            return match crate::exec::exec(&c.state, &process, seccomp.as_ref(), console, a.detach)?
            {
                crate::exec::Outcome::Exited(code) => Ok(ExitCode::from(code)),
                crate::exec::Outcome::Detached(pid) => {
                    if let Some(p) = &a.pid_file {
                        std::fs::write(p, pid.to_string()).map_err(Error::io(p))?;
                    }
                    Ok(ExitCode::SUCCESS)
                }
            };
        }
        Cmd::Update(a) => {
            let c = Container::load(root, &a.id)?;
            if c.state.status == Status::Stopped {
                return Err(Error::WrongState {
                    id: a.id.clone(),
                    status: c.state.status,
                    action: "update",
                    needs: "created, running or paused",
                });
            }
            let resources = update_resources(&a)?;
            crate::cgroup::Cgroup::new(&c.state.cgroup_path)?.set(&resources)?;
        }
        Cmd::Events {
            id,
            stats,
            interval,
        } => {
            let c = Container::load(root, &id)?;
            let cg = crate::cgroup::Cgroup::new(&c.state.cgroup_path)?;
            let event = |kind: &str, data: serde_json::Value| {
                println!(
                    "{}",
                    serde_json::json!({"type": kind, "id": id, "data": data})
                );
            };
            if stats {
                event("stats", cg.stats_json());
                return Ok(ExitCode::SUCCESS);
            }
            // Stats every `interval`, an `oom` event as soon as the OOM count rises; ends with the container.
            let mut ooms = cg.oom_kills();
            let mut next_stats = std::time::Instant::now();
            while Container::load(root, &id)
                .map(|c| c.state.status != Status::Stopped)
                .unwrap_or(false)
            {
                let now_ooms = cg.oom_kills();
                if now_ooms > ooms {
                    event("oom", serde_json::Value::Null);
                    ooms = now_ooms;
                }
                if std::time::Instant::now() >= next_stats {
                    event("stats", cg.stats_json());
                    next_stats += interval.max(std::time::Duration::from_millis(100));
                }
                // cgroup v1 offers an eventfd for OOM; polling the counter keeps v1 and v2 on one path.
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `linux.resources` from `-r` or from the flags (runc's names).
fn update_resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    if let Some(path) = &a.resources {
        let bytes = if path.as_os_str() == "-" {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
                .map_err(Error::io("stdin"))?;
            b
        } else {
            std::fs::read(path).map_err(Error::io(path))?
        };
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        return serde_path_to_error::deserialize(de).map_err(|e| {
            Error::spec(
                format!("resources: {}", e.path()),
                e.into_inner().to_string(),
            )
        });
    }
    let mut v = serde_json::json!({});
    let mut set = |section: &str, key: &str, val: serde_json::Value| {
        v[section][key] = val;
    };
    if let Some(m) = a.memory {
        set("memory", "limit", m.into());
    }
    if let Some(m) = a.memory_swap {
        set("memory", "swap", m.into());
    }
    if let Some(m) = a.memory_reservation {
        set("memory", "reservation", m.into());
    }
    if let Some(p) = a.pids_limit {
        set("pids", "limit", p.into());
    }
    if let Some(c) = a.cpu_shares {
        set("cpu", "shares", c.into());
    }
    if let Some(c) = a.cpu_quota {
        set("cpu", "quota", c.into());
    }
    if let Some(c) = a.cpu_period {
        set("cpu", "period", c.into());
    }
    if let Some(c) = &a.cpuset_cpus {
        set("cpu", "cpus", c.clone().into());
    }
    if let Some(c) = &a.cpuset_mems {
        set("cpu", "mems", c.clone().into());
    }
    serde_json::from_value(v).map_err(|e| Error::spec("update flags", e.to_string()))
}

/// The process to exec: `--process` as given, or the container's own process with the flags applied (runc's
/// rules: env is appended, capabilities are added, the rest replaces).
fn exec_process(c: &Container, a: &ExecArgs) -> Result<oci_spec::runtime::Process> {
    if let Some(path) = &a.process {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        return serde_path_to_error::deserialize(de).map_err(|e| {
            Error::spec(format!("process: {}", e.path()), e.into_inner().to_string())
        });
    }
    if a.args.is_empty() {
        return Err(Error::spec("args", "exec needs a command (or --process)"));
    }
    let bundle = crate::spec::Bundle::load(&c.state.bundle)?;
    let base = bundle.spec.process().clone().unwrap_or_default();
    let mut v = serde_json::to_value(&base).map_err(|e| Error::spec("process", e.to_string()))?;
    v["args"] = serde_json::json!(a.args);
    v["terminal"] = serde_json::json!(a.tty);
    if let Some(cwd) = &a.cwd {
        v["cwd"] = serde_json::json!(cwd);
    }
    if !a.env.is_empty() {
        let mut env: Vec<serde_json::Value> = v["env"].as_array().cloned().unwrap_or_default();
        env.extend(a.env.iter().map(|e| serde_json::json!(e)));
        v["env"] = serde_json::Value::Array(env);
    }
    if let Some(user) = &a.user {
        let (uid, gid) = user.split_once(':').unwrap_or((user, "0"));
        let parse = |s: &str| {
            s.parse::<u32>()
                .map_err(|_| Error::spec("--user", format!("{user:?} is not uid[:gid]")))
        };
        v["user"]["uid"] = serde_json::json!(parse(uid)?);
        v["user"]["gid"] = serde_json::json!(parse(gid)?);
    }
    if !a.additional_gids.is_empty() {
        v["user"]["additionalGids"] = serde_json::json!(a.additional_gids);
    }
    for cap in &a.cap {
        for set in ["bounding", "effective", "permitted"] {
            let list = v["capabilities"][set].as_array_mut();
            match list {
                Some(l) => l.push(serde_json::json!(cap)),
                None => v["capabilities"][set] = serde_json::json!([cap]),
            }
        }
    }
    if a.no_new_privs {
        v["noNewPrivileges"] = serde_json::json!(true);
    }
    serde_json::from_value(v).map_err(|e| Error::spec("exec flags", e.to_string()))
}

/// The container's exit code as a shell reports it: the code, or 128 + the signal that killed it.
fn wait_exit(pid: i32) -> u8 {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u8,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128u8.wrapping_add(sig as u8),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return 255,
        }
    }
}

/// Go-style durations (`1h`, `5m`, `30s`, `250ms`); a bare number is seconds.
fn parse_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 5s"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_secs_f64(secs))
}

pub fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n)
            .map_err(|_| Error::spec("signal", format!("{s:?} is not a signal number")));
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    Signal::from_str(&name)
        .map_err(|_| Error::spec("signal", format!("{s:?} is not a signal name")))
}

fn features() -> String {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": [],
        "mountOptions": ["async","atime","bind","defaults","dev","diratime","dirsync","exec","mand","noatime",
            "nodev","nodiratime","noexec","nomand","norelatime","nostrictatime","nosuid","private","rbind","relatime",
            "remount","ro","rprivate","rshared","rslave","runbindable","rw","shared","slave","strictatime","suid",
            "sync","unbindable"],
        "linux": {
            "namespaces": ["cgroup","ipc","mount","network","pid","user","uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": true},
            "selinux": {"enabled": false}
        },
        "annotations": {"org.basalt.runtime.version": env!("CARGO_PKG_VERSION")}
    })
    .to_string()
}
