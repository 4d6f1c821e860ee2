//! The command line, environment and working directory of the container's first process.

use std::path::PathBuf;

use basalt_images::RuntimeConfig;
use basalt_proto::cri::ContainerConfig;

use crate::error::{Error, Result};

/// What Docker and containerd put in `PATH` when neither the image nor the pod sets it.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// CRI semantics: `command` replaces the image's entrypoint and `args` its cmd; with only `command` given the
/// image's cmd is dropped (it belonged to the entrypoint that was replaced).
pub fn args(config: &ContainerConfig, image: &RuntimeConfig) -> Result<Vec<String>> {
    let args: Vec<String> = if !config.command.is_empty() {
        config.command.iter().chain(&config.args).cloned().collect()
    } else {
        let cmd = if config.args.is_empty() {
            &image.cmd
        } else {
            &config.args
        };
        image.entrypoint.iter().chain(cmd).cloned().collect()
    };
    if args.is_empty() {
        return Err(Error::invalid(
            "command",
            Vec::<String>::new(),
            "no command given and the image has no Entrypoint or Cmd",
        ));
    }
    Ok(args)
}

/// `HOSTNAME`, then the image's variables, then the pod's: a later one replaces an earlier one of the same name
/// in place. `PATH` is added when nobody set it.
pub fn env(config: &ContainerConfig, image: &RuntimeConfig, hostname: &str) -> Result<Vec<String>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v.to_owned(),
        None => env.push((k.to_owned(), v.to_owned())),
    };
    set("HOSTNAME", hostname);
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        if !k.is_empty() {
            set(k, v);
        }
    }
    for (i, kv) in config.envs.iter().enumerate() {
        if kv.key.is_empty() || kv.key.contains('=') {
            return Err(Error::invalid(
                format!("envs[{i}].key"),
                &kv.key,
                "must be non-empty and must not contain '='",
            ));
        }
        set(&kv.key, &kv.value);
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The pod's `working_dir`, else the image's `WorkingDir`, else `/`.
pub fn cwd(config: &ContainerConfig, image: &RuntimeConfig) -> Result<PathBuf> {
    let (field, dir) = if !config.working_dir.is_empty() {
        ("working_dir", config.working_dir.as_str())
    } else if !image.working_dir.is_empty() {
        ("image config WorkingDir", image.working_dir.as_str())
    } else {
        return Ok(PathBuf::from("/"));
    };
    if !dir.starts_with('/') {
        return Err(Error::invalid(field, dir, "not an absolute path"));
    }
    Ok(PathBuf::from(dir))
}
