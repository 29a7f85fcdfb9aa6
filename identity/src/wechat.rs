//! WeChat sign-in: the mini-program's `wx.login` and the official
//! account's web authorisation for the H5 app, an app-level access-token
//! cache every node shares, and the decryption of the user data a
//! mini-program hands over.
//!
//! **Apps** (`wechat_apps`): an organisation registers its mini-program
//! and official account (app id, secret — sealed, never answered — and
//! the open-platform account they are bound to, which scopes UnionIDs).
//! A person is their UnionID when WeChat gives one (one person across the
//! organisation's apps), else their OpenID in that app; both are linked
//! (`external_identities`, kinds `wechat_unionid`/`wechat_openid`).
//!
//! **Mini-program** (`POST /api/v1/auth/wechat/mini-program`): the code
//! from `wx.login` is exchanged server-side (`sns/jscode2session`); the
//! session key it returns is sealed per Lectern session
//! (`wechat_sessions`) and never leaves the server. WeChat refuses a code
//! used twice (`errcode` 40163) or stale (40029): both are a refused
//! sign-in. `POST /api/v1/me/wechat/user-data` then checks a `rawData`'s
//! signature (`sha1(rawData + session_key)`, constant-time) and decrypts
//! `encryptedData` (AES-128-CBC, key = the session key, PKCS#7), whose
//! watermark must name this app ([`check_signature`], [`decrypt`]).
//!
//! **Official account** (`GET /api/v1/auth/wechat/{appid}/authorize`):
//! `snsapi_base` (silent, OpenID only) or `snsapi_userinfo` (asks, and
//! gives the UnionID and profile). The only redirect URI ever sent is
//! this server's own callback, and the browser comes back only to a path
//! of this site; `state` is bound to the browser by an HttpOnly cookie and
//! used once, like OIDC's. The callback exchanges the code
//! (`sns/oauth2/access_token`), reads `sns/userinfo` for `snsapi_userinfo`,
//! and signs in.
//!
//! **Access token** ([`access_token`]): `cgi-bin/token` answers a token
//! valid ~2 h whose refresh invalidates the previous one after a grace
//! period, so nodes must share it: it is kept sealed in PostgreSQL and
//! refreshed by one node at a time (a transaction-scoped advisory lock on
//! the app) once it is within [`REFRESH_MARGIN`] of expiry.
//!
//! **Lockout**: a WeChat code names nobody until WeChat has answered, so
//! refused codes and bad `state`s are counted against the client address
//! (`ways::reserve_address`, the passwords' address limit and lockout):
//! past it, 429 `account_locked` before WeChat is asked.
//!
//! Every exchange goes through `lectern_egress` (the API's base URL is
//! `SsoSettings::wechat_api`). Codes, session keys, access tokens and
//! secrets are never logged or answered; WeChat's error text is reduced
//! to its numeric code.

use std::time::Duration;

use aes::cipher::{BlockDecryptMut, KeyIvInit};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lectern_egress::Url;
use lectern_secrets::{random_token, token_fingerprint};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::oidc::{self, SeeOther};
use crate::policy::{self, SignInMethod};
use crate::session::{SignedIn, WithSessionCookie};
use crate::throttle::Reservation;
use crate::ways::{self, External, IdentityKind};
use crate::Identity;
use lectern_web::{ApiError, ApiJson, ApiPath, ApiQuery, ClientContext, ErrorCode, Principal};

/// An access token this close to its expiry is refreshed before use.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// The cookie binding an official-account authorisation to its browser.
pub const FLOW_COOKIE: &str = "lectern_wechat";
const FLOW_TTL: Duration = Duration::from_secs(10 * 60);

/// Why user data was not believed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("the signature does not match")]
    Signature,
    #[error("the data does not decrypt")]
    Decrypt,
    #[error("the data is for another app")]
    Watermark,
}

