//! Static pods from files: YAML or JSON, several documents per file, named as upstream names them
//! (`<name>-<node>`) with a UID derived from the file and its content, so an unchanged file is the same pod
//! across restarts and a changed one is a new pod.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const CONFIG_SOURCE: &str = "kubernetes.io/config.source";
pub const CONFIG_HASH: &str = "kubernetes.io/config.hash";
pub const CONFIG_MIRROR: &str = "kubernetes.io/config.mirror";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("{file}: {reason}")]
pub struct ManifestError {
    pub file: PathBuf,
    pub reason: String,
}

/// Every pod `text` (the content of `file`) declares, checked and named for `node`.
pub fn parse(file: &Path, text: &str, node: &str) -> Result<Vec<Pod>, ManifestError> {
    let err = |reason: String| ManifestError {
        file: file.to_owned(),
        reason,
    };
    let mut pods = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        if value.is_null() {
            continue;
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != "Pod" {
            return Err(err(format!(
                "document {}: kind {kind:?}: only Pod is supported",
                i + 1
            )));
        }
        // Through JSON: k8s-openapi's types deserialize from the JSON data model (quantities, int-or-string).
        let json =
            serde_json::to_value(&value).map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        let mut pod: Pod =
            serde_path_to_error(json).map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        validate(&pod).map_err(|e| err(format!("document {}: {e}", i + 1)))?;
        name_static_pod(&mut pod, file, i, text, node);
        pods.push(pod);
    }
    Ok(pods)
}

fn serde_path_to_error(v: serde_json::Value) -> Result<Pod, serde_json::Error> {
    serde_json::from_value(v)
}

/// What the apiserver would refuse in a pod, by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("{0}: required")]
    Required(&'static str),
    #[error("metadata.name {0:?}: must be a DNS subdomain")]
    Name(String),
    #[error("spec.containers: at least one container is required")]
    NoContainers,
    /// `field` is `spec.initContainers` or `spec.containers`; `index` counts both, init containers first.
    #[error("{field}[{index}].name {name:?}: must be a DNS label")]
    ContainerName {
        field: &'static str,
        index: usize,
        name: String,
    },
    #[error("{field}[{index}].name {name:?}: duplicate container name")]
    DuplicateName {
        field: &'static str,
        index: usize,
        name: String,
    },
    #[error("{field}[{index}].image: required")]
    NoImage { field: &'static str, index: usize },
    #[error("spec.restartPolicy {0:?}: must be Always, OnFailure or Never")]
    RestartPolicy(String),
}

/// The checks the apiserver would make that a kubelet running the pod relies on.
pub fn validate(pod: &Pod) -> Result<(), Invalid> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err(Invalid::Required("metadata.name"));
    }
    if !is_dns_subdomain(name) {
        return Err(Invalid::Name(name.to_owned()));
    }
    let spec = pod.spec.as_ref().ok_or(Invalid::Required("spec"))?;
    if spec.containers.is_empty() {
        return Err(Invalid::NoContainers);
    }
    let mut names = std::collections::BTreeSet::new();
    let inits = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("spec.initContainers", c));
    for (i, (field, c)) in inits
        .chain(spec.containers.iter().map(|c| ("spec.containers", c)))
        .enumerate()
    {
        let (index, name) = (i, c.name.clone());
        if !is_dns_label(&c.name) {
            return Err(Invalid::ContainerName { field, index, name });
        }
        if !names.insert(c.name.clone()) {
            return Err(Invalid::DuplicateName { field, index, name });
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            return Err(Invalid::NoImage { field, index });
        }
    }
    match spec.restart_policy.as_deref() {
        None | Some("Always") | Some("OnFailure") | Some("Never") => {}
        Some(p) => return Err(Invalid::RestartPolicy(p.to_owned())),
    }
    Ok(())
}

pub fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// A pod from the manifest directory or URL.
pub fn is_static(p: &Pod) -> bool {
    matches!(annotation(p, CONFIG_SOURCE), Some("file" | "http"))
}

/// A pod in the apiserver that stands for a static pod.
pub fn is_mirror(p: &Pod) -> bool {
    annotation(p, CONFIG_MIRROR).is_some()
}

