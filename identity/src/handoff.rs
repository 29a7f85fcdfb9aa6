//! Hand-off codes: how a signed-in client opens the learner H5 app signed
//! in, when the page cannot share its session — the WeChat mini-program's
//! `web-view`, which has its own cookie jar and cannot be given a header.
//!
//! The mini-program (signed in with `wx.login`, holding a bearer token)
//! calls `POST /api/v1/auth/handoff` and gets a random code that lives
//! [`HANDOFF_TTL`]; it opens `…/app/#handoff=<code>` in its `web-view`.
//! The code travels in the URL **fragment**, which browsers never send to
//! a server, so no access log, proxy or `Referer` sees it; the H5 reads
//! it, removes it from the address with `history.replaceState` before
//! anything else runs, and redeems it with `POST /api/v1/auth/handoff/redeem`
//! for an ordinary cookie session (`session::start_session`, method
//! `handoff`).
//!
//! A code is stored as its SHA-256 only, works once (the redeeming
//! `UPDATE … WHERE used_at IS NULL` is the one place it is taken), is bound
//! to the session that minted it (signing that session out — or it
//! ending — kills its codes) and to its organisation (the person must
//! still be in it, and a page that names the organisation it expects gets
//! only that organisation's codes). Unknown, used and expired codes get
//! their own codes (`handoff_invalid`, `handoff_used`, `handoff_expired`);
//! every mint and every redemption, refused or not, is audited without
//! the code. Refused codes count against the client address like wrong
//! passwords (`ways::reserve_address`): past the limit, 429
//! `account_locked`.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use lectern_secrets::{random_token, token_fingerprint};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::session::{self, Account, SignedIn, WithSessionCookie};
use crate::ways;
use crate::Identity;
use lectern_web::{ApiError, ApiJson, ClientContext, ErrorCode, Principal, Role};

/// How long a hand-off code can be redeemed: long enough for a `web-view`
/// to load the app on a slow phone, short enough that a leaked one is
/// useless.
pub const HANDOFF_TTL: Duration = Duration::from_secs(60);
/// Codes a session may have waiting at once: a client opening pages has
/// one or two; more is a loop or abuse.
const OPEN_PER_SESSION: i64 = 20;
/// What every hand-off code starts with (so it is recognisable in a leak
/// scanner, like session tokens' `ls_`).
const PREFIX: &str = "lh_";
/// The sign-in method a redeemed code's session is audited with.
const METHOD: &str = "handoff";

/// `POST /api/v1/auth/handoff` → a code to open the H5 app with.
#[derive(Serialize, schemars::JsonSchema)]
pub struct HandoffCode {
    /// The code, shown once: put it in the page's URL fragment
    /// (`/app/#handoff=<code>`), never in the query string.
    pub code: String,
    pub expires_at: DateTime<Utc>,
    /// Seconds the code can be redeemed for.
    pub expires_in: u64,
}

// Deliberately no Debug: the code is a credential until redeemed.

/// `POST /api/v1/auth/handoff`: a single-use code for the caller's own
/// session's person and organisation.
pub async fn mint(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
) -> Result<Json<HandoffCode>, ApiError> {
    let (user_id, session_id) = principal
        .user_id()
        .zip(principal.session_id())
        .ok_or_else(ApiError::unauthenticated)?;
    sqlx::query(
        "DELETE FROM handoff_codes WHERE id IN (SELECT id FROM handoff_codes \
         WHERE expires_at < now() - interval '1 hour' LIMIT 100)",
    )
    .execute(&state.db)
    .await?;
    let open: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM handoff_codes \
         WHERE session_id = $1 AND used_at IS NULL AND expires_at > now()",
    )
    .bind(session_id)
    .fetch_one(&state.db)
    .await?;
    if open >= OPEN_PER_SESSION {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "this session has too many unused hand-off codes; wait a minute",
        )
        .with_retry_after(HANDOFF_TTL.as_secs()));
    }
    let code = random_token(PREFIX);
    let id = Uuid::now_v7();
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO handoff_codes (id, code_hash, user_id, session_id, org_id, expires_at) \
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6)) RETURNING expires_at",
    )
    .bind(id)
    .bind(token_fingerprint(&code))
    .bind(user_id)
    .bind(session_id)
    .bind(principal.org_id)
    .bind(HANDOFF_TTL.as_secs_f64())
    .fetch_one(&state.db)
    .await?;
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "auth.handoff.mint".into(),
            target: Some(format!("user:{user_id}")),
            outcome: "ok",
            detail: Some(
                json!({ "handoff": id, "ttl_seconds": HANDOFF_TTL.as_secs() }).to_string(),
            ),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(HandoffCode {
        code,
        expires_at,
        expires_in: HANDOFF_TTL.as_secs(),
    }))
}

/// `POST /api/v1/auth/handoff/redeem`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct HandoffRedeem {
    /// The code from the page's URL fragment.
    pub code: String,
    /// The organisation the page expects, when its link names one: a code
    /// of another organisation's session is then refused.
    #[serde(default)]
    pub org_id: Option<Uuid>,
}

