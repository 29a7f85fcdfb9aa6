//! Partner notifications: webhooks on `asset.ready` and `asset.failed`.
//!
//! The database writes a delivery row in the same transaction that moves an
//! asset to ready or failed (trigger `assets_notify_webhooks`), so an event
//! can never be lost between the pipeline and this dispatcher, and
//! `(endpoint, asset, event)` is unique, so an endpoint gets each event
//! once. The dispatcher claims due deliveries with `FOR UPDATE SKIP
//! LOCKED` (any number of API nodes may run it), posts the JSON payload
//! signed with the endpoint's secret, and on anything but 2xx retries with
//! exponential backoff up to a limit; every attempt's outcome is kept in
//! the delivery log partners can read.
//!
//! A bad endpoint harms only itself. Deliveries are posted concurrently,
//! each in a task of its own, at most [`WebhookSettings::per_endpoint`] per
//! endpoint at once, so a receiver that is slow to answer neither delays
//! other partners' events nor the next round. A claim outlasts one attempt
//! (every attempt is cut off at the timeout), so no second dispatcher posts
//! a delivery that is still in flight, and an attempt's outcome is recorded
//! only while its claim is the newest. A disabled endpoint is never posted
//! to: it is not claimed, and disabling settles what was pending.
//! Concurrency is bounded twice: `per_endpoint` deliveries of one endpoint
//! in flight (counted in the claim query, so across nodes give or take a
//! race) and `max_in_flight` per node.
//!
//! Outbound safety: every POST goes through `lectern-egress` at delivery
//! time (DNS may have changed since the endpoint was registered): a target
//! that resolves to a private, loopback or link-local address fails the
//! attempt unless `LECTERN_WEBHOOK_ALLOW` names it, the client is pinned to
//! the checked addresses (no rebinding), and redirects are not followed,
//! since one could lead into a private network. Endpoint secrets are shown
//! once and stored sealed with the field keys, bound to the endpoint row.
//!
//! Signature: `Lectern-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<raw body>" keyed with the secret>`. Receivers recompute it,
//! compare in constant time, and refuse timestamps older than a few
//! minutes (replay). `Lectern-Delivery` is stable across retries, for
//! receivers' idempotency.
//!
//! `/metrics` counts what became of each attempt on this node
//! ([`DeliveryCounts`], `lectern_webhook_deliveries_total{outcome}`):
//! `delivered`, `retried` (not taken, another attempt is due), `given_up`
//! (not taken on the last attempt) and `failed` (settled undelivered
//! because its endpoint was disabled). An attempt whose outcome was not
//! recorded (a newer claim won) is not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::Method;
use axum::Json;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use lectern_secrets::random_token;
use lectern_web::metrics::{self, Collector, DescriptorEncoder};
use lectern_web::ErrorCode;
use lectern_web::{Access, Permission, Principal};
use lectern_web::{ApiError, ApiRouter, Created, NoContent};
use lectern_web::{ApiJson, ApiPath};

use super::IngestState;
use lectern_egress::{check_target, AllowList, EgressError};

/// The events an endpoint may subscribe to.
pub const EVENTS: [&str; 2] = ["asset.ready", "asset.failed"];
const SECRET_FIELD: &str = "webhook_endpoints.secret";

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// How often to look for due deliveries.
    pub poll: Duration,
    /// Delay before the first retry; doubles for each further one.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts before a delivery is given up as `failed`.
    pub max_attempts: i32,
    /// One POST, connection included.
    pub timeout: Duration,
    /// Hosts or networks a webhook may point at although they are private
    /// (loopback, RFC 1918…): by default a partner cannot make Lectern post
    /// into its own network. The same rule as URL pulls.
    pub allow_private: AllowList,
    /// Deliveries to one endpoint in flight at once (across nodes, give or
    /// take a race): a slow receiver ties up this many, never the others'.
    pub per_endpoint: u32,
    /// Deliveries one node posts at once.
    pub max_in_flight: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            max_attempts: 12,
            timeout: Duration::from_secs(10),
            allow_private: AllowList::default(),
            per_endpoint: 4,
            max_in_flight: 64,
        }
    }
}

/// What became of webhook deliveries on this node, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    /// By [`Outcome::ALL`]'s order.
    outcomes: [AtomicU64; 4],
}

/// The closed set of `outcome` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retried,
    GivenUp,
    Failed,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Delivered,
        Outcome::Retried,
        Outcome::GivenUp,
        Outcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retried => "retried",
            Outcome::GivenUp => "given_up",
            Outcome::Failed => "failed",
        }
    }
}

