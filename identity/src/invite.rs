//! Expert invitations. A content admin invites an email address; the token
//! sent to it is `base64url(invitation id ‖ generation ‖ expiry ‖ HMAC)`
//! signed with the token key, so a forged or altered token is refused
//! before the database is asked, the invitation row (which holds no token)
//! makes it single-use, and a copy of the database cannot mint one.
//! Accepting turns the invitee's account (or a new one) into an expert of
//! the organisation.
//!
//! The message goes through `lectern_notify` (topic `invitation`, sealed,
//! enqueued in the transaction that creates or resends the row) with a
//! link `{app_url}/app/invitation?token=…` (the learner app's page). Admins list invitations
//! with their state (pending, accepted, expired, revoked), resend one —
//! the generation goes up, so the earlier link answers
//! `invitation_superseded` — and revoke one (`invitation_revoked`).
//! [`inspect`] lets the page behind the link show what the token is for
//! before the invitee chooses a password.
//!
//! Holding the token proves the email. An account whose owner proved it
//! too (a confirmed sign-up, an earlier invitation) is raised as it is;
//! one whose password someone else may have chosen (created by an
//! operator, or signed up before proof was required) is raised only with
//! a new password from the invitee, and loses its sessions and
//! authenticator, so a password set in the invitee's name never reaches
//! the expert account.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use lectern_notify::{Notification, Recipient, Topic};
use lectern_secrets::Keyring;
use lectern_web::page::Limit;
use lectern_web::{ApiPath, ApiQuery, NoContent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::password;
use crate::users::{create_verified_user, valid_email, NewUser};
use lectern_web::ApiError;
use lectern_web::ApiJson;
use lectern_web::Created;
use lectern_web::ErrorCode;
use lectern_web::{Principal, Role};

use crate::Identity;

/// id ‖ generation ‖ expiry, then the HMAC.
const SIGNED_LEN: usize = 16 + 4 + 8;
const TOKEN_LEN: usize = SIGNED_LEN + 32;

/// `POST /api/v1/invitations`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct InvitationRequest {
    /// Where the invitation goes; the invitee accepts with the token it holds.
    email: String,
    /// Needed only by a global super admin; others invite into their own
    /// organisation, and naming another one answers 404.
    org_id: Option<Uuid>,
}

/// An invitation on its way to the invitee.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Invitation {
    pub id: Uuid,
    /// The organisation the invitee joins as an expert.
    pub org_id: Uuid,
    /// After this the token is refused; invite again.
    pub expires_at: DateTime<Utc>,
}

fn token(keys: &Keyring, id: Uuid, generation: i32, expires_at: DateTime<Utc>) -> String {
    let mut token = Vec::with_capacity(TOKEN_LEN);
    token.extend_from_slice(id.as_bytes());
    token.extend_from_slice(&generation.to_be_bytes());
    token.extend_from_slice(&expires_at.timestamp().to_be_bytes());
    let signature = keys.sign(&token);
    token.extend_from_slice(&signature);
    URL_SAFE_NO_PAD.encode(token)
}

/// Queues the invitation message in `tx` (sealed: the link carries the token).
async fn send(
    state: &Identity,
    tx: &mut sqlx::PgConnection,
    keys: &Keyring,
    row: Sent<'_>,
) -> Result<(), ApiError> {
    let org_name: String = sqlx::query_scalar("SELECT name FROM organisations WHERE id = $1")
        .bind(row.org_id)
        .fetch_one(&mut *tx)
        .await?;
    let link = format!(
        "{}/app/invitation?token={}",
        state.settings.app_url,
        token(keys, row.id, row.generation, row.expires_at)
    );
    lectern_notify::enqueue_sealed(
        tx,
        keys,
        &Notification {
            org_id: Some(row.org_id),
            user_id: None,
            to: Some(Recipient::Email(row.email.to_string())),
            topic: Topic::Invitation,
            params: BTreeMap::from([
                ("org_name".to_string(), org_name),
                ("link".to_string(), link),
                (
                    "expires_at".to_string(),
                    row.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                ),
            ]),
        },
    )
    .await?;
    Ok(())
}

struct Sent<'a> {
    id: Uuid,
    org_id: Uuid,
    generation: i32,
    expires_at: DateTime<Utc>,
    email: &'a str,
}

