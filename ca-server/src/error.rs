//! The server's one error type, mapped once to a gRPC status and once to an HTTP response.
//! Internal details (storage errors) are logged, never sent to clients.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ca_core::Error as CoreError;
use ca_storage::StoreError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    InvalidArgument(String),
    /// The signing queue is full.
    #[error("signing queue full ({0} waiting); retry with backoff")]
    Busy(usize),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(String),
    /// Refused by the authorization rules (`authz.rs`); the message names the caller,
    /// the rule and what was refused.
    #[error("{0}")]
    PermissionDenied(String),
    /// The server is not in the state the request needs (e.g. `ca rotate` without a root
    /// key on the server); the message says what to do instead.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Over an abuse limit (`ratelimit.rs`): `what` names the limit, its numbers and whose
    /// bucket is empty; `retry_after` is the seconds until one more would pass.
    #[error("{what}; retry after {retry_after} s")]
    RateLimited { what: String, retry_after: u64 },
    #[error("shutting down")]
    ShuttingDown,
    /// This instance cannot do it now, though another instance or a later try may (it
    /// lacks the newest recorded issuer's key); the message says what is missing.
    #[error("{0}")]
    Unavailable(String),
    /// A bug caught at a boundary (a panicking signing job); the details are in the log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Io(e.to_string())
    }
}

impl From<AppError> for Status {
    fn from(e: AppError) -> Status {
        match &e {
            AppError::Core(c) => match c {
                CoreError::MalformedCsr(_)
                | CoreError::BadCsrSignature(_)
                | CoreError::UnsupportedKey { .. }
                | CoreError::WeakKey { .. }
                | CoreError::BadNames(_)
                | CoreError::UnknownProfile { .. }
                | CoreError::BadSerial(_)
                | CoreError::BadReason(_) => Status::invalid_argument(e.to_string()),
                CoreError::NameNotAllowed { .. } | CoreError::ValidityTooLong { .. } => {
                    Status::permission_denied(e.to_string())
                }
                CoreError::AlreadyRevoked(_) => Status::failed_precondition(e.to_string()),
                CoreError::Config(m) => Status::invalid_argument(m.clone()),
                _ => internal(&e),
            },
            AppError::NotFound(m) => Status::not_found(m.clone()),
            AppError::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            AppError::PermissionDenied(m) => Status::permission_denied(m.clone()),
            AppError::FailedPrecondition(m) => Status::failed_precondition(m.clone()),
            AppError::Busy(_) => Status::resource_exhausted(e.to_string()),
            AppError::RateLimited { retry_after, .. } => {
                let mut st = Status::resource_exhausted(e.to_string());
                st.metadata_mut().insert("retry-after", (*retry_after).into());
                st
            }
            AppError::ShuttingDown => Status::unavailable(e.to_string()),
            AppError::Unavailable(m) => Status::unavailable(m.clone()),
            // Says why writes stop (a failed disk, free space below the reserve) and what
            // brings them back; nothing in it is secret.
            AppError::Store(s) if s.is_unavailable() => Status::unavailable(s.to_string()),
            AppError::Store(_) | AppError::Config(_) | AppError::Io(_) | AppError::Internal(_) => {
                internal(&e)
            }
        }
    }
}

fn internal(e: &AppError) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error; see server logs")
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            AppError::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        };
        let status = match Status::from(self).code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::FailedPrecondition => StatusCode::CONFLICT,
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut resp = (status, status.canonical_reason().unwrap_or("error")).into_response();
        if let Some(s) = retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, s.into());
        }
        resp
    }
}
