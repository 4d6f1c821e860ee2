//! A Pod as the CRI wants it: the sandbox config for the pod, a container config per container, with the
//! labels and annotations kubelet puts on them (so `crictl` users and our own relist find pods by them).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use basalt_proto::cri;
use k8s_openapi::api::core::v1::{Container, EnvVar};

use crate::context::{field_value, PodContext, UnsupportedField};
use crate::quantity::{self, QuantityError};
use crate::volumes::Mounted;

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
pub const TERMINATION_MESSAGE_POLICY: &str = "io.basalt.termination-message-policy";
/// Init containers and sidecars are told apart from app containers by this label.
pub const CONTAINER_KIND: &str = "io.basalt.container.kind";

/// What a container is to its pod (the [`CONTAINER_KIND`] label's value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerKind {
    Init,
    Sidecar,
    App,
}

impl ContainerKind {
    pub fn label(self) -> &'static str {
        match self {
            ContainerKind::Init => "init",
            ContainerKind::Sidecar => "sidecar",
            ContainerKind::App => "app",
        }
    }
}

/// Why a container's config cannot be made; each names the field of the container spec.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Field(#[from] UnsupportedField),
    #[error("resourceFieldRef.resource {0:?}: not supported")]
    Resource(String),
    #[error(transparent)]
    Quantity(#[from] QuantityError),
    /// One `env` entry, by index and name.
    #[error("env[{index}] {name}: {error}")]
    Env {
        index: usize,
        name: String,
        error: Box<ConfigError>,
    },
    #[error("container {0:?} not in pod")]
    NoSuchContainer(String),
    #[error("configMapKeyRef and secretKeyRef need an apiserver (static pods have none)")]
    NeedsApiserver,
    /// `resources.<field>`.
    #[error("resources.{field}: {error}")]
    Resources {
        field: &'static str,
        error: QuantityError,
    },
    #[error("volumeMounts[{index}].name {name:?}: no such volume in the pod")]
    NoSuchVolume { index: usize, name: String },
    #[error("volumeMounts[{index}].subPath {path:?}: must be a relative path inside the volume")]
    SubPath { index: usize, path: String },
    #[error("volumeMounts[{index}].subPath {path:?}: {error}")]
    SubPathDir {
        index: usize,
        path: String,
        error: std::io::Error,
    },
    #[error("volumeMounts[{index}].mountPropagation {value:?}: unknown")]
    Propagation { index: usize, value: String },
}

fn pod_labels(ctx: &PodContext) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = ctx
        .pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(POD_NAME.into(), ctx.name().into());
    l.insert(POD_NAMESPACE.into(), ctx.namespace().into());
    l.insert(POD_UID.into(), ctx.uid().into());
    l
}

pub fn sandbox_config(ctx: &PodContext, attempt: u32) -> cri::PodSandboxConfig {
    let spec = ctx.spec();
    let host_network = spec.host_network.unwrap_or(false);
    let hostname = if host_network {
        String::new()
    } else {
        let h = spec
            .hostname
            .clone()
            .unwrap_or_else(|| ctx.name().to_owned());
        h.chars()
            .take(63)
            .collect::<String>()
            .trim_end_matches(['-', '.'])
            .to_owned()
    };
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0 || host_network)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let dns_config = match spec.dns_policy.as_deref() {
        // Without a cluster DNS a ClusterFirst pod resolves as the node does (kubelet's fallback); that is the
        // runtime's default when no config is given.
        Some("None") => spec.dns_config.as_ref().map(|d| cri::DnsConfig {
            servers: d.nameservers.clone().unwrap_or_default(),
            searches: d.searches.clone().unwrap_or_default(),
            options: d
                .options
                .iter()
                .flatten()
                .map(|o| match &o.value {
                    Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                    None => o.name.clone().unwrap_or_default(),
                })
                .collect(),
        }),
        _ => None,
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    let namespace_options = cri::NamespaceOption {
        network: if host_network {
            node
        } else {
            cri::NamespaceMode::Pod as i32
        },
        pid: if spec.host_pid.unwrap_or(false) {
            node
        } else if spec.share_process_namespace.unwrap_or(false) {
            cri::NamespaceMode::Pod as i32
        } else {
            cri::NamespaceMode::Container as i32
        },
        ipc: if spec.host_ipc.unwrap_or(false) {
            node
        } else {
            cri::NamespaceMode::Pod as i32
        },
        userns_options: ctx.userns.clone(),
        ..Default::default()
    };
    let sysctls = psc
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: ctx.name().into(),
            uid: ctx.uid().into(),
            namespace: ctx.namespace().into(),
            attempt,
        }),
        hostname,
        log_directory: ctx.log_dir().to_string_lossy().into_owned(),
        dns_config,
        port_mappings,
        labels: pod_labels(ctx),
        annotations: ctx
            .pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: ctx.cgroup_parent.clone(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                run_as_user: psc.run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| cri::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                seccomp: Some(seccomp_profile(
                    psc.seccomp_profile.as_ref(),
                    ctx.seccomp_default,
                )),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

fn seccomp_profile(
    p: Option<&k8s_openapi::api::core::v1::SeccompProfile>,
    default_on: bool,
) -> cri::SecurityProfile {
    use cri::security_profile::ProfileType;
    match p.map(|p| (p.type_.as_str(), p.localhost_profile.clone())) {
        Some(("Unconfined", _)) => cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
        Some(("Localhost", path)) => cri::SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: path.unwrap_or_default(),
        },
        Some(("RuntimeDefault", _)) => cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        _ if default_on => cri::SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        },
        _ => cri::SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        },
    }
}

