//! Each organisation's sign-in policy: which ways in it allows besides the
//! password (SMS codes, WeChat, OIDC, LDAP) and what a first sign-in by
//! one of them does when no account matches — create a learner (just in
//! time) or refuse (`invitation_required`). An organisation without a
//! `sign_in_policies` row allows passwords only and new accounts only by
//! invitation, the behaviour before policies existed.
//!
//! The password stays allowed whatever the policy says: it is how the
//! organisation's administrators (who change the policy) get in.
//!
//! Reading the policy is public (the apps show the buttons it allows,
//! naming the organisation's OpenID provider by its issuer and sending a
//! browser inside WeChat to its official account's authorisation — both
//! public anyway, never a secret);
//! changing it is a super admin's critical operation (step-up), audited by
//! the middleware and with its own `sign_in.policy` event naming the
//! methods.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::Identity;
use lectern_web::{ApiError, ApiJson, ApiPath, ClientContext, ErrorCode, Principal};

/// A way in besides the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignInMethod {
    /// A six-digit code sent by SMS to a verified phone number.
    Sms,
    /// WeChat: the mini-program's `wx.login` and the official account's
    /// web authorisation.
    Wechat,
    /// The organisation's OpenID Connect provider.
    Oidc,
    /// The organisation's LDAP / Active Directory.
    Ldap,
}

impl SignInMethod {
    pub const ALL: [SignInMethod; 4] = [
        SignInMethod::Sms,
        SignInMethod::Wechat,
        SignInMethod::Oidc,
        SignInMethod::Ldap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SignInMethod::Sms => "sms",
            SignInMethod::Wechat => "wechat",
            SignInMethod::Oidc => "oidc",
            SignInMethod::Ldap => "ldap",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// What a first sign-in does when no account matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NewAccounts {
    /// Refused with `invitation_required`: accounts come from invitations
    /// (or an administrator).
    Invitation,
    /// A learner account is created in the organisation.
    JustInTime,
}

impl NewAccounts {
    fn as_str(self) -> &'static str {
        match self {
            NewAccounts::Invitation => "invitation",
            NewAccounts::JustInTime => "just_in_time",
        }
    }
}

/// An organisation's sign-in policy.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SignInPolicy {
    /// The ways in allowed besides the password (always allowed).
    pub methods: Vec<SignInMethod>,
    pub new_accounts: NewAccounts,
}

impl SignInPolicy {
    pub fn allows(&self, method: SignInMethod) -> bool {
        self.methods.contains(&method)
    }

    /// The policy allows `method`, or 403 `sign_in_method_disabled`.
    pub fn require(&self, method: SignInMethod) -> Result<(), ApiError> {
        if self.allows(method) {
            Ok(())
        } else {
            Err(disabled(method))
        }
    }

    pub fn just_in_time(&self) -> bool {
        self.new_accounts == NewAccounts::JustInTime
    }
}

pub(crate) fn disabled(method: SignInMethod) -> ApiError {
    ApiError::new(
        ErrorCode::SignInMethodDisabled,
        format!(
            "this organisation does not allow signing in with {}",
            method.as_str()
        ),
    )
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    methods: Vec<String>,
    new_accounts: String,
}

/// The policy of `org_id` (the default when it has none, or when the
/// organisation does not exist: nothing beyond passwords).
pub async fn read(db: impl sqlx::PgExecutor<'_>, org_id: Uuid) -> Result<SignInPolicy, ApiError> {
    let row: Option<PolicyRow> =
        sqlx::query_as("SELECT methods, new_accounts FROM sign_in_policies WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(db)
            .await?;
    Ok(match row {
        None => SignInPolicy {
            methods: Vec::new(),
            new_accounts: NewAccounts::Invitation,
        },
        Some(row) => SignInPolicy {
            methods: row
                .methods
                .iter()
                .filter_map(|m| SignInMethod::parse(m))
                .collect(),
            new_accounts: if row.new_accounts == "just_in_time" {
                NewAccounts::JustInTime
            } else {
                NewAccounts::Invitation
            },
        },
    })
}

/// `PUT /api/v1/organisations/{org_id}/sign-in-policy`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct PolicyChange {
    /// Every way in to allow besides the password (an empty list: the
    /// password only).
    pub methods: Vec<SignInMethod>,
    pub new_accounts: NewAccounts,
}

