//! Image archives baked into the node image for air-gapped nodes, and the names they will be known by.
//!
//! An OCI archive names its image with the `org.opencontainers.image.ref.name` annotation of `index.json`, a
//! `docker save` archive with `RepoTags` in `manifest.json`; either way the name is normalised as Kubernetes
//! does (`busybox:latest` is `docker.io/library/busybox:latest`).

use std::io::Read;
use std::path::Path;

use basalt_images::Reference;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub enum PreloadError {
    #[error("preload archive {path}: {reason}")]
    Bad { path: String, reason: String },
}

/// The normalised image names an archive holds, sorted.
pub fn image_names(path: &Path) -> Result<Vec<String>, PreloadError> {
    let bad = |reason: String| PreloadError::Bad {
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let reader = basalt_images::unpack::decompress(file).map_err(|e| bad(e.to_string()))?;
    let mut ar = tar::Archive::new(reader);
    let mut raw = Vec::new();
    for entry in ar.entries().map_err(|e| bad(format!("reading tar: {e}")))? {
        let entry = entry.map_err(|e| bad(format!("reading tar: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./");
        if name != "index.json" && name != "manifest.json" {
            continue;
        }
        let mut text = Vec::new();
        entry
            .take(8 << 20)
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("{name}: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| bad(format!("{name}: {e}")))?;
        if name == "index.json" {
            for m in json["manifests"].as_array().into_iter().flatten() {
                if let Some(r) = m["annotations"][REF_NAME].as_str() {
                    raw.push(r.to_owned());
                }
            }
        } else {
            for m in json.as_array().into_iter().flatten() {
                for t in m["RepoTags"].as_array().into_iter().flatten() {
                    raw.extend(t.as_str().map(str::to_owned));
                }
            }
        }
    }
    if raw.is_empty() {
        return Err(bad(format!(
            "names no image (no `{REF_NAME}` annotation in index.json, no RepoTags in manifest.json)"
        )));
    }
    let mut names = raw
        .iter()
        .map(|r| normalise(r).map_err(|e| bad(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// `busybox` → `docker.io/library/busybox:latest`.
pub fn normalise(name: &str) -> Result<String, basalt_images::Error> {
    let mut r: Reference = name.parse()?;
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    Ok(r.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_like_kubernetes() {
        assert_eq!(
            normalise("busybox:latest").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalise("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalise("registry.local:5000/a/b:1").unwrap(),
            "registry.local:5000/a/b:1"
        );
    }

    #[test]
    fn oci_and_docker_archives_are_named() {
        let fx = basalt_testsupport::Fixtures::build().unwrap();
        let bb = fx.get("busybox");
        assert_eq!(
            image_names(&bb.oci_archive).unwrap(),
            ["docker.io/library/busybox:latest"]
        );
        assert_eq!(
            image_names(&bb.docker_archive).unwrap(),
            ["docker.io/library/busybox:latest"]
        );
        let err = image_names(Path::new("/etc/hostname")).unwrap_err();
        assert!(err.to_string().contains("/etc/hostname"), "{err}");
    }
}