fn name_static_pod(pod: &mut Pod, file: &Path, index: usize, text: &str, node: &str) {
    let meta = &mut pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    meta.name = Some(format!("{name}-{node}"));
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
    let mut h = Sha256::new();
    h.update(file.as_os_str().as_encoded_bytes());
    h.update(index.to_le_bytes());
    h.update(text.as_bytes());
    h.update(node.as_bytes());
    let hash = hex::encode(&h.finalize()[..16]);
    if meta.uid.as_deref().unwrap_or("").is_empty() {
        meta.uid = Some(hash.clone());
    }
    let ann = meta.annotations.get_or_insert_with(Default::default);
    ann.insert(CONFIG_HASH.into(), hash);
    ann.insert(CONFIG_SOURCE.into(), "file".into());
    if let Some(spec) = pod.spec.as_mut() {
        spec.node_name = Some(node.to_owned());
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Files of a manifest dir that hold manifests: not hidden, not editor backups, regular files.
pub fn is_manifest_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && !name.ends_with('~') && path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: busybox\n";

    #[test]
    fn names_and_uids_follow_upstream() {
        let pods = parse(Path::new("/m/web.yaml"), WEB, "node1").unwrap();
        assert_eq!(pods.len(), 1);
        let m = &pods[0].metadata;
        assert_eq!(m.name.as_deref(), Some("web-node1"));
        assert_eq!(m.namespace.as_deref(), Some("default"));
        let uid = m.uid.clone().unwrap();
        assert_eq!(uid.len(), 32);
        // Same file, same content: same UID; changed content: new UID.
        let again = parse(Path::new("/m/web.yaml"), WEB, "node1").unwrap();
        assert_eq!(again[0].metadata.uid.as_deref(), Some(uid.as_str()));
        let changed = parse(
            Path::new("/m/web.yaml"),
            &WEB.replace("busybox", "busybox:1"),
            "node1",
        )
        .unwrap();
        assert_ne!(changed[0].metadata.uid.as_deref(), Some(uid.as_str()));
        assert_eq!(m.annotations.as_ref().unwrap()[CONFIG_SOURCE], "file");
    }

    #[test]
    fn several_documents_and_json() {
        let two = format!("{WEB}---\n{}", WEB.replace("name: web", "name: db"));
        let pods = parse(Path::new("/m/x.yaml"), &two, "n").unwrap();
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["web-n", "db-n"]);
        let json = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j"},"spec":{"containers":[{"name":"c","image":"i"}]}}"#;
        assert_eq!(parse(Path::new("/m/j.json"), json, "n").unwrap().len(), 1);
    }

    #[test]
    fn invalid_pods_are_refused_by_field() {
        let mut pod = Pod::default();
        assert_eq!(validate(&pod), Err(Invalid::Required("metadata.name")));
        pod.metadata.name = Some("web.example".into());
        assert_eq!(validate(&pod), Err(Invalid::Required("spec")));
        pod.metadata.name = Some("Web".into());
        assert_eq!(
            validate(&pod).unwrap_err().to_string(),
            "metadata.name \"Web\": must be a DNS subdomain"
        );
        let two = "kind: Pod\nmetadata: {name: x}\nspec:\n  initContainers: [{name: c, image: i}]\n  containers: [{name: c, image: i}]\n";
        let e = parse(Path::new("/m/two.yaml"), two, "n").unwrap_err();
        let want = Invalid::DuplicateName {
            field: "spec.containers",
            index: 1,
            name: "c".into(),
        };
        assert_eq!(e.reason, format!("document 1: {want}"));
        assert_eq!(
            want.to_string(),
            "spec.containers[1].name \"c\": duplicate container name"
        );
    }

    #[test]
    fn malformed_manifests_say_where() {
        let cases = [
            ("kind: Deployment\n", "kind \"Deployment\""),
            ("kind: Pod\nmetadata: {name: x}\nspec: {containers: []}\n", "spec.containers"),
            (
                "kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: Bad, image: i}]}\n",
                "spec.containers[0].name \"Bad\"",
            ),
            ("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n", "spec.containers[0].image"),
            ("kind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c, image: i}], restartPolicy: Sometimes}\n", "restartPolicy"),
            ("kind: Pod\nmetadata: [\n", "document 1"),
        ];
        for (text, want) in cases {
            let e = parse(Path::new("/m/bad.yaml"), text, "n").unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(e.to_string().starts_with("/m/bad.yaml: "), "{e}");
        }
    }
}
