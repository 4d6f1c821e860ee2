//! The persistentvolume-binder controller, as upstream's: claims meet volumes.
//!
//! - A pending claim gets the smallest Available volume that satisfies it (its storage class, volume
//!   mode, access modes, size and selector; a volume pre-bound to it first). Binding writes, in order,
//!   the volume's `claimRef` (guarded by its resourceVersion, so two claims never take one volume), the
//!   volume's phase, the claim's `volumeName` and the claim's status: a crash between any two is finished
//!   by the next pass, which finds the volume already naming the claim.
//! - A claim of a `WaitForFirstConsumer` class waits for the scheduler: it binds a volume (pre-binding it)
//!   or names the node (`volume.kubernetes.io/selected-node`) once a pod using the claim is placed. With
//!   no volume and a class with a provisioner, the claim is annotated for that (external) provisioner.
//! - A volume whose claim is gone is Released; under `Retain` it stays, under `Delete` it is left to the
//!   provisioner that made it (`pv.kubernetes.io/provisioned-by`), and otherwise fails as upstream's does
//!   without an in-tree deleter.
//!
//! Claims are bound one at a time (upstream runs one claim worker): the volumes' store then never offers
//! a volume that an earlier claim of this pass just took.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_apimachinery::quantity::Quantity;
use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus,
    PersistentVolumeStatus,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::PostParams;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informer;
use crate::owners;

const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Upstream's `--pvclaimbinder-sync-period`: how often a claim still waiting is looked at again.
const RESYNC: Duration = Duration::from_secs(15);

struct Ctx {
    client: Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    events: basalt_events::Recorder,
}

/// Runs the controller until the future is dropped.
pub async fn run(
    client: Client,
    claims: Arc<Informer<PersistentVolumeClaim>>,
    volumes: Arc<Informer<PersistentVolume>>,
    classes: Arc<Informer<StorageClass>>,
) {
    let ctx = Arc::new(Ctx {
        events: basalt_events::Recorder::new(client.clone(), "persistentvolume-controller", None),
        client,
        claims: claims.store(),
        volumes: volumes.store(),
        classes: classes.store(),
    });
    let pending = claims.store();
    let claim_loop = Controller::for_shared_stream(claims.subscribe(), claims.store())
        // A volume wakes the claim it names; a free one every claim still waiting.
        .watches_shared_stream(
            volumes.subscribe(),
            move |pv: Arc<PersistentVolume>| match claim_ref(&pv) {
                Some(r) => vec![ObjectRef::new(r.name.as_deref().unwrap_or_default())
                    .within(r.namespace.as_deref().unwrap_or_default())],
                None => pending
                    .state()
                    .iter()
                    .filter(|c| volume_name(c).is_empty())
                    .map(|c| ObjectRef::from_obj(&**c))
                    .collect(),
            },
        )
        .with_config(controller::Config::default().concurrency(1))
        .run(sync_claim, owners::retry, ctx.clone());
    let bound = volumes.store();
    let volume_loop = Controller::for_shared_stream(volumes.subscribe(), volumes.store())
        // A claim wakes the volume it names and the volumes naming it (a deleted claim releases them).
        .watches_shared_stream(claims.subscribe(), move |c: Arc<PersistentVolumeClaim>| {
            let mut refs: Vec<ObjectRef<PersistentVolume>> = bound
                .state()
                .iter()
                .filter(|pv| names_claim(pv, &c))
                .map(|pv| ObjectRef::from_obj(&**pv))
                .collect();
            if !volume_name(&c).is_empty() {
                refs.push(ObjectRef::new(volume_name(&c)));
            }
            refs
        })
        .run(sync_volume, owners::retry, ctx);
    tokio::join!(
        owners::drive("persistentvolume-binder", claim_loop),
        owners::drive("persistentvolume-binder", volume_loop),
    );
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

fn volume_name(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or_default()
}

fn class_of_claim(c: &PersistentVolumeClaim) -> &str {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

fn class_of_volume(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or_default()
}

fn annotation<'a>(meta: &'a kube::api::ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether the volume's claimRef names this claim (by uid too, once it has one).
fn names_claim(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    claim_ref(pv).is_some_and(|r| {
        r.name.as_deref() == c.metadata.name.as_deref()
            && r.namespace.as_deref() == c.metadata.namespace.as_deref()
            && r.uid
                .as_deref()
                .is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_deref())
    })
}

fn storage(
    list: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<Quantity> {
    Quantity::parse(&list?.get("storage")?.0).ok()
}

/// Whether `pv` satisfies `c` (class, mode, access modes, size, selector), ignoring who it is bound to.
fn satisfies(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (pv.spec.as_ref(), c.spec.as_ref()) else {
        return false;
    };
    if class_of_volume(pv) != class_of_claim(c) {
        return false;
    }
    let mode = |m: Option<&String>| m.map_or("Filesystem", String::as_str).to_string();
    if mode(vs.volume_mode.as_ref()) != mode(cs.volume_mode.as_ref()) {
        return false;
    }
    let has = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| has.contains(m)) {
        return false;
    }
    let want = storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref()));
    let size = storage(vs.capacity.as_ref());
    if let Some(want) = want {
        if size.is_none_or(|s| s.cmp_value(&want).is_lt()) {
            return false;
        }
    }
    match &cs.selector {
        Some(sel) => {
            owners::selector(Some(sel)).is_some_and(|s| s.matches(&owners::labels(&pv.metadata)))
        }
        None => true,
    }
}

