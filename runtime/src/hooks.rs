//! OCI lifecycle hooks: each one a program run with the container's state as JSON on stdin, bounded by its
//! `timeout`. Failures before the user process starts abort the container; poststart and poststop failures
//! are logged, as the spec says.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

use crate::error::{Error, Result};

/// The lifecycle points the spec names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Phase {
    pub fn json_name(self) -> &'static str {
        match self {
            Phase::Prestart => "prestart",
            Phase::CreateRuntime => "createRuntime",
            Phase::CreateContainer => "createContainer",
            Phase::StartContainer => "startContainer",
            Phase::Poststart => "poststart",
            Phase::Poststop => "poststop",
        }
    }
}

/// The state document hooks read on stdin.
pub fn state(
    spec: &Spec,
    id: &str,
    pid: i32,
    bundle: &std::path::Path,
    status: &str,
) -> serde_json::Value {
    serde_json::json!({"ociVersion": spec.version(), "id": id, "status": status, "pid": pid,
        "bundle": bundle, "annotations": spec.annotations().clone().unwrap_or_default()})
}

/// The hooks of `phase` in `spec`, in order.
pub fn of(spec: &Spec, phase: Phase) -> Vec<Hook> {
    spec.hooks()
        .as_ref()
        .map(|h| of_hooks(h, phase))
        .unwrap_or_default()
}

/// The hooks of `phase` in a `hooks` object, in order.
pub fn of_hooks(h: &oci_spec::runtime::Hooks, phase: Phase) -> Vec<Hook> {
    #[allow(deprecated)]
    let list = match phase {
        Phase::Prestart => h.prestart(),
        Phase::CreateRuntime => h.create_runtime(),
        Phase::CreateContainer => h.create_container(),
        Phase::StartContainer => h.start_container(),
        Phase::Poststart => h.poststart(),
        Phase::Poststop => h.poststop(),
    };
    list.clone().unwrap_or_default()
}

/// Runs every hook of `phase`; the first failure is returned, naming the hook.
pub fn run(spec: &Spec, phase: Phase, state: &serde_json::Value) -> Result<()> {
    run_list(&of(spec, phase), phase, state)
}

/// Runs `hooks` (all of `phase`) in order; the first failure is returned, naming the hook.
pub fn run_list(hooks: &[Hook], phase: Phase, state: &serde_json::Value) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state).unwrap_or_default();
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, &input).map_err(|m| {
            Error::spec(
                format!("hooks.{}[{i}]", phase.json_name()),
                format!("{}: {m}", hook.path().display()),
            )
        })?;
    }
    Ok(())
}

/// Like [`run_list`], but failures are only logged (poststart, poststop).
pub fn run_logged(hooks: &[Hook], phase: Phase, state: &serde_json::Value) {
    if let Err(e) = run_list(hooks, phase, state) {
        tracing::warn!(error = %e, "hook failed");
        eprintln!("basalt-runc: warning: {e}");
    }
}

fn run_one(hook: &Hook, input: &[u8]) -> std::result::Result<(), String> {
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(input);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            if status.success() {
                return Ok(());
            }
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!("{status}: {}", err.trim()));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {}s",
                hook.timeout().unwrap_or_default()
            ));
        }
        // A hook has no completion signal we can block on together with a deadline; poll its exit.
        std::thread::sleep(Duration::from_millis(2));
    }
}
