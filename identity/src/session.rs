//! Signing in and out, and recognising callers: sessions (bearer token or
//! HttpOnly cookie) for people, `lk_…` API keys for content partners.
//! Both are looked up by the SHA-256 of the token — one indexed equality
//! per request, never a password hash on the hot path.
//!
//! Sessions are then cached per node (`SessionCache`), because players send
//! a heartbeat every few seconds and one lookup per request exhausted the
//! pool at 10,000 players. An entry is believed for at most
//! `SESSION_CACHE_TTL` (30 s); from `SESSION_REFRESH_AFTER` (15 s, spread
//! by token) its next use queues a background re-read while the cached
//! answer is still served (stale-while-revalidate, one read per session
//! at a time), so a request waits on PostgreSQL only for a session this
//! node has not recognised recently. Reads run only in background tasks
//! holding one of a few permits (a quarter of the pool, at most 8), each
//! taking every queued token in one `token_hash = ANY($1)` query: a burst
//! of new sessions becomes a few queued queries, not requests failing on
//! the pool's acquire timeout. Revocation bound: sign-out, sign-out
//! everywhere, a role change, an accepted invitation and deleting a person
//! evict on this node at once, and a read that began before an eviction
//! caches nothing, so a revoked session is never put back; other nodes
//! stop believing it within the TTL (the same bound as session-bound
//! playback tokens), never after the session's own expiry. Partner keys
//! are not cached: they are few and revoked from the CLI, another process.
//!
//! Signing in reserves the attempt against the account and the address
//! ([`crate::throttle`]) before the password is checked, so a locked
//! subject costs no argon2 and a crowd of guesses gets at most the limit's
//! worth of checks; the check itself runs off the async workers
//! ([`crate::password::Hasher`]).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_web::doc::{DocOutput, Operation, Schemas};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;

use crate::alerts::{self, Alert, AlertKind, LoginOutcome};
use crate::audit::{self, AuditEvent};
use crate::{ip_range, password, throttle};
use lectern_secrets::{random_token, token_fingerprint};
use lectern_web::ApiError;
use lectern_web::ApiJson;
use lectern_web::ClientContext;
use lectern_web::ErrorCode;
use lectern_web::{Credential, Principal, Role};

use crate::Identity;

pub const SESSION_COOKIE: &str = "lectern_session";
pub const SESSION_PREFIX: &str = "ls_";
pub const PARTNER_KEY_PREFIX: &str = "lk_";

