//! Air-gapped images: importing `docker save` archives and OCI layout tarballs (what skopeo, podman and
//! `ctr export` write, optionally gzip- or zstd-compressed), exporting images as OCI archives, and the agent's
//! start-up import of every archive in the air-gap directory (k3s's convention), each archive once.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::index::{ImageRecord, LayerRecord};
use crate::manifest::{
    self, Descriptor, Parsed, Platform, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST,
};
use crate::reference::Reference;
use crate::store::{write_atomic, Store};
use crate::unpack::decompress;

/// Small metadata files kept in memory while the archive streams past.
fn is_metadata(path: &str) -> bool {
    matches!(
        path,
        "index.json" | "oci-layout" | "manifest.json" | "repositories"
    ) || path.ends_with("/json")
        || path.ends_with("/VERSION")
}

fn normalise(path: &str) -> String {
    path.trim_start_matches("./").to_owned()
}

/// How an import names and keeps what it finds (`ctr import`'s options).
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Images survive `prune`.
    pub pinned: bool,
    /// The repository for an OCI `org.opencontainers.image.ref.name` that is only a tag (`latest`, as
    /// `skopeo copy oci:DIR` writes): `BASE:TAG`, as `ctr import --base-name`.
    pub base_name: Option<String>,
    /// A name for the layout's whole index (its manifests as one multi-platform image), as
    /// `ctr import --index-name`.
    pub index_name: Option<String>,
}

/// Imports every image in the archive at `path`; returns their records. `pinned` images survive `prune`.
pub fn import_archive(store: &Store, path: &Path, pinned: bool) -> Result<Vec<ImageRecord>> {
    let opts = ImportOptions {
        pinned,
        ..Default::default()
    };
    import_archive_with(store, path, &opts)
}