/// `rawData`'s `signature`: SHA-1 of the raw data followed by the session
/// key, in hex; compared in constant time.
pub fn check_signature(raw_data: &str, session_key: &str, signature: &str) -> bool {
    let mut h = Sha1::new();
    h.update(raw_data.as_bytes());
    h.update(session_key.as_bytes());
    let expected = hex::encode(h.finalize());
    bool::from(
        expected
            .as_bytes()
            .ct_eq(signature.trim().to_ascii_lowercase().as_bytes()),
    )
}

/// Decrypts `encryptedData` (base64) with the session key and `iv`
/// (base64): AES-128-CBC, PKCS#7. The JSON must carry
/// `watermark.appid == appid`.
pub fn decrypt(
    session_key: &str,
    encrypted_data: &str,
    iv: &str,
    appid: &str,
) -> Result<serde_json::Value, UserDataError> {
    let key = STANDARD
        .decode(session_key)
        .map_err(|_| UserDataError::Decrypt)?;
    let iv = STANDARD.decode(iv).map_err(|_| UserDataError::Decrypt)?;
    let data = STANDARD
        .decode(encrypted_data)
        .map_err(|_| UserDataError::Decrypt)?;
    let cipher = cbc::Decryptor::<aes::Aes128>::new_from_slices(&key, &iv)
        .map_err(|_| UserDataError::Decrypt)?;
    let plain = cipher
        .decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(&data)
        .map_err(|_| UserDataError::Decrypt)?;
    let value: serde_json::Value =
        serde_json::from_slice(&plain).map_err(|_| UserDataError::Decrypt)?;
    if value["watermark"]["appid"].as_str() != Some(appid) {
        return Err(UserDataError::Watermark);
    }
    Ok(value)
}

#[derive(sqlx::FromRow)]
struct AppRow {
    org_id: Uuid,
    kind: String,
    secret_ct: Vec<u8>,
    open_platform: Option<String>,
}

struct App {
    appid: String,
    org_id: Uuid,
    kind: String,
    secret: String,
    open_platform: Option<String>,
}

/// The AAD field of an app's sealed secret (the row is [`app_row`]).
const SECRET_FIELD: &str = "wechat_apps.secret";

/// The row id an app's sealed values are bound to.
pub(crate) fn app_row(appid: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("wechat:{appid}").as_bytes())
}

async fn app(state: &Identity, appid: &str) -> Result<App, ApiError> {
    let keys = state.keyring()?;
    let row: Option<AppRow> = sqlx::query_as(
        "SELECT org_id, kind, secret_ct, open_platform FROM wechat_apps WHERE appid = $1",
    )
    .bind(appid)
    .fetch_optional(&state.db)
    .await?;
    let row = row.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProviderNotConfigured,
            "no WeChat app with this id is configured",
        )
    })?;
    Ok(App {
        appid: appid.to_owned(),
        org_id: row.org_id,
        secret: keys
            .open(SECRET_FIELD, app_row(appid), &row.secret_ct)
            .map_err(ApiError::internal)?,
        kind: row.kind,
        open_platform: row.open_platform,
    })
}

/// What WeChat's APIs answer besides their data: `errcode` 0 or absent
/// means success.
#[derive(Deserialize)]
struct WxStatus {
    #[serde(default)]
    errcode: i64,
}

/// GETs a WeChat API path with `query`, refusing an `errcode` answer.
async fn wx_get<T: serde::de::DeserializeOwned>(
    state: &Identity,
    path: &str,
    query: &[(&str, &str)],
) -> Result<T, ApiError> {
    let mut url = Url::parse(&format!(
        "{}{path}",
        state.settings.sso.wechat_api.trim_end_matches('/')
    ))
    .map_err(ApiError::internal)?;
    url.query_pairs_mut().extend_pairs(query);
    let value: serde_json::Value = oidc::get_json(&state.settings.sso, url.as_str()).await?;
    let status: WxStatus =
        serde_json::from_value(value.clone()).map_err(|_| oidc::unavailable("WeChat's answer"))?;
    if status.errcode != 0 {
        return Err(match status.errcode {
            // Invalid, used or expired codes: the person starts again.
            40029 | 40163 | 41008 | 40030 | 42003 => {
                oidc::rejected(&format!("WeChat refused the code ({})", status.errcode))
            }
            code => oidc::unavailable(format!("WeChat answered errcode {code}")),
        });
    }
    serde_json::from_value(value).map_err(|_| oidc::unavailable("WeChat's answer is unreadable"))
}

