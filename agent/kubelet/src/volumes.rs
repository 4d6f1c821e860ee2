//! A pod's volumes: emptyDir (disk or memory), hostPath with its type checks and downwardAPI; in API mode
//! also configMap, secret and projected volumes (config maps, secrets, the downward API and bound service
//! account tokens), from objects the kubelet fetched first ([`ApiData`]). Each is made under the pod's
//! directory and torn down with the pod; anything else is refused with the volume's name.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::context::{PodContext, UnsupportedField};
use crate::quantity::{self, QuantityError};

/// A volume ready on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub path: PathBuf,
    pub read_only: bool,
}

/// One volume that cannot be set up, by name.
#[derive(Debug, thiserror::Error)]
#[error("volume {name:?}: {problem}")]
pub struct VolumeError {
    pub name: String,
    pub problem: Problem,
}

/// What is wrong with a volume: its spec (named by field) or the host.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("emptyDir.sizeLimit: {0}")]
    SizeLimit(QuantityError),
    #[error("mounting tmpfs: {0}")]
    Tmpfs(nix::Error),
    #[error("hostPath.path {0:?}: must be absolute")]
    HostPathRelative(String),
    #[error("hostPath.type {kind}: {} is not {what}", .path.display())]
    HostPathType {
        kind: String,
        path: PathBuf,
        what: &'static str,
    },
    #[error("hostPath.type FileOrCreate: parent of {} does not exist", .0.display())]
    HostPathParent(PathBuf),
    #[error("hostPath.type {0:?}: unknown")]
    HostPathTypeUnknown(String),
    #[error("hostPath {}: {error}", .path.display())]
    HostPathCreate {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("items[{index}].path {path:?}: must be relative, without ..")]
    ItemPath { index: usize, path: String },
    #[error("items[{index}]: {error}")]
    ItemField {
        index: usize,
        error: UnsupportedField,
    },
    #[error("items[{0}].resourceFieldRef: not supported in volumes yet")]
    ItemResource(usize),
    #[error("items[{0}]: fieldRef or resourceFieldRef is required")]
    ItemEmpty(usize),
    #[error("projected.sources[{0}]: only downwardAPI works without an apiserver")]
    ProjectedSource(usize),
    #[error("projected.sources[{0}]: clusterTrustBundle and podCertificate are not supported")]
    ProjectedUnsupported(usize),
    #[error("{kind} {name:?} not found")]
    Missing { kind: &'static str, name: String },
    #[error("{kind} {name:?} has no key {key:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("reading from the apiserver: {0}")]
    Api(String),
    #[error(
        "this volume type needs an apiserver or a plugin; static pods support emptyDir, hostPath, \
         downwardAPI and projected downwardAPI"
    )]
    Unsupported,
}

fn verr(name: &str, problem: impl Into<Problem>) -> VolumeError {
    VolumeError {
        name: name.into(),
        problem: problem.into(),
    }
}

/// What a pod's volumes project from the apiserver, fetched before they are made (API mode).
#[derive(Debug, Default, Clone)]
pub struct ApiData {
    /// Config maps by name (`None`: not found), with their data and binaryData.
    pub config_maps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Secrets by name (`None`: not found).
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Bound service account tokens by (audience, expirationSeconds); the empty audience is the apiserver's.
    pub tokens: HashMap<(String, i64), String>,
}

/// The boxed future an [`ApiSource`] answers with (no async traits in the tree).
pub type Fetch<'a> = Pin<Box<dyn Future<Output = Result<ApiData, String>> + Send + 'a>>;

/// The node's connection to the apiserver as a worker uses it: where [`ApiData`] comes from, and where
/// its events about the pod go.
pub trait ApiSource: Send + Sync {
    fn fetch<'a>(&'a self, pod: &'a Pod) -> Fetch<'a>;
    /// Records `event` about `pod`, without waiting for the apiserver.
    fn record(&self, _pod: &Pod, _event: crate::events::Event) {}
}

/// What of the apiserver a pod's volumes need: config map names, secret names and tokens.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
    pub tokens: Vec<(String, i64)>,
}