/// [`import_archive`] with naming options. An OCI entry is named, as containerd names it, by its
/// `io.containerd.image.name`, else by a full reference in `org.opencontainers.image.ref.name`, else by
/// `--base-name` and the tag there; one with no name at all is kept under its digest.
pub fn import_archive_with(
    store: &Store,
    path: &Path,
    opts: &ImportOptions,
) -> Result<Vec<ImageRecord>> {
    let pinned = opts.pinned;
    let bad = |reason: String| Error::Archive {
        path: path.to_owned(),
        reason,
    };
    let _guard = store.gc_guard()?;
    let file = File::open(path).at(path)?;
    let reader = decompress(file).at(path)?;
    let mut ar = tar::Archive::new(reader);
    let mut meta: HashMap<String, Vec<u8>> = HashMap::new();
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    for entry in ar.entries().at(path)? {
        let mut entry = entry.map_err(|e| bad(format!("reading tar: {e}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let name = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
        if is_metadata(&name) {
            if entry.size() > 8 << 20 {
                return Err(bad(format!("{name} is larger than 8 MiB")));
            }
            let mut v = Vec::new();
            entry.read_to_end(&mut v).at(path)?;
            meta.insert(name, v);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let d = Digest::from_hex(hex).map_err(|e| bad(format!("{name}: {e}")))?;
            let size = entry.size();
            store.ensure_blob(&d, |w| {
                if w.resumed_from() > 0 {
                    w.restart()?;
                }
                std::io::copy(&mut entry, w).at(path).map(|_| ())
            })?;
            files.insert(name, (d, size));
        } else {
            let (d, size) = store.put_unknown(&mut entry)?;
            files.insert(name, (d, size));
        }
    }
    let records = if meta.contains_key("index.json") {
        import_oci(store, &meta, opts, &bad)?
    } else if let Some(m) = meta.get("manifest.json") {
        import_docker(store, m, &files, &bad)?
    } else {
        return Err(bad(
            "neither an OCI layout (index.json) nor a docker save archive (manifest.json)".into(),
        ));
    };
    let mut out = Vec::new();
    for mut r in records {
        r.pinned = pinned || store.image(&r.name).map(|o| o.pinned).unwrap_or(false);
        store.prepare_snapshots(&r)?;
        store.put_image(&r)?;
        out.push(r);
    }
    Ok(out)
}

/// A record for the image whose platform manifest is `manifest_digest`, everything already in the store.
fn record_for(
    store: &Store,
    name: String,
    top: Digest,
    manifest_digest: &Digest,
    extra: Vec<Digest>,
) -> Result<ImageRecord> {
    let bytes = store.read_blob(manifest_digest)?;
    let Parsed::Image { config, layers } = manifest::parse(&bytes, "", manifest_digest)? else {
        return Err(Error::Manifest {
            digest: manifest_digest.to_string(),
            reason: "expected an image manifest".into(),
        });
    };
    for l in &layers {
        manifest::check_layer(l)?;
        if !store.has_blob(&l.digest) {
            return Err(Error::BlobMissing {
                digest: l.digest.to_string(),
            });
        }
    }
    let diff_ids = manifest::diff_ids(&store.read_blob(&config.digest)?, &config.digest)?;
    Ok(ImageRecord {
        name,
        digest: top,
        manifest: manifest_digest.clone(),
        config: config.digest.clone(),
        size: bytes.len() as u64 + config.size + layers.iter().map(|l| l.size).sum::<u64>(),
        layers: layers
            .iter()
            .map(|l| LayerRecord {
                digest: l.digest.clone(),
                size: l.size,
                media_type: l.media_type.clone(),
            })
            .collect(),
        diff_ids,
        pinned: false,
        extra_blobs: extra,
    })
}

/// What containerd names an OCI index entry (see [`import_archive_with`]); `None` when it has no name.
fn oci_name(
    ann: &BTreeMap<String, String>,
    base_name: Option<&str>,
    bad: &dyn Fn(String) -> Error,
) -> Result<Option<String>> {
    let parse = |n: &str, key: &str| {
        n.parse::<Reference>()
            .map(|r| r.to_string())
            .map_err(|e| bad(format!("index.json: annotation {key} {n:?}: {e}")))
    };
    if let Some(n) = ann.get("io.containerd.image.name") {
        return parse(n, "io.containerd.image.name").map(Some);
    }
    let key = "org.opencontainers.image.ref.name";
    let Some(n) = ann.get(key) else {
        return Ok(None);
    };
    // The OCI annotation is often only a tag: a name with none of `/:@` is one, never a repository.
    if n.contains(['/', ':', '@']) {
        return parse(n, key).map(Some);
    }
    match base_name {
        Some(base) => parse(&format!("{base}:{n}"), key).map(Some),
        None => {
            tracing::warn!(
                tag = %n,
                "OCI archive entry's {key} is only a tag: kept under its digest (name it with --base-name)"
            );
            Ok(None)
        }
    }
}

fn import_oci(
    store: &Store,
    meta: &HashMap<String, Vec<u8>>,
    opts: &ImportOptions,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<ImageRecord>> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let raw = &meta["index.json"];
    let idx: Index = serde_json::from_slice(raw).map_err(|e| bad(format!("index.json: {e}")))?;
    let mut out = Vec::new();
    if let Some(name) = &opts.index_name {
        let name = name
            .parse::<Reference>()
            .map_err(|e| bad(format!("--index-name {name:?}: {e}")))?
            .to_string();
        // The layout's own index.json becomes a blob: the image's top is that index.
        let (top, _) = store.put_unknown(&mut &raw[..])?;
        // A layout of one image (what skopeo writes) often gives its entry no platform.
        let chosen = match &idx.manifests[..] {
            [only] => only,
            all => manifest::select_platform(all, &Platform::host(), &top)?,
        };
        let (manifest_digest, mut extra) = resolve_entry(store, chosen)?;
        extra.push(top.clone());
        out.push(record_for(store, name, top, &manifest_digest, extra)?);
    }
    for desc in &idx.manifests {
        let ann = desc.annotations.clone().unwrap_or_default();
        let name = match oci_name(&ann, opts.base_name.as_deref(), bad)? {
            Some(n) => n,
            // Named by the index already: not again under a digest.
            None if opts.index_name.is_some() => continue,
            None => desc.digest.to_string(),
        };
        let (manifest_digest, extra) = resolve_entry(store, desc)?;
        out.push(record_for(
            store,
            name,
            desc.digest.clone(),
            &manifest_digest,
            extra,
        )?);
    }
    if out.is_empty() {
        return Err(bad("index.json lists no images".into()));
    }
    Ok(out)
}

/// The platform manifest an index entry stands for, and the index blobs above it.
fn resolve_entry(store: &Store, desc: &Descriptor) -> Result<(Digest, Vec<Digest>)> {
    let bytes = store.read_blob(&desc.digest)?;
    Ok(
        match manifest::parse(&bytes, &desc.media_type, &desc.digest)? {
            Parsed::Index(entries) => {
                let chosen = manifest::select_platform(&entries, &Platform::host(), &desc.digest)?;
                (chosen.digest.clone(), vec![desc.digest.clone()])
            }
            Parsed::Image { .. } => (desc.digest.clone(), Vec::new()),
        },
    )
}

fn import_docker(
    store: &Store,
    manifest_json: &[u8],
    files: &HashMap<String, (Digest, u64)>,
    bad: &dyn Fn(String) -> Error,
) -> Result<Vec<ImageRecord>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> =
        serde_json::from_slice(manifest_json).map_err(|e| bad(format!("manifest.json: {e}")))?;
    let mut out = Vec::new();
    for e in entries {
        let find = |p: &str| {
            files.get(&normalise(p)).cloned().ok_or_else(|| {
                bad(format!(
                    "manifest.json names {p:?}, which is not in the archive"
                ))
            })
        };
        let (config, config_size) = find(&e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = find(l)?;
            layers.push(json!({"mediaType": OCI_LAYER, "digest": d.to_string(), "size": size}));
        }
        // The image's manifest as a registry would serve it: uncompressed OCI layers.
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config.to_string(), "size": config_size},
            "layers": layers,
        }))
        .expect("serialises");
        let md = Digest::of(&m);
        store.put_blob(&md, &m)?;
        let tags = e.repo_tags.unwrap_or_default();
        let names: Vec<String> = if tags.is_empty() {
            vec![md.to_string()]
        } else {
            tags.iter()
                .map(|t| {
                    t.parse::<Reference>()
                        .map(|r| r.to_string())
                        .map_err(|err| bad(format!("manifest.json RepoTags: {err}")))
                })
                .collect::<Result<_>>()?
        };
        for n in names {
            out.push(record_for(store, n, md.clone(), &md, Vec::new())?);
        }
    }
    Ok(out)
}

