//! `linux.resources` (CPU, memory, hugepages, unified) and `linux.cgroupsPath`.

use std::collections::HashMap;
use std::path::{Component, Path};

use basalt_proto::cri::LinuxContainerResources;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use crate::error::{Error, Result};

const F: &str = "linux.resources";

/// The resources to put in `linux.resources` (devices are added by the caller) and `process.oomScoreAdj`.
pub fn resources(
    r: Option<&LinuxContainerResources>,
    cgroup_v2: bool,
) -> Result<(LinuxResources, Option<i32>)> {
    let mut out = LinuxResources::default();
    let Some(r) = r else {
        return Ok((out, None));
    };
    let non_negative = |name: &str, v: i64| {
        if v < 0 {
            Err(Error::invalid(
                format!("{F}.{name}"),
                v,
                "must not be negative",
            ))
        } else {
            Ok(v)
        }
    };

    let mut cpu = LinuxCpu::default();
    if non_negative("cpu_shares", r.cpu_shares)? > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
    }
    if non_negative("cpu_period", r.cpu_period)? > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
    }
    // -1 is "no limit" to the kernel; 0 is "not specified" to the CRI.
    if r.cpu_quota < -1 {
        return Err(Error::invalid(
            format!("{F}.cpu_quota"),
            r.cpu_quota,
            "must be -1 or more",
        ));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(cpuset(&format!("{F}.cpuset_cpus"), &r.cpuset_cpus)?));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(cpuset(&format!("{F}.cpuset_mems"), &r.cpuset_mems)?));
    }
    if cpu != LinuxCpu::default() {
        out.set_cpu(Some(cpu));
    }

    let mut mem = LinuxMemory::default();
    let limit = non_negative("memory_limit_in_bytes", r.memory_limit_in_bytes)?;
    if r.memory_swap_limit_in_bytes < -1 {
        return Err(Error::invalid(
            format!("{F}.memory_swap_limit_in_bytes"),
            r.memory_swap_limit_in_bytes,
            "must be -1 or more",
        ));
    }
    if limit > 0 {
        mem.set_limit(Some(limit));
    }
    if r.memory_swap_limit_in_bytes != 0 {
        if limit > 0 && r.memory_swap_limit_in_bytes > 0 && r.memory_swap_limit_in_bytes < limit {
            return Err(Error::invalid(
                format!("{F}.memory_swap_limit_in_bytes"),
                r.memory_swap_limit_in_bytes,
                format!("is memory+swap and must not be below memory_limit_in_bytes ({limit})"),
            ));
        }
        mem.set_swap(Some(r.memory_swap_limit_in_bytes));
    } else if limit > 0 {
        // containerd: memory+swap = memory, so a limited container does not silently spill into swap.
        mem.set_swap(Some(limit));
    }
    if mem != LinuxMemory::default() {
        out.set_memory(Some(mem));
    }

    if !r.hugepage_limits.is_empty() {
        let mut limits = Vec::new();
        for (i, h) in r.hugepage_limits.iter().enumerate() {
            if !valid_page_size(&h.page_size) {
                return Err(Error::invalid(
                    format!("{F}.hugepage_limits[{i}].page_size"),
                    &h.page_size,
                    "not a size like 2MB or 1GB",
                ));
            }
            let limit = i64::try_from(h.limit).map_err(|_| {
                Error::invalid(
                    format!("{F}.hugepage_limits[{i}].limit"),
                    h.limit,
                    "too large",
                )
            })?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone());
            l.set_limit(limit);
            limits.push(l);
        }
        out.set_hugepage_limits(Some(limits));
    }

    if !r.unified.is_empty() {
        if !cgroup_v2 {
            let mut keys: Vec<&String> = r.unified.keys().collect();
            keys.sort();
            return Err(Error::invalid(
                format!("{F}.unified"),
                keys,
                "cgroup v2 settings, but this node uses cgroup v1",
            ));
        }
        for k in r.unified.keys() {
            if k.is_empty() || k.contains('/') || !k.contains('.') {
                return Err(Error::invalid(
                    format!("{F}.unified"),
                    k,
                    "not a cgroup v2 file name",
                ));
            }
        }
        out.set_unified(Some(
            r.unified.clone().into_iter().collect::<HashMap<_, _>>(),
        ));
    }

    let oom = if r.oom_score_adj != 0 {
        if !(-1000..=1000).contains(&r.oom_score_adj) {
            return Err(Error::invalid(
                format!("{F}.oom_score_adj"),
                r.oom_score_adj,
                "must be between -1000 and 1000",
            ));
        }
        Some(r.oom_score_adj as i32)
    } else {
        None
    };
    Ok((out, oom))
}

fn cpuset(field: &str, s: &str) -> Result<String> {
    let ok = s.split(',').all(|part| {
        let mut ends = part.splitn(2, '-');
        let a = ends.next().unwrap_or("");
        let b = ends.next();
        let num = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
        num(a) && b.is_none_or(num)
    });
    if ok {
        Ok(s.to_owned())
    } else {
        Err(Error::invalid(field, s, "not a list like 0-3,5"))
    }
}

fn valid_page_size(s: &str) -> bool {
    let Some(rest) = s.strip_suffix('B') else {
        return false;
    };
    let digits = rest.trim_end_matches(['K', 'M', 'G', 'T', 'P']);
    rest.len() - digits.len() <= 1
        && !digits.is_empty()
        && digits.bytes().all(|c| c.is_ascii_digit())
}

/// `linux.cgroupsPath`. cgroupfs: `<parent>/<id>`; systemd: `<parent slice>:basalt:<id>` (the runtime makes
/// that `<slice path>/basalt-<id>.scope`). The kubelet gives the parent in cgroupfs syntax either way.
pub fn cgroups_path(parent: &str, id: &str, systemd: bool) -> Result<String> {
    const FIELD: &str = "linux.cgroup_parent";
    if Path::new(parent)
        .components()
        .any(|c| c == Component::ParentDir)
        || parent.contains(':')
    {
        return Err(Error::invalid(
            FIELD,
            parent,
            "must not contain '..' or ':'",
        ));
    }
    if systemd {
        let slice = parent
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        if !slice.ends_with(".slice") {
            return Err(Error::invalid(
                FIELD,
                parent,
                "with systemd cgroups this must name a .slice",
            ));
        }
        return Ok(format!("{slice}:basalt:{id}"));
    }
    let parent = parent.trim_end_matches('/');
    if parent.is_empty() {
        return Ok(format!("/{id}"));
    }
    if parent.starts_with('/') {
        Ok(format!("{parent}/{id}"))
    } else {
        Ok(format!("/{parent}/{id}"))
    }
}
