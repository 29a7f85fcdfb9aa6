//! LDAP / Active Directory bind sign-in: an organisation names its
//! directory (`ldap_directories`: URL, an optional service account whose
//! password is sealed, where people and groups are, and which group makes
//! its members what role here), and its people sign in with their
//! directory login and password.
//!
//! A sign-in (`POST /api/v1/auth/ldap/sign-in`) is counted before it is
//! checked, against the login within the organisation (its blind index)
//! and the client address, with the password sign-in's limits, 429, audit
//! rows and alerts. Lectern then connects — to an address it resolved and
//! checked itself (public, or named in `LECTERN_SIGN_IN_ALLOW`), so the
//! directory URL cannot be used to reach anything else — over LDAPS, or
//! plain LDAP upgraded with StartTLS; plain LDAP without TLS only with
//! `LECTERN_SIGN_IN_ALLOW_PLAIN` (development). It binds as the service
//! account (or searches anonymously), finds exactly one entry whose
//! `user_attribute` equals the login (escaped), binds as that entry with
//! the password given (an empty password is refused before: it would be
//! an unauthenticated bind, which servers accept), and reads the `cn` of
//! every group under `group_base` listing the entry as a `member`.
//!
//! Groups decide the role at **every** sign-in: the most privileged role
//! any of the person's groups maps to (learner < expert < content admin;
//! a directory never makes a super admin) replaces the account's, so a
//! person moved from `doctors` to `editors` is a content admin from their
//! next sign-in; a person in no mapped group is refused. The entry's DN is
//! the identity (`external_identities`, kind `ldap`, issuer the URL).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry, StdStream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, AuditEvent};
use crate::policy::{self, SignInMethod};
use crate::session::{SignedIn, WithSessionCookie};
use crate::ways::{self, External, IdentityKind};
use crate::Identity;
use lectern_egress::{AllowList, Url};
use lectern_web::{ApiError, ApiJson, ApiPath, ClientContext, ErrorCode, Principal, Role};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Roles a directory group may give, least privileged first.
const MAPPABLE: [Role; 3] = [Role::Learner, Role::Expert, Role::ContentAdmin];

#[derive(sqlx::FromRow)]
struct DirectoryRow {
    url: String,
    bind_dn: Option<String>,
    bind_password_ct: Option<Vec<u8>>,
    user_base: String,
    user_attribute: String,
    group_base: String,
    group_roles: sqlx::types::Json<BTreeMap<String, String>>,
}

fn unavailable(what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::ProviderUnavailable,
        format!("the directory: {what}"),
    )
}

fn wrong_credentials() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "wrong directory login or password",
    )
}

/// `POST /api/v1/auth/ldap/sign-in`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct LdapSignIn {
    pub org_id: Uuid,
    /// The directory login (`uid`, or `sAMAccountName` in Active Directory).
    pub login: String,
    pub password: String,
}

// Deliberately no Debug: it would print the password.

/// What the directory said of a person whose password it accepted.
struct Person {
    dn: String,
    groups: Vec<String>,
}

/// Why a directory exchange did not produce a person.
enum Refusal {
    /// Unknown login, several entries, or the password was wrong.
    Credentials,
    Unavailable(ApiError),
}

impl From<ldap3::LdapError> for Refusal {
    fn from(e: ldap3::LdapError) -> Self {
        Refusal::Unavailable(unavailable(e))
    }
}

/// A TCP connection to the directory's host, at an address checked like
/// every outbound request (`lectern_egress`'s rule), handed to ldap3 so
/// it connects nowhere else.
async fn checked_stream(url: &Url, allow: &AllowList) -> Result<StdStream, ApiError> {
    let host = url
        .host_str()
        .ok_or_else(|| unavailable("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url
        .port()
        .unwrap_or(if url.scheme() == "ldaps" { 636 } else { 389 });
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| unavailable(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(unavailable(format!("{host} resolves to no address")));
    }
    if !allow.allows_host(&host) {
        for a in &addrs {
            if let Some(kind) = lectern_egress::non_public(a.ip()) {
                if !allow.allows_addr(a.ip()) {
                    return Err(unavailable(format!(
                        "{host} is a {kind} address; allow it with LECTERN_SIGN_IN_ALLOW"
                    )));
                }
            }
        }
    }
    let stream = tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(&addrs[..]))
        .await
        .map_err(|_| unavailable("connecting timed out"))?
        .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
    Ok(StdStream::Tcp(
        stream.into_std().map_err(ApiError::internal)?,
    ))
}

fn tls_config(extra_ca: Option<&str>) -> Result<Arc<rustls::ClientConfig>, ApiError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A system certificate rustls cannot read is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if let Some(pem) = extra_ca {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| unavailable(format!("LECTERN_LDAP_CA_FILE: {e}")))?)
                .map_err(|e| unavailable(format!("LECTERN_LDAP_CA_FILE: {e}")))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(ApiError::internal)?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

