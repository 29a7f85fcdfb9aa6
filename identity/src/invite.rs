//! Expert invitations. A content admin invites an email address; the token
//! sent to it is `base64url(invitation id ‖ expiry ‖ HMAC)` signed with the
//! token key, so a forged or altered token is refused before the database
//! is asked, the invitation row (which holds no token) makes it single-use,
//! and a copy of the database cannot mint one. Accepting turns the
//! invitee's account (or a new one) into an expert of the organisation.
//!
//! Holding the token proves the email. An account whose owner proved it
//! too (a confirmed sign-up, an earlier invitation) is raised as it is;
//! one whose password someone else may have chosen (created by an
//! operator, or signed up before proof was required) is raised only with
//! a new password from the invitee, and loses its sessions and
//! authenticator, so a password set in the invitee's name never reaches
//! the expert account.

use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::notifier::Notice;
use crate::password;
use crate::users::{create_verified_user, valid_email, NewUser};
use lectern_web::ApiError;
use lectern_web::ApiJson;
use lectern_web::Created;
use lectern_web::ErrorCode;
use lectern_web::{Principal, Role};

use crate::Identity;

const TOKEN_LEN: usize = 16 + 8 + 32;

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

/// `POST /api/v1/invitations {"email"}` → 201; the token goes to the
/// invitee through the notifier, never into the response.
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
    .fetch_one(&state.db)
    .await?;
    let mut token = Vec::with_capacity(TOKEN_LEN);
    token.extend_from_slice(id.as_bytes());
    token.extend_from_slice(&expires_at.timestamp().to_be_bytes());
    let signature = keys.sign(&token);
    token.extend_from_slice(&signature);
    let token = URL_SAFE_NO_PAD.encode(token);
    state
        .notifier
        .deliver(Notice {
            user_id: None,
            recipient: email,
            subject: "You are invited to teach on Lectern".into(),
            body: format!(
                "Accept the invitation with this token (valid until {expires_at}): {token}"
            ),
        })
        .await
        .map_err(ApiError::internal)?;
    Ok(Created::new(Invitation {
        id,
        org_id,
        expires_at,
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
    accepted_at: Option<DateTime<Utc>>,
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
    let raw = URL_SAFE_NO_PAD
        .decode(body.token.trim())
        .map_err(|_| invalid_token())?;
    if raw.len() != TOKEN_LEN || !keys.verify(&raw[..24], &raw[24..]) {
        return Err(invalid_token());
    }
    let id = Uuid::from_slice(&raw[..16]).map_err(|_| invalid_token())?;
    let expires = i64::from_be_bytes(raw[16..24].try_into().map_err(|_| invalid_token())?);
    if expires <= Utc::now().timestamp() {
        return Err(ApiError::new(
            ErrorCode::InvitationExpired,
            "the invitation has expired",
        ));
    }
    // Hashed before the transaction: argon2 may wait for a turn behind a
    // burst of sign-ins, and the transaction's connection and row locks
    // must not wait with it. Only a holder of a genuine token gets here.
    let chosen = match body.password.as_deref() {
        Some(password) => Some((password, password::hash(&state, password).await)),
        None => None,
    };
    let mut tx = state.db.begin().await?;
    let invitation: Option<InvitationRow> = sqlx::query_as(
        "SELECT org_id, email_ct, accepted_at FROM invitations WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(InvitationRow {
        org_id,
        email_ct,
        accepted_at,
    }) = invitation
    else {
        return Err(invalid_token());
    };
    if accepted_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::InvitationUsed,
            "the invitation was already accepted",
        ));
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