/// The app-level access token of `appid`, shared by every node: the
/// stored one while it is not within [`REFRESH_MARGIN`] of expiry, else a
/// new one fetched by exactly one node (the others wait on the lock and
/// read it).
pub async fn access_token(state: &Identity, appid: &str) -> Result<String, ApiError> {
    let keys = state.keyring()?;
    let row = app_row(appid);
    let margin = REFRESH_MARGIN.as_secs_f64();
    let fresh = |ct: Vec<u8>| {
        keys.open("wechat_access_tokens.token", row, &ct)
            .map_err(ApiError::internal)
    };
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT token_ct FROM wechat_access_tokens \
         WHERE appid = $1 AND expires_at > now() + make_interval(secs => $2)",
    )
    .bind(appid)
    .bind(margin)
    .fetch_optional(&state.db)
    .await?;
    if let Some(ct) = stored {
        return fresh(ct);
    }
    let app = app(state, appid).await?;
    let mut tx = state.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('wechat-token:' || $1, 0))")
        .bind(appid)
        .execute(&mut *tx)
        .await?;
    // Another node may have refreshed it while this one waited.
    let stored: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT token_ct FROM wechat_access_tokens \
         WHERE appid = $1 AND expires_at > now() + make_interval(secs => $2)",
    )
    .bind(appid)
    .bind(margin)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(ct) = stored {
        return fresh(ct);
    }
    #[derive(Deserialize)]
    struct Token {
        access_token: String,
        expires_in: i64,
    }
    let token: Token = wx_get(
        state,
        "/cgi-bin/token",
        &[
            ("grant_type", "client_credential"),
            ("appid", appid),
            ("secret", &app.secret),
        ],
    )
    .await?;
    sqlx::query(
        "INSERT INTO wechat_access_tokens (appid, token_ct, key_id, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (appid) DO UPDATE SET token_ct = EXCLUDED.token_ct, key_id = EXCLUDED.key_id, \
           expires_at = EXCLUDED.expires_at, refreshed_at = now()",
    )
    .bind(appid)
    .bind(keys.seal("wechat_access_tokens.token", row, &token.access_token))
    .bind(keys.active_key_id())
    .bind(token.expires_in as f64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(token.access_token)
}

/// `PUT /api/v1/organisations/{org_id}/wechat-apps/{appid}`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct AppChange {
    pub kind: AppKind,
    /// The app secret; stored sealed, never answered.
    pub secret: String,
    /// The open-platform account the organisation's apps are bound to
    /// (UnionIDs are scoped by it); leave out to use OpenIDs only.
    #[serde(default)]
    pub open_platform: Option<String>,
}

// Deliberately no Debug: it would print the secret.

/// Which kind of WeChat app.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppKind {
    MiniProgram,
    OfficialAccount,
}

impl AppKind {
    fn as_str(self) -> &'static str {
        match self {
            AppKind::MiniProgram => "mini_program",
            AppKind::OfficialAccount => "official_account",
        }
    }
}

/// An app as administrators see it (no secret).
#[derive(Serialize, schemars::JsonSchema)]
pub struct AppAnswer {
    pub appid: String,
    pub kind: AppKind,
    pub open_platform: Option<String>,
    /// For an official account: the redirect URI its web authorisation
    /// uses (register this domain as the authorisation callback domain).
    pub redirect_uri: Option<String>,
}

