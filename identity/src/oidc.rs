//! OpenID Connect single sign-on: an organisation names its provider
//! (issuer, client id, client secret — sealed, never answered), and its
//! people sign in with the authorisation code flow and PKCE (S256).
//!
//! **Start** (`GET /api/v1/auth/oidc/{org_id}/start`): reads the
//! provider's discovery document, makes a `state`, a `nonce` and a PKCE
//! verifier, stores the flow (`oidc_flows`: the state's SHA-256, the
//! verifier sealed) bound to this browser — the SHA-256 of a random value
//! put in an HttpOnly cookie (`lectern_oidc`, `SameSite=Lax` so it comes
//! back on the provider's top-level redirect) — and redirects there.
//!
//! **Callback** (`…/callback?code&state`): the flow must exist, be unused,
//! unexpired and belong to the browser's cookie (compared in constant
//! time); it is used up before the code is exchanged, so a replayed state
//! fails. The code is exchanged at the token endpoint with the verifier
//! and the client secret (HTTP Basic); the ID token's signature is checked
//! against the provider's JWKS (the key its `kid` names; an unknown `kid`
//! re-reads the JWKS once, which is how a key rotation is followed; `HS*`
//! and `none` are refused), then `iss`, `aud` (and `azp` when several
//! audiences), `nonce`, and `exp`/`iat` with the configured clock skew.
//! The subject signs in ([`crate::ways::sign_in_external`]: linked
//! account, or a just-in-time learner) or — for a flow a signed-in person
//! started with a step-up — is linked to their account. The browser is
//! sent back to the flow's path of this site with the session cookie.
//!
//! **Logout** (`POST /api/v1/auth/oidc/logout`): ends the Lectern session
//! and answers the provider's `end_session_endpoint` URL with the ID token
//! as `id_token_hint` and the app as `post_logout_redirect_uri`; the app
//! navigates there so the provider's session ends too (RP-initiated
//! logout). The ID token is kept sealed per session (`oidc_sessions`) for
//! this only.
//!
//! Every request to the provider goes through `lectern_egress`: the
//! provider must be public unless `LECTERN_SIGN_IN_ALLOW` names it (a
//! provider inside the institution's network, or the test provider), and
//! plain `http` is accepted only for allowed hosts. Discovery documents
//! are cached for an hour, key sets until a `kid` is missing. Nothing the
//! provider returns as a secret (code, access token, client secret) is
//! logged or answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::Utc;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lectern_egress::{AllowList, Url};
use lectern_secrets::{random_token, token_fingerprint};
use lectern_web::doc::{DocOutput, Operation, Schemas};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::policy::{self, SignInMethod};
use crate::ways::{self, External, IdentityKind};
use crate::Identity;
use lectern_web::{ApiError, ApiJson, ApiPath, ApiQuery, ClientContext, ErrorCode, Principal};

/// The cookie binding a flow to the browser that started it.
pub const FLOW_COOKIE: &str = "lectern_oidc";
/// How long a started sign-in may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(10 * 60);
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Tunable parts of single sign-on.
#[derive(Debug, Clone)]
pub struct SsoSettings {
    /// Identity providers and directories that may be on private or
    /// loopback addresses (and use plain `http`/`ldap` without TLS only
    /// when named here and `allow_plain` is set).
    pub allow: AllowList,
    /// How far the provider's clock may be from ours (ID token `exp`/`iat`).
    pub clock_skew: Duration,
    /// Development only: plain `http` to allowed providers, plain LDAP
    /// without StartTLS.
    pub allow_plain: bool,
    /// Seconds added to the wall clock ID tokens are judged by; tests
    /// move time with it instead of sleeping.
    pub time_shift: Arc<AtomicI64>,
    /// WeChat's API (`https://api.weixin.qq.com`; tests point it at a
    /// local stand-in) and web authorisation page
    /// (`https://open.weixin.qq.com`).
    pub wechat_api: String,
    pub wechat_open: String,
    /// PEM certificates LDAPS and StartTLS trust besides the system's
    /// (an institution's own CA).
    pub ldap_ca: Option<String>,
}

