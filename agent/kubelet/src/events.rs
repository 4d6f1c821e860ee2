//! The kubelet's events about its pods, with upstream's reasons and messages, so that `kubectl describe
//! pod` tells what happened: images pulled, containers created, started and killed, probes failing,
//! back-offs. In API mode they go to the apiserver ([`crate::volumes::ApiSource::record`]); a repeat of
//! the same event raises its count instead of making another, as upstream's event correlator does.

use k8s_openapi::api::core::v1::Container;

pub use basalt_events::Type as Kind;

/// Upstream's reasons (pkg/kubelet/events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Pulling,
    Pulled,
    Failed,
    BackOff,
    Created,
    Started,
    Killing,
    Unhealthy,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pulling => "Pulling",
            Reason::Pulled => "Pulled",
            Reason::Failed => "Failed",
            Reason::BackOff => "BackOff",
            Reason::Created => "Created",
            Reason::Started => "Started",
            Reason::Killing => "Killing",
            Reason::Unhealthy => "Unhealthy",
        }
    }
}

/// One event about a pod, about one of its containers when `field_path` says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    pub reason: Reason,
    pub message: String,
    /// `spec.containers{name}` or `spec.initContainers{name}`.
    pub field_path: Option<String>,
}

impl Event {
    pub fn about(c: &Container, init: bool, kind: Kind, reason: Reason, message: String) -> Event {
        let list = if init { "initContainers" } else { "containers" };
        Event {
            kind,
            reason,
            message,
            field_path: Some(format!("spec.{list}{{{}}}", c.name)),
        }
    }
}
