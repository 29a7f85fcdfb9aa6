//! Organisations, user accounts and partner keys: creating them (shared by
//! the HTTP API and `lectern admin`), administering them over HTTP, and
//! re-encrypting personal data when the active field key changes. An
//! account records whether its owner proved the email while choosing the
//! password (`email_verified_at`): a confirmed sign-up or an invitation
//! does, an account created by an operator does not.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::alerts::{self, Alert, AlertKind};
use crate::audit::{self, csv_field, AuditEvent};
use crate::password;
use crate::session::PARTNER_KEY_PREFIX;
use lectern_secrets::{random_token, token_fingerprint, Keyring, SealError};
use lectern_web::ApiError;
use lectern_web::ClientContext;
use lectern_web::ErrorCode;
use lectern_web::NoContent;
use lectern_web::{ApiJson, ApiPath};
use lectern_web::{Principal, Role};

use crate::Identity;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account with this email already exists")]
    EmailInUse,
    #[error("{0}")]
    WeakPassword(String),
    #[error("no organisation named {0:?}")]
    NoSuchOrganisation(String),
    #[error("organisation name must be 1–200 characters")]
    InvalidOrganisationName,
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    #[error("only a super admin may have no organisation")]
    OrganisationRequired,
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::EmailInUse => ApiError::new(ErrorCode::EmailInUse, e.to_string()),
            AccountError::WeakPassword(_) => ApiError::new(ErrorCode::WeakPassword, e.to_string()),
            AccountError::InvalidEmail(_) => ApiError::new(ErrorCode::InvalidEmail, e.to_string()),
            AccountError::NoSuchOrganisation(_) => ApiError::not_found(e.to_string()),
            AccountError::InvalidOrganisationName | AccountError::OrganisationRequired => {
                ApiError::new(ErrorCode::InvalidRequest, e.to_string())
            }
            AccountError::Seal(_) | AccountError::Database(_) => ApiError::internal(e),
        }
    }
}

pub async fn create_organisation(db: &PgPool, name: &str) -> Result<Uuid, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AccountError::InvalidOrganisationName);
    }
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(db)
        .await?;
    Ok(id)
}

pub async fn organisation_id(db: &PgPool, name: &str) -> Result<Uuid, AccountError> {
    sqlx::query_scalar("SELECT id FROM organisations WHERE name = $1")
        .bind(name.trim())
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AccountError::NoSuchOrganisation(name.to_string()))
}

/// The personal data of a new account; only `email` is required.
pub struct NewUser<'a> {
    pub org_id: Option<Uuid>,
    pub email: &'a str,
    pub role: Role,
    pub password: &'a str,
}