pub(crate) fn bearer_or_cookie(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return auth.strip_prefix("Bearer ").map(str::trim);
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// How long a recognised session is believed without asking PostgreSQL.
/// Players send a heartbeat every few seconds; measured with 10,000 of them
/// (benchmarks/progress), one lookup per request exhausted the database
/// pool before anything else. Bound on revocation: on the node that
/// handles it, logout, sign-out-everywhere, a role change and deleting the
/// person take effect at once (they evict); on other API nodes within this
/// long (the same bound as signed playback URLs' session recheck); never
/// later than the session's own expiry.
pub const SESSION_CACHE_TTL: Duration = Duration::from_secs(30);
/// From this age on, a session's next use re-reads it in the background
/// while the cached answer is still served: a busy session is re-read
/// about every `SESSION_REFRESH_AFTER` (+ up to a quarter, spread by
/// token so sessions first seen together are not re-read together) and
/// never makes a request wait on PostgreSQL, yet is never believed older
/// than [`SESSION_CACHE_TTL`].
pub const SESSION_REFRESH_AFTER: Duration = Duration::from_secs(15);
/// Past this many entries the cache is swept (and cleared if still full).
const SESSION_CACHE_MAX: usize = 200_000;
/// Sessions read by one query (`token_hash = ANY($1)`).
const READ_BATCH: usize = 1_000;
/// Reads of one batch when sign-outs keep landing while it is read;
/// after the last, its waiters get an error rather than a stale answer.
const READS_PER_BATCH: u32 = 5;

/// The cache's clock, adjustable for tests.
#[derive(Debug, Clone, Copy)]
pub struct SessionCacheTiming {
    /// Age from which a use triggers a background re-read.
    pub refresh_after: Duration,
    /// Age past which an entry is never served (a request then waits for
    /// the read).
    pub max_age: Duration,
    /// Between a read's query and the use of its answer: zero, except in
    /// tests that need a sign-out to overtake a read in flight.
    pub read_pause: Duration,
}

impl Default for SessionCacheTiming {
    fn default() -> Self {
        Self {
            refresh_after: SESSION_REFRESH_AFTER,
            max_age: SESSION_CACHE_TTL,
            read_pause: Duration::ZERO,
        }
    }
}

struct Entry {
    principal: Principal,
    refresh_at: Instant,
    serve_until: Instant,
    /// Claimed by the one request that queues the background re-read.
    refreshing: AtomicBool,
}

type ReadResult = Result<Option<Principal>, String>;

/// Sessions to read, each with the requests waiting for it. A token is in
/// `waiting` from the moment it is queued until its read has answered, so
/// a second miss of it joins the first (one read per session at a time).
#[derive(Default)]
struct Reads {
    waiting: HashMap<Vec<u8>, Vec<oneshot::Sender<ReadResult>>>,
    queue: VecDeque<Vec<u8>>,
}

/// Recently recognised sessions, keyed by the token's SHA-256 (the token
/// itself is never kept). Partner keys are not cached: they are few and
/// revoked from the CLI, another process.
///
/// Reads of PostgreSQL happen only in background tasks, at most a few at
/// a time (a semaphore well below the pool size), each for every session
/// queued so far: 10,000 sessions first seen in the same second are a
/// handful of queries that queue for a permit, not 10,000 requests racing
/// for pool connections until the pool's acquire timeout fails them.
pub struct SessionCache {
    timing: SessionCacheTiming,
    map: RwLock<HashMap<Vec<u8>, Entry>>,
    reads: Mutex<Reads>,
    /// Sized from the pool on first use.
    readers: OnceLock<Semaphore>,
    /// Bumped by every eviction: a read that began before an eviction
    /// answers its waiters but caches nothing, so a session revoked while
    /// its re-read was in flight is not put back.
    evictions: AtomicU64,
}

impl Default for SessionCache {
    fn default() -> Self {
        Self::new(SessionCacheTiming::default())
    }
}

enum Cached {
    Fresh(Principal),
    /// Served, and this caller queues its re-read.
    Refresh(Principal),
    Miss,
}

impl SessionCache {
    pub fn new(timing: SessionCacheTiming) -> Self {
        Self {
            timing,
            map: RwLock::default(),
            reads: Mutex::default(),
            readers: OnceLock::new(),
            evictions: AtomicU64::new(0),
        }
    }

    fn cached(&self, fingerprint: &[u8]) -> Cached {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let Some(e) = map.get(fingerprint) else {
            return Cached::Miss;
        };
        let now = Instant::now();
        if now >= e.serve_until {
            Cached::Miss
        } else if now >= e.refresh_at && !e.refreshing.swap(true, Ordering::AcqRel) {
            Cached::Refresh(e.principal)
        } else {
            Cached::Fresh(e.principal)
        }
    }

    /// Queues a read of the session; `true` if it was not queued yet.
    fn enqueue(&self, fingerprint: &[u8], waiter: Option<oneshot::Sender<ReadResult>>) -> bool {
        let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
        let new = !reads.waiting.contains_key(fingerprint);
        if new {
            reads.waiting.insert(fingerprint.to_vec(), Vec::new());
            reads.queue.push_back(fingerprint.to_vec());
        }
        if let Some(w) = waiter {
            reads
                .waiting
                .get_mut(fingerprint)
                .expect("just inserted")
                .push(w);
        }
        new
    }

    fn readers(&self, db: &PgPool) -> &Semaphore {
        self.readers.get_or_init(|| {
            // Leaves most of the pool to handlers, the flusher and audit.
            let permits = (db.options().get_max_connections() / 4).clamp(1, 8);
            Semaphore::new(permits as usize)
        })
    }

    /// Reads every queued session (up to a batch) once a reader permit is
    /// free. Runs in its own task, so a client hanging up cannot abandon
    /// a read other requests wait for.
    async fn read_queued(&self, db: &PgPool) {
        let Ok(_permit) = self.readers(db).acquire().await else {
            return;
        };
        let batch: Vec<Vec<u8>> = {
            let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            let n = reads.queue.len().min(READ_BATCH);
            reads.queue.drain(..n).collect()
        };
        if batch.is_empty() {
            // An earlier reader took ours along.
            return;
        }
        for attempt in 1..=READS_PER_BATCH {
            let epoch = self.evictions.load(Ordering::Acquire);
            let found = read_sessions(db, &batch).await;
            if !self.timing.read_pause.is_zero() {
                tokio::time::sleep(self.timing.read_pause).await;
            }
            if let Ok(found) = &found {
                self.store(&batch, found, epoch);
            } else {
                // Let the next use of a stale entry try again.
                let map = self.map.read().unwrap_or_else(|e| e.into_inner());
                for fp in &batch {
                    if let Some(e) = map.get(fp) {
                        e.refreshing.store(false, Ordering::Release);
                    }
                }
            }
            let mut reads = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock a request takes to join this read: a
            // request that missed because its session was just signed out
            // (the eviction came first) and joined this read, which may
            // have looked before the sign-out, must not be told the
            // session is alive. Read again, waiters kept.
            let overtaken = found.is_ok() && self.evictions.load(Ordering::Acquire) != epoch;
            if overtaken && attempt < READS_PER_BATCH {
                continue;
            }
            for fp in &batch {
                for waiter in reads.waiting.remove(fp).unwrap_or_default() {
                    let answer = match &found {
                        _ if overtaken => {
                            Err("sign-outs kept overtaking the session read; try again".to_owned())
                        }
                        Ok(found) => Ok(found.get(fp).map(|(p, _)| *p)),
                        Err(e) => Err(e.clone()),
                    };
                    // The request may have gone; nothing to tell it then.
                    let _ = waiter.send(answer);
                }
            }
            return;
        }
    }

    fn store(
        &self,
        batch: &[Vec<u8>],
        found: &HashMap<Vec<u8>, (Principal, Duration)>,
        epoch: u64,
    ) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if self.evictions.load(Ordering::Acquire) != epoch {
            // Something was signed out meanwhile; this read may predate it.
            for fp in batch {
                map.remove(fp);
            }
            return;
        }
        let now = Instant::now();
        if map.len() + batch.len() >= SESSION_CACHE_MAX {
            map.retain(|_, e| e.serve_until > now);
            if map.len() + batch.len() >= SESSION_CACHE_MAX {
                map.clear();
            }
        }
        for fp in batch {
            let Some((principal, left)) = found.get(fp) else {
                // Signed out, expired or deleted.
                map.remove(fp);
                continue;
            };
            let serve_until = now + (*left).min(self.timing.max_age);
            // The token's hash is uniform: a quarter's spread from its first byte.
            let spread = self.timing.refresh_after.mul_f64(f64::from(fp[0]) / 1024.0);
            map.insert(
                fp.clone(),
                Entry {
                    principal: *principal,
                    refresh_at: (now + self.timing.refresh_after + spread).min(serve_until),
                    serve_until,
                    refreshing: AtomicBool::new(false),
                },
            );
        }
    }

    fn evict(&self, matches: impl Fn(&Principal) -> bool) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        self.evictions.fetch_add(1, Ordering::AcqRel);
        map.retain(|_, e| !matches(&e.principal));
    }

    /// Forgets one session (signed out).
    pub fn evict_session(&self, session_id: Uuid) {
        self.evict(|p| p.session_id() == Some(session_id));
    }

    /// Forgets every session of a person (signed out everywhere, role
    /// changed, deleted).
    pub fn evict_user(&self, user_id: Uuid) {
        self.evict(|p| p.user_id() == Some(user_id));
    }
}

