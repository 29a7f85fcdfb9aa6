//! `/metrics`: what an operator's Prometheus scrapes (a super admin, or a
//! scraper on this machine — see `web::router`). One registry holds every
//! area's figures, each registered by the crate that keeps them (identity's
//! security counters, the origin cache, the progress flusher) plus the two
//! kinds only the composition sees:
//!
//! - **requests**: a duration histogram per route *template* (never a raw
//!   path or an id), method and status class, recorded by a route layer so
//!   only registered routes are counted;
//! - **the database as every node sees it**, read at scrape time: the job
//!   queue's depth and oldest age per kind, jobs failed per error code, the
//!   transcodes of the last hour (count, wall time, media seconds: their
//!   ratio is the workers' speed), and this node's connection pool. These are the same on every node (they
//!   come from PostgreSQL): alert on `max`, not `sum`.
//!
//! If PostgreSQL cannot be asked within the probe timeout, the scrape still
//! answers (with `lectern_database_up 0`) so the node's own figures are
//! never lost to the outage they would help diagnose.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use lectern_web::metrics::{self, Registry};
use lectern_web::router::RouteTemplate;
use lectern_web::{Access, ApiRouter, Permission};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use sqlx::FromRow;
use tower::{Layer, Service};

use crate::AppState;

pub fn routes(api: ApiRouter<AppState>) -> ApiRouter<AppState> {
    api.route(
        Method::GET,
        "/metrics",
        Access::Permission(Permission::ReadMetrics),
        scrape,
    )
    .describe(|op| {
        op.summary = Some("Prometheus metrics (OpenMetrics text)");
        op.raw(200, metrics::CONTENT_TYPE, "OpenMetrics text format");
    })
}

/// The registry and the request histogram, built with the state.
pub struct Telemetry {
    registry: Registry,
    requests: Family<RequestLabels, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The route template, e.g. `/api/v1/courses/{id}`.
    route: String,
    /// `2xx`, `4xx`, …
    status: &'static str,
}

impl Telemetry {
    /// `registry` holds what the areas registered.
    pub fn new(mut registry: Registry) -> Self {
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            // 1 ms … ~33 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "lectern_http_request_duration_seconds",
            "Time from a request reaching its route to its response head, by route template, method and status class",
            requests.clone(),
        );
        Self { registry, requests }
    }
}

/// Route layer: records each request's duration under its template, and
/// the template on the request's span (which exists before routing). A
/// nested service (tus) names its template in the response.
///
/// It sits on every `/media` request, the origin's hot path, so the common
/// case costs no allocation and no shared lock beyond the histogram's own:
/// each endpoint service (one per route and method, shared by its clones)
/// remembers the series it last recorded into, and only a request that
/// resolves to another label set (a 405 fallback, a nested service's other
/// templates) goes through the family's map.
#[derive(Clone)]
pub struct Track {
    state: AppState,
}

impl Track {
    pub fn layer(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for Track {
    type Service = Tracked<S>;

    fn layer(&self, inner: S) -> Tracked<S> {
        Tracked {
            inner,
            state: self.state.clone(),
            endpoint: Arc::default(),
        }
    }
}

#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    state: AppState,
    endpoint: Arc<OnceLock<Endpoint>>,
}

/// The label set an endpoint service records into, with one series per
/// status class, created when first used so unused classes never appear.
struct Endpoint {
    method: Method,
    route: Box<str>,
    by_status: [OnceLock<Histogram>; 5],
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl Telemetry {
    fn series(&self, method: &Method, route: &str, class: usize) -> Histogram {
        self.requests.get_or_create_owned(&RequestLabels {
            method: method.as_str().to_string(),
            route: route.to_string(),
            status: STATUS_CLASSES[class],
        })
    }
}

impl<S> Service<Request> for Tracked<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        let (state, endpoint) = (self.state.clone(), self.endpoint.clone());
        Box::pin(async move {
            let Ok(response) = response.await;
            let nested = response.extensions().get::<RouteTemplate>();
            let route = match (&matched, nested) {
                (Some(m), _) => m.as_str(),
                (None, Some(t)) => t.0,
                (None, None) => "unmatched",
            };
            tracing::Span::current().record("http.route", route);
            let class = usize::from(response.status().as_u16() / 100).clamp(1, 5) - 1;
            let elapsed = started.elapsed().as_secs_f64();
            let endpoint = endpoint.get_or_init(|| Endpoint {
                method: method.clone(),
                route: route.into(),
                by_status: Default::default(),
            });
            if endpoint.method == method && *endpoint.route == *route {
                endpoint.by_status[class]
                    .get_or_init(|| state.telemetry.series(&method, route, class))
                    .observe(elapsed);
            } else {
                state
                    .telemetry
                    .series(&method, route, class)
                    .observe(elapsed);
            }
            Ok(response)
        })
    }
}

#[derive(Debug, FromRow)]
struct QueueRow {
    kind: String,
    state: String,
    jobs: i64,
    oldest_s: f64,
}

#[derive(Debug, FromRow)]
struct FailedRow {
    kind: String,
    code: String,
    jobs: i64,
}

