//! The cronjob controller, as upstream's (v2): at each time the schedule names (in `spec.timeZone`, UTC
//! when unset) a Job is made from `jobTemplate`, named `<cronjob>-<scheduled minutes since the epoch>` so
//! that a retried creation never starts a time twice; `startingDeadlineSeconds`, `concurrencyPolicy`
//! (Allow, Forbid, Replace), `suspend`, and the history limits for finished Jobs. Only the most recent
//! missed time is started, as upstream.

use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::cron::Schedule;
use crate::informers::Informer;
use crate::owners;

pub const SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed times than this and upstream warns that the clock or the controller was away too long.
const TOO_MANY_MISSED: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] kube::Error),
}

struct Ctx {
    client: Client,
    jobs: Store<Job>,
    events: basalt_events::Recorder,
}

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, jobs: Arc<Informer<Job>>) {
    let (jobs, job_events) = (jobs.store(), jobs.subscribe());
    let ctx = Arc::new(Ctx {
        events: basalt_events::Recorder::new(client.clone(), "cronjob-controller", None),
        client: client.clone(),
        jobs,
    });
    let run = Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .watches_shared_stream(job_events, |job: Arc<Job>| {
            owners::controller_of(&job.metadata)
                .filter(|r| r.kind == "CronJob")
                .map(|r| ObjectRef::new(&r.name).within(&job.namespace().unwrap_or_default()))
        })
        .run(reconcile, owners::retry, ctx);
    owners::drive("cronjob", run).await;
}

