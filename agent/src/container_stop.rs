//! StopContainer: the image's STOPSIGNAL (or SIGTERM), then SIGKILL after the timeout, through the monitor.
//! Stopping an unknown or exited container succeeds.

use basalt_proto::cri::{self, ContainerEventType};
use basalt_shim::protocol::Request;
use tonic::Status;

use crate::agent::Agent;
use crate::monitor;
use crate::service::Call;
use crate::spec::STOP_SIGNAL_ANNOTATION;
use crate::store::ContainerRecord;

impl Call for cri::StopContainerRequest {
    type Reply = cri::StopContainerResponse;

    async fn call(self, agent: &Agent) -> Result<Self::Reply, Status> {
        let done = cri::StopContainerResponse {};
        // Kubernetes 1.33: stopping an unknown container is not an error.
        let Some(c) = agent.records.find_container(&self.container_id) else {
            return Ok(done);
        };
        if c.final_status.is_some() {
            return Ok(done);
        }
        let Some(s) = agent.records.sandbox(&c.sandbox_id) else {
            return Ok(done);
        };
        let signal = stop_signal(&c);
        match monitor::call(
            &s.shim_dir,
            Request::Stop {
                id: c.id.clone(),
                timeout_secs: self.timeout.max(0),
                signal,
            },
        )
        .await
        {
            Ok(_) => {}
            // Gone from the monitor already (or the monitor is gone): nothing left to stop.
            Err(e) if e.code() == tonic::Code::NotFound => {}
            Err(e) => return Err(e),
        }
        agent
            .events
            .container(&c.id, &s.id, ContainerEventType::ContainerStoppedEvent);
        Ok(done)
    }
}

/// The image's STOPSIGNAL, as numbers the monitor sends.
fn stop_signal(c: &ContainerRecord) -> Option<i32> {
    let cfg = std::fs::read(c.bundle.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&cfg).ok()?;
    let sig = v["annotations"][STOP_SIGNAL_ANNOTATION].as_str()?;
    parse_signal(sig)
}

/// `15`, `TERM` or `SIGTERM`.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return Some(n);
    }
    let name = s.trim_start_matches("SIG");
    let sig: nix::sys::signal::Signal = format!("SIG{name}").parse().ok()?;
    Some(sig as i32)
}

#[cfg(test)]
mod tests {
    use super::parse_signal;

    #[test]
    fn stop_signals_by_number_or_name() {
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("USR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_signal("NOPE"), None);
    }
}
