//! The crate's error type: every profile error names the JSON path of the offending field.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile is well-formed JSON but asks for something we cannot compile exactly.
    #[error("invalid seccomp profile at {path}: {reason}")]
    Invalid { path: String, reason: String },
    /// The profile is not valid JSON for the OCI schema; the message names the JSON path.
    #[error("cannot parse seccomp profile at {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("compiled filter has {0} instructions, more than the kernel's limit of 4096")]
    TooLarge(usize),
    #[error("{op} {path}: {source}")]
    File {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn sys(op: &'static str) -> Self {
        Error::Sys {
            op,
            source: std::io::Error::last_os_error(),
        }
    }
}