impl DeliveryCounts {
    fn add(&self, outcome: Outcome, n: u64) {
        self.outcomes[outcome as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// What `/metrics` shows of these counters, read at each scrape.
    pub fn collector(self: &Arc<Self>) -> Box<dyn Collector> {
        Box::new(DeliveryCollector(self.clone()))
    }
}

#[derive(Debug)]
struct DeliveryCollector(Arc<DeliveryCounts>);

impl Collector for DeliveryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        metrics::counter_by(
            &mut enc,
            "lectern_webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, retried, given_up) and deliveries settled as failed when their endpoint was disabled, on this node.",
            "outcome",
            Outcome::ALL
                .iter()
                .zip(&self.0.outcomes)
                .map(|(o, n)| (o.as_str(), n.load(Ordering::Relaxed))),
        )
    }
}

pub fn routes(api: ApiRouter<IngestState>) -> ApiRouter<IngestState> {
    let manage = Access::Permission(Permission::ManageWebhooks);
    api.route(Method::POST, "/api/v1/webhooks", manage, create)
        .route(Method::GET, "/api/v1/webhooks", manage, list)
        .route(
            Method::DELETE,
            "/api/v1/webhooks/{webhook_id}",
            manage,
            disable,
        )
        .route(
            Method::GET,
            "/api/v1/webhooks/{webhook_id}/deliveries",
            manage,
            deliveries,
        )
}

/// A URL to receive the organisation's events.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewEndpoint {
    /// An absolute `http` or `https` URL without credentials, at most 2000
    /// characters; it must resolve to public addresses when events are sent.
    url: String,
    /// The events to receive: `asset.ready`, `asset.failed`; both when absent.
    events: Option<Vec<String>>,
    /// Only a global super admin names the organisation.
    org_id: Option<Uuid>,
}

/// A registered endpoint, with the secret its events are signed with.
#[derive(Serialize, schemars::JsonSchema)]
struct RegisteredWebhook {
    id: Uuid,
    url: String,
    events: Vec<String>,
    /// The signing secret, shown this once: store it now.
    secret: String,
    /// How each request is signed, for the receiver to verify.
    signature: &'static str,
}

const SIGNATURE_SCHEME: &str =
    "Lectern-Signature: t=<unix>,v1=hex(HMAC-SHA256(secret, \"<t>.<body>\"))";

/// `POST /api/v1/webhooks {"url", "events"?}` → 201 with the signing
/// secret, shown this once.
async fn create(
    State(state): State<IngestState>,
    principal: Principal,
    ApiJson(endpoint): ApiJson<NewEndpoint>,
) -> Result<Created<RegisteredWebhook>, ApiError> {
    let org = principal.target_org(endpoint.org_id)?;
    let url = check_url(&endpoint.url)?;
    let events = endpoint
        .events
        .unwrap_or_else(|| EVENTS.iter().map(|e| e.to_string()).collect());
    if events.is_empty() || events.iter().any(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::new(
            ErrorCode::InvalidEvents,
            format!("events is a non-empty list of {}", EVENTS.join(", ")),
        ));
    }
    let keys = state.keyring()?;
    let id = Uuid::new_v4();
    let secret = random_token("whsec_");
    let inserted = sqlx::query(
        "INSERT INTO webhook_endpoints (id, organisation_id, url, secret_sealed, events)
         SELECT $1, id, $3, $4, $5 FROM organisations WHERE id = $2",
    )
    .bind(id)
    .bind(org)
    .bind(url.as_str())
    .bind(keys.seal(SECRET_FIELD, id, &secret))
    .bind(&events)
    .execute(&state.db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(ApiError::not_found(format!("no organisation {org}")));
    }
    Ok(Created::new(RegisteredWebhook {
        id,
        url: url.to_string(),
        events,
        secret,
        signature: SIGNATURE_SCHEME,
    }))
}

