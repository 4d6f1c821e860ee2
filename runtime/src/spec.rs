//! Loading `config.json` and rejecting what cannot run, before anything is created. Every error names the JSON
//! path (`process.args`, `mounts[2].destination`, …) and the offending value.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// A bundle whose config has been parsed and checked.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    /// `root.path`, made absolute against the bundle directory.
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = std::fs::canonicalize(dir).map_err(Error::io(dir))?;
        let path = dir.join("config.json");
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        let spec = parse(&bytes)?;
        let rootfs = validate(&spec, &dir)?;
        Ok(Bundle { dir, spec, rootfs })
    }
}

/// Parses `config.json`, naming the JSON path of the first field that does not fit the OCI schema.
pub fn parse(bytes: &[u8]) -> Result<Spec> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            "(document)".to_owned()
        } else {
            path
        };
        Error::spec(path, e.into_inner().to_string())
    })
}

/// Checks what the schema cannot: values that are well-formed but impossible. Returns the absolute rootfs.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<PathBuf> {
    if !spec.version().starts_with("1.") {
        return Err(Error::spec(
            "ociVersion",
            format!("{:?} is not a 1.x runtime spec version", spec.version()),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::spec("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(Error::spec(
            "root.path",
            format!("{:?} is not a directory", root.path()),
        ));
    }

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::spec("process", "missing"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(Error::spec("process.args", "must name a program to run")),
    }
    if !process.cwd().is_absolute() {
        return Err(Error::spec(
            "process.cwd",
            format!("{:?} must be an absolute path", process.cwd()),
        ));
    }
    for (i, e) in process.env().iter().flatten().enumerate() {
        if !e.contains('=') {
            return Err(Error::spec(
                format!("process.env[{i}]"),
                format!("{e:?} is not KEY=value"),
            ));
        }
    }
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        if r.soft() > r.hard() {
            return Err(Error::spec(
                format!("process.rlimits[{i}]"),
                format!("soft limit {} is above hard limit {}", r.soft(), r.hard()),
            ));
        }
    }

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::spec(
                format!("mounts[{i}].destination"),
                format!("{:?} must be an absolute path", m.destination()),
            ));
        }
        for opt in m.options().iter().flatten() {
            if crate::mounts::MountOptions::known(opt).is_none() && !opt.contains('=') {
                // Unknown flags are passed to the filesystem as data, as runc does; only reject the
                // obviously malformed.
                if opt.is_empty() {
                    return Err(Error::spec(format!("mounts[{i}].options"), "empty option"));
                }
            }
        }
    }

    if let Some(linux) = spec.linux() {
        let mut seen = HashSet::new();
        let mut has_userns = false;
        for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
            if !seen.insert(ns.typ()) {
                return Err(Error::spec(
                    format!("linux.namespaces[{i}].type"),
                    format!("{} appears twice", ns.typ()),
                ));
            }
            if let Some(p) = ns.path() {
                if !p.exists() {
                    return Err(Error::spec(
                        format!("linux.namespaces[{i}].path"),
                        format!("{p:?} does not exist"),
                    ));
                }
            }
            if ns.typ() == LinuxNamespaceType::User && ns.path().is_none() {
                has_userns = true;
            }
        }
        let mapped = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty());
        if has_userns && !mapped {
            return Err(Error::spec(
                "linux.uidMappings",
                "a new user namespace needs uid and gid mappings",
            ));
        }
        if !has_userns && mapped && !seen.contains(&LinuxNamespaceType::User) {
            return Err(Error::spec(
                "linux.uidMappings",
                "mappings given without a user namespace",
            ));
        }
        for key in linux.sysctl().iter().flatten().map(|(k, _)| k) {
            // As runc: a sysctl is set only in a namespace of the container's own; any other is the host's
            // (on a kernel where the write succeeds at all, it would change the whole node).
            match sysctl_namespace(key) {
                Some(ns) if seen.contains(&ns) => {}
                Some(ns) => {
                    return Err(Error::spec(
                        format!("linux.sysctl[{key:?}]"),
                        format!("is not allowed in the host's {ns} namespace"),
                    ))
                }
                None => {
                    return Err(Error::spec(
                        format!("linux.sysctl[{key:?}]"),
                        "is not in a separate kernel namespace",
                    ))
                }
            }
        }
        crate::cgroup::check_device_rules(linux.resources().as_ref())?;
        for (i, d) in linux.devices().iter().flatten().enumerate() {
            if !d.path().is_absolute() {
                return Err(Error::spec(
                    format!("linux.devices[{i}].path"),
                    format!("{:?} must be an absolute path", d.path()),
                ));
            }
        }
        for (i, p) in linux
            .masked_paths()
            .iter()
            .flatten()
            .chain(linux.readonly_paths().iter().flatten())
            .enumerate()
        {
            if !p.starts_with('/') {
                return Err(Error::spec(
                    format!("linux.maskedPaths/readonlyPaths[{i}]"),
                    format!("{p:?} must be an absolute path"),
                ));
            }
        }
    }
    Ok(rootfs)
}

/// The sysctls System V IPC and POSIX message queues keep per ipc namespace (`fs.mqueue.*` besides).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a sysctl belongs to, in either notation (`net.ipv4.x` or Kubernetes' `net/ipv4/x`), as
/// runc's validation reads it; `None` for one no namespace holds: the host's, never a container's to set.
pub fn sysctl_namespace(key: &str) -> Option<LinuxNamespaceType> {
    let dotted = if key.contains('/') {
        key.replace('/', ".")
    } else {
        key.to_owned()
    };
    if dotted.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if IPC_SYSCTLS.contains(&dotted.as_str()) || dotted.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if dotted == "kernel.hostname" || dotted == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_errors_name_the_json_path() {
        let err = parse(br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":"zero","gid":0}}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("process.user.uid"), "{err}");
        assert!(err.contains("zero"), "{err}");
    }

    #[test]
    fn impossible_values_name_path_and_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        let base = r#""ociVersion":"1.0.2","root":{"path":"rootfs"}"#;
        for (body, want_path, want_value) in [
            (
                r#""process":{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#,
                "process.args",
                "",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"tmp","user":{"uid":0,"gid":0}}"#,
                "process.cwd",
                "tmp",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"mounts":[{"destination":"proc","type":"proc"}]"#,
                "mounts[0].destination",
                "proc",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"rlimits":[{"type":"RLIMIT_NOFILE","soft":10,"hard":5}]}"#,
                "process.rlimits[0]",
                "10",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}"#,
                "linux.namespaces[1].type",
                "pid",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"resources":{"devices":[{"allow":false},{"allow":true,"type":"c","access":"rwx"}]}}"#,
                "linux.resources.devices[1].access",
                "rwx",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"}],"sysctl":{"kernel.pid_max":"4096"}}"#,
                "linux.sysctl[\"kernel.pid_max\"]",
                "not in a separate kernel namespace",
            ),
            (
                r#""process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"pid"}],"sysctl":{"net.ipv4.ip_forward":"1"}}"#,
                "linux.sysctl[\"net.ipv4.ip_forward\"]",
                "host's net namespace",
            ),
        ] {
            let spec = parse(format!("{{{base},{body}}}").as_bytes()).unwrap();
            let err = validate(&spec, dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(want_path) && err.contains(want_value),
                "{body}: {err}"
            );
        }
        let spec = parse(br#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}}"#).unwrap();
        let err = validate(&spec, dir.path()).unwrap_err().to_string();
        assert!(err.contains("root.path") && err.contains("nope"), "{err}");
    }
}
