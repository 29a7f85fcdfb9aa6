//! What every way in besides the password shares: the throttle and audit
//! around an attempt (the same subjects, lockout, metrics, `auth.login`
//! rows and `brute_force` alerts as passwords), the external identities a
//! person has linked (WeChat, OIDC, LDAP: `external_identities`, subjects
//! sealed and found by blind index), just-in-time learner accounts, and
//! the routes listing and removing one's own ways in.
//!
//! Linking and unlinking need the signed-in person and a fresh step-up
//! (`Permission::LinkSignIns`), and are audited as `sign_in.link` /
//! `sign_in.unlink` with the kind (never the subject). The last way in an
//! account has cannot be removed (`last_sign_in_method`).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::alerts::{self, Alert, AlertKind, LoginOutcome};
use crate::audit::{self, AuditEvent};
use crate::policy::SignInPolicy;
use crate::session::{self, Account};
use crate::throttle::{self, Reservation};
use crate::Identity;
use lectern_secrets::Keyring;
use lectern_web::{ApiError, ApiPath, ClientContext, ErrorCode, NoContent, Principal, Role};

/// Counts an attempt against `subject` (the number, the identity) with
/// `limit`, and against the client address, before anything is checked;
/// while either is locked, refuses with 429 `account_locked` and an audit
/// row, as a password sign-in does.
pub(crate) async fn reserve(
    state: &Identity,
    context: &ClientContext,
    subject: String,
    limit: i32,
    method: &'static str,
) -> Result<Reservation, ApiError> {
    reserve_subjects(state, context, vec![(subject, limit)], method).await
}

/// As [`reserve`] for a way in whose secret names no account until it is
/// checked (a WeChat code, a hand-off code): only the client address is
/// counted, with the same limit and lockout as passwords. A success gives
/// the attempt back with [`Reservation::returned`].
pub(crate) async fn reserve_address(
    state: &Identity,
    context: &ClientContext,
    method: &'static str,
) -> Result<Reservation, ApiError> {
    reserve_subjects(state, context, Vec::new(), method).await
}

async fn reserve_subjects(
    state: &Identity,
    context: &ClientContext,
    mut subjects: Vec<(String, i32)>,
    method: &'static str,
) -> Result<Reservation, ApiError> {
    let policy = state.settings.throttle;
    if let Some(ip) = context.ip.as_deref() {
        subjects.push((throttle::address_subject(ip), policy.address_failures));
    }
    match throttle::reserve_all(&state.db, &subjects, &policy).await? {
        Ok(reservation) => Ok(reservation),
        Err(refused) => {
            state.metrics.login(LoginOutcome::Locked);
            let event = AuditEvent {
                action: "auth.login".into(),
                outcome: "denied",
                detail: Some(
                    json!({ "method": method, "reason": "locked_out", "subject": refused.kind() })
                        .to_string(),
                ),
                ..AuditEvent::by(None, context)
            };
            audit::record_or_log(state, &event).await;
            Err(session::locked(refused.retry_after))
        }
    }
}

/// A failed attempt: it stays counted; audited with `reason`, and each
/// subject it locked raises a `brute_force` alert naming only its kind.
pub(crate) async fn failed(
    state: &Identity,
    context: &ClientContext,
    reservation: &Reservation,
    method: &'static str,
    reason: &'static str,
) {
    state.metrics.login(LoginOutcome::Failure);
    let locked: Vec<&str> = reservation.locked().collect();
    let event = AuditEvent {
        action: "auth.login".into(),
        outcome: "failed",
        detail: Some(
            json!({ "method": method, "reason": reason, "locked": !locked.is_empty() }).to_string(),
        ),
        ..AuditEvent::by(None, context)
    };
    audit::record_or_log(state, &event).await;
    for subject in locked {
        alerts::raise(
            state,
            Alert {
                kind: AlertKind::BruteForce,
                org_id: None,
                user_id: None,
                ip: context.ip.as_deref(),
                detail: format!(
                    "{} locked after repeated failed {method} sign-ins",
                    subject.split(':').next().unwrap_or("subject")
                ),
            },
        )
        .await;
    }
}

