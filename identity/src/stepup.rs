//! Step-up verification for critical operations. A signed-in person proves
//! presence again — with a TOTP code (RFC 6238) or a one-time code sent
//! through `lectern_notify` (e-mail; never the inbox) — and receives a
//! grant bound to the session, valid for a few minutes and consumed by the
//! one critical request it allows (`lectern_web::router::enforce`). A TOTP
//! code is accepted once: the accepted time step is remembered per user.
//!
//! A stolen session alone cannot bootstrap a step-up: enrolling an
//! authenticator needs the account's password again (or a step-up already
//! proven by email), and replacing an enabled one needs a step-up. Wrong
//! codes — TOTP or one-time, at enrolment or step-up — count per account
//! and per client address in the shared throttle table
//! ([`crate::throttle`]), reserved before the code is checked; past the
//! policy's limit the subject is locked (429 `locked_out`) and a
//! `brute_force` alert is raised. Sending
//! one-time codes is rate-limited per account, a new code supersedes the
//! session's earlier ones, and codes are stored as an HMAC under the token
//! key, so the table alone does not give them away.

use axum::extract::State;
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, TOTP};
use uuid::Uuid;

use crate::alerts::{self, Alert, AlertKind};
use crate::{password, throttle};
use lectern_notify::{Notification, Topic};
use lectern_secrets::Keyring;
use lectern_web::ApiError;
use lectern_web::ApiJson;
use lectern_web::ClientContext;
use lectern_web::ErrorCode;
use lectern_web::Principal;
use lectern_web::{Accepted, NoContent};

use crate::Identity;

const TOTP_STEP: u64 = 30;
const CODE_ATTEMPTS: i32 = 5;
/// One-time codes one account may have sent per throttle window. A
/// critical operation needs its own step-up, so an administrator working
/// through a list asks for several; ten covers that, not a flood.
pub const CODE_SENDS_PER_WINDOW: i32 = 10;

/// What a one-time code is stored as: an HMAC under the token key, bound
/// to its session. A plain hash of six digits is undone by trying a
/// million; this needs the key, which lives in configuration.
fn code_digest(keys: &Keyring, session_id: Uuid, code: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(32 + code.len());
    message.extend_from_slice(b"step-up-code:");
    message.extend_from_slice(session_id.as_bytes());
    message.extend_from_slice(code.as_bytes());
    keys.sign(&message).to_vec()
}

/// The throttle subjects a wrong code counts against, with their limits:
/// the account, and the client address when known.
fn code_subjects(state: &Identity, user_id: Uuid, ip: Option<&str>) -> Vec<(String, i32)> {
    let policy = state.settings.throttle;
    let mut subjects = vec![(format!("step-up:{user_id}"), policy.account_failures)];
    if let Some(ip) = ip {
        subjects.push((
            format!("step-up-ip:{}", throttle::address_key(ip)),
            policy.address_failures,
        ));
    }
    subjects
}

/// Counts the attempt against every subject before the code is checked,
/// or refuses with 429 `locked_out` (with `Retry-After`) while any of
/// them is locked.
async fn reserve_code_attempt(
    state: &Identity,
    subjects: &[(String, i32)],
) -> Result<throttle::Reservation, ApiError> {
    let policy = state.settings.throttle;
    throttle::reserve_all(&state.db, subjects, &policy)
        .await?
        .map_err(|refused| {
            ApiError::new(
                ErrorCode::LockedOut,
                "too many wrong codes or code requests; try again later",
            )
            .with_retry_after(refused.retry_after)
        })
}

/// A wrong code stays counted; raises a `brute_force` alert for each
/// subject it locked.
async fn wrong_code(
    state: &Identity,
    reservation: &throttle::Reservation,
    principal: &Principal,
    ip: Option<&str>,
) {
    for subject in reservation.locked() {
        alerts::raise(
            state,
            Alert {
                kind: AlertKind::BruteForce,
                org_id: principal.org_id,
                user_id: principal.user_id(),
                ip,
                detail: format!(
                    "{} locked after repeated wrong verification codes",
                    subject.split(':').next().unwrap_or("subject")
                ),
            },
        )
        .await;
    }
}

