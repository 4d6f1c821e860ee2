//! CNI errors as the spec defines them: a numeric code, a message that names the bad field, and details.

use serde::Serialize;

/// Error codes from the CNI spec ("Error" section); 100+ are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnv = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    PluginNotAvailableLimitedConnectivity = 51,
    /// A netlink or nftables operation failed.
    Netlink = 100,
    /// The address ranges hold no free address.
    NoFreeAddress = 101,
    /// A delegated or chained plugin failed or timed out.
    Exec = 102,
    /// CHECK found the container's network not as ADD left it.
    CheckFailed = 103,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl std::fmt::Display) -> Self {
        self.details = details.to_string();
        self
    }

    pub fn io(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        CniError::new(Code::Io, what.to_string()).with_details(err)
    }

    pub fn netlink(what: impl std::fmt::Display, err: std::io::Error) -> Self {
        CniError::new(Code::Netlink, what.to_string()).with_details(err)
    }

    pub fn config(msg: impl Into<String>) -> Self {
        CniError::new(Code::InvalidConfig, msg)
    }

    /// The JSON document the spec wants on stdout for a failed invocation.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("plain struct serialises")
    }
}

pub type Result<T> = std::result::Result<T, CniError>;
