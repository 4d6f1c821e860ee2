//! The CSI Identity, Controller and Node services on top of the [`Store`]: request checks with the spec's gRPC
//! codes (InvalidArgument for a missing or bad field, NotFound for an unknown ID, AlreadyExists for a name
//! reused with other parameters, OutOfRange for a capacity we cannot give, Aborted for a stale page token),
//! then one store call under the lock, off the async threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use basalt_proto::csi::plugin_capability::{self as pcap};
use basalt_proto::csi::volume_capability::{access_mode::Mode, AccessType};
use basalt_proto::csi::{
    self as api, controller_service_capability as ccap, node_service_capability as ncap,
};
use nix::mount::MsFlags;
use tonic::{Request, Response, Status};

use crate::index::{Snapshot, Source, Volume};
use crate::store::{self, clean_target, Error, NewVolume, PublishRequest, Store};

/// The topology segment of a volume and a node: volumes live on the node that made them.
pub const TOPOLOGY_KEY: &str = "topology.basalt.io/node";

#[derive(Clone)]
pub struct Plugin {
    store: Arc<Mutex<Store>>,
    pub driver_name: String,
    pub node_id: String,
    pub max_volumes: i64,
}

impl Plugin {
    pub fn new(store: Store, driver_name: String, node_id: String, max_volumes: i64) -> Plugin {
        Plugin {
            store: Arc::new(Mutex::new(store)),
            driver_name,
            node_id,
            max_volumes,
        }
    }

    /// Runs `f` on the store under its lock, on a blocking thread (it mounts, copies and fsyncs).
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s)
        })
        .await
        .map_err(|e| Status::internal(format!("store task: {e}")))?
        .map_err(status)
    }

    fn topology(&self) -> api::Topology {
        api::Topology {
            segments: HashMap::from([(TOPOLOGY_KEY.to_owned(), self.node_id.clone())]),
        }
    }

    fn volume_message(&self, id: &str, v: &Volume) -> api::Volume {
        api::Volume {
            capacity_bytes: v.capacity as i64,
            volume_id: id.to_owned(),
            volume_context: HashMap::from([("kind".to_owned(), v.kind.name().to_owned())]),
            content_source: v.source.as_ref().map(|s| api::VolumeContentSource {
                r#type: Some(match s {
                    Source::Snapshot(id) => api::volume_content_source::Type::Snapshot(
                        api::volume_content_source::SnapshotSource {
                            snapshot_id: id.clone(),
                        },
                    ),
                    Source::Volume(id) => api::volume_content_source::Type::Volume(
                        api::volume_content_source::VolumeSource {
                            volume_id: id.clone(),
                        },
                    ),
                }),
            }),
            accessible_topology: vec![self.topology()],
        }
    }

    fn published_nodes(&self, v: &Volume) -> Vec<String> {
        if v.publishes.is_empty() {
            Vec::new()
        } else {
            vec![self.node_id.clone()]
        }
    }
}

fn status(e: Error) -> Status {
    let m = e.to_string();
    match e {
        Error::InvalidArgument(_) => Status::invalid_argument(m),
        Error::NotFound(_) => Status::not_found(m),
        Error::AlreadyExists(_) => Status::already_exists(m),
        Error::OutOfRange(_) => Status::out_of_range(m),
        Error::ResourceExhausted(_) => Status::resource_exhausted(m),
        Error::FailedPrecondition(_) => Status::failed_precondition(m),
        Error::Io { .. } => Status::internal(m),
    }
}

