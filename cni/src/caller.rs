//! The CNI caller (what libcni is to containerd): loads network configuration lists from a directory,
//! finds plugin binaries on a path list, runs a chain with the CNI environment and `runtimeConfig`
//! capabilities, caches ADD results for DEL and CHECK, and kills a plugin that outlives its deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{Map, Value};

use crate::spec::Version;

#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    InvalidConfig { path: PathBuf, msg: String },
    #[error("plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("plugin {plugin} {command} failed with code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
    Plugin {
        plugin: String,
        command: String,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("plugin {plugin} {command} did not finish within {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: String,
        timeout: Duration,
    },
    #[error("plugin {plugin} {command} printed something that is not a CNI result: {output:?}")]
    BadOutput {
        plugin: String,
        command: String,
        output: String,
    },
    #[error("no cached result for {network}/{container_id}/{ifname}: CHECK needs a previous ADD")]
    NoCachedResult {
        network: String,
        container_id: String,
        ifname: String,
    },
}

type Result<T> = std::result::Result<T, CallerError>;

/// A network configuration list (`.conflist`; a single `.conf` is wrapped into a list of one).
#[derive(Debug, Clone)]
pub struct NetworkConfigList {
    pub name: String,
    pub cni_version: String,
    pub disable_check: bool,
    pub plugins: Vec<Map<String, Value>>,
    pub source: PathBuf,
}

impl NetworkConfigList {
    pub fn from_bytes(path: &Path, raw: &[u8]) -> Result<NetworkConfigList> {
        let bad = |msg: String| CallerError::InvalidConfig {
            path: path.to_path_buf(),
            msg,
        };
        let v: Value = serde_json::from_slice(raw).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let name = name
            .ok_or_else(|| bad("field \"name\" is missing or empty".into()))?
            .to_string();
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.3.0")
            .to_string();
        Version::parse(&cni_version)
            .map_err(|e| bad(format!("field \"cniVersion\": {}", e.msg)))?;
        let plugins = match obj.get("plugins") {
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let p = p
                        .as_object()
                        .ok_or_else(|| bad(format!("field \"plugins[{i}]\" is not an object")))?;
                    if p.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                    {
                        return Err(bad(format!("field \"plugins[{i}].type\" is missing")));
                    }
                    Ok(p.clone())
                })
                .collect::<Result<Vec<_>>>()?,
            Some(_) => return Err(bad("field \"plugins\" is not a list".into())),
            None if obj.contains_key("type") => vec![obj.clone()],
            None => return Err(bad("neither \"plugins\" nor \"type\" is present".into())),
        };
        if plugins.is_empty() {
            return Err(bad("field \"plugins\" is empty".into()));
        }
        let disable_check = obj
            .get("disableCheck")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(NetworkConfigList {
            name,
            cni_version,
            disable_check,
            plugins,
            source: path.to_path_buf(),
        })
    }
}

/// Loads `*.conflist`, `*.conf` and `*.json` from `dir`, lowest file name first; invalid files are
/// skipped with a warning so one bad file does not take the node's networking down.
pub fn load_dir(dir: &Path) -> Result<Vec<NetworkConfigList>> {
    let rd = std::fs::read_dir(dir).map_err(|source| CallerError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let loaded = std::fs::read(&f)
            .map_err(|source| CallerError::Io {
                path: f.clone(),
                source,
            })
            .and_then(|raw| NetworkConfigList::from_bytes(&f, &raw));
        match loaded {
            Ok(list) => out.push(list),
            Err(e) => tracing::warn!(error = %e, "skipping invalid CNI configuration"),
        }
    }
    Ok(out)
}

/// What the runtime knows about one attachment.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` pairs, e.g. K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID, K8S_POD_UID.
    pub args: Vec<(String, String)>,
    /// Capability arguments (e.g. `portMappings`), passed as `runtimeConfig` to plugins that declare them.
    pub capability_args: BTreeMap<String, Value>,
}

impl RuntimeConf {
    /// The Kubernetes `CNI_ARGS` a CRI server passes.
    pub fn with_pod(
        mut self,
        namespace: &str,
        name: &str,
        infra_container_id: &str,
        uid: &str,
    ) -> Self {
        self.args.extend([
            ("K8S_POD_NAMESPACE".into(), namespace.into()),
            ("K8S_POD_NAME".into(), name.into()),
            (
                "K8S_POD_INFRA_CONTAINER_ID".into(),
                infra_container_id.into(),
            ),
            ("K8S_POD_UID".into(), uid.into()),
        ]);
        self
    }
}

/// Runs plugin chains.
#[derive(Debug, Clone)]
pub struct Cni {
    pub plugin_dirs: Vec<PathBuf>,
    /// Results are cached in `<cache_dir>/results/<network>-<containerID>-<ifname>`.
    pub cache_dir: PathBuf,
    pub timeout: Duration,
}

