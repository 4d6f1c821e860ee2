//! Capabilities, seccomp, AppArmor and the masked and read-only paths of a container.
//!
//! A privileged container gets every capability the kernel knows and none of the other restrictions, as the
//! CRI says (`LinuxContainerSecurityContext.privileged`).

use std::path::{Component, Path};

use basalt_proto::cri::{security_profile::ProfileType, Capability as CriCaps, SecurityProfile};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp};

use crate::error::{io_text, Error, Result};

const SC: &str = "linux.security_context";

/// containerd's default set (also Docker's): what a non-privileged container gets before add/drop.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability by number (index = `CAP_*` value), so "ALL" can stop at the kernel's `cap_last_cap`.
const ALL_CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// containerd's and Docker's default `linux.maskedPaths`.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's and Docker's default `linux.readonlyPaths`.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn parse_cap(field: &str, name: &str) -> Result<Capability> {
    // oci-spec's deserializer accepts "CAP_X" and "X" in any case, as the kubelet may send either.
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| Error::invalid(field, name, "unknown capability"))
}

/// The capabilities the running kernel knows and the node holds ("ALL" means these, as containerd takes the
/// current process's).
fn all_known(cap_last_cap: Option<u32>, host: Option<u64>) -> Capabilities {
    let n = cap_last_cap.map_or(ALL_CAPABILITIES.len(), |last| {
        (last as usize + 1).min(ALL_CAPABILITIES.len())
    });
    ALL_CAPABILITIES[..n]
        .iter()
        .enumerate()
        .filter(|(i, _)| host.is_none_or(|mask| mask & (1 << i) != 0))
        .map(|(_, c)| parse_cap("", c).expect("table holds known names"))
        .collect()
}

/// Default set, then "ALL" adds/drops, then the named adds, then the named drops (containerd's order, so that
/// `add: [ALL], drop: [CHOWN]` means everything but CHOWN). Ambient capabilities go into every set; inheritable
/// holds only those, since the kernel requires ambient ⊆ inheritable and containerd no longer fills it otherwise.
pub fn capabilities(
    caps: Option<&CriCaps>,
    privileged: bool,
    cap_last_cap: Option<u32>,
    host_capabilities: Option<u64>,
) -> Result<LinuxCapabilities> {
    let mut set: Capabilities = if privileged {
        all_known(cap_last_cap, host_capabilities)
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|c| parse_cap("", c).expect("table holds known names"))
            .collect()
    };
    let mut ambient = Capabilities::new();
    if let (Some(c), false) = (caps, privileged) {
        let is_all =
            |s: &String| s.eq_ignore_ascii_case("ALL") || s.eq_ignore_ascii_case("CAP_ALL");
        if c.add_capabilities.iter().any(is_all) {
            set = all_known(cap_last_cap, host_capabilities);
        }
        if c.drop_capabilities.iter().any(is_all) {
            set.clear();
        }
        for (i, name) in c.add_capabilities.iter().enumerate() {
            if !is_all(name) {
                set.insert(parse_cap(
                    &format!("{SC}.capabilities.add_capabilities[{i}]"),
                    name,
                )?);
            }
        }
        for (i, name) in c.add_ambient_capabilities.iter().enumerate() {
            let cap = parse_cap(
                &format!("{SC}.capabilities.add_ambient_capabilities[{i}]"),
                name,
            )?;
            set.insert(cap);
            ambient.insert(cap);
        }
        for (i, name) in c.drop_capabilities.iter().enumerate() {
            if !is_all(name) {
                let cap = parse_cap(&format!("{SC}.capabilities.drop_capabilities[{i}]"), name)?;
                set.remove(&cap);
                ambient.remove(&cap);
            }
        }
    }
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(set.clone()));
    out.set_effective(Some(set.clone()));
    out.set_permitted(Some(set));
    out.set_inheritable(Some(ambient.clone()));
    out.set_ambient(Some(ambient));
    Ok(out)
}

/// A profile request from the typed field or, for old kubelets, the deprecated string field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requested {
    Unset,
    RuntimeDefault,
    Unconfined,
    Localhost(String),
}