/// A token's lifetime when the pod asks for none (upstream's default).
pub const TOKEN_SECONDS: i64 = 3600;

impl Needs {
    pub fn is_empty(&self) -> bool {
        self.config_maps.is_empty() && self.secrets.is_empty() && self.tokens.is_empty()
    }
}

pub fn needs(pod: &Pod) -> Needs {
    let mut n = Needs::default();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(c) = &v.config_map {
            n.config_maps.push(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            n.secrets.push(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                n.config_maps.push(c.name.clone());
            }
            if let Some(s) = &src.secret {
                n.secrets.push(s.name.clone());
            }
            if let Some(t) = &src.service_account_token {
                n.tokens.push((
                    t.audience.clone().unwrap_or_default(),
                    t.expiration_seconds.unwrap_or(TOKEN_SECONDS),
                ));
            }
        }
    }
    n
}

/// Makes every volume of the pod under `pod_dir/volumes`. Idempotent: a volume already set up is reused
/// (memory emptyDirs stay mounted across container restarts).
pub fn setup(
    ctx: &PodContext,
    pod_dir: &Path,
    api: Option<&ApiData>,
) -> Result<HashMap<String, Mounted>, VolumeError> {
    let mut out = HashMap::new();
    for v in ctx.spec().volumes.iter().flatten() {
        out.insert(v.name.clone(), setup_one(ctx, pod_dir, v, api)?);
    }
    Ok(out)
}

/// One file of a volume: its path in the volume, content and mode.
struct File {
    path: String,
    content: Vec<u8>,
    mode: Option<i32>,
}

/// The files of a config map or secret volume source: every key, or the `items` asked for.
fn object_files(
    kind: &'static str,
    name: &str,
    data: Option<&Option<BTreeMap<String, Vec<u8>>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: bool,
) -> Result<Vec<File>, Problem> {
    let data = match data.and_then(Option::as_ref) {
        Some(d) => d,
        None if optional => return Ok(Vec::new()),
        None => {
            return Err(Problem::Missing {
                kind,
                name: name.into(),
            })
        }
    };
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data
            .iter()
            .map(|(k, v)| File {
                path: k.clone(),
                content: v.clone(),
                mode: None,
            })
            .collect());
    };
    let mut files = Vec::new();
    for i in items {
        match data.get(&i.key) {
            Some(v) => files.push(File {
                path: i.path.clone(),
                content: v.clone(),
                mode: i.mode,
            }),
            None if optional => {}
            None => {
                return Err(Problem::MissingKey {
                    kind,
                    name: name.into(),
                    key: i.key.clone(),
                })
            }
        }
    }
    Ok(files)
}

fn api_files(v: &Volume, api: Option<&ApiData>) -> Option<Result<Vec<File>, Problem>> {
    let empty = ApiData::default();
    let api = api.unwrap_or(&empty);
    if let Some(c) = &v.config_map {
        return Some(object_files(
            "configmap",
            &c.name,
            api.config_maps.get(&c.name),
            c.items.as_ref(),
            c.optional.unwrap_or(false),
        ));
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        return Some(object_files(
            "secret",
            &name,
            api.secrets.get(&name),
            s.items.as_ref(),
            s.optional.unwrap_or(false),
        ));
    }
    None
}

