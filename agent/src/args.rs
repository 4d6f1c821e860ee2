//! `basalt agent` settings: the `agent:` section of the node's config file, each key overridable by the flag of
//! the same name. Paths default under the global `--data-dir` and `--run-dir`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

/// The command line; `None`/empty keeps what the config file (or the default) says.
#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// Serve the CRI alone (what a critest or crictl user runs); no kubelet [config: agent.cri-only]
    #[arg(long)]
    pub cri_only: bool,
    /// CNI network configs; the first in name order is used [config: agent.cni-conf-dir; default: /etc/cni/net.d]
    #[arg(long, value_name = "DIR")]
    pub cni_conf_dir: Option<PathBuf>,
    /// Where CNI plugins are looked up, in order (repeatable) [config: agent.cni-bin-dir; default: /opt/cni/bin,
    /// /usr/lib/cni]
    #[arg(long, value_name = "DIR")]
    pub cni_bin_dir: Vec<PathBuf>,
    /// Registry mirrors and credentials, k3s registries.yaml format [config: agent.registry-config]
    #[arg(long, value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// A registry reached over plain HTTP (repeatable) [config: agent.insecure-registry]
    #[arg(long, value_name = "HOST:PORT")]
    pub insecure_registry: Vec<String>,
    /// Cgroup parent of pods whose sandbox config names none [config: agent.cgroup-parent; default: /kubepods]
    #[arg(long, value_name = "PATH")]
    pub cgroup_parent: Option<String>,
    /// Cgroup the pod monitors run in, apart from the pods they watch (as kubelet's --runtime-cgroups and
    /// CRI-O's conmon_cgroup); empty leaves them in the agent's [config: agent.monitor-cgroup; default:
    /// /basalt-monitors]
    #[arg(long, value_name = "PATH")]
    pub monitor_cgroup: Option<String>,
    /// Address of the exec/attach/port-forward streaming server; port 0 picks a free port
    /// [config: agent.streaming-address; default: 127.0.0.1:0]
    #[arg(long, value_name = "ADDR")]
    pub streaming_address: Option<SocketAddr>,
    /// The CRI socket [config: agent.cri-socket; default: <run-dir>/cri.sock]
    #[arg(long, value_name = "PATH")]
    pub cri_socket: Option<PathBuf>,
    /// Static pod manifests (YAML or JSON) [config: agent.manifest-dir; default: /etc/basalt/manifests]
    #[arg(long, value_name = "DIR")]
    pub manifest_dir: Option<PathBuf>,
    /// Static pods from an HTTP(S) URL (a Pod, YAML documents or a List), fetched every 20 s; pods it no
    /// longer declares are stopped [config: agent.manifest-url]
    #[arg(long, value_name = "URL")]
    pub manifest_url: Option<String>,
    /// The kubelet's CRI runtime: a unix socket path; unset runs and uses the built-in CRI server
    /// [config: agent.container-runtime-endpoint]
    #[arg(long, value_name = "PATH")]
    pub container_runtime_endpoint: Option<PathBuf>,
    /// The kubelet API (HTTPS, bearer token) [config: agent.kubelet-address; default: 0.0.0.0:10250]
    #[arg(long, value_name = "ADDR")]
    pub kubelet_address: Option<SocketAddr>,
    /// Pod logs: <dir>/<namespace>_<pod>_<uid>/<container>/<n>.log [config: agent.pod-log-dir; default:
    /// /var/log/pods]
    #[arg(long, value_name = "DIR")]
    pub pod_log_dir: Option<PathBuf>,
    /// First restart back-off of a crashing container, doubling to 5 min [config: agent.restart-backoff;
    /// default: 10s]
    #[arg(long, value_name = "DURATION")]
    pub restart_backoff: Option<String>,
    /// The node's IP as pods see it (status.hostIP) [config: agent.node-ip; default: the first
    /// non-loopback IPv4 address]
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<std::net::IpAddr>,
    /// Join a cluster: the apiserver and this node's credentials (user system:node:<name>, group
    /// system:nodes), as kubelet's --kubeconfig. The node registers itself, heartbeats through a Lease
    /// and runs the pods bound to it besides its static pods [config: agent.kubeconfig]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Join the cluster at this apiserver URL with --token, as `k3s agent --server`: the node checks the
    /// CA against the token's hash, asks for its certificate and keeps it under the data dir
    /// [config: agent.server]
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// The join token `basalt server` wrote to `<data-dir>/server/node-token`
    /// (`K10<ca-sha256>::<id>.<secret>`); on a shared machine prefer --token-file, which `ps` does not
    /// show [config: agent.token]
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<Secret>,
    /// A file holding the join token [config: agent.token-file]
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// A value never printed: `Debug` shows `<redacted>` (settings are logged; a join token must not be).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// The effective agent settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct AgentConfig {
    pub cri_only: bool,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: Vec<PathBuf>,
    pub registry_config: Option<PathBuf>,
    pub insecure_registry: Vec<String>,
    pub cgroup_parent: String,
    pub monitor_cgroup: String,
    pub streaming_address: SocketAddr,
    pub cri_socket: Option<PathBuf>,
    pub manifest_dir: PathBuf,
    pub manifest_url: Option<String>,
    pub container_runtime_endpoint: Option<PathBuf>,
    pub kubelet_address: SocketAddr,
    pub pod_log_dir: PathBuf,
    pub restart_backoff: String,
    pub node_ip: Option<std::net::IpAddr>,
    pub kubeconfig: Option<PathBuf>,
    pub server: Option<String>,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            cri_only: false,
            cni_conf_dir: "/etc/cni/net.d".into(),
            cni_bin_dir: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            registry_config: None,
            insecure_registry: Vec::new(),
            cgroup_parent: "/kubepods".into(),
            monitor_cgroup: "/basalt-monitors".into(),
            streaming_address: ([127, 0, 0, 1], 0).into(),
            cri_socket: None,
            manifest_dir: "/etc/basalt/manifests".into(),
            manifest_url: None,
            container_runtime_endpoint: None,
            kubelet_address: ([0, 0, 0, 0], 10250).into(),
            pod_log_dir: "/var/log/pods".into(),
            restart_backoff: "10s".into(),
            node_ip: None,
            kubeconfig: None,
            server: None,
            token: None,
            token_file: None,
        }
    }
}