/// `PUT /api/v1/organisations/{org_id}/wechat-apps/{appid}` (super
/// admin, step-up).
pub async fn put_app(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiPath((org_id, appid)): ApiPath<(Uuid, String)>,
    ApiJson(change): ApiJson<AppChange>,
) -> Result<Json<AppAnswer>, ApiError> {
    let keys = state.keyring()?;
    let org_id = principal.target_org(Some(org_id))?;
    if !(appid.len() == 18
        && appid.starts_with("wx")
        && appid[2..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
        || change.secret.is_empty()
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "an app id is wx and 16 lowercase hex digits, and the secret is required",
        ));
    }
    let stored: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO wechat_apps (appid, org_id, kind, secret_ct, key_id, open_platform) \
         SELECT $1, id, $3, $4, $5, $6 FROM organisations WHERE id = $2 \
         ON CONFLICT (appid) DO UPDATE SET kind = EXCLUDED.kind, secret_ct = EXCLUDED.secret_ct, \
           key_id = EXCLUDED.key_id, open_platform = EXCLUDED.open_platform, updated_at = now() \
           WHERE wechat_apps.org_id = EXCLUDED.org_id \
         RETURNING org_id",
    )
    .bind(&appid)
    .bind(org_id)
    .bind(change.kind.as_str())
    .bind(keys.seal(SECRET_FIELD, app_row(&appid), &change.secret))
    .bind(keys.active_key_id())
    .bind(&change.open_platform)
    .fetch_optional(&state.db)
    .await?;
    if stored.is_none() {
        // No such organisation, or the app belongs to another one.
        return Err(ApiError::not_found(format!(
            "no organisation {org_id}, or the app is another's"
        )));
    }
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.wechat_app".into(),
            target: Some(format!("org:{org_id}")),
            outcome: "ok",
            detail: Some(json!({ "appid": appid, "kind": change.kind.as_str() }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(AppAnswer {
        redirect_uri: matches!(change.kind, AppKind::OfficialAccount)
            .then(|| callback_uri(&state, &appid)),
        appid,
        kind: change.kind,
        open_platform: change.open_platform,
    }))
}

fn callback_uri(state: &Identity, appid: &str) -> String {
    format!(
        "{}/api/v1/auth/wechat/{appid}/callback",
        state.settings.app_url.trim_end_matches('/')
    )
}

/// Signs in the person WeChat named (UnionID when given, and the OpenID),
/// linking whichever of the two is not linked yet.
async fn sign_in_person(
    state: &Identity,
    context: &ClientContext,
    app: &App,
    openid: &str,
    unionid: Option<&str>,
    method: &'static str,
) -> Result<(WithSessionCookie<SignedIn>, Uuid), ApiError> {
    let policy = policy::read(&state.db, app.org_id).await?;
    if !policy.allows(SignInMethod::Wechat) {
        ways::refused(state, context, method, "method_disabled").await;
        return Err(policy::disabled(SignInMethod::Wechat));
    }
    let open_id = External {
        kind: IdentityKind::WechatOpenid,
        issuer: &app.appid,
        subject: openid,
    };
    let union = match (unionid, &app.open_platform) {
        (Some(u), Some(platform)) if !u.is_empty() => Some(External {
            kind: IdentityKind::WechatUnionid,
            issuer: platform,
            subject: u,
        }),
        _ => None,
    };
    // The UnionID first: the same person through the other app.
    let primary = union.as_ref().unwrap_or(&open_id);
    let signed_in =
        ways::sign_in_external(state, context, app.org_id, &policy, primary, None, method).await?;
    if union.is_some() {
        let user_id = signed_in.0.user_id();
        let keys = state.keyring()?;
        if ways::linked_account(state, &open_id).await?.is_none() {
            let mut conn = state.db.acquire().await?;
            // Linked to someone else already: the UnionID decides.
            let _ = ways::link(&mut conn, keys, user_id, app.org_id, &open_id).await;
        }
    }
    Ok(signed_in)
}

