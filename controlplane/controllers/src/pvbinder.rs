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
//! Claims are bound one at a time (upstream runs one claim worker). The store may not show a binding
//! written a moment ago; a volume taken that way is refused by its resourceVersion and the claim tried
//! again, so it is slow, never wrong. The scheduler pre-binds volumes the same way (with the claim's uid,
//! at the version it saw).

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
                None if phase(&pv) == "Available" => pending
                    .state()
                    .iter()
                    .filter(|c| volume_name(c).is_empty())
                    .map(|c| ObjectRef::from_obj(&**c))
                    .collect(),
                None => Vec::new(),
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

fn capacity(pv: &PersistentVolume) -> Option<Quantity> {
    storage(pv.spec.as_ref().and_then(|s| s.capacity.as_ref()))
}

fn mode_of(m: Option<&String>) -> &str {
    m.map_or("Filesystem", String::as_str)
}

/// What a volume pre-bound to the claim must have: the size and the volume mode, and not be going
/// (upstream's findMatchingVolume asks no more of it).
fn fits_prebound(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(cs) = c.spec.as_ref() else {
        return false;
    };
    let want = storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref()));
    pv.metadata.deletion_timestamp.is_none()
        && mode_of(pv.spec.as_ref().and_then(|s| s.volume_mode.as_ref()))
            == mode_of(cs.volume_mode.as_ref())
        && want.is_none_or(|w| capacity(pv).is_some_and(|s| !s.cmp_value(&w).is_lt()))
}

/// Why a volume cannot be bound to the claim (upstream's checkVolumeSatisfyClaim), if it cannot.
fn mismatch(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> Option<&'static str> {
    let cs = c.spec.as_ref()?;
    let want = storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref()));
    if want.is_some_and(|w| capacity(pv).is_none_or(|s| s.cmp_value(&w).is_lt())) {
        return Some("requested PV is too small");
    }
    if class_of_volume(pv) != class_of_claim(c) {
        return Some("storageClassName does not match");
    }
    if mode_of(pv.spec.as_ref().and_then(|s| s.volume_mode.as_ref()))
        != mode_of(cs.volume_mode.as_ref())
    {
        return Some("incompatible volumeMode");
    }
    let has = pv
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| has.contains(m)) {
        return Some("incompatible accessMode");
    }
    None
}

/// Whether a free volume may go to `c`: of its class, with its access modes, size and mode, and
/// matching its selector.
fn satisfies(pv: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    mismatch(pv, c).is_none()
        && c.spec.as_ref().is_some_and(|cs| match &cs.selector {
            Some(sel) => owners::selector(Some(sel))
                .is_some_and(|s| s.matches(&owners::labels(&pv.metadata))),
            None => true,
        })
}

