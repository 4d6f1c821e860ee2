//! Pod-level cgroups under the QoS hierarchy (`/kubepods`, `/kubepods/burstable`, `/kubepods/besteffort`):
//! created before the pod's sandbox with the pod's summed limits (memory and cpu, only when every container
//! has one) and cpu weight from the summed requests; removed after the pod. The cgroup type the runtime uses
//! for containers does the writing, so v1 and v2 hosts are handled alike.

use std::path::Path;

use basalt_cgroups::Cgroup;
use k8s_openapi::api::core::v1::Pod;
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

use crate::podconfig::{container_resources, ConfigError};

/// Why the pod's cgroup could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum PodCgroupError {
    /// A container's resources do not parse.
    #[error(transparent)]
    Resources(#[from] ConfigError),
    #[error("{0}")]
    Limits(#[from] oci_spec::OciSpecError),
    #[error("{0}")]
    Cgroup(#[from] basalt_cgroups::Error),
    #[error("{}: {error}", .path.display())]
    Dir {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// The pod's resources: what its cgroup is limited to.
pub fn pod_resources(pod: &Pod) -> Result<oci_spec::runtime::LinuxResources, PodCgroupError> {
    let spec = pod.spec.as_ref().expect("validated");
    let mut shares: u64 = 0;
    let mut quota: Option<i64> = Some(0);
    let mut memory: Option<i64> = Some(0);
    for c in &spec.containers {
        let r = container_resources(c)?;
        shares += r.cpu_shares.max(0) as u64;
        quota = match (quota, r.cpu_quota) {
            (Some(q), n) if n > 0 => Some(q + n),
            _ => None,
        };
        memory = match (memory, r.memory_limit_in_bytes) {
            (Some(m), n) if n > 0 => Some(m + n),
            _ => None,
        };
    }
    let mut cpu = LinuxCpuBuilder::default().shares(shares.max(2));
    if let Some(q) = quota.filter(|q| *q > 0) {
        cpu = cpu.quota(q).period(100_000u64);
    }
    let mut b = LinuxResourcesBuilder::default().cpu(cpu.build()?);
    if let Some(m) = memory.filter(|m| *m > 0) {
        b = b.memory(LinuxMemoryBuilder::default().limit(m).build()?);
    }
    Ok(b.build()?)
}

pub fn ensure(path: &str, pod: &Pod) -> Result<(), PodCgroupError> {
    let res = pod_resources(pod)?;
    let mut cg = Cgroup::create(path)?;
    // On v1 cgroups-rs makes directories only when a process joins; the pod cgroup holds none itself.
    // cpuset is left to the runtime: a v1 cpuset cgroup needs cpus/mems copied down before use.
    for (name, dir) in cg.v1_dirs() {
        if !name.contains("cpuset") {
            std::fs::create_dir_all(&dir).map_err(|error| PodCgroupError::Dir {
                path: dir.clone(),
                error,
            })?;
        }
    }
    Ok(cg.set(&res)?)
}

/// Where a hybrid host (v1 controllers) mounts the cgroup2 hierarchy.
const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

pub fn remove(path: &str) -> Result<(), PodCgroupError> {
    let mut cg = Cgroup::new(path)?;
    cg.destroy()?;
    // A hybrid host's cgroup2 tree holds no controller of ours, but runc (under containerd) puts its
    // containers' cgroups there as well, making this pod's level on the way, and leaves that to the kubelet.
    let hybrid = (!basalt_cgroups::unified())
        .then(|| Path::new(HYBRID_UNIFIED).join(path.trim_start_matches('/')));
    for dir in cg.v1_dirs().into_iter().map(|(_, d)| d).chain(hybrid) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(PodCgroupError::Dir { path: dir, error }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroup_is_made_with_summed_limits_and_removed() {
        let pod = crate::manifest::parse(
            Path::new("/m/q.yaml"),
            "kind: Pod\nmetadata: {name: q}\nspec:\n  containers:\n  - {name: a, image: i, resources: {limits: {memory: 32Mi, cpu: 200m}}}\n  - {name: b, image: i, resources: {limits: {memory: 16Mi, cpu: 300m}}}\n",
            "n",
        )
        .unwrap()
        .remove(0);
        let r = pod_resources(&pod).unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(48 << 20));
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(50_000));
        let path = format!("/basalt-test-qos/pod{}", std::process::id());
        ensure(&path, &pod).unwrap();
        let v2 = basalt_cgroups::unified();
        let mem = if v2 {
            Path::new("/sys/fs/cgroup")
                .join(path.trim_start_matches('/'))
                .join("memory.max")
        } else {
            Path::new("/sys/fs/cgroup/memory")
                .join(path.trim_start_matches('/'))
                .join("memory.limit_in_bytes")
        };
        assert_eq!(
            std::fs::read_to_string(&mem).unwrap().trim(),
            (48u64 << 20).to_string()
        );
        // On a hybrid host runc makes the pod's level in the cgroup2 tree too (for its containers' own).
        let in_unified = Path::new(HYBRID_UNIFIED).join(path.trim_start_matches('/'));
        if !v2 && Path::new(HYBRID_UNIFIED).join("cgroup.procs").is_file() {
            std::fs::create_dir_all(&in_unified).unwrap();
        }
        remove(&path).unwrap();
        assert!(!in_unified.exists(), "{} left behind", in_unified.display());
        let _ = std::fs::remove_dir(in_unified.parent().unwrap());
        assert!(
            !mem.parent().unwrap().exists(),
            "{} left behind",
            mem.parent().unwrap().display()
        );
        let _ = remove("/basalt-test-qos");
    }
}