/// `$(VAR)` references in command and args expand from the container's env, `$$` escapes, unknown stay.
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(j) if env.contains_key(&inner[..j]) => {
                    out.push_str(&env[&inner[..j]]);
                    rest = &inner[j + 1..];
                }
                Some(j) => {
                    out.push_str(&format!("$({})", &inner[..j]));
                    rest = &inner[j + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Result<String, ConfigError> {
    let unsupported = || ConfigError::Resource(resource.to_owned());
    let (section, name) = resource.split_once('.').ok_or_else(unsupported)?;
    let res = c.resources.clone().unwrap_or_default();
    let map = match section {
        "limits" => res.limits.or(res.requests),
        "requests" => res.requests,
        _ => return Err(unsupported()),
    };
    let q = map.and_then(|m| m.get(name).map(|q| q.0.clone()));
    let cpu = name == "cpu";
    let value = match q {
        Some(q) if cpu => quantity::milli(&q)?,
        Some(q) => quantity::units(&q)?,
        // No limit: the node's capacity, as kubelet reports allocatable.
        None if cpu => std::thread::available_parallelism()
            .map(|n| n.get() as i64 * 1000)
            .unwrap_or(1000),
        None => crate::node::memory().map(|m| m.total as i64).unwrap_or(0),
    };
    let div = match divisor {
        Some(d) if cpu => quantity::milli(d)?.max(1),
        Some(d) => quantity::units(d)?.max(1),
        None if cpu => 1000,
        None => 1,
    };
    Ok(((value + div - 1) / div).to_string())
}

/// The container's environment: its `env` in order (later entries may refer to earlier ones), downward API
/// values resolved.
pub fn environment(ctx: &PodContext, c: &Container) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (
        i,
        EnvVar {
            name,
            value,
            value_from,
        },
    ) in c.env.iter().flatten().cloned().enumerate()
    {
        let env = |error: ConfigError| ConfigError::Env {
            index: i,
            name: name.clone(),
            error: Box::new(error),
        };
        let v = match (value, value_from) {
            (Some(v), _) => expand(&v, &seen),
            (None, Some(from)) => {
                if let Some(f) = from.field_ref {
                    field_value(ctx, &f.field_path).map_err(|e| env(e.into()))?
                } else if let Some(r) = from.resource_field_ref {
                    let target = match r.container_name.as_deref() {
                        Some(n) if !n.is_empty() && n != c.name => ctx
                            .spec()
                            .containers
                            .iter()
                            .find(|x| x.name == n)
                            .ok_or_else(|| env(ConfigError::NoSuchContainer(n.to_owned())))?,
                        _ => c,
                    };
                    resource_value(
                        target,
                        &r.resource,
                        r.divisor.as_ref().map(|d| d.0.as_str()),
                    )
                    .map_err(env)?
                } else {
                    return Err(env(ConfigError::NeedsApiserver));
                }
            }
            (None, None) => String::new(),
        };
        seen.insert(name.clone(), v.clone());
        out.retain(|(k, _)| k != &name);
        out.push((name, v));
    }
    Ok(out)
}

pub fn container_resources(c: &Container) -> Result<cri::LinuxContainerResources, ConfigError> {
    let res = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    let limits = &res.limits;
    // Requests default to limits, as the apiserver defaults them.
    let requests = if res.requests.is_some() {
        &res.requests
    } else {
        &res.limits
    };
    let mut r = cri::LinuxContainerResources {
        cpu_period: 100_000,
        ..Default::default()
    };
    let m = |q: String, field: &'static str| {
        quantity::milli(&q).map_err(|error| ConfigError::Resources { field, error })
    };
    let u = |q: String, field: &'static str| {
        quantity::units(&q).map_err(|error| ConfigError::Resources { field, error })
    };
    r.cpu_shares = match get(requests, "cpu") {
        Some(q) => (m(q, "requests.cpu")? * 1024 / 1000).max(2),
        None => 2,
    };
    if let Some(q) = get(limits, "cpu") {
        r.cpu_quota = (m(q, "limits.cpu")? * 100_000 / 1000).max(1000);
    }
    if let Some(q) = get(limits, "memory") {
        r.memory_limit_in_bytes = u(q, "limits.memory")?;
    }
    Ok(r)
}