/// The volume for `c`: one pre-bound to it, else (unless binding waits for the scheduler) the smallest
/// free one that satisfies it.
fn best_match(
    ctx: &Ctx,
    c: &PersistentVolumeClaim,
    delayed: bool,
) -> Option<Arc<PersistentVolume>> {
    let usable = |pv: &PersistentVolume| {
        pv.metadata.deletion_timestamp.is_none()
            && !matches!(phase(pv), "Released" | "Failed")
            && satisfies(pv, c)
    };
    let volumes = ctx.volumes.state();
    if let Some(pv) = volumes.iter().find(|pv| names_claim(pv, c) && usable(pv)) {
        return Some(pv.clone());
    }
    if delayed {
        return None;
    }
    volumes
        .into_iter()
        .filter(|pv| claim_ref(pv).is_none() && usable(pv))
        .min_by(|a, b| {
            let (sa, sb) = (
                storage(a.spec.as_ref().and_then(|s| s.capacity.as_ref())),
                storage(b.spec.as_ref().and_then(|s| s.capacity.as_ref())),
            );
            match (sa, sb) {
                (Some(x), Some(y)) => x.cmp_value(&y),
                _ => std::cmp::Ordering::Equal,
            }
        })
}

fn phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// 404 and 409 are answers, not failures: the object changed or went, and its next event brings it back.
fn settled<T>(r: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(None),
        Err(e) => Err(e),
    }
}

impl Ctx {
    fn claim_event(
        &self,
        c: &PersistentVolumeClaim,
        type_: basalt_events::Type,
        reason: &str,
        message: String,
    ) {
        let about = basalt_events::reference("v1", "PersistentVolumeClaim", &c.metadata, None);
        self.events.record(about, type_, reason, message);
    }

    fn volume_event(
        &self,
        pv: &PersistentVolume,
        type_: basalt_events::Type,
        reason: &str,
        message: String,
    ) {
        let mut about = basalt_events::reference("v1", "PersistentVolume", &pv.metadata, None);
        // Events of a cluster-scoped object live in `default`, as upstream's recorder puts them.
        about.namespace = Some("default".into());
        self.events.record(about, type_, reason, message);
    }

