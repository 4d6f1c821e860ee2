//! Leader election through a coordination.k8s.io Lease, as client-go's: a candidate takes the lease when
//! its holder has not renewed it for `leaseDuration` (timed by the candidate's own clock from when it last
//! saw the record change, so clocks need not agree), the leader renews every `retryPeriod`, and gives up
//! leading when it could not renew for `renewDeadline`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

use crate::config::LeaderElection;

/// A lease record as a candidate compares it: holder and renew time.
type Record = (Option<String>, Option<MicroTime>);

pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderElection,
    identity: String,
    /// The record last seen (holder, renew time) and when this candidate saw it change.
    observed: Option<(Record, Instant)>,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaderElection, identity: String) -> Elector {
        Elector {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            identity,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn spec(&self, acquire: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.cfg.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the lease: `Ok(true)` when this candidate holds it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = None;
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let now = Instant::now();
        match &self.observed {
            Some((r, _)) if *r == record => {}
            _ => self.observed = Some((record, now)),
        }
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.identity.as_str());
        if let (Some(_), false) = (&holder, ours) {
            let duration = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.cfg.lease_duration);
            let seen = self.observed.as_ref().map(|(_, t)| *t).unwrap_or(now);
            if seen + duration > now {
                return Ok(false);
            }
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        lease.spec = Some(self.spec(
            if ours {
                spec.acquire_time.clone()
            } else {
                None
            },
            transitions,
        ));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                let s = l.spec.unwrap_or_default();
                self.observed = Some(((s.holder_identity, s.renew_time), Instant::now()));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this candidate leads.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::debug!(error = %e, "leader election: lease not taken"),
            }
            tokio::time::sleep(self.cfg.retry_period).await;
        }
    }

    /// Renews the lease until renewing fails for `renewDeadline`; returns then (leadership lost).
    pub async fn hold(&mut self) {
        let mut last_renewal = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_period).await;
            let attempt =
                tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire_or_renew());
            match attempt.await {
                Ok(Ok(true)) => last_renewal = Instant::now(),
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.cfg.name, "leader election: lease taken by another");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election: renewal failed"),
                Err(_) => tracing::warn!("leader election: renewal timed out"),
            }
            if last_renewal.elapsed() > self.cfg.renew_deadline {
                tracing::warn!(lease = %self.cfg.name, "leader election: lost the lease");
                return;
            }
        }
    }
}