fn setup_one(
    ctx: &PodContext,
    pod_dir: &Path,
    v: &Volume,
    api: Option<&ApiData>,
) -> Result<Mounted, VolumeError> {
    let io = |e: std::io::Error| verr(&v.name, e);
    if let Some(e) = &v.empty_dir {
        let dir = pod_dir
            .join("volumes/kubernetes.io~empty-dir")
            .join(&v.name);
        std::fs::create_dir_all(&dir).map_err(io)?;
        if e.medium.as_deref() == Some("Memory") && !is_mountpoint(&dir) {
            let mut opts = "mode=0777".to_owned();
            if let Some(limit) = &e.size_limit {
                let bytes = quantity::units(&limit.0)
                    .map_err(|err| verr(&v.name, Problem::SizeLimit(err)))?;
                opts.push_str(&format!(",size={bytes}"));
            }
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(opts.as_str()),
            )
            .map_err(|e| verr(&v.name, Problem::Tmpfs(e)))?;
        } else {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .map_err(io)?;
        }
        return Ok(Mounted {
            path: dir,
            read_only: false,
        });
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        if !path.is_absolute() {
            return Err(verr(&v.name, Problem::HostPathRelative(h.path.clone())));
        }
        check_host_path(&path, h.type_.as_deref().unwrap_or("")).map_err(|p| verr(&v.name, p))?;
        return Ok(Mounted {
            path,
            read_only: false,
        });
    }
    if let Some(d) = &v.downward_api {
        let dir = pod_dir
            .join("volumes/kubernetes.io~downward-api")
            .join(&v.name);
        write_downward(ctx, &dir, d.items.iter().flatten(), d.default_mode)
            .map_err(|r| verr(&v.name, r))?;
        return Ok(Mounted {
            path: dir,
            read_only: true,
        });
    }
    if let Some(p) = &v.projected {
        let dir = pod_dir
            .join("volumes/kubernetes.io~projected")
            .join(&v.name);
        let files = projected_files(ctx, p, api).map_err(|r| verr(&v.name, r))?;
        write_set(&dir, files, p.default_mode).map_err(|r| verr(&v.name, r))?;
        return Ok(Mounted {
            path: dir,
            read_only: true,
        });
    }
    if api.is_some() {
        if let Some(files) = api_files(v, api) {
            let (plugin, mode) = match &v.config_map {
                Some(c) => ("kubernetes.io~configmap", c.default_mode),
                None => (
                    "kubernetes.io~secret",
                    v.secret.as_ref().and_then(|s| s.default_mode),
                ),
            };
            let dir = pod_dir.join("volumes").join(plugin).join(&v.name);
            let files = files.map_err(|r| verr(&v.name, r))?;
            write_set(&dir, files, mode).map_err(|r| verr(&v.name, r))?;
            return Ok(Mounted {
                path: dir,
                read_only: true,
            });
        }
    }
    Err(verr(&v.name, Problem::Unsupported))
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), Problem> {
    let meta = std::fs::metadata(path);
    let ft = meta.as_ref().map(|m| m.file_type());
    let fail = |what| {
        Err(Problem::HostPathType {
            kind: kind.to_owned(),
            path: path.to_owned(),
            what,
        })
    };
    let create = |error| Problem::HostPathCreate {
        path: path.to_owned(),
        error,
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match ft {
            Ok(t) if t.is_dir() => Ok(()),
            Ok(_) => fail("a directory"),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(create)?;
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(create)
            }
        },
        "Directory" => match ft {
            Ok(t) if t.is_dir() => Ok(()),
            _ => fail("an existing directory"),
        },
        "FileOrCreate" => match ft {
            Ok(t) if t.is_file() => Ok(()),
            Ok(_) => fail("a file"),
            Err(_) => {
                if let Some(parent) = path.parent() {
                    if !parent.is_dir() {
                        return Err(Problem::HostPathParent(path.to_owned()));
                    }
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(|_| ())
                    .map_err(create)
            }
        },
        "File" => match ft {
            Ok(t) if t.is_file() => Ok(()),
            _ => fail("an existing file"),
        },
        "Socket" => match ft {
            Ok(t) if t.is_socket() => Ok(()),
            _ => fail("a socket"),
        },
        "CharDevice" => match ft {
            Ok(t) if t.is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match ft {
            Ok(t) if t.is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(Problem::HostPathTypeUnknown(other.to_owned())),
    }
}

/// Every source of a projected volume in one set of files. Without an apiserver only downwardAPI works.
fn projected_files(
    ctx: &PodContext,
    p: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
    api: Option<&ApiData>,
) -> Result<Vec<File>, Problem> {
    let mut files = Vec::new();
    for (i, s) in p.sources.iter().flatten().enumerate() {
        if let Some(d) = &s.downward_api {
            files.extend(downward_files(ctx, d.items.iter().flatten())?);
            continue;
        }
        let Some(api) = api else {
            return Err(Problem::ProjectedSource(i));
        };
        if let Some(c) = &s.config_map {
            let optional = c.optional.unwrap_or(false);
            let got = api.config_maps.get(&c.name);
            files.extend(object_files(
                "configmap",
                &c.name,
                got,
                c.items.as_ref(),
                optional,
            )?);
        } else if let Some(sec) = &s.secret {
            let optional = sec.optional.unwrap_or(false);
            let got = api.secrets.get(&sec.name);
            files.extend(object_files(
                "secret",
                &sec.name,
                got,
                sec.items.as_ref(),
                optional,
            )?);
        } else if let Some(t) = &s.service_account_token {
            let key = (
                t.audience.clone().unwrap_or_default(),
                t.expiration_seconds.unwrap_or(TOKEN_SECONDS),
            );
            let token = api
                .tokens
                .get(&key)
                .ok_or_else(|| Problem::Api(format!("no token for audience {:?}", key.0)))?;
            files.push(File {
                path: t.path.clone(),
                content: token.clone().into_bytes(),
                mode: None,
            });
        } else {
            return Err(Problem::ProjectedUnsupported(i));
        }
    }
    Ok(files)
}

fn downward_files<'a>(
    ctx: &PodContext,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
) -> Result<Vec<File>, Problem> {
    let mut files = Vec::new();
    for (i, item) in items.enumerate() {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => crate::context::field_value(ctx, &f.field_path)
                .map_err(|error| Problem::ItemField { index: i, error })?,
            (None, Some(_)) => return Err(Problem::ItemResource(i)),
            (None, None) => return Err(Problem::ItemEmpty(i)),
        };
        files.push(File {
            path: item.path.clone(),
            content: value.into_bytes(),
            mode: item.mode,
        });
    }
    Ok(files)
}