impl Default for SsoSettings {
    fn default() -> Self {
        Self {
            allow: AllowList::default(),
            clock_skew: Duration::from_secs(60),
            allow_plain: false,
            time_shift: Arc::default(),
            wechat_api: "https://api.weixin.qq.com".to_owned(),
            wechat_open: "https://open.weixin.qq.com".to_owned(),
            ldap_ca: None,
        }
    }
}

impl SsoSettings {
    fn now(&self) -> i64 {
        Utc::now().timestamp() + self.time_shift.load(Ordering::Relaxed)
    }
}

/// What discovery says of a provider, the parts used.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    end_session_endpoint: Option<String>,
}

struct CachedProvider {
    discovery: Discovery,
    read_at: Instant,
    jwks: Option<JwkSet>,
}

/// Discovery documents and key sets, per issuer, shared by the node.
#[derive(Default)]
pub struct ProviderCache(Mutex<HashMap<String, CachedProvider>>);

pub(crate) fn unavailable(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::ProviderUnavailable,
        format!("the identity provider: {what}"),
    )
}

pub(crate) fn rejected(why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::SignInRejected,
        format!("the sign-in was refused: {why}; start again"),
    )
}

/// A client for `url` through egress: checked, pinned, no redirects.
async fn client_for(settings: &SsoSettings, url: &str) -> Result<(reqwest::Client, Url), ApiError> {
    let url = lectern_egress::parse_url(url).map_err(unavailable)?;
    if url.scheme() != "https"
        && !(settings.allow_plain && settings.allow.allows_host(url.host_str().unwrap_or("")))
        && !(settings.allow_plain
            && url
                .host_str()
                .and_then(|h| h.parse().ok())
                .is_some_and(|ip| settings.allow.allows_addr(ip)))
    {
        return Err(unavailable(
            "must be https (plain http only for allowed development providers)",
        ));
    }
    let target = lectern_egress::check_target(&url, &settings.allow)
        .await
        .map_err(unavailable)?;
    let client = target
        .client_builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .map_err(ApiError::internal)?;
    Ok((client, url))
}

pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    settings: &SsoSettings,
    url: &str,
) -> Result<T, ApiError> {
    let (client, url) = client_for(settings, url).await?;
    let response = client
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| unavailable(lectern_egress::describe(&e)))?;
    if !response.status().is_success() {
        return Err(unavailable(format!("answered {}", response.status())));
    }
    response.json().await.map_err(|e| {
        unavailable(format!(
            "unreadable answer ({})",
            lectern_egress::describe(&e)
        ))
    })
}

impl ProviderCache {
    async fn discovery(&self, settings: &SsoSettings, issuer: &str) -> Result<Discovery, ApiError> {
        if let Some(p) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(issuer) {
            if p.read_at.elapsed() < DISCOVERY_TTL {
                return Ok(p.discovery.clone());
            }
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = get_json(settings, &url).await?;
        if discovery.issuer != issuer {
            return Err(unavailable("its discovery document names another issuer"));
        }
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(
            issuer.to_owned(),
            CachedProvider {
                discovery: discovery.clone(),
                read_at: Instant::now(),
                jwks: None,
            },
        );
        Ok(discovery)
    }

    /// The key `kid` names, re-reading the key set once when it is not
    /// known (the provider rotated its keys).
    async fn key(
        &self,
        settings: &SsoSettings,
        discovery: &Discovery,
        kid: Option<&str>,
    ) -> Result<jsonwebtoken::jwk::Jwk, ApiError> {
        let find = |set: &JwkSet| match kid {
            Some(kid) => set.find(kid).cloned(),
            // Without a kid, only a set of one key is unambiguous.
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let cached = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&discovery.issuer)
            .and_then(|p| p.jwks.as_ref().and_then(find));
        if let Some(key) = cached {
            return Ok(key);
        }
        let set: JwkSet = get_json(settings, &discovery.jwks_uri).await?;
        let key = find(&set);
        if let Some(p) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&discovery.issuer)
        {
            p.jwks = Some(set);
        }
        key.ok_or_else(|| {
            rejected("the ID token is signed with a key the provider does not publish")
        })
    }
}

