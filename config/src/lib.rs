//! The one configuration file of a Basalt node (`/etc/basalt/config.yaml`) and how flags override it.
//!
//! Precedence is built-in defaults < config file < command-line flags, key by key. Every key of the file has a
//! flag of the same kebab-case name, so an operator can try a setting without editing the image.
//!
//! This crate must never touch the filesystem beyond reading the config file: it decides paths, it does not
//! create them.

mod error;
mod schema;

pub use error::ConfigError;
pub use schema::{Config, LogFormat, LogLevel, Overrides, DEFAULT_CONFIG_PATH};