fn totp(secret: Vec<u8>) -> TOTP {
    // SHA-1, 6 digits, 30 s: what every authenticator app expects.
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, TOTP_STEP, secret)
}

fn step_up_required() -> ApiError {
    ApiError::new(
        ErrorCode::StepUpRequired,
        "this operation needs a fresh step-up verification (POST /api/v1/auth/step-up)",
    )
}

fn invalid_code() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCode,
        "the code is wrong, expired or already used",
    )
}

/// Consumes one unused, unexpired grant of the caller's session, or
/// refuses with 403 `step_up_required`.
pub async fn consume_grant(state: &Identity, principal: &Principal) -> Result<(), ApiError> {
    let Some(session_id) = principal.session_id() else {
        return Err(step_up_required());
    };
    let used: Option<Uuid> = sqlx::query_scalar(
        "UPDATE step_up_grants SET used_at = now() WHERE id = ( \
           SELECT id FROM step_up_grants WHERE session_id = $1 AND used_at IS NULL \
           AND expires_at > now() ORDER BY expires_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
         RETURNING id",
    )
    .bind(session_id)
    .fetch_optional(&state.db)
    .await?;
    used.map(|_| ()).ok_or_else(step_up_required)
}

/// The time step `code` is valid for now (±1 step of clock drift).
fn matching_step(totp: &TOTP, code: &str, now: u64) -> Option<u64> {
    [now.saturating_sub(TOTP_STEP), now, now + TOTP_STEP]
        .into_iter()
        .find(|t| bool::from(totp.generate(*t).as_bytes().ct_eq(code.as_bytes())))
        .map(|t| t / TOTP_STEP)
}

fn unix_now() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

/// Checks a TOTP code of the user and marks its step used; false when the
/// code is wrong or was accepted before.
async fn accept_totp(
    state: &Identity,
    user_id: Uuid,
    secret_ct: &[u8],
    code: &str,
) -> Result<bool, ApiError> {
    let keys = state.keyring()?;
    let secret = keys
        .open("users.totp_secret", user_id, secret_ct)
        .map_err(ApiError::internal)?;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(secret)
        .map_err(ApiError::internal)?;
    let Some(step) = matching_step(&totp(secret), code.trim(), unix_now()) else {
        return Ok(false);
    };
    let step = i64::try_from(step).map_err(ApiError::internal)?;
    let fresh = sqlx::query(
        "UPDATE users SET totp_last_step = $2 WHERE id = $1 \
         AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(user_id)
    .bind(step)
    .execute(&state.db)
    .await?
    .rows_affected();
    Ok(fresh == 1)
}

/// A TOTP secret waiting for its first code.
#[derive(Serialize, schemars::JsonSchema)]
pub struct TotpEnrolment {
    /// The shared secret in base32, for typing into an authenticator app.
    pub secret: String,
    /// The same secret as an `otpauth://` URL, for a QR code.
    pub otpauth_url: String,
}

/// `POST /api/v1/me/totp`: `{"password"}`, or `{}` right after a step-up.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct TotpEnrolmentRequest {
    /// The account's password, proving that whoever holds the session
    /// knows it. Leave it out to use a fresh step-up of this session
    /// instead (needed to replace an authenticator that is already enabled).
    #[serde(default)]
    password: Option<String>,
}

// Deliberately no Debug: it would print the password.

#[derive(sqlx::FromRow)]
struct EnrolmentRow {
    email_bidx: Option<Vec<u8>>,
    password_hash: Option<String>,
    totp_enabled: bool,
}