/// Only absolute http(s) URLs without credentials; private targets are
/// checked again at each delivery, after DNS resolution.
fn check_url(url: &str) -> Result<reqwest::Url, ApiError> {
    let invalid = |why: &str| {
        ApiError::new(
            ErrorCode::InvalidUrl,
            format!("{url:?} cannot receive webhooks: {why}"),
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid("only http and https URLs are allowed"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "put no credentials in the URL; verify the signature instead",
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) || url.len() > 2000 {
        return Err(invalid("it needs a host and at most 2000 characters"));
    }
    Ok(parsed)
}

/// A webhook endpoint; its secret is never shown again.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
struct WebhookEndpoint {
    id: Uuid,
    url: String,
    /// The events it receives.
    events: Vec<String>,
    created_at: DateTime<Utc>,
    /// When it was disabled; a disabled endpoint receives nothing.
    disabled_at: Option<DateTime<Utc>>,
}

/// The organisation's webhook endpoints, oldest first.
#[derive(Serialize, schemars::JsonSchema)]
struct WebhookEndpoints {
    webhooks: Vec<WebhookEndpoint>,
}

async fn list(
    State(state): State<IngestState>,
    principal: Principal,
) -> Result<Json<WebhookEndpoints>, ApiError> {
    let webhooks: Vec<WebhookEndpoint> = sqlx::query_as(
        "SELECT id, url, events, created_at, disabled_at FROM webhook_endpoints
         WHERE ($1::uuid IS NULL OR organisation_id = $1) ORDER BY created_at",
    )
    .bind(principal.org_scope())
    .fetch_all(&state.db)
    .await?;
    Ok(Json(WebhookEndpoints { webhooks }))
}

/// Disabling keeps the delivery log; pending deliveries are not sent: they
/// are settled as `failed` at once, so the log says what became of them.
async fn disable(
    State(state): State<IngestState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET disabled_at = coalesce(disabled_at, now())
         WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)",
    )
    .bind(id)
    .bind(principal.org_scope())
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(format!("no webhook {id}")));
    }
    let settled = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'failed', locked_until = NULL,
                last_error = 'the endpoint was disabled before this was delivered'
         WHERE endpoint_id = $1 AND state = 'pending'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    state.webhook_counts.add(Outcome::Failed, settled);
    Ok(NoContent)
}

/// One event's delivery to an endpoint, across its attempts.
#[derive(Serialize, sqlx::FromRow, schemars::JsonSchema)]
struct WebhookDelivery {
    /// Sent as `Lectern-Delivery`, the same on every attempt: deduplicate on it.
    id: Uuid,
    asset_id: Uuid,
    /// `asset.ready` or `asset.failed`.
    event: String,
    /// `pending` (due again at `next_attempt_at`), `delivered` or `failed`
    /// (attempts used up, or the endpoint was disabled).
    state: String,
    /// Attempts made so far.
    attempts: i32,
    /// The HTTP status the receiver answered last, if it answered.
    last_status: Option<i32>,
    /// Why the last attempt did not deliver.
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

/// An endpoint's delivery log, newest first (at most 500).
#[derive(Serialize, schemars::JsonSchema)]
struct WebhookDeliveryLog {
    webhook_id: Uuid,
    deliveries: Vec<WebhookDelivery>,
}

async fn deliveries(
    State(state): State<IngestState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WebhookDeliveryLog>, ApiError> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_endpoints
                        WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2))",
    )
    .bind(id)
    .bind(principal.org_scope())
    .fetch_one(&state.db)
    .await?;
    if !exists {
        return Err(ApiError::not_found(format!("no webhook {id}")));
    }
    let deliveries: Vec<WebhookDelivery> = sqlx::query_as(
        "SELECT id, asset_id, event, state, attempts, last_status, last_error, created_at,
                next_attempt_at, delivered_at
         FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC LIMIT 500",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(WebhookDeliveryLog {
        webhook_id: id,
        deliveries,
    }))
}

/// `t=<unix>,v1=<hex>` for `body` sent at `at`.
pub fn signature(secret: &str, at: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(at.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={at},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(sqlx::FromRow)]
struct Due {
    id: Uuid,
    endpoint_id: Uuid,
    event: String,
    payload: Value,
    /// This attempt's number; it fences the outcome (see [`record`]).
    attempts: i32,
    url: String,
    secret_sealed: Vec<u8>,
}

/// Deliveries claimed in one go.
const CLAIM_BATCH: usize = 32;

/// Runs the dispatcher until `cancel`: every `poll`, claims what is due
/// (as many as this node has room for) and posts each delivery in a task of
/// its own, so a slow receiver holds only its own deliveries and never the
/// next round. On cancel, posts under way may finish (each is bounded by
/// the timeout).
pub async fn dispatch_periodically(state: IngestState, cancel: CancellationToken) {
    let room = state.webhooks.max_in_flight.max(1);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(room));
    let mut tick = tokio::time::interval(state.webhooks.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !state
            .schema_ready
            .load(std::sync::atomic::Ordering::Acquire)
        {
            continue;
        }
        let free = slots.available_permits().min(CLAIM_BATCH);
        if free == 0 {
            continue;
        }
        let due = match claim(&state, free).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "webhook dispatch failed; retrying next round");
                continue;
            }
        };
        for delivery in due {
            let slot = slots
                .clone()
                .try_acquire_owned()
                .expect("no more claimed than there are free slots");
            let state = state.clone();
            tokio::spawn(async move {
                if let Err(e) = attempt(&state, delivery).await {
                    tracing::warn!(error = %e, "cannot record a webhook attempt; it is retried once its claim passes");
                }
                drop(slot);
            });
        }
    }
    let all = u32::try_from(room).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(state.webhooks.timeout, slots.acquire_many(all)).await;
}

