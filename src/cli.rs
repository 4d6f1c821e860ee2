//! The command-line surface. Global flags mirror the config file key for key (see `basalt config`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use basalt_config::{LogFormat, LogLevel, Overrides};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "basalt",
    version,
    about = "Embedded-first Kubernetes node stack: kubelet, CRI, OCI runtime, CNI and CSI in one binary",
    long_about = None,
    after_help = "Installed as a link named `bridge` or `host-local` it is that CNI plugin, named `basalt-runc` the \
OCI runtime, named `init` PID 1 of the node image."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after any subcommand; each overrides the config-file key of the same name.
#[derive(Args)]
pub struct GlobalArgs {
    /// Config file [default: /etc/basalt/config.yaml when it exists]
    #[arg(long, global = true, env = "BASALT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Root of all persistent state [config: data-dir; default: /var/lib/basalt]
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Root of all runtime files: sockets, pid files [config: run-dir; default: /run/basalt]
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// error, warn, info, debug or trace [config: log-level; default: info]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// text or json [config: log-format; default: text]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// This node's name [config: node-name; default: the host name]
    #[arg(long, global = true, value_name = "NAME")]
    pub node_name: Option<String>,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            run_dir: self.run_dir.clone(),
            log_level: self.log_level,
            log_format: self.log_format,
            node_name: self.node_name.clone(),
        }
    }
}

/// `basalt server`: the control plane's flags, then the node's (those of `basalt agent`).
#[derive(Args)]
pub struct ServerCommand {
    #[command(flatten)]
    pub server: basalt_controlplane::ServerArgs,
    /// Run the control plane only, with no node on this machine (k3s's --disable-agent)
    #[arg(long)]
    pub disable_agent: bool,
    #[command(flatten)]
    pub agent: basalt_agent::AgentArgs,
}

/// Arguments handed unparsed to a component with its own command line.
#[derive(Args)]
pub struct PassThrough {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

#[derive(Subcommand)]
pub enum Command {
    /// OCI runtime with a runc-compatible CLI (create, start, run, kill, delete, …; see `basalt runtime --help`)
    Runtime(PassThrough),
    /// Node agent: kubelet and CRI server (`--cri-only`: the CRI server alone)
    Agent(Box<basalt_agent::AgentArgs>),
    /// Pod monitor, started by the agent once per pod (not for interactive use)
    #[command(hide = true)]
    Shim(PassThrough),
    /// A whole single-node cluster: the control plane (apiserver on embedded SQLite or etcd, scheduler) and
    /// this machine's node (CRI server and kubelet), as `k3s server`
    Server(Box<ServerCommand>),
    /// Container images: pull, import, export, list, inspect, remove
    Image(basalt_images::cli::ImageArgs),
    /// Build and boot the node image (kernel + initramfs with basalt as PID 1)
    #[command(subcommand)]
    NodeImage(NodeImageCommand),
    /// PID 1 of the node image
    Init(PassThrough),
    /// Run as a CNI plugin (bridge with host-local IPAM), driven by CNI_* variables and stdin
    Cni(CniArgs),
    /// The hostpath CSI plugin: Identity, Controller and Node services on a unix socket
    Csi(basalt_csi::CsiArgs),
    /// Print the effective configuration (defaults < config file < flags) as YAML
    Config,
    /// Print the version
    Version,
}

#[derive(Args)]
pub struct CniArgs {
    /// Which plugin to act as
    #[arg(long, value_enum, default_value = "bridge")]
    pub plugin: CniPlugin,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CniPlugin {
    Bridge,
    HostLocal,
}

impl From<CniPlugin> for basalt_cni::PluginKind {
    fn from(p: CniPlugin) -> Self {
        match p {
            CniPlugin::Bridge => basalt_cni::PluginKind::Bridge,
            CniPlugin::HostLocal => basalt_cni::PluginKind::HostLocal,
        }
    }
}

#[derive(Subcommand)]
pub enum NodeImageCommand {
    /// Build vmlinuz + initramfs from a kernel, config, manifests and preloaded images
    Build(PassThrough),
    /// Boot a built node image in qemu
    Boot(PassThrough),
    /// Run one command in a throw-away qemu guest with a pure cgroup v2 hierarchy (the test VM)
    VmRun(VmRunArgs),
}

#[derive(Args)]
pub struct VmRunArgs {
    /// Guest memory in MiB
    #[arg(short = 'm', long, default_value_t = 1024)]
    pub memory: u32,
    /// Guest CPUs
    #[arg(short = 's', long, default_value_t = 2)]
    pub cpus: u32,
    /// Give up (exit 124) after this many seconds
    #[arg(short = 't', long, default_value_t = 600)]
    pub timeout: u64,
    /// Print the guest's serial console after the command's output
    #[arg(long)]
    pub console: bool,
    /// The command, run in the current directory as seen by the guest
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
}

pub fn vm_run(args: VmRunArgs) -> ExitCode {
    use basalt_initramfs::testvm::{TestVm, VmError};
    let cwd = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("basalt: current directory: {e}");
            return ExitCode::from(125);
        }
    };
    let vm = match TestVm::new() {
        Ok(vm) => vm
            .memory_mb(args.memory)
            .cpus(args.cpus)
            .timeout(Duration::from_secs(args.timeout)),
        Err(e) => {
            eprintln!("basalt: {e}");
            return ExitCode::from(125);
        }
    };
    match vm.run(&args.command, &cwd) {
        Ok(out) => {
            print!("{}", out.stdout);
            eprint!("{}", out.stderr);
            if args.console {
                eprintln!("--- guest console ---\n{}", out.console);
            }
            ExitCode::from(u8::try_from(out.exit_code).unwrap_or(1))
        }
        Err(e @ VmError::Timeout(..)) => {
            eprintln!("basalt: {e}");
            ExitCode::from(124)
        }
        Err(e) => {
            eprintln!("basalt: {e}");
            ExitCode::from(125)
        }
    }
}
