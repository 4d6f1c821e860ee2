//! Builds OCI images byte by byte, reproducibly: fixed timestamps, sorted JSON, gzip from a pure-Rust encoder.
//! Writes each image as an OCI image layout, an OCI archive (the layout in a tar) and a `docker save` archive.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Every timestamp in a fixture: images must be byte-identical from run to run.
const EPOCH: u64 = 1_700_000_000;
const CREATED: &str = "2023-11-14T22:13:20Z";

pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A content-addressed blob.
#[derive(Clone)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len()})
    }

    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} {} bytes)", self.digest, self.bytes.len())
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One uncompressed layer tar, built entry by entry.
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(EPOCH);
        h.set_size(size);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32, uid: u64, gid: u64) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Directory, mode, uid, gid, 0);
        self.tar
            .append_data(&mut h, format!("{}/", path.trim_end_matches('/')), &[][..])
            .with_context(|| format!("layer dir {path}"))?;
        Ok(self)
    }

    pub fn file(mut self, path: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .with_context(|| format!("layer file {path}"))?;
        Ok(self)
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, 0, 0);
        self.tar
            .append_link(&mut h, path, target)
            .with_context(|| format!("layer symlink {path}"))?;
        Ok(self)
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Result<Self> {
        let mut h = Self::header(tar::EntryType::Link, 0o755, 0, 0, 0);
        self.tar
            .append_link(&mut h, path, target)
            .with_context(|| format!("layer hardlink {path}"))?;
        Ok(self)
    }

    /// Deletes `path` from the layers below (an AUFS-style `.wh.` file, as the OCI spec describes).
    pub fn whiteout(self, path: &str) -> Result<Self> {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, 0, 0, b"")
    }

    /// Hides everything the layers below put in `dir`.
    pub fn opaque(self, dir: &str) -> Result<Self> {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            0o644,
            0,
            0,
            b"",
        )
    }

    pub fn finish(self) -> Result<Vec<u8>> {
        self.tar.into_inner().context("finishing layer tar")
    }
}

/// An image under construction: layers (uncompressed tars) and the runtime part of its config.
pub struct ImageBuilder {
    repository: String,
    tag: String,
    layers: Vec<Vec<u8>>,
    config: BTreeMap<String, Value>,
}

impl ImageBuilder {
    /// `repository` is the full name without tag, e.g. `docker.io/library/busybox`.
    pub fn new(repository: &str, tag: &str) -> ImageBuilder {
        ImageBuilder {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            layers: Vec::new(),
            config: BTreeMap::new(),
        }
    }

    pub fn layer(mut self, tar: Vec<u8>) -> Self {
        self.layers.push(tar);
        self
    }

    /// Sets a key of the image config's `config` object (`Cmd`, `Env`, `User`, `WorkingDir`, …).
    pub fn config(mut self, key: &str, value: Value) -> Self {
        self.config.insert(key.to_owned(), value);
        self
    }

    pub fn build(self) -> Result<OciImage> {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in &self.layers {
            diff_ids.push(sha256_digest(tar));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut gz, tar)?;
            layers.push(Blob::new(MEDIA_LAYER_GZIP, gz.finish()?));
        }
        let history: Vec<Value> = (0..layers.len())
            .map(|i| json!({"created": CREATED, "created_by": format!("basalt-testsupport layer {i}")}))
            .collect();
        let config = json!({
            "created": CREATED,
            "architecture": "amd64",
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        });
        let config = Blob::new(MEDIA_CONFIG, serde_json::to_vec(&config)?);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        });
        let manifest = Blob::new(MEDIA_MANIFEST, serde_json::to_vec(&manifest)?);
        Ok(OciImage {
            repository: self.repository,
            tag: self.tag,
            manifest,
            config,
            layers,
            diff_ids,
            layer_tars: self.layers,
        })
    }
}

/// A finished image: every blob in memory, ready to be written in any of the archive formats.
#[derive(Debug)]
pub struct OciImage {
    /// Full repository name, e.g. `docker.io/library/busybox`.
    pub repository: String,
    pub tag: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub diff_ids: Vec<String>,
    layer_tars: Vec<Vec<u8>>,
}

impl OciImage {
    /// `docker.io/library/busybox:latest`
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The path inside a registry: `library/busybox` for `docker.io/library/busybox`.
    pub fn path_in_registry(&self) -> &str {
        self.repository
            .split_once('/')
            .map(|(_, p)| p)
            .unwrap_or(&self.repository)
    }