/// `POST /api/v1/me/totp`: a new secret, pending until confirmed with a
/// code. Needs the password (or a fresh step-up) for a first enrolment,
/// and a fresh step-up to replace an enabled authenticator: a session
/// alone must not be able to make itself a second factor.
pub async fn enrol_totp(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiJson(req): ApiJson<TotpEnrolmentRequest>,
) -> Result<Json<TotpEnrolment>, ApiError> {
    let keys = state.keyring()?;
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let row: EnrolmentRow =
        sqlx::query_as("SELECT email_bidx, password_hash, totp_enabled FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_one(&state.db)
            .await?;
    // A missing grant is answered in this route's words; anything else
    // (the database) as it is.
    let without_grant = |e: ApiError, code: ErrorCode, message: &str| {
        if e.code == ErrorCode::StepUpRequired {
            ApiError::new(code, message)
        } else {
            e
        }
    };
    match (&req.password, row.totp_enabled) {
        (_, true) => consume_grant(&state, &principal).await.map_err(|e| {
            without_grant(
                e,
                ErrorCode::StepUpRequired,
                "an authenticator is already enabled: step up with it (or a one-time code) \
                 before replacing it",
            )
        })?,
        (Some(given), false) => {
            check_password(&state, &principal, &context, &row, given).await?;
        }
        (None, false) => consume_grant(&state, &principal).await.map_err(|e| {
            without_grant(
                e,
                ErrorCode::ReauthenticationRequired,
                "enrolling an authenticator needs your password ({\"password\": …}) \
                 or a fresh step-up with a one-time code",
            )
        })?,
    }
    let mut secret = vec![0u8; 20];
    rand::rng().fill_bytes(&mut secret);
    let sealed = keys.seal(
        "users.totp_secret",
        user_id,
        &base64::engine::general_purpose::STANDARD.encode(&secret),
    );
    // The row's `key_id` stays as it is: it names the oldest key the row
    // may use, and rotation re-seals every field of such rows anyway. A
    // replaced authenticator stops working now; the new one works once
    // confirmed.
    sqlx::query(
        "UPDATE users SET totp_secret_ct = $2, totp_enabled = false, totp_last_step = NULL \
         WHERE id = $1",
    )
    .bind(user_id)
    .bind(&sealed)
    .execute(&state.db)
    .await?;
    let base32 = totp(secret).get_secret_base32();
    Ok(Json(TotpEnrolment {
        otpauth_url: format!("otpauth://totp/Lectern:{user_id}?secret={base32}&issuer=Lectern&algorithm=SHA1&digits=6&period=30"),
        secret: base32,
    }))
}

/// The password given again by a signed-in person, throttled exactly as a
/// sign-in (same account and address subjects), so the session cannot be
/// used to guess it faster than the sign-in form allows.
async fn check_password(
    state: &Identity,
    principal: &Principal,
    context: &ClientContext,
    row: &EnrolmentRow,
    given: &str,
) -> Result<(), ApiError> {
    let policy = state.settings.throttle;
    // An account without an email (made by another way in) is counted by
    // its id; it has no password either, so every guess is wrong.
    let account = match &row.email_bidx {
        Some(index) => throttle::account_subject(index),
        None => format!("user:{}", principal.user_id().unwrap_or_default()),
    };
    let mut subjects = vec![(account, policy.account_failures)];
    if let Some(ip) = context.ip.as_deref() {
        subjects.push((throttle::address_subject(ip), policy.address_failures));
    }
    let reservation = throttle::reserve_all(&state.db, &subjects, &policy)
        .await?
        .map_err(|refused| {
            ApiError::new(
                ErrorCode::AccountLocked,
                "too many wrong passwords; try again later",
            )
            .with_retry_after(refused.retry_after)
        })?;
    let right = match &row.password_hash {
        Some(hash) => password::verify(state, hash, given).await,
        None => {
            password::verify_nothing(state, given).await;
            false
        }
    };
    if right {
        // As a sign-in: the account's failures are forgotten.
        reservation.succeeded(&state.db).await?;
        return Ok(());
    }
    for subject in reservation.locked() {
        alerts::raise(
            state,
            Alert {
                kind: AlertKind::BruteForce,
                org_id: principal.org_id,
                user_id: principal.user_id(),
                ip: context.ip.as_deref(),
                detail: format!(
                    "{} locked after repeated wrong passwords from a signed-in session",
                    subject.split(':').next().unwrap_or("subject")
                ),
            },
        )
        .await;
    }
    Err(ApiError::new(
        ErrorCode::WrongPassword,
        "the password is wrong",
    ))
}

/// `POST /api/v1/me/totp/confirm`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct CodeBody {
    /// The six digits the authenticator app shows now.
    code: String,
}

