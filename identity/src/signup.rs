//! Self sign-up: a learner account created by the person it belongs to.
//!
//! It is off unless the organisation turns it on (`organisations.
//! self_signup`, [`set_enabled`]). A sign-up creates no account: it stores
//! a pending request (email sealed, password already hashed) and sends a
//! token to the address through `lectern_notify` (sealed, enqueued in the
//! request's transaction);
//! only [`confirm`] with that token creates the account, marked as proven
//! (`users.email_verified_at`). So a sign-up in someone else's name leaves
//! nothing an attacker could use once the owner arrives (see
//! `invite::accept` for accounts created before proof was required).
//!
//! The request answers the same status and body whether or not the email
//! already has an account: an existing account's owner gets a notice
//! instead of a token, and both paths hash the password and deliver one
//! message, so neither the answer nor its timing says which happened.
//! Requests are counted per email and per client address in the shared
//! throttle table, as a cap on messages sent to one mailbox.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::users::{insert_account, valid_email, Account};
use crate::{password, throttle};
use lectern_notify::{Notification, Recipient, Topic};
use lectern_secrets::{random_token, token_fingerprint};
use lectern_web::{
    Accepted, ApiError, ApiJson, ApiPath, ClientContext, Created, ErrorCode, Principal, Role,
};

use crate::Identity;

const TOKEN_PREFIX: &str = "su_";

/// `POST /api/v1/auth/signup`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct SignUp {
    /// The organisation to join as a learner; it must accept self sign-up.
    org_id: Uuid,
    /// Where the confirmation token is sent.
    email: String,
    /// At least 12 characters, letters and a digit or symbol, not
    /// containing the email's name.
    password: String,
}

// Deliberately no Debug: it would print the password.

/// What happens next, the same for every accepted sign-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignUpStatus {
    /// A message went to the address: confirm with the token it holds
    /// (`POST /api/v1/auth/signup/confirm`).
    ConfirmationSent,
}

/// A sign-up waiting for its email to be proven.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SignUpPending {
    pub status: SignUpStatus,
}

/// `POST /api/v1/auth/signup {"org_id", "email", "password"}` → 202: a
/// confirmation goes to the address. Every other role is granted by an
/// admin or an invitation, never chosen by the caller.
pub async fn request(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(req): ApiJson<SignUp>,
) -> Result<Accepted<SignUpPending>, ApiError> {
    let keys = state.keyring()?;
    let open: Option<bool> =
        sqlx::query_scalar("SELECT self_signup FROM organisations WHERE id = $1")
            .bind(req.org_id)
            .fetch_optional(&state.db)
            .await?;
    match open {
        None => {
            return Err(ApiError::not_found(format!(
                "no organisation {}",
                req.org_id
            )))
        }
        Some(false) => return Err(signup_disabled()),
        Some(true) => {}
    }
    if !valid_email(&req.email) {
        return Err(ApiError::new(
            ErrorCode::InvalidEmail,
            format!("{:?} is not an email address", req.email),
        ));
    }
    password::check_policy(&req.password, &req.email)
        .map_err(|m| ApiError::new(ErrorCode::WeakPassword, m))?;
    let email = lectern_secrets::normalise_email(&req.email);
    let index = keys.email_index(&email);
    throttled(&state, &context, &index).await?;
    // Hashed whether or not it is kept: both paths cost the same.
    let password_hash = password::hash(&state, &req.password).await;
    let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM users WHERE email_bidx = $1")
        .bind(&index)
        .fetch_optional(&state.db)
        .await?;
    let mut tx = state.db.begin().await?;
    let notice = match existing {
        // Told at the address that was typed, in both languages, exactly
        // as a confirmation would be: neither path says which it took.
        Some(_) => Notification {
            org_id: Some(req.org_id),
            user_id: None,
            to: Some(Recipient::Email(email)),
            topic: Topic::SignUpAttempted,
            params: BTreeMap::new(),
        },
        None => {
            let id = Uuid::now_v7();
            let token = random_token(TOKEN_PREFIX);
            sqlx::query(
                "INSERT INTO signup_requests \
                   (id, org_id, email_ct, email_bidx, key_id, password_hash, token_hash, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))",
            )
            .bind(id)
            .bind(req.org_id)
            .bind(keys.seal("signup_requests.email", id, &email))
            .bind(&index)
            .bind(keys.active_key_id())
            .bind(&password_hash)
            .bind(token_fingerprint(&token))
            .bind(state.settings.signup_ttl.as_secs_f64())
            .execute(&mut *tx)
            .await?;
            Notification {
                org_id: Some(req.org_id),
                user_id: None,
                to: Some(Recipient::Email(email)),
                topic: Topic::SignUpConfirmation,
                params: BTreeMap::from([(
                    "link".to_string(),
                    format!(
                        "{}/app/signup/confirm?token={token}",
                        state.settings.app_url
                    ),
                )]),
            }
        }
    };
    lectern_notify::enqueue_sealed(&mut tx, keys, &notice).await?;
    tx.commit().await?;
    state.notify.wake();
    Ok(Accepted(
        SignUpPending {
            status: SignUpStatus::ConfirmationSent,
        },
        None,
    ))
}