/// The policy as stored.
#[derive(Serialize, schemars::JsonSchema)]
pub struct PolicyAnswer {
    pub org_id: Uuid,
    #[serde(flatten)]
    pub policy: SignInPolicy,
    /// When it last changed; `null` while the organisation has the default.
    pub updated_at: Option<DateTime<Utc>>,
    /// The issuer URL of the organisation's OpenID provider (a sign-in
    /// screen names it on its button), `null` when none is configured.
    /// Public anyway: it is where browsers are sent.
    pub oidc_issuer: Option<String>,
    /// The app id of the organisation's WeChat official account, which
    /// the H5 app sends a browser inside WeChat to
    /// (`/api/v1/auth/wechat/{appid}/authorize`); `null` when it has
    /// none. Public anyway: it is in WeChat's own authorisation URL.
    pub wechat_official_account: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PublicParts {
    oidc_issuer: Option<String>,
    wechat_official_account: Option<String>,
}

/// What a sign-in screen needs beyond the methods: the provider to name
/// and the official account to authorise with. Secrets stay in their rows.
async fn public_parts(
    db: impl sqlx::PgExecutor<'_>,
    org_id: Uuid,
) -> Result<PublicParts, ApiError> {
    Ok(sqlx::query_as(
        "SELECT (SELECT issuer FROM oidc_providers WHERE org_id = $1) AS oidc_issuer, \
           (SELECT appid FROM wechat_apps WHERE org_id = $1 AND kind = 'official_account' \
            ORDER BY appid LIMIT 1) AS wechat_official_account",
    )
    .bind(org_id)
    .fetch_one(db)
    .await?)
}

/// `GET /api/v1/organisations/{org_id}/sign-in-policy`: public, so a
/// sign-in screen can offer the ways the organisation allows. An unknown
/// organisation answers 404.
pub async fn get(
    State(state): State<Identity>,
    ApiPath(org_id): ApiPath<Uuid>,
) -> Result<Json<PolicyAnswer>, ApiError> {
    let exists: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT p.updated_at FROM organisations o \
         LEFT JOIN sign_in_policies p ON p.org_id = o.id WHERE o.id = $1",
    )
    .bind(org_id)
    .fetch_optional(&state.db)
    .await?;
    let Some(updated_at) = exists else {
        return Err(ApiError::not_found(format!("no organisation {org_id}")));
    };
    let parts = public_parts(&state.db, org_id).await?;
    Ok(Json(PolicyAnswer {
        org_id,
        policy: read(&state.db, org_id).await?,
        updated_at,
        oidc_issuer: parts.oidc_issuer,
        wechat_official_account: parts.wechat_official_account,
    }))
}

/// `PUT /api/v1/organisations/{org_id}/sign-in-policy`: the
/// organisation's super admin (or a global one), after a step-up.
pub async fn put(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiPath(org_id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<PolicyChange>,
) -> Result<Json<PolicyAnswer>, ApiError> {
    let org_id = principal.target_org(Some(org_id))?;
    let mut methods: Vec<&str> = change.methods.iter().map(|m| m.as_str()).collect();
    methods.sort_unstable();
    methods.dedup();
    let updated_at: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO sign_in_policies (org_id, methods, new_accounts) \
         SELECT id, $2, $3 FROM organisations WHERE id = $1 \
         ON CONFLICT (org_id) DO UPDATE SET methods = EXCLUDED.methods, \
           new_accounts = EXCLUDED.new_accounts, updated_at = now() \
         RETURNING updated_at",
    )
    .bind(org_id)
    .bind(&methods)
    .bind(change.new_accounts.as_str())
    .fetch_optional(&state.db)
    .await?;
    let Some(updated_at) = updated_at else {
        return Err(ApiError::not_found(format!("no organisation {org_id}")));
    };
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.policy".into(),
            target: Some(format!("org:{org_id}")),
            outcome: "ok",
            detail: Some(
                serde_json::json!({ "methods": methods, "new_accounts": change.new_accounts.as_str() })
                    .to_string(),
            ),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    let parts = public_parts(&state.db, org_id).await?;
    Ok(Json(PolicyAnswer {
        org_id,
        policy: read(&state.db, org_id).await?,
        updated_at: Some(updated_at),
        oidc_issuer: parts.oidc_issuer,
        wechat_official_account: parts.wechat_official_account,
    }))
}