/// The claims of an ID token that are checked or used.
#[derive(Debug, Deserialize)]
struct IdClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// What an ID token must say to be believed.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// The wall time it is judged at (Unix seconds).
    pub now: i64,
    pub skew: Duration,
}

/// Checks `token`'s signature with `key` and its claims against
/// `expected`; the subject when all hold. Public so the checks can be
/// proven against a real provider's tokens altered in tests.
pub fn verify_id_token(
    token: &str,
    key: &jsonwebtoken::jwk::Jwk,
    expected: &Expected<'_>,
) -> Result<String, ApiError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| rejected("not an ID token"))?;
    // Asymmetric signatures only: an HS* token would be "signed" with the
    // client secret, `none` with nothing.
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512
            | Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::EdDSA
    ) {
        return Err(rejected("the ID token's algorithm is not accepted"));
    }
    let decoding =
        DecodingKey::from_jwk(key).map_err(|_| rejected("the provider's key is unusable"))?;
    let mut validation = Validation::new(header.alg);
    // Times are judged below with our clock and the configured skew.
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<IdClaims>(token, &decoding, &validation)
        .map_err(|_| rejected("the ID token's signature does not verify"))?;
    let claims = data.claims;
    if claims.iss != expected.issuer {
        return Err(rejected("the ID token is from another issuer"));
    }
    let audiences = match &claims.aud {
        Audience::One(a) => vec![a.as_str()],
        Audience::Many(v) => v.iter().map(String::as_str).collect(),
    };
    if !audiences.contains(&expected.client_id) {
        return Err(rejected("the ID token is for another client"));
    }
    if audiences.len() > 1 && claims.azp.as_deref() != Some(expected.client_id) {
        return Err(rejected("the ID token was issued to another party"));
    }
    let nonce_ok = claims
        .nonce
        .as_deref()
        .is_some_and(|n| bool::from(n.as_bytes().ct_eq(expected.nonce.as_bytes())));
    if !nonce_ok {
        return Err(rejected("the ID token's nonce is not this sign-in's"));
    }
    let skew = i64::try_from(expected.skew.as_secs()).unwrap_or(i64::MAX);
    if claims.exp.saturating_add(skew) <= expected.now {
        return Err(rejected("the ID token has expired"));
    }
    if claims.iat.saturating_sub(skew) > expected.now {
        return Err(rejected("the ID token was issued in the future"));
    }
    if claims.sub.is_empty() {
        return Err(rejected("the ID token names no subject"));
    }
    Ok(claims.sub)
}

#[derive(sqlx::FromRow)]
struct ProviderRow {
    issuer: String,
    client_id: String,
    client_secret_ct: Vec<u8>,
}

/// An organisation's provider, its secret opened.
struct Provider {
    issuer: String,
    client_id: String,
    client_secret: String,
}

async fn provider(state: &Identity, org_id: Uuid) -> Result<Provider, ApiError> {
    let keys = state.keyring()?;
    let row: Option<ProviderRow> = sqlx::query_as(
        "SELECT issuer, client_id, client_secret_ct FROM oidc_providers WHERE org_id = $1",
    )
    .bind(org_id)
    .fetch_optional(&state.db)
    .await?;
    let row = row.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProviderNotConfigured,
            "this organisation has no OpenID provider configured",
        )
    })?;
    Ok(Provider {
        client_secret: keys
            .open(
                "oidc_providers.client_secret",
                org_id,
                &row.client_secret_ct,
            )
            .map_err(ApiError::internal)?,
        issuer: row.issuer,
        client_id: row.client_id,
    })
}

fn redirect_uri(state: &Identity, org_id: Uuid) -> String {
    format!(
        "{}/api/v1/auth/oidc/{org_id}/callback",
        state.settings.app_url.trim_end_matches('/')
    )
}

/// `PUT /api/v1/organisations/{org_id}/oidc`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct ProviderChange {
    /// The provider's issuer URL (`https://idp.example.org/realms/hospital`).
    pub issuer: String,
    pub client_id: String,
    /// Stored sealed; never answered.
    pub client_secret: String,
}

// Deliberately no Debug: it would print the client secret.

/// An organisation's provider, as administrators see it (no secret).
#[derive(Serialize, schemars::JsonSchema)]
pub struct ProviderAnswer {
    pub issuer: String,
    pub client_id: String,
    /// The redirect URI to register at the provider.
    pub redirect_uri: String,
}