impl Default for Cni {
    fn default() -> Self {
        Cni {
            plugin_dirs: vec!["/opt/cni/bin".into(), "/usr/lib/cni".into()],
            cache_dir: "/var/lib/cni".into(),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Cni {
    pub fn find_plugin(&self, name: &str) -> Result<PathBuf> {
        if !name.contains('/') {
            for d in &self.plugin_dirs {
                let p = d.join(name);
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
        Err(CallerError::PluginNotFound {
            plugin: name.into(),
            dirs: self.plugin_dirs.clone(),
        })
    }

    /// The IDs become file names (the cache) and environment values: refuse anything the spec does not allow.
    fn validate(rt: &RuntimeConf) -> Result<()> {
        let id_ok = !rt.container_id.is_empty()
            && rt
                .container_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        let if_ok = !rt.ifname.is_empty()
            && rt.ifname.len() <= 15
            && rt.ifname != "."
            && rt.ifname != ".."
            && !rt.ifname.contains(['/', ':', ' ', '\t', '\n']);
        if id_ok && if_ok {
            return Ok(());
        }
        Err(CallerError::InvalidConfig {
            path: PathBuf::new(),
            msg: format!(
                "container ID {:?} / ifname {:?}: the ID may hold only letters, digits, '_', '.', '-'; \
                 the ifname 1-15 characters without '/', ':' or whitespace",
                rt.container_id, rt.ifname
            ),
        })
    }

    fn cache_path(&self, net: &str, rt: &RuntimeConf) -> PathBuf {
        self.cache_dir
            .join("results")
            .join(format!("{net}-{}-{}", rt.container_id, rt.ifname))
    }

    /// The cached ADD result of an attachment, if any.
    pub fn cached_result(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Option<Value> {
        let raw = std::fs::read(self.cache_path(&net.name, rt)).ok()?;
        let v: Value = serde_json::from_slice(&raw).ok()?;
        v.get("result").cloned()
    }

    fn write_cache(&self, net: &NetworkConfigList, rt: &RuntimeConf, result: &Value) -> Result<()> {
        let path = self.cache_path(&net.name, rt);
        let io = |source| CallerError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(path.parent().expect("has parent")).map_err(io)?;
        let doc = serde_json::json!({
            "kind": "cniCacheV1",
            "containerId": rt.container_id,
            "ifName": rt.ifname,
            "networkName": net.name,
            "cniArgs": rt.args,
            "result": result,
        });
        // Write-then-rename: a crash leaves the old cache or the new one, never half a file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, doc.to_string()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// The stdin of one plugin in the chain.
    fn plugin_conf(
        &self,
        net: &NetworkConfigList,
        plugin: &Map<String, Value>,
        rt: &RuntimeConf,
        prev: Option<&Value>,
    ) -> Value {
        let mut conf = plugin.clone();
        conf.insert("name".into(), net.name.clone().into());
        conf.insert("cniVersion".into(), net.cni_version.clone().into());
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        let mut runtime = Map::new();
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            for (cap, on) in caps {
                if on.as_bool() == Some(true) {
                    if let Some(v) = rt.capability_args.get(cap) {
                        runtime.insert(cap.clone(), v.clone());
                    }
                }
            }
        }
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
        Value::Object(conf)
    }

    /// Runs one plugin; `Ok(Some(json))` if it printed something.
    pub fn exec(
        &self,
        plugin: &str,
        command: &str,
        rt: &RuntimeConf,
        stdin: &Value,
    ) -> Result<Option<Value>> {
        let path = self.find_plugin(plugin)?;
        let mut args = vec!["IgnoreUnknown=1".to_string()];
        args.extend(rt.args.iter().map(|(k, v)| format!("{k}={v}")));
        let cni_path = std::env::join_paths(&self.plugin_dirs).unwrap_or_default();
        let mut cmd = Command::new(&path);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_ARGS", args.join(";"))
            .env("CNI_PATH", cni_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group, so a timeout kills whatever the plugin started too (e.g. an IPAM plugin).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let io = |source| CallerError::Io {
            path: path.clone(),
            source,
        };
        let mut child = cmd.spawn().map_err(io)?;
        let pid = child.id();
        let input = stdin.to_string();
        let mut child_in = child.stdin.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = child_in.write_all(input.as_bytes());
            drop(child_in);
            let mut out = Vec::new();
            let mut err = Vec::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_end(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_end(&mut err);
            }
            let status = child.wait();
            let _ = tx.send((status, out, err));
        });
        let (status, out, err) = match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(_) => {
                // The child is not reaped until the reader thread's wait(), so the group is still ours.
                let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                return Err(CallerError::Timeout {
                    plugin: plugin.into(),
                    command: command.into(),
                    timeout: self.timeout,
                });
            }
        };
        let status = status.map_err(io)?;
        let text = String::from_utf8_lossy(&out).trim().to_string();
        if !status.success() {
            let v: Value = serde_json::from_str(&text).unwrap_or_default();
            return Err(CallerError::Plugin {
                plugin: plugin.into(),
                command: command.into(),
                code: v["code"].as_u64().unwrap_or(0),
                msg: v["msg"].as_str().map(str::to_owned).unwrap_or_else(|| {
                    format!(
                        "exit {status}, stdout {text:?}, stderr {:?}",
                        String::from_utf8_lossy(&err).trim()
                    )
                }),
                details: v["details"].as_str().unwrap_or("").into(),
            });
        }
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|_| CallerError::BadOutput {
                plugin: plugin.into(),
                command: command.into(),
                output: text,
            })
    }

    /// ADD through the chain; the final result is cached and returned.
    pub fn add(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<Value> {
        Self::validate(rt)?;
        let mut prev: Option<Value> = None;
        for p in &net.plugins {
            let conf = self.plugin_conf(net, p, rt, prev.as_ref());
            let ty = p["type"].as_str().expect("checked at load");
            let out = self.exec(ty, "ADD", rt, &conf)?;
            prev = out.or(prev);
        }
        let result = prev.unwrap_or_else(|| serde_json::json!({ "cniVersion": net.cni_version }));
        self.write_cache(net, rt, &result)?;
        Ok(result)
    }

    /// DEL through the chain in reverse, with the cached result as prevResult; then drops the cache.
    pub fn del(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        Self::validate(rt)?;
        let cached = self.cached_result(net, rt);
        let with_prev = Version::parse(&net.cni_version).is_ok_and(|v| v >= Version::V0_4_0);
        for p in net.plugins.iter().rev() {
            let conf = self.plugin_conf(net, p, rt, cached.as_ref().filter(|_| with_prev));
            let ty = p["type"].as_str().expect("checked at load");
            self.exec(ty, "DEL", rt, &conf)?;
        }
        match std::fs::remove_file(self.cache_path(&net.name, rt)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CallerError::Io {
                path: self.cache_path(&net.name, rt),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// CHECK through the chain with the cached result.
    pub fn check(&self, net: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        Self::validate(rt)?;
        // CHECK appeared in 0.4.0; older lists (and those that opt out) have nothing to check.
        if net.disable_check || !Version::parse(&net.cni_version).is_ok_and(|v| v.has_check()) {
            return Ok(());
        }
        let cached = self
            .cached_result(net, rt)
            .ok_or_else(|| CallerError::NoCachedResult {
                network: net.name.clone(),
                container_id: rt.container_id.clone(),
                ifname: rt.ifname.clone(),
            })?;
        for p in &net.plugins {
            let conf = self.plugin_conf(net, p, rt, Some(&cached));
            let ty = p["type"].as_str().expect("checked at load");
            self.exec(ty, "CHECK", rt, &conf)?;
        }
        Ok(())
    }

    /// STATUS for each plugin (1.1.0 lists only; older ones have no STATUS and count as ready).
    pub fn status(&self, net: &NetworkConfigList) -> Result<()> {
        if !Version::parse(&net.cni_version).is_ok_and(|v| v.has_status_gc()) {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for p in &net.plugins {
            let conf = self.plugin_conf(net, p, &rt, None);
            self.exec(
                p["type"].as_str().expect("checked at load"),
                "STATUS",
                &rt,
                &conf,
            )?;
        }
        Ok(())
    }

    /// GC for each plugin: everything not in `valid` (containerID, ifname) may be released. Cached results
    /// of attachments not in `valid` are dropped too.
    pub fn gc(&self, net: &NetworkConfigList, valid: &[(String, String)]) -> Result<()> {
        if !Version::parse(&net.cni_version).is_ok_and(|v| v.has_status_gc()) {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        let list: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| serde_json::json!({"containerID": id, "ifname": ifname}))
            .collect();
        for p in &net.plugins {
            let mut conf = self.plugin_conf(net, p, &rt, None);
            conf["cni.dev/valid-attachments"] = Value::Array(list.clone());
            self.exec(
                p["type"].as_str().expect("checked at load"),
                "GC",
                &rt,
                &conf,
            )?;
        }
        let keep: Vec<String> = valid
            .iter()
            .map(|(id, ifname)| format!("{}-{id}-{ifname}", net.name))
            .collect();
        let prefix = format!("{}-", net.name);
        if let Ok(rd) = std::fs::read_dir(self.cache_dir.join("results")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) && !keep.contains(&name) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}