/// A refusal that is not a wrong secret (a disabled method, an identity
/// that needs an invitation): audited, not counted.
pub(crate) async fn refused(
    state: &Identity,
    context: &ClientContext,
    method: &'static str,
    reason: &'static str,
) {
    let event = AuditEvent {
        action: "auth.login".into(),
        outcome: "denied",
        detail: Some(json!({ "method": method, "reason": reason }).to_string()),
        ..AuditEvent::by(None, context)
    };
    audit::record_or_log(state, &event).await;
}

/// The kinds of external identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// WeChat's UnionID: one person across the organisation's
    /// mini-program and official account (issuer: the open-platform
    /// account).
    WechatUnionid,
    /// WeChat's OpenID: one person in one app (issuer: the app id).
    WechatOpenid,
    /// An OpenID Connect subject (issuer: the provider's issuer URL).
    Oidc,
    /// An LDAP entry's DN (issuer: the directory's URL).
    Ldap,
}

impl IdentityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IdentityKind::WechatUnionid => "wechat_unionid",
            IdentityKind::WechatOpenid => "wechat_openid",
            IdentityKind::Oidc => "oidc",
            IdentityKind::Ldap => "ldap",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            IdentityKind::WechatUnionid,
            IdentityKind::WechatOpenid,
            IdentityKind::Oidc,
            IdentityKind::Ldap,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// An identity another system vouches for: `subject` within `issuer`.
pub(crate) struct External<'a> {
    pub kind: IdentityKind,
    pub issuer: &'a str,
    pub subject: &'a str,
}

impl External<'_> {
    /// The blind index of the subject, scoped to kind and issuer.
    fn index(&self, keys: &Keyring) -> Vec<u8> {
        keys.blind_index(
            &format!("{}|{}", self.kind.as_str(), self.issuer),
            self.subject,
        )
    }
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: Uuid,
    org_id: Option<Uuid>,
    role: String,
}

impl AccountRow {
    fn account(self) -> Result<Account, ApiError> {
        Ok(Account {
            user_id: self.id,
            org_id: self.org_id,
            role: self.role.parse()?,
        })
    }
}

/// The account an external identity is linked to, marking its use.
pub(crate) async fn linked_account(
    state: &Identity,
    identity: &External<'_>,
) -> Result<Option<Account>, ApiError> {
    let keys = state.keyring()?;
    let row: Option<AccountRow> = sqlx::query_as(
        "WITH used AS (UPDATE external_identities SET last_sign_in_at = now() \
           WHERE kind = $1 AND issuer = $2 AND subject_bidx = $3 RETURNING user_id) \
         SELECT u.id, u.org_id, u.role FROM users u JOIN used ON used.user_id = u.id",
    )
    .bind(identity.kind.as_str())
    .bind(identity.issuer)
    .bind(identity.index(keys))
    .fetch_optional(&state.db)
    .await?;
    row.map(AccountRow::account).transpose()
}

/// Links `identity` to `user_id` (in `org_id`); 409 `identity_in_use` when
/// it is linked to an account already (this one included: linking twice
/// is a no-op the caller should not need).
pub(crate) async fn link(
    conn: &mut sqlx::PgConnection,
    keys: &Keyring,
    user_id: Uuid,
    org_id: Uuid,
    identity: &External<'_>,
) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO external_identities \
           (id, user_id, org_id, kind, issuer, subject_bidx, subject_ct, key_id, last_sign_in_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now()) \
         ON CONFLICT (kind, issuer, subject_bidx) DO NOTHING RETURNING id",
    )
    .bind(id)
    .bind(user_id)
    .bind(org_id)
    .bind(identity.kind.as_str())
    .bind(identity.issuer)
    .bind(identity.index(keys))
    .bind(keys.seal("external_identities.subject", id, identity.subject))
    .bind(keys.active_key_id())
    .fetch_optional(&mut *conn)
    .await?;
    inserted.ok_or_else(|| {
        ApiError::new(
            ErrorCode::IdentityInUse,
            "this identity is linked to an account already",
        )
    })
}

