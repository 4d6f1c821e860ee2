//! `basalt node-image build`: a kernel plus a gzip-compressed newc initramfs with `basalt` as `/init`.
//!
//! Reproducible by construction: entries are collected into a sorted map and written with fixed owners, modes
//! and times; gzip gets no mtime and no file name. The same inputs give the same bytes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cpio::{CpioWriter, Entry};
use crate::elf::ElfError;
use crate::kernel::{Kernel, KernelError};
use crate::layout;
use crate::preload::PreloadError;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error(transparent)]
    Preload(#[from] PreloadError),
    #[error("--preload {0}: {1}")]
    BadPreload(PathBuf, &'static str),
}

type Result<T> = std::result::Result<T, BuildError>;

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// Modules the node stack needs (issue #8): container filesystems and networking, then virtio and common
/// NIC/disk drivers, ext4 for the state disk, loop devices for CSI volumes, and the ACPI power button with evdev so PID 1 sees it.
pub const NODE_MODULES: &[&str] = &[
    // libcrc32c (nf_tables, nf_conntrack) and ext4 ask the crypto API for "crc32c" at load time, which would
    // modprobe a provider; there is no modprobe, so the providers come first (modules.softdep says so too).
    "crc32c_generic",
    "crc32c_intel",
    "overlay",
    "bridge",
    "veth",
    "br_netfilter",
    "nf_tables",
    "nf_conntrack",
    "nf_nat",
    "nft_nat",
    "nft_chain_nat",
    "nft_masq",
    "nft_ct",
    "nft_compat",
    "nft_fib_inet",
    "nft_reject_inet",
    "virtio_pci",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",
    "e1000",
    "e1000e",
    "igb",
    "r8169",
    "ahci",
    "nvme",
    "sd_mod",
    "ext4",
    // The CSI plugin's image-backed and raw block volumes are loop devices.
    "loop",
    "button",
    "evdev",
    // A VM's hardware RNG (qemu's virtio-rng), so the kernel's random pool is ready early.
    "virtio_rng",
];

/// Everything one build takes.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    pub kernel: Kernel,
    /// The program that becomes `/init`.
    pub binary: PathBuf,
    pub config: Option<PathBuf>,
    pub manifests: Option<PathBuf>,
    pub preload: Vec<PathBuf>,
    /// Modules beyond [`NODE_MODULES`].
    pub extra_modules: Vec<String>,
    /// Host `mke2fs` (with its libraries) so PID 1 can format a blank state disk; `None` leaves it out.
    pub mkfs: Option<PathBuf>,
    pub out_dir: PathBuf,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub kernel_bytes: u64,
    pub initramfs_bytes: u64,
    /// Uncompressed size of the module files inside the initramfs.
    pub modules_bytes: u64,
    pub modules: Vec<String>,
    pub missing_modules: Vec<String>,
    pub libraries: Vec<String>,
    pub images: Vec<String>,
}

impl std::fmt::Display for BuildReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} bytes ({:.1} MiB)",
            self.vmlinuz.display(),
            self.kernel_bytes,
            mib(self.kernel_bytes)
        )?;
        writeln!(
            f,
            "{}: {} bytes ({:.1} MiB, gzip; {} modules = {:.1} MiB uncompressed)",
            self.initramfs.display(),
            self.initramfs_bytes,
            mib(self.initramfs_bytes),
            self.modules.len(),
            mib(self.modules_bytes)
        )?;
        if !self.missing_modules.is_empty() {
            writeln!(
                f,
                "warning: not in this kernel: {}",
                self.missing_modules.join(", ")
            )?;
        }
        for i in &self.images {
            writeln!(f, "preloaded image: {i}")?;
        }
        Ok(())
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

enum Node {
    Dir,
    File(Vec<u8>, u32),
    Symlink(String),
}

/// Providers that other modules ask the crypto API for while they load (libcrc32c and ext4 want "crc32c").
/// That is a soft dependency, absent from `modules.dep`, so they get a load stage of their own, before all.
const CRYPTO_PROVIDERS: &[&str] = &["crc32c_generic", "crc32c_intel"];

/// The stage PID 1 loads `m` in: every module of a stage loads at once, after all of the stages before it, so
/// a module's stage is past those of everything it needs. Loading one by one cost 1.2 s of a TCG boot.
fn load_stage(m: &crate::kernel::Module, stages: &std::collections::HashMap<String, u32>) -> u32 {
    if CRYPTO_PROVIDERS.contains(&m.name.as_str()) {
        return 0;
    }
    m.needs
        .iter()
        .filter_map(|d| stages.get(d))
        .map(|s| s + 1)
        .max()
        .unwrap_or(1)
        .max(1)
}

