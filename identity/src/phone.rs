//! Phone numbers as a way in: proving a number and putting it on one's
//! account, and signing in with a six-digit code sent to it by SMS.
//!
//! A number is kept like an email: sealed in `users.phone_ct` and found
//! by its blind index (`users.phone_bidx`, HMAC of the E.164 form, unique:
//! one account per number). Only a proven number has an index; one
//! stored before proof existed reaches notices but signs nobody in.
//!
//! Codes (`phone_codes`) are six random digits stored as an HMAC under
//! the token key bound to the number's index (sign-in) or the account
//! (proof), single use, valid for `phone_code_ttl`; a new code of the
//! same purpose supersedes the older ones. They are enqueued sealed with
//! `lectern_notify::enqueue_sealed` to the number (SMS, topic
//! `phone_code`) in the transaction that stores them.
//!
//! **No enumeration:** asking for a sign-in code answers the same 202 with
//! the same expiry whether or not the number has an account; a code is
//! only sent when it could sign in (an account of this organisation, or
//! none and the organisation creates learners just in time), so a wrong
//! code is the only answer anyone else can get. Sends are limited per
//! number and per client address (`sms-send:`, `sms-send-ip:` throttle
//! subjects). Each code attempt is counted before it is checked against
//! the number (`phone:<index>`, `phone_code_failures`: the sixth wrong
//! code by default locks it for the throttle's lockout) and the address
//! (`ip:`, shared with passwords), with the same 429, audit rows and
//! `brute_force` alerts as passwords.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::policy::{self, SignInMethod};
use crate::session::{self, Account, SignedIn, WithSessionCookie};
use crate::throttle;
use crate::ways;
use crate::Identity;
use lectern_notify::{Notification, Recipient, Topic};
use lectern_secrets::Keyring;
use lectern_web::{
    Accepted, ApiError, ApiJson, ClientContext, ErrorCode, NoContent, Principal, Role,
};

/// Tunable parts of phone codes.
#[derive(Debug, Clone, Copy)]
pub struct PhoneSettings {
    /// How long a code can be used.
    pub code_ttl: std::time::Duration,
    /// Wrong codes for one number within the throttle window; the last
    /// locks it for the throttle's lockout.
    pub code_failures: i32,
    /// Codes one number may be sent per throttle window.
    pub sends_per_number: i32,
    /// Codes one client address may ask for per throttle window.
    pub sends_per_address: i32,
}

impl Default for PhoneSettings {
    fn default() -> Self {
        Self {
            code_ttl: std::time::Duration::from_secs(5 * 60),
            code_failures: 6,
            sends_per_number: 5,
            sends_per_address: 20,
        }
    }
}

/// `number` in E.164 (`+8613800138000`), or 400 `invalid_phone`. Spaces,
/// dashes, dots and brackets are ignored; `00` stands for `+`; eleven
/// digits starting with 1 are a mainland China mobile number.
pub fn normalise(number: &str) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidPhone,
            "not a phone number SMS can reach: give it as +<country code><number>",
        )
    };
    let compact: String = number
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = if let Some(rest) = compact.strip_prefix('+') {
        rest.to_owned()
    } else if let Some(rest) = compact.strip_prefix("00") {
        rest.to_owned()
    } else if compact.len() == 11 && compact.starts_with('1') {
        format!("86{compact}")
    } else {
        return Err(invalid());
    };
    if !digits.bytes().all(|b| b.is_ascii_digit())
        || !(8..=15).contains(&digits.len())
        || digits.starts_with('0')
    {
        return Err(invalid());
    }
    if let Some(national) = digits.strip_prefix("86") {
        // Mainland numbers that take SMS are mobiles: 1 and ten digits.
        if national.len() != 11 || !national.starts_with('1') {
            return Err(invalid());
        }
    }
    Ok(format!("+{digits}"))
}

#[derive(Clone, Copy)]
enum Purpose {
    SignIn,
    Verify,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::SignIn => "sign_in",
            Purpose::Verify => "verify",
        }
    }
}

/// What a code is stored as: an HMAC under the token key, bound to its
/// purpose and scope (the number's index, or the account).
fn code_digest(keys: &Keyring, purpose: Purpose, scope: &[u8], code: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(64 + code.len());
    message.extend_from_slice(b"phone-code:");
    message.extend_from_slice(purpose.as_str().as_bytes());
    message.push(b':');
    message.extend_from_slice(scope);
    message.push(b':');
    message.extend_from_slice(code.trim().as_bytes());
    keys.sign(&message).to_vec()
}