/// A live session as [`read_sessions`] finds it.
#[derive(sqlx::FromRow)]
struct SessionRow {
    token_hash: Vec<u8>,
    session_id: Uuid,
    user_id: Uuid,
    org_id: Option<Uuid>,
    role: String,
    /// Seconds until the session expires.
    left_s: f64,
}

/// The live sessions among `batch` (token fingerprints).
async fn read_sessions(
    db: &PgPool,
    batch: &[Vec<u8>],
) -> Result<HashMap<Vec<u8>, (Principal, Duration)>, String> {
    let rows: Vec<SessionRow> = sqlx::query_as(
        "SELECT s.token_hash, s.id AS session_id, u.id AS user_id, u.org_id, u.role, \
                extract(epoch FROM s.expires_at - now())::float8 AS left_s \
         FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = ANY($1) AND s.revoked_at IS NULL AND s.expires_at > now()",
    )
    .bind(batch)
    .fetch_all(db)
    .await
    .map_err(|e| e.to_string())?;
    rows.into_iter().map(principal_from_row).collect()
}

fn principal_from_row(row: SessionRow) -> Result<(Vec<u8>, (Principal, Duration)), String> {
    let SessionRow {
        token_hash: fingerprint,
        session_id,
        user_id,
        org_id,
        role,
        left_s,
    } = row;
    let principal = Principal {
        credential: Credential::Session {
            user_id,
            session_id,
        },
        org_id,
        role: role
            .parse()
            .map_err(|e| format!("session {session_id}: {e}"))?,
    };
    let left = Duration::try_from_secs_f64(left_s.max(0.0)).unwrap_or_default();
    Ok((fingerprint, (principal, left)))
}

