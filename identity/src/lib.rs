//! Identity: who is calling (sessions, partner API keys), what they may do
//! (`lectern_web::access`), how people get accounts (self sign-up with
//! proof of the email, [`signup`]; invitations), and the security baseline
//! around it — encrypted personal data, step-up, throttling, the audit log
//! and security alerts. `SECURITY.md` lists the controls and their tests.
//!
//! [`middleware`] runs on every routed request: it resolves the caller
//! from the `Authorization: Bearer` header or the session cookie, records
//! where the request came from, and after the handler has answered writes
//! an audit row for every state-changing request and every denial —
//! except anonymous refusals, which are noise: sampled and counted per
//! address by the audit writer instead. The client address comes from
//! `X-Forwarded-For` only when the peer is one of
//! `LECTERN_TRUSTED_PROXIES`, and then is the right-most address no
//! trusted proxy added, since clients can forge the rest.

mod alerts;
pub mod audit;
pub mod handoff;
mod invite;
pub mod ldap;
pub mod notifier;
pub mod oidc;
pub mod password;
pub mod phone;
pub mod policy;
pub mod session;
mod signup;
mod stepup;
mod throttle;
pub mod users;
pub mod ways;
pub mod wechat;

// Types of identity's public settings and state.
pub use alerts::SecurityMetrics;
pub use oidc::SsoSettings;
pub use phone::PhoneSettings;
pub use throttle::ThrottlePolicy;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lectern_secrets::{Keyring, FIELD_KEYS_VAR};
use lectern_web::client::peer;
use lectern_web::{
    Access, ApiError, ApiRouter, ClientContext, ErrorCode, Gate, Permission, Principal,
    StepUpCheck, Unaudited,
};
use sqlx::PgPool;

use lectern_notify::Notify;

/// Identity's state, and the handle other areas hold to ask it who a
/// session belongs to: cheap to clone (one reference count).
#[derive(Clone)]
pub struct Identity(Arc<IdentityInner>);

impl std::ops::Deref for Identity {
    type Target = IdentityInner;

    fn deref(&self) -> &IdentityInner {
        &self.0
    }
}

pub struct IdentityInner {
    pub db: PgPool,
    /// `None` only when an external database runs without configured keys:
    /// `/readyz` then names the missing variable and every route needing
    /// them answers 503, instead of writing data no one could read back.
    keys: Option<Arc<Keyring>>,
    /// How notices reach people (enqueued in identity's transactions).
    pub notify: Notify,
    pub metrics: Arc<SecurityMetrics>,
    pub settings: IdentitySettings,
    /// The request path's audit writer (see `audit::writer`).
    pub audit: audit::AuditWriter,
    /// Recently recognised sessions (see `session::SESSION_CACHE_TTL`).
    pub sessions: session::SessionCache,
    /// Argon2 work, at most `settings.password_concurrency` at once.
    pub passwords: password::Hasher,
    /// OpenID providers' discovery documents and key sets.
    pub providers: oidc::ProviderCache,
}

impl Identity {
    pub fn new(
        db: PgPool,
        keys: Option<Arc<Keyring>>,
        notify: Notify,
        settings: IdentitySettings,
    ) -> Self {
        Self::with_sessions(db, keys, notify, settings, session::SessionCache::default())
    }

    /// As [`Identity::new`], with a session cache of chosen timing (tests
    /// that race sign-outs against re-reads).
    pub fn with_sessions(
        db: PgPool,
        keys: Option<Arc<Keyring>>,
        notify: Notify,
        settings: IdentitySettings,
        sessions: session::SessionCache,
    ) -> Self {
        let metrics = Arc::new(SecurityMetrics::default());
        let chain_key = keys.as_deref().map(audit::ChainKey::from_keyring);
        let audit = audit::AuditWriter::start(db.clone(), chain_key, metrics.clone());
        Identity(Arc::new(IdentityInner {
            db,
            keys,
            notify,
            metrics,
            passwords: password::Hasher::new(settings.password_concurrency),
            settings,
            audit,
            sessions,
            providers: oidc::ProviderCache::default(),
        }))
    }

    pub fn keyring(&self) -> Result<&Keyring, ApiError> {
        self.keys
            .as_deref()
            .ok_or_else(|| ApiError::not_configured(FIELD_KEYS_VAR))
    }

    /// The field keys, for the other areas that seal data with them.
    pub fn keys(&self) -> Option<Arc<Keyring>> {
        self.keys.clone()
    }

