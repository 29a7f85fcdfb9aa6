//! Every way a tus request can fail, each with its status and a stable code.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use lectern_storage::StorageError;
use lectern_web::{ApiError, ErrorCode};

use crate::auth::AuthError;

#[derive(Debug, thiserror::Error)]
pub enum TusError {
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("this server speaks tus 1.0.0; send `Tus-Resumable: 1.0.0`")]
    UnsupportedVersion,
    #[error("no such upload")]
    NotFound,
    #[error("{0}")]
    Gone(&'static str),
    #[error("the upload is at offset {stored}, but the request says {claimed}; send HEAD and resume from there")]
    OffsetMismatch { stored: u64, claimed: u64 },
    #[error("another request is writing to this upload right now; retry after it finishes")]
    Busy,
    #[error("the upload has already received every byte and cannot change")]
    Finished,
    #[error("the upload is {length} bytes, larger than the {limit}-byte limit of this server")]
    TooLarge { length: u64, limit: u64 },
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("the request body goes past the upload's declared length of {length} bytes")]
    BeyondLength { length: u64 },
    #[error("the chunk does not match its Upload-Checksum; it was discarded, resend it")]
    ChecksumMismatch,
    #[error("{message}")]
    BadRequest { code: ErrorCode, message: String },
    #[error("PATCH bodies must be sent as `Content-Type: application/offset+octet-stream`")]
    WrongContentType,
    #[error("the upload is not a video or audio file Lectern can take (its first bytes match no known media format)")]
    NotMedia,
    #[error("partner authentication is unavailable")]
    AuthUnavailable,
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl TusError {
    pub(crate) fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        TusError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            TusError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            TusError::UnsupportedVersion => ErrorCode::UnsupportedTusVersion,
            TusError::NotFound => ErrorCode::UploadNotFound,
            TusError::Gone(_) => ErrorCode::UploadGone,
            TusError::OffsetMismatch { .. } => ErrorCode::OffsetMismatch,
            TusError::Busy => ErrorCode::UploadBusy,
            TusError::Finished => ErrorCode::UploadFinished,
            TusError::TooLarge { .. } => ErrorCode::UploadTooLarge,
            TusError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            TusError::BeyondLength { .. } => ErrorCode::BodyExceedsUploadLength,
            TusError::ChecksumMismatch => ErrorCode::ChecksumMismatch,
            TusError::BadRequest { code, .. } => *code,
            TusError::WrongContentType => ErrorCode::UnsupportedContentType,
            TusError::NotMedia => ErrorCode::NotMedia,
            TusError::AuthUnavailable => ErrorCode::TemporarilyUnavailable,
            TusError::Storage(_) => ErrorCode::StorageUnavailable,
            // tus clients retry on 5xx and resume where they stopped, so
            // every database failure is "try again" here.
            TusError::Database(_) => ErrorCode::DatabaseUnavailable,
        }
    }
}

impl From<AuthError> for TusError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable(reason) => {
                tracing::error!(%reason, "partner authentication unavailable");
                TusError::AuthUnavailable
            }
            other => TusError::Unauthenticated(other),
        }
    }
}

impl IntoResponse for TusError {
    fn into_response(self) -> Response {
        let code = self.code();
        let message = match &self {
            // Internal details stay in the log; the client learns it may retry.
            TusError::Storage(_) | TusError::Database(_) => {
                tracing::error!(error = %self, "tus request failed");
                "the upload service is temporarily unavailable; retry, the upload resumes where it stopped".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = ApiError::new(code, message).into_response();
        if matches!(self, TusError::UnsupportedVersion) {
            response
                .headers_mut()
                .insert("tus-version", HeaderValue::from_static(super::TUS_VERSION));
        }
        response
    }
}
