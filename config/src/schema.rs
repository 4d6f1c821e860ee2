use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Where a node looks for its configuration when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/basalt/config.yaml";

/// The effective configuration of one `basalt` process.
///
/// Keys are kebab-case in the file and as flags. Unknown keys are an error: a typo in an appliance's config must
/// not silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// Root of all persistent state (images, pod state, certificates).
    pub data_dir: PathBuf,
    /// Root of all runtime files (sockets, pid files, mounts that die with the boot).
    pub run_dir: PathBuf,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    /// The node's name; the host name when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// PID 1's own section (network, state disk) on a node image. `basalt init` parses and checks it; every
    /// other command only carries it, so a node's config file works for all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<serde_yaml::Value>,
    /// The agent's section (`basalt agent` flags as keys); `basalt agent` parses and checks it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<serde_yaml::Value>,
    /// The CSI plugin's section (`basalt csi` flags as keys); `basalt csi` parses and checks it. On a node image
    /// its presence is what makes PID 1 run the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csi: Option<serde_yaml::Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("/var/lib/basalt"),
            run_dir: PathBuf::from("/run/basalt"),
            log_level: LogLevel::Info,
            log_format: LogFormat::Text,
            node_name: None,
            init: None,
            agent: None,
            csi: None,
        }
    }
}

/// Values given on the command line; `None` keeps what the file (or the default) says.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
    pub log_format: Option<LogFormat>,
    pub node_name: Option<String>,
}

impl Config {
    /// Reads `path` if given (it must then exist), else the default path if it exists, else the defaults;
    /// then applies `overrides` and validates the result.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Self::from_file(Path::new(DEFAULT_CONFIG_PATH))?
            }
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    fn from_yaml(text: &str) -> Result<Config, String> {
        // An empty file (or one holding only comments) means "all defaults", as it does for kubelet.
        if serde_yaml::from_str::<serde_yaml::Value>(text).map_err(|e| e.to_string())?
            == serde_yaml::Value::Null
        {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &o.run_dir {
            self.run_dir = v.clone();
        }
        if let Some(v) = o.log_level {
            self.log_level = v;
        }
        if let Some(v) = o.log_format {
            self.log_format = v;
        }
        if let Some(v) = &o.node_name {
            self.node_name = Some(v.clone());
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, dir) in [("data-dir", &self.data_dir), ("run-dir", &self.run_dir)] {
            if !dir.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    value: dir.display().to_string(),
                    message: "must be an absolute path",
                });
            }
        }
        if let Some(name) = &self.node_name {
            if !is_dns_subdomain(name) {
                return Err(ConfigError::Invalid {
                    key: "node-name",
                    value: name.clone(),
                    message: "must be a lowercase RFC 1123 subdomain (a-z, 0-9, '-', '.')",
                });
            }
        }
        Ok(())
    }

    /// Every key the file accepts, in file order. Used to prove that each one has a flag.
    pub fn keys() -> Vec<String> {
        let full = Config {
            node_name: Some("n".into()),
            ..Config::default()
        };
        match serde_yaml::to_value(full) {
            Ok(serde_yaml::Value::Mapping(m)) => m
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

/// Node names become hostnames, label values and object names: Kubernetes' DNS-subdomain rule.
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "error" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            other => {
                return Err(format!(
                    "unknown log level {other:?} (expected error, warn, info, debug or trace)"
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn file_values_replace_defaults_and_flags_replace_file_values() {
        let f = write("data-dir: /srv/basalt\nlog-level: debug\nrun-dir: /run/b2\n");
        let flags = Overrides {
            run_dir: Some("/tmp/run".into()),
            ..Overrides::default()
        };
        let c = Config::load(Some(f.path()), &flags).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/basalt"));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.run_dir, PathBuf::from("/tmp/run"));
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let f = write("data-dir: /x\ndata-dri: /y\n");
        let err = Config::load(Some(f.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("data-dri"), "{err}");
    }

    #[test]
    fn bad_value_names_key_and_value() {
        let f = write("log-format: xml\n");
        let err = Config::load(Some(f.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("xml") && err.contains("log-format"), "{err}");

        let f = write("data-dir: relative/dir\n");
        let err = Config::load(Some(f.path()), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data-dir") && err.contains("relative/dir"),
            "{err}"
        );

        let err = Config::load(
            None,
            &Overrides {
                node_name: Some("Bad_Name".into()),
                ..Default::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("node-name") && err.contains("Bad_Name"),
            "{err}"
        );
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let err = Config::load(
            Some(Path::new("/nonexistent/basalt.yaml")),
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/basalt.yaml"));
    }

    #[test]
    fn empty_file_means_defaults() {
        let f = write("# nothing set\n");
        assert_eq!(
            Config::load(Some(f.path()), &Overrides::default()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn an_init_section_is_carried_for_pid_1() {
        let f = write("node-name: n1\ninit:\n  ip: 10.0.2.20/24\n");
        let c = Config::load(Some(f.path()), &Overrides::default()).unwrap();
        assert_eq!(
            c.init.as_ref().unwrap()["ip"].as_str(),
            Some("10.0.2.20/24")
        );
    }

    #[test]
    fn keys_round_trip() {
        let keys = Config::keys();
        assert_eq!(
            keys,
            [
                "data-dir",
                "run-dir",
                "log-level",
                "log-format",
                "node-name"
            ]
        );
    }
}