    /// The audit chain's key, when keys are configured.
    pub fn chain_key(&self) -> Option<audit::ChainKey> {
        self.keys.as_deref().map(audit::ChainKey::from_keyring)
    }

    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// The check every route runs before its handler, with this
    /// identity's step-up grants behind it.
    pub fn gate(&self) -> Gate {
        Gate::new(Arc::new(StepUpGrants(self.clone())))
    }
}

/// Critical operations consume a fresh step-up grant of the session.
struct StepUpGrants(Identity);

impl StepUpCheck for StepUpGrants {
    fn consume<'a>(
        &'a self,
        principal: &'a Principal,
    ) -> Pin<Box<dyn Future<Output = Result<(), ApiError>> + Send + 'a>> {
        Box::pin(stepup::consume_grant(&self.0, principal))
    }
}

// `lectern_web::Role` serialises to these names; this describes it in the
// contract without the web crate depending on schemars derives.
/// A role, which decides what its holder may do in their organisation.
#[derive(schemars::JsonSchema)]
#[schemars(rename = "Role")]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub(crate) enum RoleName {
    Learner,
    Expert,
    Partner,
    ContentAdmin,
    SuperAdmin,
}

/// Tunable parts of identity; defaults are the documented behaviour.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    pub session_ttl: Duration,
    pub step_up_ttl: Duration,
    /// How long an invitation (and each resend of it) stays valid.
    pub invitation_ttl: Duration,
    /// Where people open the links notices carry (the origin the apps are
    /// served from), without a trailing slash: `{app_url}/app/invitation?token=…`.
    pub app_url: String,
    /// How long a sign-up's confirmation token stays valid.
    pub signup_ttl: Duration,
    pub throttle: throttle::ThrottlePolicy,
    /// Sign-in and proof codes sent by SMS.
    pub phone: PhoneSettings,
    /// Single sign-on (OIDC, LDAP) and WeChat: egress exceptions, clock skew.
    pub sso: SsoSettings,
    pub trusted_proxies: TrustedProxies,
    /// Sent only when Lectern itself serves HTTPS (or sits behind a TLS
    /// proxy it trusts): HSTS over plain HTTP would be meaningless.
    pub hsts: bool,
    /// Argon2 hashes and checks run at once (at least 1; see
    /// [`password::Hasher`]).
    pub password_concurrency: usize,
    /// A syslog receiver (UDP, RFC 5424) every security alert is also sent
    /// to, for a SIEM.
    pub alert_syslog: Option<std::net::SocketAddr>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(12 * 3600),
            step_up_ttl: Duration::from_secs(5 * 60),
            invitation_ttl: Duration::from_secs(7 * 24 * 3600),
            app_url: "http://127.0.0.1:8080".to_string(),
            signup_ttl: Duration::from_secs(24 * 3600),
            throttle: throttle::ThrottlePolicy::default(),
            phone: PhoneSettings::default(),
            sso: SsoSettings::default(),
            trusted_proxies: TrustedProxies::default(),
            hsts: false,
            password_concurrency: password::default_limit(),
            alert_syslog: None,
        }
    }
}

/// Networks of reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// `10.0.0.0/8, 192.168.1.10` — addresses or CIDR networks.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or network"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|b| *b <= max)
                    .ok_or_else(|| format!("{item:?} has a bad prefix length"))?,
            };
            nets.push((addr, bits));
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0
            .iter()
            .any(|(net, bits)| same_prefix(*net, ip, *bits))
    }
}

fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (a >> shift) == (b >> shift)
}

/// The network an address belongs to for "sign-in from a new range"
/// alerts: its /24 (IPv4) or /48 (IPv6).
pub fn ip_range(ip: &str) -> Option<String> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2]))
        }
    }
}

fn client_context(state: &Identity, request: &Request) -> ClientContext {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect::<String>())
    };
    let peer_ip = peer(request).map(|p| p.ip());
    // Believe X-Forwarded-For only from a trusted proxy, and then take the
    // right-most address no trusted proxy added (clients can forge the rest).
    let proxies = &state.settings.trusted_proxies;
    let ip = match (peer_ip, header("x-forwarded-for")) {
        (Some(p), Some(xff)) if proxies.contains(p) => xff
            .rsplit(',')
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .find(|ip| !proxies.contains(*ip))
            .or(Some(p)),
        (p, _) => p,
    };
    ClientContext {
        ip: ip.map(|ip| ip.to_string()),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
    }
}

