//! Errors as gRPC statuses: the code tells kubelet what to do (NotFound → forget it, InvalidArgument → don't
//! retry), the message names the object and field.

use basalt_shim::protocol::ErrorKind;
use tonic::{Code, Status};

pub fn not_found(what: &str, id: &str) -> Status {
    Status::not_found(format!("{what} {id:?} not found"))
}

pub fn invalid(field: &str, value: impl std::fmt::Debug, why: &str) -> Status {
    Status::invalid_argument(format!("{field} {value:?}: {why}"))
}

/// `value`, or InvalidArgument naming `field` when the request left it out.
pub fn required<T>(value: Option<T>, field: &str) -> Result<T, Status> {
    value.ok_or_else(|| invalid(field, "", "is required"))
}

pub fn internal(context: &str, e: impl std::fmt::Display) -> Status {
    Status::internal(format!("{context}: {e}"))
}

pub fn from_shim(kind: ErrorKind, message: String) -> Status {
    let code = match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::Internal => Code::Internal,
    };
    Status::new(code, message)
}

pub fn from_image(e: basalt_images::Error) -> Status {
    match e {
        basalt_images::Error::ImageNotFound { .. } | basalt_images::Error::NotInRegistry { .. } => {
            Status::not_found(e.to_string())
        }
        basalt_images::Error::Reference { .. } | basalt_images::Error::Digest { .. } => {
            Status::invalid_argument(e.to_string())
        }
        e => Status::internal(e.to_string()),
    }
}

pub fn from_join(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker task failed: {e}"))
}

/// Runs `f` on the blocking pool (the image store and the filesystem are synchronous).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f).await.map_err(from_join)?
}