/// `PUT /api/v1/organisations/{org_id}/oidc` (super admin, step-up): sets
/// the organisation's OpenID provider after reading its discovery
/// document (a provider that cannot be reached is not stored).
pub async fn put_provider(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiPath(org_id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<ProviderChange>,
) -> Result<Json<ProviderAnswer>, ApiError> {
    let keys = state.keyring()?;
    let org_id = principal.target_org(Some(org_id))?;
    let issuer = change.issuer.trim().to_owned();
    if issuer.is_empty() || change.client_id.trim().is_empty() || change.client_secret.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "issuer, client_id and client_secret are required",
        ));
    }
    state
        .providers
        .discovery(&state.settings.sso, &issuer)
        .await?;
    let stored = sqlx::query(
        "INSERT INTO oidc_providers (org_id, issuer, client_id, client_secret_ct, key_id) \
         SELECT id, $2, $3, $4, $5 FROM organisations WHERE id = $1 \
         ON CONFLICT (org_id) DO UPDATE SET issuer = EXCLUDED.issuer, client_id = EXCLUDED.client_id, \
           client_secret_ct = EXCLUDED.client_secret_ct, key_id = EXCLUDED.key_id, updated_at = now()",
    )
    .bind(org_id)
    .bind(&issuer)
    .bind(change.client_id.trim())
    .bind(keys.seal("oidc_providers.client_secret", org_id, &change.client_secret))
    .bind(keys.active_key_id())
    .execute(&state.db)
    .await?
    .rows_affected();
    if stored == 0 {
        return Err(ApiError::not_found(format!("no organisation {org_id}")));
    }
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.oidc_provider".into(),
            target: Some(format!("org:{org_id}")),
            outcome: "ok",
            detail: Some(json!({ "issuer": issuer }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(ProviderAnswer {
        issuer,
        client_id: change.client_id.trim().to_owned(),
        redirect_uri: redirect_uri(&state, org_id),
    }))
}

/// A redirect that may set cookies: the browser's way through a flow.
pub struct SeeOther {
    pub(crate) location: String,
    pub(crate) cookies: Vec<HeaderValue>,
}

impl IntoResponse for SeeOther {
    fn into_response(self) -> Response {
        let mut response = StatusCode::SEE_OTHER.into_response();
        let headers = response.headers_mut();
        if let Ok(location) = HeaderValue::from_str(&self.location) {
            headers.insert(header::LOCATION, location);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for cookie in self.cookies {
            headers.append(header::SET_COOKIE, cookie);
        }
        response
    }
}

impl DocOutput for SeeOther {
    fn describe(op: &mut Operation, _: &mut Schemas) {
        op.response(
            303,
            "the browser goes on (`Location`); cookies may be set",
            None,
        );
    }
}

/// `GET /api/v1/auth/oidc/{org_id}/start`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct StartQuery {
    /// The path of this site to come back to once signed in (default
    /// `/app/`); anything but a local path is refused.
    #[serde(default)]
    pub return_to: Option<String>,
    /// Passed on to the provider as `login_hint`.
    #[serde(default)]
    pub login_hint: Option<String>,
}

pub(crate) fn local_path(return_to: Option<String>) -> Result<String, ApiError> {
    let path = return_to.unwrap_or_else(|| "/app/".to_owned());
    // "//host" and "/\host" are other sites to a browser.
    if !path.starts_with('/')
        || path.starts_with("//")
        || path.starts_with("/\\")
        || path.chars().any(char::is_control)
        || path.len() > 1000
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "return_to must be a path of this site, like /app/",
        ));
    }
    Ok(path)
}