/// `POST /api/v1/auth/wechat/mini-program`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct MiniProgramSignIn {
    /// The mini-program's app id.
    pub appid: String,
    /// The code `wx.login` gave (single use, minutes).
    pub code: String,
}

// Deliberately no Debug: the code is a credential until exchanged.

#[derive(Deserialize)]
struct Code2Session {
    openid: String,
    session_key: String,
    #[serde(default)]
    unionid: Option<String>,
}

/// `POST /api/v1/auth/wechat/mini-program` → a session (and its cookie).
pub async fn mini_program(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(req): ApiJson<MiniProgramSignIn>,
) -> Result<WithSessionCookie<SignedIn>, ApiError> {
    const METHOD: &str = "wechat_mini_program";
    let keys = state.keyring()?;
    let app = app(&state, &req.appid).await?;
    if app.kind != "mini_program" {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "this app id is not a mini-program",
        ));
    }
    // The code names nobody until WeChat has answered: the address is
    // what repeated refused codes lock.
    let reservation = ways::reserve_address(&state, &context, METHOD).await?;
    let answer: Code2Session = match wx_get(
        &state,
        "/sns/jscode2session",
        &[
            ("appid", &app.appid),
            ("secret", &app.secret),
            ("js_code", &req.code),
            ("grant_type", "authorization_code"),
        ],
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            exchange_failed(&state, &context, reservation, METHOD, &e).await?;
            return Err(e);
        }
    };
    reservation.returned(&state.db).await?;
    let (signed_in, session_id) = sign_in_person(
        &state,
        &context,
        &app,
        &answer.openid,
        answer.unionid.as_deref(),
        METHOD,
    )
    .await?;
    sqlx::query(
        "INSERT INTO wechat_sessions (session_id, appid, session_key_ct, key_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(session_id)
    .bind(&app.appid)
    .bind(keys.seal("wechat_sessions.session_key", session_id, &answer.session_key))
    .bind(keys.active_key_id())
    .execute(&state.db)
    .await?;
    Ok(signed_in)
}

/// `POST /api/v1/me/wechat/user-data`: what the mini-program's
/// `getUserProfile`/`getPhoneNumber`-style APIs handed over.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct UserData {
    /// `encryptedData`, base64.
    pub encrypted_data: String,
    /// `iv`, base64.
    pub iv: String,
    /// `rawData` and its `signature`, when the API gave them: checked too.
    #[serde(default)]
    pub raw_data: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
}

/// The decrypted user data's fields Lectern uses.
#[derive(Serialize, schemars::JsonSchema)]
pub struct WechatProfile {
    pub nick_name: Option<String>,
    pub avatar_url: Option<String>,
    /// Whether a UnionID came with the data (and is now linked).
    pub union_linked: bool,
}

#[derive(sqlx::FromRow)]
struct SessionKeyRow {
    appid: String,
    session_key_ct: Vec<u8>,
}