/// A new account of `org_id` without email or password (a first sign-in
/// by another way in, in an organisation that creates accounts just in
/// time): a learner, or what the directory's groups say.
pub(crate) async fn create_account(
    conn: &mut sqlx::PgConnection,
    keys: &Keyring,
    org_id: Uuid,
    role: Role,
) -> Result<Account, ApiError> {
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO users (id, org_id, role, key_id) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(org_id)
        .bind(role.as_str())
        .bind(keys.active_key_id())
        .execute(&mut *conn)
        .await?;
    Ok(Account {
        user_id: id,
        org_id: Some(org_id),
        role,
    })
}

/// Signs in with an external identity, answering the new session and
/// its id: its linked account (which must be in `org_id`), or — when none
/// is linked and the policy creates accounts just in time — a new account
/// linked to it (a learner, or `role`). `role`, when given (LDAP's
/// group mapping), is what the directory says now and replaces the
/// account's role unless that is a super admin's.
pub(crate) async fn sign_in_external(
    state: &Identity,
    context: &ClientContext,
    org_id: Uuid,
    policy: &SignInPolicy,
    identity: &External<'_>,
    role: Option<Role>,
    method: &'static str,
) -> Result<(session::WithSessionCookie<session::SignedIn>, Uuid), ApiError> {
    let keys = state.keyring()?;
    let account = match linked_account(state, identity).await? {
        Some(account) if account.org_id == Some(org_id) => account,
        Some(_) => {
            // Linked in another organisation: not this one's person.
            refused(state, context, method, "other_organisation").await;
            return Err(invitation_required());
        }
        None if policy.just_in_time() => {
            let mut tx = state.db.begin().await?;
            let account =
                create_account(&mut tx, keys, org_id, role.unwrap_or(Role::Learner)).await?;
            link(&mut tx, keys, account.user_id, org_id, identity).await?;
            tx.commit().await?;
            audit::record_or_log(
                state,
                &AuditEvent {
                    action: "sign_in.link".into(),
                    target: Some(format!("user:{}", account.user_id)),
                    outcome: "ok",
                    detail: Some(
                        json!({ "kind": identity.kind.as_str(), "just_in_time": true }).to_string(),
                    ),
                    ..AuditEvent::by(None, context)
                },
            )
            .await;
            account
        }
        None => {
            refused(state, context, method, "invitation_required").await;
            return Err(invitation_required());
        }
    };
    let account = match role {
        Some(role) if role != account.role && account.role != Role::SuperAdmin => {
            sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
                .bind(account.user_id)
                .bind(role.as_str())
                .execute(&state.db)
                .await?;
            // Its other sessions carry the old role: forget them here at once.
            state.sessions.evict_user(account.user_id);
            audit::record_or_log(
                state,
                &AuditEvent {
                    action: "users.role".into(),
                    target: Some(format!("user:{}", account.user_id)),
                    outcome: "ok",
                    detail: Some(
                        json!({ "from": account.role.as_str(), "to": role.as_str(), "by": method })
                            .to_string(),
                    ),
                    ..AuditEvent::by(None, context)
                },
            )
            .await;
            Account { role, ..account }
        }
        _ => account,
    };
    session::start_session_with_id(state, context, account, method).await
}

pub(crate) fn invitation_required() -> ApiError {
    ApiError::new(
        ErrorCode::InvitationRequired,
        "no account here matches; this organisation creates accounts by invitation",
    )
}

/// How many ways in the account has: a password, a proven phone number,
/// each linked identity.
pub(crate) async fn ways_in(db: impl sqlx::PgExecutor<'_>, user_id: Uuid) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT (password_hash IS NOT NULL)::int4::int8 + (phone_bidx IS NOT NULL)::int4::int8 \
              + (SELECT count(*) FROM external_identities WHERE user_id = $1) \
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_one(db)
    .await?)
}

