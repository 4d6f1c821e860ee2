//! The job controller, as upstream's: pods that run to completion, `parallelism` at a time, until
//! `completions` succeeded (or, with no completions, until one succeeded and the rest ended); NonIndexed
//! and Indexed completion; `backoffLimit` with upstream's exponential delay before a failed pod is
//! replaced; `activeDeadlineSeconds`; `suspend`.
//!
//! Pods are counted as upstream counts them since 1.26, with the `batch.kubernetes.io/job-tracking`
//! finalizer, so that a finished pod deleted by anyone is still counted exactly once:
//! 1. a finished pod still holding the finalizer is written into `status.uncountedTerminatedPods` (for
//!    Indexed jobs its index goes straight into `completedIndexes`);
//! 2. only then is the finalizer removed from the pod;
//! 3. pods released (or gone) leave the uncounted lists for the `succeeded` and `failed` counters.
//!
//! A crash between any two steps repeats at most the step it interrupted, never a count.
//!
//! The Job ends in two steps as upstream's since 1.31: `SuccessCriteriaMet` or `FailureTarget` first, its
//! remaining pods stopped, then `Complete` or `Failed` once no pod of it is left running.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::expectations::{self, Expectations, Owner};
use crate::informers::{Indexed, Informer};
use crate::owners;

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// Upstream's pod failure back-off: 10 s doubled per failure since the last success, at most 6 min.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// As the replicaset controller: at most this many creations in one sync.
const BURST: usize = 500;

static NO_SELECTOR: LabelSelector = LabelSelector {
    match_expressions: None,
    match_labels: None,
};

pub use crate::owners::SyncError as Error;

/// Failures since the last success, and when the last was counted: the delay before a replacement.
#[derive(Default, Clone, Copy)]
struct Backoff {
    failures: u32,
    last: Option<Instant>,
}

impl Backoff {
    fn remaining(&self) -> Duration {
        let (Some(last), n @ 1..) = (self.last, self.failures) else {
            return Duration::ZERO;
        };
        let delay = BACKOFF_BASE
            .saturating_mul(1 << (n - 1).min(10))
            .min(BACKOFF_MAX);
        delay.saturating_sub(last.elapsed())
    }
}

struct Ctx {
    client: Client,
    pods: Indexed<Pod>,
    expectations: Arc<Expectations>,
    backoff: Mutex<HashMap<String, Backoff>>,
    events: basalt_events::Recorder,
}

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, pods: Arc<Informer<Pod>>, jobs: Arc<Informer<Job>>) {
    let (pods, pod_events, expectations) = expectations::watch_pods(&pods);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods,
        expectations,
        backoff: Mutex::default(),
        events: basalt_events::Recorder::new(client.clone(), "job-controller", None),
    });
    let controller = Controller::for_shared_stream(jobs.subscribe(), jobs.store());
    let jobs = jobs.store();
    let run = controller
        .watches_shared_stream(pod_events, move |pod: Arc<Pod>| {
            owners::to_wake(&pod.metadata, "Job", &jobs, |j| {
                j.spec
                    .as_ref()
                    .and_then(|s| s.selector.as_ref())
                    .unwrap_or(&NO_SELECTOR)
            })
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("job", run).await;
}

/// What a pod is to its Job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Active,
    /// Being deleted but not yet terminal: with `podReplacementPolicy: Failed` it is not replaced (nor
    /// counted) until it reaches phase Failed.
    Terminating,
    Succeeded,
    Failed,
}

fn fate(p: &Pod, only_failed_replaced: bool) -> Fate {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Fate::Succeeded,
        Some("Failed") => Fate::Failed,
        _ if p.metadata.deletion_timestamp.is_none() => Fate::Active,
        // Upstream's default (TerminatingOrFailed): a pod being deleted is a failure already, so that an
        // orphan that never reaches a phase is counted.
        _ if only_failed_replaced => Fate::Terminating,
        _ => Fate::Failed,
    }
}

fn tracked(p: &Pod) -> Option<usize> {
    p.metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == TRACKING_FINALIZER)
}

pub fn completion_index(p: &Pod) -> Option<i32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(INDEX_KEY)?
        .parse()
        .ok()
}

