//! What a payments call can fail with. Converted to `tonic::Status` only at the gRPC boundary.
//!
//! Every variant says whose fault it is: the caller's request (`Invalid`), the payment's
//! state (`Precondition`), a missing payment, a reused idempotency key, or our side
//! (`Unavailable` is retryable, `Internal` is a bug or a broken database).

use tonic::{Code, Status};

#[derive(Clone, Debug, thiserror::Error)]
pub enum PaymentError {
    /// The request itself is wrong; nothing was read or written. INVALID_ARGUMENT.
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },

    /// The request is well-formed but the payment's state or the instance forbids it.
    /// FAILED_PRECONDITION.
    #[error("{0}")]
    Precondition(String),

    /// NOT_FOUND.
    #[error("payment {0} does not exist")]
    NotFound(String),

    /// The idempotency key was used before for a different request. ALREADY_EXISTS.
    #[error(
        "idempotency_key '{key}' was already used by merchant {merchant_id} for a different request ({previous}); send a new key for a new request, or repeat the original request exactly to get its answer"
    )]
    IdempotencyConflict { merchant_id: String, key: String, previous: String },

    /// Another request with the same idempotency key is still being processed (Stripe answers
    /// 409 here). ABORTED: retry with the same key once it finishes to get its answer.
    #[error(
        "a request with this idempotency key is in progress (idempotency_key '{key}'); retry with the same key shortly to get its answer"
    )]
    InProgress { key: String },

    /// The caller may not act on this merchant's payments; nothing was written.
    /// PERMISSION_DENIED.
    #[error("{0}")]
    Forbidden(String),

    /// The call carries no caller identity where one is required. UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),

    /// The payment is locked by another request for longer than the lock timeout. ABORTED:
    /// retry with the same idempotency key.
    #[error("the payment is busy with another request ({0}); retry with the same idempotency key")]
    Busy(String),

    /// The database cannot be reached right now; safe to retry. UNAVAILABLE.
    #[error("the payments database is unavailable ({0}); retry with the same idempotency key")]
    Unavailable(String),

    /// Something that should not happen. INTERNAL; details are logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PaymentError {
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::Invalid { field, problem: problem.into() }
    }

    pub fn code(&self) -> Code {
        match self {
            Self::Invalid { .. } => Code::InvalidArgument,
            Self::Precondition(_) => Code::FailedPrecondition,
            Self::NotFound(_) => Code::NotFound,
            Self::IdempotencyConflict { .. } => Code::AlreadyExists,
            Self::InProgress { .. } | Self::Busy(_) => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
            Self::Forbidden(_) => Code::PermissionDenied,
            Self::Unauthenticated(_) => Code::Unauthenticated,
        }
    }
}

impl From<tokio_postgres::Error> for PaymentError {
    fn from(e: tokio_postgres::Error) -> Self {
        let Some(db) = e.as_db_error() else {
            // A closed connection or an I/O failure: the database is going or gone.
            return Self::Unavailable(e.to_string());
        };
        let code = db.code().code();
        match code {
            // lock_not_available: `lock_timeout` expired waiting for the payment's row.
            "55P03" => Self::Busy(db.message().to_owned()),
            // admin_shutdown, crash_shutdown, cannot_connect_now (a restart in progress),
            // query_canceled (statement_timeout), serialization failure, deadlock.
            "57P01" | "57P02" | "57P03" | "57014" | "40001" | "40P01" => Self::Unavailable(db.message().to_owned()),
            // connection exceptions, insufficient resources, system errors.
            _ if code.starts_with("08") || code.starts_with("53") || code.starts_with("58") => Self::Unavailable(db.message().to_owned()),
            _ => Self::Internal(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for PaymentError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<PaymentError> for Status {
    fn from(e: PaymentError) -> Self {
        match &e {
            PaymentError::Internal(detail) => {
                tracing::error!(%detail, "payments call failed internally");
                Status::internal("internal error; it has been logged, retry with the same idempotency key")
            }
            PaymentError::Unavailable(detail) => {
                tracing::warn!(%detail, "payments database unavailable");
                Status::unavailable(e.to_string())
            }
            _ => Status::new(e.code(), e.to_string()),
        }
    }
}
