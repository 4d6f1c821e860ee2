//! The container's OCI spec, from the CRI request, its sandbox and its image (the translation itself is
//! `basalt-cri-oci`); here only what the agent knows: paths of the pod's namespaces and files.

use std::path::Path;

use basalt_proto::cri;
use tonic::{Code, Status};

use crate::store::SandboxRecord;

pub struct Generated {
    pub spec: oci_spec::runtime::Spec,
    pub user: cri::ContainerUser,
}

/// Where the image's STOPSIGNAL travels to StopContainer.
pub const STOP_SIGNAL_ANNOTATION: &str = "io.basalt.stop-signal";

/// `container` carries the request and what the agent resolved for it (a TARGET pid namespace, image volumes);
/// Localhost seccomp profiles are found under `<data_dir>/seccomp`.
pub fn generate(
    data_dir: &Path,
    sandbox: &SandboxRecord,
    container: &basalt_cri_oci::Container,
    image_config: &basalt_images::ImageConfig,
    rootfs: &Path,
) -> Result<Generated, Status> {
    let pod = &sandbox.pod_dir;
    let (hostname, resolv, hosts, shm) = (
        pod.join("hostname"),
        pod.join("resolv.conf"),
        pod.join("hosts"),
        pod.join("shm"),
    );
    let ns = |n: &str| sandbox.namespaces.get(n).map(|p| p.as_path());
    let sb = basalt_cri_oci::Sandbox {
        net_ns: ns("net"),
        ipc_ns: ns("ipc"),
        uts_ns: ns("uts"),
        pid_ns: ns("pid"),
        user_ns: ns("user"),
        hostname_file: Some(&hostname),
        resolv_conf: Some(&resolv),
        hosts_file: Some(&hosts),
        shm: sandbox.shm_mounted.then_some(shm.as_path()),
        ..basalt_cri_oci::Sandbox::new(&sandbox.id, &sandbox.config)
    };
    let image = basalt_cri_oci::Image {
        config: image_config,
        rootfs,
    };
    let opts = basalt_cri_oci::Options {
        cgroup_parent_default: sandbox.cgroup_parent.clone(),
        cgroup_v2: basalt_cgroups::unified(),
        seccomp_profile_root: data_dir.join("seccomp"),
        // The CRI's nil profile is Unconfined: whether a pod that asks for none gets RuntimeDefault is the
        // kubelet's choice (`--seccomp-default`, which ours makes, default-on), not the runtime's.
        seccomp_default: false,
        // A missing host path is a mistake to report, not a directory to make on the host.
        create_missing_host_paths: false,
        ..Default::default()
    };
    let g = basalt_cri_oci::container_spec(container, &sb, &image, &opts).map_err(|e| {
        let code = match e.kind {
            basalt_cri_oci::ErrorKind::InvalidArgument => Code::InvalidArgument,
            basalt_cri_oci::ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            basalt_cri_oci::ErrorKind::NotFound => Code::NotFound,
            basalt_cri_oci::ErrorKind::Unimplemented => Code::Unimplemented,
        };
        Status::new(code, e.to_string())
    })?;
    let mut spec = g.spec;
    if !image_config.config.stop_signal.is_empty() {
        let mut ann = spec.annotations().clone().unwrap_or_default();
        ann.insert(
            STOP_SIGNAL_ANNOTATION.into(),
            image_config.config.stop_signal.clone(),
        );
        spec.set_annotations(Some(ann));
    }
    let user = cri::ContainerUser {
        linux: Some((&g.user).into()),
    };
    Ok(Generated { spec, user })
}