/// Resolves the caller, runs the request, audits it. See the module docs.
/// Anonymous refusals are noise: sampled and aggregated per address by the
/// audit writer, and an address sending too much of it is refused at once
/// for routes that do not exist (`audit::writer`).
pub async fn middleware(
    State(state): State<Identity>,
    mut request: Request,
    next: Next,
) -> Response {
    let context = client_context(&state, &request);
    let matched = request.extensions().get::<MatchedPath>().is_some();
    if !matched {
        if let Some(retry_after) = state.audit.noise_exceeded(context.ip.as_deref()) {
            return ApiError::new(
                ErrorCode::RateLimited,
                "too many requests for unknown or refused routes from this address; wait and retry",
            )
            .with_retry_after(retry_after)
            .into_response();
        }
    }
    let principal = match session::authenticate(&state, request.headers()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Some(p) = principal {
        request.extensions_mut().insert(p);
    }
    request.extensions_mut().insert(context.clone());
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |m| m.as_str().to_string(),
    );
    let target = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let denied = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
    let changes_state = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    let telemetry = (status.is_success() || status.is_server_error())
        && response.extensions().get::<Unaudited>().is_some();
    if (changes_state && !telemetry) || denied {
        let outcome = if denied {
            "denied"
        } else if status.is_success() || status.is_redirection() {
            "ok"
        } else {
            "failed"
        };
        let event = audit::AuditEvent {
            action: format!("{method} {route}"),
            target: Some(target),
            outcome,
            detail: Some(format!("{{\"status\":{}}}", status.as_u16())),
            ..audit::AuditEvent::by(principal.as_ref(), &context)
        };
        if principal.is_none() && status.is_client_error() {
            state.audit.record_noise(event);
        } else {
            state.audit.record(event).await;
        }
    }
    response
}

