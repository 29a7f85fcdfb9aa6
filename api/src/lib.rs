//! The HTTP API (axum). Handlers are thin functions over typed extractors;
//! [`router`] builds the whole app from one [`AppState`] so tests can drive
//! it with `tower::ServiceExt::oneshot`, no socket needed.
//!
//! Every route is registered through [`authz::ApiRouter`] with the access
//! it needs (see [`api`]); the identity middleware recognises the caller
//! and audits every state-changing request.
//!
//! Invariant: this crate knows nothing of GStreamer or FFmpeg.

mod assets;
pub mod authz;
mod catalogue;
pub mod demo;
pub mod error;
mod health;
pub mod identity;
pub mod intake;
pub mod learning;
pub mod openapi;
pub mod origin;
pub mod search;
pub mod uploads;
pub mod webhooks;

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

/// Everything a handler may need: one reference count to clone (axum
/// clones the state for every layer of every request; with a dozen
/// reference-counted fields that was ~8 % of the origin's CPU, atomics
/// bouncing between cores). Fields read through `Deref`; writing one
/// (tests, the binary while it builds the state) copies the fields first,
/// as cloning and assigning did before.
#[derive(Clone)]
pub struct AppState(Arc<Areas>);

impl std::ops::Deref for AppState {
    type Target = Areas;

    fn deref(&self) -> &Areas {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Areas {
        Arc::make_mut(&mut self.0)
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct Areas {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    /// Set once migrations have been applied; until then `/readyz` says so.
    pub schema_ready: Arc<std::sync::atomic::AtomicBool>,
    /// How long a readiness probe may wait on a dependency.
    pub probe_timeout: Duration,
    /// Keys, notifier, security counters and identity settings.
    pub identity: Arc<Identity>,
    /// Limits of partner uploads.
    pub uploads: Arc<lectern_ingest::tus::TusConfig>,
    /// Limits and allow-list of URL pulls.
    pub pulls: Arc<lectern_ingest::pull::PullConfig>,
    /// The URL pulls this node is downloading.
    pub pulls_in_flight: Arc<intake::PullsInFlight>,
    /// How partner webhooks are dispatched.
    pub webhooks: Arc<webhooks::WebhookSettings>,
    /// Playback token keys and settings of the media origin.
    pub playback: Arc<origin::Playback>,
    /// Where the learner demo page finds the player SDK bundle.
    pub demo: Arc<demo::DemoSettings>,
    /// Heartbeat absorber, lesson cache and settings of the learning area.
    pub learning: Arc<learning::Learning>,
}

impl AppState {
    /// A state with every area at its defaults; callers (the binary, tests)
    /// then override the fields they configure. Each area that needs
    /// settings or runtime state adds one field here with its default, so
    /// adding an area never touches the places that build a state.
    pub fn new(db: PgPool, store: Arc<dyn Store>, identity: Identity) -> Self {
        AppState(Arc::new(Areas {
            db,
            store,
            schema_ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            probe_timeout: Duration::from_secs(2),
            identity: Arc::new(identity),
            uploads: Arc::default(),
            pulls: Arc::default(),
            pulls_in_flight: Arc::default(),
            webhooks: Arc::default(),
            playback: Arc::new(origin::Playback::generate()),
            demo: Arc::default(),
            learning: Arc::default(),
        }))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route of the API with its access rule. New areas (assets,
/// pipelines, catalogue…) add a `fn routes(ApiRouter) -> ApiRouter` in their
/// module and chain it here.
pub fn api(state: AppState) -> ApiRouter {
    let api = ApiRouter::new(state);
    let api = health::routes(api);
    let api = identity::routes(api);
    let api = uploads::routes(api);
    let api = intake::routes(api);
    let api = assets::routes(api);
    let api = webhooks::routes(api);
    let api = catalogue::routes(api);
    let api = search::routes(api);
    let api = origin::routes(api);
    let api = learning::routes(api);
    let api = demo::routes(api);
    openapi::routes(api)
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
