//! URL pull: a partner names a URL and Lectern downloads the source itself.
//!
//! Every hop goes through `lectern-egress`: only `http`/`https`, the host
//! resolved once and every address public unless `LECTERN_PULL_ALLOW`
//! allows it, the client pinned to those addresses; redirects are followed
//! here, a few hops at most, each target checked again from scratch.
//!
//! The body streams into storage ([`Store::put`]) through a guard that
//! counts bytes (a lying or missing `Content-Length` cannot get past the
//! limit), enforces the idle and total timeouts, and turns any violation
//! into a failing body, so the store discards what it had written. The
//! first bytes are sniffed before anything is written: a web page or a PDF
//! is refused with `not_media` without touching storage.
//!
//! Pulls are recorded in the `pulls` table (see [`begin`] and [`run`]): the
//! API answers `202` as soon as the URL passed the checks and a partner
//! polls the pull, which names the asset once the download succeeded (the
//! pull id *is* the asset id) or the stable error code if it failed.
//!
//! A pull outlives the process that runs it: with a [`UrlVault`] the full
//! URL (credentials and signed query included) is kept sealed on the row,
//! and a pull whose heartbeat stopped (its process died or was redeployed)
//! is claimed by any node's [`claim_interrupted`] and downloaded again,
//! [`MAX_ATTEMPTS`] times in all. `attempt` fences the attempts: only the
//! newest may heartbeat, complete or fail the pull, and each stores under a
//! key of its own, so an earlier attempt that was only slow stops at its
//! next heartbeat without touching the newer one's object.
//!
//! The running attempt heartbeats every [`HEARTBEAT`] (5 s), reporting the
//! bytes received; a row silent for [`STALE_AFTER`] (a minute) is
//! claimable. A node stopping gracefully stops its downloads and hands
//! their pulls back ([`hand_back`]: silent as of now), so they resume at
//! once rather than after a minute. A pull that cannot be resumed (no
//! vault, its key retired, attempts used up) fails as `pull_interrupted`,
//! so a partner never polls a dead pull for ever.
//!
//! Quotas ([`PullQuota`]) bound what one organisation may have
//! downloading: a count of running pulls and the bytes they have received
//! (a pull's size is only known as it arrives). Acceptance locks the
//! organisation's row, so two requests cannot both squeeze under the
//! limit; the bytes are checked at every heartbeat, and a running pull
//! that takes its organisation past the limit stops — the newest first,
//! so the older ones finish rather than all being cut short. Both answer
//! `pull_quota_exceeded`. The database is the accounting, so every node
//! sees the same totals.

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use lectern_egress::{check_target, EgressError};
pub use lectern_egress::{redact, AllowList};
use lectern_storage::{ByteStream, ObjectMeta, PutOptions, StorageError, Store};
use lectern_web::ErrorCode;
use reqwest::Url;
use sqlx::PgPool;
use tokio::time::Instant;
use uuid::Uuid;

use crate::sniff::{sniff, MediaSignature, SNIFF_LEN};
use lectern_assets::{self as assets, keys, NewAsset};

/// Operator settings of URL pulls.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// Largest source accepted, in bytes.
    pub max_bytes: u64,
    /// The whole download, first byte to last.
    pub total_timeout: Duration,
    /// Longest silence of the source (connecting, waiting for headers or
    /// for the next chunk) before giving up.
    pub idle_timeout: Duration,
    /// Redirects followed before giving up.
    pub max_redirects: u8,
    /// Hosts and networks that may be pulled from even though they are not
    /// public (an intranet media server).
    pub allow: AllowList,
    /// Profile of assets whose request names none.
    pub default_profile: String,
    /// Profiles a request may name.
    pub profiles: Vec<String>,
    /// What one organisation may have downloading at once.
    pub quota: PullQuota,
}