// Deliberately no Debug: the code is a credential until redeemed.

/// The code taken, with what it is bound to as it is now.
#[derive(sqlx::FromRow)]
struct Taken {
    id: Uuid,
    user_id: Uuid,
    org_id: Option<Uuid>,
    /// The minting session is neither signed out nor past its end.
    session_live: bool,
    user_org: Option<Uuid>,
    role: String,
}

/// Why a code was not taken, read after the taking `UPDATE` found nothing.
#[derive(sqlx::FromRow)]
struct Untaken {
    id: Uuid,
    used: bool,
}

/// `POST /api/v1/auth/handoff/redeem` → a new session (and its cookie) for
/// the code's person.
pub async fn redeem(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(req): ApiJson<HandoffRedeem>,
) -> Result<WithSessionCookie<SignedIn>, ApiError> {
    // Forged codes from one address lock it like wrong passwords do.
    let reservation = ways::reserve_address(&state, &context, METHOD).await?;
    let hash = token_fingerprint(req.code.trim());
    // The one place a code is used up: concurrent redemptions race on
    // `used_at IS NULL` and exactly one wins.
    let taken: Option<Taken> = sqlx::query_as(
        "UPDATE handoff_codes h SET used_at = now() \
         FROM sessions s, users u \
         WHERE h.code_hash = $1 AND h.used_at IS NULL AND h.expires_at > now() \
           AND s.id = h.session_id AND u.id = h.user_id \
         RETURNING h.id, h.user_id, h.org_id, \
           (s.revoked_at IS NULL AND s.expires_at > now()) AS session_live, \
           u.org_id AS user_org, u.role",
    )
    .bind(&hash)
    .fetch_optional(&state.db)
    .await?;
    let Some(taken) = taken else {
        let untaken: Option<Untaken> = sqlx::query_as(
            "SELECT id, used_at IS NOT NULL AS used FROM handoff_codes WHERE code_hash = $1",
        )
        .bind(&hash)
        .fetch_optional(&state.db)
        .await?;
        let (reason, error) = match &untaken {
            None => ("unknown", invalid()),
            Some(u) if u.used => (
                "replayed",
                ApiError::new(
                    ErrorCode::HandoffUsed,
                    "this hand-off code was used already; open the page again from the mini-program",
                ),
            ),
            Some(_) => (
                "expired",
                ApiError::new(
                    ErrorCode::HandoffExpired,
                    "this hand-off code has expired; open the page again from the mini-program",
                ),
            ),
        };
        refused(&state, &context, untaken.map(|u| u.id), None, reason).await;
        ways::failed(&state, &context, &reservation, METHOD, reason).await;
        return Err(error);
    };
    let refusal = if !taken.session_live {
        Some("session_ended")
    } else if taken.user_org != taken.org_id {
        Some("left_organisation")
    } else if req.org_id.is_some() && req.org_id != taken.org_id {
        Some("other_organisation")
    } else {
        None
    };
    if let Some(reason) = refusal {
        refused(
            &state,
            &context,
            Some(taken.id),
            Some(taken.user_id),
            reason,
        )
        .await;
        ways::failed(&state, &context, &reservation, METHOD, reason).await;
        return Err(invalid());
    }
    reservation.returned(&state.db).await?;
    let role: Role = taken.role.parse().map_err(ApiError::internal)?;
    let (signed_in, session_id) = session::start_session_with_id(
        &state,
        &context,
        Account {
            user_id: taken.user_id,
            org_id: taken.user_org,
            role,
        },
        METHOD,
    )
    .await?;
    sqlx::query("UPDATE handoff_codes SET redeemed_session_id = $2 WHERE id = $1")
        .bind(taken.id)
        .bind(session_id)
        .execute(&state.db)
        .await?;
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "auth.handoff.redeem".into(),
            actor: Some(format!("user:{}", taken.user_id)),
            org_id: taken.user_org,
            role: Some(role.as_str().to_owned()),
            target: Some(format!("user:{}", taken.user_id)),
            outcome: "ok",
            detail: Some(json!({ "handoff": taken.id, "session": session_id }).to_string()),
            ..AuditEvent::by(None, &context)
        },
    )
    .await;
    Ok(signed_in)
}

fn invalid() -> ApiError {
    ApiError::new(
        ErrorCode::HandoffInvalid,
        "this hand-off code is not valid here; sign in again in the mini-program",
    )
}

/// Audits a refused redemption by the code's id (never the code).
async fn refused(
    state: &Identity,
    context: &ClientContext,
    handoff: Option<Uuid>,
    user_id: Option<Uuid>,
    reason: &'static str,
) {
    audit::record_or_log(
        state,
        &AuditEvent {
            action: "auth.handoff.redeem".into(),
            target: user_id.map(|u| format!("user:{u}")),
            outcome: "denied",
            detail: Some(json!({ "handoff": handoff, "reason": reason }).to_string()),
            ..AuditEvent::by(None, context)
        },
    )
    .await;
}