fn required(field: &str, v: &str) -> Result<(), Status> {
    if v.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

fn snapshot_message(id: &str, s: &Snapshot) -> api::Snapshot {
    api::Snapshot {
        size_bytes: s.size as i64,
        snapshot_id: id.to_owned(),
        source_volume_id: s.source_volume.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: s.created_secs,
            nanos: s.created_nanos,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

/// Checks one capability's shape (InvalidArgument when a required part is missing); returns whether it asks
/// for raw block, or why this plugin cannot serve it.
fn capability(field: &str, c: &api::VolumeCapability) -> Result<Result<bool, String>, Status> {
    let block = match &c.access_type {
        None => {
            return Err(Status::invalid_argument(format!(
                "{field}.access_type is required"
            )))
        }
        Some(AccessType::Block(_)) => true,
        Some(AccessType::Mount(_)) => false,
    };
    let mode = c
        .access_mode
        .as_ref()
        .map(|m| m.mode())
        .unwrap_or(Mode::Unknown);
    if mode == Mode::Unknown {
        return Err(Status::invalid_argument(format!(
            "{field}.access_mode is required"
        )));
    }
    if matches!(
        mode,
        Mode::MultiNodeReaderOnly | Mode::MultiNodeSingleWriter | Mode::MultiNodeMultiWriter
    ) {
        return Ok(Err(format!(
            "{field}.access_mode {}: a hostpath volume lives on one node",
            mode.as_str_name()
        )));
    }
    if let Some(AccessType::Mount(m)) = &c.access_type {
        if !matches!(m.fs_type.as_str(), "" | "ext4" | "xfs") {
            return Ok(Err(format!(
                "{field}.mount.fs_type {:?}: volumes are directories on ext4 or xfs",
                m.fs_type
            )));
        }
    }
    Ok(Ok(block))
}

/// All of `caps` must be servable and agree on block or filesystem; returns whether they ask for block.
fn capabilities(field: &str, caps: &[api::VolumeCapability]) -> Result<bool, Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    let mut block = None;
    for (i, c) in caps.iter().enumerate() {
        let b = capability(&format!("{field}[{i}]"), c)?.map_err(Status::invalid_argument)?;
        if block.is_some_and(|x| x != b) {
            return Err(Status::invalid_argument(format!(
                "{field}: block and mount access types cannot be asked for together"
            )));
        }
        block = Some(b);
    }
    Ok(block == Some(true))
}

/// Mount flags of a published filesystem volume; anything else is refused by name.
fn mount_flags(flags: &[String]) -> Result<MsFlags, Status> {
    if flags.iter().map(|f| f.len() + 1).sum::<usize>() > 4096 {
        return Err(Status::invalid_argument(
            "volume_capability.mount.mount_flags: over 4 KiB",
        ));
    }
    let mut out = MsFlags::empty();
    for f in flags {
        out |= match f.as_str() {
            "ro" => MsFlags::MS_RDONLY,
            "rw" | "defaults" | "bind" => MsFlags::empty(),
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            "sync" => MsFlags::MS_SYNCHRONOUS,
            "dirsync" => MsFlags::MS_DIRSYNC,
            other => {
                return Err(Status::invalid_argument(format!(
                    "volume_capability.mount.mount_flags: {other:?} is not a bind mount flag (ro, rw, nosuid, \
                     nodev, noexec, noatime, nodiratime, relatime, strictatime, sync, dirsync)"
                )))
            }
        };
    }
    Ok(out)
}

/// `starting_token` of a list call: empty, or the ID the next page starts at.
fn page_start(token: &str, max_entries: i32) -> Result<Option<String>, Status> {
    if max_entries < 0 {
        return Err(Status::invalid_argument(format!(
            "max_entries {max_entries}: must not be negative"
        )));
    }
    if token.is_empty() {
        return Ok(None);
    }
    if !store::is_id(token) {
        return Err(Status::aborted(format!(
            "starting_token {token:?} is not one this plugin handed out"
        )));
    }
    Ok(Some(token.to_owned()))
}

/// One page of `items` (sorted by ID) from `start`: the page and the next token.
fn page<T: Clone>(
    items: &BTreeMap<String, T>,
    start: Option<String>,
    max: i32,
) -> (Vec<(String, T)>, String) {
    let mut it = items
        .range(start.unwrap_or_default()..)
        .map(|(k, v)| (k.clone(), v.clone()));
    let n = if max == 0 { usize::MAX } else { max as usize };
    let page: Vec<_> = it.by_ref().take(n).collect();
    let next = it.next().map(|(k, _)| k).unwrap_or_default();
    (page, next)
}

#[tonic::async_trait]
impl api::identity_server::Identity for Plugin {
    async fn get_plugin_info(
        &self,
        _: Request<api::GetPluginInfoRequest>,
    ) -> Result<Response<api::GetPluginInfoResponse>, Status> {
        Ok(Response::new(api::GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<api::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<api::GetPluginCapabilitiesResponse>, Status> {
        let online = self.run(|s| Ok(s.online_expansion())).await?;
        let service = |t: pcap::service::Type| api::PluginCapability {
            r#type: Some(pcap::Type::Service(pcap::Service { r#type: t as i32 })),
        };
        Ok(Response::new(api::GetPluginCapabilitiesResponse {
            capabilities: vec![
                service(pcap::service::Type::ControllerService),
                service(pcap::service::Type::VolumeAccessibilityConstraints),
                api::PluginCapability {
                    r#type: Some(pcap::Type::VolumeExpansion(pcap::VolumeExpansion {
                        r#type: if online {
                            pcap::volume_expansion::Type::Online as i32
                        } else {
                            pcap::volume_expansion::Type::Offline as i32
                        },
                    })),
                },
            ],
        }))
    }

    async fn probe(
        &self,
        _: Request<api::ProbeRequest>,
    ) -> Result<Response<api::ProbeResponse>, Status> {
        // The store was opened (and recovered) before the socket was bound: serving means ready.
        Ok(Response::new(api::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl api::controller_server::Controller for Plugin {
    async fn create_volume(
        &self,
        req: Request<api::CreateVolumeRequest>,
    ) -> Result<Response<api::CreateVolumeResponse>, Status> {
        let r = req.into_inner();
        required("name", &r.name)?;
        let block = capabilities("volume_capabilities", &r.volume_capabilities)?;
        let (capacity, limit) = match &r.capacity_range {
            None => (0, 0),
            Some(c) => {
                if c.required_bytes < 0 || c.limit_bytes < 0 {
                    return Err(Status::invalid_argument(format!(
                        "capacity_range {}..{}: must not be negative",
                        c.required_bytes, c.limit_bytes
                    )));
                }
                if c.limit_bytes > 0 && c.required_bytes > c.limit_bytes {
                    return Err(Status::invalid_argument(format!(
                        "capacity_range: required_bytes {} exceeds limit_bytes {}",
                        c.required_bytes, c.limit_bytes
                    )));
                }
                (c.required_bytes as u64, c.limit_bytes as u64)
            }
        };
        let mut parameters = BTreeMap::new();
        for (k, v) in &r.parameters {
            // What external-provisioner adds with --extra-create-metadata is information, not a request.
            if !k.starts_with("csi.storage.k8s.io/") {
                return Err(Status::invalid_argument(format!(
                    "parameters: unknown key {k:?} (this plugin takes none)"
                )));
            }
            parameters.insert(k.clone(), v.clone());
        }
        if let Some(t) = &r.accessibility_requirements {
            let ours = self.topology();
            if !t.requisite.is_empty() && !t.requisite.contains(&ours) {
                return Err(Status::resource_exhausted(format!(
                    "accessibility_requirements.requisite: none is this node ({TOPOLOGY_KEY}={})",
                    self.node_id
                )));
            }
        }
        let source = match r.volume_content_source.as_ref().map(|s| &s.r#type) {
            None => None,
            Some(None) => {
                return Err(Status::invalid_argument(
                    "volume_content_source: no type set",
                ))
            }
            Some(Some(api::volume_content_source::Type::Snapshot(s))) => {
                required("volume_content_source.snapshot.snapshot_id", &s.snapshot_id)?;
                Some(Source::Snapshot(s.snapshot_id.clone()))
            }
            Some(Some(api::volume_content_source::Type::Volume(v))) => {
                required("volume_content_source.volume.volume_id", &v.volume_id)?;
                Some(Source::Volume(v.volume_id.clone()))
            }
        };
        let max = self.max_volumes;
        let name = r.name.clone();
        let (id, v) = self
            .run(move |s| {
                if max > 0
                    && s.index.volume_by_name(&name).is_none()
                    && s.index.volumes.len() as i64 >= max
                {
                    return Err(Error::ResourceExhausted(format!(
                        "this node takes at most {max} volumes (max-volumes-per-node)"
                    )));
                }
                s.create_volume(NewVolume {
                    name,
                    capacity,
                    limit,
                    block,
                    source,
                    parameters,
                })
            })
            .await?;
        Ok(Response::new(api::CreateVolumeResponse {
            volume: Some(self.volume_message(&id, &v)),
        }))
    }

    async fn delete_volume(
        &self,
        req: Request<api::DeleteVolumeRequest>,
    ) -> Result<Response<api::DeleteVolumeResponse>, Status> {
        let id = req.into_inner().volume_id;
        required("volume_id", &id)?;
        self.run(move |s| s.delete_volume(&id)).await?;
        Ok(Response::new(api::DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _: Request<api::ControllerPublishVolumeRequest>,
    ) -> Result<Response<api::ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "hostpath volumes need no attach (no PUBLISH_UNPUBLISH_VOLUME)",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _: Request<api::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<api::ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "hostpath volumes need no attach (no PUBLISH_UNPUBLISH_VOLUME)",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<api::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<api::ValidateVolumeCapabilitiesResponse>, Status> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let id = r.volume_id.clone();
        let kind = self.run(move |s| s.volume(&id).map(|v| v.kind)).await?;
        let mut problem = None;
        for (i, c) in r.volume_capabilities.iter().enumerate() {
            match capability(&format!("volume_capabilities[{i}]"), c)? {
                Err(why) => problem = problem.or(Some(why)),
                Ok(block) if block != kind.is_block() => {
                    problem = problem.or(Some(format!(
                        "volume_capabilities[{i}]: volume {} is a {} volume",
                        r.volume_id,
                        kind.name()
                    )))
                }
                Ok(_) => {}
            }
        }
        Ok(Response::new(match problem {
            Some(message) => api::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
            None => api::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(api::validate_volume_capabilities_response::Confirmed {
                    volume_context: r.volume_context,
                    volume_capabilities: r.volume_capabilities,
                    parameters: r.parameters,
                    mutable_parameters: r.mutable_parameters,
                }),
                message: String::new(),
            },
        }))
    }

    async fn list_volumes(
        &self,
        req: Request<api::ListVolumesRequest>,
    ) -> Result<Response<api::ListVolumesResponse>, Status> {
        let r = req.into_inner();
        let start = page_start(&r.starting_token, r.max_entries)?;
        let (items, next_token) = self
            .run(move |s| {
                let (p, next) = page(&s.index.volumes, start, r.max_entries);
                Ok((
                    p.into_iter()
                        .map(|(id, v)| {
                            let c = s.condition(&id);
                            (id, v, c)
                        })
                        .collect::<Vec<_>>(),
                    next,
                ))
            })
            .await?;
        let entries = items
            .into_iter()
            .map(|(id, v, cond)| api::list_volumes_response::Entry {
                volume: Some(self.volume_message(&id, &v)),
                status: Some(api::list_volumes_response::VolumeStatus {
                    published_node_ids: self.published_nodes(&v),
                    volume_condition: Some(condition(cond)),
                }),
            })
            .collect();
        Ok(Response::new(api::ListVolumesResponse {
            entries,
            next_token,
        }))
    }

    async fn get_capacity(
        &self,
        req: Request<api::GetCapacityRequest>,
    ) -> Result<Response<api::GetCapacityResponse>, Status> {
        let r = req.into_inner();
        let elsewhere = r
            .accessible_topology
            .as_ref()
            .is_some_and(|t| *t != self.topology());
        let mut unservable = false;
        for (i, c) in r.volume_capabilities.iter().enumerate() {
            unservable |= capability(&format!("volume_capabilities[{i}]"), c)?.is_err();
        }
        let (available, min) = self.run(|s| Ok((s.available()?, s.min_capacity()))).await?;
        let available = if elsewhere || unservable {
            0
        } else {
            available
        };
        Ok(Response::new(api::GetCapacityResponse {
            available_capacity: available as i64,
            maximum_volume_size: Some(available as i64),
            minimum_volume_size: Some(min as i64),
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<api::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<api::ControllerGetCapabilitiesResponse>, Status> {
        use ccap::rpc::Type as T;
        let caps = [
            T::CreateDeleteVolume,
            T::ListVolumes,
            T::GetCapacity,
            T::CreateDeleteSnapshot,
            T::ListSnapshots,
            T::CloneVolume,
            T::ExpandVolume,
            T::ListVolumesPublishedNodes,
            T::VolumeCondition,
            T::GetVolume,
            T::SingleNodeMultiWriter,
        ];
        Ok(Response::new(api::ControllerGetCapabilitiesResponse {
            capabilities: caps
                .iter()
                .map(|t| api::ControllerServiceCapability {
                    r#type: Some(ccap::Type::Rpc(ccap::Rpc { r#type: *t as i32 })),
                })
                .collect(),
        }))
    }

    async fn create_snapshot(
        &self,
        req: Request<api::CreateSnapshotRequest>,
    ) -> Result<Response<api::CreateSnapshotResponse>, Status> {
        let r = req.into_inner();
        required("source_volume_id", &r.source_volume_id)?;
        required("name", &r.name)?;
        if let Some(k) = r
            .parameters
            .keys()
            .find(|k| !k.starts_with("csi.storage.k8s.io/"))
        {
            return Err(Status::invalid_argument(format!(
                "parameters: unknown key {k:?} (this plugin takes none)"
            )));
        }
        let (id, snap) = self
            .run(move |s| s.create_snapshot(&r.source_volume_id, &r.name))
            .await?;
        Ok(Response::new(api::CreateSnapshotResponse {
            snapshot: Some(snapshot_message(&id, &snap)),
        }))
    }

    async fn delete_snapshot(
        &self,
        req: Request<api::DeleteSnapshotRequest>,
    ) -> Result<Response<api::DeleteSnapshotResponse>, Status> {
        let id = req.into_inner().snapshot_id;
        required("snapshot_id", &id)?;
        self.run(move |s| s.delete_snapshot(&id)).await?;
        Ok(Response::new(api::DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        req: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<api::ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let start = page_start(&r.starting_token, r.max_entries)?;
        let (items, next_token) = self
            .run(move |s| {
                let picked: BTreeMap<String, Snapshot> = s
                    .index
                    .snapshots
                    .iter()
                    .filter(|(id, snap)| {
                        (r.snapshot_id.is_empty() || **id == r.snapshot_id)
                            && (r.source_volume_id.is_empty()
                                || snap.source_volume == r.source_volume_id)
                    })
                    .map(|(id, snap)| (id.clone(), snap.clone()))
                    .collect();
                Ok(page(&picked, start, r.max_entries))
            })
            .await?;
        Ok(Response::new(api::ListSnapshotsResponse {
            entries: items
                .iter()
                .map(|(id, s)| api::list_snapshots_response::Entry {
                    snapshot: Some(snapshot_message(id, s)),
                })
                .collect(),
            next_token,
        }))
    }

    async fn controller_expand_volume(
        &self,
        req: Request<api::ControllerExpandVolumeRequest>,
    ) -> Result<Response<api::ControllerExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let Some(range) = r.capacity_range else {
            return Err(Status::invalid_argument("capacity_range is required"));
        };
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(Status::invalid_argument(
                "capacity_range: must not be negative",
            ));
        }
        let block = match &r.volume_capability {
            Some(c) => Some(capability("volume_capability", c)?.map_err(Status::invalid_argument)?),
            None => None,
        };
        let id = r.volume_id.clone();
        let capacity = self
            .run(move |s| {
                let kind = s.volume(&id)?.kind;
                if block.is_some_and(|b| b != kind.is_block()) {
                    return Err(Error::InvalidArgument(format!(
                        "volume_capability: volume {id} is a {} volume",
                        kind.name()
                    )));
                }
                s.expand(
                    &id,
                    (if range.required_bytes > 0 {
                        range.required_bytes
                    } else {
                        range.limit_bytes
                    }) as u64,
                    range.limit_bytes as u64,
                )
            })
            .await?;
        // The filesystem (image) or the limit (quota) has grown already: nothing left for the node to do.
        Ok(Response::new(api::ControllerExpandVolumeResponse {
            capacity_bytes: capacity as i64,
            node_expansion_required: false,
        }))
    }

    async fn controller_get_volume(
        &self,
        req: Request<api::ControllerGetVolumeRequest>,
    ) -> Result<Response<api::ControllerGetVolumeResponse>, Status> {
        let id = req.into_inner().volume_id;
        required("volume_id", &id)?;
        let i2 = id.clone();
        let (v, cond) = self
            .run(move |s| Ok((s.volume(&i2)?.clone(), s.condition(&i2))))
            .await?;
        Ok(Response::new(api::ControllerGetVolumeResponse {
            volume: Some(self.volume_message(&id, &v)),
            status: Some(api::controller_get_volume_response::VolumeStatus {
                published_node_ids: self.published_nodes(&v),
                volume_condition: Some(condition(cond)),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        _: Request<api::ControllerModifyVolumeRequest>,
    ) -> Result<Response<api::ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no mutable parameters (no MODIFY_VOLUME)",
        ))
    }
}

fn condition(problem: Option<String>) -> api::VolumeCondition {
    match problem {
        Some(message) => api::VolumeCondition {
            abnormal: true,
            message,
        },
        None => api::VolumeCondition {
            abnormal: false,
            message: "healthy".into(),
        },
    }
}

#[tonic::async_trait]
impl api::node_server::Node for Plugin {
    async fn node_stage_volume(
        &self,
        _: Request<api::NodeStageVolumeRequest>,
    ) -> Result<Response<api::NodeStageVolumeResponse>, Status> {
        // A bind mount per publish is all a local directory needs; staging would add a mount and no benefit.
        Err(Status::unimplemented(
            "no STAGE_UNSTAGE_VOLUME: volumes are published directly",
        ))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<api::NodeUnstageVolumeRequest>,
    ) -> Result<Response<api::NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "no STAGE_UNSTAGE_VOLUME: volumes are published directly",
        ))
    }

    async fn node_publish_volume(
        &self,
        req: Request<api::NodePublishVolumeRequest>,
    ) -> Result<Response<api::NodePublishVolumeResponse>, Status> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let target = clean_target("target_path", &r.target_path).map_err(status)?;
        let Some(cap) = &r.volume_capability else {
            return Err(Status::invalid_argument("volume_capability is required"));
        };
        let block = capability("volume_capability", cap)?.map_err(Status::invalid_argument)?;
        let (flags, group) = match &cap.access_type {
            Some(AccessType::Mount(m)) => (
                mount_flags(&m.mount_flags)?,
                match m.volume_mount_group.as_str() {
                    "" => None,
                    g => Some(g.parse::<u32>().map_err(|_| {
                        Status::invalid_argument(format!(
                            "volume_capability.mount.volume_mount_group {g:?}: expected a numeric group ID"
                        ))
                    })?),
                },
            ),
            _ => (MsFlags::empty(), None),
        };
        let mode = cap
            .access_mode
            .as_ref()
            .map(|m| m.mode())
            .unwrap_or(Mode::Unknown);
        let readonly = r.readonly || mode == Mode::SingleNodeReaderOnly;
        self.run(move |s| {
            s.publish(
                &r.volume_id,
                PublishRequest {
                    target,
                    readonly,
                    block,
                    flags,
                    group,
                },
            )
        })
        .await?;
        Ok(Response::new(api::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<api::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<api::NodeUnpublishVolumeResponse>, Status> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let target = clean_target("target_path", &r.target_path).map_err(status)?;
        self.run(move |s| s.unpublish(&r.volume_id, &target))
            .await?;
        Ok(Response::new(api::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<api::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<api::NodeGetVolumeStatsResponse>, Status> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        let path = clean_target("volume_path", &r.volume_path).map_err(status)?;
        let (u, cond) = self
            .run(move |s| {
                let u = s.usage(&r.volume_id, &path)?;
                Ok((u, s.condition(&r.volume_id)))
            })
            .await?;
        use api::volume_usage::Unit;
        let mut usage = vec![api::VolumeUsage {
            available: u.bytes_total.saturating_sub(u.bytes_used) as i64,
            total: u.bytes_total as i64,
            used: u.bytes_used as i64,
            unit: Unit::Bytes as i32,
        }];
        if let Some((total, used)) = u.inodes {
            usage.push(api::VolumeUsage {
                available: total.saturating_sub(used) as i64,
                total: total as i64,
                used: used as i64,
                unit: Unit::Inodes as i32,
            });
        }
        Ok(Response::new(api::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition(cond)),
        }))
    }

    async fn node_expand_volume(
        &self,
        req: Request<api::NodeExpandVolumeRequest>,
    ) -> Result<Response<api::NodeExpandVolumeResponse>, Status> {
        let r = req.into_inner();
        required("volume_id", &r.volume_id)?;
        clean_target("volume_path", &r.volume_path).map_err(status)?;
        // ControllerExpandVolume grew the limit or the filesystem already (same node); report the capacity.
        let capacity = self
            .run(move |s| s.volume(&r.volume_id).map(|v| v.capacity))
            .await?;
        Ok(Response::new(api::NodeExpandVolumeResponse {
            capacity_bytes: capacity as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<api::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<api::NodeGetCapabilitiesResponse>, Status> {
        use ncap::rpc::Type as T;
        let caps = [
            T::GetVolumeStats,
            T::ExpandVolume,
            T::VolumeCondition,
            T::SingleNodeMultiWriter,
            T::VolumeMountGroup,
        ];
        Ok(Response::new(api::NodeGetCapabilitiesResponse {
            capabilities: caps
                .iter()
                .map(|t| api::NodeServiceCapability {
                    r#type: Some(ncap::Type::Rpc(ncap::Rpc { r#type: *t as i32 })),
                })
                .collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<api::NodeGetInfoRequest>,
    ) -> Result<Response<api::NodeGetInfoResponse>, Status> {
        Ok(Response::new(api::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: self.max_volumes,
            accessible_topology: Some(self.topology()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_ids_and_survive_deletions() {
        let m: BTreeMap<String, u8> = (0..5).map(|i| (format!("{i:032x}"), i)).collect();
        let (p, next) = page(&m, None, 2);
        assert_eq!(p.iter().map(|x| x.1).collect::<Vec<_>>(), [0, 1]);
        let mut m2 = m.clone();
        m2.remove(&next); // the next page's first entry went away meanwhile
        let (p, next) = page(&m2, Some(next), 2);
        assert_eq!(p.iter().map(|x| x.1).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(next, "");
        assert!(page_start("nope", 1).unwrap_err().code() == tonic::Code::Aborted);
        assert!(page_start("", -1).unwrap_err().code() == tonic::Code::InvalidArgument);
    }

    #[test]
    fn unknown_mount_flags_are_named() {
        assert_eq!(
            mount_flags(&["ro".into(), "noexec".into()]).unwrap(),
            MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC
        );
        let e = mount_flags(&["suid".into()]).unwrap_err();
        assert!(e.message().contains("\"suid\""), "{}", e.message());
    }
}