fn read_in_background(state: &Identity) {
    let state = state.clone();
    tokio::spawn(async move { state.sessions.read_queued(&state.db).await });
}

#[derive(sqlx::FromRow)]
struct PartnerKeyRow {
    id: Uuid,
    org_id: Uuid,
}

/// The caller the request's credentials name, if they are valid now. An
/// unknown, expired or revoked token is simply no caller (routes that need
/// one answer 401).
pub async fn authenticate(
    state: &Identity,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ApiError> {
    let Some(token) = bearer_or_cookie(headers) else {
        return Ok(None);
    };
    let fingerprint = token_fingerprint(token);
    if token.starts_with(PARTNER_KEY_PREFIX) {
        let key: Option<PartnerKeyRow> = sqlx::query_as(
            "SELECT id, org_id FROM partner_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&fingerprint)
        .fetch_optional(&state.db)
        .await?;
        return Ok(key.map(|key| Principal {
            credential: Credential::PartnerKey { key_id: key.id },
            org_id: Some(key.org_id),
            role: Role::Partner,
        }));
    }
    let cache = &state.sessions;
    match cache.cached(&fingerprint) {
        Cached::Fresh(principal) => Ok(Some(principal)),
        Cached::Refresh(principal) => {
            if cache.enqueue(&fingerprint, None) {
                read_in_background(state);
            }
            Ok(Some(principal))
        }
        Cached::Miss => {
            let (tx, rx) = oneshot::channel();
            if cache.enqueue(&fingerprint, Some(tx)) {
                read_in_background(state);
            }
            match rx.await {
                Ok(Ok(principal)) => Ok(principal),
                Ok(Err(e)) => Err(ApiError::internal(e)),
                Err(_) => Err(ApiError::internal("the session read was abandoned")),
            }
        }
    }
}

/// `POST /api/v1/auth/login`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Credentials {
    /// The account's email address (case and surrounding spaces do not matter).
    email: String,
    password: String,
}

// Deliberately no Debug: it would print the password.

/// A new session.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SignedIn {
    /// The session token, shown once: send it as `Authorization: Bearer
    /// <token>`. Browsers can rely on the HttpOnly `lectern_session`
    /// cookie set with this answer instead.
    pub token: String,
    /// When the session ends unless signed out earlier.
    pub expires_at: DateTime<Utc>,
    pub user: SessionUser,
}

/// Who a session belongs to.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SessionUser {
    pub id: Uuid,
    /// `null` only for a global super admin.
    pub org_id: Option<Uuid>,
    #[schemars(with = "crate::RoleName")]
    pub role: Role,
}

/// A JSON answer that also sets (or clears) the session cookie.
pub struct WithSessionCookie<T> {
    status: StatusCode,
    body: Option<T>,
    cookie: HeaderValue,
}

impl<T: Serialize> IntoResponse for WithSessionCookie<T> {
    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, Json(body)).into_response(),
            None => self.status.into_response(),
        };
        response
            .headers_mut()
            .insert(header::SET_COOKIE, self.cookie);
        response
    }
}