/// `POST /api/v1/invitations {"email"}` → 201; the token goes to the
/// invitee by e-mail (notify), never into the response.
pub async fn create(
    State(state): State<Identity>,
    principal: Principal,
    ApiJson(req): ApiJson<InvitationRequest>,
) -> Result<Created<Invitation>, ApiError> {
    let keys = state.keyring()?;
    if !valid_email(&req.email) {
        return Err(ApiError::new(
            ErrorCode::InvalidEmail,
            "not an email address",
        ));
    }
    let org_id = match (principal.org_scope(), req.org_id) {
        (Some(own), None) => own,
        (Some(own), Some(named)) if named == own => own,
        (Some(_), Some(named)) | (None, Some(named)) => {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM organisations WHERE id = $1) AND ($2::uuid IS NULL OR $1 = $2)",
            )
            .bind(named)
            .bind(principal.org_scope())
            .fetch_one(&state.db)
            .await?;
            if !exists {
                return Err(ApiError::not_found(format!("no organisation {named}")));
            }
            named
        }
        (None, None) => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "a global super admin names the organisation: {\"org_id\": …}",
            ))
        }
    };
    let id = Uuid::now_v7();
    let email = lectern_secrets::normalise_email(&req.email);
    let mut tx = state.db.begin().await?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO invitations (id, org_id, email_ct, email_bidx, key_id, invited_by, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, date_trunc('second', now()) + make_interval(secs => $7)) \
         RETURNING expires_at",
    )
    .bind(id)
    .bind(org_id)
    .bind(keys.seal("invitations.email", id, &email))
    .bind(keys.email_index(&email))
    .bind(keys.active_key_id())
    .bind(principal.user_id())
    .bind(state.settings.invitation_ttl.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    send(
        &state,
        &mut tx,
        keys,
        Sent {
            id,
            org_id,
            generation: 1,
            expires_at,
            email: &email,
        },
    )
    .await?;
    tx.commit().await?;
    state.notify.wake();
    Ok(Created::new(Invitation {
        id,
        org_id,
        expires_at,
    }))
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Expired,
    Revoked,
}

const STATUS_SQL: &str = "CASE WHEN accepted_at IS NOT NULL THEN 'accepted' \
     WHEN revoked_at IS NOT NULL THEN 'revoked' \
     WHEN expires_at <= now() THEN 'expired' ELSE 'pending' END";

/// `GET /api/v1/invitations?status=&after=&limit=`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct InvitationQuery {
    status: Option<InvitationStatus>,
    /// The `next` of the previous page.
    after: Option<Uuid>,
    limit: Option<i64>,
}

/// An invitation as its organisation's admins see it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct InvitationSummary {
    pub id: Uuid,
    pub org_id: Uuid,
    pub email: String,
    pub status: InvitationStatus,
    /// Times it was sent again (each resend voids the earlier link).
    pub resent: i32,
    pub sent_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub accepted_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// One page of invitations, newest first.
#[derive(Serialize, schemars::JsonSchema)]
pub struct InvitationPage {
    pub invitations: Vec<InvitationSummary>,
    /// Pass as `after` for the next page; null when this page is the last.
    pub next: Option<Uuid>,
}

#[derive(sqlx::FromRow)]
struct ListedRow {
    id: Uuid,
    org_id: Uuid,
    email_ct: Vec<u8>,
    status: String,
    generation: i32,
    sent_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    accepted_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

const INVITATION_PAGE: Limit = Limit::new(50, 200);

fn status_of(text: &str) -> InvitationStatus {
    match text {
        "accepted" => InvitationStatus::Accepted,
        "revoked" => InvitationStatus::Revoked,
        "expired" => InvitationStatus::Expired,
        _ => InvitationStatus::Pending,
    }
}

fn status_name(status: InvitationStatus) -> &'static str {
    match status {
        InvitationStatus::Pending => "pending",
        InvitationStatus::Accepted => "accepted",
        InvitationStatus::Expired => "expired",
        InvitationStatus::Revoked => "revoked",
    }
}