pub fn valid_email(email: &str) -> bool {
    let email = email.trim();
    matches!(email.split_once('@'), Some((local, domain))
        if !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.'))
        && email.len() <= 254
        && !email.chars().any(char::is_whitespace)
}

/// A new account, its password chosen by whoever creates it (an operator
/// with `lectern admin create-user`, the demo): its email is not proven,
/// so an invitation will not raise it without a new password. Hashed with
/// the tools' [`password::for_tools`] hasher: this runs outside a server's
/// requests.
pub async fn create_user(
    db: impl sqlx::PgExecutor<'_>,
    keys: &Keyring,
    user: NewUser<'_>,
) -> Result<Uuid, AccountError> {
    check(&user)?;
    let password_hash = password::for_tools().hash(user.password).await;
    insert_account(db, keys, user.account(&password_hash, false)).await
}

/// As [`create_user`], for a person who proved the email while choosing
/// the password (accepting an invitation sent to it), whose password the
/// caller hashed already (before its transaction: argon2 may have to wait
/// for a turn, and a transaction must not wait with it).
pub(crate) async fn create_verified_user(
    db: impl sqlx::PgExecutor<'_>,
    keys: &Keyring,
    user: NewUser<'_>,
    password_hash: &str,
) -> Result<Uuid, AccountError> {
    check(&user)?;
    insert_account(db, keys, user.account(password_hash, true)).await
}

/// What a new account must satisfy before its password is hashed.
fn check(user: &NewUser<'_>) -> Result<(), AccountError> {
    if !valid_email(user.email) {
        return Err(AccountError::InvalidEmail(user.email.to_string()));
    }
    if user.org_id.is_none() && user.role != Role::SuperAdmin {
        return Err(AccountError::OrganisationRequired);
    }
    password::check_policy(user.password, user.email).map_err(AccountError::WeakPassword)
}

impl<'a> NewUser<'a> {
    fn account(&self, password_hash: &'a str, email_verified: bool) -> Account<'a> {
        Account {
            org_id: self.org_id,
            email: self.email,
            role: self.role,
            password_hash,
            email_verified,
        }
    }
}

/// An account as stored: the password already hashed, the email and
/// policy already checked.
pub(crate) struct Account<'a> {
    pub org_id: Option<Uuid>,
    pub email: &'a str,
    pub role: Role,
    pub password_hash: &'a str,
    /// The email's owner chose this password.
    pub email_verified: bool,
}

/// Inserts `account`; [`AccountError::EmailInUse`] when its email has one.
pub(crate) async fn insert_account(
    db: impl sqlx::PgExecutor<'_>,
    keys: &Keyring,
    account: Account<'_>,
) -> Result<Uuid, AccountError> {
    let id = Uuid::now_v7();
    let email = lectern_secrets::normalise_email(account.email);
    let inserted = sqlx::query(
        "INSERT INTO users (id, org_id, role, email_ct, email_bidx, key_id, password_hash, email_verified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $8 THEN now() END) ON CONFLICT (email_bidx) DO NOTHING",
    )
    .bind(id)
    .bind(account.org_id)
    .bind(account.role.as_str())
    .bind(keys.seal("users.email", id, &email))
    .bind(keys.email_index(&email))
    .bind(keys.active_key_id())
    .bind(account.password_hash)
    .bind(account.email_verified)
    .execute(db)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(AccountError::EmailInUse);
    }
    Ok(id)
}

