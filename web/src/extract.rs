//! Extractors that answer in our error vocabulary: `axum`'s own answer a
//! malformed body, path or query with plain text; these answer JSON with a
//! code from [`ErrorCode`].

use axum::http::StatusCode;
use axum::Json;

use crate::{ApiError, ErrorCode};

/// `axum::Json`, but a body that does not parse is our JSON 400
/// (`invalid_body`), not axum's plain-text rejection.
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                if rejection.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                    ErrorCode::UnsupportedMediaType
                } else {
                    ErrorCode::InvalidBody
                },
                rejection.body_text(),
            )),
        }
    }
}

/// `axum::extract::Path`, with our JSON 400 (`invalid_path`) for a path
/// parameter that does not parse (say, a malformed id).
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(ErrorCode::InvalidPath, rejection.body_text())),
        }
    }
}

/// `axum::extract::Query`, with our JSON 400 (`invalid_query`).
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::new(
                ErrorCode::InvalidQuery,
                rejection.body_text(),
            )),
        }
    }
}