fn write_downward<'a>(
    ctx: &PodContext,
    dir: &Path,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: Option<i32>,
) -> Result<(), Problem> {
    write_set(dir, downward_files(ctx, items)?, default_mode)
}

/// Writes a volume's files into a fresh directory and swaps it in, so a container never reads a
/// half-written set.
fn write_set(dir: &Path, files: Vec<File>, default_mode: Option<i32>) -> Result<(), Problem> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (i, f) in files.into_iter().enumerate() {
        if Path::new(&f.path).is_absolute() || f.path.split('/').any(|p| p == "..") {
            return Err(Problem::ItemPath {
                index: i,
                path: f.path,
            });
        }
        let file = tmp.join(&f.path);
        if let Some(p) = file.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&file, &f.content)?;
        let mode = f.mode.or(default_mode).unwrap_or(0o644) as u32;
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    }
    let _ = std::fs::remove_dir_all(dir);
    if let Some(p) = dir.parent() {
        std::fs::create_dir_all(p)?;
    }
    Ok(std::fs::rename(&tmp, dir)?)
}

fn is_mountpoint(p: &Path) -> bool {
    let Ok(m) = std::fs::metadata(p) else {
        return false;
    };
    let Some(parent) = p.parent() else {
        return false;
    };
    let Ok(pm) = std::fs::metadata(parent) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    m.dev() != pm.dev()
}