/// One round: claims what is due and posts it all concurrently, returning
/// once every attempt is recorded; returns how many were attempted.
pub async fn dispatch_due(state: &IngestState) -> Result<usize, ApiError> {
    let due = claim(state, CLAIM_BATCH).await?;
    let count = due.len();
    let outcomes =
        futures::future::join_all(due.into_iter().map(|delivery| attempt(state, delivery))).await;
    outcomes.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(count)
}

/// How long a claim keeps a delivery from other dispatchers: longer than
/// one attempt (bounded by the timeout) with room to record it, so a
/// receiver that is slow to answer is never posted the same delivery by a
/// second dispatcher meanwhile.
fn claim_hold(settings: &WebhookSettings) -> Duration {
    settings.timeout * 2 + Duration::from_secs(5)
}

/// Claims up to `limit` due deliveries of enabled endpoints, at most
/// `per_endpoint` in flight per endpoint counting those other dispatchers
/// hold, each endpoint's oldest first and every endpoint's first before
/// any endpoint's second. Claiming bumps `attempts` and sets the claim.
async fn claim(state: &IngestState, limit: usize) -> Result<Vec<Due>, ApiError> {
    let settings = &state.webhooks;
    // Without the field keys no secret opens: claim nothing rather than
    // spend attempts on deliveries that cannot be signed.
    state.keyring()?;
    let due: Vec<Due> = sqlx::query_as(
        "WITH in_flight AS (
             SELECT endpoint_id, count(*) AS n FROM webhook_deliveries
             WHERE state = 'pending' AND locked_until >= now()
             GROUP BY endpoint_id),
         candidates AS (
             SELECT d.id, d.next_attempt_at,
                    coalesce(f.n, 0)
                      + row_number() OVER (PARTITION BY d.endpoint_id
                                           ORDER BY d.next_attempt_at, d.id) AS turn
             FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.disabled_at IS NULL
             LEFT JOIN in_flight f ON f.endpoint_id = d.endpoint_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= now()
               AND (d.locked_until IS NULL OR d.locked_until < now())),
         claimed AS (
             UPDATE webhook_deliveries SET attempts = attempts + 1,
                    locked_until = now() + make_interval(secs => $1)
             WHERE id IN (
                 -- The row's own conditions again: they are re-checked on
                 -- the newest version of a row another dispatcher claimed.
                 SELECT d.id FROM webhook_deliveries d
                 WHERE d.id IN (SELECT id FROM candidates WHERE turn <= $2
                                ORDER BY turn, next_attempt_at LIMIT $3)
                   AND d.state = 'pending'
                   AND (d.locked_until IS NULL OR d.locked_until < now())
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, endpoint_id, event, payload, attempts)
         SELECT c.id, c.endpoint_id, c.event, c.payload, c.attempts, e.url, e.secret_sealed
         FROM claimed c JOIN webhook_endpoints e ON e.id = c.endpoint_id",
    )
    .bind(claim_hold(settings).as_secs_f64())
    .bind(i64::from(settings.per_endpoint.max(1)))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&state.db)
    .await?;
    Ok(due)
}

/// Posts one claimed delivery, bounded by the timeout, and records how it went.
async fn attempt(state: &IngestState, delivery: Due) -> Result<(), ApiError> {
    let keys = state.keyring()?;
    let timeout = state.webhooks.timeout;
    let outcome = match keys.open(SECRET_FIELD, delivery.endpoint_id, &delivery.secret_sealed) {
        Ok(secret) => tokio::time::timeout(timeout, post(state, &delivery, &secret))
            .await
            .unwrap_or_else(|_| {
                Err((
                    None,
                    format!(
                        "the receiver did not answer within {} s",
                        timeout.as_secs_f64()
                    ),
                ))
            }),
        Err(e) => Err((None, format!("cannot open the signing secret: {e}"))),
    };
    record(state, &delivery, outcome).await
}