/// One container's config. `restart_count` is the attempt; `mounts` are the pod's volumes on the host.
pub fn container_config(
    ctx: &PodContext,
    c: &Container,
    kind: ContainerKind,
    restart_count: u32,
    volumes: &HashMap<String, Mounted>,
    termination_log: Option<&Path>,
) -> Result<cri::ContainerConfig, ConfigError> {
    let env = environment(ctx, c)?;
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let mut mounts = Vec::new();
    for (i, vm) in c.volume_mounts.iter().flatten().enumerate() {
        let vol = volumes
            .get(&vm.name)
            .ok_or_else(|| ConfigError::NoSuchVolume {
                index: i,
                name: vm.name.clone(),
            })?;
        let mut host = vol.path.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if Path::new(sub).is_absolute() || sub.split('/').any(|p| p == "..") {
                return Err(ConfigError::SubPath {
                    index: i,
                    path: sub.to_owned(),
                });
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|error| ConfigError::SubPathDir {
                    index: i,
                    path: sub.to_owned(),
                    error,
                })?;
            }
        }
        let propagation = match vm.mount_propagation.as_deref() {
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
            None | Some("None") => cri::MountPropagation::PropagationPrivate,
            Some(p) => {
                return Err(ConfigError::Propagation {
                    index: i,
                    value: p.to_owned(),
                })
            }
        };
        let readonly = vm.read_only.unwrap_or(false) || vol.read_only;
        mounts.push(cri::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into_owned(),
            readonly,
            recursive_read_only: readonly && vm.recursive_read_only.as_deref() == Some("Enabled"),
            propagation: propagation as i32,
            ..Default::default()
        });
    }
    let tmp = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if let Some(host) = termination_log {
        mounts.push(cri::Mount {
            container_path: tmp.clone(),
            host_path: host.to_string_lossy().into_owned(),
            ..Default::default()
        });
    }
    let sc = c.security_context.clone().unwrap_or_default();
    let psc = ctx.spec().security_context.clone().unwrap_or_default();
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut labels = HashMap::new();
    labels.insert(POD_NAME.to_owned(), ctx.name().to_owned());
    labels.insert(POD_NAMESPACE.to_owned(), ctx.namespace().to_owned());
    labels.insert(POD_UID.to_owned(), ctx.uid().to_owned());
    labels.insert(CONTAINER_NAME.to_owned(), c.name.clone());
    labels.insert(CONTAINER_KIND.to_owned(), kind.label().to_owned());
    let mut annotations = HashMap::new();
    annotations.insert(RESTART_COUNT.to_owned(), restart_count.to_string());
    annotations.insert(TERMINATION_MESSAGE_PATH.to_owned(), tmp);
    annotations.insert(
        TERMINATION_MESSAGE_POLICY.to_owned(),
        c.termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    let sandbox_ns = sandbox_config(ctx, 0)
        .linux
        .and_then(|l| l.security_context)
        .and_then(|s| s.namespace_options);
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(psc.seccomp_profile.as_ref())
        .map(|p| seccomp_profile(Some(p), ctx.seccomp_default))
        .unwrap_or_else(|| seccomp_profile(None, ctx.seccomp_default));
    let run_as_user = sc.run_as_user.or(psc.run_as_user);
    let run_as_group = sc.run_as_group.or(psc.run_as_group);
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: restart_count,
        }),
        image: Some(cri::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c
            .command
            .iter()
            .flatten()
            .map(|s| expand(s, &env_map))
            .collect(),
        args: c
            .args
            .iter()
            .flatten()
            .map(|s| expand(s, &env_map))
            .collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| cri::KeyValue { key, value })
            .collect(),
        mounts,
        labels,
        annotations,
        log_path: format!("{}/{}.log", c.name, restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(container_resources(c)?),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged: sc.privileged.unwrap_or(false),
                namespace_options: sandbox_ns,
                run_as_user: run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: run_as_group.map(|v| cri::Int64Value { value: v }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                seccomp: Some(seccomp),
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(yaml: &str) -> Pod {
        crate::manifest::parse(Path::new("/m/p.yaml"), yaml, "node1")
            .unwrap()
            .remove(0)
    }

    fn ctx(p: &Pod) -> PodContext<'_> {
        PodContext {
            pod: p,
            node_name: "node1",
            log_root: Path::new("/var/log/pods"),
            cgroup_parent: "/kubepods/besteffort/podx".into(),
            pod_ips: vec!["10.1.0.5".into()],
            host_ip: "192.0.2.1".into(),
            seccomp_default: true,
            userns: None,
        }
    }

    const POD: &str = r#"
kind: Pod
metadata: {name: web, labels: {app: w}}
spec:
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo $(GREETING) $$(HOME) $(MISSING)"]
    env:
    - {name: GREETING, value: hello}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
    - {name: APP, valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}}
    - {name: MEM, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}
    - {name: BOTH, value: "$(GREETING)-$(POD)"}
    resources:
      requests: {cpu: 250m, memory: 32Mi}
      limits: {cpu: 500m, memory: 64Mi}
    ports: [{name: http, containerPort: 80, hostPort: 8080}]
