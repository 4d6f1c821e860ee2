//! The one error type: a kind the agent maps to a gRPC code, and a message that names the CRI field and value.

use std::fmt;

/// What kind of failure, so that the agent can answer with the matching gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A request field is malformed or contradicts another one (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The request is well-formed but the node or image state forbids it, e.g. `runAsNonRoot` with a root user
    /// (`FAILED_PRECONDITION`).
    FailedPrecondition,
    /// Something the request names does not exist, e.g. a Localhost seccomp profile (`NOT_FOUND`).
    NotFound,
    /// A feature this runtime does not implement, e.g. user namespaces (`UNIMPLEMENTED`).
    Unimplemented,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::NotFound => "not found",
            ErrorKind::Unimplemented => "unimplemented",
        })
    }
}

/// A failure to turn a CRI request into an OCI spec. `message` is meant for the kubelet's events as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// `field` is the CRI field path (`mounts[0].host_path`), printed with the value it had.
    pub fn invalid(
        field: impl fmt::Display,
        value: impl fmt::Debug,
        why: impl fmt::Display,
    ) -> Self {
        Error {
            kind: ErrorKind::InvalidArgument,
            message: format!("{field} {value:?}: {why}"),
        }
    }

    pub fn not_found(
        field: impl fmt::Display,
        value: impl fmt::Debug,
        why: impl fmt::Display,
    ) -> Self {
        Error {
            kind: ErrorKind::NotFound,
            message: format!("{field} {value:?}: {why}"),
        }
    }

    pub fn unimplemented(field: impl fmt::Display, why: impl fmt::Display) -> Self {
        Error {
            kind: ErrorKind::Unimplemented,
            message: format!("{field}: {why}"),
        }
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::FailedPrecondition,
            message: message.into(),
        }
    }
}

/// The text of an I/O error without the "(os error N)" suffix, as Go runtimes print it.
pub(crate) fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_lowercase(),
        None => s,
    }
}