/// Builds the image into `spec.out_dir` (created if missing).
pub fn build(spec: &BuildSpec) -> Result<BuildReport> {
    let mut tree: BTreeMap<String, Node> = BTreeMap::new();
    for d in layout::EMPTY_DIRS {
        tree.insert(d.trim_start_matches('/').to_owned(), Node::Dir);
    }
    let read = |p: &Path| std::fs::read(p).map_err(io(format!("reading {}", p.display())));

    // The program and whatever its loader needs (nothing once it is static).
    tree.insert("init".into(), Node::File(read(&spec.binary)?, 0o755));
    tree.insert("usr/bin/basalt".into(), Node::Symlink("/init".into()));
    let mut libraries = Vec::new();
    let mut programs = vec![spec.binary.clone()];
    if let Some(mkfs) = &spec.mkfs {
        tree.insert(
            layout::MKFS.trim_start_matches('/').into(),
            Node::File(read(mkfs)?, 0o755),
        );
        programs.push(mkfs.clone());
        // Without its profile mke2fs falls back to ext2-era defaults; ship the host's so ext4 is ext4.
        let conf = Path::new("/etc/mke2fs.conf");
        if conf.exists() {
            tree.insert("etc/mke2fs.conf".into(), Node::File(read(conf)?, 0o644));
        }
    }
    for program in &programs {
        for (in_image, host) in crate::elf::runtime_files(program)? {
            libraries.push(in_image.clone());
            tree.insert(
                in_image.trim_start_matches('/').to_owned(),
                Node::File(read(&host)?, 0o755),
            );
        }
    }
    libraries.sort();
    libraries.dedup();

    // Modules, dependencies first; one missing from this kernel is recorded for PID 1 to show, not fatal.
    let mut order = String::new();
    let mut modules = Vec::new();
    let mut missing = Vec::new();
    let mut modules_bytes = 0;
    let mut seen = std::collections::HashSet::new();
    let mut stages = std::collections::HashMap::new();
    let wanted = NODE_MODULES
        .iter()
        .copied()
        .chain(spec.extra_modules.iter().map(String::as_str));
    for name in wanted {
        match spec.kernel.resolve_modules(&[name]) {
            Ok(resolved) => {
                for m in resolved {
                    if !seen.insert(m.name.clone()) {
                        continue;
                    }
                    let data = read(&m.path)?;
                    modules_bytes += data.len() as u64;
                    let file = format!("{}.ko", m.name);
                    let stage = load_stage(&m, &stages);
                    stages.insert(m.name.clone(), stage);
                    order.push_str(&format!("{} {file} {stage}\n", m.name));
                    tree.insert(
                        format!("{}/{file}", layout::MODULES_DIR.trim_start_matches('/')),
                        Node::File(data, 0o644),
                    );
                    modules.push(m.name);
                }
            }
            Err(crate::kernel::KernelError::UnknownModule { .. }) => {
                order.push_str(&format!("{name} -\n"));
                missing.push(name.to_owned());
            }
            Err(e) => return Err(e.into()),
        }
    }
    tree.insert(
        layout::MODULES_ORDER.trim_start_matches('/').into(),
        Node::File(order.into_bytes(), 0o644),
    );

    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.exists() {
        tree.insert(
            "etc/ssl/certs/ca-certificates.crt".into(),
            Node::File(read(ca)?, 0o644),
        );
    }
    let config = match &spec.config {
        Some(p) => read(p)?,
        None => DEFAULT_CONFIG.as_bytes().to_vec(),
    };
    tree.insert(
        layout::CONFIG.trim_start_matches('/').into(),
        Node::File(config, 0o644),
    );

    if let Some(dir) = &spec.manifests {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(format!("--manifests {}", dir.display())))?
            .collect::<std::result::Result<_, _>>()
            .map_err(io(format!("--manifests {}", dir.display())))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file()
                && (name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json"))
            {
                tree.insert(
                    format!("{}/{name}", layout::MANIFESTS_DIR.trim_start_matches('/')),
                    Node::File(read(&e.path())?, 0o644),
                );
            }
        }
    }

    let mut images = Vec::new();
    let mut preload_list = String::new();
    for archive in &spec.preload {
        let names = crate::preload::image_names(archive)?;
        let file = archive
            .file_name()
            .ok_or(BuildError::BadPreload(archive.clone(), "needs a file name"))?
            .to_string_lossy()
            .into_owned();
        let key = format!("{}/{file}", layout::PRELOAD_DIR.trim_start_matches('/'));
        if tree.contains_key(&key) {
            return Err(BuildError::BadPreload(
                archive.clone(),
                "another --preload archive has the same file name",
            ));
        }
        tree.insert(key, Node::File(read(archive)?, 0o644));
        for n in names {
            preload_list.push_str(&format!("{n} {file}\n"));
            images.push(n);
        }
    }
    tree.insert(
        layout::PRELOAD_LIST.trim_start_matches('/').into(),
        Node::File(preload_list.into_bytes(), 0o644),
    );

    // Parents of every entry, so the kernel's unpacker never has to guess a directory's mode.
    let parents: Vec<String> = tree
        .keys()
        .flat_map(|k| {
            let mut out = Vec::new();
            let mut p = Path::new(k).parent();
            while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
                out.push(d.to_string_lossy().into_owned());
                p = d.parent();
            }
            out
        })
        .collect();
    for p in parents {
        tree.entry(p).or_insert(Node::Dir);
    }

    let gz = flate2::GzBuilder::new()
        .operating_system(3)
        .write(Vec::new(), flate2::Compression::best());
    let mut w = CpioWriter::new(gz);
    for (path, node) in &tree {
        let entry = match node {
            Node::Dir => (0o755, Entry::Dir),
            Node::File(d, mode) => (*mode, Entry::File(d)),
            Node::Symlink(t) => (0o777, Entry::Symlink(t)),
        };
        let perm = if path == "tmp" { 0o1777 } else { entry.0 };
        w.add(path, perm, entry.1)
            .map_err(io("writing the initramfs"))?;
    }
    let initramfs = w
        .finish()
        .and_then(|gz| gz.finish())
        .map_err(io("compressing the initramfs"))?;

    std::fs::create_dir_all(&spec.out_dir)
        .map_err(io(format!("creating {}", spec.out_dir.display())))?;
    let vmlinuz = spec.out_dir.join("vmlinuz");
    let initramfs_path = spec.out_dir.join("initramfs.cpio.gz");
    write_atomic(&vmlinuz, &read(&spec.kernel.image)?)?;
    write_atomic(&initramfs_path, &initramfs)?;
    Ok(BuildReport {
        kernel_bytes: std::fs::metadata(&vmlinuz)
            .map_err(io(format!("{}", vmlinuz.display())))?
            .len(),
        initramfs_bytes: initramfs.len() as u64,
        vmlinuz,
        initramfs: initramfs_path,
        modules_bytes,
        modules,
        missing_modules: missing,
        libraries,
        images,
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io(format!("temp file in {}", dir.display())))?;
    tmp.write_all(data)
        .map_err(io(format!("writing {}", path.display())))?;
    tmp.persist(path).map_err(|e| BuildError::Io {
        context: format!("saving {}", path.display()),
        source: e.error,
    })?;
    Ok(())
}

