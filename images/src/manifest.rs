//! OCI and Docker schema2 manifests and image indexes (manifest lists), and platform selection.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a client accepts when asking for a manifest.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// linux and the architecture this binary runs on, in OCI's names.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses a manifest or index; `content_type` (from the registry) may be empty.
pub fn parse(bytes: &[u8], content_type: &str, digest: &Digest) -> Result<Parsed> {
    let bad = |reason: String| Error::Manifest {
        digest: digest.to_string(),
        reason,
    };
    let raw: Raw = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    if raw.schema_version != Some(2) {
        return Err(bad(format!(
            "schemaVersion {:?} is not supported (only 2)",
            raw.schema_version
        )));
    }
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let mt = raw.media_type.as_deref().unwrap_or(ct);
    let is_index =
        mt == OCI_INDEX || mt == DOCKER_LIST || (mt.is_empty() && raw.manifests.is_some());
    if is_index {
        return Ok(Parsed::Index(
            raw.manifests
                .ok_or_else(|| bad("index without manifests".into()))?,
        ));
    }
    match (raw.config, raw.layers) {
        (Some(config), Some(layers)) => Ok(Parsed::Image { config, layers }),
        _ => Err(bad(format!(
            "media type {mt:?}: expected an image manifest with config and layers"
        ))),
    }
}

/// The entry of an index for `want`: same os and architecture, a matching variant preferred.
pub fn select_platform<'a>(
    entries: &'a [Descriptor],
    want: &Platform,
    index_digest: &Digest,
) -> Result<&'a Descriptor> {
    let matching: Vec<&Descriptor> = entries
        .iter()
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        })
        .collect();
    matching
        .iter()
        .find(|d| d.platform.as_ref().and_then(|p| p.variant.as_ref()) == want.variant.as_ref())
        .or(matching.first())
        .copied()
        .ok_or_else(|| {
            let have: Vec<String> = entries
                .iter()
                .filter_map(|d| d.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            Error::Manifest {
                digest: index_digest.to_string(),
                reason: format!(
                    "no manifest for {}/{} (index has: {})",
                    want.os,
                    want.architecture,
                    have.join(", ")
                ),
            }
        })
}

/// Refuses layers we cannot unpack (encrypted, or not a tar), naming the media type.
pub fn check_layer(d: &Descriptor) -> Result<()> {
    let t = d.media_type.as_str();
    let ok = t.is_empty()
        || [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        ]
        .contains(&t);
    if ok {
        Ok(())
    } else {
        Err(Error::Layer {
            digest: d.digest.to_string(),
            reason: format!("unsupported layer media type {t:?}"),
        })
    }
}

/// The part of an image config we need: the uncompressed layer digests.
pub fn diff_ids(config: &[u8], digest: &Digest) -> Result<Vec<Digest>> {
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<Digest>,
    }
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    let c: Config = serde_json::from_slice(config).map_err(|e| Error::Manifest {
        digest: digest.to_string(),
        reason: format!("image config: {e}"),
    })?;
    Ok(c.rootfs.diff_ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(arch: &str, variant: Option<&str>, n: u8) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: Digest::of(&[n]),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: "linux".into(),
                variant: variant.map(Into::into),
            }),
            annotations: None,
        }
    }

    #[test]
    fn picks_the_platform() {
        let idx = [
            desc("arm", Some("v7"), 1),
            desc("amd64", None, 2),
            desc("arm64", Some("v8"), 3),
        ];
        let d = Digest::of(b"idx");
        let want = |a: &str, v: Option<&str>| Platform {
            architecture: a.into(),
            os: "linux".into(),
            variant: v.map(Into::into),
        };
        assert_eq!(
            select_platform(&idx, &want("amd64", None), &d)
                .unwrap()
                .digest,
            idx[1].digest
        );
        assert_eq!(
            select_platform(&idx, &want("arm64", None), &d)
                .unwrap()
                .digest,
            idx[2].digest
        );
        let e = select_platform(&idx, &want("s390x", None), &d)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("linux/s390x") && e.contains("linux/amd64"),
            "{e}"
        );
    }

    #[test]
    fn refuses_layers_it_cannot_unpack() {
        let mut d = desc("amd64", None, 1);
        d.media_type = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
        check_layer(&d).unwrap();
        d.media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted".into();
        let e = check_layer(&d).unwrap_err().to_string();
        assert!(
            e.contains("+encrypted") && e.contains(&d.digest.to_string()),
            "{e}"
        );
    }

    #[test]
    fn parses_index_and_manifest() {
        let d = Digest::of(b"x");
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[{{"mediaType":"{DOCKER_MANIFEST}","digest":"{d}","size":3,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        );
        assert!(matches!(parse(idx.as_bytes(), "", &d).unwrap(), Parsed::Index(v) if v.len() == 1));
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{d}","size":3}},"layers":[]}}"#
        );
        assert!(matches!(
            parse(m.as_bytes(), OCI_MANIFEST, &d).unwrap(),
            Parsed::Image { .. }
        ));
        let e = parse(b"{\"schemaVersion\":1}", "", &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("schemaVersion"), "{e}");
    }
}
