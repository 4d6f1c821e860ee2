//! Pods nobody wants any more: a sandbox or a pod directory whose pod is in no source. Its manifest was
//! removed while the kubelet was down, or its teardown was cut short by a restart. As upstream's kubelet does
//! in its housekeeping, such a pod is torn down (containers, sandbox, cgroup, volumes, its user namespace
//! range) once every source has been seen, at start and then periodically.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::podconfig::POD_UID;

/// The copy of its manifest a worker keeps in the pod's directory: what tears the pod down (with its own
/// grace periods, preStop hooks and QoS cgroup) when the manifest itself is gone.
pub const MANIFEST_FILE: &str = "pod.json";

/// Writes `pod` into its directory (replacing what was there, never half-written).
pub fn save_manifest(pod_dir: &Path, pod: &Pod) -> std::io::Result<()> {
    let tmp = pod_dir.join(format!(".{MANIFEST_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec(pod).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, pod_dir.join(MANIFEST_FILE))
}

/// The pods to tear down: every sandbox's pod and every pod directory whose UID `wanted` does not hold,
/// each as its saved manifest if it has one, else as much of a pod as the sandbox tells (a pod without
/// containers: the sandbox's stop ends them).
pub fn orphans(
    sandboxes: &[basalt_proto::cri::PodSandbox],
    pods_root: &Path,
    wanted: &dyn Fn(&str) -> bool,
) -> BTreeMap<String, Pod> {
    let mut out = BTreeMap::new();
    for s in sandboxes {
        let meta = s.metadata.clone().unwrap_or_default();
        let uid = s.labels.get(POD_UID).cloned().unwrap_or(meta.uid);
        if uid.is_empty() || wanted(&uid) {
            continue;
        }
        out.entry(uid.clone())
            .or_insert_with(|| bare_pod(&uid, Some(&meta.name), Some(&meta.namespace)));
    }
    for e in std::fs::read_dir(pods_root).into_iter().flatten().flatten() {
        let Some(uid) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !e.path().is_dir() || wanted(&uid) {
            continue;
        }
        out.entry(uid.clone())
            .or_insert_with(|| bare_pod(&uid, None, None));
    }
    for (uid, pod) in out.iter_mut() {
        if let Some(saved) = std::fs::read(pods_root.join(uid).join(MANIFEST_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Pod>(&b).ok())
            .filter(|p| p.metadata.uid.as_deref() == Some(uid) && p.spec.is_some())
        {
            *pod = saved;
        }
    }
    out
}

fn bare_pod(uid: &str, name: Option<&str>, namespace: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            uid: Some(uid.to_owned()),
            name: name.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            ..Default::default()
        },
        spec: Some(PodSpec::default()),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn sandbox(uid: &str, name: &str) -> basalt_proto::cri::PodSandbox {
        basalt_proto::cri::PodSandbox {
            id: format!("sb-{uid}"),
            metadata: Some(basalt_proto::cri::PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            labels: HashMap::from([(POD_UID.to_owned(), uid.to_owned())]),
            ..Default::default()
        }
    }

    #[test]
    fn unwanted_sandboxes_and_pod_dirs_are_orphans_with_their_saved_manifest() {
        let root = tempfile::tempdir().unwrap();
        for uid in ["kept", "gone-saved", "dir-only"] {
            std::fs::create_dir_all(root.path().join(uid)).unwrap();
        }
        let mut saved = bare_pod("gone-saved", Some("web-node1"), Some("default"));
        saved
            .spec
            .as_mut()
            .unwrap()
            .termination_grace_period_seconds = Some(7);
        save_manifest(&root.path().join("gone-saved"), &saved).unwrap();
        let sandboxes = [
            sandbox("kept", "a"),
            sandbox("gone-saved", "web-node1"),
            sandbox("no-dir", "b"),
        ];
        let wanted = |uid: &str| uid == "kept";
        let o = orphans(&sandboxes, root.path(), &wanted);
        assert_eq!(
            o.keys().map(String::as_str).collect::<Vec<_>>(),
            ["dir-only", "gone-saved", "no-dir"]
        );
        assert_eq!(
            o["gone-saved"], saved,
            "the saved manifest, grace period and all"
        );
        assert_eq!(o["no-dir"].metadata.name.as_deref(), Some("b"));
        assert_eq!(o["dir-only"].metadata.uid.as_deref(), Some("dir-only"));
        // A manifest of another pod in the directory is not trusted.
        save_manifest(&root.path().join("dir-only"), &saved).unwrap();
        let o = orphans(&[], root.path(), &wanted);
        assert_eq!(o["dir-only"].metadata.uid.as_deref(), Some("dir-only"));
        assert!(o["dir-only"].metadata.name.is_none());
    }
}
