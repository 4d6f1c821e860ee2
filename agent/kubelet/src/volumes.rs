//! The volumes a pod can have without an apiserver: emptyDir (disk or memory), hostPath with its type checks,
//! downwardAPI and projected downwardAPI. Each is made under the pod's directory and torn down with the pod;
//! anything else is refused with the volume's name.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Volume};
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

/// Makes every volume of the pod under `pod_dir/volumes`. Idempotent: a volume already set up is reused
/// (memory emptyDirs stay mounted across container restarts).
pub fn setup(ctx: &PodContext, pod_dir: &Path) -> Result<HashMap<String, Mounted>, VolumeError> {
    let mut out = HashMap::new();
    for v in ctx.spec().volumes.iter().flatten() {
        out.insert(v.name.clone(), setup_one(ctx, pod_dir, v)?);
    }
    Ok(out)
}

fn setup_one(ctx: &PodContext, pod_dir: &Path, v: &Volume) -> Result<Mounted, VolumeError> {
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
        let mut items = Vec::new();
        for (i, s) in p.sources.iter().flatten().enumerate() {
            match &s.downward_api {
                Some(d) => items.extend(d.items.iter().flatten().cloned()),
                None => return Err(verr(&v.name, Problem::ProjectedSource(i))),
            }
        }
        write_downward(ctx, &dir, items.iter(), p.default_mode).map_err(|r| verr(&v.name, r))?;
        return Ok(Mounted {
            path: dir,
            read_only: true,
        });
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

fn write_downward<'a>(
    ctx: &PodContext,
    dir: &Path,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: Option<i32>,
) -> Result<(), Problem> {
    // Written into a fresh directory and swapped in, so a container never reads a half-written set.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for (i, item) in items.enumerate() {
        if Path::new(&item.path).is_absolute() || item.path.split('/').any(|p| p == "..") {
            return Err(Problem::ItemPath {
                index: i,
                path: item.path.clone(),
            });
        }
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => crate::context::field_value(ctx, &f.field_path)
                .map_err(|error| Problem::ItemField { index: i, error })?,
            (None, Some(_)) => return Err(Problem::ItemResource(i)),
            (None, None) => return Err(Problem::ItemEmpty(i)),
        };
        let file = tmp.join(&item.path);
        if let Some(p) = file.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(&file, value)?;
        let mode = item.mode.or(default_mode).unwrap_or(0o644) as u32;
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
        setup(&ctx, dir.path()).unwrap_err().to_string()
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