/// The `mediaType` a stored manifest or index declares (OCI manifest when absent).
fn media_type_of(bytes: &[u8]) -> String {
    #[derive(Deserialize)]
    struct M {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<M>(bytes) {
        Ok(M {
            media_type: Some(t),
            ..
        }) => t,
        Ok(M {
            manifests: Some(_), ..
        }) => OCI_INDEX.into(),
        _ => OCI_MANIFEST.into(),
    }
}

/// Writes `names` (normalised references) as one OCI archive at `out`, atomically.
pub fn export(store: &Store, names: &[String], out: &Path) -> Result<()> {
    let records: Vec<ImageRecord> = names
        .iter()
        .map(|n| store.image(n))
        .collect::<Result<_>>()?;
    let mut manifests = Vec::new();
    let mut blobs = BTreeMap::new();
    for r in &records {
        let top = store.read_blob(&r.digest)?;
        manifests.push(json!({
            "mediaType": media_type_of(&top),
            "digest": r.digest.to_string(),
            "size": top.len(),
            "annotations": {
                "io.containerd.image.name": r.name,
                "org.opencontainers.image.ref.name": r.name,
            },
        }));
        for b in r.blobs() {
            blobs.insert(b.clone(), ());
        }
    }
    let index = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .expect("serialises");
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        out.file_name().and_then(|f| f.to_str()).unwrap_or("export"),
        std::process::id()
    ));
    let res = (|| -> Result<()> {
        let f = File::create(&tmp).at(&tmp)?;
        let mut t = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, f));
        let mut add = |name: &str, size: u64, data: &mut dyn Read| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(size);
            h.set_mode(0o644);
            h.set_mtime(0);
            t.append_data(&mut h, name, data).at(&tmp)
        };
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        add("oci-layout", layout.len() as u64, &mut &layout[..])?;
        add("index.json", index.len() as u64, &mut &index[..])?;
        for d in blobs.keys() {
            let size = store.blob_size(d)?;
            let mut f = store.open_blob(d)?;
            add(&format!("blobs/sha256/{}", d.hex()), size, &mut f)?;
        }
        let mut w = t.into_inner().at(&tmp)?;
        w.flush().at(&tmp)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .at(&tmp)?
            .sync_all()
            .at(&tmp)?;
        fs::rename(&tmp, out).at(out)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// What the air-gap import did with one archive.
#[derive(Debug, Clone, Serialize)]
pub struct AirgapImport {
    pub path: PathBuf,
    /// Image names imported, or None when the archive was imported at an earlier start and is unchanged.
    pub images: Option<Vec<String>>,
    pub error: Option<String>,
}

const AIRGAP_SUFFIXES: &[&str] = &[".tar", ".tar.gz", ".tgz", ".tar.zst", ".tzst"];

/// Imports every archive in `dir` not imported before (remembered by path, size and mtime in the store), as
/// pinned images. One bad archive does not stop the others; its error is in its entry.
pub fn import_airgap_dir(store: &Store, dir: &Path) -> Result<Vec<AirgapImport>> {
    let state_path = store.root().join("airgap.json");
    let mut state: BTreeMap<String, String> = fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(dir),
    };
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !p.is_file() || !AIRGAP_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let md = fs::metadata(&p).at(&p)?;
        let stamp = format!("{}:{}.{}", md.len(), md.mtime(), md.mtime_nsec());
        let key = p.display().to_string();
        if state.get(&key) == Some(&stamp) {
            out.push(AirgapImport {
                path: p,
                images: None,
                error: None,
            });
            continue;
        }
        match import_archive(store, &p, true) {
            Ok(recs) => {
                state.insert(key, stamp);
                write_atomic(
                    &state_path,
                    &serde_json::to_vec_pretty(&state).expect("serialises"),
                )?;
                out.push(AirgapImport {
                    path: p,
                    images: Some(recs.into_iter().map(|r| r.name).collect()),
                    error: None,
                });
            }
            Err(e) => {
                tracing::warn!(archive = %p.display(), error = %e, "air-gap import failed");
                out.push(AirgapImport {
                    path: p,
                    images: Some(Vec::new()),
                    error: Some(e.to_string()),
                });
            }
        }
    }
    Ok(out)
}