async fn ask_directory(
    state: &Identity,
    dir: &DirectoryRow,
    bind_password: Option<String>,
    login: &str,
    password: &str,
) -> Result<Person, Refusal> {
    let sso = &state.settings.sso;
    let url = Url::parse(&dir.url).map_err(|_| Refusal::Unavailable(unavailable("bad URL")))?;
    let tls = url.scheme() == "ldaps";
    let plain_allowed = sso.allow_plain
        && url.host_str().is_some_and(|h| {
            sso.allow.allows_host(h) || h.parse().is_ok_and(|ip| sso.allow.allows_addr(ip))
        });
    let stream = checked_stream(&url, &sso.allow)
        .await
        .map_err(Refusal::Unavailable)?;
    let settings = LdapConnSettings::new()
        .set_conn_timeout(TIMEOUT)
        .set_config(tls_config(sso.ldap_ca.as_deref()).map_err(Refusal::Unavailable)?)
        // ldap:// is upgraded with StartTLS, refused if the server cannot.
        .set_starttls(!tls && !plain_allowed)
        .set_std_stream(stream);
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &dir.url).await?;
    ldap3::drive!(conn);
    ldap.with_timeout(TIMEOUT);
    if let (Some(dn), Some(pw)) = (&dir.bind_dn, &bind_password) {
        ldap.simple_bind(dn, pw)
            .await?
            .success()
            .map_err(|_| Refusal::Unavailable(unavailable("the service account was refused")))?;
    }
    let filter = format!(
        "({}={})",
        dir.user_attribute,
        ldap3::ldap_escape(login.trim())
    );
    ldap.with_timeout(TIMEOUT);
    let (entries, _) = ldap
        .search(&dir.user_base, Scope::Subtree, &filter, vec!["1.1"])
        .await?
        .success()?;
    let [entry] = &entries[..] else {
        return Err(Refusal::Credentials);
    };
    let dn = SearchEntry::construct(entry.clone()).dn;
    ldap.with_timeout(TIMEOUT);
    let bound = ldap.simple_bind(&dn, password).await?;
    if bound.rc != 0 {
        return Err(Refusal::Credentials);
    }
    let filter = format!(
        "(&(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames)(objectClass=group))(|(member={dn})(uniqueMember={dn})))",
        dn = ldap3::ldap_escape(&dn)
    );
    ldap.with_timeout(TIMEOUT);
    let (groups, _) = ldap
        .search(&dir.group_base, Scope::Subtree, &filter, vec!["cn"])
        .await?
        .success()?;
    let groups = groups
        .into_iter()
        .flat_map(|g| {
            SearchEntry::construct(g)
                .attrs
                .remove("cn")
                .unwrap_or_default()
        })
        .collect();
    let _ = ldap.unbind().await;
    Ok(Person { dn, groups })
}

/// The most privileged role any of `groups` maps to.
fn role_of(groups: &[String], map: &BTreeMap<String, String>) -> Option<Role> {
    groups
        .iter()
        .filter_map(|g| map.get(g))
        .filter_map(|r| MAPPABLE.into_iter().position(|m| m.as_str() == r))
        .max()
        .map(|i| MAPPABLE[i])
}