/// What one organisation may have downloading at once, like
/// [`crate::tus::OrganisationQuota`] for uploads. A pull's size is only
/// known as it arrives, so bytes count as they are received: a new pull is
/// refused while the organisation's running pulls hold the limit, and a
/// running pull that takes the total past it stops (the newest first, so
/// the older ones finish), both with `pull_quota_exceeded`.
#[derive(Debug, Clone)]
pub struct PullQuota {
    pub max_concurrent_pulls: u32,
    /// Bytes received by the organisation's unfinished pulls.
    pub max_bytes_in_flight: u64,
}

impl Default for PullQuota {
    fn default() -> Self {
        PullQuota {
            max_concurrent_pulls: 20,
            max_bytes_in_flight: 100 * 1024 * 1024 * 1024,
        }
    }
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            max_bytes: 50 * 1024 * 1024 * 1024,
            total_timeout: Duration::from_secs(4 * 60 * 60),
            idle_timeout: Duration::from_secs(60),
            max_redirects: 5,
            allow: AllowList::default(),
            default_profile: "default".to_owned(),
            profiles: vec!["default".to_owned()],
            quota: PullQuota::default(),
        }
    }
}

/// Why a pull failed. Each has a stable [`code`](PullError::code); messages
/// never repeat a URL's query string or credentials.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    UrlNotAllowed(String),
    #[error(
        "{host} resolves to {addr}, a {kind} address; Lectern only pulls from public addresses \
         unless the operator allows the host or network in LECTERN_PULL_ALLOW"
    )]
    PrivateAddress {
        host: String,
        addr: IpAddr,
        kind: &'static str,
    },
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Unreachable(String),
    #[error("the source answered HTTP {status}{detail}")]
    HttpError { status: u16, detail: String },
    #[error(
        "the source does not start like a video or audio file (MP4, MOV, MKV, WebM, AVI, FLV, \
         TS, …); check that the URL downloads the file itself, not a web page about it"
    )]
    NotMedia,
    /// A field of the request other than the URL (`invalid_title`,
    /// `invalid_profile`).
    #[error("{1}")]
    InvalidRequest(ErrorCode, String),
    /// A newer attempt owns the pull; this one stops and records nothing.
    #[error("a newer attempt took the pull over")]
    Superseded,
    /// The organisation's pulls in flight are at their quota.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    #[error("database failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<EgressError> for PullError {
    fn from(e: EgressError) -> Self {
        match e {
            EgressError::UrlNotAllowed(m) => PullError::UrlNotAllowed(m),
            EgressError::PrivateAddress { host, addr, kind } => {
                PullError::PrivateAddress { host, addr, kind }
            }
            EgressError::Unreachable(m) => PullError::Unreachable(m),
        }
    }
}

/// Parses a source URL and applies the rules that need no network.
pub fn parse_url(raw: &str) -> Result<Url, PullError> {
    Ok(lectern_egress::parse_url(raw)?)
}

impl PullError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PullError::UrlNotAllowed(_) => ErrorCode::UrlNotAllowed,
            PullError::PrivateAddress { .. } => ErrorCode::PrivateAddress,
            PullError::TooLarge(_) => ErrorCode::SourceTooLarge,
            PullError::Timeout(_) => ErrorCode::SourceTimeout,
            PullError::Unreachable(_) => ErrorCode::SourceUnreachable,
            PullError::HttpError { .. } => ErrorCode::SourceHttpError,
            PullError::NotMedia => ErrorCode::NotMedia,
            PullError::InvalidRequest(code, _) => *code,
            PullError::Superseded => ErrorCode::PullSuperseded,
            PullError::QuotaExceeded(_) => ErrorCode::PullQuotaExceeded,
            PullError::Storage(_) | PullError::Database(_) => ErrorCode::Internal,
        }
    }

    /// Our failure, not the source's nor the caller's.
    pub fn is_internal(&self) -> bool {
        matches!(self, PullError::Storage(_) | PullError::Database(_))
    }

    /// What a partner is shown: internal failures are summarised, since
    /// their details (paths, SQL) are for the operator's log.
    pub fn public_message(&self) -> String {
        if self.is_internal() {
            "the download could not be stored; it has been logged, try again later".to_owned()
        } else {
            self.to_string()
        }
    }
}

