//! Composition, and nothing else: [`AppState`] holds every area's state,
//! built whole from [`Settings`] before anything starts; [`router`] merges
//! every area's routes into one axum app (health, identity, notifications,
//! uploads, pulls and webhooks, assets and the media origin, catalogue and
//! search, learning, community, analytics, the demo page, the web apps
//! (`/app/`, `/admin/`), and the OpenAPI document generated from the
//! merged route table). Tests drive the app with
//! `tower::ServiceExt::oneshot`, no socket needed. Every request gets an
//! `x-request-id` (the client's, if it sent one), carried in its tracing
//! span and the audit row and echoed in the response, so one id ties a
//! client's report to the logs. The span names the route template, method
//! and status, never the raw path; when traces are exported (the binary's
//! `telemetry.rs`) it is the trace's root, and a job it enqueues continues
//! it (`lectern_telemetry`).
//!
//! **Architecture invariant:** no business logic lives here; an area's
//! behaviour is in its crate, this crate only wires them.

pub mod apps;
pub mod demo;
mod health;
pub mod metrics;
mod openapi;
pub mod uploads;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Request};
use axum::Router;
use lectern_analytics::{AnalyticsSettings, AnalyticsState};
use lectern_catalogue::CatalogueState;
use lectern_community::{CommunitySettings, CommunityState};
use lectern_delivery::{DeliveryParts, DeliveryState, Playback};
use lectern_identity::notifier::{Directory, Outbox};
use lectern_identity::session::SessionCache;
use lectern_identity::{Identity, IdentitySettings};
use lectern_ingest::http::pulls::PullsInFlight;
use lectern_ingest::http::webhooks::WebhookSettings;
use lectern_ingest::http::IngestState;
use lectern_ingest::pull::PullConfig;
use lectern_ingest::tus::TusConfig;
use lectern_learning::{Learning, LearningParts, LearningState};
use lectern_live::{LiveSettings, LiveState};
use lectern_notify::transport::{EmailTransport, SmsTransport};
use lectern_notify::{DispatchSettings, Notify};
use lectern_secrets::Keyring;
use lectern_storage::Store;
use lectern_web::{ApiRouter, Routes};
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// What a deployment decides; every field has the documented default, so
/// tests set only what they exercise.
pub struct Settings {
    /// Field keys; `None` only with an external database and no keys
    /// configured (identity then answers 503 and `/readyz` says why).
    pub keys: Option<Arc<Keyring>>,
    /// How notices leave Lectern (e-mail, SMS) and how the dispatcher
    /// paces itself.
    pub notify: NotifySettings,
    pub identity: IdentitySettings,
    /// The session cache's timing (tests that race sign-outs).
    pub sessions: Option<SessionCache>,
    /// Shared so a test can build a second node on the same caches.
    pub playback: Arc<Playback>,
    pub uploads: TusConfig,
    pub pulls: PullConfig,
    pub webhooks: WebhookSettings,
    pub learning: Learning,
    /// Posting limits and the clock they read.
    pub community: CommunitySettings,
    pub analytics: AnalyticsSettings,
    /// Live ingest (RTMP, SRT), the live ladder and replays.
    pub live: LiveSettings,
    pub demo: demo::DemoSettings,
    pub apps: apps::AppsSettings,
    /// How long a readiness probe may wait on a dependency.
    pub probe_timeout: Duration,
    /// Set once migrations have been applied; until then `/readyz` says
    /// so and background work waits. Ready by default (tests migrate
    /// before they build a state).
    pub schema_ready: Arc<AtomicBool>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keys: None,
            notify: NotifySettings::default(),
            identity: IdentitySettings::default(),
            sessions: None,
            playback: Arc::new(Playback::generate()),
            uploads: TusConfig::default(),
            pulls: PullConfig::default(),
            webhooks: WebhookSettings::default(),
            learning: Learning::default(),
            community: CommunitySettings::default(),
            analytics: AnalyticsSettings::default(),
            live: LiveSettings::default(),
            demo: demo::DemoSettings::default(),
            apps: apps::AppsSettings::default(),
            probe_timeout: Duration::from_secs(2),
            schema_ready: Arc::new(AtomicBool::new(true)),
        }
    }
}

