//! The HTTP API (axum). Handlers are thin functions over typed extractors;
//! [`router`] builds the whole app from one [`AppState`] so tests can drive
//! it with `tower::ServiceExt::oneshot`, no socket needed.
//!
//! Every route is registered through [`authz::ApiRouter`] with the access
//! it needs (see [`api`]); the identity middleware recognises the caller
//! and audits every state-changing request.
//!
//! Invariant: this crate knows nothing of GStreamer or FFmpeg.

pub mod authz;
mod courses;
pub mod error;
mod health;
pub mod identity;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Request};
use axum::Router;
use lectern_storage::Store;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use authz::ApiRouter;
pub use error::ApiError;
pub use identity::Identity;

/// Everything a handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    /// Set once migrations have been applied; until then `/readyz` says so.
    pub schema_ready: Arc<std::sync::atomic::AtomicBool>,
    /// How long a readiness probe may wait on a dependency.
    pub probe_timeout: Duration,
    /// Keys, notifier, security counters and identity settings.
    pub identity: Arc<Identity>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route of the API with its access rule. New areas (assets,
/// pipelines, catalogue…) add a `fn routes(ApiRouter) -> ApiRouter` in their
/// module and chain it here.
pub fn api(state: AppState) -> ApiRouter {
    let api = ApiRouter::new(state);
    let api = health::routes(api);
    let api = identity::routes(api);
    courses::routes(api)
}

pub fn router(state: AppState) -> Router {
    api(state.clone())
        .into_router()
        .fallback(error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            identity::middleware,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            identity::security_headers,
        ))
        .with_state(state)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let id = req
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        // Outermost, so the id exists before tracing and every handler.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