/// The Job for the time `at` (upstream's name and annotation).
fn job_for(cj: &CronJob, at: Timestamp) -> Job {
    let template = cj.spec.job_template.clone();
    let tmeta = template.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT.into(), at.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{}-{}", cj.name_any(), at.as_second() / 60)),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![owners::controller_ref(
                "batch/v1",
                "CronJob",
                &cj.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

/// Finished, and how: the Complete or Failed condition.
fn outcome(job: &Job) -> Option<(&'static str, Option<Timestamp>)> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .filter(|c| c.status == "True")
        .find_map(|c| match c.type_.as_str() {
            "Complete" => Some(("Complete", c.last_transition_time.as_ref().map(|t| t.0))),
            "Failed" => Some(("Failed", c.last_transition_time.as_ref().map(|t| t.0))),
            _ => None,
        })
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = cj.namespace().unwrap_or_default();
    let uid = cj.uid().unwrap_or_default();
    let api_cj: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let api_jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let spec = cj.spec.clone();
    let mut jobs: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|j| owners::controlled_by(&j.metadata, &uid))
        .collect();
    jobs.sort_by_key(|j| j.creation_timestamp().map(|t| t.0.as_second()));
    let mut status = cj.status.clone().unwrap_or_default();
    let running: Vec<&Arc<Job>> = jobs.iter().filter(|j| outcome(j).is_none()).collect();
    status.active =
        Some(running.iter().map(|j| reference(j)).collect::<Vec<_>>()).filter(|v| !v.is_empty());
    if let Some(t) = jobs
        .iter()
        .filter_map(|j| match outcome(j) {
            Some(("Complete", t)) => t,
            _ => None,
        })
        .max()
    {
        status.last_successful_time = Some(Time(t));
    }

    // History: the oldest finished Jobs beyond the limits go, with their pods.
    let limits = [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ];
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for (kind, limit) in limits {
        let finished: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| outcome(j).map(|o| o.0) == Some(kind))
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        let excess = finished.len().saturating_sub(limit.max(0) as usize);
        for j in &finished[..excess] {
            match api_jobs.delete(&j.name_any(), &background).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let schedule: Schedule = match spec.schedule.parse() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(cronjob = %cj.name_any(), error = %e, "unparseable schedule");
            return write(&api_cj, &cj, status)
                .await
                .map(|_| Action::await_change());
        }
    };
    let tz = match spec.time_zone.as_deref() {
        None => TimeZone::UTC,
        Some(name) => match TimeZone::get(name) {
            Ok(tz) => tz,
            Err(e) => {
                tracing::warn!(cronjob = %cj.name_any(), time_zone = name, error = %e, "unknown time zone");
                return write(&api_cj, &cj, status)
                    .await
                    .map(|_| Action::await_change());
            }
        },
    };
    let now = Timestamp::now();
    let next = |after: Timestamp| schedule.next_after(after, &tz);
    let wake = |after: Timestamp| {
        next(after).map_or_else(Action::await_change, |t| {
            // A second late, so that the time has come when the reconcile runs.
            let secs = (t.as_second() - Timestamp::now().as_second()).max(0) as u64 + 1;
            Action::requeue(Duration::from_secs(secs))
        })
    };
    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        write(&api_cj, &cj, status).await?;
        return Ok(Action::await_change());
    }

    // The most recent time due since the last one started (or since the CronJob was made).
    let since = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| cj.creation_timestamp().map(|t| t.0))
        .unwrap_or(now);
    let mut due: Option<Timestamp> = None;
    let mut missed = 0;
    let mut cursor = since;
    while let Some(t) = next(cursor).filter(|t| *t <= now) {
        due = Some(t);
        missed += 1;
        cursor = t;
        if missed > 100_000 {
            break;
        }
    }
    if missed > TOO_MANY_MISSED {
        tracing::warn!(cronjob = %cj.name_any(), missed, "too many missed start times: starting only the most recent");
    }
    let Some(at) = due else {
        write(&api_cj, &cj, status).await?;
        return Ok(wake(now));
    };
    if let Some(deadline) = spec.starting_deadline_seconds {
        if at.as_second() + deadline < now.as_second() {
            tracing::info!(cronjob = %cj.name_any(), scheduled = %at, "missed its starting deadline");
            write(&api_cj, &cj, status).await?;
            return Ok(wake(now));
        }
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !running.is_empty() => {
            // Not this time; the next is looked at when it comes (or when the running Job ends).
            write(&api_cj, &cj, status).await?;
            return Ok(wake(now));
        }
        Some("Replace") => {
            for j in &running {
                match api_jobs.delete(&j.name_any(), &background).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            status.active = None;
        }
        _ => {}
    }
    let job = job_for(&cj, at);
    let about = basalt_events::reference("batch/v1", "CronJob", &cj.metadata, None);
    let made = match api_jobs.create(&PostParams::default(), &job).await {
        Ok(j) => {
            let m = format!("Created job {}", j.name_any());
            ctx.events
                .record(about, basalt_events::Type::Normal, "SuccessfulCreate", m);
            j
        }
        // Made before a crash that lost the status write: the name says it is this time's.
        Err(kube::Error::Api(s)) if s.code == 409 => api_jobs.get(&job.name_any()).await?,
        Err(e) => return Err(e.into()),
    };
    tracing::info!(cronjob = %cj.name_any(), job = %made.name_any(), scheduled = %at, "job created");
    let mut active = status.active.take().unwrap_or_default();
    if !active.iter().any(|r| r.uid == made.metadata.uid) {
        active.push(reference(&made));
    }
    status.active = Some(active);
    status.last_schedule_time = Some(Time(at));
    write(&api_cj, &cj, status).await?;
    Ok(wake(now))
}

/// Writes the status if it changed (upstream's role allows `update` of cronjobs/status).
async fn write(
    api: &Api<CronJob>,
    cj: &CronJob,
    status: k8s_openapi::api::batch::v1::CronJobStatus,
) -> Result<(), Error> {
    if cj.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut next = cj.clone();
    next.status = Some(status);
    match api
        .replace_status(&cj.name_any(), &PostParams::default(), &next)
        .await
    {
        Ok(_) => Ok(()),
        // Changed meanwhile: the watch brings it back.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