/// `POST /api/v1/me/totp/confirm {"code"}`: enables the pending secret.
pub async fn confirm_totp(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<NoContent, ApiError> {
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let subjects = code_subjects(&state, user_id, context.ip.as_deref());
    let secret: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT totp_secret_ct FROM users WHERE id = $1 AND NOT totp_enabled")
            .bind(user_id)
            .fetch_one(&state.db)
            .await
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::NoPendingTotp,
                    "enrol first with POST /api/v1/me/totp",
                )
            })?;
    let Some(secret) = secret else {
        return Err(ApiError::new(
            ErrorCode::NoPendingTotp,
            "enrol first with POST /api/v1/me/totp",
        ));
    };
    let reservation = reserve_code_attempt(&state, &subjects).await?;
    if !accept_totp(&state, user_id, &secret, &body.code).await? {
        wrong_code(&state, &reservation, &principal, context.ip.as_deref()).await;
        return Err(invalid_code());
    }
    reservation.succeeded(&state.db).await?;
    sqlx::query("UPDATE users SET totp_enabled = true WHERE id = $1")
        .bind(user_id)
        .execute(&state.db)
        .await?;
    Ok(NoContent)
}

/// Where a step-up code goes.
#[derive(sqlx::FromRow)]
struct CodeRecipient {
    org_id: Option<Uuid>,
    has_email: bool,
    phone_ct: Option<Vec<u8>>,
}

/// A one-time code is on its way.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CodeSent {
    /// Until when the code can be used.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/auth/step-up/code`: sends a one-time code to the
/// account's email through the notifier; at most
/// [`CODE_SENDS_PER_WINDOW`] per account per throttle window. The new
/// code replaces the session's earlier ones, so asking for many does not
/// multiply the odds of a guess.
pub async fn send_code(
    State(state): State<Identity>,
    principal: Principal,
) -> Result<Accepted<CodeSent>, ApiError> {
    let keys = state.keyring()?;
    let (user_id, session_id) = principal
        .user_id()
        .zip(principal.session_id())
        .ok_or_else(ApiError::unauthenticated)?;
    // Counted as sent before it is: the limit holds however a delivery
    // fails, and however many requests arrive at once.
    let sends = format!("step-up-send:{user_id}");
    reserve_code_attempt(&state, &[(sends, CODE_SENDS_PER_WINDOW)]).await?;
    let whom: CodeRecipient = sqlx::query_as(
        "SELECT org_id, email_bidx IS NOT NULL AS has_email, \
                CASE WHEN phone_bidx IS NOT NULL THEN phone_ct END AS phone_ct \
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_one(&state.db)
    .await?;
    let org_id = whom.org_id;
    // The account's email; an account made by a phone sign-in without an
    // email gets the code by SMS to its verified number instead.
    let (to_user, to) = match (whom.has_email, whom.phone_ct) {
        (true, _) | (false, None) => (Some(user_id), None),
        (false, Some(ct)) => {
            let phone = keys
                .open("users.phone", user_id, &ct)
                .map_err(ApiError::internal)?;
            (None, Some(lectern_notify::Recipient::Phone(phone)))
        }
    };
    let topic = if to.is_some() {
        Topic::PhoneCode
    } else {
        Topic::StepUpCode
    };
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE step_up_codes SET used_at = now() WHERE session_id = $1 AND used_at IS NULL",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO step_up_codes (id, session_id, code_hash, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(session_id)
    .bind(code_digest(keys, session_id, &code))
    .bind(state.settings.step_up_ttl.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    // Sealed, and in the transaction that stores the code: the code is
    // sent iff it can be used, and the queue never holds it in the clear.
    lectern_notify::enqueue_sealed(
        &mut tx,
        keys,
        &Notification {
            org_id,
            user_id: to_user,
            to,
            topic,
            params: std::collections::BTreeMap::from([("code".to_string(), code)]),
        },
    )
    .await?;
    tx.commit().await?;
    state.notify.wake();
    Ok(Accepted(CodeSent { expires_at }, None))
}

/// `POST /api/v1/auth/step-up`: exactly one of the two.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct StepUpBody {
    /// The code the authenticator app shows now (TOTP enabled).
    totp: Option<String>,
    /// The one-time code sent by `POST /api/v1/auth/step-up/code`.
    code: Option<String>,
}

/// How a step-up was proven.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepUpMethod {
    /// An authenticator app's code.
    Totp,
    /// A one-time code sent through the notifier.
    Code,
}

