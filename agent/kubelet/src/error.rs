use std::path::PathBuf;

use crate::pod_cgroup::PodCgroupError;
use crate::podconfig::ConfigError;
use crate::status::{Reason, Waiting};
use crate::userns::UsernsError;
use crate::volumes::VolumeError;

/// Why a pod worker's pass stopped short. The message goes into the pod's status; [`Error::waiting`] is
/// what the container it was about shows, with upstream's reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A runtime call about the pod failed; `call` names it (`ListPodSandbox`, `RunPodSandbox`, …).
    #[error("{call}: {}", .status.message())]
    Cri {
        call: &'static str,
        status: tonic::Status,
    },
    /// Creating or starting one container failed.
    #[error("{call} {container}: {}", .status.message())]
    Container {
        call: ContainerCall,
        container: String,
        status: tonic::Status,
    },
    /// The container's image is not there to run: never to be pulled, backing off, or the pull failed.
    #[error("{message}")]
    ImagePull { reason: Reason, message: String },
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The container's config cannot be made (env, mounts, resources).
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    UserNamespace(#[from] UsernsError),
    /// `hostUsers: false` with a host namespace besides, which upstream refuses.
    #[error("spec.hostUsers false: spec.{field} true is not allowed with it")]
    HostUsersWith { field: &'static str },
    #[error(
        "spec.hostUsers false: the runtime's default handler does not support user namespaces"
    )]
    NoUserNamespaces,
    #[error("pod cgroup {path}: {error}")]
    PodCgroup { path: String, error: PodCgroupError },
    /// The pod's or its logs' directory.
    #[error("{}: {error}", .path.display())]
    Dir {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file a container's termination message goes to.
    #[error("{0}")]
    TerminationLog(std::io::Error),
    /// The runtime's NetworkReady condition is false: no sandbox is asked for (upstream's words).
    #[error("network is not ready: container runtime network not ready: NetworkReady=false reason:{reason} message:{message}")]
    NetworkNotReady { reason: String, message: String },
}

/// The per-container CRI calls whose failure the container shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerCall {
    Create,
    Start,
}

impl std::fmt::Display for ContainerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContainerCall::Create => "CreateContainer",
            ContainerCall::Start => "StartContainer",
        })
    }
}

impl Error {
    pub fn cri(call: &'static str) -> impl FnOnce(tonic::Status) -> Error {
        move |status| Error::Cri { call, status }
    }

    /// Whether retrying at once is pointless: the pod has no sandbox and cannot get one yet. The worker
    /// backs off on these instead of asking again every sync period.
    pub fn blocks_sandbox(&self) -> bool {
        matches!(
            self,
            Error::NetworkNotReady { .. }
                | Error::Cri {
                    call: "RunPodSandbox",
                    ..
                }
        )
    }

    /// The waiting state the container this error is about shows, when it is one upstream names.
    pub fn waiting(&self) -> Option<Waiting> {
        let (reason, message) = match self {
            Error::ImagePull { reason, message } => (*reason, message.clone()),
            Error::Volume(e) => (Reason::CreateContainerConfigError, e.to_string()),
            Error::Config(e) => (Reason::CreateContainerConfigError, e.to_string()),
            Error::Container { call, status, .. } => (
                match call {
                    ContainerCall::Create => Reason::CreateContainerError,
                    ContainerCall::Start => Reason::RunContainerError,
                },
                status.message().to_owned(),
            ),
            _ => return None,
        };
        Some(Waiting { reason, message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_upstreams_reasons() {
        let e = Error::cri("ListPodSandbox")(tonic::Status::unavailable("no runtime"));
        assert_eq!(e.to_string(), "ListPodSandbox: no runtime");
        assert_eq!(e.waiting(), None);

        let e = Error::Container {
            call: ContainerCall::Create,
            container: "web".into(),
            status: tonic::Status::not_found("image gone"),
        };
        assert_eq!(e.to_string(), "CreateContainer web: image gone");
        let w = e.waiting().unwrap();
        assert_eq!(
            (w.reason, w.message.as_str()),
            (Reason::CreateContainerError, "image gone")
        );
        let e = Error::Container {
            call: ContainerCall::Start,
            container: "web".into(),
            status: tonic::Status::internal("exec failed"),
        };
        assert_eq!(e.to_string(), "StartContainer web: exec failed");
        assert_eq!(e.waiting().unwrap().reason.as_str(), "RunContainerError");

        let e = Error::ImagePull {
            reason: Reason::ImagePullBackOff,
            message: "Back-off pulling image \"x\" (9s)".into(),
        };
        assert_eq!(e.to_string(), "Back-off pulling image \"x\" (9s)");
        assert_eq!(e.waiting().unwrap().reason.as_str(), "ImagePullBackOff");

        let e = Error::from(ConfigError::NoSuchContainer("x".into()));
        let w = e.waiting().unwrap();
        assert_eq!(w.reason.as_str(), "CreateContainerConfigError");
        assert_eq!(w.message, e.to_string());

        let e = Error::HostUsersWith { field: "hostPID" };
        assert_eq!(
            e.to_string(),
            "spec.hostUsers false: spec.hostPID true is not allowed with it"
        );
        assert_eq!(e.waiting(), None);
        let e = Error::Dir {
            path: "/var/lib/pods/u".into(),
            error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert!(e.to_string().starts_with("/var/lib/pods/u: "), "{e}");
    }
}
