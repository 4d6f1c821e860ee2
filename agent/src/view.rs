//! How the agent's records and the monitors' live statuses look through the CRI: pure conversions, shared by
//! the calls that report sandboxes and containers.

use std::collections::HashMap;

use basalt_proto::cri;
use basalt_shim::protocol::{ContainerStatus, State as ShimState};

use crate::store::{ContainerRecord, SandboxRecord};

/// Monitor state → CRI container state.
pub fn container_state(s: ShimState) -> cri::ContainerState {
    match s {
        ShimState::Created => cri::ContainerState::ContainerCreated,
        ShimState::Running => cri::ContainerState::ContainerRunning,
        ShimState::Exited => cri::ContainerState::ContainerExited,
    }
}

/// The CRI state of a container with this live status; unknown when its monitor and exit record are gone.
pub fn cri_state(st: Option<&ContainerStatus>) -> cri::ContainerState {
    match st {
        Some(s) => container_state(s.state),
        None => cri::ContainerState::ContainerUnknown,
    }
}

/// A ContainerStatus from the record and the live status (kubelet's reasons for an exit).
pub fn container_status(
    c: &ContainerRecord,
    live: Option<&ContainerStatus>,
) -> cri::ContainerStatus {
    let state = cri_state(live);
    let (reason, message) = match live {
        Some(s) if s.state == ShimState::Exited => {
            if s.oom_killed {
                ("OOMKilled", String::new())
            } else if s.exit_code == 0 {
                ("Completed", String::new())
            } else {
                ("Error", String::new())
            }
        }
        None => (
            "Unknown",
            "the pod monitor holding this container is gone".to_owned(),
        ),
        _ => ("", String::new()),
    };
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: state as i32,
        created_at: c.created_at,
        started_at: live.map(|s| s.started_at).unwrap_or(0),
        finished_at: live.map(|s| s.finished_at).unwrap_or(0),
        exit_code: live.map(|s| s.exit_code).unwrap_or(0),
        image: Some(cri::ImageSpec {
            image: c.image.clone(),
            ..Default::default()
        }),
        image_ref: c.image_ref.clone(),
        reason: reason.into(),
        message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.to_string_lossy().into_owned(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| cri::ContainerResources {
                linux: Some(r),
                ..Default::default()
            }),
        image_id: c.image_id.clone(),
        user: c.user.clone(),
    }
}

/// A container as ListContainers shows it.
pub fn container(c: ContainerRecord, state: cri::ContainerState) -> cri::Container {
    cri::Container {
        id: c.id,
        pod_sandbox_id: c.sandbox_id,
        metadata: c.config.metadata,
        image: Some(cri::ImageSpec {
            image: c.image,
            ..Default::default()
        }),
        image_ref: c.image_ref,
        state: state as i32,
        created_at: c.created_at,
        labels: c.config.labels,
        annotations: c.config.annotations,
        image_id: c.image_id,
    }
}

/// A PodSandboxStatus from the record, in `state`.
pub fn sandbox_status(rec: &SandboxRecord, state: cri::PodSandboxState) -> cri::PodSandboxStatus {
    let mut ips = rec.ips.iter();
    cri::PodSandboxStatus {
        id: rec.id.clone(),
        metadata: rec.config.metadata.clone(),
        state: state as i32,
        created_at: rec.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: ips.next().cloned().unwrap_or_default(),
            additional_ips: ips.map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(namespace_options(&rec.config)),
            }),
        }),
        labels: rec.config.labels.clone(),
        annotations: rec.config.annotations.clone(),
        runtime_handler: rec.runtime_handler.clone(),
    }
}

/// A sandbox as ListPodSandbox shows it.
pub fn sandbox(rec: SandboxRecord, state: cri::PodSandboxState) -> cri::PodSandbox {
    cri::PodSandbox {
        id: rec.id,
        metadata: rec.config.metadata,
        state: state as i32,
        created_at: rec.created_at,
        labels: rec.config.labels,
        annotations: rec.config.annotations,
        runtime_handler: rec.runtime_handler,
    }
}

/// A status's `info`: `key` with `value` as JSON when the caller asked for a verbose answer, else nothing.
pub fn verbose_info(
    verbose: bool,
    key: &str,
    value: impl FnOnce() -> serde_json::Value,
) -> HashMap<String, String> {
    let mut info = HashMap::new();
    if verbose {
        info.insert(key.to_owned(), value().to_string());
    }
    info
}