/// A download that reached storage.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub meta: ObjectMeta,
    pub signature: MediaSignature,
}

/// When to give up waiting on the source.
#[derive(Clone, Copy)]
struct Clock {
    deadline: Instant,
    idle: Duration,
    total: Duration,
}

impl Clock {
    /// Waits for `fut` no longer than the idle timeout or what is left of
    /// the total one.
    async fn wait<T>(
        &self,
        what: &str,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, PullError> {
        let now = Instant::now();
        let budget = self.idle.min(self.deadline.saturating_duration_since(now));
        tokio::time::timeout(budget, fut)
            .await
            .map_err(|_| self.timeout(what))
    }

    fn timeout(&self, what: &str) -> PullError {
        if Instant::now() >= self.deadline {
            PullError::Timeout(format!(
                "the download did not finish within {} s (LECTERN_PULL_TIMEOUT_SECS)",
                self.total.as_secs()
            ))
        } else {
            PullError::Timeout(format!(
                "the source sent nothing for {} s while {what} (LECTERN_PULL_IDLE_SECS)",
                self.idle.as_secs()
            ))
        }
    }
}

/// Downloads `url` into `key`, following redirects, within the limits of
/// `config`. On any error nothing is left at `key`.
pub async fn download(
    store: &dyn Store,
    key: &str,
    url: &Url,
    config: &PullConfig,
    received: Arc<AtomicU64>,
) -> Result<Downloaded, PullError> {
    let clock = Clock {
        deadline: Instant::now() + config.total_timeout,
        idle: config.idle_timeout,
        total: config.total_timeout,
    };
    let response = fetch(url, config, clock).await?;
    if let Some(length) = response.content_length() {
        if length > config.max_bytes {
            return Err(too_large(config.max_bytes, Some(length)));
        }
    }
    let failure = Arc::new(Mutex::new(None));
    let mut body = guard(
        response.bytes_stream(),
        clock,
        config.max_bytes,
        failure.clone(),
        received,
    );
    // Sniff before storing anything, so a web page never reaches storage.
    let mut head = Vec::with_capacity(SNIFF_LEN);
    while head.len() < SNIFF_LEN {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(_)) => return Err(take_failure(&failure)),
            None => break,
        }
    }
    let signature = sniff(&head).ok_or(PullError::NotMedia)?;
    let whole: ByteStream =
        Box::pin(futures::stream::once(async move { Ok(Bytes::from(head)) }).chain(body));
    match store.put(key, whole, PutOptions::default()).await {
        Ok(meta) => Ok(Downloaded { meta, signature }),
        Err(e) => {
            // The store discards a failed put; deleting again costs nothing
            // and covers a backend that committed before the body failed.
            if let Err(cleanup) = store.delete(key).await {
                tracing::warn!(key, error = %cleanup, "could not remove a failed pull's object");
            }
            let guarded = failure.lock().expect("failure slot").take();
            Err(guarded.unwrap_or(PullError::Storage(e)))
        }
    }
}

fn take_failure(slot: &Mutex<Option<PullError>>) -> PullError {
    slot.lock()
        .expect("failure slot")
        .take()
        .unwrap_or_else(|| PullError::Unreachable("the download failed".to_owned()))
}

fn too_large(limit: u64, announced: Option<u64>) -> PullError {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    PullError::TooLarge(match announced {
        Some(length) => format!(
            "the source is {:.1} MiB; this server accepts at most {:.1} MiB (LECTERN_PULL_MAX_BYTES)",
            mib(length),
            mib(limit)
        ),
        None => format!(
            "the source sent more than {:.1} MiB, the most this server accepts (LECTERN_PULL_MAX_BYTES)",
            mib(limit)
        ),
    })
}