/// A new partner API key for an organisation; the key is returned once and
/// only its SHA-256 is kept.
pub async fn create_partner_key(
    db: &PgPool,
    org_id: Uuid,
    name: &str,
) -> Result<(Uuid, String), AccountError> {
    let id = Uuid::now_v7();
    let key = random_token(PARTNER_KEY_PREFIX);
    sqlx::query("INSERT INTO partner_keys (id, org_id, name, key_hash) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(org_id)
        .bind(name)
        .bind(token_fingerprint(&key))
        .execute(db)
        .await?;
    Ok((id, key))
}

pub async fn revoke_partner_key(db: &PgPool, key_id: Uuid) -> Result<bool, AccountError> {
    Ok(sqlx::query(
        "UPDATE partner_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(key_id)
    .execute(db)
    .await?
    .rows_affected()
        == 1)
}

/// The sealed columns of `users`, by name (the name is also the AAD).
const USER_FIELDS: [(&str, &str); 5] = [
    ("email_ct", "users.email"),
    ("phone_ct", "users.phone"),
    ("real_name_ct", "users.real_name"),
    ("id_number_ct", "users.id_number"),
    ("totp_secret_ct", "users.totp_secret"),
];

/// The sealed columns of one `users` row.
#[derive(sqlx::FromRow)]
struct SealedUser {
    id: Uuid,
    email_ct: Option<Vec<u8>>,
    phone_ct: Option<Vec<u8>>,
    real_name_ct: Option<Vec<u8>>,
    id_number_ct: Option<Vec<u8>>,
    totp_secret_ct: Option<Vec<u8>>,
}

#[derive(sqlx::FromRow)]
struct SealedEmail {
    id: Uuid,
    email_ct: Vec<u8>,
}

/// Re-encrypts, in batches of `batch`, every user, invitation and pending
/// sign-up row not sealed with the active key; returns how many rows
/// changed. Safe to run while serving and to interrupt: each batch is one
/// transaction. The development outbox is left alone (see
/// [`crate::notifier::Outbox`]).
pub async fn rotate_keys(db: &PgPool, keys: &Keyring, batch: i64) -> Result<u64, AccountError> {
    let active = keys.active_key_id();
    let mut changed = 0;
    loop {
        let mut tx = db.begin().await?;
        let rows: Vec<SealedUser> = sqlx::query_as(
            "SELECT id, email_ct, phone_ct, real_name_ct, id_number_ct, totp_secret_ct FROM users \
             WHERE key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(active)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let id = row.id;
            let fields = [
                row.email_ct,
                row.phone_ct,
                row.real_name_ct,
                row.id_number_ct,
                row.totp_secret_ct,
            ];
            let mut resealed = Vec::with_capacity(fields.len());
            for ((_, aad), value) in USER_FIELDS.iter().zip(fields) {
                resealed.push(match value {
                    Some(ct) => Some(keys.seal(aad, id, &keys.open(aad, id, &ct)?)),
                    None => None,
                });
            }
            sqlx::query(
                "UPDATE users SET email_ct = $2, phone_ct = $3, real_name_ct = $4, id_number_ct = $5, \
                 totp_secret_ct = $6, key_id = $7 WHERE id = $1",
            )
            .bind(id)
            .bind(&resealed[0])
            .bind(&resealed[1])
            .bind(&resealed[2])
            .bind(&resealed[3])
            .bind(&resealed[4])
            .bind(active)
            .execute(&mut *tx)
            .await?;
            changed += 1;
        }
        tx.commit().await?;
    }
    // Tables whose one sealed column is an email: (table, AAD field).
    for (table, field) in [
        ("invitations", "invitations.email"),
        ("signup_requests", "signup_requests.email"),
    ] {
        loop {
            let mut tx = db.begin().await?;
            let rows: Vec<SealedEmail> = sqlx::query_as(&format!(
                "SELECT id, email_ct FROM {table} WHERE key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
            ))
            .bind(active)
            .bind(batch)
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                break;
            }
            for SealedEmail { id, email_ct } in rows {
                let plain = keys.open(field, id, &email_ct)?;
                sqlx::query(&format!(
                    "UPDATE {table} SET email_ct = $2, key_id = $3 WHERE id = $1"
                ))
                .bind(id)
                .bind(keys.seal(field, id, &plain))
                .bind(active)
                .execute(&mut *tx)
                .await?;
                changed += 1;
            }
            tx.commit().await?;
        }
    }
    changed += rotate_sign_in_secrets(db, keys, batch).await?;
    Ok(changed)
}

/// One sealed value of the sign-in tables, with the row id it is bound to.
#[derive(sqlx::FromRow)]
struct SealedValue {
    key: String,
    /// `None`: a WeChat app's, whose row id derives from its app id.
    row: Option<Uuid>,
    ct: Vec<u8>,
}

/// Re-seals the long-lived secrets of the ways in (linked identities'
/// subjects, providers' and directories' secrets, WeChat app secrets).
/// Short-lived ones — codes, flows, WeChat tokens and session keys, OIDC
/// sessions' ID tokens — expire within hours and are not re-sealed: keep
/// a retired key configured until they have (a session's length).
async fn rotate_sign_in_secrets(
    db: &PgPool,
    keys: &Keyring,
    batch: i64,
) -> Result<u64, AccountError> {
    let active = keys.active_key_id();
    let mut changed = 0;
    // (select of key, row id and ciphertext; AAD field; update by key)
    let tables: [(&str, &str, &str); 4] = [
        (
            "SELECT id::text AS key, id AS row, subject_ct AS ct FROM external_identities \
             WHERE key_id <> $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
            "external_identities.subject",
            "UPDATE external_identities SET subject_ct = $2, key_id = $3 WHERE id::text = $1",
        ),
        (
            "SELECT org_id::text AS key, org_id AS row, client_secret_ct AS ct FROM oidc_providers \
             WHERE key_id <> $1 ORDER BY org_id LIMIT $2 FOR UPDATE SKIP LOCKED",
            "oidc_providers.client_secret",
            "UPDATE oidc_providers SET client_secret_ct = $2, key_id = $3 WHERE org_id::text = $1",
        ),
        (
            "SELECT org_id::text AS key, org_id AS row, coalesce(bind_password_ct, '') AS ct \
             FROM ldap_directories WHERE key_id <> $1 ORDER BY org_id LIMIT $2 FOR UPDATE SKIP LOCKED",
            "ldap_directories.bind_password",
            "UPDATE ldap_directories SET bind_password_ct = CASE WHEN bind_password_ct IS NULL \
             THEN NULL ELSE $2 END, key_id = $3 WHERE org_id::text = $1",
        ),
        (
            "SELECT appid AS key, NULL::uuid AS row, secret_ct AS ct FROM wechat_apps \
             WHERE key_id <> $1 ORDER BY appid LIMIT $2 FOR UPDATE SKIP LOCKED",
            "wechat_apps.secret",
            "UPDATE wechat_apps SET secret_ct = $2, key_id = $3 WHERE appid = $1",
        ),
    ];
    for (select, field, update) in tables {
        loop {
            let mut tx = db.begin().await?;
            let rows: Vec<SealedValue> = sqlx::query_as(select)
                .bind(active)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
            if rows.is_empty() {
                break;
            }
            for SealedValue { key, row, ct } in rows {
                let row = row.unwrap_or_else(|| crate::wechat::app_row(&key));
                // An LDAP directory without a service account seals nothing.
                let resealed = if ct.is_empty() {
                    Vec::new()
                } else {
                    keys.seal(field, row, &keys.open(field, row, &ct)?)
                };
                sqlx::query(update)
                    .bind(&key)
                    .bind(resealed)
                    .bind(active)
                    .execute(&mut *tx)
                    .await?;
                changed += 1;
            }
            tx.commit().await?;
        }
    }
    Ok(changed)
}

/// One account, as administrators list it.
#[derive(Serialize, schemars::JsonSchema)]
pub struct UserSummary {
    pub id: Uuid,
    /// `null` only for a global super admin.
    pub org_id: Option<Uuid>,
    #[schemars(with = "crate::RoleName")]
    pub role: String,
    /// `null` for an account made by a first sign-in with a phone,
    /// WeChat or single sign-on that has not added an email.
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The accounts the caller administers, oldest first (at most 1,000).
#[derive(Serialize, schemars::JsonSchema)]
pub struct UserList {
    pub users: Vec<UserSummary>,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    org_id: Option<Uuid>,
    role: String,
    email_ct: Option<Vec<u8>>,
    created_at: DateTime<Utc>,
}

/// `GET /api/v1/users`: the accounts of the caller's organisation.
pub async fn list(
    State(state): State<Identity>,
    principal: Principal,
) -> Result<Json<UserList>, ApiError> {
    let keys = state.keyring()?;
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT id, org_id, role, email_ct, created_at FROM users \
         WHERE ($1::uuid IS NULL OR org_id = $1) ORDER BY created_at, id LIMIT 1000",
    )
    .bind(principal.org_scope())
    .fetch_all(&state.db)
    .await?;
    let mut users = Vec::with_capacity(rows.len());
    for row in rows {
        let email = row
            .email_ct
            .map(|ct| keys.open("users.email", row.id, &ct))
            .transpose()
            .map_err(ApiError::internal)?;
        users.push(UserSummary {
            id: row.id,
            org_id: row.org_id,
            role: row.role,
            email,
            created_at: row.created_at,
        });
    }
    Ok(Json(UserList { users }))
}

#[derive(sqlx::FromRow)]
struct ExportRow {
    id: Uuid,
    org_id: Option<Uuid>,
    role: String,
    email_ct: Option<Vec<u8>>,
    phone_ct: Option<Vec<u8>>,
    real_name_ct: Option<Vec<u8>>,
}

/// `GET /api/v1/users/export`: every account's personal data as CSV — a
/// critical operation (step-up) that also raises a `bulk_export` alert.
pub async fn export(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
) -> Result<Response, ApiError> {
    let keys = state.keyring()?;
    let rows: Vec<ExportRow> = sqlx::query_as(
        "SELECT id, org_id, role, email_ct, phone_ct, real_name_ct FROM users \
         WHERE ($1::uuid IS NULL OR org_id = $1) ORDER BY created_at, id",
    )
    .bind(principal.org_scope())
    .fetch_all(&state.db)
    .await?;
    let open = |aad, id, ct: Option<Vec<u8>>| -> Result<String, ApiError> {
        ct.map_or(Ok(String::new()), |ct| {
            keys.open(aad, id, &ct).map_err(ApiError::internal)
        })
    };
    let mut csv = String::from("id,org_id,role,email,phone,real_name\n");
    let count = rows.len();
    for row in rows {
        let id = row.id;
        let fields = [
            id.to_string(),
            row.org_id.map(|o| o.to_string()).unwrap_or_default(),
            row.role,
            open("users.email", id, row.email_ct)?,
            open("users.phone", id, row.phone_ct)?,
            open("users.real_name", id, row.real_name_ct)?,
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        csv.push_str(&line.join(","));
        csv.push('\n');
    }
    // A GET, so the middleware would not record it: the export of personal
    // data is recorded here, with the step-up grant the gate consumed for it.
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "users.export".into(),
            outcome: "ok",
            detail: Some(
                serde_json::json!({ "accounts": count, "step_up": "consumed" }).to_string(),
            ),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    alerts::raise(
        &state,
        Alert {
            kind: AlertKind::BulkExport,
            org_id: principal.org_id,
            user_id: principal.user_id(),
            ip: context.ip.as_deref(),
            detail: format!("personal data of {count} accounts exported"),
        },
    )
    .await;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"users.csv\"",
            ),
        ],
        csv,
    )
        .into_response())
}