/// Every label of the selector is on the object, with the same value.
pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `name@digest`, the form kubelet reports as a container's imageID.
pub fn repo_digest(image: &basalt_images::ImageRecord) -> String {
    let repo = image
        .name
        .split('@')
        .next()
        .map(|n| match n.rfind(':') {
            Some(i) if !n[i..].contains('/') => &n[..i],
            _ => n,
        })
        .unwrap_or(&image.name);
    format!("{repo}@{}", image.digest)
}

/// The sandbox's namespace options as the kubelet gave them (all POD when it gave none).
pub fn namespace_options(config: &cri::PodSandboxConfig) -> cri::NamespaceOption {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// The host uid and gid of the root of the pod's user namespace.
pub fn pod_root_host_ids(config: &cri::PodSandboxConfig) -> Option<(u32, u32)> {
    let u = namespace_options(config).userns_options?;
    let host = |maps: &[cri::IdMapping]| {
        maps.iter()
            .find(|m| m.container_id == 0 && m.length > 0)
            .map(|m| m.host_id)
    };
    Some((host(&u.uids)?, host(&u.gids)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(state: ShimState, exit_code: i32, oom_killed: bool) -> ContainerStatus {
        ContainerStatus {
            id: "c".into(),
            state,
            pid: 0,
            created_at: 1,
            started_at: 2,
            finished_at: 3,
            exit_code,
            oom_killed,
            cgroup_path: String::new(),
        }
    }

    fn record() -> ContainerRecord {
        ContainerRecord {
            id: "c".into(),
            sandbox_id: "s".into(),
            config: cri::ContainerConfig::default(),
            created_at: 1,
            image: "busybox".into(),
            image_id: "sha256:1".into(),
            image_ref: "busybox@sha256:2".into(),
            log_path: "/var/log/pods/p/c/0.log".into(),
            bundle: "/run/basalt/bundles/c".into(),
            rootfs: "/rootfs".into(),
            user: None,
            final_status: None,
            image_roots: Vec::new(),
        }
    }

    #[test]
    fn exits_get_kubelets_reasons() {
        let reason = |l: Option<ContainerStatus>| {
            let s = container_status(&record(), l.as_ref());
            (cri::ContainerState::try_from(s.state).unwrap(), s.reason)
        };
        use cri::ContainerState::*;
        for (state, code, oom, want) in [
            (ShimState::Running, 0, false, (ContainerRunning, "")),
            (ShimState::Exited, 0, false, (ContainerExited, "Completed")),
            (ShimState::Exited, 1, false, (ContainerExited, "Error")),
            (ShimState::Exited, 137, true, (ContainerExited, "OOMKilled")),
        ] {
            let got = reason(Some(live(state, code, oom)));
            assert_eq!(got, (want.0, want.1.to_owned()), "{state:?} {code} {oom}");
        }
        assert_eq!(reason(None), (ContainerUnknown, "Unknown".into()));
        let listed = container(record(), cri_state(None));
        assert_eq!(
            (listed.state, listed.image_ref.as_str()),
            (ContainerUnknown as i32, "busybox@sha256:2")
        );
    }

    #[test]
    fn label_selectors_and_image_references() {
        let labels: HashMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert!(labels_match(&labels, &HashMap::new()));
        assert!(labels_match(&labels, &[("a".into(), "1".into())].into()));
        assert!(!labels_match(&labels, &[("a".into(), "2".into())].into()));
        assert!(!labels_match(&labels, &[("c".into(), "1".into())].into()));
        let d = basalt_images::Digest::of(b"manifest");
        let image = |name: &str| -> basalt_images::ImageRecord {
            serde_json::from_value(serde_json::json!({
                "name": name, "digest": d, "manifest": d, "config": d, "layers": [], "diff_ids": [],
                "size": 0, "pinned": false
            }))
            .unwrap()
        };
        assert_eq!(
            repo_digest(&image("docker.io/library/busybox:1.36")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            repo_digest(&image("reg:5000/busybox")),
            format!("reg:5000/busybox@{d}")
        );
        assert_eq!(
            repo_digest(&image(&format!("reg:5000/busybox@{d}"))),
            format!("reg:5000/busybox@{d}")
        );
    }
}