/// `POST /api/v1/me/wechat/user-data`: checks and decrypts user data with
/// this session's session key (which the caller never sees).
pub async fn user_data(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiJson(req): ApiJson<UserData>,
) -> Result<Json<WechatProfile>, ApiError> {
    let keys = state.keyring()?;
    let (user_id, session_id) = principal
        .user_id()
        .zip(principal.session_id())
        .ok_or_else(ApiError::unauthenticated)?;
    let row: Option<SessionKeyRow> =
        sqlx::query_as("SELECT appid, session_key_ct FROM wechat_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&state.db)
            .await?;
    let row = row.ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "this session did not come from a mini-program sign-in",
        )
    })?;
    let session_key = keys
        .open(
            "wechat_sessions.session_key",
            session_id,
            &row.session_key_ct,
        )
        .map_err(ApiError::internal)?;
    let refuse = |e: UserDataError| {
        ApiError::new(
            ErrorCode::SignInRejected,
            format!("the user data was refused: {e}"),
        )
    };
    if let (Some(raw), Some(sig)) = (&req.raw_data, &req.signature) {
        if !check_signature(raw, &session_key, sig) {
            return Err(refuse(UserDataError::Signature));
        }
    }
    let data = decrypt(&session_key, &req.encrypted_data, &req.iv, &row.appid).map_err(refuse)?;
    let app = app(&state, &row.appid).await?;
    let mut union_linked = false;
    if let (Some(unionid), Some(platform), Some(org_id)) = (
        data["unionId"].as_str(),
        app.open_platform.as_deref(),
        principal.org_id,
    ) {
        let union = External {
            kind: IdentityKind::WechatUnionid,
            issuer: platform,
            subject: unionid,
        };
        match ways::linked_account(&state, &union).await? {
            Some(a) => union_linked = a.user_id == user_id,
            None => {
                let mut conn = state.db.acquire().await?;
                ways::link(&mut conn, keys, user_id, org_id, &union).await?;
                union_linked = true;
                audit::record_or_log(
                    &state,
                    &AuditEvent {
                        action: "sign_in.link".into(),
                        target: Some(format!("user:{user_id}")),
                        outcome: "ok",
                        detail: Some(json!({ "kind": "wechat_unionid" }).to_string()),
                        ..AuditEvent::by(Some(&principal), &context)
                    },
                )
                .await;
            }
        }
    }
    Ok(Json(WechatProfile {
        nick_name: data["nickName"].as_str().map(str::to_owned),
        avatar_url: data["avatarUrl"].as_str().map(str::to_owned),
        union_linked,
    }))
}

/// `GET /api/v1/auth/wechat/{appid}/authorize`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct AuthorizeQuery {
    /// `snsapi_base` (silent, OpenID only; the default) or
    /// `snsapi_userinfo` (WeChat asks; gives the UnionID).
    #[serde(default)]
    pub scope: Option<String>,
    /// A path of this site to come back to (default `/app/`).
    #[serde(default)]
    pub return_to: Option<String>,
}

/// `GET /api/v1/auth/wechat/{appid}/authorize`: off to WeChat's
/// authorisation page (inside WeChat's browser).
pub async fn authorize(
    State(state): State<Identity>,
    context: ClientContext,
    ApiPath(appid): ApiPath<String>,
    ApiQuery(query): ApiQuery<AuthorizeQuery>,
) -> Result<SeeOther, ApiError> {
    let scope = match query.scope.as_deref().unwrap_or("snsapi_base") {
        s @ ("snsapi_base" | "snsapi_userinfo") => s,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "scope is snsapi_base or snsapi_userinfo",
            ))
        }
    };
    let return_to = oidc::local_path(query.return_to)?;
    let app = app(&state, &appid).await?;
    if app.kind != "official_account" {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "this app id is not an official account",
        ));
    }
    if !policy::read(&state.db, app.org_id)
        .await?
        .allows(SignInMethod::Wechat)
    {
        ways::refused(
            &state,
            &context,
            "wechat_official_account",
            "method_disabled",
        )
        .await;
        return Err(policy::disabled(SignInMethod::Wechat));
    }
    ways::sweep_expired(&state.db, "wechat_flows").await?;
    let state_token = random_token("");
    let browser = random_token("");
    sqlx::query(
        "INSERT INTO wechat_flows (id, state_hash, browser_hash, appid, scope, return_to, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))",
    )
    .bind(Uuid::now_v7())
    .bind(token_fingerprint(&state_token))
    .bind(token_fingerprint(&browser))
    .bind(&appid)
    .bind(scope)
    .bind(&return_to)
    .bind(FLOW_TTL.as_secs_f64())
    .execute(&state.db)
    .await?;
    let mut url = Url::parse(&format!(
        "{}/connect/oauth2/authorize",
        state.settings.sso.wechat_open.trim_end_matches('/')
    ))
    .map_err(ApiError::internal)?;
    url.query_pairs_mut()
        .append_pair("appid", &appid)
        .append_pair("redirect_uri", &callback_uri(&state, &appid))
        .append_pair("response_type", "code")
        .append_pair("scope", scope)
        .append_pair("state", &state_token);
    url.set_fragment(Some("wechat_redirect"));
    let cookie = axum::http::HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={browser}; Path=/api/v1/auth/wechat/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
        FLOW_TTL.as_secs()
    ))
    .map_err(ApiError::internal)?;
    Ok(SeeOther {
        location: url.to_string(),
        cookies: vec![cookie],
    })
}