impl StepUpMethod {
    fn as_str(self) -> &'static str {
        match self {
            StepUpMethod::Totp => "totp",
            StepUpMethod::Code => "code",
        }
    }
}

/// A grant for one critical operation of this session.
#[derive(Serialize, schemars::JsonSchema)]
pub struct StepUpGrant {
    pub method: StepUpMethod,
    /// The next critical request of this session before this time uses it up.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/auth/step-up {"totp"} | {"code"}` → a grant for one
/// critical operation of this session.
pub async fn step_up(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiJson(body): ApiJson<StepUpBody>,
) -> Result<Json<StepUpGrant>, ApiError> {
    let keys = state.keyring()?;
    let (user_id, session_id) = principal
        .user_id()
        .zip(principal.session_id())
        .ok_or_else(ApiError::unauthenticated)?;
    let subjects = code_subjects(&state, user_id, context.ip.as_deref());
    let ip = context.ip.as_deref();
    let (method, reservation) = match (body.totp, body.code) {
        (Some(totp_code), None) => {
            let secret: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT totp_secret_ct FROM users WHERE id = $1 AND totp_enabled",
            )
            .bind(user_id)
            .fetch_optional(&state.db)
            .await?
            .flatten();
            let Some(secret) = secret else {
                return Err(ApiError::new(
                    ErrorCode::TotpNotEnabled,
                    "enrol TOTP first, or use a one-time code",
                ));
            };
            let reservation = reserve_code_attempt(&state, &subjects).await?;
            if !accept_totp(&state, user_id, &secret, &totp_code).await? {
                wrong_code(&state, &reservation, &principal, ip).await;
                return Err(invalid_code());
            }
            (StepUpMethod::Totp, reservation)
        }
        (None, Some(code)) => {
            let reservation = reserve_code_attempt(&state, &subjects).await?;
            // Each wrong guess counts against every open code of the session.
            let matched: Option<Uuid> = sqlx::query_scalar(
                "UPDATE step_up_codes SET used_at = now() WHERE id = ( \
                   SELECT id FROM step_up_codes WHERE session_id = $1 AND code_hash = $2 \
                   AND used_at IS NULL AND expires_at > now() AND attempts < $3 LIMIT 1 FOR UPDATE) \
                 RETURNING id",
            )
            .bind(session_id)
            .bind(code_digest(keys, session_id, code.trim()))
            .bind(CODE_ATTEMPTS)
            .fetch_optional(&state.db)
            .await?;
            if matched.is_none() {
                sqlx::query("UPDATE step_up_codes SET attempts = attempts + 1 WHERE session_id = $1 AND used_at IS NULL")
                    .bind(session_id)
                    .execute(&state.db)
                    .await?;
                wrong_code(&state, &reservation, &principal, ip).await;
                return Err(invalid_code());
            }
            (StepUpMethod::Code, reservation)
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "send exactly one of {\"totp\": \"123456\"} or {\"code\": \"123456\"}",
            ))
        }
    };
    reservation.succeeded(&state.db).await?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO step_up_grants (id, session_id, method, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at",
    )
    .bind(Uuid::now_v7())
    .bind(session_id)
    .bind(method.as_str())
    .bind(state.settings.step_up_ttl.as_secs_f64())
    .fetch_one(&state.db)
    .await?;
    Ok(Json(StepUpGrant { method, expires_at }))
}