/// `PUT /api/v1/users/{user_id}/role`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct RoleChange {
    /// The new role; `super_admin` is the only role an account without an
    /// organisation may hold.
    #[schemars(with = "crate::RoleName")]
    role: String,
}

/// The account's role now.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RoleChanged {
    pub id: Uuid,
    #[schemars(with = "crate::RoleName")]
    pub role: Role,
}

/// `PUT /api/v1/users/{user_id}/role {"role"}`.
pub async fn change_role(
    State(state): State<Identity>,
    principal: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<RoleChange>,
) -> Result<Json<RoleChanged>, ApiError> {
    let role: Role = change.role.parse()?;
    let updated = sqlx::query(
        "UPDATE users SET role = $3 WHERE id = $1 AND ($2::uuid IS NULL OR org_id = $2) \
         AND (org_id IS NOT NULL OR $3 = 'super_admin')",
    )
    .bind(user_id)
    .bind(principal.org_scope())
    .bind(role.as_str())
    .execute(&state.db)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::not_found(format!("no user {user_id}")));
    }
    state.sessions.evict_user(user_id);
    Ok(Json(RoleChanged { id: user_id, role }))
}

/// `DELETE /api/v1/users/{user_id}`: the account, its sessions and grants.
pub async fn delete(
    State(state): State<Identity>,
    principal: Principal,
    ApiPath(user_id): ApiPath<Uuid>,
) -> Result<NoContent, ApiError> {
    let deleted =
        sqlx::query("DELETE FROM users WHERE id = $1 AND ($2::uuid IS NULL OR org_id = $2)")
            .bind(user_id)
            .bind(principal.org_scope())
            .execute(&state.db)
            .await?
            .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found(format!("no user {user_id}")));
    }
    state.sessions.evict_user(user_id);
    Ok(NoContent)
}