    fn volumes_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn claims_api(&self, c: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &c.namespace().unwrap_or_default())
    }

    /// Sets the volume's phase (and message) if it differs.
    async fn volume_phase(
        &self,
        pv: &PersistentVolume,
        to: &str,
        message: Option<String>,
    ) -> Result<(), kube::Error> {
        if phase(pv) == to && pv.status.as_ref().and_then(|s| s.message.clone()) == message {
            return Ok(());
        }
        let mut next = pv.clone();
        next.status = Some(PersistentVolumeStatus {
            phase: Some(to.into()),
            message,
            last_phase_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
            ..Default::default()
        });
        settled(
            self.volumes_api()
                .replace_status(&pv.name_any(), &PostParams::default(), &next)
                .await,
        )?;
        Ok(())
    }

    /// Sets a claim Pending (a new claim has no phase yet).
    async fn claim_pending(&self, c: &PersistentVolumeClaim) -> Result<(), kube::Error> {
        if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending") {
            return Ok(());
        }
        let mut next = c.clone();
        next.status.get_or_insert_with(Default::default).phase = Some("Pending".into());
        settled(
            self.claims_api(c)
                .replace_status(&c.name_any(), &PostParams::default(), &next)
                .await,
        )?;
        Ok(())
    }

    /// Binds `pv` and `c`, each step skipped when already done.
    async fn bind(
        &self,
        pv: &PersistentVolume,
        c: &PersistentVolumeClaim,
    ) -> Result<Action, kube::Error> {
        let want = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: c.namespace(),
            name: Some(c.name_any()),
            uid: c.uid(),
            resource_version: c.resource_version(),
            ..Default::default()
        };
        let mut pv = pv.clone();
        let named = claim_ref(&pv).is_some_and(|r| r.uid.is_some() && r.uid == c.uid());
        if !named {
            if claim_ref(&pv).is_none() {
                pv.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            pv.spec.get_or_insert_with(Default::default).claim_ref = Some(want);
            // Replaced at the resourceVersion this pass saw: a volume taken meanwhile is a conflict.
            match settled(
                self.volumes_api()
                    .replace(&pv.name_any(), &PostParams::default(), &pv)
                    .await,
            )? {
                Some(written) => pv = written,
                None => return Ok(Action::requeue(Duration::from_millis(200))),
            }
        }
        self.volume_phase(&pv, "Bound", None).await?;
        let mut c = c.clone();
        if volume_name(&c) != pv.name_any() || annotation(&c.metadata, BIND_COMPLETED).is_none() {
            let was_free = volume_name(&c).is_empty();
            let annotations = c.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(BIND_COMPLETED.into(), "yes".into());
            if was_free {
                annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
            }
            c.spec.get_or_insert_with(Default::default).volume_name = Some(pv.name_any());
            match settled(
                self.claims_api(&c)
                    .replace(&c.name_any(), &PostParams::default(), &c)
                    .await,
            )? {
                Some(written) => c = written,
                None => return Ok(Action::requeue(Duration::from_millis(200))),
            }
        }
        let spec = pv.spec.clone().unwrap_or_default();
        let status = PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: spec.access_modes,
            capacity: spec.capacity,
            ..c.status.clone().unwrap_or_default()
        };
        if c.status.as_ref() != Some(&status) {
            c.status = Some(status);
            settled(
                self.claims_api(&c)
                    .replace_status(&c.name_any(), &PostParams::default(), &c)
                    .await,
            )?;
            tracing::info!(claim = %format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()), volume = %pv.name_any(), "bound");
        }
        Ok(Action::await_change())
    }
}

