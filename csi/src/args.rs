//! `basalt csi` settings: the `csi:` section of the node's config file, each key overridable by the flag of the
//! same name. Paths default under the global `--data-dir` and `--run-dir`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::store::Backend;

/// The driver name COs know the plugin by (StorageClass `provisioner`, CSIDriver object).
pub const DEFAULT_DRIVER_NAME: &str = "hostpath.csi.basalt.io";

/// The command line; `None` keeps what the config file (or the default) says.
#[derive(Debug, Clone, Default, Args)]
pub struct CsiArgs {
    /// The gRPC endpoint: a unix socket path (or unix://PATH), or tcp://HOST:PORT (no authentication: only on a
    /// network you trust) [config: csi.csi-address; default: <run-dir>/csi/csi.sock]
    #[arg(long, value_name = "ADDRESS")]
    pub csi_address: Option<String>,
    /// Where volumes, snapshots and the volume index live [config: csi.base-dir; default: <data-dir>/csi]
    #[arg(long, value_name = "DIR")]
    pub base_dir: Option<PathBuf>,
    /// The driver name [config: csi.driver-name; default: hostpath.csi.basalt.io]
    #[arg(long, value_name = "NAME")]
    pub driver_name: Option<String>,
    /// How filesystem volumes enforce their capacity: auto (project quotas where the base directory's
    /// filesystem enforces them, else ext4 image files), project-quota or image [config: csi.volume-backend;
    /// default: auto]
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub volume_backend: Option<Backend>,
    /// Volumes this node takes at most, reported by NodeGetInfo; 0 = no limit
    /// [config: csi.max-volumes-per-node; default: 0]
    #[arg(long, value_name = "N")]
    pub max_volumes_per_node: Option<i64>,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct CsiConfig {
    pub csi_address: Option<String>,
    pub base_dir: Option<PathBuf>,
    pub driver_name: String,
    pub volume_backend: Backend,
    pub max_volumes_per_node: i64,
}

impl Default for CsiConfig {
    fn default() -> Self {
        CsiConfig {
            csi_address: None,
            base_dir: None,
            driver_name: DEFAULT_DRIVER_NAME.into(),
            volume_backend: Backend::Auto,
            max_volumes_per_node: 0,
        }
    }
}

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl Address {
    pub fn parse(s: &str) -> Result<Address, String> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            return rest
                .parse()
                .map(Address::Tcp)
                .map_err(|e| format!("csi-address {s:?}: {e} (expected tcp://IP:PORT)"));
        }
        let path = Path::new(s.strip_prefix("unix://").unwrap_or(s));
        if !path.is_absolute() {
            return Err(format!(
                "csi-address {s:?}: expected an absolute socket path, unix://PATH or tcp://IP:PORT"
            ));
        }
        Ok(Address::Unix(path.to_owned()))
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
            Address::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl CsiConfig {
    /// Defaults < the config file's `csi:` section < flags. Errors name the key.
    pub fn resolve(
        section: Option<&serde_yaml::Value>,
        args: &CsiArgs,
    ) -> Result<CsiConfig, String> {
        let mut c: CsiConfig = match section {
            None | Some(serde_yaml::Value::Null) => CsiConfig::default(),
            Some(v) => {
                serde_yaml::from_value(v.clone()).map_err(|e| format!("config key csi: {e}"))?
            }
        };
        if let Some(v) = &args.csi_address {
            c.csi_address = Some(v.clone());
        }
        if let Some(v) = &args.base_dir {
            c.base_dir = Some(v.clone());
        }
        if let Some(v) = &args.driver_name {
            c.driver_name = v.clone();
        }
        if let Some(v) = args.volume_backend {
            c.volume_backend = v;
        }
        if let Some(v) = args.max_volumes_per_node {
            c.max_volumes_per_node = v;
        }
        if let Some(a) = &c.csi_address {
            Address::parse(a)?;
        }
        if let Some(b) = &c.base_dir {
            if !b.is_absolute() {
                return Err(format!(
                    "csi.base-dir {:?}: must be an absolute path",
                    b.display()
                ));
            }
        }
        if !valid_driver_name(&c.driver_name) {
            return Err(format!(
                "csi.driver-name {:?}: must be a domain name of at most 63 characters ([a-z0-9A-Z.-], \
                 alphanumeric at both ends)",
                c.driver_name
            ));
        }
        if c.max_volumes_per_node < 0 {
            return Err(format!(
                "csi.max-volumes-per-node {}: must not be negative",
                c.max_volumes_per_node
            ));
        }
        Ok(c)
    }

    pub fn address(&self, run_dir: &Path) -> Address {
        match &self.csi_address {
            Some(a) => Address::parse(a).expect("checked by resolve"),
            None => Address::Unix(run_dir.join("csi").join("csi.sock")),
        }
    }

    pub fn base(&self, data_dir: &Path) -> PathBuf {
        self.base_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("csi"))
    }
}

/// The spec's rule for GetPluginInfo's name.
fn valid_driver_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_and_errors_name_the_key() {
        let section: serde_yaml::Value =
            serde_yaml::from_str("base-dir: /srv/csi\nmax-volumes-per-node: 5\n").unwrap();
        let c = CsiConfig::resolve(
            Some(&section),
            &CsiArgs {
                max_volumes_per_node: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.base_dir.as_deref(), Some(Path::new("/srv/csi")));
        assert_eq!(c.max_volumes_per_node, 7);
        assert_eq!(
            c.address(Path::new("/run/b")),
            Address::Unix("/run/b/csi/csi.sock".into())
        );
        let bad: serde_yaml::Value = serde_yaml::from_str("base-dri: /x\n").unwrap();
        let e = CsiConfig::resolve(Some(&bad), &CsiArgs::default()).unwrap_err();
        assert!(e.contains("base-dri"), "{e}");
        let e = CsiConfig::resolve(
            None,
            &CsiArgs {
                csi_address: Some("tcp://nowhere".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("csi-address") && e.contains("nowhere"), "{e}");
        let e = CsiConfig::resolve(
            None,
            &CsiArgs {
                driver_name: Some("-bad".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.contains("driver-name") && e.contains("-bad"), "{e}");
        assert_eq!(
            Address::parse("unix:///a/b.sock").unwrap(),
            Address::Unix("/a/b.sock".into())
        );
        assert_eq!(
            Address::parse("tcp://127.0.0.1:9").unwrap(),
            Address::Tcp(([127, 0, 0, 1], 9).into())
        );
    }
}