impl DocOutput for WithSessionCookie<SignedIn> {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<SignedIn>();
        op.response(
            200,
            "signed in; the HttpOnly `lectern_session` cookie is set too",
            Some(("application/json", schema)),
        );
    }
}

/// Signed out: no body, the cookie cleared.
pub type SignedOut = WithSessionCookie<()>;

impl DocOutput for SignedOut {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        op.response(204, "signed out; the session cookie is cleared", None);
    }
}

pub(crate) fn locked(retry_after: u64) -> ApiError {
    ApiError::new(
        ErrorCode::AccountLocked,
        "too many failed sign-ins; try again later",
    )
    .with_retry_after(retry_after)
}

/// The user an email names, as sign-in reads it.
#[derive(sqlx::FromRow)]
struct LoginRow {
    id: Uuid,
    org_id: Option<Uuid>,
    role: String,
    /// `None` for an account made by another way in without a password.
    password_hash: Option<String>,
}

/// `POST /api/v1/auth/login` → the session token (and cookie).
pub async fn login(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(creds): ApiJson<Credentials>,
) -> Result<WithSessionCookie<SignedIn>, ApiError> {
    let keys = state.keyring()?;
    let policy = state.settings.throttle;
    let index = keys.email_index(&creds.email);
    let account = throttle::account_subject(&index);
    let mut subjects = vec![(account.clone(), policy.account_failures)];
    if let Some(ip) = context.ip.as_deref() {
        subjects.push((throttle::address_subject(ip), policy.address_failures));
    }
    let audit_base = AuditEvent::by(None, &context);
    // Counted before the password is checked, so a crowd of guesses gets
    // at most the limit's worth of checks, and a locked subject costs no
    // argon2 at all.
    let reservation = match throttle::reserve_all(&state.db, &subjects, &policy).await? {
        Ok(reservation) => reservation,
        Err(refused) => {
            state.metrics.login(LoginOutcome::Locked);
            let event = AuditEvent {
                action: "auth.login".into(),
                outcome: "denied",
                detail: Some(
                    json!({ "reason": "locked_out", "subject": refused.kind() }).to_string(),
                ),
                ..audit_base.clone()
            };
            audit::record_or_log(&state, &event).await;
            return Err(locked(refused.retry_after));
        }
    };
    let user: Option<LoginRow> =
        sqlx::query_as("SELECT id, org_id, role, password_hash FROM users WHERE email_bidx = $1")
            .bind(&index)
            .fetch_optional(&state.db)
            .await?;
    let verified = match &user {
        Some(LoginRow {
            password_hash: Some(hash),
            ..
        }) => password::verify(&state, hash, &creds.password).await,
        _ => {
            password::verify_nothing(&state, &creds.password).await;
            false
        }
    };
    let Some(LoginRow {
        id: user_id,
        org_id,
        role,
        ..
    }) = user.filter(|_| verified)
    else {
        state.metrics.login(LoginOutcome::Failure);
        // The attempt stays counted; if it was the limit's last, it locked.
        let account_locked = reservation.locks(&account);
        let address_locked = reservation.locked().any(|s| s != account);
        let event = AuditEvent {
            action: "auth.login".into(),
            outcome: "failed",
            detail: Some(json!({ "reason": "invalid_credentials", "locked": account_locked || address_locked }).to_string()),
            ..audit_base.clone()
        };
        audit::record_or_log(&state, &event).await;
        if account_locked || address_locked {
            alerts::raise(
                &state,
                Alert {
                    kind: AlertKind::BruteForce,
                    org_id: None,
                    user_id: None,
                    ip: context.ip.as_deref(),
                    // The blind index names the account without revealing
                    // the email; an operator can match it to `users.email_bidx`.
                    detail: if account_locked {
                        format!("account {account} locked after repeated failed sign-ins")
                    } else {
                        "address locked after repeated failed sign-ins".to_owned()
                    },
                },
            )
            .await;
        }
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "wrong email or password",
        ));
    };
    reservation.succeeded(&state.db).await?;
    let role: Role = role.parse().map_err(ApiError::internal)?;
    start_session(
        &state,
        &context,
        Account {
            user_id,
            org_id,
            role,
        },
        "password",
    )
    .await
}