/// `GET /api/v1/invitations`: the organisation's invitations, newest first.
pub async fn list(
    State(state): State<Identity>,
    principal: Principal,
    ApiQuery(q): ApiQuery<InvitationQuery>,
) -> Result<Json<InvitationPage>, ApiError> {
    let keys = state.keyring()?;
    let limit = INVITATION_PAGE.of(q.limit)?;
    let rows: Vec<ListedRow> = sqlx::query_as(&format!(
        "SELECT * FROM (SELECT id, org_id, email_ct, {STATUS_SQL} AS status, generation, sent_at, \
                expires_at, accepted_at, revoked_at, created_at FROM invitations \
             WHERE ($1::uuid IS NULL OR org_id = $1) AND ($2::uuid IS NULL OR id < $2)) i \
         WHERE ($3::text IS NULL OR status = $3) ORDER BY id DESC LIMIT $4"
    ))
    .bind(principal.org_scope())
    .bind(q.after)
    .bind(q.status.map(status_name))
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let mut invitations = Vec::with_capacity(rows.len());
    for r in rows {
        invitations.push(InvitationSummary {
            email: keys
                .open("invitations.email", r.id, &r.email_ct)
                .map_err(ApiError::internal)?,
            id: r.id,
            org_id: r.org_id,
            status: status_of(&r.status),
            resent: r.generation - 1,
            sent_at: r.sent_at,
            expires_at: r.expires_at,
            accepted_at: r.accepted_at,
            revoked_at: r.revoked_at,
            created_at: r.created_at,
        });
    }
    Ok(Json(InvitationPage { invitations, next }))
}

#[derive(sqlx::FromRow)]
struct ManagedRow {
    org_id: Uuid,
    email_ct: Vec<u8>,
    accepted_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// The invitation `id` of the caller's organisation, locked; another
/// organisation's answers 404.
async fn managed(
    tx: &mut sqlx::PgConnection,
    principal: &Principal,
    id: Uuid,
) -> Result<ManagedRow, ApiError> {
    sqlx::query_as(
        "SELECT org_id, email_ct, accepted_at, revoked_at FROM invitations \
         WHERE id = $1 AND ($2::uuid IS NULL OR org_id = $2) FOR UPDATE",
    )
    .bind(id)
    .bind(principal.org_scope())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no invitation {id}")))
}

/// `POST /api/v1/invitations/{invitation_id}/resend`: a new token and a
/// new validity; the earlier link stops working. Pending or expired
/// invitations only (409 `invitation_not_pending` otherwise).
pub async fn resend(
    State(state): State<Identity>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Invitation>, ApiError> {
    let keys = state.keyring()?;
    let mut tx = state.db.begin().await?;
    let row = managed(&mut tx, &principal, id).await?;
    if row.accepted_at.is_some() || row.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvitationNotPending,
            "the invitation was accepted or revoked; invite again instead",
        ));
    }
    let (generation, expires_at): (i32, DateTime<Utc>) = sqlx::query_as(
        "UPDATE invitations SET generation = generation + 1, sent_at = now(), \
             expires_at = date_trunc('second', now()) + make_interval(secs => $2) \
         WHERE id = $1 RETURNING generation, expires_at",
    )
    .bind(id)
    .bind(state.settings.invitation_ttl.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let email = keys
        .open("invitations.email", id, &row.email_ct)
        .map_err(ApiError::internal)?;
    send(
        &state,
        &mut tx,
        keys,
        Sent {
            id,
            org_id: row.org_id,
            generation,
            expires_at,
            email: &email,
        },
    )
    .await?;
    tx.commit().await?;
    state.notify.wake();
    Ok(Json(Invitation {
        id,
        org_id: row.org_id,
        expires_at,
    }))
}

/// `POST /api/v1/invitations/{invitation_id}/revoke`: 204; its link then
/// answers `invitation_revoked`. An accepted invitation cannot be revoked
/// (409; change the expert's role instead); revoking twice is harmless.
pub async fn revoke(
    State(state): State<Identity>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let mut tx = state.db.begin().await?;
    let row = managed(&mut tx, &principal, id).await?;
    if row.accepted_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvitationNotPending,
            "the invitation was already accepted; change the expert's role instead",
        ));
    }
    if row.revoked_at.is_none() {
        sqlx::query("UPDATE invitations SET revoked_at = now(), revoked_by = $2 WHERE id = $1")
            .bind(id)
            .bind(principal.user_id())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(NoContent)
}

/// A token, checked: signature, then expiry, then the row's state.
struct Checked {
    id: Uuid,
    generation: i32,
}

