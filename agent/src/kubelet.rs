//! The built-in kubelet, started against the CRI endpoint (ours or another runtime's), with its API, and the
//! pod summary the node image's console shows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::args::AgentConfig;

/// The node's name: configured, or the machine's hostname.
pub fn node_name(config: &basalt_config::Config) -> anyhow::Result<String> {
    Ok(match &config.node_name {
        Some(n) => n.clone(),
        None => nix::unistd::gethostname()?.to_string_lossy().into_owned(),
    })
}

/// With `--server --token` and no credentials kept yet, the node's first join: its certificate asked
/// for and kept under the data dir, which `agent.kubeconfig` then names. Done before anything starts, so
/// a refused token leaves nothing behind; later starts use the kept credentials and never wait here.
pub async fn join(config: &basalt_config::Config, args: &mut AgentConfig) -> anyhow::Result<()> {
    let Some(server) = &args.server else {
        return Ok(());
    };
    let text = match (&args.token, &args.token_file) {
        (Some(t), _) => t.0.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("agent.token-file {}", f.display()))?,
        (None, None) => anyhow::bail!("agent.server without a join token"),
    };
    let token = basalt_join::Token::parse(&text).context("agent.token")?;
    let path = basalt_join::join(server, &token, &node_name(config)?, &config.data_dir)
        .await
        .with_context(|| format!("joining the cluster at {server}"))?;
    args.kubeconfig = Some(path);
    Ok(())
}