/// Whom a new session is for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Account {
    pub user_id: Uuid,
    pub org_id: Option<Uuid>,
    pub role: Role,
}

/// A new session for `account`, proven by `method` (`password`, `sms`,
/// `oidc`, `ldap`, `wechat_mini_program`, `wechat_official_account`): the
/// one place every way in ends, so each gets the same new-range alert,
/// metric, audit row (`auth.login` with the method) and cookie.
pub(crate) async fn start_session(
    state: &Identity,
    context: &ClientContext,
    account: Account,
    method: &'static str,
) -> Result<WithSessionCookie<SignedIn>, ApiError> {
    Ok(start_session_with_id(state, context, account, method)
        .await?
        .0)
}

/// As [`start_session`], with the new session's id (for what is kept
/// alongside it, such as an OIDC session's ID token).
pub(crate) async fn start_session_with_id(
    state: &Identity,
    context: &ClientContext,
    account: Account,
    method: &'static str,
) -> Result<(WithSessionCookie<SignedIn>, Uuid), ApiError> {
    let (token, session_id, expires_at) = insert_session(state, context, account).await?;
    let Account {
        user_id,
        org_id,
        role,
    } = account;
    state.metrics.login(LoginOutcome::Success);
    let principal = Principal {
        credential: Credential::Session {
            user_id,
            session_id,
        },
        org_id,
        role,
    };
    let event = AuditEvent {
        action: "auth.login".into(),
        outcome: "ok",
        detail: Some(json!({ "method": method }).to_string()),
        ..AuditEvent::by(Some(&principal), context)
    };
    audit::record_or_log(state, &event).await;
    let ttl = state.settings.session_ttl;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        ttl.as_secs()
    );
    Ok((
        WithSessionCookie {
            status: StatusCode::OK,
            body: Some(SignedIn {
                token,
                expires_at,
                user: SessionUser {
                    id: user_id,
                    org_id,
                    role,
                },
            }),
            cookie: HeaderValue::from_str(&cookie).map_err(ApiError::internal)?,
        },
        session_id,
    ))
}

impl WithSessionCookie<SignedIn> {
    /// Whose session this is.
    pub(crate) fn user_id(&self) -> Uuid {
        self.body.as_ref().map_or_else(Uuid::nil, |b| b.user.id)
    }
}

impl<T> WithSessionCookie<T> {
    /// The `Set-Cookie` value this answer carries.
    pub(crate) fn cookie(&self) -> &HeaderValue {
        &self.cookie
    }
}

/// The `Set-Cookie` value that clears the session cookie.
pub(crate) fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "lectern_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
    )
}

/// Stores a new session of the account (after the new-range check, which
/// compares with the earlier ones): its token, id and end.
async fn insert_session(
    state: &Identity,
    context: &ClientContext,
    account: Account,
) -> Result<(String, Uuid, DateTime<Utc>), ApiError> {
    let user_id = account.user_id;
    if let Some(ip) = context.ip.as_deref() {
        warn_if_new_range(state, user_id, account.org_id, ip).await?;
    }
    let token = random_token(SESSION_PREFIX);
    let session_id = Uuid::now_v7();
    let ttl = state.settings.session_ttl;
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO sessions (id, user_id, token_hash, expires_at, ip, user_agent) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6) RETURNING expires_at",
    )
    .bind(session_id)
    .bind(user_id)
    .bind(token_fingerprint(&token))
    .bind(ttl.as_secs_f64())
    .bind(&context.ip)
    .bind(&context.user_agent)
    .fetch_one(&state.db)
    .await?;
    Ok((token, session_id, expires_at))
}