/// Requests `url`, following up to `max_redirects` redirects, each target
/// checked and pinned like the first.
async fn fetch(
    url: &Url,
    config: &PullConfig,
    clock: Clock,
) -> Result<reqwest::Response, PullError> {
    let mut current = url.clone();
    for hop in 0..=config.max_redirects {
        let target = check_target(&current, &config.allow).await?;
        let client = target
            .client_builder()
            .connect_timeout(config.idle_timeout)
            .user_agent(concat!(
                "Lectern/",
                env!("CARGO_PKG_VERSION"),
                " (URL pull)"
            ))
            .build()
            .map_err(|e| PullError::Unreachable(format!("cannot set up the HTTP client: {e}")))?;
        let response = clock
            .wait("connecting", client.get(target.url.clone()).send())
            .await?
            .map_err(|e| unreachable(&target.url, &e))?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| PullError::HttpError {
                    status: status.as_u16(),
                    detail: " without a Location header".to_owned(),
                })?;
            current = current.join(location).map_err(|e| {
                PullError::UrlNotAllowed(format!("the source redirected to an invalid URL ({e})"))
            })?;
            tracing::debug!(hop, to = %redact(&current), "following a redirect");
            continue;
        }
        if status != reqwest::StatusCode::OK {
            return Err(PullError::HttpError {
                status: status.as_u16(),
                detail: status
                    .canonical_reason()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
            });
        }
        return Ok(response);
    }
    Err(PullError::Unreachable(format!(
        "the source redirected more than {} times",
        config.max_redirects
    )))
}

fn unreachable(url: &Url, e: &reqwest::Error) -> PullError {
    let cause = lectern_egress::describe(e);
    let host = url.host_str().unwrap_or_default();
    if cause.is_empty() {
        PullError::Unreachable(format!("cannot reach {host}"))
    } else {
        PullError::Unreachable(format!("cannot reach {host}: {cause}"))
    }
}

/// The response body as a store body that fails, recording why, when the
/// source exceeds the size limit, goes quiet or runs out of time.
fn guard(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    clock: Clock,
    max_bytes: u64,
    failure: Arc<Mutex<Option<PullError>>>,
    received: Arc<AtomicU64>,
) -> ByteStream {
    struct State<S> {
        body: std::pin::Pin<Box<S>>,
        clock: Clock,
        max_bytes: u64,
        total: u64,
        failure: Arc<Mutex<Option<PullError>>>,
        received: Arc<AtomicU64>,
        done: bool,
    }
    let state = State {
        body: Box::pin(body),
        clock,
        max_bytes,
        total: 0,
        failure,
        received,
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let outcome = match st.clock.wait("downloading", st.body.next()).await {
            Ok(None) => return None,
            Ok(Some(Ok(chunk))) => {
                st.total += chunk.len() as u64;
                st.received.store(st.total, Ordering::Relaxed);
                if st.total > st.max_bytes {
                    Err(too_large(st.max_bytes, None))
                } else {
                    Ok(chunk)
                }
            }
            Ok(Some(Err(e))) => Err(PullError::Unreachable(format!(
                "the connection to the source broke after {} bytes: {}",
                st.total,
                e.source()
                    .map_or_else(|| "closed".to_owned(), ToString::to_string)
            ))),
            Err(timeout) => Err(timeout),
        };
        match outcome {
            Ok(chunk) => Some((Ok(chunk), st)),
            Err(e) => {
                let message = e.to_string();
                *st.failure.lock().expect("failure slot") = Some(e);
                st.done = true;
                Some((Err(std::io::Error::other(message)), st))
            }
        }
    }))
}

/// A URL pull asked for by a caller of an organisation.
#[derive(Debug, Clone)]
pub struct PullRequest {
    pub organisation_id: Uuid,
    pub source_url: String,
    pub title: Option<String>,
    pub profile: Option<String>,
}

