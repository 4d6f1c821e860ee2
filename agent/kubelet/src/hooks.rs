//! postStart and preStop handlers: exec, httpGet, sleep (and the deprecated tcpSocket, which only connects).

use std::time::Duration;

use k8s_openapi::api::core::v1::LifecycleHandler;

use crate::cri::Cri;
use crate::probes::{self, Outcome, Target};

pub async fn run(cri: &Cri, t: &Target, h: &LifecycleHandler, timeout: Duration) -> Outcome {
    let timeout = timeout.max(Duration::from_secs(1));
    if let Some(a) = &h.exec {
        probes::exec(cri, t, a, timeout).await
    } else if let Some(a) = &h.http_get {
        probes::http_get(t, a, timeout).await
    } else if let Some(s) = &h.sleep {
        // The hook's own duration, bounded by what the caller allows (the grace period for preStop).
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        Outcome::Success
    } else if let Some(a) = &h.tcp_socket {
        probes::tcp(t, a, timeout).await
    } else {
        Outcome::Failure("lifecycle handler has no action".into())
    }
}