async fn warn_if_new_range(
    state: &Identity,
    user_id: Uuid,
    org_id: Option<Uuid>,
    ip: &str,
) -> Result<(), ApiError> {
    let Some(range) = ip_range(ip) else {
        return Ok(());
    };
    let earlier: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT ip FROM sessions WHERE user_id = $1 AND ip IS NOT NULL LIMIT 1000",
    )
    .bind(user_id)
    .fetch_all(&state.db)
    .await?;
    // The first sign-in has nothing to compare with.
    if !earlier.is_empty()
        && !earlier
            .iter()
            .any(|e| ip_range(e).as_deref() == Some(range.as_str()))
    {
        alerts::raise(
            state,
            Alert {
                kind: AlertKind::NewIpRange,
                org_id,
                user_id: Some(user_id),
                ip: Some(ip),
                detail: format!("first sign-in from {range}"),
            },
        )
        .await;
    }
    Ok(())
}

/// `POST /api/v1/auth/logout`: revokes this session and clears the cookie.
pub async fn logout(
    State(state): State<Identity>,
    principal: Principal,
) -> Result<SignedOut, ApiError> {
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(principal.session_id())
        .execute(&state.db)
        .await?;
    if let Some(session_id) = principal.session_id() {
        state.sessions.evict_session(session_id);
    }
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0");
    Ok(WithSessionCookie {
        status: StatusCode::NO_CONTENT,
        body: None,
        cookie: HeaderValue::from_str(&clear).map_err(ApiError::internal)?,
    })
}

/// How many sessions were signed out.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Revoked {
    /// Sessions ended, this one included.
    pub revoked: u64,
}

/// `POST /api/v1/me/sessions/revoke`: signs the person out everywhere
/// (a lost phone, a shared computer), this session included.
pub async fn revoke_all(
    State(state): State<Identity>,
    principal: Principal,
) -> Result<Json<Revoked>, ApiError> {
    let revoked = sqlx::query(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(principal.user_id())
    .execute(&state.db)
    .await?
    .rows_affected();
    if let Some(user_id) = principal.user_id() {
        state.sessions.evict_user(user_id);
    }
    Ok(Json(Revoked { revoked }))
}

/// Who the caller is: a signed-in person or a partner API key.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Me {
    /// A signed-in person.
    User {
        id: Uuid,
        /// `null` only for a global super admin.
        org_id: Option<Uuid>,
        #[schemars(with = "crate::RoleName")]
        role: Role,
        /// `null` for an account made by a first sign-in with a phone,
        /// WeChat or single sign-on that has not added an email.
        email: Option<String>,
        /// The verified phone number (E.164), if one is on the account.
        phone: Option<String>,
        /// Whether the account has a password (accounts made by another
        /// way in have none until their owner sets one).
        has_password: bool,
        /// Whether step-up can use an authenticator app.
        totp_enabled: bool,
    },
    /// A content partner's API key.
    PartnerKey {
        key_id: Uuid,
        org_id: Option<Uuid>,
        #[schemars(with = "crate::RoleName")]
        role: Role,
    },
}

#[derive(sqlx::FromRow)]
struct MeRow {
    email_ct: Option<Vec<u8>>,
    phone_ct: Option<Vec<u8>>,
    has_password: bool,
    totp_enabled: bool,
}

/// `GET /api/v1/me`: who the caller is.
pub async fn me(State(state): State<Identity>, principal: Principal) -> Result<Json<Me>, ApiError> {
    match principal.credential {
        Credential::PartnerKey { key_id } => Ok(Json(Me::PartnerKey {
            key_id,
            org_id: principal.org_id,
            role: principal.role,
        })),
        Credential::Session { user_id, .. } => {
            let keys = state.keyring()?;
            let row: MeRow = sqlx::query_as(
                "SELECT email_ct, CASE WHEN phone_bidx IS NOT NULL THEN phone_ct END AS phone_ct, \
                            password_hash IS NOT NULL AS has_password, totp_enabled \
                     FROM users WHERE id = $1",
            )
            .bind(user_id)
            .fetch_one(&state.db)
            .await?;
            let open = |field: &'static str, ct: Option<Vec<u8>>| {
                ct.map(|ct| keys.open(field, user_id, &ct))
                    .transpose()
                    .map_err(ApiError::internal)
            };
            let email = open("users.email", row.email_ct)?;
            let phone = open("users.phone", row.phone_ct)?;
            Ok(Json(Me::User {
                id: user_id,
                org_id: principal.org_id,
                role: principal.role,
                email,
                phone,
                has_password: row.has_password,
                totp_enabled: row.totp_enabled,
            }))
        }
    }
}
