use std::path::PathBuf;

/// Why a configuration could not be loaded. Each variant names the file, key and value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message} (value {value:?})")]
    Invalid {
        key: &'static str,
        value: String,
        message: &'static str,
    },
}
