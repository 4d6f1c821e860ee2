//! `linux.namespaces`: there is no pause container, so a container joins its sandbox's pinned namespaces by
//! path. NODE means the host's namespace (no entry), CONTAINER a new one, TARGET another container's.

use std::path::Path;

use basalt_proto::cri::{NamespaceMode, NamespaceOption};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Error, Result};
use crate::Sandbox;

fn ns(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ);
    n.set_path(path.map(Path::to_owned));
    n
}

fn mode(field: &str, v: i32) -> Result<NamespaceMode> {
    NamespaceMode::try_from(v)
        .map_err(|_| Error::invalid(field, v, "not POD, CONTAINER, NODE or TARGET"))
}

/// `pod` is the sandbox's pinned file for the kind (None: the sandbox uses the host's).
fn entry(
    typ: LinuxNamespaceType,
    field: &str,
    m: NamespaceMode,
    pod: Option<&Path>,
    target: Option<Option<&Path>>,
) -> Result<Option<LinuxNamespace>> {
    Ok(match m {
        NamespaceMode::Node => None,
        NamespaceMode::Pod => pod.map(|p| ns(typ, Some(p))),
        NamespaceMode::Container => Some(ns(typ, None)),
        NamespaceMode::Target => match target {
            Some(Some(p)) => Some(ns(typ, Some(p))),
            Some(None) => return Err(Error::not_found(
                field,
                "TARGET",
                "the target container (namespace_options.target_id) has no PID namespace to join",
            )),
            None => {
                return Err(Error::invalid(
                    field,
                    "TARGET",
                    "only the PID namespace can be TARGET",
                ))
            }
        },
    })
}

/// The namespaces of a container with `opts` (the container's, else the sandbox's) in `sandbox`.
pub fn namespaces(
    sandbox: &Sandbox,
    opts: &NamespaceOption,
    target_pid_ns: Option<&Path>,
    cgroup_v2: bool,
) -> Result<Vec<LinuxNamespace>> {
    const F: &str = "linux.security_context.namespace_options";
    let mut out = Vec::new();
    if let Some(u) = &opts.userns_options {
        let field = format!("{F}.userns_options.mode");
        match mode(&field, u.mode)? {
            NamespaceMode::Node => {}
            // Joined first by the runtime, so that the namespaces it creates belong to the pod's.
            NamespaceMode::Pod => match sandbox.user_ns {
                Some(p) => out.push(ns(LinuxNamespaceType::User, Some(p))),
                None => {
                    return Err(Error::invalid(
                        field,
                        "POD",
                        format!("sandbox {} has no user namespace", sandbox.id),
                    ))
                }
            },
            other => {
                return Err(Error::invalid(
                    field,
                    other.as_str_name(),
                    "a container's user namespace is its pod's (POD) or the node's (NODE)",
                ))
            }
        }
    }
    let network = mode(&format!("{F}.network"), opts.network)?;
    let ipc = mode(&format!("{F}.ipc"), opts.ipc)?;
    let pid = mode(&format!("{F}.pid"), opts.pid)?;
    out.push(ns(LinuxNamespaceType::Mount, None));
    let net_field = format!("{F}.network");
    out.extend(entry(
        LinuxNamespaceType::Network,
        &net_field,
        network,
        sandbox.net_ns,
        None,
    )?);
    // The hostname goes with the network: a host-network pod sees the node's name.
    out.extend(entry(
        LinuxNamespaceType::Uts,
        &net_field,
        network,
        sandbox.uts_ns,
        None,
    )?);
    out.extend(entry(
        LinuxNamespaceType::Ipc,
        &format!("{F}.ipc"),
        ipc,
        sandbox.ipc_ns,
        None,
    )?);
    out.extend(entry(
        LinuxNamespaceType::Pid,
        &format!("{F}.pid"),
        pid,
        sandbox.pid_ns,
        Some(target_pid_ns),
    )?);
    if cgroup_v2 {
        // containerd gives each container its own cgroup namespace on v2 only, where it hides the host tree.
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}