/// A pull as recorded, and as a partner polls it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct PullRecord {
    /// Also the id of the asset it creates.
    pub id: Uuid,
    pub organisation_id: Uuid,
    /// Redacted: no credentials or query string.
    pub source_url: String,
    pub title: Option<String>,
    pub profile: String,
    /// `pulling`, `completed` or `failed`.
    pub state: String,
    pub received_bytes: i64,
    /// 1 for the first download; more once it was resumed after its
    /// process died.
    pub attempt: i32,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const PULL_COLUMNS: &str = "id, organisation_id, source_url, title, profile, state, \
     received_bytes, attempt, error_code, error_message, created_at, updated_at";

/// How often a running pull proves it is alive; a `pulling` row silent for
/// much longer than this belongs to a process that died.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// Silence after which a `pulling` row is declared interrupted.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Downloads a pull gets in all: the first and the resumptions after its
/// process died. A source that kills every process that pulls it must not
/// take the cluster down forever.
pub const MAX_ATTEMPTS: i32 = 3;

/// Keeps pull URLs sealed at rest, so a pull can be resumed by another
/// process without its URL's secrets (a presigned query, credentials) ever
/// being stored in the clear. The API implements it with the field keys.
pub trait UrlVault: Send + Sync {
    fn seal(&self, pull: Uuid, url: &str) -> Vec<u8>;
    /// `None` if the sealed URL cannot be opened (its key was retired).
    fn open(&self, pull: Uuid, sealed: &[u8]) -> Option<String>;
}

/// A pull that passed every check that needs no download (or was claimed
/// for another attempt), ready to [`run`].
#[derive(Debug)]
pub struct Accepted {
    pub record: PullRecord,
    url: Url,
}

/// Validates a request, checks the first target (so an obviously refused
/// URL is answered at once, not through polling) and records the pull.
/// With a `vault`, the pull can be resumed by another process if this one
/// dies; without one it then fails with `pull_interrupted`.
pub async fn begin(
    db: &PgPool,
    config: &PullConfig,
    vault: Option<&dyn UrlVault>,
    request: PullRequest,
) -> Result<Accepted, PullError> {
    let url = parse_url(&request.source_url)?;
    let title = match request.title.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) if t.chars().count() > 300 || t.chars().any(char::is_control) => {
            return Err(PullError::InvalidRequest(
                ErrorCode::InvalidTitle,
                "title is at most 300 characters without control characters".to_owned(),
            ))
        }
        Some(t) => Some(t.to_owned()),
    };
    let profile = match request.profile {
        None => config.default_profile.clone(),
        Some(p) if config.profiles.contains(&p) => p,
        Some(p) => {
            return Err(PullError::InvalidRequest(
                ErrorCode::InvalidProfile,
                format!(
                    "{p:?} is not an encoding profile; expected one of {}",
                    config.profiles.join(", ")
                ),
            ))
        }
    };
    check_target(&url, &config.allow).await?;
    // Dead pulls nobody will resume must not hold the quota.
    fail_unresumable(db, None).await?;
    let mut tx = db.begin().await?;
    // The organisation's row serialises its acceptances, so two requests
    // cannot both squeeze under the quota.
    sqlx::query("SELECT 1 FROM organisations WHERE id = $1 FOR UPDATE")
        .bind(request.organisation_id)
        .execute(&mut *tx)
        .await?;
    let running: InFlight = sqlx::query_as(
        "SELECT count(*) AS pulls, coalesce(sum(received_bytes), 0)::bigint AS bytes
         FROM pulls WHERE organisation_id = $1 AND state = 'pulling'",
    )
    .bind(request.organisation_id)
    .fetch_one(&mut *tx)
    .await?;
    let quota = &config.quota;
    if running.pulls >= i64::from(quota.max_concurrent_pulls) {
        return Err(PullError::QuotaExceeded(format!(
            "your organisation already has {} URL pulls downloading, the most allowed at once is \
             {}; submit this one again when one has finished",
            running.pulls, quota.max_concurrent_pulls
        )));
    }
    if u64::try_from(running.bytes).unwrap_or(0) >= quota.max_bytes_in_flight {
        return Err(PullError::QuotaExceeded(format!(
            "your organisation's URL pulls in flight have received {} bytes, the most allowed \
             at once is {}; submit this one again when they have finished",
            running.bytes, quota.max_bytes_in_flight
        )));
    }
    let id = Uuid::now_v7();
    let record: PullRecord = sqlx::query_as(&format!(
        "INSERT INTO pulls (id, organisation_id, source_url, source_url_sealed, title, profile)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {PULL_COLUMNS}"
    ))
    .bind(id)
    .bind(request.organisation_id)
    .bind(redact(&url))
    .bind(vault.map(|vault| vault.seal(id, url.as_str())))
    .bind(title)
    .bind(profile)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Accepted { record, url })
}