/// `POST /api/v1/auth/ldap/sign-in` → a session (and its cookie).
pub async fn sign_in(
    State(state): State<Identity>,
    context: ClientContext,
    ApiJson(req): ApiJson<LdapSignIn>,
) -> Result<WithSessionCookie<SignedIn>, ApiError> {
    const METHOD: &str = "ldap";
    let keys = state.keyring()?;
    let policy = policy::read(&state.db, req.org_id).await?;
    if !policy.allows(SignInMethod::Ldap) {
        ways::refused(&state, &context, METHOD, "method_disabled").await;
        return Err(policy::disabled(SignInMethod::Ldap));
    }
    let dir: Option<DirectoryRow> = sqlx::query_as(
        "SELECT url, bind_dn, bind_password_ct, user_base, user_attribute, group_base, group_roles \
         FROM ldap_directories WHERE org_id = $1",
    )
    .bind(req.org_id)
    .fetch_optional(&state.db)
    .await?;
    let dir = dir.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ProviderNotConfigured,
            "this organisation has no directory configured",
        )
    })?;
    let login_index = keys.blind_index(
        &format!("ldap-login|{}", req.org_id),
        &req.login.trim().to_lowercase(),
    );
    let reservation = ways::reserve(
        &state,
        &context,
        format!("ldap:{}", hex::encode(&login_index)),
        state.settings.throttle.account_failures,
        METHOD,
    )
    .await?;
    if req.password.is_empty() || req.login.trim().is_empty() {
        ways::failed(
            &state,
            &context,
            &reservation,
            METHOD,
            "invalid_credentials",
        )
        .await;
        return Err(wrong_credentials());
    }
    let bind_password = dir
        .bind_password_ct
        .as_deref()
        .map(|ct| keys.open("ldap_directories.bind_password", req.org_id, ct))
        .transpose()
        .map_err(ApiError::internal)?;
    let person = match ask_directory(&state, &dir, bind_password, &req.login, &req.password).await {
        Ok(person) => person,
        Err(Refusal::Credentials) => {
            ways::failed(
                &state,
                &context,
                &reservation,
                METHOD,
                "invalid_credentials",
            )
            .await;
            return Err(wrong_credentials());
        }
        Err(Refusal::Unavailable(e)) => {
            // Not the person's fault: the attempt is given back.
            reservation.succeeded(&state.db).await?;
            ways::refused(&state, &context, METHOD, "directory_unavailable").await;
            return Err(e);
        }
    };
    reservation.succeeded(&state.db).await?;
    let Some(role) = role_of(&person.groups, &dir.group_roles) else {
        ways::refused(&state, &context, METHOD, "no_mapped_group").await;
        return Err(ApiError::new(
            ErrorCode::SignInRejected,
            "the directory puts you in no group that has a role in this organisation",
        ));
    };
    let identity = External {
        kind: IdentityKind::Ldap,
        issuer: &dir.url,
        subject: &person.dn,
    };
    Ok(ways::sign_in_external(
        &state,
        &context,
        req.org_id,
        &policy,
        &identity,
        Some(role),
        METHOD,
    )
    .await?
    .0)
}

/// `PUT /api/v1/organisations/{org_id}/ldap`.
#[derive(Deserialize, schemars::JsonSchema)]
pub struct DirectoryChange {
    /// `ldaps://ldap.hospital.example` or `ldap://…` (StartTLS).
    pub url: String,
    /// The service account people are looked up with; leave out for an
    /// anonymous search.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Its password; stored sealed, never answered.
    #[serde(default)]
    pub bind_password: Option<String>,
    pub user_base: String,
    /// `uid` (default) or `sAMAccountName`.
    #[serde(default)]
    pub user_attribute: Option<String>,
    pub group_base: String,
    /// Group `cn` → role here: `{"doctors": "learner", "editors": "content_admin"}`.
    #[schemars(with = "BTreeMap<String, crate::RoleName>")]
    pub group_roles: BTreeMap<String, String>,
}

// Deliberately no Debug: it would print the service account's password.

/// An organisation's directory, as administrators see it (no password).
#[derive(Serialize, schemars::JsonSchema)]
pub struct DirectoryAnswer {
    pub url: String,
    pub bind_dn: Option<String>,
    pub user_base: String,
    pub user_attribute: String,
    pub group_base: String,
    #[schemars(with = "BTreeMap<String, crate::RoleName>")]
    pub group_roles: BTreeMap<String, String>,
}

