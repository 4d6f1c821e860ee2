//! The metav1.Status object that v4+ clients expect on the error channel when a process ends.

use serde_json::{json, Value};

/// How a streamed process ended, as far as the client is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Exited(i32),
    /// Attach ended (stdin closed or the container's process exited).
    Detached,
    Failed(String),
}

impl Outcome {
    /// JSON for the v4/v5 error channel.
    pub(crate) fn status_json(&self) -> Vec<u8> {
        let v: Value = match self {
            Outcome::Exited(0) | Outcome::Detached => json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: exit status {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Failed(msg) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {msg}"),
                "reason": "InternalError",
                "code": 500,
                "details": {"causes": [{"message": msg}]},
            }),
        };
        serde_json::to_vec(&v).expect("a json Value always serialises")
    }

    /// Plain text for the pre-v4 error channel, which carries only failures.
    pub(crate) fn error_text(&self) -> Option<String> {
        match self {
            Outcome::Exited(0) | Outcome::Detached => None,
            Outcome::Exited(code) => Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            Outcome::Failed(msg) => Some(msg.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_code_travels_as_a_cause() {
        let v: Value = serde_json::from_slice(&Outcome::Exited(3).status_json()).unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let v: Value = serde_json::from_slice(&Outcome::Exited(0).status_json()).unwrap();
        assert_eq!(v, json!({"metadata": {}, "status": "Success"}));
        assert_eq!(Outcome::Exited(0).error_text(), None);
    }
}