fn check_token(keys: &Keyring, token: &str) -> Result<Checked, ApiError> {
    let raw = URL_SAFE_NO_PAD
        .decode(token.trim())
        .map_err(|_| invalid_token())?;
    if raw.len() != TOKEN_LEN || !keys.verify(&raw[..SIGNED_LEN], &raw[SIGNED_LEN..]) {
        return Err(invalid_token());
    }
    let id = Uuid::from_slice(&raw[..16]).map_err(|_| invalid_token())?;
    let generation = i32::from_be_bytes(raw[16..20].try_into().map_err(|_| invalid_token())?);
    let expires = i64::from_be_bytes(raw[20..28].try_into().map_err(|_| invalid_token())?);
    if expires <= Utc::now().timestamp() {
        return Err(ApiError::new(
            ErrorCode::InvitationExpired,
            "the invitation has expired",
        ));
    }
    Ok(Checked { id, generation })
}

/// Why a genuine token's invitation can no longer be accepted, if it cannot.
fn refusal(
    generation: i32,
    token_generation: i32,
    accepted: bool,
    revoked: bool,
    expired: bool,
) -> Option<ApiError> {
    if accepted {
        Some(ApiError::new(
            ErrorCode::InvitationUsed,
            "the invitation was already accepted",
        ))
    } else if revoked {
        Some(ApiError::new(
            ErrorCode::InvitationRevoked,
            "the invitation was revoked by the organisation",
        ))
    } else if generation != token_generation {
        Some(ApiError::new(
            ErrorCode::InvitationSuperseded,
            "a newer invitation was sent to this address: use the link in the newest message",
        ))
    } else if expired {
        Some(ApiError::new(
            ErrorCode::InvitationExpired,
            "the invitation has expired",
        ))
    } else {
        None
    }
}

/// `POST /api/v1/invitations/inspect`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Inspection {
    /// The token from the invitation link.
    token: String,
}

/// What a valid invitation token is for.
#[derive(Serialize, schemars::JsonSchema)]
pub struct InvitationPreview {
    pub org_id: Uuid,
    pub org_name: String,
    pub expires_at: DateTime<Utc>,
    /// Accepting needs a new password (no account yet, or one whose email
    /// was never proven).
    pub needs_password: bool,
}

#[derive(sqlx::FromRow)]
struct PreviewRow {
    org_id: Uuid,
    org_name: String,
    generation: i32,
    expires_at: DateTime<Utc>,
    accepted: bool,
    revoked: bool,
    expired: bool,
    email_bidx: Vec<u8>,
}

/// `POST /api/v1/invitations/inspect {"token"}`: what the link is for, or
/// why it no longer works (`invitation_revoked`, `invitation_superseded`,
/// `invitation_expired`, `invitation_used`, `invalid_token`).
pub async fn inspect(
    State(state): State<Identity>,
    ApiJson(body): ApiJson<Inspection>,
) -> Result<Json<InvitationPreview>, ApiError> {
    let keys = state.keyring()?;
    let checked = check_token(keys, &body.token)?;
    let row: PreviewRow = sqlx::query_as(
        "SELECT i.org_id, o.name AS org_name, i.generation, i.expires_at, \
                i.accepted_at IS NOT NULL AS accepted, i.revoked_at IS NOT NULL AS revoked, \
                i.expires_at <= now() AS expired, i.email_bidx \
         FROM invitations i JOIN organisations o ON o.id = i.org_id WHERE i.id = $1",
    )
    .bind(checked.id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(invalid_token)?;
    if let Some(e) = refusal(
        row.generation,
        checked.generation,
        row.accepted,
        row.revoked,
        row.expired,
    ) {
        return Err(e);
    }
    let proven: Option<bool> =
        sqlx::query_scalar("SELECT email_verified_at IS NOT NULL FROM users WHERE email_bidx = $1")
            .bind(&row.email_bidx)
            .fetch_optional(&state.db)
            .await?;
    Ok(Json(InvitationPreview {
        org_id: row.org_id,
        org_name: row.org_name,
        expires_at: row.expires_at,
        needs_password: proven != Some(true),
    }))
}

/// `POST /api/v1/invitations/accept`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Acceptance {
    /// The token from the invitation message.
    token: String,
    /// Needed for a new account, and for an existing one whose email was
    /// never confirmed (it then replaces the password and signs the
    /// account out everywhere). An account whose owner confirmed the
    /// email keeps its password.
    password: Option<String>,
}

/// The invitee's account, now an expert of the organisation.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Accepted {
    pub user_id: Uuid,
    pub org_id: Uuid,
    #[schemars(with = "crate::RoleName")]
    pub role: Role,
}

#[derive(sqlx::FromRow)]
struct InvitationRow {
    org_id: Uuid,
    email_ct: Vec<u8>,
    accepted: bool,
    revoked: bool,
    expired: bool,
    generation: i32,
}

