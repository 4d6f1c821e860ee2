//! PID 1's view of the configuration: `/etc/basalt/config.yaml` (its `init:` section is ours, the rest is the
//! node's `basalt_config::Config`) with `basalt.KEY=VALUE` kernel command-line arguments on top.
//!
//! Nothing here is fatal: a bad file or argument becomes an error message and the default for that part, so
//! the node still boots with what works and shows what did not.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use basalt_config::{Config, LogFormat, LogLevel, Overrides};
use serde::{Deserialize, Serialize};

/// The `init:` section of config.yaml. Every key can also be given as `basalt.KEY=VALUE`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct InitSection {
    /// Static address `A.B.C.D/PREFIX` of the first ethernet interface; DHCPv4 when unset.
    pub ip: Option<String>,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// Interface to configure [default: the first ethernet device].
    pub interface: Option<String>,
    /// Block device holding /var/lib/basalt; state stays in RAM when unset.
    pub disk: Option<PathBuf>,
    pub disk_format: DiskFormat,
    /// Serve `GET /healthz` → `ok` on this TCP port (off when unset). Exposes nothing else.
    pub status_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFormat {
    /// Format with ext4 when the first MiB of the disk is all zeroes (a new disk); never touch data.
    #[default]
    IfBlank,
    Never,
}

/// How the node's interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    Dhcp,
    Static {
        addr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        dns: Vec<Ipv4Addr>,
    },
}

/// The outcome of reading file and command line: always usable, with the errors met on the way.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node: Config,
    pub init: InitSection,
    pub network: Network,
    pub errors: Vec<String>,
}

impl Settings {
    pub fn hostname(&self) -> &str {
        self.node.node_name.as_deref().unwrap_or("basalt")
    }
}

/// Reads `path` strictly (for the builder): any problem PID 1 would show is an error here.
pub fn check_file(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    let s = load(Ok(text), "");
    if let Some(e) = s.errors.first() {
        anyhow::bail!("--config {}: {e}", path.display());
    }
    Ok(())
}

/// `file` is the config file's text (or why it could not be read), `cmdline` is /proc/cmdline.
pub fn load(file: Result<String, String>, cmdline: &str) -> Settings {
    let mut errors = Vec::new();
    let mut init = InitSection::default();
    let mut node = Config::default();
    let value = match file {
        Ok(text) => serde_yaml::from_str::<serde_yaml::Value>(&text).unwrap_or_else(|e| {
            errors.push(format!("config.yaml: {e}"));
            serde_yaml::Value::Null
        }),
        Err(e) => {
            errors.push(format!("config.yaml: {e}"));
            serde_yaml::Value::Null
        }
    };
    match value {
        serde_yaml::Value::Null => {}
        serde_yaml::Value::Mapping(mut m) => {
            if let Some(section) = m.remove("init") {
                if !section.is_null() {
                    match serde_yaml::from_value(section) {
                        Ok(s) => init = s,
                        Err(e) => errors.push(format!("config.yaml: init: {e}")),
                    }
                }
            }
            match serde_yaml::from_value::<Config>(serde_yaml::Value::Mapping(m)) {
                Ok(c) => match c.validate() {
                    Ok(()) => node = c,
                    Err(e) => errors.push(format!("config.yaml: {e}")),
                },
                Err(e) => errors.push(format!("config.yaml: {e}")),
            }
        }
        _ => errors.push("config.yaml: expected a mapping of keys".into()),
    }

    let mut overrides = Overrides::default();
    for arg in cmdline.split_whitespace() {
        let Some(kv) = arg.strip_prefix("basalt.") else {
            continue;
        };
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        if let Err(e) = apply_arg(key, value, &mut overrides, &mut init) {
            errors.push(format!("kernel command line: basalt.{key}={value}: {e}"));
        }
    }
    let mut with = node.clone();
    with.apply(&overrides);
    match with.validate() {
        Ok(()) => node = with,
        Err(e) => errors.push(format!("kernel command line: {e}")),
    }

    let network = match network(&init) {
        Ok(n) => n,
        Err(e) => {
            errors.push(format!("network: {e}; using DHCP"));
            Network::Dhcp
        }
    };
    Settings {
        node,
        init,
        network,
        errors,
    }
}