/// For a node that joined with a token: renews its client certificate at 70–90% of its life (with the
/// certificate itself, approved as the node renewing itself). Resolves once renewed; never without
/// joined credentials.
pub fn renew_credentials(
    config: &basalt_config::Config,
    args: &AgentConfig,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (Some(_), Some(path)) = (&args.server, args.kubeconfig.clone()) else {
        return Ok(rx);
    };
    let node = node_name(config)?;
    tokio::spawn(async move {
        let jitter = basalt_join::bootstrap::jitter();
        loop {
            let Some(at) = basalt_join::bootstrap::renewal_at(&path, jitter) else {
                tracing::warn!(path = %path.display(), "node credentials unreadable: not renewed");
                return;
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if at > now {
                tokio::time::sleep(std::time::Duration::from_secs((at - now) as u64)).await;
            }
            match basalt_join::bootstrap::renew(&path, &node).await {
                Ok(()) => {
                    let _ = tx.send(());
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the node credentials; trying again in a minute");
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                }
            }
        }
    });
    Ok(rx)
}

/// Starts the kubelet and its API; returns the task running its pods.
pub async fn start(
    config: &basalt_config::Config,
    args: &AgentConfig,
    endpoint: &Path,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let node_name = node_name(config)?;
    let host_ip = match args.node_ip {
        Some(ip) => ip.to_string(),
        None => first_ipv4().unwrap_or_else(|| "127.0.0.1".into()),
    };
    let initial = crate::args::parse_duration(&args.restart_backoff).expect("checked by resolve");
    let settings = basalt_kubelet::Settings {
        node_name: node_name.clone(),
        host_ip,
        manifest_dir: args.manifest_dir.clone(),
        manifest_url: args.manifest_url.clone(),
        http_check_frequency: std::time::Duration::from_secs(20),
        log_root: args.pod_log_dir.clone(),
        pods_root: config.data_dir.join("pods"),
        cgroup_root: args.cgroup_parent.clone(),
        seccomp_default: true,
        backoff: basalt_kubelet::backoff::Policy {
            initial,
            ..Default::default()
        },
        sync_period: std::time::Duration::from_secs(1),
        file_check_frequency: std::time::Duration::from_secs(20),
        max_dead_per_container: 1,
        user_namespaces: basalt_kubelet::userns::Range::from_subid_files(
            Path::new("/etc/subuid"),
            Path::new("/etc/subgid"),
        )
        .context("hostUsers: false id range")?
        .unwrap_or_default(),
    };
    let cri = basalt_kubelet::cri::Cri::connect(endpoint).context("CRI endpoint")?;
    let kubelet = basalt_kubelet::Kubelet::new(cri, settings);
    // Bound first: the Node is registered with the port the apiserver reaches the kubelet API on.
    let listener = tokio::net::TcpListener::bind(args.kubelet_address)
        .await
        .with_context(|| format!("serving the kubelet API on {}", args.kubelet_address))?;
    let api_port = listener.local_addr()?.port();
    // API mode: the cluster is one more pod source. Connecting only reads the kubeconfig; an apiserver
    // that is down is retried in the background while static pods run.
    let cluster = match &args.kubeconfig {
        Some(kc) => Some(
            basalt_kubelet::cluster::Cluster::connect(kc, &kubelet.settings.node_name)
                .await
                .context("agent.kubeconfig")?,
        ),
        None => None,
    };
    let cluster_pods = cluster.as_ref().map(|c| {
        c.set_api_port(api_port);
        c.start(kubelet.clone(), kubelet.terminations())
    });
    // Pods start before the API is up: making its key on a first boot waits for the kernel's random pool,
    // which on a fresh machine without a hardware RNG took a second that static pods need not wait for.
    let run = tokio::spawn(kubelet.clone().run_with(cluster_pods));
    let api = async {
        let data_dir = config.data_dir.clone();
        let creds = tokio::task::spawn_blocking(move || {
            basalt_kubelet::api::credentials(&data_dir, &[node_name])
        })
        .await?
        .context("kubelet API token and certificate")?;
        let addr = basalt_kubelet::api::serve_on(kubelet.clone(), listener, creds, cluster)
            .await
            .with_context(|| format!("serving the kubelet API on {}", args.kubelet_address))?;
        std::fs::write(config.run_dir.join("kubelet-api.addr"), addr.to_string())?;
        anyhow::Ok(addr)
    };
    let addr = match api.await {
        Ok(addr) => addr,
        Err(e) => {
            run.abort();
            return Err(e);
        }
    };
    tracing::info!(%addr, manifests = %args.manifest_dir.display(), runtime = %endpoint.display(), "kubelet ready");
    tokio::spawn(publish_pod_summary(
        kubelet.clone(),
        config.run_dir.join(POD_SUMMARY),
    ));
    Ok(run)
}

/// `<run-dir>/pods.summary`: one line per pod (`namespace/name phase ready/total restarts`), rewritten
/// atomically when it changes. The node image's console shows it; PID 1 cannot speak the TLS kubelet API.
pub const POD_SUMMARY: &str = "pods.summary";

async fn publish_pod_summary(kubelet: Arc<basalt_kubelet::Kubelet>, path: PathBuf) {
    let mut last = None;
    loop {
        let text = pod_summary(&kubelet.pods());
        if last.as_ref() != Some(&text) {
            let tmp = path.with_extension("tmp");
            match std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path)) {
                Ok(()) => last = Some(text),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "writing the pod summary")
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

fn pod_summary(pods: &[k8s_openapi::api::core::v1::Pod]) -> String {
    let mut lines: Vec<String> = pods
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let containers = status
                .and_then(|s| s.container_statuses.as_deref())
                .unwrap_or_default();
            // Why a pod is not running yet is what an operator at the console needs most.
            let waiting = containers
                .iter()
                .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
                .chain(
                    status
                        .and_then(|s| s.init_container_statuses.as_deref())
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()),
                )
                .find_map(|w| {
                    let reason = w.reason.as_deref()?;
                    let message: String = w
                        .message
                        .as_deref()
                        .unwrap_or("")
                        .chars()
                        .take(160)
                        .collect();
                    Some(format!(" {reason}: {}", message.replace('\n', " ")))
                })
                .or_else(|| {
                    let m: String = status?.message.as_deref()?.chars().take(160).collect();
                    Some(format!(" {}", m.replace('\n', " ")))
                })
                .unwrap_or_default();
            format!(
                "{}/{} {} {}/{} {}{waiting}\n",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name.as_deref().unwrap_or("?"),
                status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending"),
                containers.iter().filter(|c| c.ready).count(),
                containers.len(),
                containers.iter().map(|c| c.restart_count).sum::<i32>()
            )
        })
        .collect();
    lines.sort();
    lines.concat()
}

/// The first non-loopback IPv4 address of the node: what pods see as status.hostIP.
fn first_ipv4() -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    // The interface of the default route, then its address from getifaddrs.
    let iface = text
        .lines()
        .skip(1)
        .find(|l| l.split_whitespace().nth(1) == Some("00000000"))?
        .split_whitespace()
        .next()?
        .to_owned();
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == iface)
        .find_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip().to_string()))
}
