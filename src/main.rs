//! `basalt`: one static multi-call binary for the whole node. This file only dispatches, by `argv[0]` first
//! (`bridge`, `host-local`, `basalt-runc`, `init`) and then by subcommand; the work lives in the member crates.

mod cli;
mod logging;
mod personality;
mod server;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, NodeImageCommand};
use personality::Personality;

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    match Personality::from_argv0(&argv0) {
        Personality::Basalt => {}
        Personality::CniPlugin(kind) => return basalt_cni::plugin_main(kind),
        Personality::Runc => {
            logging::init(
                basalt_config::LogLevel::Warn,
                basalt_config::LogFormat::Text,
            );
            return basalt_runtime::cli::main(std::env::args_os());
        }
        // The node image's `/init` re-executes itself (`/proc/self/exe`) for the agent and the pod
        // monitors: only PID 1 is init, any other process under that name is the subcommand CLI.
        Personality::Init if std::process::id() == 1 => {
            return basalt_initramfs::pid1::main(std::env::args_os().collect())
        }
        Personality::Init => {}
    }

    let cli = Cli::parse();
    let config =
        match basalt_config::Config::load(cli.global.config.as_deref(), &cli.global.overrides()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("basalt: {e}");
                return ExitCode::from(2);
            }
        };
    logging::init(config.log_level, config.log_format);
    tracing::debug!(data_dir = %config.data_dir.display(), run_dir = %config.run_dir.display(), "configuration loaded");

    match cli.command {
        Command::Version => {
            println!("basalt {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config => {
            print!("{}", config.to_yaml());
            ExitCode::SUCCESS
        }
        Command::NodeImage(NodeImageCommand::VmRun(args)) => cli::vm_run(args),
        Command::NodeImage(NodeImageCommand::Build(args)) => {
            basalt_initramfs::cli::build(with_name("basalt node-image build", args))
        }
        Command::NodeImage(NodeImageCommand::Boot(args)) => {
            basalt_initramfs::cli::boot(with_name("basalt node-image boot", args))
        }
        Command::Init(args) => basalt_initramfs::pid1::main(with_name("basalt init", args)),
        Command::Runtime(args) => basalt_runtime::cli::main(with_name("basalt runtime", args)),
        Command::Image(args) => basalt_images::cli::run(args, &config),
        Command::Cni(args) => basalt_cni::plugin_main(args.plugin.into()),
        Command::Agent(args) => match basalt_agent::main(&config, *args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("basalt agent: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Shim(args) => basalt_shim::main(with_name("basalt shim", args)),
        Command::Server(cmd) => match server::main(&config, *cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("basalt server: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Csi(args) => match basalt_csi::main(&config, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("basalt csi: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// The argument vector a component's own parser expects: its name, then the rest of the command line.
fn with_name(name: &str, args: cli::PassThrough) -> Vec<std::ffi::OsString> {
    std::iter::once(name.into()).chain(args.args).collect()
}