"#;

    #[test]
    fn environment_and_command_expansion() {
        let p = pod(POD);
        let cx = ctx(&p);
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env: BTreeMap<_, _> = environment(&cx, c).unwrap().into_iter().collect();
        assert_eq!(env["POD"], "web-node1");
        assert_eq!(env["IP"], "10.1.0.5");
        assert_eq!(env["APP"], "w");
        assert_eq!(env["MEM"], "64");
        assert_eq!(env["BOTH"], "hello-web-node1");
        let cfg = container_config(&cx, c, ContainerKind::App, 2, &HashMap::new(), None).unwrap();
        assert_eq!(cfg.command[2], "echo hello $(HOME) $(MISSING)");
        assert_eq!(cfg.log_path, "c/2.log");
        assert_eq!(cfg.metadata.unwrap().attempt, 2);
        let r = cfg.linux.unwrap().resources.unwrap();
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    }

    #[test]
    fn sandbox_config_labels_ports_and_namespaces() {
        let p = pod(POD);
        let s = sandbox_config(&ctx(&p), 1);
        let m = s.metadata.unwrap();
        assert_eq!(
            (m.name.as_str(), m.namespace.as_str(), m.attempt),
            ("web-node1", "default", 1)
        );
        assert_eq!(s.labels[POD_UID], p.metadata.uid.clone().unwrap());
        assert_eq!(s.labels["app"], "w");
        assert_eq!(s.port_mappings.len(), 1);
        assert_eq!(s.port_mappings[0].host_port, 8080);
        assert_eq!(s.hostname, "web-node1");
        assert!(s
            .log_directory
            .ends_with(&format!("default_web-node1_{}", m.uid)));
        let ns = s
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    }

    #[test]
    fn secrets_need_an_apiserver_and_say_so() {
        let p = pod(&POD.replace(
            "{name: GREETING, value: hello}",
            "{name: GREETING, valueFrom: {secretKeyRef: {name: s, key: k}}}",
        ));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = environment(&ctx(&p), c).unwrap_err().to_string();
        assert!(
            e.contains("env[0] GREETING") && e.contains("apiserver"),
            "{e}"
        );
    }

    #[test]
    fn config_errors_name_the_field_and_value() {
        let err = |from: &str, to: &str| {
            let p = pod(&POD.replace(from, to));
            let c = &p.spec.as_ref().unwrap().containers[0];
            container_config(&ctx(&p), c, ContainerKind::App, 0, &HashMap::new(), None)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("fieldPath: metadata.name", "fieldPath: spec.nope"),
            "env[1] POD: fieldRef.fieldPath \"spec.nope\": not supported"
        );
        assert_eq!(
            err("resource: limits.memory", "resource: memory"),
            "env[4] MEM: resourceFieldRef.resource \"memory\": not supported"
        );
        assert_eq!(
            err("divisor: 1Mi", "divisor: 1Qi"),
            "env[4] MEM: quantity \"1Qi\": not a Kubernetes quantity"
        );
        assert_eq!(
            err("limits: {cpu: 500m", "limits: {cpu: lots"),
            "resources.limits.cpu: quantity \"lots\": not a Kubernetes quantity"
        );
        assert_eq!(
            err(
                "    resources:",
                "    volumeMounts: [{name: data, mountPath: /d}]\n    resources:"
            ),
            "volumeMounts[0].name \"data\": no such volume in the pod"
        );
    }

    #[test]
    fn qos_classes() {
        use crate::qos::{pod_cgroup, qos_class, Qos};
        let p = pod(POD);
        assert_eq!(qos_class(&p), Qos::Burstable);
        assert!(pod_cgroup("/kubepods", &p).starts_with("/kubepods/burstable/pod"));
        let g = pod(&POD.replace(
            "requests: {cpu: 250m, memory: 32Mi}",
            "requests: {cpu: 500m, memory: 64Mi}",
        ));
        assert_eq!(qos_class(&g), Qos::Guaranteed);
        assert!(pod_cgroup("/kubepods", &g).starts_with("/kubepods/pod"));
        let b = pod("kind: Pod\nmetadata: {name: b}\nspec: {containers: [{name: c, image: i}]}\n");
        assert_eq!(qos_class(&b), Qos::BestEffort);
    }
}