/// `GET /api/v1/auth/wechat/{appid}/callback`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct WechatCallback {
    /// Absent when the person declined `snsapi_userinfo`.
    #[serde(default)]
    pub code: Option<String>,
    pub state: String,
}

// Deliberately no Debug: the code is a credential until exchanged.

#[derive(sqlx::FromRow)]
struct WechatFlowRow {
    browser_hash: Vec<u8>,
    scope: String,
    return_to: String,
}

#[derive(Deserialize)]
struct OauthToken {
    access_token: String,
    openid: String,
    #[serde(default)]
    unionid: Option<String>,
}

#[derive(Deserialize)]
struct UserInfo {
    #[serde(default)]
    unionid: Option<String>,
}

/// `GET /api/v1/auth/wechat/{appid}/callback`: WeChat's answer. A refused
/// one sends the person's browser back to the sign-in page with the
/// refusal's code ([`oidc::back_to_sign_in`]).
pub async fn callback(
    State(state): State<Identity>,
    context: ClientContext,
    headers: HeaderMap,
    ApiPath(appid): ApiPath<String>,
    ApiQuery(query): ApiQuery<WechatCallback>,
) -> Result<SeeOther, ApiError> {
    let result = finish_callback(
        State(state),
        context,
        headers.clone(),
        ApiPath(appid),
        ApiQuery(query),
    )
    .await;
    oidc::back_to_sign_in(&headers, result)
}

async fn finish_callback(
    State(state): State<Identity>,
    context: ClientContext,
    headers: HeaderMap,
    ApiPath(appid): ApiPath<String>,
    ApiQuery(query): ApiQuery<WechatCallback>,
) -> Result<SeeOther, ApiError> {
    const METHOD: &str = "wechat_official_account";
    let reservation = ways::reserve_address(&state, &context, METHOD).await?;
    let flow: Option<WechatFlowRow> = sqlx::query_as(
        "UPDATE wechat_flows SET used_at = now() \
         WHERE state_hash = $1 AND appid = $2 AND used_at IS NULL AND expires_at > now() \
         RETURNING browser_hash, scope, return_to",
    )
    .bind(token_fingerprint(&query.state))
    .bind(&appid)
    .fetch_optional(&state.db)
    .await?;
    let bound = match (&flow, oidc::cookie(&headers, FLOW_COOKIE)) {
        (Some(f), Some(browser)) => bool::from(token_fingerprint(browser).ct_eq(&f.browser_hash)),
        _ => false,
    };
    let Some(flow) = flow.filter(|_| bound) else {
        ways::failed(&state, &context, &reservation, METHOD, "state").await;
        return Err(oidc::rejected(
            "the state is unknown, used, expired or from another browser",
        ));
    };
    let Some(code) = query.code.as_deref() else {
        // The person said no: not a guess.
        reservation.returned(&state.db).await?;
        ways::refused(&state, &context, METHOD, "declined").await;
        return Err(oidc::rejected("the authorisation was declined"));
    };
    let app = app(&state, &appid).await?;
    let token: OauthToken = match wx_get(
        &state,
        "/sns/oauth2/access_token",
        &[
            ("appid", &app.appid),
            ("secret", &app.secret),
            ("code", code),
            ("grant_type", "authorization_code"),
        ],
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            exchange_failed(&state, &context, reservation, METHOD, &e).await?;
            return Err(e);
        }
    };
    reservation.returned(&state.db).await?;
    let mut unionid = token.unionid.clone();
    if flow.scope == "snsapi_userinfo" && unionid.is_none() {
        let info: UserInfo = wx_get(
            &state,
            "/sns/userinfo",
            &[
                ("access_token", &token.access_token),
                ("openid", &token.openid),
                ("lang", "zh_CN"),
            ],
        )
        .await?;
        unionid = info.unionid;
    }
    let (signed_in, _) = sign_in_person(
        &state,
        &context,
        &app,
        &token.openid,
        unionid.as_deref(),
        METHOD,
    )
    .await?;
    Ok(SeeOther {
        location: flow.return_to,
        cookies: vec![signed_in.cookie().clone(), clear_flow_cookie()],
    })
}

