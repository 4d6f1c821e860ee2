//! Starting and stopping the CRI server of one harness: a private containerd, or `basalt agent --cri-only`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::endpoint::{basalt_bin, Endpoint};
use crate::network::{Network, CNI_BIN_DIR};

/// A running CRI server process and where to reach it.
pub struct Daemon {
    pub endpoint: Endpoint,
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `endpoint` with all of its state under `dir`, pulling from the plain-HTTP registry `registry`.
    pub fn start(
        endpoint: Endpoint,
        dir: &Path,
        net: &Network,
        registry: &str,
        pause_image: &str,
    ) -> Result<Daemon> {
        // BASALT_TEST_AGENT_LOG=<file>: our agent logs at debug level to that file, which outlives the harness.
        let debug_log =
            std::env::var_os("BASALT_TEST_AGENT_LOG").filter(|_| endpoint == Endpoint::Basalt);
        let log = match &debug_log {
            Some(p) => PathBuf::from(p),
            None => dir.join(format!("{}.log", endpoint.name())),
        };
        // Appended to: a restarted daemon's log follows the killed one's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let (mut cmd, socket) = match endpoint {
            Endpoint::Containerd | Endpoint::ContainerdBasaltRunc => {
                let runtime = match endpoint {
                    Endpoint::ContainerdBasaltRunc => Some(basalt_runc_link(dir)?),
                    _ => None,
                };
                let config = dir.join("containerd.toml");
                let text = containerd_config(dir, net, registry, pause_image, runtime.as_deref());
                std::fs::write(&config, text)?;
                let mut cmd = Command::new("containerd");
                cmd.arg("--config").arg(&config);
                (cmd, dir.join("containerd.sock"))
            }
            Endpoint::Basalt => {
                let run = dir.join("run");
                // An empty config of our own: the instance must not pick up a host's /etc/basalt/config.yaml.
                let config = dir.join("basalt.yaml");
                let level = if debug_log.is_some() {
                    "log-level: debug\n"
                } else {
                    "{}\n"
                };
                std::fs::write(&config, level)?;
                let mut cmd = Command::new(basalt_bin());
                cmd.arg("--config")
                    .arg(&config)
                    .arg("--data-dir")
                    .arg(dir.join("data"))
                    .arg("--run-dir")
                    .arg(&run)
                    .args(["agent", "--cri-only"])
                    .arg("--cni-conf-dir")
                    .arg(&net.conf_dir)
                    .args(["--cni-bin-dir", CNI_BIN_DIR])
                    .args(["--insecure-registry", registry])
                    .args(["--streaming-address", "127.0.0.1:0"]);
                (cmd, run.join("cri.sock"))
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", endpoint.name()))?;
        Ok(Daemon {
            endpoint,
            child,
            socket,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the daemon logged so far, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILLs the daemon (crash-only servers must survive that) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `<dir>/basalt-runc`, a link to the `basalt` under test: the multi-call binary is our runtime by that name.
fn basalt_runc_link(dir: &Path) -> Result<PathBuf> {
    let link = dir.join("basalt-runc");
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(basalt_bin(), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    Ok(link)
}

/// containerd 1.6 with only what a CRI node needs: runc through the v2 shim with the cgroupfs driver (the host
/// is cgroup v1 hybrid), runc state under the harness, the local registry as a plain-HTTP mirror of itself,
/// and the harness's CNI network. With `runtime`, that binary is the shim's runc (`BinaryName`) and a
/// container that asks for no seccomp profile gets RuntimeDefault, as under a kubelet's `--seccomp-default`.
fn containerd_config(
    dir: &Path,
    net: &Network,
    registry: &str,
    pause_image: &str,
    runtime: Option<&Path>,
) -> String {
    let d = dir.display();
    let (binary_name, unset_seccomp) = match runtime {
        Some(bin) => (
            format!("\n        BinaryName = \"{}\"", bin.display()),
            "\n  unset_seccomp_profile = \"runtime/default\"",
        ),
        None => (String::new(), ""),
    };
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  # Lowering oom_score_adj needs CAP_SYS_RESOURCE, which a CI container may lack.
  restrict_oom_score_adj = true
  enable_selinux = false{unset_seccomp}
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"{binary_name}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{conf_dir}"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#,
        cni_bin = CNI_BIN_DIR,
        conf_dir = net.conf_dir.display(),
    )
}