fn new_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Counts a send against the number and the client address; 429
/// `rate_limited` past either limit.
async fn reserve_send(
    state: &Identity,
    context: &ClientContext,
    index: &[u8],
) -> Result<(), ApiError> {
    let settings = state.settings.phone;
    let mut subjects = vec![(
        format!("sms-send:{}", hex::encode(index)),
        settings.sends_per_number,
    )];
    if let Some(ip) = context.ip.as_deref() {
        subjects.push((
            format!("sms-send-ip:{}", throttle::address_key(ip)),
            settings.sends_per_address,
        ));
    }
    let policy = state.settings.throttle;
    throttle::reserve_all(&state.db, &subjects, &policy)
        .await?
        .map(|_| ())
        .map_err(|refused| {
            ApiError::new(
                ErrorCode::RateLimited,
                "too many codes asked for this number or from this address; wait and retry",
            )
            .with_retry_after(refused.retry_after)
        })
}

/// A code is on its way (or, for a number that could not sign in, is
/// not: the answer is the same).
#[derive(Serialize, schemars::JsonSchema)]
pub struct PhoneCodeSent {
    /// Until when the code can be used.
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/auth/sms/code`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct SignInCodeRequest {
    /// The organisation whose app the person signs in to.
    pub org_id: Uuid,
    /// The phone number (`+8613800138000`, or 11 digits in mainland China).
    pub phone: String,
}

#[derive(sqlx::FromRow)]
struct PhoneAccount {
    id: Uuid,
    org_id: Option<Uuid>,
    role: String,
}

/// `POST /api/v1/auth/sms/code`: sends a sign-in code to the number when
/// it could sign in; answers 202 with the code's expiry either way.
pub async fn request_sign_in_code(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(req): ApiJson<SignInCodeRequest>,
) -> Result<Accepted<PhoneCodeSent>, ApiError> {
    let keys = state.keyring()?;
    let phone = normalise(&req.phone)?;
    let policy = policy::read(&state.db, req.org_id).await?;
    policy.require(SignInMethod::Sms)?;
    let index = keys.phone_index(&phone);
    reserve_send(&state, &context, &index).await?;
    let ttl = state.settings.phone.code_ttl;
    let expires_at = Utc::now() + chrono::Duration::from_std(ttl).map_err(ApiError::internal)?;
    let account: Option<PhoneAccount> =
        sqlx::query_as("SELECT id, org_id, role FROM users WHERE phone_bidx = $1")
            .bind(&index)
            .fetch_optional(&state.db)
            .await?;
    let could_sign_in = match &account {
        Some(a) => a.org_id == Some(req.org_id),
        None => policy.just_in_time(),
    };
    ways::sweep_expired(&state.db, "phone_codes").await?;
    if could_sign_in {
        let code = new_code();
        let mut tx = state.db.begin().await?;
        sqlx::query(
            "UPDATE phone_codes SET used_at = now() \
             WHERE phone_bidx = $1 AND purpose = 'sign_in' AND used_at IS NULL",
        )
        .bind(&index)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO phone_codes (id, purpose, phone_bidx, org_id, code_hash, expires_at) \
             VALUES ($1, 'sign_in', $2, $3, $4, $5)",
        )
        .bind(Uuid::now_v7())
        .bind(&index)
        .bind(req.org_id)
        .bind(code_digest(keys, Purpose::SignIn, &index, &code))
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        send(&mut tx, keys, Some(req.org_id), phone, code).await?;
        tx.commit().await?;
        state.notify.wake();
    }
    Ok(Accepted(PhoneCodeSent { expires_at }, None))
}

/// Enqueues `code` to `phone` by SMS, sealed, in the caller's transaction.
async fn send(
    tx: &mut sqlx::PgConnection,
    keys: &Keyring,
    org_id: Option<Uuid>,
    phone: String,
    code: String,
) -> Result<(), ApiError> {
    lectern_notify::enqueue_sealed(
        tx,
        keys,
        &Notification {
            org_id,
            // Not the account's: the code goes to this number only, and
            // a sign-in code must not say whether an account exists.
            user_id: None,
            to: Some(Recipient::Phone(phone)),
            topic: Topic::PhoneCode,
            params: std::collections::BTreeMap::from([("code".to_owned(), code)]),
        },
    )
    .await?;
    Ok(())
}

/// `POST /api/v1/auth/sms/sign-in`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct SmsSignIn {
    pub org_id: Uuid,
    pub phone: String,
    /// The six digits sent by `POST /api/v1/auth/sms/code`.
    pub code: String,
}

// Deliberately no Debug: it would print the code.

/// `POST /api/v1/auth/sms/sign-in` → a session (and its cookie). A first
/// sign-in in an organisation that creates learners just in time creates
/// one with this number proven.
pub async fn sign_in(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(req): ApiJson<SmsSignIn>,
) -> Result<WithSessionCookie<SignedIn>, ApiError> {
    const METHOD: &str = "sms";
    let keys = state.keyring()?;
    let phone = normalise(&req.phone)?;
    let policy = policy::read(&state.db, req.org_id).await?;
    if !policy.allows(SignInMethod::Sms) {
        ways::refused(&state, &context, METHOD, "method_disabled").await;
        return Err(policy::disabled(SignInMethod::Sms));
    }
    let index = keys.phone_index(&phone);
    let reservation = ways::reserve(
        &state,
        &context,
        format!("phone:{}", hex::encode(&index)),
        state.settings.phone.code_failures,
        METHOD,
    )
    .await?;
    let matched: Option<Uuid> = sqlx::query_scalar(
        "UPDATE phone_codes SET used_at = now() WHERE id = ( \
           SELECT id FROM phone_codes WHERE phone_bidx = $1 AND purpose = 'sign_in' \
           AND org_id = $2 AND code_hash = $3 AND used_at IS NULL AND expires_at > now() \
           LIMIT 1 FOR UPDATE) \
         RETURNING id",
    )
    .bind(&index)
    .bind(req.org_id)
    .bind(code_digest(keys, Purpose::SignIn, &index, &req.code))
    .fetch_optional(&state.db)
    .await?;
    if matched.is_none() {
        ways::failed(&state, &context, &reservation, METHOD, "invalid_code").await;
        return Err(invalid_code());
    }
    reservation.succeeded(&state.db).await?;
    let existing: Option<PhoneAccount> =
        sqlx::query_as("SELECT id, org_id, role FROM users WHERE phone_bidx = $1")
            .bind(&index)
            .fetch_optional(&state.db)
            .await?;
    let account = match existing {
        Some(a) if a.org_id == Some(req.org_id) => Account {
            user_id: a.id,
            org_id: a.org_id,
            role: a.role.parse::<Role>().map_err(ApiError::internal)?,
        },
        // The number went to another organisation's account after the
        // code was sent: not this organisation's person.
        Some(_) => return Err(invalid_code()),
        None if policy.just_in_time() => {
            let mut tx = state.db.begin().await?;
            let account = ways::create_account(&mut tx, keys, req.org_id, Role::Learner).await?;
            let stored = sqlx::query(
                "UPDATE users SET phone_ct = $2, phone_bidx = $3, phone_verified_at = now() \
                 WHERE id = $1",
            )
            .bind(account.user_id)
            .bind(keys.seal("users.phone", account.user_id, &phone))
            .bind(&index)
            .execute(&mut *tx)
            .await;
            if let Err(e) = stored {
                // Another sign-in of the same number created it first.
                return Err(if is_unique_violation(&e) {
                    invalid_code()
                } else {
                    e.into()
                });
            }
            tx.commit().await?;
            audit::record_or_log(
                &state,
                &AuditEvent {
                    action: "sign_in.link".into(),
                    target: Some(format!("user:{}", account.user_id)),
                    outcome: "ok",
                    detail: Some(json!({ "kind": "phone", "just_in_time": true }).to_string()),
                    ..AuditEvent::by(None, &context)
                },
            )
            .await;
            account
        }
        None => return Err(invalid_code()),
    };
    session::start_session(&state, &context, account, METHOD).await
}

fn invalid_code() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCode,
        "the code is wrong, expired or already used",
    )
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// `POST /api/v1/me/phone`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct PhoneChange {
    /// The number to prove and put on the account.
    pub phone: String,
}

/// `POST /api/v1/me/phone` (step-up): sends a code proving the number;
/// the number is put on the account by `POST /api/v1/me/phone/confirm`.
pub async fn request_verification(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiJson(req): ApiJson<PhoneChange>,
) -> Result<Accepted<PhoneCodeSent>, ApiError> {
    let keys = state.keyring()?;
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let phone = normalise(&req.phone)?;
    let index = keys.phone_index(&phone);
    reserve_send(&state, &context, &index).await?;
    let code = new_code();
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "UPDATE phone_codes SET used_at = now() \
         WHERE user_id = $1 AND purpose = 'verify' AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    let expires_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO phone_codes (id, purpose, phone_bidx, user_id, phone_ct, key_id, code_hash, expires_at) \
         VALUES ($1, 'verify', $2, $3, $4, $5, $6, now() + make_interval(secs => $7)) \
         RETURNING expires_at",
    )
    .bind(id)
    .bind(&index)
    .bind(user_id)
    .bind(keys.seal("phone_codes.phone", id, &phone))
    .bind(keys.active_key_id())
    .bind(code_digest(keys, Purpose::Verify, user_id.as_bytes(), &code))
    .bind(state.settings.phone.code_ttl.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    send(&mut tx, keys, principal.org_id, phone, code).await?;
    tx.commit().await?;
    state.notify.wake();
    Ok(Accepted(PhoneCodeSent { expires_at }, None))
}

/// `POST /api/v1/me/phone/confirm`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct PhoneConfirmation {
    /// The six digits sent to the number.
    pub code: String,
}

/// The proven number now on the account.
#[derive(Serialize, schemars::JsonSchema)]
pub struct PhoneLinked {
    /// E.164.
    pub phone: String,
}

#[derive(sqlx::FromRow)]
struct PendingPhone {
    id: Uuid,
    phone_ct: Option<Vec<u8>>,
}

/// `POST /api/v1/me/phone/confirm`: the code proves the number, which
/// replaces the account's; 409 `phone_in_use` when another account has
/// proven it.
pub async fn confirm_verification(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiJson(req): ApiJson<PhoneConfirmation>,
) -> Result<Json<PhoneLinked>, ApiError> {
    let keys = state.keyring()?;
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let reservation = ways::reserve(
        &state,
        &context,
        format!("phone-verify:{user_id}"),
        state.settings.phone.code_failures,
        "phone_verify",
    )
    .await?;
    let pending: Option<PendingPhone> = sqlx::query_as(
        "UPDATE phone_codes SET used_at = now() WHERE id = ( \
           SELECT id FROM phone_codes WHERE user_id = $1 AND purpose = 'verify' \
           AND code_hash = $2 AND used_at IS NULL AND expires_at > now() LIMIT 1 FOR UPDATE) \
         RETURNING id, phone_ct",
    )
    .bind(user_id)
    .bind(code_digest(
        keys,
        Purpose::Verify,
        user_id.as_bytes(),
        &req.code,
    ))
    .fetch_optional(&state.db)
    .await?;
    let Some(PendingPhone {
        id,
        phone_ct: Some(phone_ct),
    }) = pending
    else {
        ways::failed(
            &state,
            &context,
            &reservation,
            "phone_verify",
            "invalid_code",
        )
        .await;
        return Err(invalid_code());
    };
    reservation.succeeded(&state.db).await?;
    let phone = keys
        .open("phone_codes.phone", id, &phone_ct)
        .map_err(ApiError::internal)?;
    let stored = sqlx::query(
        "UPDATE users SET phone_ct = $2, phone_bidx = $3, phone_verified_at = now() WHERE id = $1",
    )
    .bind(user_id)
    .bind(keys.seal("users.phone", user_id, &phone))
    .bind(keys.phone_index(&phone))
    .execute(&state.db)
    .await;
    match stored {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(ApiError::new(
                ErrorCode::PhoneInUse,
                "another account has proven this number",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.link".into(),
            target: Some(format!("user:{user_id}")),
            outcome: "ok",
            detail: Some(json!({ "kind": "phone" }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(PhoneLinked { phone }))
}

/// `DELETE /api/v1/me/phone` (step-up): takes the number off the account,
/// unless it is the account's only way in.
pub async fn remove(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
) -> Result<NoContent, ApiError> {
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let mut tx = state.db.begin().await?;
    let has: Option<bool> =
        sqlx::query_scalar("SELECT phone_bidx IS NOT NULL FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    if has != Some(true) {
        return Err(ApiError::not_found(
            "the account has no proven phone number",
        ));
    }
    if ways::ways_in(&mut *tx, user_id).await? <= 1 {
        return Err(ways::last_way_in());
    }
    sqlx::query(
        "UPDATE users SET phone_ct = NULL, phone_bidx = NULL, phone_verified_at = NULL WHERE id = $1",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.unlink".into(),
            target: Some(format!("user:{user_id}")),
            outcome: "ok",
            detail: Some(json!({ "kind": "phone" }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(NoContent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_as_e164() {
        assert_eq!(normalise("138 0013 8000").unwrap(), "+8613800138000");
        assert_eq!(normalise("+86 138-0013-8000").unwrap(), "+8613800138000");
        assert_eq!(normalise("008613800138000").unwrap(), "+8613800138000");
        assert_eq!(normalise("+44 (20) 7946 0958").unwrap(), "+442079460958");
        for bad in [
            "",
            "12345",
            "+86 010 1234 5678",
            "+0123456789",
            "+1 800 FLOWERS",
            "23800138000",
        ] {
            assert!(normalise(bad).is_err(), "{bad}");
        }
    }
}
