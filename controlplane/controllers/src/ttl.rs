//! The ttl-after-finished controller, as upstream's: a finished Job with `ttlSecondsAfterFinished` is
//! deleted (its pods with it, in the background) that many seconds after it completed or failed.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::PropagationPolicy;
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};

use crate::informers::Informer;
use crate::owners;

/// Runs the controller until the future is dropped.
pub async fn run(client: Client, jobs: Arc<Informer<Job>>) {
    let run = Controller::for_shared_stream(jobs.subscribe(), jobs.store()).run(
        reconcile,
        owners::retry,
        Arc::new(client),
    );
    owners::drive("ttl-after-finished", run).await;
}

/// When the Job finished: the transition of its Complete or Failed condition.
fn finished_at(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::now(), |t| t.0)
        })
}

async fn reconcile(job: Arc<Job>, client: Arc<Client>) -> Result<Action, kube::Error> {
    let (Some(ttl), Some(at)) = (
        job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished),
        finished_at(&job),
    ) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let left = at.as_second() + i64::from(ttl) - Timestamp::now().as_second();
    if left > 0 {
        return Ok(Action::requeue(Duration::from_secs(left as u64)));
    }
    let api: Api<Job> = Api::namespaced((*client).clone(), &job.namespace().unwrap_or_default());
    let background = Some(PropagationPolicy::Background);
    if owners::delete_exact(&api, &job.name_any(), job.uid(), background).await? {
        tracing::info!(job = %job.name_any(), "deleted: ttlSecondsAfterFinished passed");
    }
    Ok(Action::await_change())
}
