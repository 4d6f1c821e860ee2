//! The host's kernel and its modules: which kernel to boot and which `.ko` files, in which order, a set of
//! module names needs (resolved through `modules.dep`, as modprobe does).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no kernel found: {0} has no vmlinuz-* (install Debian's linux-image-amd64)")]
    NoKernel(PathBuf),
    #[error("kernel image {0}: file name is not vmlinuz-<release>")]
    BadImageName(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel module `{name}` is neither in {dep} nor built in")]
    UnknownModule { name: String, dep: PathBuf },
}

/// A bootable kernel image and the module tree that belongs to it.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub image: PathBuf,
    pub release: String,
    pub modules_dir: PathBuf,
}

/// One module file to load, in the order returned by [`Kernel::resolve_modules`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    /// The modules this one needs loaded first (`modules.dep` lists the whole closure).
    pub needs: Vec<String>,
}

impl Kernel {
    /// The newest `/boot/vmlinuz-*` and `/lib/modules/<release>`.
    pub fn host_default() -> Result<Kernel, KernelError> {
        Self::newest_in(Path::new("/boot"), Path::new("/lib/modules"))
    }

    pub fn newest_in(boot: &Path, modules_root: &Path) -> Result<Kernel, KernelError> {
        let entries = std::fs::read_dir(boot).map_err(|source| KernelError::Io {
            path: boot.to_owned(),
            source,
        })?;
        let newest = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let release = name.strip_prefix("vmlinuz-")?.to_owned();
                Some((release, e.path()))
            })
            .max_by(|a, b| version_cmp(&a.0, &b.0))
            .ok_or_else(|| KernelError::NoKernel(boot.to_owned()))?;
        Ok(Kernel {
            modules_dir: modules_root.join(&newest.0),
            release: newest.0,
            image: newest.1,
        })
    }

    /// A kernel given by its image path; modules are looked up under `/lib/modules/<release>`.
    pub fn from_image(image: &Path) -> Result<Kernel, KernelError> {
        let release = image
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("vmlinuz-"))
            .ok_or_else(|| KernelError::BadImageName(image.to_owned()))?
            .to_owned();
        Ok(Kernel {
            image: image.to_owned(),
            modules_dir: Path::new("/lib/modules").join(&release),
            release,
        })
    }

    /// The module files needed to load `names`, dependencies first, each once. Modules built into the kernel
    /// are satisfied already and yield nothing.
    pub fn resolve_modules(&self, names: &[&str]) -> Result<Vec<Module>, KernelError> {
        let dep_path = self.modules_dir.join("modules.dep");
        let deps = read(&dep_path)?;
        let builtin = read(&self.modules_dir.join("modules.builtin")).unwrap_or_default();
        let graph = DepGraph::parse(&deps, &builtin);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            let key = normalise(name);
            if graph.builtin.contains(&key) {
                continue;
            }
            if !graph.deps.contains_key(&key) {
                return Err(KernelError::UnknownModule {
                    name: (*name).to_owned(),
                    dep: dep_path,
                });
            }
            graph.visit(&key, &mut seen, &mut out);
        }
        Ok(out
            .into_iter()
            .map(|(name, rel)| Module {
                needs: graph.deps[&name].1.clone(),
                path: self.modules_dir.join(rel),
                name,
            })
            .collect())
    }
}

fn read(path: &Path) -> Result<String, KernelError> {
    std::fs::read_to_string(path).map_err(|source| KernelError::Io {
        path: path.to_owned(),
        source,
    })
}

struct DepGraph {
    /// module name → (its file relative to the modules dir, the names it depends on)
    deps: HashMap<String, (String, Vec<String>)>,
    builtin: HashSet<String>,
}

impl DepGraph {
    fn parse(modules_dep: &str, modules_builtin: &str) -> DepGraph {
        let mut deps = HashMap::new();
        for line in modules_dep.lines() {
            let Some((file, rest)) = line.split_once(':') else {
                continue;
            };
            let needs = rest.split_whitespace().map(module_name).collect();
            deps.insert(module_name(file), (file.to_owned(), needs));
        }
        let builtin = modules_builtin.lines().map(module_name).collect();
        DepGraph { deps, builtin }
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, out: &mut Vec<(String, String)>) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        if let Some((file, needs)) = self.deps.get(name) {
            for dep in needs {
                self.visit(dep, seen, out);
            }
            out.push((name.to_owned(), file.clone()));
        }
    }
}

/// `kernel/net/9p/9pnet_virtio.ko.xz` → `9pnet_virtio`; `-` and `_` are the same in module names.
fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.split(".ko").next().unwrap_or(base);
    normalise(stem)
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// Orders kernel releases the way `sort -V` does for the cases that occur in /boot.
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<Result<u64, &str>> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits > 0 {
                out.push(Ok(rest[..digits].parse().unwrap_or(u64::MAX)));
                rest = &rest[digits..];
            } else {
                let text = rest
                    .find(|c: char| c.is_ascii_digit())
                    .unwrap_or(rest.len());
                out.push(Err(&rest[..text]));
                rest = &rest[text..];
            }
        }
        out
    }
    chunks(a).cmp(&chunks(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_first_and_once() {
        let dep = "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko\n\
                   kernel/net/9p/9pnet.ko:\n\
                   kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko\n\
                   kernel/fs/netfs/netfs.ko:\n\
                   kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko\n";
        let g = DepGraph::parse(dep, "kernel/fs/overlayfs/overlay.ko\n");
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for m in ["9pnet-virtio", "9p"] {
            g.visit(&normalise(m), &mut seen, &mut out);
        }
        let names: Vec<_> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["9pnet", "9pnet_virtio", "netfs", "fscache", "9p"]);
        assert!(g.builtin.contains("overlay"));
    }

    #[test]
    fn newest_kernel_wins_by_version_not_by_text() {
        assert!(version_cmp("6.10.0-1-amd64", "6.9.0-3-amd64").is_gt());
        assert!(version_cmp("6.1.0-56-amd64", "6.1.0-9-amd64").is_gt());
    }

    #[test]
    fn host_modules_resolve_when_a_kernel_is_installed() {
        let Ok(k) = Kernel::host_default() else {
            eprintln!("SKIP: no kernel in /boot");
            return;
        };
        let mods = k.resolve_modules(&["9p", "overlay"]).unwrap();
        let names: Vec<_> = mods.iter().map(|m| m.name.as_str()).collect();
        let pos = |n: &str| names.iter().position(|x| *x == n);
        if let (Some(p9), Some(pnet)) = (pos("9p"), pos("9pnet")) {
            assert!(pnet < p9, "{names:?}");
        }
        assert!(mods.iter().all(|m| m.path.exists()), "{mods:?}");
        assert!(matches!(
            k.resolve_modules(&["no_such_module_xyz"]),
            Err(KernelError::UnknownModule { .. })
        ));
    }
}
