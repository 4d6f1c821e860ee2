//! API errors, answered as `metav1.Status` with upstream's codes, reasons and message shapes.

use basalt_apimachinery::validate::FieldError;
use serde_json::{json, Value};

/// Upstream's `StatusReason`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Gone,
    Expired,
    Invalid,
    Timeout,
    TooManyRequests,
    InternalError,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    RequestEntityTooLarge,
    ServiceUnavailable,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Gone => "Gone",
            Reason::Expired => "Expired",
            Reason::Invalid => "Invalid",
            Reason::Timeout => "Timeout",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::ServiceUnavailable => "ServiceUnavailable",
        }
    }
}

/// What a Status names: the object, its group and kind (upstream puts the resource there for most errors).
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<Value>,
    pub retry_after_seconds: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: Reason,
    pub message: String,
    pub details: Option<Box<Details>>,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A resource as errors name it: `pods`, `deployments.apps`.
pub fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    pub fn new(code: u16, reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with(mut self, name: &str, group: &str, kind: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_string(),
            group: group.to_string(),
            kind: kind.to_string(),
            ..Default::default()
        }));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, Reason::BadRequest, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, Reason::Unauthorized, "Unauthorized")
    }

    pub fn forbidden_message(message: impl Into<String>) -> Self {
        Self::new(403, Reason::Forbidden, message)
    }

    /// `pods "web" is forbidden: <why>` (admission, quota, namespace lifecycle).
    pub fn forbidden(group: &str, resource: &str, name: &str, why: impl std::fmt::Display) -> Self {
        let what = qualified(group, resource);
        let message = if name.is_empty() {
            format!("{what} is forbidden: {why}")
        } else {
            format!("{what} {name:?} is forbidden: {why}")
        };
        Self::new(403, Reason::Forbidden, message).with(name, group, resource)
    }

    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            404,
            Reason::NotFound,
            format!("{} {name:?} not found", qualified(group, resource)),
        )
        .with(name, group, resource)
    }

    /// A path nobody serves: upstream's plain 404 page.
    pub fn no_route() -> Self {
        Self::new(
            404,
            Reason::NotFound,
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        Self::new(
            409,
            Reason::AlreadyExists,
            format!("{} {name:?} already exists", qualified(group, resource)),
        )
        .with(name, group, resource)
    }

    pub fn conflict(group: &str, resource: &str, name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            409,
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                qualified(group, resource)
            ),
        )
        .with(name, group, resource)
    }

    pub fn modified(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// `Pod "web" is invalid: spec.containers[0].image: Required value` (one error) or `[…, …]` (several).
    pub fn invalid(group: &str, kind: &str, name: &str, errors: Vec<FieldError>) -> Self {
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let list = if shown.len() == 1 {
            shown[0].clone()
        } else {
            format!("[{}]", shown.join(", "))
        };
        let causes = errors
            .iter()
            .map(|e| {
                json!({
                    "reason": e.kind.reason(),
                    "message": e.to_string().split_once(": ").map(|(_, m)| m.to_string()).unwrap_or_default(),
                    "field": e.path,
                })
            })
            .collect();
        let mut err = Self::new(
            422,
            Reason::Invalid,
            format!("{kind} {name:?} is invalid: {list}"),
        )
        .with(name, group, kind);
        if let Some(d) = err.details.as_mut() {
            d.causes = causes;
        }
        err
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, Reason::Expired, message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, Reason::Gone, message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, Reason::NotAcceptable, message)
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        Self::new(415, Reason::UnsupportedMediaType, message)
    }

    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            Reason::RequestEntityTooLarge,
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn too_many_requests(message: impl Into<String>, retry_after: u64) -> Self {
        let mut e = Self::new(429, Reason::TooManyRequests, message);
        e.details = Some(Box::new(Details {
            retry_after_seconds: Some(retry_after),
            ..Default::default()
        }));
        e
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(
            500,
            Reason::InternalError,
            format!("Internal error occurred: {message}"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, Reason::ServiceUnavailable, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, Reason::Timeout, message)
    }

    /// The Status object clients decode.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code,
        });
        if let Some(d) = &self.details {
            let mut details = serde_json::Map::new();
            if !d.name.is_empty() {
                details.insert("name".into(), d.name.clone().into());
            }
            if !d.group.is_empty() {
                details.insert("group".into(), d.group.clone().into());
            }
            if !d.kind.is_empty() {
                details.insert("kind".into(), d.kind.clone().into());
            }
            if !d.causes.is_empty() {
                details.insert("causes".into(), Value::Array(d.causes.clone()));
            }
            if let Some(r) = d.retry_after_seconds {
                details.insert("retryAfterSeconds".into(), r.into());
            }
            s["details"] = Value::Object(details);
        }
        s
    }
}

impl From<basalt_store::StoreError> for ApiError {
    fn from(e: basalt_store::StoreError) -> Self {
        use basalt_store::StoreError as S;
        match e {
            S::Unavailable(m) => ApiError::unavailable(format!("the storage is unavailable: {m}")),
            S::Compacted { .. } => {
                ApiError::expired("The resourceVersion for the provided list is too old.")
            }
            S::FutureRevision { requested, .. } => ApiError::timeout(format!(
                "Too large resource version: {requested}, current: unknown"
            )),
            other => ApiError::internal(other),
        }
    }
}
