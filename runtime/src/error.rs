use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, each naming what it was about: a JSON path and value for bad specs, the
/// container id for state errors, the file for I/O.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config.json: {path}: {message}")]
    Spec { path: String, message: String },
    #[error(
        "container id {0:?} is invalid: use letters, digits, '_', '-', '.' (not starting with '.')"
    )]
    InvalidId(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("container {0:?} does not exist")]
    NotFound(String),
    /// Worded as runc's: containerd's shim tells an exited init from a failure by this text.
    #[error("container not running: {0:?} has stopped")]
    NotRunning(String),
    #[error("container {id:?} is {status}: {action} needs it {needs}")]
    WrongState {
        id: String,
        status: crate::state::Status,
        action: &'static str,
        needs: &'static str,
    },
    #[error("cgroup {path}: {message}")]
    Cgroup { path: String, message: String },
    #[error("container init: {0}")]
    Init(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
}

/// The same messages as the runtime's own spec and cgroup errors: the crate boundary does not show.
impl From<basalt_cgroups::Error> for Error {
    fn from(e: basalt_cgroups::Error) -> Error {
        match e {
            basalt_cgroups::Error::Spec { path, message } => Error::Spec { path, message },
            basalt_cgroups::Error::Cgroup { path, message } => Error::Cgroup { path, message },
        }
    }
}

impl Error {
    pub fn spec(path: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Spec {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
