use std::fmt::Display;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with a cgroup: a resource value the spec gets wrong (named by its JSON path), or the
/// cgroup filesystem refusing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config.json: {path}: {message}")]
    Spec { path: String, message: String },
    #[error("cgroup {path}: {message}")]
    Cgroup { path: String, message: String },
}

impl Error {
    pub fn spec(path: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Spec {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn cgroup(path: impl Into<String>, message: impl Display) -> Error {
        Error::Cgroup {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_or_the_cgroup() {
        assert_eq!(
            Error::spec("linux.resources.devices[0].access", "\"x\": not r, w or m").to_string(),
            "config.json: linux.resources.devices[0].access: \"x\": not r, w or m"
        );
        assert_eq!(
            Error::cgroup("/kubepods/pod1", "EBUSY").to_string(),
            "cgroup /kubepods/pod1: EBUSY"
        );
    }
}