    /// The name `docker save` would record: `busybox:latest` for official images, else `basalt/x:latest`.
    pub fn docker_short_name(&self) -> String {
        let path = self.path_in_registry();
        let short = path.strip_prefix("library/").unwrap_or(path);
        format!("{short}:{}", self.tag)
    }

    fn blobs(&self) -> impl Iterator<Item = &Blob> {
        [&self.manifest, &self.config]
            .into_iter()
            .chain(self.layers.iter())
    }

    fn index(&self) -> Result<Vec<u8>> {
        let mut desc = self.manifest.descriptor();
        // The full reference in both annotations, as `ctr export` writes it, so importers can name the image.
        desc["annotations"] = json!({
            "org.opencontainers.image.ref.name": self.reference(),
            "io.containerd.image.name": self.reference(),
        });
        Ok(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [desc],
        }))?)
    }

    /// Writes an OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`).
    pub fn write_oci_layout(&self, dir: &Path) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        fs::write(dir.join("index.json"), self.index()?)?;
        for b in self.blobs() {
            fs::write(blobs.join(b.hex()), &b.bytes)?;
        }
        Ok(())
    }

    /// Writes the OCI layout as one tar (what `skopeo copy … oci-archive:` and `podman save --format oci-archive`
    /// produce).
    pub fn write_oci_archive(&self, path: &Path) -> Result<()> {
        let mut t = ArchiveWriter::create(path)?;
        t.dir("blobs/")?;
        t.dir("blobs/sha256/")?;
        t.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        t.file("index.json", &self.index()?)?;
        for b in self.blobs() {
            t.file(&format!("blobs/sha256/{}", b.hex()), &b.bytes)?;
        }
        t.finish()
    }

    /// Writes a classic `docker save` archive: `manifest.json`, `repositories`, the config as `<id>.json` and
    /// each layer uncompressed as `<id>/layer.tar`.
    pub fn write_docker_archive(&self, path: &Path) -> Result<()> {
        let mut t = ArchiveWriter::create(path)?;
        let config_name = format!("{}.json", self.config.hex());
        t.file(&config_name, &self.config.bytes)?;
        let mut layer_paths = Vec::new();
        let mut parent: Option<String> = None;
        for (tar, diff_id) in self.layer_tars.iter().zip(&self.diff_ids) {
            let id = diff_id.trim_start_matches("sha256:").to_owned();
            t.dir(&format!("{id}/"))?;
            t.file(&format!("{id}/VERSION"), b"1.0")?;
            let mut json = json!({"id": id, "created": CREATED});
            if let Some(p) = &parent {
                json["parent"] = json!(p);
            }
            t.file(&format!("{id}/json"), &serde_json::to_vec(&json)?)?;
            t.file(&format!("{id}/layer.tar"), tar)?;
            layer_paths.push(format!("{id}/layer.tar"));
            parent = Some(id);
        }
        let name = self.docker_short_name();
        let manifest = json!([{"Config": config_name, "RepoTags": [name], "Layers": layer_paths}]);
        t.file("manifest.json", &serde_json::to_vec(&manifest)?)?;
        let (repo, tag) = name.rsplit_once(':').unwrap_or((&name, "latest"));
        let repositories = json!({ repo: { tag: parent.unwrap_or_default() } });
        t.file("repositories", &serde_json::to_vec(&repositories)?)?;
        t.finish()
    }
}

struct ArchiveWriter {
    tar: tar::Builder<std::io::BufWriter<fs::File>>,
}

impl ArchiveWriter {
    fn create(path: &Path) -> Result<ArchiveWriter> {
        let f = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ArchiveWriter {
            tar: tar::Builder::new(std::io::BufWriter::new(f)),
        })
    }

    fn dir(&mut self, path: &str) -> Result<()> {
        let mut h = LayerBuilder::header(tar::EntryType::Directory, 0o755, 0, 0, 0);
        self.tar.append_data(&mut h, path, &[][..])?;
        Ok(())
    }

    fn file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        let mut h = LayerBuilder::header(tar::EntryType::Regular, 0o644, 0, 0, data.len() as u64);
        self.tar.append_data(&mut h, path, data)?;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        let mut w = self.tar.into_inner()?;
        std::io::Write::flush(&mut w)?;
        Ok(())
    }
}