/// notify's transports; `None` is the development outbox (`serve`
/// refuses it outside development).
#[derive(Default)]
pub struct NotifySettings {
    pub email: Option<Arc<dyn EmailTransport>>,
    /// `None`: the outbox when e-mail is the outbox too, otherwise no SMS
    /// (SMS deliveries then fail with a reason in the delivery log).
    pub sms: Option<Arc<dyn SmsTransport>>,
    pub dispatch: DispatchSettings,
}

/// Every area's state: one reference count to clone (axum clones the
/// state for every layer of every request).
#[derive(Clone)]
pub struct AppState(Arc<Areas>);

impl std::ops::Deref for AppState {
    type Target = Areas;

    fn deref(&self) -> &Areas {
        &self.0
    }
}

pub struct Areas {
    pub db: PgPool,
    pub store: Arc<dyn Store>,
    pub schema_ready: Arc<AtomicBool>,
    pub probe_timeout: Duration,
    pub identity: Identity,
    pub notify: Notify,
    pub ingest: IngestState,
    pub uploads: Arc<TusConfig>,
    pub delivery: DeliveryState,
    pub catalogue: CatalogueState,
    pub learning: LearningState,
    pub community: CommunityState,
    pub analytics: AnalyticsState,
    pub live: LiveState,
    pub demo: Arc<demo::DemoSettings>,
    pub telemetry: metrics::Telemetry,
    pub apps: Arc<apps::AppsSettings>,
}