fn apply_arg(key: &str, v: &str, o: &mut Overrides, init: &mut InitSection) -> Result<(), String> {
    let path = |v: &str| Ok::<_, String>(PathBuf::from(v));
    match key {
        "node-name" | "hostname" => o.node_name = Some(v.to_owned()),
        "log-level" => o.log_level = Some(v.parse::<LogLevel>()?),
        "log-format" => o.log_format = Some(v.parse::<LogFormat>()?),
        "data-dir" => o.data_dir = Some(path(v)?),
        "run-dir" => o.run_dir = Some(path(v)?),
        "ip" => init.ip = Some(v.to_owned()),
        "gateway" => init.gateway = Some(v.parse().map_err(|e| format!("{e}"))?),
        "dns" => {
            init.dns = v
                .split(',')
                .map(|a| a.parse().map_err(|e| format!("{a:?}: {e}")))
                .collect::<Result<_, _>>()?
        }
        "interface" => init.interface = Some(v.to_owned()),
        "disk" => init.disk = Some(path(v)?),
        "disk-format" => {
            init.disk_format = match v {
                "if-blank" => DiskFormat::IfBlank,
                "never" => DiskFormat::Never,
                _ => return Err("expected if-blank or never".into()),
            }
        }
        "status-port" => init.status_port = Some(v.parse().map_err(|e| format!("{e}"))?),
        _ => return Err("unknown key".into()),
    }
    Ok(())
}

fn network(init: &InitSection) -> Result<Network, String> {
    let Some(ip) = &init.ip else {
        return Ok(Network::Dhcp);
    };
    let (addr, prefix) = ip
        .split_once('/')
        .ok_or_else(|| format!("ip {ip:?}: expected A.B.C.D/PREFIX"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|e| format!("ip {ip:?}: {e}"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("ip {ip:?}: prefix must be 0..=32"))?;
    Ok(Network::Static {
        addr,
        prefix,
        gateway: init.gateway,
        dns: init.dns.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_command_line_combine() {
        let s = load(
            Ok("node-name: from-file\nlog-level: debug\ninit:\n  status-port: 80\n".into()),
            "console=ttyS0 basalt.node-name=n1 basalt.ip=10.0.0.5/24 basalt.gateway=10.0.0.1 basalt.dns=1.1.1.1,9.9.9.9",
        );
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.hostname(), "n1");
        assert_eq!(s.node.log_level, LogLevel::Debug);
        assert_eq!(s.init.status_port, Some(80));
        assert_eq!(
            s.network,
            Network::Static {
                addr: Ipv4Addr::new(10, 0, 0, 5),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(9, 9, 9, 9)],
            }
        );
    }

    #[test]
    fn bad_parts_are_named_and_the_rest_still_applies() {
        let s = load(
            Ok("log-level: loud\ninit:\n  bogus: 1\n".into()),
            "basalt.node-name=ok-name basalt.nope=1 basalt.ip=300.1.1.1/24 basalt.status-port=x",
        );
        let all = s.errors.join("\n");
        assert!(all.contains("loud"), "{all}");
        assert!(all.contains("bogus"), "{all}");
        assert!(all.contains("basalt.nope=1: unknown key"), "{all}");
        assert!(all.contains("300.1.1.1"), "{all}");
        assert!(all.contains("basalt.status-port=x"), "{all}");
        assert_eq!(s.hostname(), "ok-name");
        assert_eq!(s.node.log_level, LogLevel::Info);
        assert_eq!(s.network, Network::Dhcp);
    }

    #[test]
    fn the_default_config_is_clean_and_means_dhcp() {
        let s = load(Ok(crate::builder::DEFAULT_CONFIG.into()), "");
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(s.network, Network::Dhcp);
        assert_eq!(s.node, Config::default());
    }

    #[test]
    fn a_bad_node_name_on_the_command_line_keeps_the_file_value() {
        let s = load(Ok("node-name: good\n".into()), "basalt.hostname=Bad_Name");
        assert_eq!(s.hostname(), "good");
        assert!(s.errors[0].contains("Bad_Name"), "{:?}", s.errors);
        let s = load(Err("No such file".into()), "");
        assert_eq!(s.hostname(), "basalt");
        assert_eq!(s.errors.len(), 1);
    }
}
