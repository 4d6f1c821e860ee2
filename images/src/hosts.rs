//! Registry configuration in the shape of k3s's `registries.yaml`: per-registry mirrors with path rewrites, and
//! per-host auth and TLS. Plain HTTP is chosen by an `http://` endpoint or by `--insecure-registry HOST:PORT`.
//!
//! ```yaml
//! mirrors:
//!   docker.io:
//!     endpoint: ["http://127.0.0.1:5000"]
//!     rewrite: {"^library/(.*)": "mirror/$1"}
//! configs:
//!   "127.0.0.1:5000":
//!     auth: {username: u, password: p}
//!     tls: {ca_file: /etc/ssl/my-ca.pem, insecure_skip_verify: false}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    #[serde(default)]
    pub configs: BTreeMap<String, HostConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    #[serde(default)]
    pub endpoint: Vec<String>,
    /// Regular expression → replacement (`$1` …) applied to the repository path when using this mirror.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub auth: Option<Auth>,
    pub tls: Option<Tls>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// base64 of `username:password`, as in a Docker config.json.
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// Where to fetch one repository from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port` (no trailing slash, no `/v2`).
    pub base: String,
    /// `host:port` of `base`, the key for auth and TLS settings.
    pub host: String,
    /// The repository path on this endpoint (after rewrites).
    pub repository: String,
}

/// The registries config plus command-line shortcuts.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    pub config: RegistriesConfig,
    /// Hosts reached over plain HTTP by default (`--insecure-registry`).
    pub insecure: BTreeSet<String>,
    /// Never fall back to the registry itself after its mirrors (k3s's `--disable-default-registry-endpoint`).
    pub disable_default_endpoint: bool,
}

impl RegistriesConfig {
    pub fn load(path: &Path) -> Result<RegistriesConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConfig> {
        let c: RegistriesConfig = serde_yaml::from_str(text).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        for (name, m) in &c.mirrors {
            for e in &m.endpoint {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(bad(format!(
                        "mirrors.{name}.endpoint: {e:?} must start with http:// or https://"
                    )));
                }
            }
            for re in m.rewrite.keys() {
                regex::Regex::new(re)
                    .map_err(|err| bad(format!("mirrors.{name}.rewrite: {re:?}: {err}")))?;
            }
        }
        for (host, hc) in &c.configs {
            if let Some(t) = &hc.tls {
                if t.cert_file.is_some() || t.key_file.is_some() {
                    return Err(bad(format!(
                        "configs.{host}.tls: cert_file/key_file (client certificates) are not supported yet"
                    )));
                }
            }
        }
        Ok(c)
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl Hosts {
    /// Endpoints to try for `registry`/`repository`, in order: mirrors, then the registry itself.
    pub fn endpoints(&self, registry: &str, repository: &str) -> Vec<Endpoint> {
        let mut out = Vec::new();
        let mirror = self
            .config
            .mirrors
            .get(registry)
            .or_else(|| self.config.mirrors.get("*"));
        if let Some(m) = mirror {
            let mut repo = repository.to_owned();
            for (re, with) in &m.rewrite {
                let re = regex::Regex::new(re).expect("validated at load");
                if re.is_match(&repo) {
                    repo = re.replace(&repo, with.as_str()).into_owned();
                    break;
                }
            }
            for e in &m.endpoint {
                let base = e.trim_end_matches('/').trim_end_matches("/v2").to_owned();
                out.push(Endpoint {
                    host: host_of(&base).to_owned(),
                    base,
                    repository: repo.clone(),
                });
            }
        }
        if !self.disable_default_endpoint || out.is_empty() {
            let default_host = if registry == crate::reference::DOCKER_HUB {
                "registry-1.docker.io"
            } else {
                registry
            };
            let scheme = if self.insecure.contains(registry) {
                "http"
            } else {
                "https"
            };
            let base = format!("{scheme}://{default_host}");
            if !out.iter().any(|e| e.base == base) {
                out.push(Endpoint {
                    host: default_host.to_owned(),
                    base,
                    repository: repository.to_owned(),
                });
            }
        }
        out
    }

    /// Auth and TLS settings for an endpoint host.
    pub fn host_config(&self, host: &str) -> Option<&HostConfig> {
        self.config.configs.get(host).or_else(|| {
            self.config
                .configs
                .iter()
                .find(|(k, _)| host_of(k) == host)
                .map(|(_, v)| v)
        })
    }

    /// `(username, password)` for `host`, if configured.
    pub fn credentials(&self, host: &str) -> Option<(String, String)> {
        let auth = self.host_config(host)?.auth.as_ref()?;
        if let (Some(u), Some(p)) = (&auth.username, &auth.password) {
            return Some((u.clone(), p.clone()));
        }
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.as_ref()?)
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_owned(), p.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_rewrites_and_default() {
        let c = RegistriesConfig::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"http://127.0.0.1:5000/\"]\n    rewrite:\n      \"^library/(.*)\": \"mirror/$1\"\n\
             configs:\n  \"127.0.0.1:5000\":\n    auth: {username: u, password: p}\n",
            Path::new("r.yaml"),
        )
        .unwrap();
        let h = Hosts {
            config: c,
            ..Default::default()
        };
        let e = h.endpoints("docker.io", "library/busybox");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].base, "http://127.0.0.1:5000");
        assert_eq!(e[0].host, "127.0.0.1:5000");
        assert_eq!(e[0].repository, "mirror/busybox");
        assert_eq!(e[1].base, "https://registry-1.docker.io");
        assert_eq!(e[1].repository, "library/busybox");
        assert_eq!(
            h.credentials("127.0.0.1:5000"),
            Some(("u".into(), "p".into()))
        );
        let h = Hosts {
            disable_default_endpoint: true,
            ..h
        };
        assert_eq!(h.endpoints("docker.io", "library/busybox").len(), 1);
    }

    #[test]
    fn a_wildcard_mirror_serves_every_registry() {
        let c = RegistriesConfig::parse(
            "mirrors:\n  \"*\":\n    endpoint: [\"https://mirror.local\"]\n",
            Path::new("r.yaml"),
        )
        .unwrap();
        let h = Hosts {
            config: c,
            ..Default::default()
        };
        let e = h.endpoints("quay.io", "a/b");
        assert_eq!(e[0].base, "https://mirror.local");
        assert_eq!(e[1].base, "https://quay.io");
    }

    #[test]
    fn insecure_hosts_use_http() {
        let mut h = Hosts::default();
        h.insecure.insert("127.0.0.1:5000".into());
        let e = h.endpoints("127.0.0.1:5000", "a/b");
        assert_eq!(e[0].base, "http://127.0.0.1:5000");
        assert_eq!(h.endpoints("quay.io", "a/b")[0].base, "https://quay.io");
    }

    #[test]
    fn bad_config_names_the_field() {
        let e = RegistriesConfig::parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n",
            Path::new("r.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("mirrors.docker.io.endpoint") && e.contains("ftp://x"),
            "{e}"
        );
        let e = RegistriesConfig::parse(
            "configs:\n  h:\n    tls: {cert_file: /c.pem, key_file: /k.pem}\n",
            Path::new("r.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("configs.h.tls") && e.contains("not supported"),
            "{e}"
        );
        let e = RegistriesConfig::parse("mirorrs: {}\n", Path::new("r.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mirorrs"), "{e}");
    }
}
