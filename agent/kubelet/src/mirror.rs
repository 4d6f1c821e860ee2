//! Mirror pods, as upstream's kubelet keeps them: each static pod (from the manifest directory or URL) has
//! a pod of the same name in the apiserver, annotated `kubernetes.io/config.mirror` with the static pod's
//! hash and owned by the Node, so that `kubectl get pods` shows what the node runs on its own. Its status
//! is the static pod's. A mirror pod deleted by a user comes back; one whose hash is stale is replaced;
//! one with no static pod left is deleted. A mirror pod is never run: the API pod source skips it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions};

use crate::cluster::Cluster;
use crate::manifest::{annotation, is_mirror, is_static, CONFIG_HASH, CONFIG_MIRROR};
use crate::Kubelet;

/// How often the mirror pods are compared with the static ones.
const SYNC: Duration = Duration::from_secs(2);

/// The mirror of static pod `p` on node `node` (uid `node_uid`).
fn mirror_of(p: &Pod, node: &str, node_uid: &str) -> Pod {
    let mut annotations = p.metadata.annotations.clone().unwrap_or_default();
    let hash = annotations.get(CONFIG_HASH).cloned().unwrap_or_default();
    annotations.insert(CONFIG_MIRROR.into(), hash);
    Pod {
        metadata: ObjectMeta {
            name: p.metadata.name.clone(),
            namespace: p.metadata.namespace.clone(),
            labels: p.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: node.into(),
                uid: node_uid.into(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        },
        spec: p.spec.clone(),
        status: None,
    }
}

impl Cluster {
    /// Keeps the mirror pods until the process ends.
    pub(crate) async fn mirror_pods(self: Arc<Self>, kubelet: Arc<Kubelet>) {
        loop {
            tokio::time::sleep(SYNC).await;
            if let Err(e) = self.sync_mirrors(&kubelet).await {
                tracing::warn!(error = %e, "mirror pods");
            }
        }
    }

    async fn sync_mirrors(&self, kubelet: &Kubelet) -> Result<(), kube::Error> {
        let Some(node_uid) = self.node_uid() else {
            return Ok(());
        };
        let node = self.node_name();
        let statics: Vec<Pod> = kubelet.pods().into_iter().filter(is_static).collect();
        let api: Api<Pod> = Api::all(self.client());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let mirrors: Vec<Pod> = api
            .list(&lp)
            .await?
            .items
            .into_iter()
            .filter(is_mirror)
            .collect();
        let same = |a: &Pod, b: &Pod| {
            a.metadata.name == b.metadata.name && a.metadata.namespace == b.metadata.namespace
        };
        for m in &mirrors {
            let wanted = statics.iter().find(|s| same(s, m)).is_some_and(|s| {
                annotation(s, CONFIG_HASH) == annotation(m, CONFIG_MIRROR)
                    && m.metadata.deletion_timestamp.is_none()
            });
            if !wanted {
                self.delete_mirror(m).await?;
            }
        }
        for s in &statics {
            let current = mirrors.iter().any(|m| {
                same(s, m)
                    && annotation(s, CONFIG_HASH) == annotation(m, CONFIG_MIRROR)
                    && m.metadata.deletion_timestamp.is_none()
            });
            if current {
                continue;
            }
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client(), &ns);
            match api
                .create(&PostParams::default(), &mirror_of(s, &node, &node_uid))
                .await
            {
                Ok(_) => {
                    tracing::info!(pod = ?s.metadata.name, "mirror pod created");
                    if let Some(uid) = s.metadata.uid.clone() {
                        self.remirrored.lock().unwrap().insert(uid);
                    }
                }
                // The stale one is not gone yet: the next pass makes it.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn delete_mirror(&self, m: &Pod) -> Result<(), kube::Error> {
        let ns = m.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client(), &ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: m.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = m.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
