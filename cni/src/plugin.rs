//! One plugin invocation: reads the CNI environment and stdin, runs the verb, prints the result or the
//! CNI error JSON.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::env::{Command, Env};
use crate::error::{CniError, Code};
use crate::spec::{NetConf, Version, SUPPORTED_VERSIONS};
use crate::{bridge, hostlocal};

/// Which plugin this process is, from `argv[0]` or `basalt cni --plugin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    Bridge,
    HostLocal,
}

/// Runs one CNI plugin invocation (`CNI_COMMAND` and friends in the environment, config on stdin).
pub fn plugin_main(kind: PluginKind) -> ExitCode {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let version_hint = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_owned)
        })
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string());
    match run(kind, &stdin, &version_hint) {
        Ok(Some(out)) => {
            let mut so = std::io::stdout().lock();
            let _ = writeln!(so, "{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json(&version_hint));
            ExitCode::from(1)
        }
    }
}

/// One invocation; `Ok(Some(json))` is printed on stdout.
/// `version` is the requested cniVersion when supported (VERSION answers in it), else the newest.
fn run(kind: PluginKind, stdin: &[u8], version: &str) -> Result<Option<String>, CniError> {
    let env = Env::from_process()?;
    if env.command == Command::Version {
        return Ok(Some(
            serde_json::json!({ "cniVersion": version, "supportedVersions": SUPPORTED_VERSIONS })
                .to_string(),
        ));
    }
    let conf = NetConf::parse(stdin)?;
    let version = conf.version();
    let need = |min: Version, verb: &str| {
        if version >= min {
            Ok(())
        } else {
            Err(CniError::new(
                Code::IncompatibleVersion,
                format!(
                    "{verb} needs cniVersion {} or later; the configuration has {}",
                    min.as_str(),
                    version.as_str()
                ),
            ))
        }
    };
    match (kind, env.command) {
        (_, Command::Version) => unreachable!("handled above"),
        (PluginKind::Bridge, Command::Add) => {
            Ok(Some(bridge::add(&env, &conf)?.to_json(version).to_string()))
        }
        (PluginKind::HostLocal, Command::Add) => Ok(Some(
            hostlocal::add(&env, &conf)?.to_json(version).to_string(),
        )),
        (PluginKind::Bridge, Command::Del) => bridge::del(&env, &conf).map(|_| None),
        (PluginKind::HostLocal, Command::Del) => hostlocal::del(&env, &conf).map(|_| None),
        (k, Command::Check) => {
            need(Version::V0_4_0, "CHECK")?;
            match k {
                PluginKind::Bridge => bridge::check(&env, &conf),
                PluginKind::HostLocal => hostlocal::check(&env, &conf),
            }
            .map(|_| None)
        }
        (k, Command::Gc) => {
            need(Version::V1_1_0, "GC")?;
            match k {
                PluginKind::Bridge => bridge::gc(&conf),
                PluginKind::HostLocal => hostlocal::gc(&conf),
            }
            .map(|_| None)
        }
        (k, Command::Status) => {
            need(Version::V1_1_0, "STATUS")?;
            match k {
                PluginKind::Bridge => bridge::status(&conf),
                PluginKind::HostLocal => hostlocal::status(&conf),
            }
            .map(|_| None)
        }
    }
}