fn requested(typed: Option<&SecurityProfile>, deprecated: &str) -> Requested {
    if let Some(p) = typed {
        return match p.profile_type() {
            ProfileType::RuntimeDefault => Requested::RuntimeDefault,
            ProfileType::Unconfined => Requested::Unconfined,
            ProfileType::Localhost => Requested::Localhost(p.localhost_ref.clone()),
        };
    }
    match deprecated {
        "" => Requested::Unset,
        "runtime/default" | "docker/default" => Requested::RuntimeDefault,
        "unconfined" => Requested::Unconfined,
        s => Requested::Localhost(s.strip_prefix("localhost/").unwrap_or(s).to_owned()),
    }
}

/// `linux.seccomp`: none for privileged or Unconfined containers, our default profile for RuntimeDefault, the
/// node's file for Localhost (an absolute path, or relative to `profile_root`).
pub fn seccomp(
    typed: Option<&SecurityProfile>,
    deprecated: &str,
    privileged: bool,
    unset_is_default: bool,
    profile_root: &Path,
) -> Result<Option<LinuxSeccomp>> {
    if privileged {
        return Ok(None);
    }
    let field = if typed.is_some() {
        format!("{SC}.seccomp.localhost_ref")
    } else {
        format!("{SC}.seccomp_profile_path")
    };
    match requested(typed, deprecated) {
        Requested::Unset if unset_is_default => Ok(Some(basalt_seccomp::runtime_default())),
        Requested::Unset | Requested::Unconfined => Ok(None),
        Requested::RuntimeDefault => Ok(Some(basalt_seccomp::runtime_default())),
        Requested::Localhost(r) => load_localhost(&field, &r, profile_root).map(Some),
    }
}

fn load_localhost(field: &str, r: &str, root: &Path) -> Result<LinuxSeccomp> {
    let p = Path::new(r);
    if r.is_empty() || p.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(
            field,
            r,
            "must be a path to a seccomp profile without '..'",
        ));
    }
    let path = root.join(p);
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::not_found(
                field,
                r,
                format!("seccomp profile {} does not exist", path.display()),
            )
        } else {
            Error::invalid(
                field,
                r,
                format!("reading {}: {}", path.display(), io_text(&e)),
            )
        }
    })?;
    let profile: LinuxSeccomp = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(field, r, format!("not a seccomp profile: {e}")))?;
    // Fail at CreateContainer, not at start, for a profile our compiler would refuse.
    basalt_seccomp::Profile::from_oci(&profile).map_err(|e| Error::invalid(field, r, e))?;
    Ok(profile)
}

/// `process.apparmorProfile`. `default_profile` is None when the node has no AppArmor: then only a Localhost
/// request is an error (it names a profile that cannot be applied), as in containerd.
pub fn apparmor(
    typed: Option<&SecurityProfile>,
    deprecated: &str,
    privileged: bool,
    default_profile: Option<&str>,
) -> Result<Option<String>> {
    if privileged {
        return Ok(None);
    }
    let req = requested(typed, deprecated);
    let field = if typed.is_some() {
        format!("{SC}.apparmor.localhost_ref")
    } else {
        format!("{SC}.apparmor_profile")
    };
    match (req, default_profile) {
        (Requested::Unconfined, _) | (Requested::Unset | Requested::RuntimeDefault, None) => {
            Ok(None)
        }
        (Requested::Unset | Requested::RuntimeDefault, Some(d)) => Ok(Some(d.to_owned())),
        (Requested::Localhost(r), None) => Err(Error::precondition(format!(
            "{field} {r:?}: AppArmor is not enabled on this node"
        ))),
        (Requested::Localhost(r), Some(_)) if r.is_empty() => {
            Err(Error::invalid(field, r, "Localhost needs a profile name"))
        }
        (Requested::Localhost(r), Some(_)) => Ok(Some(r)),
    }
}

/// `linux.maskedPaths` and `linux.readonlyPaths`: none for a privileged container; the CRI's lists when the
/// kubelet sent any (it always does for `procMount: Default`), else containerd's defaults.
pub fn masked_and_readonly(
    masked: &[String],
    readonly: &[String],
    privileged: bool,
) -> (Vec<String>, Vec<String>) {
    if privileged {
        return (Vec::new(), Vec::new());
    }
    if masked.is_empty() && readonly.is_empty() {
        return (
            DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect(),
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        );
    }
    (masked.to_vec(), readonly.to_vec())
}
