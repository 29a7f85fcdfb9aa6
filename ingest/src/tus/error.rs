//! Every way a tus request can fail, each with its status and a stable code.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lectern_storage::StorageError;

use crate::auth::AuthError;

/// tus's own status for a checksum mismatch (checksum extension).
pub const CHECKSUM_MISMATCH: u16 = 460;

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
    BadRequest { code: &'static str, message: String },
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
    pub(crate) fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        TusError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            TusError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            TusError::UnsupportedVersion => {
                (StatusCode::PRECONDITION_FAILED, "unsupported_tus_version")
            }
            TusError::NotFound => (StatusCode::NOT_FOUND, "upload_not_found"),
            TusError::Gone(_) => (StatusCode::GONE, "upload_gone"),
            TusError::OffsetMismatch { .. } => (StatusCode::CONFLICT, "offset_mismatch"),
            TusError::Busy => (StatusCode::CONFLICT, "upload_busy"),
            TusError::Finished => (StatusCode::CONFLICT, "upload_finished"),
            TusError::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "upload_too_large"),
            TusError::QuotaExceeded(_) => (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded"),
            TusError::BeyondLength { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "body_exceeds_upload_length")
            }
            TusError::ChecksumMismatch => (
                StatusCode::from_u16(CHECKSUM_MISMATCH).expect("460 is a valid status"),
                "checksum_mismatch",
            ),
            TusError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            TusError::WrongContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_content_type",
            ),
            TusError::NotMedia => (StatusCode::UNPROCESSABLE_ENTITY, "not_media"),
            TusError::AuthUnavailable | TusError::Storage(_) | TusError::Database(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
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
        let (status, code) = self.status_and_code();
        let message = match &self {
            // Internal details stay in the log; the client learns it may retry.
            TusError::Storage(_) | TusError::Database(_) => {
                tracing::error!(error = %self, "tus request failed");
                "the upload service is temporarily unavailable; retry, the upload resumes where it stopped".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": { "code": code, "message": message } })),
        )
            .into_response();
        if matches!(self, TusError::UnsupportedVersion) {
            response
                .headers_mut()
                .insert("tus-version", HeaderValue::from_static(super::TUS_VERSION));
        }
        response
    }
}