/// `PUT /api/v1/organisations/{org_id}/ldap` (super admin, step-up).
pub async fn put_directory(
    State(state): State<Identity>,
    principal: Principal,
    context: ClientContext,
    ApiPath(org_id): ApiPath<Uuid>,
    ApiJson(change): ApiJson<DirectoryChange>,
) -> Result<Json<DirectoryAnswer>, ApiError> {
    let keys = state.keyring()?;
    let org_id = principal.target_org(Some(org_id))?;
    let invalid = |m: &str| ApiError::new(ErrorCode::InvalidRequest, m.to_owned());
    let url = Url::parse(change.url.trim()).map_err(|_| invalid("url is not a URL"))?;
    if !matches!(url.scheme(), "ldap" | "ldaps") || url.host_str().is_none() {
        return Err(invalid(
            "url must be ldaps://host or ldap://host (StartTLS)",
        ));
    }
    let attribute = change.user_attribute.unwrap_or_else(|| "uid".to_owned());
    if attribute.is_empty()
        || !attribute.starts_with(|c: char| c.is_ascii_alphabetic())
        || !attribute
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(invalid("user_attribute must be an attribute name like uid"));
    }
    for role in change.group_roles.values() {
        if !MAPPABLE.iter().any(|m| m.as_str() == role) {
            return Err(ApiError::new(
                ErrorCode::InvalidRole,
                format!("{role:?}: a group may make people learner, expert or content_admin"),
            ));
        }
    }
    let (bind_dn, sealed) = match (change.bind_dn, change.bind_password) {
        (Some(dn), Some(pw)) if !dn.is_empty() && !pw.is_empty() => (
            Some(dn),
            Some(keys.seal("ldap_directories.bind_password", org_id, &pw)),
        ),
        (None, None) => (None, None),
        _ => return Err(invalid("give both bind_dn and bind_password, or neither")),
    };
    let stored = sqlx::query(
        "INSERT INTO ldap_directories (org_id, url, bind_dn, bind_password_ct, key_id, user_base, \
           user_attribute, group_base, group_roles) \
         SELECT id, $2, $3, $4, $5, $6, $7, $8, $9 FROM organisations WHERE id = $1 \
         ON CONFLICT (org_id) DO UPDATE SET url = EXCLUDED.url, bind_dn = EXCLUDED.bind_dn, \
           bind_password_ct = EXCLUDED.bind_password_ct, key_id = EXCLUDED.key_id, \
           user_base = EXCLUDED.user_base, user_attribute = EXCLUDED.user_attribute, \
           group_base = EXCLUDED.group_base, group_roles = EXCLUDED.group_roles, updated_at = now()",
    )
    .bind(org_id)
    .bind(url.as_str().trim_end_matches('/'))
    .bind(&bind_dn)
    .bind(&sealed)
    .bind(keys.active_key_id())
    .bind(&change.user_base)
    .bind(&attribute)
    .bind(&change.group_base)
    .bind(sqlx::types::Json(&change.group_roles))
    .execute(&state.db)
    .await?
    .rows_affected();
    if stored == 0 {
        return Err(ApiError::not_found(format!("no organisation {org_id}")));
    }
    audit::record_or_log(
        &state,
        &AuditEvent {
            action: "sign_in.ldap_directory".into(),
            target: Some(format!("org:{org_id}")),
            outcome: "ok",
            detail: Some(json!({ "groups": change.group_roles }).to_string()),
            ..AuditEvent::by(Some(&principal), &context)
        },
    )
    .await;
    Ok(Json(DirectoryAnswer {
        url: url.as_str().trim_end_matches('/').to_owned(),
        bind_dn,
        user_base: change.user_base,
        user_attribute: attribute,
        group_base: change.group_base,
        group_roles: change.group_roles,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_privileged_mapped_group_decides() {
        let map: BTreeMap<String, String> = [
            ("doctors", "learner"),
            ("editors", "content_admin"),
            ("admins", "super_admin"),
        ]
        .into_iter()
        .map(|(a, b)| (a.into(), b.into()))
        .collect();
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(role_of(&g(&["doctors"]), &map), Some(Role::Learner));
        assert_eq!(
            role_of(&g(&["doctors", "editors"]), &map),
            Some(Role::ContentAdmin)
        );
        // A directory never makes a super admin, whatever the map says.
        assert_eq!(role_of(&g(&["admins"]), &map), None);
        assert_eq!(role_of(&g(&["visitors"]), &map), None);
    }
}