/// Upstream's `completedIndexes` text: sorted intervals, `1,3-5,7`.
pub fn format_indexes(ix: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &i in ix {
        run = match run {
            Some((a, b)) if b + 1 == i => Some((a, i)),
            Some(r) => {
                out.push(interval(r));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    out.extend(run.map(interval));
    out.join(",")
}

fn interval((a, b): (i32, i32)) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// Parses `completedIndexes`, keeping what is below `completions`.
pub fn parse_indexes(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
            out.extend((a..=b.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    out
}

fn condition(status: &JobStatus, type_: &str) -> Option<JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
        .cloned()
}

/// Sets a condition; one already so is left as it is (its times included), so that a sync that changes
/// nothing writes nothing.
fn set_condition(status: &mut JobStatus, type_: &str, value: bool, reason: &str, message: &str) {
    let now = Time(Timestamp::now());
    let value = if value { "True" } else { "False" };
    let conds = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value
            && c.reason.as_deref() == Some(reason)
            && c.message.as_deref() == Some(message)
        {
            return;
        }
        if c.status != value {
            c.last_transition_time = Some(now.clone());
        }
        c.status = value.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(now);
    } else {
        conds.push(JobCondition {
            type_: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_probe_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
    }
}

pub fn is_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| condition(s, "Complete").is_some() || condition(s, "Failed").is_some())
}

/// A pod of `job`, with the finalizer that keeps it counted, and for Indexed jobs its index (annotation,
/// label, hostname and `JOB_COMPLETION_INDEX`, as upstream).
fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    let generate_name = match index {
        Some(i) => {
            labels.insert(INDEX_KEY.into(), i.to_string());
            annotations.insert(INDEX_KEY.into(), i.to_string());
            spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
            let env = EnvVar {
                name: "JOB_COMPLETION_INDEX".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{INDEX_KEY}']"),
                    }),
                    ..Default::default()
                }),
            };
            for c in spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten())
            {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == env.name) {
                    vars.push(env.clone());
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![owners::controller_ref(
                "batch/v1",
                "Job",
                &job.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// One sync of one Job: its pods, the status written so far, and where to write.
struct Sync {
    job: Job,
    api_job: Api<Job>,
    api_pods: Api<Pod>,
}

impl Sync {
    fn status(&mut self) -> &mut JobStatus {
        self.job.status.get_or_insert_with(Default::default)
    }

    /// Writes the status (upstream's role allows `update` of jobs/status, not patch). `false` when the
    /// Job changed or went meanwhile: the watch brings it back.
    async fn write_status(&mut self) -> Result<bool, Error> {
        match self
            .api_job
            .replace_status(&self.job.name_any(), &PostParams::default(), &self.job)
            .await
        {
            Ok(j) => {
                self.job = j;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the tracking finalizer, guarded by a JSON patch test so that nothing else is lost. `true`
    /// when the pod is released (or gone).
    async fn release(&self, p: &Pod) -> Result<bool, Error> {
        let Some(i) = tracked(p) else {
            return Ok(true);
        };
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": TRACKING_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ]))
        .expect("a JSON patch");
        match self
            .api_pods
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 422 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = job.namespace().unwrap_or_default();
    let key = format!("{ns}/{}", job.name_any());
    let mut s = Sync {
        job: (*job).clone(),
        api_job: Api::namespaced(ctx.client.clone(), &ns),
        api_pods: Api::namespaced(ctx.client.clone(), &ns),
    };
    let spec = job.spec.clone().unwrap_or_default();
    let Some(selector) = owners::selector(spec.selector.as_ref()) else {
        return Ok(Action::await_change());
    };
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let only_failed = spec.pod_replacement_policy.as_deref() == Some("Failed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let finished = is_finished(&job);
    let deleting = job.metadata.deletion_timestamp.is_some();

    let me = owners::controller_ref("batch/v1", "Job", &job.metadata);
    let adopt = !deleting && !finished;
    let (in_ns, pods) =
        owners::claim_pods(&ctx.pods, &s.api_pods, &me, &selector, adopt, |_| true).await?;
    if !ctx.expectations.satisfied(&key, &in_ns) {
        // The pods it just created or deleted are not all seen yet: counting now would count wrong.
        return Ok(Action::await_change());
    }

    // A finished or deleted Job only lets its pods go.
    if finished || deleting {
        for p in pods.iter().filter(|p| tracked(p).is_some()) {
            s.release(p).await?;
        }
        ctx.backoff.lock().unwrap().remove(&key);
        return Ok(Action::await_change());
    }

    // 1. Newly finished pods become uncounted (or, Indexed and succeeded, completed indexes).
    let status = s.status().clone();
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut completed = match (indexed, completions) {
        (true, Some(n)) => parse_indexes(status.completed_indexes.as_deref().unwrap_or(""), n),
        _ => BTreeSet::new(),
    };
    let mut to_release: Vec<&Arc<Pod>> = Vec::new();
    let mut flush = false;
    for p in &pods {
        if tracked(p).is_none() {
            continue;
        }
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let list = match fate(p, only_failed) {
            Fate::Active | Fate::Terminating => continue,
            Fate::Succeeded if indexed => {
                if let Some(i) = completion_index(p).filter(|i| *i < completions.unwrap_or(0)) {
                    flush |= completed.insert(i);
                }
                to_release.push(p);
                continue;
            }
            Fate::Succeeded => uncounted.succeeded.get_or_insert_with(Vec::new),
            Fate::Failed => uncounted.failed.get_or_insert_with(Vec::new),
        };
        if !list.contains(&uid) {
            list.push(uid);
            flush = true;
        }
        to_release.push(p);
    }
    let new_succeeded = if indexed {
        completed.len() as i32 - status.succeeded.unwrap_or(0)
    } else {
        0
    };
    let mut written = s.job.status.clone();
    if flush {
        let st = s.status();
        st.uncounted_terminated_pods = Some(uncounted.clone());
        if indexed {
            st.completed_indexes = Some(format_indexes(&completed));
            st.succeeded = Some(completed.len() as i32);
        }
        if !s.write_status().await? {
            return Ok(Action::await_change());
        }
        written = s.job.status.clone();
    }

    // 2. Their finalizers go.
    let mut released: BTreeSet<String> = BTreeSet::new();
    for p in to_release {
        if s.release(p).await? {
            released.insert(p.metadata.uid.clone().unwrap_or_default());
        }
    }

    // 3. Released (or vanished) pods move from the uncounted lists to the counters.
    let present = |uid: &String| {
        pods.iter()
            .any(|p| p.metadata.uid.as_ref() == Some(uid) && tracked(p).is_some())
            && !released.contains(uid)
    };
    let counted = |list: &mut Option<Vec<String>>| {
        let before = list.as_ref().map_or(0, Vec::len);
        list.get_or_insert_with(Vec::new).retain(|u| present(u));
        (before - list.as_ref().map_or(0, Vec::len)) as i32
    };
    let succeeded_now = counted(&mut uncounted.succeeded);
    let failed_now = counted(&mut uncounted.failed);
    {
        let mut b = ctx.backoff.lock().unwrap();
        let rec = b.entry(key.clone()).or_default();
        if succeeded_now + new_succeeded > 0 {
            *rec = Backoff::default();
        }
        if failed_now > 0 {
            rec.failures += failed_now as u32;
            rec.last = Some(Instant::now());
        }
    }
    let st = s.status();
    if succeeded_now > 0 {
        st.succeeded = Some(st.succeeded.unwrap_or(0) + succeeded_now);
    }
    if failed_now > 0 {
        st.failed = Some(st.failed.unwrap_or(0) + failed_now);
    }
    st.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: uncounted.succeeded.clone().filter(|v| !v.is_empty()),
        failed: uncounted.failed.clone().filter(|v| !v.is_empty()),
    });

    // What the Job should do next.
    let succeeded =
        st.succeeded.unwrap_or(0) + uncounted.succeeded.as_ref().map_or(0, Vec::len) as i32;
    let failed = st.failed.unwrap_or(0) + uncounted.failed.as_ref().map_or(0, Vec::len) as i32;
    let all_counted = uncounted.succeeded.as_ref().is_none_or(Vec::is_empty)
        && uncounted.failed.as_ref().is_none_or(Vec::is_empty);
    let active: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| fate(p, only_failed) == Fate::Active)
        .collect();
    let terminating = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
        .count() as i32;
    let now = Timestamp::now();
    let suspended = spec.suspend == Some(true);
    if !suspended && st.start_time.is_none() {
        st.start_time = Some(Time(now));
    }
    let deadline = spec
        .active_deadline_seconds
        .zip(st.start_time.as_ref())
        .map(|(d, t)| t.0.as_second() + d);
    let mut requeue: Option<Duration> = None;

    let failure = condition(st, "FailureTarget")
        .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        .or_else(|| {
            (failed > spec.backoff_limit.unwrap_or(6)).then(|| {
                (
                    "BackoffLimitExceeded".to_string(),
                    "Job has reached the specified backoff limit".to_string(),
                )
            })
        })
        .or_else(|| {
            deadline.filter(|d| *d <= now.as_second()).map(|_| {
                (
                    "DeadlineExceeded".to_string(),
                    "Job was active longer than specified deadline".to_string(),
                )
            })
        });
    let success = condition(st, "SuccessCriteriaMet").is_some()
        || match completions {
            Some(n) => succeeded >= n,
            None => succeeded > 0 && active.is_empty(),
        };
    let mut to_delete: Vec<&Pod> = Vec::new();
    let mut to_create: Vec<Pod> = Vec::new();
    if let Some((reason, message)) = failure {
        set_condition(st, "FailureTarget", true, &reason, &message);
        to_delete.extend(active.iter().map(|p| &***p));
        if active.is_empty() && terminating == 0 && all_counted && condition(st, "Failed").is_none()
        {
            set_condition(st, "Failed", true, &reason, &message);
            let about = basalt_events::reference("batch/v1", "Job", &job.metadata, None);
            ctx.events.record(
                about,
                basalt_events::Type::Warning,
                &reason,
                message.clone(),
            );
        }
    } else if success {
        let (reason, message) = (
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        set_condition(st, "SuccessCriteriaMet", true, reason, message);
        to_delete.extend(active.iter().map(|p| &***p));
        if active.is_empty()
            && terminating == 0
            && all_counted
            && condition(st, "Complete").is_none()
        {
            set_condition(st, "Complete", true, reason, message);
            st.completion_time = Some(Time(now));
            let about = basalt_events::reference("batch/v1", "Job", &job.metadata, None);
            ctx.events.record(
                about,
                basalt_events::Type::Normal,
                "Completed",
                "Job completed".into(),
            );
        }
    } else if suspended {
        set_condition(st, "Suspended", true, "JobSuspended", "Job suspended");
        st.start_time = None;
        to_delete.extend(active.iter().map(|p| &***p));
    } else {
        if condition(st, "Suspended").is_some() {
            set_condition(st, "Suspended", false, "JobResumed", "Job resumed");
        }
        if let Some(d) = deadline {
            requeue = Some(Duration::from_secs((d - now.as_second()).max(1) as u64));
        }
        let wait = ctx
            .backoff
            .lock()
            .unwrap()
            .get(&key)
            .copied()
            .unwrap_or_default()
            .remaining();
        // A pod being deleted under `podReplacementPolicy: Failed` still holds its place.
        let held = active.len() as i32
            + pods
                .iter()
                .filter(|p| fate(p, only_failed) == Fate::Terminating)
                .count() as i32;
        if indexed {
            let n = completions.unwrap_or(0);
            let mut running: BTreeSet<i32> = BTreeSet::new();
            for p in &active {
                match completion_index(p) {
                    // Out of range, already done, or a duplicate: not wanted.
                    Some(i) if i < n && !completed.contains(&i) && running.insert(i) => {}
                    _ => to_delete.push(p),
                }
            }
            let held = held - to_delete.len() as i32;
            let room = (parallelism - held).max(0) as usize;
            if wait.is_zero() {
                to_create.extend(
                    (0..n)
                        .filter(|i| !completed.contains(i) && !running.contains(i))
                        .take(room.min(BURST))
                        .map(|i| new_pod(&job, Some(i))),
                );
            }
        } else {
            let want = match completions {
                // A work queue that had a success creates nothing more, and lets the rest finish.
                None if succeeded > 0 => active.len() as i32,
                None => parallelism,
                Some(n) => (n - succeeded).clamp(0, parallelism),
            };
            if held < want && wait.is_zero() {
                let n = ((want - held) as usize).min(BURST);
                to_create.extend((0..n).map(|_| new_pod(&job, None)));
            } else if active.len() as i32 > want {
                let mut victims = active.clone();
                victims.sort_by_key(|p| crate::replicaset::deletion_rank(p));
                victims.truncate(active.len() - want.max(0) as usize);
                to_delete.extend(victims.iter().map(|p| &***p));
            }
        }
        if !wait.is_zero() {
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
        }
    }

    let owner = Owner {
        events: &ctx.events,
        reference: basalt_events::reference("batch/v1", "Job", &job.metadata, None),
    };
    let deleted = if to_delete.is_empty() {
        0
    } else {
        ctx.expectations
            .delete(&s.api_pods, &key, &owner, &to_delete)
            .await?
    };
    let created = to_create.len() as i32;
    if !to_create.is_empty() {
        ctx.expectations
            .create(&s.api_pods, &key, &owner, to_create.into_iter())
            .await?;
    }
    let st = s.status();
    let still_active: Vec<&&Arc<Pod>> = active
        .iter()
        .filter(|p| !to_delete.iter().any(|d| d.metadata.uid == p.metadata.uid))
        .collect();
    st.active = Some(still_active.len() as i32 + created).filter(|n| *n > 0);
    st.ready = Some(still_active.iter().filter(|p| owners::is_ready(p)).count() as i32);
    st.terminating = Some(terminating + deleted as i32);
    if s.job.status != written && !s.write_status().await? {
        return Ok(Action::await_change());
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip_as_upstream_writes_them() {
        let ix: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&ix), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7", 10), ix);
        // Indexes past completions (the Job was scaled down) are dropped.
        assert_eq!(parse_indexes("0-2,4,6-7", 5), [0, 1, 2, 4].into());
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        let at = |failures| {
            Backoff {
                failures,
                last: Some(Instant::now()),
            }
            .remaining()
            .as_secs_f64()
            .round() as u64
        };
        assert_eq!(Backoff::default().remaining(), Duration::ZERO);
        assert_eq!(at(1), 10);
        assert_eq!(at(2), 20);
        assert_eq!(at(4), 80);
        assert_eq!(at(7), 360);
        assert_eq!(at(40), 360);
    }
}