/// An organisation's unfinished pulls.
#[derive(sqlx::FromRow)]
struct InFlight {
    pulls: i64,
    bytes: i64,
}

/// Downloads an accepted pull and records the outcome: the asset (in the
/// same transaction that marks the pull completed, so the trigger enqueues
/// its transcode) or the failure with its code. Returns the final record.
/// Stops early, recording nothing, if a newer attempt claimed the pull.
pub async fn run(
    db: &PgPool,
    store: &dyn Store,
    config: &PullConfig,
    accepted: Accepted,
) -> Result<PullRecord, PullError> {
    let Accepted { record, url } = accepted;
    let (id, attempt) = (record.id, record.attempt);
    let key = keys::pull_attempt_key(id, attempt);
    let received = Arc::new(AtomicU64::new(0));
    let outcome = tokio::select! {
        outcome = download(store, &key, &url, config, received.clone()) => outcome,
        stopped = keep_alive(db, config, &record, &received) => Err(stopped),
    };
    let result = match outcome {
        Ok(done) => record_success(db, &record, &key, &done).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        if matches!(e, PullError::Superseded) {
            tracing::warn!(pull = %id, attempt, "a newer attempt took the pull over; stopping this one");
        } else if e.is_internal() {
            tracing::error!(pull = %id, error = %e, "URL pull failed");
        } else {
            tracing::info!(pull = %id, code = %e.code(), error = %e, "URL pull refused");
        }
        sqlx::query(
            "UPDATE pulls SET state = 'failed', error_code = $2, error_message = $3,
                 updated_at = now()
             WHERE id = $1 AND state = 'pulling' AND attempt = $4",
        )
        .bind(id)
        .bind(e.code().as_str())
        .bind(e.public_message())
        .bind(attempt)
        .execute(db)
        .await?;
        // The key is this attempt's own; only an asset made of it (a
        // database error may hide a commit) must keep it.
        if !matches!(e, PullError::Database(_)) {
            let _ = store.delete(&key).await;
        }
    }
    status(db, id, None)
        .await?
        .ok_or_else(|| PullError::Database(sqlx::Error::RowNotFound))
}