/// A new flow: the provider's authorisation URL and the cookie binding
/// the flow to this browser.
async fn begin(
    state: &Identity,
    org_id: Uuid,
    return_to: String,
    login_hint: Option<String>,
    link_user_id: Option<Uuid>,
) -> Result<(String, HeaderValue), ApiError> {
    let keys = state.keyring()?;
    let provider = provider(state, org_id).await?;
    let discovery = state
        .providers
        .discovery(&state.settings.sso, &provider.issuer)
        .await?;
    ways::sweep_expired(&state.db, "oidc_flows").await?;
    let flow_id = Uuid::now_v7();
    let state_token = random_token("");
    let nonce = random_token("");
    let verifier = random_token("");
    let browser = random_token("");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    sqlx::query(
        "INSERT INTO oidc_flows (id, state_hash, browser_hash, org_id, nonce, verifier_ct, key_id, \
           return_to, link_user_id, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))",
    )
    .bind(flow_id)
    .bind(token_fingerprint(&state_token))
    .bind(token_fingerprint(&browser))
    .bind(org_id)
    .bind(&nonce)
    .bind(keys.seal("oidc_flows.verifier", flow_id, &verifier))
    .bind(keys.active_key_id())
    .bind(&return_to)
    .bind(link_user_id)
    .bind(FLOW_TTL.as_secs_f64())
    .execute(&state.db)
    .await?;
    let mut url = Url::parse(&discovery.authorization_endpoint)
        .map_err(|_| unavailable("its authorisation endpoint is not a URL"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &provider.client_id)
            .append_pair("redirect_uri", &redirect_uri(state, org_id))
            .append_pair("scope", "openid email profile")
            .append_pair("state", &state_token)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = login_hint.as_deref().filter(|h| !h.is_empty()) {
            q.append_pair("login_hint", hint);
        }
    }
    // Lax: the provider sends the browser back with a top-level GET from
    // its own site, which a Strict cookie would miss. Scoped to the flow's routes.
    let cookie = HeaderValue::from_str(&format!(
        "{FLOW_COOKIE}={browser}; Path=/api/v1/auth/oidc/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
        FLOW_TTL.as_secs()
    ))
    .map_err(ApiError::internal)?;
    Ok((url.to_string(), cookie))
}

/// `GET /api/v1/auth/oidc/{org_id}/start`: off to the provider.
pub async fn start(
    State(state): State<Identity>,
    context: ClientContext,
    ApiPath(org_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<StartQuery>,
) -> Result<SeeOther, ApiError> {
    let return_to = local_path(query.return_to)?;
    let policy = policy::read(&state.db, org_id).await?;
    if !policy.allows(SignInMethod::Oidc) {
        ways::refused(&state, &context, "oidc", "method_disabled").await;
        return Err(policy::disabled(SignInMethod::Oidc));
    }
    let (location, cookie) = begin(&state, org_id, return_to, query.login_hint, None).await?;
    Ok(SeeOther {
        location,
        cookies: vec![cookie],
    })
}

/// Where the browser goes to link the organisation's provider.
#[derive(Serialize, schemars::JsonSchema)]
pub struct LinkStart {
    /// Open this in the browser (it carries the flow's cookie now).
    pub authorize_url: String,
}

/// `POST /api/v1/me/sign-ins/oidc`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct LinkRequest {
    /// The path to come back to (default `/app/`).
    #[serde(default)]
    pub return_to: Option<String>,
}

/// An answer that sets the flow cookie.
pub struct WithFlowCookie(LinkStart, HeaderValue);

impl IntoResponse for WithFlowCookie {
    fn into_response(self) -> Response {
        let mut response = Json(self.0).into_response();
        response.headers_mut().insert(header::SET_COOKIE, self.1);
        response
    }
}

impl DocOutput for WithFlowCookie {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<LinkStart>();
        op.response(
            200,
            "the provider's address; the flow's HttpOnly cookie is set",
            Some(("application/json", schema)),
        );
    }
}

/// `POST /api/v1/me/sign-ins/oidc` (step-up): starts a flow whose
/// identity is linked to the caller's account instead of signing in.
pub async fn start_link(
    State(state): State<Identity>,
    principal: Principal,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<WithFlowCookie, ApiError> {
    let user_id = principal.user_id().ok_or_else(ApiError::unauthenticated)?;
    // A global super admin belongs to no organisation, so to no provider.
    let org_id = principal
        .org_id
        .ok_or_else(|| policy::disabled(SignInMethod::Oidc))?;
    policy::read(&state.db, org_id)
        .await?
        .require(SignInMethod::Oidc)?;
    let return_to = local_path(req.return_to)?;
    let (authorize_url, cookie) = begin(&state, org_id, return_to, None, Some(user_id)).await?;
    Ok(WithFlowCookie(LinkStart { authorize_url }, cookie))
}

/// `GET /api/v1/auth/oidc/{org_id}/callback`: the provider's answer.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct CallbackQuery {
    #[serde(default)]
    pub code: Option<String>,
    pub state: String,
    /// The provider's error (`access_denied`…), when it did not sign in.
    #[serde(default)]
    pub error: Option<String>,
}

