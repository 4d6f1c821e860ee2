//! Starting a pod monitor from the agent: run `basalt shim ARGS`, wait for its ready line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use crate::pin::Namespace;

/// How to start a monitor. [`SpawnOptions::new`] fills in the production program (`/proc/self/exe shim`).
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The multi-call binary (tests pass their own executable).
    pub program: PathBuf,
    /// Arguments before the monitor's own (`["shim"]` for `basalt`).
    pub program_args: Vec<OsString>,
    pub sandbox_id: String,
    pub dir: PathBuf,
    pub runtime_root: PathBuf,
    pub pin: Vec<Namespace>,
    pub hostname: Option<String>,
    pub sysctls: Vec<(String, String)>,
    /// With `Namespace::User` in `pin`: the user namespace's mappings (container id, host id, size).
    pub uid_map: Vec<(u32, u32, u32)>,
    pub gid_map: Vec<(u32, u32, u32)>,
    /// The monitor's log level (`DIR/shim.log`), a tracing filter.
    pub log_level: String,
}

impl SpawnOptions {
    pub fn new(
        sandbox_id: impl Into<String>,
        dir: impl Into<PathBuf>,
        runtime_root: impl Into<PathBuf>,
    ) -> SpawnOptions {
        SpawnOptions {
            program: PathBuf::from("/proc/self/exe"),
            program_args: vec!["shim".into()],
            sandbox_id: sandbox_id.into(),
            dir: dir.into(),
            runtime_root: runtime_root.into(),
            pin: vec![Namespace::Net, Namespace::Ipc, Namespace::Uts],
            hostname: None,
            sysctls: Vec::new(),
            uid_map: Vec::new(),
            gid_map: Vec::new(),
            log_level: "info".into(),
        }
    }

    /// The monitor's arguments (what follows `shim`).
    pub fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--sandbox-id".into(),
            self.sandbox_id.clone().into(),
            "--dir".into(),
            self.dir.clone().into(),
            "--runtime-root".into(),
            self.runtime_root.clone().into(),
        ];
        if !self.pin.is_empty() {
            let names: Vec<&str> = self.pin.iter().map(|n| n.name()).collect();
            a.push("--pin".into());
            a.push(names.join(",").into());
        }
        if let Some(h) = &self.hostname {
            a.push("--hostname".into());
            a.push(h.into());
        }
        a.push("--log-level".into());
        a.push(self.log_level.clone().into());
        for (flag, maps) in [("--uid-map", &self.uid_map), ("--gid-map", &self.gid_map)] {
            for (c, h, n) in maps {
                a.push(flag.into());
                a.push(format!("{c}:{h}:{n}").into());
            }
        }
        for (k, v) in &self.sysctls {
            a.push("--sysctl".into());
            a.push(format!("{k}={v}").into());
        }
        a
    }
}

/// What the monitor prints on stdout once it serves: its pid and the pinned namespace paths.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub pid: i32,
    pub namespaces: std::collections::BTreeMap<String, std::path::PathBuf>,
}

/// A running monitor, as it reported itself.
pub type Spawned = Ready;

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("running {program}: {source}")]
    Exec {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The monitor refused to start (nothing of it is left); the message is its own.
    #[error("pod monitor for sandbox {sandbox_id:?} failed to start: {message}")]
    Failed { sandbox_id: String, message: String },
    #[error("pod monitor for sandbox {sandbox_id:?}: unexpected ready line {line:?}: {error}")]
    BadReady {
        sandbox_id: String,
        line: String,
        error: String,
    },
}

/// Starts a monitor and returns once it serves on `dir/shim.sock` (blocking: run it off the async threads).
pub fn spawn(opts: &SpawnOptions) -> Result<Spawned, SpawnError> {
    let out = Command::new(&opts.program)
        .args(&opts.program_args)
        .args(opts.args())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| SpawnError::Exec {
            program: opts.program.clone(),
            source,
        })?;
    if !out.status.success() {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(SpawnError::Failed {
            sandbox_id: opts.sandbox_id.clone(),
            message: if message.is_empty() {
                format!("exited with {}", out.status)
            } else {
                message
            },
        });
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.lines().last().unwrap_or("").to_owned();
    serde_json::from_str(&line).map_err(|e| SpawnError::BadReady {
        sandbox_id: opts.sandbox_id.clone(),
        line,
        error: e.to_string(),
    })
}