/// Unmounts memory volumes and removes the pod's volume directories. hostPath content is never touched.
pub fn teardown(pod_dir: &Path) -> std::io::Result<()> {
    let empty = pod_dir.join("volumes/kubernetes.io~empty-dir");
    if let Ok(rd) = std::fs::read_dir(&empty) {
        for e in rd.flatten() {
            if is_mountpoint(&e.path()) {
                umount2(&e.path(), MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
            }
        }
    }
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_volumes_name_what_they_need_and_what_is_missing() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [], "volumes": [
            {"name": "a", "configMap": {"name": "cm"}},
            {"name": "b", "secret": {"secretName": "s"}},
            {"name": "c", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}},
                {"serviceAccountToken": {"path": "vault", "audience": "vault", "expirationSeconds": 600}},
                {"configMap": {"name": "kube-root-ca.crt"}},
            ]}},
        ]}}))
        .unwrap();
        assert_eq!(
            needs(&pod),
            Needs {
                config_maps: vec!["cm".into(), "kube-root-ca.crt".into()],
                secrets: vec!["s".into()],
                tokens: vec![(String::new(), TOKEN_SECONDS), ("vault".into(), 600)],
            }
        );
        let data: Option<BTreeMap<String, Vec<u8>>> =
            Some(BTreeMap::from([("k".to_string(), b"v".to_vec())]));
        let item = |key: &str| KeyToPath {
            key: key.into(),
            path: "p".into(),
            mode: Some(0o400),
            ..Default::default()
        };
        let files = object_files(
            "configmap",
            "cm",
            Some(&data),
            Some(&vec![item("k")]),
            false,
        )
        .unwrap();
        assert_eq!((files[0].path.as_str(), files[0].mode), ("p", Some(0o400)));
        let missing = object_files(
            "configmap",
            "cm",
            Some(&data),
            Some(&vec![item("x")]),
            false,
        );
        assert_eq!(
            missing.err().unwrap().to_string(),
            r#"configmap "cm" has no key "x""#
        );
        assert!(object_files("secret", "s", Some(&None), None, true)
            .unwrap()
            .is_empty());
        assert_eq!(
            object_files("secret", "s", None, None, false)
                .err()
                .unwrap()
                .to_string(),
            r#"secret "s" not found"#
        );
    }

    /// What setting up a pod with this one volume says.
    fn problem(volume: &str) -> String {
        let yaml = format!(
            "kind: Pod\nmetadata: {{name: v}}\nspec:\n  containers: [{{name: c, image: i}}]\n  volumes:\n  - {volume}\n"
        );
        let pod = crate::manifest::parse(Path::new("/m/v.yaml"), &yaml, "n")
            .unwrap()
            .remove(0);
        let ctx = PodContext {
            pod: &pod,
            node_name: "n",
            log_root: Path::new("/var/log/pods"),
            cgroup_parent: String::new(),
            pod_ips: Vec::new(),
            host_ip: String::new(),
            seccomp_default: true,
            userns: None,
        };
        let dir = tempfile::tempdir().unwrap();
        setup(&ctx, dir.path(), None).unwrap_err().to_string()
    }

    #[test]
    fn bad_volumes_are_named_with_the_field() {
        assert_eq!(
            problem("{name: h, hostPath: {path: rel}}"),
            "volume \"h\": hostPath.path \"rel\": must be absolute"
        );
        assert_eq!(
            problem("{name: h, hostPath: {path: /nonexistent-basalt, type: Directory}}"),
            "volume \"h\": hostPath.type Directory: /nonexistent-basalt is not an existing directory"
        );
        assert_eq!(
            problem("{name: h, hostPath: {path: /, type: Bogus}}"),
            "volume \"h\": hostPath.type \"Bogus\": unknown"
        );
        assert_eq!(
            problem("{name: s, secret: {secretName: x}}"),
            "volume \"s\": this volume type needs an apiserver or a plugin; static pods support \
             emptyDir, hostPath, downwardAPI and projected downwardAPI"
        );
        assert_eq!(
            problem("{name: p, projected: {sources: [{secret: {name: x}}]}}"),
            "volume \"p\": projected.sources[0]: only downwardAPI works without an apiserver"
        );
        assert_eq!(
            problem("{name: d, downwardAPI: {items: [{path: ../x, fieldRef: {fieldPath: metadata.name}}]}}"),
            "volume \"d\": items[0].path \"../x\": must be relative, without .."
        );
        assert_eq!(
            problem(
                "{name: d, downwardAPI: {items: [{path: x, fieldRef: {fieldPath: spec.nope}}]}}"
            ),
            "volume \"d\": items[0]: fieldRef.fieldPath \"spec.nope\": not supported"
        );
        assert_eq!(
            problem("{name: e, emptyDir: {medium: Memory, sizeLimit: lots}}"),
            "volume \"e\": emptyDir.sizeLimit: quantity \"lots\": not a Kubernetes quantity"
        );
    }
}