/// Forgets up to a hundred rows of `table` (codes, flows) that expired
/// over an hour ago: each new one sweeps a few old, so the tables stay
/// small without a background task. `table` is one of ours, never input.
pub(crate) async fn sweep_expired(
    db: impl sqlx::PgExecutor<'_>,
    table: &'static str,
) -> Result<(), ApiError> {
    sqlx::query(&format!(
        "DELETE FROM {table} WHERE id IN (SELECT id FROM {table} \
         WHERE expires_at < now() - interval '1 hour' LIMIT 100)"
    ))
    .execute(db)
    .await?;
    Ok(())
}

pub(crate) fn last_way_in() -> ApiError {
    ApiError::new(
        ErrorCode::LastSignInMethod,
        "this is the account's only way in; add another (a password, a phone, an identity) first",
    )
}

/// One linked identity, as its owner sees it (not its subject).
#[derive(Serialize, schemars::JsonSchema)]
pub struct LinkedIdentity {
    pub id: Uuid,
    pub kind: IdentityKind,
    /// The issuer URL, WeChat app id or directory URL it belongs to.
    pub issuer: String,
    pub created_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

/// The caller's ways in.
#[derive(Serialize, schemars::JsonSchema)]
pub struct WaysIn {
    pub password: bool,
    /// The verified phone number (E.164), which can receive sign-in codes.
    pub phone: Option<String>,
    pub identities: Vec<LinkedIdentity>,
}

#[derive(sqlx::FromRow)]
struct WaysRow {
    has_password: bool,
    phone_ct: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
struct IdentityRow {
    id: Uuid,
    kind: String,
    issuer: String,
    created_at: DateTime<Utc>,
    last_sign_in_at: Option<DateTime<Utc>>,
}

/// `GET /api/v1/me/sign-ins`: the caller's ways in.
pub async fn list(
    State(state): State<Identity>,
    principal: Principal,
) -> Result<Json<WaysIn>, ApiError> {
    let keys = state.keyring()?;
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let row: WaysRow = sqlx::query_as(
        "SELECT password_hash IS NOT NULL AS has_password, \
                CASE WHEN phone_bidx IS NOT NULL THEN phone_ct END AS phone_ct \
         FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_one(&state.db)
    .await?;
    let phone = row
        .phone_ct
        .map(|ct| keys.open("users.phone", user_id, &ct))
        .transpose()
        .map_err(ApiError::internal)?;
    let rows: Vec<IdentityRow> = sqlx::query_as(
        "SELECT id, kind, issuer, created_at, last_sign_in_at FROM external_identities \
         WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(user_id)
    .fetch_all(&state.db)
    .await?;
    let identities = rows
        .into_iter()
        .filter_map(|r| {
            Some(LinkedIdentity {
                id: r.id,
                kind: IdentityKind::parse(&r.kind)?,
                issuer: r.issuer,
                created_at: r.created_at,
                last_sign_in_at: r.last_sign_in_at,
            })
        })
        .collect();
    Ok(Json(WaysIn {
        password: row.has_password,
        phone,
        identities,
    }))
}

/// `DELETE /api/v1/me/sign-ins/{identity_id}`: unlinks one of the
/// caller's identities (step-up), unless it is their last way in.
/// Another person's identity answers 404.
pub async fn unlink(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiPath(identity_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    let mut tx = state.db.begin().await?;
    // The account row is locked so two removals cannot both see a second way.
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let kind: Option<String> =
        sqlx::query_scalar("SELECT kind FROM external_identities WHERE id = $1 AND user_id = $2")
            .bind(identity_id)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(kind) = kind else {
        return Err(ApiError::not_found(format!("no identity {identity_id}")));
    };
    if ways_in(&mut *tx, user_id).await? <= 1 {
        return Err(last_way_in());
    }
    sqlx::query("DELETE FROM external_identities WHERE id = $1")
        .bind(identity_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.unlink".into(),
            target: Some(format!("identity:{identity_id}")),
            outcome: "ok",
            detail: Some(json!({ "kind": kind }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(NoContent)
}