/// Proves every [`HEARTBEAT`] that this attempt is alive and reports its
/// progress; returns, which stops the download, once a newer attempt owns
/// the pull (or it ended elsewhere), or once the organisation's pulls
/// begun up to this one have received more than their quota of bytes.
async fn keep_alive(
    db: &PgPool,
    config: &PullConfig,
    record: &PullRecord,
    received: &AtomicU64,
) -> PullError {
    let (id, attempt) = (record.id, record.attempt);
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.tick().await;
    loop {
        tick.tick().await;
        let beat = sqlx::query(
            "UPDATE pulls SET received_bytes = $2, updated_at = now()
             WHERE id = $1 AND state = 'pulling' AND attempt = $3",
        )
        .bind(id)
        .bind(i64::try_from(received.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
        .bind(attempt)
        .execute(db)
        .await;
        // A database hiccup is no reason to stop a download that is going
        // well; only a definite "not yours any more" is.
        match beat {
            Ok(done) if done.rows_affected() == 0 => return PullError::Superseded,
            Ok(_) => {}
            Err(_) => continue,
        }
        // Older pulls first: this one stops if it is what takes its
        // organisation past the quota, so they are not all cut short.
        let ahead: Result<i64, _> = sqlx::query_scalar(
            "SELECT coalesce(sum(received_bytes), 0)::bigint FROM pulls
             WHERE organisation_id = $1 AND state = 'pulling' AND (created_at, id) <= ($2, $3)",
        )
        .bind(record.organisation_id)
        .bind(record.created_at)
        .bind(id)
        .fetch_one(db)
        .await;
        let limit = config.quota.max_bytes_in_flight;
        if let Ok(bytes) = ahead {
            if u64::try_from(bytes).unwrap_or(0) > limit {
                return PullError::QuotaExceeded(format!(
                    "your organisation's URL pulls in flight passed {limit} bytes, the most \
                     allowed at once; this one stopped, submit it again when the others have \
                     finished"
                ));
            }
        }
    }
}

/// Claims the oldest pull whose process stopped reporting for
/// [`STALE_AFTER`], for another attempt; `None` when there is none. Call
/// [`run`] on what it returns. A pull that cannot be resumed (no sealed
/// URL, its key retired, attempts used up) is failed with
/// `pull_interrupted` instead, and the next one is looked at.
pub async fn claim_interrupted(
    db: &PgPool,
    vault: &dyn UrlVault,
) -> Result<Option<Accepted>, PullError> {
    // Settled here too, so a pull nobody polls does not stay `pulling`.
    fail_unresumable(db, None).await?;
    loop {
        let claimed: Option<(Uuid, Option<Vec<u8>>)> = sqlx::query_as(
            "UPDATE pulls SET attempt = attempt + 1, received_bytes = 0, updated_at = now()
             WHERE id = (
                 SELECT id FROM pulls
                 WHERE state = 'pulling' AND updated_at < now() - make_interval(secs => $1)
                   AND source_url_sealed IS NOT NULL AND attempt < $2
                 ORDER BY updated_at
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED)
             RETURNING id, source_url_sealed",
        )
        .bind(STALE_AFTER.as_secs_f64())
        .bind(MAX_ATTEMPTS)
        .fetch_optional(db)
        .await?;
        let Some((id, sealed)) = claimed else {
            return Ok(None);
        };
        let url = sealed
            .and_then(|sealed| vault.open(id, &sealed))
            .and_then(|raw| Url::parse(&raw).ok());
        let record = status(db, id, None)
            .await?
            .ok_or(PullError::Database(sqlx::Error::RowNotFound))?;
        match url {
            Some(url) => {
                tracing::info!(pull = %id, attempt = record.attempt, "resuming a URL pull whose process stopped");
                return Ok(Some(Accepted { record, url }));
            }
            None => {
                tracing::warn!(pull = %id, "an interrupted pull's URL cannot be opened; failing it");
                sqlx::query(
                    "UPDATE pulls SET state = 'failed', error_code = 'pull_interrupted',
                         error_message = $2, updated_at = now()
                     WHERE id = $1 AND state = 'pulling'",
                )
                .bind(id)
                .bind(INTERRUPTED)
                .execute(db)
                .await?;
            }
        }
    }
}

async fn record_success(
    db: &PgPool,
    record: &PullRecord,
    key: &str,
    done: &Downloaded,
) -> Result<(), PullError> {
    let mut tx = db.begin().await?;
    let updated = sqlx::query(
        "UPDATE pulls SET state = 'completed', received_bytes = $2, updated_at = now()
         WHERE id = $1 AND state = 'pulling' AND attempt = $3",
    )
    .bind(record.id)
    .bind(i64::try_from(done.meta.size).unwrap_or(i64::MAX))
    .bind(record.attempt)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        // A newer attempt owns the pull, or it was declared interrupted
        // meanwhile (this process looked dead): this copy must not become
        // an asset.
        return Err(PullError::Superseded);
    }
    assets::create(
        &mut *tx,
        &NewAsset {
            id: record.id,
            organisation_id: record.organisation_id,
            source_key: key.to_owned(),
            title: record.title.clone(),
            profile: record.profile.clone(),
            priority: 0,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(pull = %record.id, signature = ?done.signature, size = done.meta.size, "URL pull complete; asset recorded");
    Ok(())
}

/// [`begin`] then [`run`], waiting for the outcome.
pub async fn pull(
    db: &PgPool,
    store: &dyn Store,
    config: &PullConfig,
    request: PullRequest,
) -> Result<PullRecord, PullError> {
    let accepted = begin(db, config, None, request).await?;
    run(db, store, config, accepted).await
}

/// Makes pulls a process is giving up (a graceful shutdown, after their
/// downloads stopped) claimable by [`claim_interrupted`] at once, as if
/// they had been silent for long. Only the given attempts, if still
/// `pulling`: one that completed or was taken over meanwhile is left
/// alone. Returns how many were handed back.
pub async fn hand_back(db: &PgPool, pulls: &[(Uuid, i32)]) -> Result<u64, PullError> {
    let (ids, attempts): (Vec<Uuid>, Vec<i32>) = pulls.iter().copied().unzip();
    Ok(sqlx::query(
        "UPDATE pulls SET updated_at = now() - 2 * make_interval(secs => $3)
         FROM UNNEST($1::uuid[], $2::int[]) AS given (id, attempt)
         WHERE pulls.id = given.id AND pulls.attempt = given.attempt
           AND pulls.state = 'pulling'",
    )
    .bind(ids)
    .bind(attempts)
    .bind(STALE_AFTER.as_secs_f64())
    .execute(db)
    .await?
    .rows_affected())
}

const INTERRUPTED: &str = "the server stopped during the download; submit the URL again";

/// Fails as `pull_interrupted` the silent pulls (one, or with `None` all)
/// that no node will resume: no sealed URL, or attempts used up.
async fn fail_unresumable(db: &PgPool, only: Option<Uuid>) -> Result<(), PullError> {
    sqlx::query(
        "UPDATE pulls SET state = 'failed', error_code = 'pull_interrupted',
             error_message = $4, updated_at = now()
         WHERE ($1::uuid IS NULL OR id = $1) AND state = 'pulling'
           AND updated_at < now() - make_interval(secs => $2)
           AND (source_url_sealed IS NULL OR attempt >= $3)",
    )
    .bind(only)
    .bind(STALE_AFTER.as_secs_f64())
    .bind(MAX_ATTEMPTS)
    .bind(INTERRUPTED)
    .execute(db)
    .await?;
    Ok(())
}

/// A pull as its organisation (or, with `None`, anyone) sees it. A pull
/// still `pulling` whose process stopped reporting, and that no node will
/// resume (no sealed URL, or attempts used up), is declared
/// `pull_interrupted` here, so a partner never polls a dead pull forever.
pub async fn status(
    db: &PgPool,
    id: Uuid,
    org_scope: Option<Uuid>,
) -> Result<Option<PullRecord>, PullError> {
    fail_unresumable(db, Some(id)).await?;
    Ok(sqlx::query_as(&format!(
        "SELECT {PULL_COLUMNS} FROM pulls WHERE id = $1 AND ($2::uuid IS NULL OR organisation_id = $2)"
    ))
    .bind(id)
    .bind(org_scope)
    .fetch_optional(db)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https() {
        for bad in [
            "file:///etc/passwd",
            "ftp://example.org/a.mp4",
            "gopher://x/",
            "not a url",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert_eq!(e.code(), ErrorCode::UrlNotAllowed, "{bad}");
        }
        assert!(parse_url("https://example.org/a.mp4").is_ok());
    }
}