/// Security headers on every response; HSTS when served over TLS.
pub async fn security_headers(
    State(state): State<Identity>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    // A page that sets its own policy (the demo page) keeps it; that
    // policy must then say `frame-ancestors 'none'` itself.
    if !headers.contains_key("content-security-policy") {
        headers.insert(
            "content-security-policy",
            HeaderValue::from_static("frame-ancestors 'none'"),
        );
    }
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if state.settings.hsts {
        headers.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}

/// Identity's routes, each with the access it needs.
pub fn routes(api: ApiRouter<Identity>) -> ApiRouter<Identity> {
    use Access::{Authenticated, Public, Session};
    let may = Access::Permission;
    use Method as M;
    api.route(M::POST, "/api/v1/auth/login", Public, session::login)
        .route(M::POST, "/api/v1/auth/signup", Public, signup::request)
        .route(
            M::POST,
            "/api/v1/auth/signup/confirm",
            Public,
            signup::confirm,
        )
        .route(
            M::PUT,
            "/api/v1/organisations/{org_id}/signup",
            may(Permission::ChangeRoles),
            signup::set_enabled,
        )
        .route(
            M::GET,
            "/api/v1/organisations/{org_id}/sign-in-policy",
            Public,
            policy::get,
        )
        .route(
            M::PUT,
            "/api/v1/organisations/{org_id}/sign-in-policy",
            may(Permission::ManageSignIn),
            policy::put,
        )
        .route(
            M::POST,
            "/api/v1/auth/sms/code",
            Public,
            phone::request_sign_in_code,
        )
        .route(M::POST, "/api/v1/auth/sms/sign-in", Public, phone::sign_in)
        .route(
            M::PUT,
            "/api/v1/organisations/{org_id}/oidc",
            may(Permission::ManageSignIn),
            oidc::put_provider,
        )
        .route(
            M::GET,
            "/api/v1/auth/oidc/{org_id}/start",
            Public,
            oidc::start,
        )
        .route(
            M::GET,
            "/api/v1/auth/oidc/{org_id}/callback",
            Public,
            oidc::callback,
        )
        .route(M::POST, "/api/v1/auth/oidc/logout", Session, oidc::logout)
        .route(
            M::POST,
            "/api/v1/me/sign-ins/oidc",
            may(Permission::LinkSignIns),
            oidc::start_link,
        )
        .route(
            M::PUT,
            "/api/v1/organisations/{org_id}/ldap",
            may(Permission::ManageSignIn),
            ldap::put_directory,
        )
        .route(M::POST, "/api/v1/auth/ldap/sign-in", Public, ldap::sign_in)
        .route(
            M::PUT,
            "/api/v1/organisations/{org_id}/wechat-apps/{appid}",
            may(Permission::ManageSignIn),
            wechat::put_app,
        )
        .route(
            M::POST,
            "/api/v1/auth/wechat/mini-program",
            Public,
            wechat::mini_program,
        )
        .route(
            M::POST,
            "/api/v1/me/wechat/user-data",
            Session,
            wechat::user_data,
        )
        .route(
            M::GET,
            "/api/v1/auth/wechat/{appid}/authorize",
            Public,
            wechat::authorize,
        )
        .route(
            M::GET,
            "/api/v1/auth/wechat/{appid}/callback",
            Public,
            wechat::callback,
        )
        .route(M::POST, "/api/v1/auth/handoff", Session, handoff::mint)
        .route(
            M::POST,
            "/api/v1/auth/handoff/redeem",
            Public,
            handoff::redeem,
        )
        .route(M::GET, "/api/v1/me/sign-ins", Session, ways::list)
        .route(
            M::DELETE,
            "/api/v1/me/sign-ins/{identity_id}",
            may(Permission::LinkSignIns),
            ways::unlink,
        )
        .route(
            M::POST,
            "/api/v1/me/phone",
            may(Permission::LinkSignIns),
            phone::request_verification,
        )
        .route(
            M::POST,
            "/api/v1/me/phone/confirm",
            Session,
            phone::confirm_verification,
        )
        .route(
            M::DELETE,
            "/api/v1/me/phone",
            may(Permission::LinkSignIns),
            phone::remove,
        )
        .route(M::POST, "/api/v1/auth/logout", Session, session::logout)
        .route(M::GET, "/api/v1/me", Authenticated, session::me)
        .route(
            M::POST,
            "/api/v1/me/sessions/revoke",
            Session,
            session::revoke_all,
        )
        .route(M::POST, "/api/v1/me/totp", Session, stepup::enrol_totp)
        .route(
            M::POST,
            "/api/v1/me/totp/confirm",
            Session,
            stepup::confirm_totp,
        )
        .route(
            M::POST,
            "/api/v1/auth/step-up/code",
            Session,
            stepup::send_code,
        )
        .route(M::POST, "/api/v1/auth/step-up", Session, stepup::step_up)
        .route(
            M::GET,
            "/api/v1/users",
            may(Permission::ListUsers),
            users::list,
        )
        .route(
            M::GET,
            "/api/v1/users/export",
            may(Permission::ExportPersonalData),
            users::export,
        )
        .describe(|op| {
            op.raw(
                200,
                "text/csv",
                "every account's id, organisation, role, email, phone and real name, as a CSV attachment",
            );
        })
        .route(
            M::PUT,
            "/api/v1/users/{user_id}/role",
            may(Permission::ChangeRoles),
            users::change_role,
        )
        .route(
            M::DELETE,
            "/api/v1/users/{user_id}",
            may(Permission::DeleteUsers),
            users::delete,
        )
        .route(
            M::POST,
            "/api/v1/invitations",
            may(Permission::InviteExperts),
            invite::create,
        )
        .route(
            M::GET,
            "/api/v1/invitations",
            may(Permission::InviteExperts),
            invite::list,
        )
        .route(
            M::POST,
            "/api/v1/invitations/{invitation_id}/resend",
            may(Permission::InviteExperts),
            invite::resend,
        )
        .route(
            M::POST,
            "/api/v1/invitations/{invitation_id}/revoke",
            may(Permission::InviteExperts),
            invite::revoke,
        )
        .route(
            M::POST,
            "/api/v1/invitations/inspect",
            Public,
            invite::inspect,
        )
        .route(
            M::POST,
            "/api/v1/invitations/accept",
            Public,
            invite::accept,
        )
        .route(
            M::GET,
            "/api/v1/audit",
            may(Permission::ReadAudit),
            audit::list,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_match_networks() {
        let p = TrustedProxies::parse("10.0.0.0/8, 192.168.1.10, ::1").unwrap();
        assert!(p.contains("10.1.2.3".parse().unwrap()));
        assert!(p.contains("192.168.1.10".parse().unwrap()));
        assert!(!p.contains("192.168.1.11".parse().unwrap()));
        assert!(p.contains("::1".parse().unwrap()));
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("nope").is_err());
        assert_eq!(ip_range("203.0.113.9").unwrap(), "203.0.113.0/24");
    }
}