impl AppState {
    /// Builds every area's state at once, so no part can start from a
    /// half-built copy.
    pub fn new(db: PgPool, store: Arc<dyn Store>, settings: Settings) -> Self {
        let outbox = || Arc::new(Outbox::new(db.clone(), settings.keys.clone()));
        let (email, sms): (Arc<dyn EmailTransport>, Option<Arc<dyn SmsTransport>>) =
            match (settings.notify.email, settings.notify.sms) {
                (Some(email), sms) => (email, sms),
                (None, Some(sms)) => (outbox(), Some(sms)),
                (None, None) => (outbox(), Some(outbox())),
            };
        let notify = Notify::new(
            db.clone(),
            settings.keys.clone(),
            email,
            sms,
            Arc::new(Directory::new(db.clone(), settings.keys.clone())),
            settings.notify.dispatch,
        );
        let identity = Identity::with_sessions(
            db.clone(),
            settings.keys.clone(),
            notify.clone(),
            settings.identity,
            settings.sessions.unwrap_or_default(),
        );
        let playback = settings.playback;
        let mut registry = lectern_web::metrics::Registry::default();
        registry.register_collector(identity.metrics.collector());
        registry.register_collector(Box::new(lectern_delivery::cache::CacheCollector(
            playback.media_cache.clone(),
        )));
        settings.learning.flush_metrics.register(&mut registry);
        let webhook_counts = Arc::new(lectern_ingest::http::webhooks::DeliveryCounts::default());
        registry.register_collector(webhook_counts.collector());
        registry.register_collector(lectern_notify::metrics::collector());
        let learning = Arc::new(settings.learning);
        let viewers: lectern_live::ViewerCount = {
            let learning = learning.clone();
            Arc::new(move |lesson| {
                let learning = learning.clone();
                Box::pin(async move { learning.live_viewers(lesson).await.ok() })
            })
        };
        // Live playlists this node writes wake the origin's blocking
        // reloads, here and (over PostgreSQL) on the other nodes.
        let changes = Arc::new(lectern_storage::changes::Changes::default());
        let node = lectern_delivery::blocking::new_node();
        lectern_delivery::blocking::relay(db.clone(), &changes, node);
        AppState(Arc::new(Areas {
            telemetry: metrics::Telemetry::new(registry),
            ingest: IngestState {
                db: db.clone(),
                store: store.clone(),
                keys: settings.keys,
                pulls: Arc::new(settings.pulls),
                pulls_in_flight: Arc::new(PullsInFlight::default()),
                webhooks: Arc::new(settings.webhooks),
                webhook_counts,
                schema_ready: settings.schema_ready.clone(),
            },
            uploads: Arc::new(settings.uploads),
            delivery: DeliveryState::new(DeliveryParts {
                db: db.clone(),
                store: store.clone(),
                playback: playback.clone(),
                identity: identity.clone(),
                changes: changes.clone(),
                node,
            }),
            catalogue: CatalogueState {
                db: db.clone(),
                store: store.clone(),
            },
            learning: LearningState::new(LearningParts {
                db: db.clone(),
                learning,
                playback,
                schema_ready: settings.schema_ready.clone(),
            }),
            community: CommunityState::new(db.clone(), identity.clone(), &settings.community),
            analytics: AnalyticsState {
                db: db.clone(),
                identity: identity.clone(),
                store: store.clone(),
                settings: Arc::new(settings.analytics),
                schema_ready: settings.schema_ready.clone(),
            },
            live: LiveState::new(db.clone(), store.clone(), identity.clone(), settings.live)
                .with_viewers(viewers)
                .with_changes(changes),
            demo: Arc::new(settings.demo),
            apps: Arc::new(settings.apps),
            identity,
            notify,
            schema_ready: settings.schema_ready,
            probe_timeout: settings.probe_timeout,
            db,
            store,
        }))
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The routes of every area that callers reach with a session or an API
/// key (they pass the identity middleware), and the media routes whose
/// credential is the playback token in the URL (they do not).
pub fn routes(state: &AppState) -> (Routes, Routes) {
    let gate = state.identity.gate();
    fn on<S: Clone + Send + Sync + 'static>(gate: &lectern_web::Gate) -> ApiRouter<S> {
        ApiRouter::new(gate.clone())
    }
    let noop = state.learning.learning.settings.bench_noop;
    let api = Routes::default()
        .merge(health::routes(on(&gate)).with_state(state.clone()))
        .merge(metrics::routes(on(&gate)).with_state(state.clone()))
        .merge(lectern_identity::routes(on(&gate)).with_state(state.identity.clone()))
        .merge(lectern_notify::routes(on(&gate)).with_state(state.notify.clone()))
        .merge(uploads::routes(on(&gate), state).with_state(state.clone()))
        .merge(lectern_ingest::http::routes(on(&gate)).with_state(state.ingest.clone()))
        .merge(lectern_delivery::routes(on(&gate)).with_state(state.delivery.clone()))
        .merge(lectern_catalogue::routes(on(&gate)).with_state(state.catalogue.clone()))
        .merge(lectern_learning::routes(on(&gate), noop).with_state(state.learning.clone()))
        .merge(lectern_community::routes(on(&gate)).with_state(state.community.clone()))
        .merge(lectern_analytics::routes(on(&gate)).with_state(state.analytics.clone()))
        .merge(lectern_live::routes(on(&gate)).with_state(state.live.clone()))
        .merge(demo::routes(on(&gate)).with_state(state.clone()))
        .merge(apps::routes(on(&gate)).with_state(state.clone()));
    let media = lectern_delivery::media_routes(on(&gate)).with_state(state.delivery.clone());
    let api = openapi::attach(api, media.table(), &gate);
    (api, media)
}

/// Every registered route with its access rule (the authorisation matrix
/// and the OpenAPI document enumerate this).
pub fn route_table(state: &AppState) -> Vec<lectern_web::RouteSpec> {
    let (api, media) = routes(state);
    api.table().iter().chain(media.table()).cloned().collect()
}

/// The span of one request, also what an OpenTelemetry exporter sends: the
/// method, the route *template* (`metrics::Track` records it once routing
/// has matched; never the raw path, which may carry ids), the status and
/// the request id. No header, query or body: no credential or personal
/// data reaches a log line or a trace.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    use tracing::field::Empty;
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %req.method(),
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = %id,
    )
}

fn record_status<B>(res: &axum::http::Response<B>, latency: Duration, span: &tracing::Span) {
    let status = res.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    tracing::debug!(
        latency_ms = latency.as_millis() as u64,
        status = status.as_u16(),
        "finished processing request"
    );
}

pub fn router(state: AppState) -> Router {
    let (api, media) = routes(&state);
    let (api, _) = api.into_parts();
    let (media, _) = media.into_parts();
    let track = metrics::Track::layer(state.clone());
    let (api, media) = (api.route_layer(track.clone()), media.route_layer(track));
    api.fallback(lectern_web::error::not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.identity.clone(),
            lectern_identity::middleware,
        ))
        .merge(media.layer(lectern_delivery::Cors))
        .layer(axum::middleware::from_fn_with_state(
            state.identity.clone(),
            lectern_identity::security_headers,
        ))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_status),
        )
        // Outermost, so the id exists before tracing and every handler.
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