/// The volume for `c`: one pre-bound to it, else (unless binding waits for the scheduler) the smallest
/// Available one that satisfies it.
fn best_match(
    ctx: &Ctx,
    c: &PersistentVolumeClaim,
    delayed: bool,
) -> Option<Arc<PersistentVolume>> {
    let volumes = ctx.volumes.state();
    if let Some(pv) = volumes
        .iter()
        .find(|pv| names_claim(pv, c) && fits_prebound(pv, c))
    {
        return Some(pv.clone());
    }
    if delayed {
        return None;
    }
    volumes
        .into_iter()
        .filter(|pv| {
            claim_ref(pv).is_none()
                && phase(pv) == "Available"
                && pv.metadata.deletion_timestamp.is_none()
                && satisfies(pv, c)
        })
        .filter_map(|pv| capacity(&pv).map(|q| (q, pv)))
        .min_by(|(a, _), (b, _)| a.cmp_value(b))
        .map(|(_, pv)| pv)
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
        let old = pv.status.clone().unwrap_or_default();
        next.status = Some(PersistentVolumeStatus {
            last_phase_transition_time: if phase(pv) == to {
                old.last_phase_transition_time.clone()
            } else {
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ))
            },
            phase: Some(to.into()),
            message,
            ..old
        });
        owners::settled(
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
        next.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        owners::settled(
            self.claims_api(c)
                .replace_status(&c.name_any(), &PostParams::default(), &next)
                .await,
        )?;
        Ok(())
    }

    /// A claim that cannot bind yet: said why (when there is a why), Pending, looked at again later.
    async fn claim_waits(
        &self,
        c: &PersistentVolumeClaim,
        why: Option<(basalt_events::Type, &str, String)>,
    ) -> Result<Action, kube::Error> {
        if let Some((type_, reason, message)) = why {
            self.claim_event(c, type_, reason, message);
        }
        self.claim_pending(c).await?;
        Ok(Action::requeue(RESYNC))
    }

    /// A bound claim whose volume is gone or taken: Lost, as upstream marks it.
    async fn claim_lost(
        &self,
        c: &PersistentVolumeClaim,
        reason: &str,
        message: &str,
    ) -> Result<Action, kube::Error> {
        self.claim_event(c, basalt_events::Type::Warning, reason, message.into());
        if claim_phase(c) != "Lost" {
            let mut next = c.clone();
            next.status.get_or_insert_with(Default::default).phase = Some("Lost".into());
            owners::settled(
                self.claims_api(c)
                    .replace_status(&c.name_any(), &PostParams::default(), &next)
                    .await,
            )?;
        }
        Ok(Action::await_change())
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
            match owners::settled(
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
            match owners::settled(
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
            owners::settled(
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
    // Bound once (`bind-completed`), a claim stays with its volume: losing it is Lost, not a new bind.
    let completed = annotation(&c.metadata, BIND_COMPLETED).is_some();
    let wanted = volume_name(&c).to_string();
    if completed && wanted.is_empty() {
        return ctx
            .claim_lost(
                &c,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            )
            .await;
    }
    if !wanted.is_empty() {
        let Some(pv) = ctx.volumes.get(&ObjectRef::new(&wanted)) else {
            if completed {
                return ctx
                    .claim_lost(
                        &c,
                        "ClaimLost",
                        "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                    )
                    .await;
            }
            return ctx.claim_waits(&c, None).await;
        };
        if names_claim(&pv, &c) {
            return ctx.bind(&pv, &c).await;
        }
        if completed {
            return ctx
                .claim_lost(
                    &c,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly",
                )
                .await;
        }
        if claim_ref(&pv).is_some() {
            let why = format!("volume {wanted:?} already bound to a different claim.");
            return ctx
                .claim_waits(&c, Some((Normal, "FailedBinding", why)))
                .await;
        }
        if let Some(why) = mismatch(&pv, &c) {
            let why = format!("Cannot bind to requested volume {wanted:?}: {why}");
            return ctx
                .claim_waits(&c, Some((Warning, "VolumeMismatch", why)))
                .await;
        }
        return ctx.bind(&pv, &c).await;
    }
    let class_name = class_of_claim(&c).to_string();
    let class = (!class_name.is_empty())
        .then(|| ctx.classes.get(&ObjectRef::new(&class_name)))
        .flatten();
    // WaitForFirstConsumer: only the scheduler picks (pre-binding a volume on the pod's node, or naming
    // the node for a provisioner); the selected node allows provisioning, never a free volume elsewhere.
    let delayed = class
        .as_ref()
        .is_some_and(|k| k.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let selected = annotation(&c.metadata, SELECTED_NODE).is_some();
    if let Some(pv) = best_match(&ctx, &c, delayed) {
        return ctx.bind(&pv, &c).await;
    }
    ctx.claim_pending(&c).await?;
    if delayed && !selected {
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
            Warning,
            "ProvisioningFailed",
            format!("no volume plugin matched name: {NO_PROVISIONER}"),
        ),
        Some(k) => {
            // Dynamic provisioning is the provisioner's (CSI's external-provisioner watches this annotation).
            if annotation(&c.metadata, STORAGE_PROVISIONER) != Some(k.provisioner.as_str()) {
                let mut next = (*c).clone();
                let a = next
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                a.insert(STORAGE_PROVISIONER.into(), k.provisioner.clone());
                a.insert(STORAGE_PROVISIONER_BETA.into(), k.provisioner.clone());
                owners::settled(
                    ctx.claims_api(&c)
                        .replace(&c.name_any(), &PostParams::default(), &next)
                        .await,
                )?;
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
    let Some(r) = claim_ref(&pv).cloned() else {
        if pv.metadata.deletion_timestamp.is_none() {
            ctx.volume_phase(&pv, "Available", None).await?;
        }
        return Ok(Action::await_change());
    };
    let (ns, name) = (
        r.namespace.clone().unwrap_or_default(),
        r.name.clone().unwrap_or_default(),
    );
    if r.uid.as_deref().is_none_or(str::is_empty) {
        // Pre-bound by a person: its claim binds it; until then it is Available.
        ctx.volume_phase(&pv, "Available", None).await?;
        return Ok(Action::await_change());
    }
    if matches!(phase(&pv), "Released" | "Failed") {
        // Released once: reclaimed (or left) by its policy then; nothing to look up again.
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
        Some(c) if volume_name(&c) == pv.name_any() => {
            ctx.volume_phase(&pv, "Bound", None).await?;
            Ok(Action::await_change())
        }
        // Its claim binds it next (the claim loop is woken by this volume).
        Some(c) if volume_name(&c).is_empty() => Ok(Action::await_change()),
        Some(c) => {
            let external_delete = annotation(&pv.metadata, PROVISIONED_BY).is_some()
                && pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                    == Some("Delete");
            if annotation(&pv.metadata, BOUND_BY_CONTROLLER).is_some() && !external_delete {
                // Bound here to a claim that went elsewhere: free again.
                let mut next = (*pv).clone();
                next.spec.get_or_insert_with(Default::default).claim_ref = None;
                if let Some(a) = next.metadata.annotations.as_mut() {
                    a.remove(BOUND_BY_CONTROLLER);
                }
                if let Some(w) = owners::settled(
                    ctx.volumes_api()
                        .replace(&pv.name_any(), &PostParams::default(), &next)
                        .await,
                )? {
                    ctx.volume_phase(&w, "Available", None).await?;
                }
            } else if external_delete {
                release(&pv, &ctx).await?;
            } else {
                // Pre-bound by a person to a claim bound elsewhere: it waits for that claim again.
                ctx.volume_event(
                    &pv,
                    Warning,
                    "VolumeMismatch",
                    format!(
                        "claim {ns}/{} is bound to volume {:?}",
                        c.name_any(),
                        volume_name(&c)
                    ),
                );
                let mut next = (*pv).clone();
                if let Some(r) = next.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
                    r.uid = None;
                    r.resource_version = None;
                }
                if let Some(w) = owners::settled(
                    ctx.volumes_api()
                        .replace(&pv.name_any(), &PostParams::default(), &next)
                        .await,
                )? {
                    ctx.volume_phase(&w, "Available", None).await?;
                }
            }
            Ok(Action::await_change())
        }
    }
}

/// The claim is gone: the volume is Released and reclaimed by its policy.
async fn release(pv: &PersistentVolume, ctx: &Ctx) -> Result<Action, kube::Error> {
    use basalt_events::Type::Warning;
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let external = annotation(&pv.metadata, PROVISIONED_BY).is_some();
    let (to, message, event) = match policy {
        // No in-tree deleter here: a provisioner deletes what it made; anything else fails as upstream's
        // does for a volume type without a deleter.
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
        assert_eq!(
            mismatch(&v, &claim("6Gi", &["ReadWriteOnce"], "", None)),
            Some("requested PV is too small")
        );
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
