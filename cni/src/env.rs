//! The CNI_* environment of one plugin invocation, validated.

use std::path::PathBuf;

use crate::error::{CniError, Code, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn missing(name: &str) -> CniError {
    CniError::new(
        Code::InvalidEnv,
        format!("required environment variable {name} is missing"),
    )
}

impl Env {
    pub fn from_process() -> Result<Env> {
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("STATUS") => Command::Status,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some(other) => {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    format!("CNI_COMMAND {other:?} is not a CNI verb"),
                ))
            }
            None => return Err(missing("CNI_COMMAND")),
        };
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let container_id = var("CNI_CONTAINERID").unwrap_or_default();
        let ifname = var("CNI_IFNAME").unwrap_or_default();
        let netns = var("CNI_NETNS").map(PathBuf::from);
        if per_container {
            if container_id.is_empty() {
                return Err(missing("CNI_CONTAINERID"));
            }
            if !container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    format!("CNI_CONTAINERID {container_id:?} may hold only letters, digits, '_', '.' and '-'"),
                ));
            }
            if ifname.is_empty() {
                return Err(missing("CNI_IFNAME"));
            }
            if ifname.len() > 15
                || ifname == "."
                || ifname == ".."
                || ifname.contains(['/', ':', ' ', '\t', '\n'])
            {
                return Err(CniError::new(
                    Code::InvalidEnv,
                    format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
                ));
            }
            if command != Command::Del && netns.is_none() {
                return Err(missing("CNI_NETNS"));
            }
        }
        let args = var("CNI_ARGS")
            .map(|a| {
                a.split(';')
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        (k.to_string(), v.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let path = var("CNI_PATH")
            .map(|p| std::env::split_paths(&p).collect())
            .unwrap_or_default();
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }
}