/// The account an invitation's email already has.
#[derive(sqlx::FromRow)]
struct ExistingAccount {
    id: Uuid,
    org_id: Option<Uuid>,
    role: String,
    /// Its owner proved the email while choosing the password.
    email_verified: bool,
}

fn invalid_token() -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, "the invitation token is not valid")
}

/// `POST /api/v1/invitations/accept {"token", "password"?}`.
pub async fn accept(
    State(state): State<Identity>,
    ApiJson(body): ApiJson<Acceptance>,
) -> Result<Json<Accepted>, ApiError> {
    let keys = state.keyring()?;
    let Checked {
        id,
        generation: token_generation,
    } = check_token(keys, &body.token)?;
    // Hashed before the transaction: argon2 may wait for a turn behind a
    // burst of sign-ins, and the transaction's connection and row locks
    // must not wait with it. Only a holder of a genuine token gets here.
    let chosen = match body.password.as_deref() {
        Some(password) => Some((password, password::hash(&state, password).await)),
        None => None,
    };
    let mut tx = state.db.begin().await?;
    let invitation: Option<InvitationRow> = sqlx::query_as(
        "SELECT org_id, email_ct, accepted_at IS NOT NULL AS accepted, \
                revoked_at IS NOT NULL AS revoked, expires_at <= now() AS expired, generation \
         FROM invitations WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(InvitationRow {
        org_id,
        email_ct,
        accepted,
        revoked,
        expired,
        generation,
    }) = invitation
    else {
        return Err(invalid_token());
    };
    if let Some(e) = refusal(generation, token_generation, accepted, revoked, expired) {
        return Err(e);
    }
    let email = keys
        .open("invitations.email", id, &email_ct)
        .map_err(ApiError::internal)?;
    let existing: Option<ExistingAccount> =
        sqlx::query_as("SELECT id, org_id, role, email_verified_at IS NOT NULL AS email_verified FROM users WHERE email_bidx = $1 FOR UPDATE")
            .bind(keys.email_index(&email))
            .fetch_optional(&mut *tx)
            .await?;
    let user_id = match existing {
        Some(ExistingAccount {
            id: user_id,
            org_id: user_org,
            role,
            email_verified,
        }) => {
            if user_org != Some(org_id) {
                return Err(ApiError::new(
                    ErrorCode::EmailInUse,
                    "this email belongs to an account of another organisation",
                ));
            }
            // An admin stays an admin: the invitation only ever raises a learner.
            if role != Role::Learner.as_str() && role != Role::Expert.as_str() {
                return Err(ApiError::new(
                    ErrorCode::AlreadyPrivileged,
                    "the account already has a higher role",
                ));
            }
            if email_verified {
                sqlx::query("UPDATE users SET role = 'expert' WHERE id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                // Whoever chose this password never proved the email (an
                // operator, or a sign-up from before proof was required):
                // the invitee — who just did — takes the account over with
                // a password of their own, and nothing of the earlier
                // holder's sign-in survives: sessions, authenticator.
                let Some((password, password_hash)) = &chosen else {
                    return Err(ApiError::new(
                        ErrorCode::PasswordRequired,
                        "this account's email was never confirmed, so its password may not be \
                         yours: choose a new password to accept ({\"token\", \"password\"})",
                    ));
                };
                password::check_policy(password, &email)
                    .map_err(|m| ApiError::new(ErrorCode::WeakPassword, m))?;
                sqlx::query(
                    "UPDATE users SET role = 'expert', password_hash = $2, email_verified_at = now(), \
                     totp_secret_ct = NULL, totp_enabled = false, totp_last_step = NULL \
                     WHERE id = $1",
                )
                .bind(user_id)
                .bind(password_hash)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
                )
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            }
            user_id
        }
        None => {
            let Some((password, password_hash)) = &chosen else {
                return Err(ApiError::new(
                    ErrorCode::PasswordRequired,
                    "choose a password for the new account",
                ));
            };
            create_verified_user(
                &mut *tx,
                keys,
                NewUser {
                    org_id: Some(org_id),
                    email: &email,
                    role: Role::Expert,
                    password,
                },
                password_hash,
            )
            .await?
        }
    };
    sqlx::query("UPDATE invitations SET accepted_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    // After the commit, so no re-read can cache the old role or a revoked
    // session again.
    state.sessions.evict_user(user_id);
    Ok(Json(Accepted {
        user_id,
        org_id,
        role: Role::Expert,
    }))
}