async fn scrape(State(state): State<AppState>) -> Response {
    let mut scraped = Registry::default();
    let collect = async {
        let queue: Vec<QueueRow> = sqlx::query_as(
            "SELECT kind, state, count(*) AS jobs, \
                    coalesce(extract(epoch FROM now() - min(run_after)), 0)::float8 AS oldest_s \
             FROM jobs WHERE state IN ('queued', 'running') GROUP BY kind, state",
        )
        .fetch_all(&state.db)
        .await?;
        let failed: Vec<FailedRow> = sqlx::query_as(
            "SELECT kind, coalesce(last_error_code, 'unknown') AS code, count(*) AS jobs \
             FROM jobs WHERE state = 'failed' GROUP BY 1, 2",
        )
        .fetch_all(&state.db)
        .await?;
        // Each transcode that finished in the last hour: from the asset's
        // last move to `transcoding` before it became ready.
        let recent: RecentTranscodes = sqlx::query_as(
            "SELECT count(*) AS transcodes, \
                    coalesce(sum(extract(epoch FROM r.at - t.at)), 0)::float8 AS wall_s, \
                    coalesce(sum(a.duration_s), 0)::float8 AS media_s \
             FROM asset_events r \
             JOIN assets a ON a.id = r.asset_id \
             CROSS JOIN LATERAL (SELECT e.at FROM asset_events e \
                                 WHERE e.asset_id = r.asset_id AND e.to_status = 'transcoding' \
                                   AND e.id < r.id ORDER BY e.id DESC LIMIT 1) t \
             WHERE r.to_status = 'ready' AND r.at > now() - interval '1 hour'",
        )
        .fetch_one(&state.db)
        .await?;
        Ok::<_, sqlx::Error>((queue, failed, recent))
    };
    let up = match tokio::time::timeout(state.probe_timeout, collect).await {
        Ok(Ok((queue, failed, recent))) => {
            scraped.register_collector(Box::new(DatabaseView {
                queue,
                failed,
                recent,
            }));
            1.0
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot read the job queue");
            0.0
        }
        Err(_) => {
            tracing::warn!("metrics: the database did not answer within the probe timeout");
            0.0
        }
    };
    scraped.register_collector(Box::new(PoolView {
        up,
        size: state.db.size(),
        idle: state.db.num_idle(),
    }));
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&[&state.telemetry.registry, &scraped]),
    )
        .into_response()
}

#[derive(Debug, FromRow)]
struct RecentTranscodes {
    transcodes: i64,
    wall_s: f64,
    media_s: f64,
}

#[derive(Debug)]
struct DatabaseView {
    queue: Vec<QueueRow>,
    failed: Vec<FailedRow>,
    recent: RecentTranscodes,
}

impl metrics::Collector for DatabaseView {
    fn encode(&self, mut enc: metrics::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::gauge_by(
            &mut enc,
            "lectern_jobs",
            "Jobs queued or running, by kind and state (from PostgreSQL: the same on every node).",
            self.queue.iter().map(|r| {
                (
                    vec![("kind", r.kind.as_str()), ("state", r.state.as_str())],
                    r.jobs as f64,
                )
            }),
        )?;
        metrics::gauge_by(
            &mut enc,
            "lectern_jobs_oldest_age_seconds",
            "Age of the oldest job due, by kind and state.",
            self.queue.iter().map(|r| {
                (
                    vec![("kind", r.kind.as_str()), ("state", r.state.as_str())],
                    r.oldest_s,
                )
            }),
        )?;
        metrics::gauge_by(
            &mut enc,
            "lectern_jobs_failed",
            "Jobs that failed for good, by kind and error code (see docs/errors.md and the transcoder's media codes).",
            self.failed.iter().map(|r| {
                (
                    vec![("kind", r.kind.as_str()), ("code", r.code.as_str())],
                    r.jobs as f64,
                )
            }),
        )?;
        let r = &self.recent;
        metrics::gauge(
            &mut enc,
            "lectern_transcodes_last_hour",
            "Transcodes that finished (asset ready) in the last hour, on every worker.",
            r.transcodes as f64,
        )?;
        metrics::gauge(
            &mut enc,
            "lectern_transcode_wall_seconds_last_hour",
            "Wall time those transcodes took, from the last move to transcoding to ready.",
            r.wall_s,
        )?;
        metrics::gauge(
            &mut enc,
            "lectern_transcode_media_seconds_last_hour",
            "Media duration of those transcodes: divided by the wall seconds, media seconds per wall second.",
            r.media_s,
        )
    }
}

#[derive(Debug)]
struct PoolView {
    up: f64,
    size: u32,
    idle: usize,
}

impl metrics::Collector for PoolView {
    fn encode(&self, mut enc: metrics::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::gauge(
            &mut enc,
            "lectern_database_up",
            "Whether this scrape could read PostgreSQL within the probe timeout.",
            self.up,
        )?;
        metrics::gauge(
            &mut enc,
            "lectern_database_connections",
            "Connections this node's pool holds.",
            f64::from(self.size),
        )?;
        metrics::gauge(
            &mut enc,
            "lectern_database_connections_idle",
            "Connections of this node's pool not in use.",
            self.idle as f64,
        )
    }
}