fn signup_disabled() -> ApiError {
    ApiError::new(
        ErrorCode::SignupDisabled,
        "this organisation does not accept self sign-up; ask it for an invitation",
    )
}

/// Counts a sign-up request against its email and the client address;
/// 429 `locked_out` past the throttle policy's limits.
async fn throttled(
    state: &Identity,
    context: &ClientContext,
    email_index: &[u8],
) -> Result<(), ApiError> {
    let policy = state.settings.throttle;
    let mut subjects = vec![(
        format!("signup:{}", hex::encode(email_index)),
        policy.account_failures,
    )];
    if let Some(ip) = context.ip.as_deref() {
        subjects.push((
            format!("signup-ip:{}", throttle::address_key(ip)),
            policy.address_failures,
        ));
    }
    // Counted and checked in one step, so a crowd of requests cannot all
    // slip under the limit.
    throttle::reserve_all(&state.db, &subjects, &policy)
        .await?
        .map_err(|refused| {
            ApiError::new(
                ErrorCode::LockedOut,
                "too many sign-ups for this address or from this network; try again later",
            )
            .with_retry_after(refused.retry_after)
        })?;
    Ok(())
}

/// `POST /api/v1/auth/signup/confirm`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct Confirmation {
    /// The token from the confirmation message.
    token: String,
}

/// A new account.
#[derive(Serialize, schemars::JsonSchema)]
pub struct NewAccount {
    pub id: Uuid,
    pub org_id: Uuid,
    #[schemars(with = "crate::RoleName")]
    pub role: Role,
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: Uuid,
    org_id: Uuid,
    email_ct: Vec<u8>,
    password_hash: String,
    expired: bool,
    confirmed: bool,
    self_signup: bool,
}

/// `POST /api/v1/auth/signup/confirm {"token"}` → 201: the account, with
/// the password chosen at sign-up.
pub async fn confirm(
    State(state): State<Identity>,
    ApiJson(body): ApiJson<Confirmation>,
) -> Result<Created<NewAccount>, ApiError> {
    let keys = state.keyring()?;
    let mut tx = state.db.begin().await?;
    let pending: Option<PendingRow> = sqlx::query_as(
        "SELECT r.id, r.org_id, r.email_ct, r.password_hash, r.expires_at <= now() AS expired, \
                r.confirmed_at IS NOT NULL AS confirmed, o.self_signup \
         FROM signup_requests r JOIN organisations o ON o.id = r.org_id \
         WHERE r.token_hash = $1 FOR UPDATE OF r",
    )
    .bind(token_fingerprint(body.token.trim()))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(pending) = pending else {
        return Err(ApiError::new(
            ErrorCode::InvalidToken,
            "the confirmation token is not valid",
        ));
    };
    if pending.expired || pending.confirmed {
        return Err(ApiError::new(
            ErrorCode::ConfirmationExpired,
            "this confirmation has expired or was used already; sign up again",
        ));
    }
    if !pending.self_signup {
        return Err(signup_disabled());
    }
    let email = keys
        .open("signup_requests.email", pending.id, &pending.email_ct)
        .map_err(ApiError::internal)?;
    let id = insert_account(
        &mut *tx,
        keys,
        Account {
            org_id: Some(pending.org_id),
            email: &email,
            role: Role::Learner,
            password_hash: &pending.password_hash,
            email_verified: true,
        },
    )
    .await?;
    sqlx::query("UPDATE signup_requests SET confirmed_at = now() WHERE id = $1")
        .bind(pending.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Created::new(NewAccount {
        id,
        org_id: pending.org_id,
        role: Role::Learner,
    }))
}

/// `PUT /api/v1/organisations/{org_id}/signup`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct SignUpSetting {
    /// Whether anyone who proves an email address may create a learner
    /// account in the organisation.
    enabled: bool,
}

/// The organisation's self sign-up setting now.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SignUpPolicy {
    pub org_id: Uuid,
    pub enabled: bool,
}

/// `PUT /api/v1/organisations/{org_id}/signup {"enabled"}`: turns self
/// sign-up on or off. Opening it hands the learner role to anyone with a
/// mailbox, so it takes the permission (and step-up) of changing roles.
pub async fn set_enabled(
    State(state): State<Identity>,
    principal: Principal,
    ApiPath(org_id): ApiPath<Uuid>,
    ApiJson(setting): ApiJson<SignUpSetting>,
) -> Result<axum::Json<SignUpPolicy>, ApiError> {
    let updated = sqlx::query(
        "UPDATE organisations SET self_signup = $3 WHERE id = $1 AND ($2::uuid IS NULL OR id = $2)",
    )
    .bind(org_id)
    .bind(principal.org_scope())
    .bind(setting.enabled)
    .execute(&state.db)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::not_found(format!("no organisation {org_id}")));
    }
    Ok(axum::Json(SignUpPolicy {
        org_id,
        enabled: setting.enabled,
    }))
}