// Deliberately no Debug: the code is a credential until exchanged.

#[derive(sqlx::FromRow)]
struct FlowRow {
    id: Uuid,
    browser_hash: Vec<u8>,
    nonce: String,
    verifier_ct: Vec<u8>,
    return_to: String,
    link_user_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

fn flow_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, FLOW_COOKIE)
}

/// The value of the request's cookie `name`.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

fn cleared_flow_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "lectern_oidc=; Path=/api/v1/auth/oidc/; HttpOnly; Secure; SameSite=Lax; Max-Age=0",
    )
}

/// `GET /api/v1/auth/oidc/{org_id}/callback`: see the module docs.
pub async fn callback(
    State(state): State<Identity>,
    context: ClientContext,
    headers: HeaderMap,
    ApiPath(org_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<SeeOther, ApiError> {
    let result = finish_callback(&state, &context, &headers, org_id, &query).await;
    back_to_sign_in(&headers, result)
}

/// A refused browser callback: a person's browser, which navigated here
/// from the provider (it asks for HTML), goes back to the learner app's
/// sign-in page with the refusal's code, which the page shows in the
/// person's language, rather than being left on a JSON body. Other clients
/// get the JSON error as usual.
pub(crate) fn back_to_sign_in(
    headers: &HeaderMap,
    result: Result<SeeOther, ApiError>,
) -> Result<SeeOther, ApiError> {
    let navigated = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    match result {
        Err(error) if navigated => Ok(SeeOther {
            location: format!("{SIGN_IN_PAGE}?error={}", error.code.as_str()),
            cookies: vec![cleared_flow_cookie()],
        }),
        other => other,
    }
}

/// The learner app's sign-in page (`apps/learner`, route `signin`).
const SIGN_IN_PAGE: &str = "/app/signin";

async fn finish_callback(
    state: &Identity,
    context: &ClientContext,
    headers: &HeaderMap,
    org_id: Uuid,
    query: &CallbackQuery,
) -> Result<SeeOther, ApiError> {
    const METHOD: &str = "oidc";
    let keys = state.keyring()?;
    // A state, a code and an ID token name nobody until they are checked:
    // the client address is what repeated bad ones lock, with the
    // passwords' limit and lockout (a locked address is refused before the
    // provider is asked).
    let reservation = ways::reserve_address(state, context, METHOD).await?;
    let verified = match verify_callback(state, headers, org_id, query).await {
        Ok(verified) => verified,
        Err(Refusal::Counted { reason, error }) => {
            ways::failed(state, context, &reservation, METHOD, reason).await;
            return Err(error);
        }
        Err(Refusal::Uncounted { reason, error }) => {
            reservation.returned(&state.db).await?;
            if let Some(reason) = reason {
                ways::refused(state, context, METHOD, reason).await;
            }
            return Err(error);
        }
    };
    reservation.returned(&state.db).await?;
    let Verified {
        flow,
        issuer,
        subject,
        id_token,
    } = verified;
    let identity = External {
        kind: IdentityKind::Oidc,
        issuer: &issuer,
        subject: &subject,
    };
    let cleared = cleared_flow_cookie();
    if let Some(user_id) = flow.link_user_id {
        let mut tx = state.db.begin().await?;
        ways::link(&mut tx, keys, user_id, org_id, &identity).await?;
        tx.commit().await?;
        audit::record_or_log(
            state,
            &AuditEvent {
                action: "sign_in.link".into(),
                actor: Some(format!("user:{user_id}")),
                org_id: Some(org_id),
                target: Some(format!("user:{user_id}")),
                outcome: "ok",
                detail: Some(json!({ "kind": "oidc" }).to_string()),
                ..AuditEvent::by(None, context)
            },
        )
        .await;
        return Ok(SeeOther {
            location: flow.return_to,
            cookies: vec![cleared],
        });
    }
    let policy = policy::read(&state.db, org_id).await?;
    if !policy.allows(SignInMethod::Oidc) {
        ways::refused(state, context, METHOD, "method_disabled").await;
        return Err(policy::disabled(SignInMethod::Oidc));
    }
    let (signed_in, session_id) =
        ways::sign_in_external(state, context, org_id, &policy, &identity, None, METHOD).await?;
    sqlx::query(
        "INSERT INTO oidc_sessions (session_id, org_id, id_token_ct, key_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(session_id)
    .bind(org_id)
    .bind(keys.seal("oidc_sessions.id_token", session_id, &id_token))
    .bind(keys.active_key_id())
    .execute(&state.db)
    .await?;
    Ok(SeeOther {
        location: flow.return_to,
        cookies: vec![signed_in.cookie().clone(), cleared],
    })
}

/// What a callback proved: the flow it finishes and who the provider says
/// signed in.
struct Verified {
    flow: FlowRow,
    issuer: String,
    subject: String,
    id_token: String,
}

/// Why a callback was refused, and whether the refusal counts against the
/// client address: a guessed state, a refused code or a forged token does;
/// the provider being unreachable or the user declining at the provider
/// does not.
enum Refusal {
    Counted {
        reason: &'static str,
        error: ApiError,
    },
    Uncounted {
        reason: Option<&'static str>,
        error: ApiError,
    },
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Self {
        Refusal::Uncounted {
            reason: None,
            error,
        }
    }
}

async fn verify_callback(
    state: &Identity,
    headers: &HeaderMap,
    org_id: Uuid,
    query: &CallbackQuery,
) -> Result<Verified, Refusal> {
    let keys = state.keyring()?;
    let sso = &state.settings.sso;
    // The flow is used up now, whatever follows: a state works once.
    let flow: Option<FlowRow> = sqlx::query_as(
        "UPDATE oidc_flows SET used_at = now() \
         WHERE state_hash = $1 AND org_id = $2 AND used_at IS NULL AND expires_at > now() \
         RETURNING id, browser_hash, nonce, verifier_ct, return_to, link_user_id",
    )
    .bind(token_fingerprint(&query.state))
    .bind(org_id)
    .fetch_optional(&state.db)
    .await
    .map_err(ApiError::from)?;
    let bound = match (&flow, flow_cookie(headers)) {
        (Some(flow), Some(browser)) => {
            bool::from(token_fingerprint(browser).ct_eq(&flow.browser_hash))
        }
        _ => false,
    };
    let Some(flow) = flow.filter(|_| bound) else {
        return Err(Refusal::Counted {
            reason: "state",
            error: rejected("the state is unknown, used, expired or from another browser"),
        });
    };
    if let Some(error) = &query.error {
        // The provider's code word only (`access_denied`…), never its prose.
        let word: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        return Err(Refusal::Uncounted {
            reason: Some("provider_error"),
            error: rejected(&format!("the provider said {word}")),
        });
    }
    let Some(code) = query.code.as_deref() else {
        return Err(Refusal::Counted {
            reason: "no_code",
            error: rejected("the provider sent no code"),
        });
    };
    let provider = provider(state, org_id).await?;
    let discovery = state.providers.discovery(sso, &provider.issuer).await?;
    let verifier = keys
        .open("oidc_flows.verifier", flow.id, &flow.verifier_ct)
        .map_err(ApiError::internal)?;
    let (client, token_url) = client_for(sso, &discovery.token_endpoint).await?;
    let response = client
        .post(token_url)
        .basic_auth(
            form_encode(&provider.client_id),
            Some(form_encode(&provider.client_secret)),
        )
        .header(header::ACCEPT, "application/json")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect_uri(state, org_id)),
            ("code_verifier", &verifier),
        ])
        .send()
        .await
        .map_err(|e| unavailable(lectern_egress::describe(&e)))?;
    if !response.status().is_success() {
        // An `invalid_grant` (a replayed or stale code) lands here too.
        return Err(Refusal::Counted {
            reason: "code_exchange",
            error: rejected(&format!(
                "the provider refused the code ({})",
                response.status().as_u16()
            )),
        });
    }
    let answer: TokenAnswer = response
        .json()
        .await
        .map_err(|_| unavailable("its token answer is unreadable"))?;
    let id_token = answer
        .id_token
        .ok_or_else(|| rejected("the provider sent no ID token"))?;
    let refused_token = |error| Refusal::Counted {
        reason: "id_token",
        error,
    };
    let kid = jsonwebtoken::decode_header(&id_token)
        .map_err(|_| refused_token(rejected("not an ID token")))?
        .kid;
    let key = state.providers.key(sso, &discovery, kid.as_deref()).await?;
    let subject = verify_id_token(
        &id_token,
        &key,
        &Expected {
            issuer: &provider.issuer,
            client_id: &provider.client_id,
            nonce: &flow.nonce,
            now: sso.now(),
            skew: sso.clock_skew,
        },
    )
    .map_err(refused_token)?;
    Ok(Verified {
        flow,
        issuer: provider.issuer,
        subject,
        id_token,
    })
}