/// One POST. `Err((status, why))` when the receiver did not take it.
async fn post(
    state: &IngestState,
    delivery: &Due,
    secret: &str,
) -> Result<u16, (Option<u16>, String)> {
    let url = reqwest::Url::parse(&delivery.url).map_err(|e| (None, e.to_string()))?;
    let target = check_target(&url, &state.webhooks.allow_private)
        .await
        .map_err(|e| match e {
            EgressError::PrivateAddress { .. } => (None, format!("{e} (LECTERN_WEBHOOK_ALLOW)")),
            e => (None, e.to_string()),
        })?;
    // Connect to exactly the addresses just checked: a second DNS answer
    // (rebinding) cannot point the POST somewhere else; a redirect could
    // lead into a private network, so receivers must answer directly.
    let client = target
        .client_builder()
        .timeout(state.webhooks.timeout)
        .connect_timeout(state.webhooks.timeout)
        .user_agent(concat!("Lectern-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| (None, without_url(e)))?;
    let body = serde_json::to_vec(&delivery.payload).map_err(|e| (None, e.to_string()))?;
    let sent_at = Utc::now().timestamp();
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("lectern-event", &delivery.event)
        .header("lectern-delivery", delivery.id.to_string())
        .header("lectern-signature", signature(secret, sent_at, &body))
        .body(body)
        .send()
        .await
        .map_err(|e| (None, without_url(e)))?;
    let status = response.status().as_u16();
    if response.status().is_success() {
        Ok(status)
    } else {
        Err((Some(status), format!("the receiver answered {status}")))
    }
}

/// reqwest errors name the URL, which may carry a partner's own secrets in
/// its query; the log keeps only what went wrong.
fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// Keeps the outcome of one attempt, unless a newer attempt claimed the
/// delivery meanwhile (its claim had passed: this one was too slow to
/// record) — then the newer one's outcome stands. A failure does not undo a
/// settlement either (the endpoint was disabled meanwhile).
async fn record(
    state: &IngestState,
    delivery: &Due,
    outcome: Result<u16, (Option<u16>, String)>,
) -> Result<(), ApiError> {
    let settings = &state.webhooks;
    match outcome {
        Ok(status) => {
            let recorded = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(),
                        last_status = $2, last_error = NULL, locked_until = NULL
                 WHERE id = $1 AND attempts = $3",
            )
            .bind(delivery.id)
            .bind(i32::from(status))
            .bind(delivery.attempts)
            .execute(&state.db)
            .await?
            .rows_affected();
            state.webhook_counts.add(Outcome::Delivered, recorded);
            tracing::info!(delivery = %delivery.id, event = %delivery.event, attempts = delivery.attempts, "webhook delivered");
        }
        Err((status, why)) => {
            let exhausted = delivery.attempts >= settings.max_attempts;
            let exponent = u32::try_from(delivery.attempts - 1).unwrap_or(0).min(20);
            let delay = settings
                .backoff
                .saturating_mul(2u32.saturating_pow(exponent))
                .min(settings.max_backoff);
            let recorded = sqlx::query(
                "UPDATE webhook_deliveries SET state = $2, last_status = $3, last_error = $4,
                        next_attempt_at = now() + make_interval(secs => $5), locked_until = NULL
                 WHERE id = $1 AND attempts = $6 AND state = 'pending'",
            )
            .bind(delivery.id)
            .bind(if exhausted { "failed" } else { "pending" })
            .bind(status.map(i32::from))
            .bind(&why)
            .bind(delay.as_secs_f64())
            .bind(delivery.attempts)
            .execute(&state.db)
            .await?
            .rows_affected();
            let outcome = if exhausted {
                Outcome::GivenUp
            } else {
                Outcome::Retried
            };
            state.webhook_counts.add(outcome, recorded);
            tracing::warn!(delivery = %delivery.id, event = %delivery.event, attempts = delivery.attempts, exhausted, reason = %why, "webhook not delivered");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_of_timestamp_dot_body() {
        // Independent computation: HMAC-SHA256("whsec_k", "1700000000.{}").
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"whsec_k").unwrap();
        mac.update(b"1700000000.{}");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            signature("whsec_k", 1_700_000_000, b"{}"),
            format!("t=1700000000,v1={expected}")
        );
    }
}