/// A code exchange that did not work: a code WeChat refused (forged,
/// used, stale) stays counted against the address, which locks after as
/// many failures as passwords allow; WeChat being unreachable is nobody's
/// guess, so that attempt is given back.
async fn exchange_failed(
    state: &Identity,
    context: &ClientContext,
    reservation: Reservation,
    method: &'static str,
    error: &ApiError,
) -> Result<(), ApiError> {
    if error.code == ErrorCode::SignInRejected {
        ways::failed(state, context, &reservation, method, "code_rejected").await;
    } else {
        reservation.returned(&state.db).await?;
        ways::refused(state, context, method, "code_exchange").await;
    }
    Ok(())
}

fn clear_flow_cookie() -> axum::http::HeaderValue {
    axum::http::HeaderValue::from_static(
        "lectern_wechat=; Path=/api/v1/auth/wechat/; HttpOnly; Secure; SameSite=Lax; Max-Age=0",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example WeChat publishes for 开放数据校验与解密 (signature), and the
    // WXBizDataCrypt demo's values (decryption).
    const RAW: &str = r#"{"nickName":"Band","gender":1,"language":"zh_CN","city":"Guangzhou","province":"Guangdong","country":"CN","avatarUrl":"http://wx.qlogo.cn/mmopen/vi_32/1vZvI39NWFQ9XM4LtQpFrQJ1xlgZxx3w7bQxKARol6503Iuswjjn6nIGBiaycAjAtpujxyzYsrztuuICqIM5ibXQ/0"}"#;
    pub(crate) const APPID: &str = "wx4f4bc4dec97d474b";
    pub(crate) const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
    pub(crate) const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
    pub(crate) const ENCRYPTED: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

    #[test]
    fn the_published_signature_example_holds_and_a_changed_byte_does_not() {
        let key = "HyVFkGl5F5OQWJZZaNzBBg==";
        assert!(check_signature(
            RAW,
            key,
            "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
        ));
        assert!(!check_signature(
            &RAW.replace("Band", "Bend"),
            key,
            "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
        ));
        assert!(!check_signature(
            RAW,
            "another-key",
            "75e81ceda165f4ffa64f4068af58c64b8f54b88c"
        ));
    }

    #[test]
    fn the_published_user_data_decrypts_for_its_app_only() {
        let data = decrypt(SESSION_KEY, ENCRYPTED, IV, APPID).unwrap();
        assert_eq!(data["openId"], "oGZUI0egBJY1zhBYw2KhdUfwVJJE");
        assert_eq!(data["unionId"], "ocMvos6NjeKLIBqg5Mr9QjxrP1FA");
        assert_eq!(data["nickName"], "Band");
        assert_eq!(
            decrypt(SESSION_KEY, ENCRYPTED, IV, "wx0000000000000000"),
            Err(UserDataError::Watermark)
        );
        // Another key (a forged or stale session) does not decrypt it.
        assert!(decrypt("HyVFkGl5F5OQWJZZaNzBBg==", ENCRYPTED, IV, APPID).is_err());
        // A flipped byte in the last block breaks the padding or the JSON.
        let mut bytes = STANDARD.decode(ENCRYPTED).unwrap();
        let n = bytes.len();
        bytes[n - 20] ^= 1;
        assert!(decrypt(SESSION_KEY, &STANDARD.encode(bytes), IV, APPID).is_err());
    }
}
