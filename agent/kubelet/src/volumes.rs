//! The volumes a pod can have without an apiserver: emptyDir (disk or memory), hostPath with its type checks,
//! downwardAPI and projected downwardAPI. Each is made under the pod's directory and torn down with the pod;
//! anything else is refused with the volume's name.

use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, Volume};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::context::PodContext;
use crate::quantity;

/// A volume ready on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    pub path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("volume {name:?}: {reason}")]
pub struct VolumeError {
    pub name: String,
    pub reason: String,
}

fn verr(name: &str, reason: impl Into<String>) -> VolumeError {
    VolumeError {
        name: name.into(),
        reason: reason.into(),
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
    let io = |e: std::io::Error| verr(&v.name, e.to_string());
    if let Some(e) = &v.empty_dir {
        let dir = pod_dir
            .join("volumes/kubernetes.io~empty-dir")
            .join(&v.name);
        std::fs::create_dir_all(&dir).map_err(io)?;
        if e.medium.as_deref() == Some("Memory") && !is_mountpoint(&dir) {
            let mut opts = "mode=0777".to_owned();
            if let Some(limit) = &e.size_limit {
                let bytes = quantity::units(&limit.0)
                    .map_err(|err| verr(&v.name, format!("emptyDir.sizeLimit: {err}")))?;
                opts.push_str(&format!(",size={bytes}"));
            }
            mount(
                Some("tmpfs"),
                &dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(opts.as_str()),
            )
            .map_err(|e| verr(&v.name, format!("mounting tmpfs: {e}")))?;
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
            return Err(verr(
                &v.name,
                format!("hostPath.path {:?}: must be absolute", h.path),
            ));
        }
        check_host_path(&path, h.type_.as_deref().unwrap_or("")).map_err(|r| verr(&v.name, r))?;
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
                None => {
                    return Err(verr(
                        &v.name,
                        format!(
                            "projected.sources[{i}]: only downwardAPI works without an apiserver"
                        ),
                    ))
                }
            }
        }
        write_downward(ctx, &dir, items.iter(), p.default_mode).map_err(|r| verr(&v.name, r))?;
        return Ok(Mounted {
            path: dir,
            read_only: true,
        });
    }
    Err(verr(
        &v.name,
        "this volume type needs an apiserver or a plugin; static pods support emptyDir, hostPath, downwardAPI and projected downwardAPI",
    ))
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let ft = meta.as_ref().map(|m| m.file_type());
    let fail = |what: &str| {
        Err(format!(
            "hostPath.type {kind}: {} is not {what}",
            path.display()
        ))
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => match ft {
            Ok(t) if t.is_dir() => Ok(()),
            Ok(_) => fail("a directory"),
            Err(_) => {
                std::fs::create_dir_all(path)
                    .map_err(|e| format!("hostPath {}: {e}", path.display()))?;
                std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .map_err(|e| format!("hostPath {}: {e}", path.display()))
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
                        return Err(format!(
                            "hostPath.type FileOrCreate: parent of {} does not exist",
                            path.display()
                        ));
                    }
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(|_| ())
                    .map_err(|e| format!("hostPath {}: {e}", path.display()))
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
        other => Err(format!("hostPath.type {other:?}: unknown")),
    }
}

fn write_downward<'a>(
    ctx: &PodContext,
    dir: &Path,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: Option<i32>,
) -> Result<(), String> {
    // Written into a fresh directory and swapped in, so a container never reads a half-written set.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    for (i, item) in items.enumerate() {
        if Path::new(&item.path).is_absolute() || item.path.split('/').any(|p| p == "..") {
            return Err(format!(
                "items[{i}].path {:?}: must be relative, without ..",
                item.path
            ));
        }
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => crate::context::field_value(ctx, &f.field_path)
                .map_err(|e| format!("items[{i}]: {e}"))?,
            (None, Some(_)) => {
                return Err(format!(
                    "items[{i}].resourceFieldRef: not supported in volumes yet"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "items[{i}]: fieldRef or resourceFieldRef is required"
                ))
            }
        };
        let file = tmp.join(&item.path);
        if let Some(p) = file.parent() {
            std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        std::fs::write(&file, value).map_err(|e| e.to_string())?;
        let mode = item.mode.or(default_mode).unwrap_or(0o644) as u32;
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_dir_all(dir);
    if let Some(p) = dir.parent() {
        std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| e.to_string())
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