/// `10s`, `500ms`, `2m`: the durations the config takes.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" | "" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n * 60),
        _ => return None,
    })
}

impl AgentConfig {
    /// Defaults < the config file's `agent:` section < flags. Errors name the key.
    pub fn resolve(
        section: Option<&serde_yaml::Value>,
        args: &AgentArgs,
    ) -> Result<AgentConfig, String> {
        let mut c: AgentConfig = match section {
            None | Some(serde_yaml::Value::Null) => AgentConfig::default(),
            Some(v) => {
                serde_yaml::from_value(v.clone()).map_err(|e| format!("config key agent: {e}"))?
            }
        };
        c.cri_only |= args.cri_only;
        if let Some(v) = &args.cni_conf_dir {
            c.cni_conf_dir = v.clone();
        }
        if !args.cni_bin_dir.is_empty() {
            c.cni_bin_dir = args.cni_bin_dir.clone();
        }
        if let Some(v) = &args.registry_config {
            c.registry_config = Some(v.clone());
        }
        if !args.insecure_registry.is_empty() {
            c.insecure_registry = args.insecure_registry.clone();
        }
        if let Some(v) = &args.cgroup_parent {
            c.cgroup_parent = v.clone();
        }
        if let Some(v) = &args.monitor_cgroup {
            c.monitor_cgroup = v.clone();
        }
        if let Some(v) = args.streaming_address {
            c.streaming_address = v;
        }
        if let Some(v) = &args.cri_socket {
            c.cri_socket = Some(v.clone());
        }
        if let Some(v) = &args.manifest_dir {
            c.manifest_dir = v.clone();
        }
        if let Some(v) = &args.manifest_url {
            c.manifest_url = Some(v.clone());
        }
        if let Some(u) = &c.manifest_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!(
                    "agent.manifest-url {u:?}: must be an http:// or https:// URL"
                ));
            }
        }
        if let Some(v) = &args.container_runtime_endpoint {
            c.container_runtime_endpoint = Some(v.clone());
        }
        if let Some(v) = args.kubelet_address {
            c.kubelet_address = v;
        }
        if let Some(v) = &args.pod_log_dir {
            c.pod_log_dir = v.clone();
        }
        if let Some(v) = &args.restart_backoff {
            c.restart_backoff = v.clone();
        }
        if let Some(v) = args.node_ip {
            c.node_ip = Some(v);
        }
        if let Some(v) = &args.kubeconfig {
            c.kubeconfig = Some(v.clone());
        }
        if let Some(v) = &args.server {
            c.server = Some(v.clone());
        }
        if let Some(v) = &args.token {
            c.token = Some(v.clone());
        }
        if let Some(v) = &args.token_file {
            c.token_file = Some(v.clone());
        }
        if c.token.is_some() && c.token_file.is_some() {
            return Err("agent.token and agent.token-file: give the join token once".into());
        }
        // The file is read when the node joins; here it stands for the token.
        let token = c
            .token
            .as_ref()
            .map(|t| Some(t.0.as_str()))
            .or(c.token_file.as_ref().map(|_| None));
        match (&c.server, token) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(
                    "agent.server and agent.token (or agent.token-file): a join needs both".into(),
                )
            }
            (Some(_), Some(_)) if c.kubeconfig.is_some() => {
                return Err(
                    "agent.kubeconfig and agent.server: join with a token or with credentials, not both"
                        .into(),
                )
            }
            (Some(s), Some(t)) => {
                if !s.starts_with("https://") {
                    return Err(format!("agent.server {s:?}: must be an https:// URL"));
                }
                if let Some(t) = t {
                    basalt_join::Token::parse(t).map_err(|e| format!("agent.token: {e}"))?;
                }
            }
            (None, None) => {}
        }
        if parse_duration(&c.restart_backoff).is_none_or(|d| d.is_zero()) {
            return Err(format!(
                "agent.restart-backoff {:?}: a duration like 10s or 500ms",
                c.restart_backoff
            ));
        }
        if !c.cgroup_parent.starts_with('/') {
            return Err(format!(
                "agent.cgroup-parent {:?}: must be an absolute cgroup path",
                c.cgroup_parent
            ));
        }
        if !c.monitor_cgroup.is_empty()
            && (!c.monitor_cgroup.starts_with('/')
                || c.monitor_cgroup.split('/').any(|p| p == ".."))
        {
            return Err(format!(
                "agent.monitor-cgroup {:?}: must be an absolute cgroup path (or empty)",
                c.monitor_cgroup
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn every_config_key_has_a_flag() {
        let keys = serde_yaml::to_value(AgentConfig::default()).unwrap();
        let cmd = Cli::command();
        for (k, _) in keys.as_mapping().unwrap() {
            let k = k.as_str().unwrap();
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some(k)),
                "config key agent.{k} has no --{k} flag"
            );
        }
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: serde_yaml::Value = serde_yaml::from_str(
            "cgroup-parent: /pods\ninsecure-registry: [a:5000]\ncni-conf-dir: /x",
        )
        .unwrap();
        let args = Cli::parse_from(["t", "--cni-conf-dir", "/y", "--cri-only"]).agent;
        let c = AgentConfig::resolve(Some(&file), &args).unwrap();
        assert_eq!(c.cgroup_parent, "/pods");
        assert_eq!(c.insecure_registry, vec!["a:5000".to_owned()]);
        assert_eq!(c.cni_conf_dir, PathBuf::from("/y"));
        assert!(c.cri_only);
        assert_eq!(c.cni_bin_dir, AgentConfig::default().cni_bin_dir);
    }

    #[test]
    fn bad_values_name_the_key() {
        let file: serde_yaml::Value = serde_yaml::from_str("cgroup-parnt: /pods").unwrap();
        let e = AgentConfig::resolve(Some(&file), &AgentArgs::default()).unwrap_err();
        assert!(e.contains("cgroup-parnt"), "{e}");
        let args = AgentArgs {
            cgroup_parent: Some("pods".into()),
            ..Default::default()
        };
        let e = AgentConfig::resolve(None, &args).unwrap_err();
        assert!(
            e.contains("agent.cgroup-parent") && e.contains("\"pods\""),
            "{e}"
        );
        let args = AgentArgs {
            monitor_cgroup: Some("/a/../../etc".into()),
            ..Default::default()
        };
        let e = AgentConfig::resolve(None, &args).unwrap_err();
        assert!(e.contains("agent.monitor-cgroup"), "{e}");
    }

    #[test]
    fn a_join_needs_a_server_and_a_token() {
        let token = format!("K10{}::abcdef.0123456789abcdef", "a".repeat(64));
        let join = |server: Option<&str>, token: Option<&str>| {
            let args = AgentArgs {
                server: server.map(str::to_string),
                token: token.map(|t| Secret(t.to_string())),
                ..Default::default()
            };
            AgentConfig::resolve(None, &args)
        };
        assert!(join(Some("https://10.0.0.1:6443"), Some(&token)).is_ok());
        let e = join(Some("https://10.0.0.1:6443"), None).unwrap_err();
        assert!(e.contains("agent.server and agent.token"), "{e}");
        let e = join(Some("http://10.0.0.1:6443"), Some(&token)).unwrap_err();
        assert!(e.contains("https://"), "{e}");
        let e = join(
            Some("https://10.0.0.1:6443"),
            Some("abcdef.0123456789abcdef"),
        )
        .unwrap_err();
        assert!(
            e.contains("agent.token") && !e.contains("0123456789abcdef"),
            "{e}"
        );
    }
}