/// RFC 6749 §2.3.1: the client id and secret are form-encoded before
/// they go into the Basic header.
fn form_encode(s: &str) -> String {
    url_encode(s)
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Signed out; where to end the provider's session.
#[derive(Serialize, schemars::JsonSchema)]
pub struct SignedOutEverywhere {
    /// The provider's end-session URL to open in the browser (RP-initiated
    /// logout), or `null` when the session did not come from OIDC or the
    /// provider offers none.
    pub end_session_url: Option<String>,
}

/// A JSON answer that also clears the session cookie.
pub struct ClearingSession(SignedOutEverywhere);

impl IntoResponse for ClearingSession {
    fn into_response(self) -> Response {
        let mut response = Json(self.0).into_response();
        response
            .headers_mut()
            .insert(header::SET_COOKIE, crate::session::cleared_cookie());
        response
    }
}

impl DocOutput for ClearingSession {
    fn describe(op: &mut Operation, schemas: &mut Schemas) {
        let schema = schemas.responses.subschema_for::<SignedOutEverywhere>();
        op.response(
            200,
            "signed out here; the session cookie is cleared",
            Some(("application/json", schema)),
        );
    }
}

#[derive(sqlx::FromRow)]
struct OidcSessionRow {
    org_id: Uuid,
    id_token_ct: Vec<u8>,
}

/// `POST /api/v1/auth/oidc/logout`: ends this session and says where the
/// provider's session is ended.
pub async fn logout(
    State(state): State<Identity>,
    principal: Principal,
) -> Result<ClearingSession, ApiError> {
    let keys = state.keyring()?;
    let session_id = principal
        .session_id()
        .ok_or_else(ApiError::unauthenticated)?;
    let row: Option<OidcSessionRow> =
        sqlx::query_as("SELECT org_id, id_token_ct FROM oidc_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&state.db)
            .await?;
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
        .bind(session_id)
        .execute(&state.db)
        .await?;
    sqlx::query("DELETE FROM oidc_sessions WHERE session_id = $1")
        .bind(session_id)
        .execute(&state.db)
        .await?;
    state.sessions.evict_session(session_id);
    let Some(row) = row else {
        return Ok(ClearingSession(SignedOutEverywhere {
            end_session_url: None,
        }));
    };
    let id_token = keys
        .open("oidc_sessions.id_token", session_id, &row.id_token_ct)
        .map_err(ApiError::internal)?;
    let provider = provider(&state, row.org_id).await?;
    let discovery = state
        .providers
        .discovery(&state.settings.sso, &provider.issuer)
        .await?;
    let end_session_url = discovery.end_session_endpoint.and_then(|end| {
        let mut url = Url::parse(&end).ok()?;
        url.query_pairs_mut()
            .append_pair("id_token_hint", &id_token)
            .append_pair("client_id", &provider.client_id)
            .append_pair(
                "post_logout_redirect_uri",
                &format!("{}/app/", state.settings.app_url.trim_end_matches('/')),
            );
        Some(url.to_string())
    });
    Ok(ClearingSession(SignedOutEverywhere { end_session_url }))
}