/// The config an image gets without `--config`: every key at its default, networking by DHCP. No `init:`
/// key, so that other `basalt` commands run inside the node can read the file too.
pub const DEFAULT_CONFIG: &str = "# Basalt node configuration (see `basalt config`); empty = all defaults.\n\
# PID 1 also reads an `init:` section (ip, gateway, dns, interface, disk, disk-format, status-port);\n\
# `basalt.KEY=VALUE` on the kernel command line overrides any key.\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Module;

    fn module(name: &str, needs: &[&str]) -> Module {
        Module {
            name: name.into(),
            path: PathBuf::from(format!("{name}.ko")),
            needs: needs.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn a_module_loads_in_a_stage_after_everything_it_needs() {
        let mut stages = std::collections::HashMap::new();
        for (m, want) in [
            (module("crc32c_generic", &[]), 0),
            (module("libcrc32c", &[]), 1),
            (module("nf_defrag_ipv4", &[]), 1),
            (module("nf_conntrack", &["libcrc32c", "nf_defrag_ipv4"]), 2),
            (module("nf_nat", &["nf_conntrack", "libcrc32c"]), 3),
            // A dependency the image does not carry (built in) does not push the stage.
            (module("veth", &["not_in_image"]), 1),
        ] {
            let got = load_stage(&m, &stages);
            assert_eq!(got, want, "{}", m.name);
            stages.insert(m.name, got);
        }
    }
}
