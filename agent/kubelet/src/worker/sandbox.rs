//! The pod's sandbox: the newest ready one the runtime has for the pod, or a new one (with the pod's
//! directory, cgroup and, for `hostUsers: false`, its user namespace range made first).

use basalt_proto::cri;

use super::{now, Sandbox, Worker};
use crate::{podconfig, Error};

impl Worker {
    /// A pod network exists (the runtime's NetworkReady condition), as upstream's kubelet checks before a
    /// sandbox that is not on the host's network.
    async fn network_ready(
        &self,
        rt: &mut basalt_proto::RuntimeServiceClient<tonic::transport::Channel>,
    ) -> Result<(), Error> {
        let status = rt
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(Error::cri("Status"))?
            .into_inner()
            .status
            .unwrap_or_default();
        match status
            .conditions
            .iter()
            .find(|c| c.r#type == "NetworkReady")
        {
            Some(c) if !c.status => Err(Error::NetworkNotReady {
                reason: c.reason.clone(),
                message: c.message.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The ready sandbox of this pod, creating it (and removing dead ones) as needed.
    pub(super) async fn ensure_sandbox(&mut self) -> Result<String, Error> {
        let mut rt = self.cri.runtime.clone();
        let list = self
            .cri
            .pod_sandboxes(&self.uid())
            .await
            .map_err(Error::cri("ListPodSandbox"))?;
        self.userns = self.user_namespace().await?;
        let ready = crate::cri::newest_ready(&list);
        if let Some(s) = ready {
            if self.sandbox.as_ref().map(|x| &x.id) != Some(&s.id) {
                let ips = sandbox_ips(&mut rt, &s.id).await;
                self.sandbox = Some(Sandbox {
                    id: s.id.clone(),
                    ips,
                });
            }
            return Ok(s.id.clone());
        }
        let attempt = list
            .iter()
            .filter_map(|s| s.metadata.as_ref().map(|m| m.attempt + 1))
            .max()
            .unwrap_or(0);
        if !self.host_network() {
            self.network_ready(&mut rt).await?;
        }
        for old in &list {
            self.cri.stop_and_remove_sandbox(&old.id).await;
        }
        self.tracked.clear();
        let pod_dir = self.pod_dir();
        std::fs::create_dir_all(&pod_dir).map_err(|error| Error::Dir {
            path: pod_dir.clone(),
            error,
        })?;
        // What tears the pod down properly should its manifest go while the kubelet is not looking.
        crate::housekeeping::save_manifest(&pod_dir, &self.pod).map_err(|error| Error::Dir {
            path: pod_dir.join(crate::housekeeping::MANIFEST_FILE),
            error,
        })?;
        let cgroup = self.ctx().cgroup_parent;
        crate::pod_cgroup::ensure(&cgroup, &self.pod).map_err(|error| Error::PodCgroup {
            path: cgroup.clone(),
            error,
        })?;
        let config = podconfig::sandbox_config(&self.ctx(), attempt);
        std::fs::create_dir_all(&config.log_directory).map_err(|error| Error::Dir {
            path: config.log_directory.clone().into(),
            error,
        })?;
        let id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map_err(Error::cri("RunPodSandbox"))?
            .into_inner()
            .pod_sandbox_id;
        let ips = sandbox_ips(&mut rt, &id).await;
        self.sandbox = Some(Sandbox {
            id: id.clone(),
            ips,
        });
        self.started_at.get_or_insert_with(now);
        Ok(id)
    }

    /// For `hostUsers: false`: the pod's id range, kept from before or allocated now. Upstream's rules: no
    /// host namespace besides, and a runtime that says it supports user namespaces.
    async fn user_namespace(&self) -> Result<Option<cri::UserNamespace>, Error> {
        let spec = self.pod.spec.as_ref().expect("validated");
        if spec.host_users != Some(false) {
            return Ok(None);
        }
        for (field, host) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if host == Some(true) {
                return Err(Error::HostUsersWith { field });
            }
        }
        // Known from an earlier pass: every pass comes here, and the range never changes while the pod exists.
        if self.userns.is_some() {
            return Ok(self.userns.clone());
        }
        let status = self
            .cri
            .runtime
            .clone()
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(Error::cri("runtime Status"))?
            .into_inner();
        let supported = status
            .runtime_handlers
            .iter()
            .any(|h| h.name.is_empty() && h.features.as_ref().is_some_and(|f| f.user_namespaces));
        if !supported {
            return Err(Error::NoUserNamespaces);
        }
        Ok(Some(self.allocator.allocate(&self.uid())?))
    }
}

async fn sandbox_ips(
    rt: &mut basalt_proto::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> Vec<String> {
    let Ok(r) = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose: false,
        })
        .await
    else {
        return Vec::new();
    };
    let Some(net) = r.into_inner().status.and_then(|s| s.network) else {
        return Vec::new();
    };
    std::iter::once(net.ip)
        .filter(|ip| !ip.is_empty())
        .chain(net.additional_ips.into_iter().map(|p| p.ip))
        .collect()
}
