//! `basalt shim ARGS`: parse, check, then hand over to the daemon.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::daemon::Config;
use crate::pin::{IdMap, Namespace, PinSpec};

/// Starts the monitor of one pod. Prints `{"pid":…,"namespaces":{…}}` once it serves on `DIR/shim.sock`.
#[derive(Debug, Parser)]
#[command(name = "basalt shim")]
pub struct Args {
    /// The pod sandbox this monitor belongs to (answered to `Ping`).
    #[arg(long)]
    pub sandbox_id: String,
    /// The monitor's own directory (created 0700; must be empty if it exists).
    #[arg(long)]
    pub dir: PathBuf,
    /// The runtime library's state root for this pod's containers.
    #[arg(long)]
    pub runtime_root: PathBuf,
    /// Namespaces to create and pin for the pod's containers to join.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub pin: Vec<Namespace>,
    /// The pod's hostname (needs `--pin uts`).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A namespaced sysctl for the pod, KEY=VALUE (repeatable).
    #[arg(long = "sysctl", value_parser = crate::pin::parse_sysctl)]
    pub sysctls: Vec<(String, String)>,
    /// A uid mapping of the pinned user namespace, CONTAINER:HOST:SIZE (repeatable).
    #[arg(long = "uid-map", value_parser = crate::pin::parse_id_map)]
    pub uid_map: Vec<IdMap>,
    /// A gid mapping of the pinned user namespace, CONTAINER:HOST:SIZE (repeatable).
    #[arg(long = "gid-map", value_parser = crate::pin::parse_id_map)]
    pub gid_map: Vec<IdMap>,
    /// The daemon's log level (its log is DIR/shim.log).
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl Args {
    /// What the daemon starts with.
    pub fn config(self) -> Config {
        let mut namespaces = self.pin;
        namespaces.sort();
        namespaces.dedup();
        Config {
            sandbox_id: self.sandbox_id,
            dir: self.dir,
            runtime_root: self.runtime_root,
            pins: PinSpec {
                namespaces,
                hostname: self.hostname,
                sysctls: self.sysctls,
                uid_map: self.uid_map,
                gid_map: self.gid_map,
            },
            log_level: self.log_level,
        }
    }
}

/// `basalt shim ARGS`: `args` is the whole argument vector, the command's name first (`["basalt shim",
/// "--sandbox-id", …]`). Returns once the daemon serves (exit 0, the JSON line on stdout) or failed to start
/// (non-zero, the error on stderr, nothing left behind).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args = match Args::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match crate::daemon::start(args.config()) {
        Ok(ready) => {
            println!(
                "{}",
                serde_json::to_string(&ready).expect("ready line serializes")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("basalt shim: {e:#}");
            ExitCode::FAILURE
        }
    }
}