async fn sync_claim(c: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    use basalt_events::Type::{Normal, Warning};
    if c.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let wanted = volume_name(&c).to_string();
    if !wanted.is_empty() {
        let Some(pv) = ctx.volumes.get(&ObjectRef::new(&wanted)) else {
            if annotation(&c.metadata, BIND_COMPLETED).is_some() && claim_phase(&c) == "Bound" {
                ctx.claim_event(
                    &c,
                    Warning,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
                );
                let mut next = (*c).clone();
                next.status.get_or_insert_with(Default::default).phase = Some("Lost".into());
                settled(
                    ctx.claims_api(&c)
                        .replace_status(&c.name_any(), &PostParams::default(), &next)
                        .await,
                )?;
                return Ok(Action::await_change());
            }
            ctx.claim_pending(&c).await?;
            return Ok(Action::requeue(RESYNC));
        };
        if claim_ref(&pv).is_none() || names_claim(&pv, &c) {
            return ctx.bind(&pv, &c).await;
        }
        ctx.claim_event(
            &c,
            Warning,
            "FailedBinding",
            format!("volume {wanted:?} already bound to a different claim."),
        );
        ctx.claim_pending(&c).await?;
        return Ok(Action::requeue(RESYNC));
    }
    let class_name = class_of_claim(&c).to_string();
    let class = (!class_name.is_empty())
        .then(|| ctx.classes.get(&ObjectRef::new(&class_name)))
        .flatten();
    let delayed = class
        .as_ref()
        .is_some_and(|k| k.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"))
        && annotation(&c.metadata, SELECTED_NODE).is_none();
    if let Some(pv) = best_match(&ctx, &c, delayed) {
        return ctx.bind(&pv, &c).await;
    }
    ctx.claim_pending(&c).await?;
    if delayed {
        ctx.claim_event(
            &c,
            Normal,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding".into(),
        );
        return Ok(Action::await_change());
    }
    match class {
        None if class_name.is_empty() => ctx.claim_event(
            &c,
            Normal,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set".into(),
        ),
        None => ctx.claim_event(
            &c,
            Warning,
            "ProvisioningFailed",
            format!("storageclass.storage.k8s.io {class_name:?} not found"),
        ),
        Some(k) if k.provisioner == NO_PROVISIONER => ctx.claim_event(
            &c,
            Normal,
            "FailedBinding",
            format!("no persistent volumes available for this claim and storage class {class_name:?} has no provisioner"),
        ),
        Some(k) => {
            // Dynamic provisioning is the provisioner's (CSI's external-provisioner watches this annotation).
            if annotation(&c.metadata, STORAGE_PROVISIONER) != Some(k.provisioner.as_str()) {
                let mut next = (*c).clone();
                let a = next.metadata.annotations.get_or_insert_with(Default::default);
                a.insert(STORAGE_PROVISIONER.into(), k.provisioner.clone());
                a.insert(STORAGE_PROVISIONER_BETA.into(), k.provisioner.clone());
                settled(ctx.claims_api(&c).replace(&c.name_any(), &PostParams::default(), &next).await)?;
            }
            ctx.claim_event(
                &c,
                Normal,
                "ExternalProvisioning",
                format!("Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.", k.provisioner),
            );
        }
    }
    Ok(Action::requeue(RESYNC))
}

async fn sync_volume(pv: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    use basalt_events::Type::Warning;
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(r) = claim_ref(&pv).cloned() else {
        ctx.volume_phase(&pv, "Available", None).await?;
        return Ok(Action::await_change());
    };
    let (ns, name) = (
        r.namespace.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
    );
    if r.uid.as_deref().is_none_or(str::is_empty) {
        // Pre-bound, by a person or the scheduler: its claim binds it.
        if phase(&pv) != "Bound" {
            ctx.volume_phase(&pv, "Available", None).await?;
        }
        return Ok(Action::await_change());
    }
    let mut claim = ctx.claims.get(&ObjectRef::new(&name).within(&ns));
    if claim.as_ref().is_none_or(|c| c.metadata.uid != r.uid) {
        // The store may not have the claim yet: the API decides whether it is gone.
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
        claim = api.get_opt(&name).await?.map(Arc::new);
    }
    match claim.filter(|c| c.metadata.uid == r.uid) {
        None => release(&pv, &ctx).await,
        Some(c) if volume_name(&c).is_empty() || volume_name(&c) == pv.name_any() => {
            ctx.volume_phase(&pv, "Bound", None).await?;
            Ok(Action::await_change())
        }
        Some(c) => {
            // The claim went to another volume: a volume this controller bound is freed again.
            if annotation(&pv.metadata, BOUND_BY_CONTROLLER).is_some() {
                let mut next = (*pv).clone();
                next.spec.get_or_insert_with(Default::default).claim_ref = None;
                if let Some(a) = next.metadata.annotations.as_mut() {
                    a.remove(BOUND_BY_CONTROLLER);
                }
                if let Some(written) = settled(
                    ctx.volumes_api()
                        .replace(&pv.name_any(), &PostParams::default(), &next)
                        .await,
                )? {
                    ctx.volume_phase(&written, "Available", None).await?;
                }
            } else {
                ctx.volume_event(
                    &pv,
                    Warning,
                    "VolumeMismatch",
                    format!(
                        "Volume is bound to claim {ns}/{} that is bound to another volume",
                        c.name_any()
                    ),
                );
            }
            Ok(Action::await_change())
        }
    }
}

/// The claim is gone: the volume is Released and reclaimed by its policy.
async fn release(pv: &PersistentVolume, ctx: &Ctx) -> Result<Action, kube::Error> {
    use basalt_events::Type::Warning;
    if phase(pv) == "Failed" {
        return Ok(Action::await_change());
    }
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let external = annotation(&pv.metadata, PROVISIONED_BY).is_some();
    let (to, message, event) = match policy {
        "Delete" if !external => (
            "Failed",
            Some(format!("error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched", pv.name_any())),
            Some("VolumeFailedDelete"),
        ),
        "Recycle" => ("Failed", Some("No recycler plugin found for the volume!".to_string()), Some("VolumeFailedRecycle")),
        _ => ("Released", None, None),
    };
    if let (Some(reason), Some(m)) = (event, &message) {
        ctx.volume_event(pv, Warning, reason, m.clone());
    }
    ctx.volume_phase(pv, to, message).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(size: &str, modes: &[&str], class: &str) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("pv-{size}"), "labels": {"tier": "fast"}},
            "spec": {"capacity": {"storage": size}, "accessModes": modes, "storageClassName": class},
        }))
        .unwrap()
    }

    fn claim(
        size: &str,
        modes: &[&str],
        class: &str,
        selector: Option<serde_json::Value>,
    ) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "n", "uid": "u1"},
            "spec": {"resources": {"requests": {"storage": size}}, "accessModes": modes,
                "storageClassName": class, "selector": selector},
        }))
        .unwrap()
    }

    #[test]
    fn a_volume_satisfies_a_claim_by_class_modes_size_and_selector() {
        let v = volume("5Gi", &["ReadWriteOnce", "ReadOnlyMany"], "");
        assert!(satisfies(&v, &claim("2Gi", &["ReadWriteOnce"], "", None)));
        assert!(satisfies(&v, &claim("5Gi", &["ReadOnlyMany"], "", None)));
        assert!(!satisfies(&v, &claim("6Gi", &["ReadWriteOnce"], "", None)));
        assert!(!satisfies(&v, &claim("1Gi", &["ReadWriteMany"], "", None)));
        assert!(!satisfies(
            &v,
            &claim("1Gi", &["ReadWriteOnce"], "gold", None)
        ));
        let fast = serde_json::json!({"matchLabels": {"tier": "fast"}});
        let slow = serde_json::json!({"matchLabels": {"tier": "slow"}});
        assert!(satisfies(
            &v,
            &claim("1Gi", &["ReadWriteOnce"], "", Some(fast))
        ));
        assert!(!satisfies(
            &v,
            &claim("1Gi", &["ReadWriteOnce"], "", Some(slow))
        ));
    }
}
