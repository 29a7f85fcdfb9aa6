//! OpenID Connect sign-in against a REAL provider: the certified
//! `oidc-provider` npm package, run by `infra/dev/oidc/provider.mjs`
//! (installed by `infra/dev/setup test`), one process per test on its own
//! loopback port. The test plays the browser: it follows the redirects
//! between Lectern (through the router) and the provider (over HTTP),
//! keeping each side's cookies. The provider's interaction signs in the
//! account named by `login_hint` without asking (see the script).
//!
//! Time is moved with `SsoSettings::time_shift`, never by sleeping.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use lectern_identity::oidc::{verify_id_token, Expected};
use lectern_identity::{IdentitySettings, SsoSettings, ThrottlePolicy};
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use tokio::io::{AsyncBufReadExt, BufReader};
use tower::ServiceExt;
use uuid::Uuid;

const APP: &str = "http://127.0.0.1:8080";

/// The provider process, stopped when dropped.
struct Provider {
    child: tokio::process::Child,
    port: u16,
}

impl Provider {
    async fn start(org: Uuid, port: Option<u16>, kid: &str) -> Provider {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/dev/oidc/provider.mjs"
        );
        let modules = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/dev/oidc/node_modules"
        );
        assert!(
            std::path::Path::new(modules).exists(),
            "the test OpenID provider is not installed: run infra/dev/setup test (or infra/dev/oidc/setup)"
        );
        let port = port.unwrap_or_else(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        });
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .env("OIDC_PORT", port.to_string())
            .env(
                "OIDC_REDIRECT_URIS",
                format!("{APP}/api/v1/auth/oidc/{org}/callback"),
            )
            .env("OIDC_POST_LOGOUT_REDIRECT_URIS", format!("{APP}/app/"))
            .env("OIDC_KEY_ID", kid)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs the provider");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if line.contains("listening on") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "the provider did not start");
        Provider { child, port }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
        self.child.wait().await.unwrap();
    }
}

/// A browser: cookies per side, no automatic redirects.
struct Browser {
    lectern: HashMap<String, String>,
    provider: HashMap<String, String>,
    http: reqwest::Client,
}

fn keep(jar: &mut HashMap<String, String>, set_cookies: Vec<String>) {
    for c in set_cookies {
        let pair = c.split(';').next().unwrap_or_default();
        if let Some((name, value)) = pair.split_once('=') {
            if value.is_empty() || c.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), value.to_owned());
            }
        }
    }
}

fn cookie_header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An answer of Lectern's router.
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: String,
}

impl Browser {
    fn new() -> Self {
        Self {
            lectern: HashMap::new(),
            provider: HashMap::new(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
        }
    }

    async fn lectern(&mut self, w: &World, method: &str, path: &str) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("cookie", cookie_header(&self.lectern))
            .body(Body::empty())
            .unwrap();
        let resp = w.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let location = resp
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_owned());
        let set: Vec<String> = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        keep(&mut self.lectern, set);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            location,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// Follows the provider's redirects from `url` until one leads back to
    /// Lectern; that URL's path and query, and how many interactions
    /// (login or consent pages) the provider went through.
    async fn through_provider(&mut self, url: &str) -> (String, usize) {
        let mut url = url.to_owned();
        let mut interactions = 0;
        for _ in 0..10 {
            if let Some(back) = url.strip_prefix(APP) {
                return (back.to_owned(), interactions);
            }
            if url.contains("/interaction/") {
                interactions += 1;
            }
            let resp = self
                .http
                .get(&url)
                .header("cookie", cookie_header(&self.provider))
                .send()
                .await
                .unwrap();
            let set = resp
                .headers()
                .get_all("set-cookie")
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect();
            keep(&mut self.provider, set);
            let next = resp
                .headers()
                .get("location")
                .unwrap_or_else(|| panic!("the provider stopped at {url}"))
                .to_str()
                .unwrap()
                .to_owned();
            url = if next.starts_with('/') {
                let base = reqwest::Url::parse(&url).unwrap();
                base.join(&next).unwrap().to_string()
            } else {
                next
            };
        }
        panic!("too many redirects");
    }

    /// Ends the provider's session at `end_session_url` as a browser would:
    /// the confirmation page's form is submitted (its script does that).
    async fn end_provider_session(&mut self, end_session_url: &str) -> String {
        let page = self
            .http
            .get(end_session_url)
            .header("cookie", cookie_header(&self.provider))
            .send()
            .await
            .unwrap();
        let base = page.url().clone();
        let html = page.text().await.unwrap();
        let action = attr(&html, "action").expect("a logout form");
        // The form's fields, and the one its script adds (`logout=yes`:
        // end the provider's session too).
        let fields: Vec<(String, String)> = html
            .split("<input")
            .skip(1)
            .filter_map(|i| Some((attr(i, "name")?, attr(i, "value").unwrap_or_default())))
            .collect();
        assert!(
            fields.iter().any(|(n, v)| n == "logout" && v == "yes"),
            "{html}"
        );
        let resp = self
            .http
            .post(base.join(&action).unwrap())
            .header("cookie", cookie_header(&self.provider))
            .form(&fields)
            .send()
            .await
            .unwrap();
        let set = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        keep(&mut self.provider, set);
        match resp.headers().get("location") {
            Some(l) => l.to_str().unwrap().to_owned(),
            None => panic!(
                "logout answered {} {}",
                resp.status(),
                resp.text().await.unwrap()
            ),
        }
    }
}

fn attr(html: &str, name: &str) -> Option<String> {
    let start = html.find(&format!("{name}=\""))? + name.len() + 2;
    let end = html[start..].find('"')? + start;
    Some(html[start..end].replace("&amp;", "&"))
}

struct Setup {
    w: World,
    org: Uuid,
    provider: Provider,
    time: Arc<AtomicI64>,
}

async fn setup(db: PgPool, methods: &[&str], new_accounts: &str) -> Setup {
    setup_with(db, methods, new_accounts, ThrottlePolicy::default()).await
}

async fn setup_with(
    db: PgPool,
    methods: &[&str],
    new_accounts: &str,
    throttle: ThrottlePolicy,
) -> Setup {
    let time = Arc::new(AtomicI64::new(0));
    let w = World::with_settings(
        db,
        IdentitySettings {
            sso: SsoSettings {
                allow: "127.0.0.1".parse().unwrap(),
                allow_plain: true,
                clock_skew: Duration::from_secs(60),
                time_shift: time.clone(),
                ..SsoSettings::default()
            },
            throttle,
            ..IdentitySettings::default()
        },
    )
    .await;
    let org = w.org("Hospital").await;
    let provider = Provider::start(org, None, "key-1").await;
    sqlx::query("INSERT INTO sign_in_policies (org_id, methods, new_accounts) VALUES ($1, $2, $3)")
        .bind(org)
        .bind(methods)
        .bind(new_accounts)
        .execute(w.db())
        .await
        .unwrap();
    // The organisation's super admin names the provider (a critical change).
    w.user(Some(org), "admin@hospital.example", Role::SuperAdmin)
        .await;
    let admin = w.login("admin@hospital.example").await;
    w.step_up(&admin, "admin@hospital.example").await;
    let (status, body) = w
        .call(
            "PUT",
            &format!("/api/v1/organisations/{org}/oidc"),
            Some(&admin),
            Some(json!({
                "issuer": provider.issuer(),
                "client_id": "lectern",
                "client_secret": "lectern-dev-secret",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["redirect_uri"],
        format!("{APP}/api/v1/auth/oidc/{org}/callback")
    );
    assert!(!body.to_string().contains("lectern-dev-secret"), "{body}");
    // The public policy names the provider for the sign-in screens' button.
    let (status, body) = w
        .call(
            "GET",
            &format!("/api/v1/organisations/{org}/sign-in-policy"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["oidc_issuer"], provider.issuer(), "{body}");
    assert!(!body.to_string().contains("lectern-dev-secret"), "{body}");
    Setup {
        w,
        org,
        provider,
        time,
    }
}

/// Starts a sign-in as `who` and walks to the provider's answer: the
/// callback path Lectern is sent back to, and the interactions it took.
async fn to_callback(s: &Setup, browser: &mut Browser, who: &str) -> (String, usize) {
    let start = browser
        .lectern(
            &s.w,
            "GET",
            &format!(
                "/api/v1/auth/oidc/{}/start?login_hint={who}&return_to=/app/courses",
                s.org
            ),
        )
        .await;
    assert_eq!(start.status, StatusCode::SEE_OTHER, "{}", start.body);
    let to = start.location.unwrap();
    assert!(to.starts_with(&s.provider.issuer()), "{to}");
    for part in [
        "code_challenge_method=S256",
        "nonce=",
        "state=",
        "response_type=code",
    ] {
        assert!(to.contains(part), "{to}");
    }
    browser.through_provider(&to).await
}

async fn sign_in(s: &Setup, browser: &mut Browser, who: &str) -> Answer {
    let (callback, _) = to_callback(s, browser, who).await;
    browser.lectern(&s.w, "GET", &callback).await
}

async fn me(s: &Setup, browser: &mut Browser) -> (StatusCode, serde_json::Value) {
    let a = browser.lectern(&s.w, "GET", "/api/v1/me").await;
    (a.status, serde_json::from_str(&a.body).unwrap_or_default())
}

#[sqlx::test(migrations = "../migrations")]
async fn a_real_provider_signs_in_a_learner_and_logging_out_ends_its_session(db: PgPool) {
    let s = setup(db, &["oidc"], "just_in_time").await;
    let mut browser = Browser::new();
    let answer = sign_in(&s, &mut browser, "alice").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    assert_eq!(answer.location.as_deref(), Some("/app/courses"));
    assert!(browser.lectern.contains_key("lectern_session"));
    let (status, first) = me(&s, &mut browser).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["role"], "learner");
    assert_eq!(first["org_id"], s.org.to_string());

    // Again: the same person, and the provider's session made it silent.
    let (callback, interactions) = to_callback(&s, &mut browser, "alice").await;
    assert_eq!(interactions, 0);
    let answer = browser.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (_, again) = me(&s, &mut browser).await;
    assert_eq!(again["id"], first["id"]);

    // Logging out at Lectern ends the provider's session too.
    let out = browser
        .lectern(&s.w, "POST", "/api/v1/auth/oidc/logout")
        .await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.body);
    let out: serde_json::Value = serde_json::from_str(&out.body).unwrap();
    let end = out["end_session_url"].as_str().unwrap().to_owned();
    assert!(end.starts_with(&s.provider.issuer()), "{end}");
    assert_eq!(me(&s, &mut browser).await.0, StatusCode::UNAUTHORIZED);
    let back = browser.end_provider_session(&end).await;
    assert_eq!(back, format!("{APP}/app/"));
    let (_, interactions) = to_callback(&s, &mut browser, "alice").await;
    assert!(interactions > 0, "the provider still had a session");

    // Audited: two sign-ins by OIDC and the just-in-time account; no
    // secret of the exchange anywhere in the log.
    s.w.audit_flushed().await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT a::text FROM audit_log a")
        .fetch_all(s.w.db())
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("auth.login") && r.contains("oidc"))
            .count(),
        2,
        "{rows:#?}"
    );
    assert!(rows.iter().any(|r| r.contains("just_in_time")));
    for r in &rows {
        assert!(
            !r.contains("lectern-dev-secret") && !r.contains("code="),
            "{r}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_state_works_once_and_only_in_the_browser_that_started_it(db: PgPool) {
    let s = setup(db, &["oidc"], "just_in_time").await;
    let mut browser = Browser::new();
    let (callback, _) = to_callback(&s, &mut browser, "bob").await;
    // Lured into another browser (no flow cookie, or another one): refused.
    let mut other = Browser::new();
    other
        .lectern(&s.w, "GET", &format!("/api/v1/auth/oidc/{}/start", s.org))
        .await;
    let answer = other.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert!(answer.body.contains("sign_in_rejected"));
    // That attempt used the state up: the right browser is refused too,
    // and so is any replay.
    let answer = browser.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);

    let (callback, _) = to_callback(&s, &mut browser, "bob").await;
    let answer = browser.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    browser.lectern.remove("lectern_session");
    let replay = browser.lectern(&s.w, "GET", &callback).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert!(!browser.lectern.contains_key("lectern_session"));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_token_for_another_nonce_is_refused(db: PgPool) {
    let s = setup(db, &["oidc"], "just_in_time").await;
    let mut browser = Browser::new();
    let (callback, _) = to_callback(&s, &mut browser, "carol").await;
    // The provider answered a request with another nonce than this flow's.
    sqlx::query("UPDATE oidc_flows SET nonce = 'someone-elses-nonce'")
        .execute(s.w.db())
        .await
        .unwrap();
    let answer = browser.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert!(answer.body.contains("nonce"), "{}", answer.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn expired_id_tokens_are_refused_beyond_the_clock_skew(db: PgPool) {
    let s = setup(db, &["oidc"], "just_in_time").await;
    let mut browser = Browser::new();
    // ID tokens live 300 s; 30 s past that is within the 60 s skew.
    s.time.store(330, Ordering::Relaxed);
    let answer = sign_in(&s, &mut browser, "dave").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    s.time.store(400, Ordering::Relaxed);
    let answer = sign_in(&s, &mut browser, "dave").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert!(answer.body.contains("expired"), "{}", answer.body);
    // Issued "in the future" beyond the skew: our clock is behind.
    s.time.store(-120, Ordering::Relaxed);
    let answer = sign_in(&s, &mut browser, "dave").await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_rotated_provider_key_is_fetched_and_a_forged_token_is_not_believed(db: PgPool) {
    let mut s = setup(db, &["oidc"], "just_in_time").await;
    let mut browser = Browser::new();
    let answer = sign_in(&s, &mut browser, "erin").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    // The provider restarts with a new key (kid key-2); Lectern has key-1.
    let port = s.provider.port;
    s.provider.child.kill().await.unwrap();
    s.provider.child.wait().await.unwrap();
    s.provider = Provider::start(s.org, Some(port), "key-2").await;
    let mut browser = Browser::new();
    let answer = sign_in(&s, &mut browser, "erin").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);

    // The ID token Lectern kept for logout, and the flow's nonce.
    let (session_id, sealed): (Uuid, Vec<u8>) = sqlx::query_as(
        "SELECT session_id, id_token_ct FROM oidc_sessions ORDER BY session_id DESC LIMIT 1",
    )
    .fetch_one(s.w.db())
    .await
    .unwrap();
    let token =
        s.w.keys
            .open("oidc_sessions.id_token", session_id, &sealed)
            .unwrap();
    let nonce: String =
        sqlx::query_scalar("SELECT nonce FROM oidc_flows ORDER BY created_at DESC LIMIT 1")
            .fetch_one(s.w.db())
            .await
            .unwrap();
    let jwks: jsonwebtoken::jwk::JwkSet = reqwest::get(format!("{}/jwks", s.provider.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = jwks.find("key-2").unwrap();
    let issuer = s.provider.issuer();
    let expected = Expected {
        issuer: &issuer,
        client_id: "lectern",
        nonce: &nonce,
        now: chrono::Utc::now().timestamp(),
        skew: Duration::from_secs(60),
    };
    assert_eq!(verify_id_token(&token, key, &expected).unwrap(), "erin");
    // The same signature over another subject.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let forged_claims = claims.replace("\"sub\":\"erin\"", "\"sub\":\"admin\"");
    assert_ne!(claims, forged_claims);
    let forged = format!("{}.{}.{}", parts[0], b64.encode(forged_claims), parts[2]);
    assert!(verify_id_token(&forged, key, &expected).is_err());
    // Unsigned, and "signed" with a shared secret: not accepted at all.
    let none = format!(
        "{}.{}.",
        b64.encode(r#"{"alg":"none","kid":"key-2"}"#),
        parts[1]
    );
    assert!(verify_id_token(&none, key, &expected).is_err());
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::from_str::<serde_json::Value>(&claims).unwrap(),
        &jsonwebtoken::EncodingKey::from_secret(b"lectern-dev-secret"),
    )
    .unwrap();
    assert!(verify_id_token(&hs, key, &expected).is_err());
    // Signed by a key the provider does not publish (key-1, gone).
    assert!(jwks.find("key-1").is_none());
    s.provider.stop().await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_organisation_without_oidc_or_without_the_account_refuses(db: PgPool) {
    let s = setup(db, &["oidc"], "invitation").await;
    let mut browser = Browser::new();
    // Invitation only, and nobody linked this subject: refused.
    let answer = sign_in(&s, &mut browser, "frank").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(
        answer.body.contains("invitation_required"),
        "{}",
        answer.body
    );

    // A signed-in person links the identity (step-up), then signs in with it.
    s.w.user(Some(s.org), "frank@hospital.example", Role::Expert)
        .await;
    let token = s.w.login("frank@hospital.example").await;
    let (status, body) =
        s.w.call(
            "POST",
            "/api/v1/me/sign-ins/oidc",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "step_up_required");
    s.w.step_up(&token, "frank@hospital.example").await;
    let req = Request::post("/api/v1/me/sign-ins/oidc")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let resp = s.w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    let mut linker = Browser::new();
    keep(&mut linker.lectern, vec![set]);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let url = format!(
        "{}&login_hint=frank",
        body["authorize_url"].as_str().unwrap()
    );
    let (callback, _) = linker.through_provider(&url).await;
    let answer = linker.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (_, ways) =
        s.w.call("GET", "/api/v1/me/sign-ins", Some(&token), None)
            .await;
    assert_eq!(ways["identities"][0]["kind"], "oidc", "{ways}");
    let mut browser = Browser::new();
    let answer = sign_in(&s, &mut browser, "frank").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (_, who) = me(&s, &mut browser).await;
    assert_eq!(who["email"], "frank@hospital.example");
    assert_eq!(who["role"], "expert");

    // The organisation turns OIDC off: neither start nor a flow under way works.
    let (callback, _) = to_callback(&s, &mut browser, "frank").await;
    sqlx::query("UPDATE sign_in_policies SET methods = '{sms}'")
        .execute(s.w.db())
        .await
        .unwrap();
    let answer = browser.lectern(&s.w, "GET", &callback).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(answer.body.contains("sign_in_method_disabled"));
    let answer = browser
        .lectern(&s.w, "GET", &format!("/api/v1/auth/oidc/{}/start", s.org))
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
}

#[sqlx::test(migrations = "../migrations")]
async fn guessed_states_lock_the_address_before_the_provider_is_asked(db: PgPool) {
    let s = setup_with(
        db,
        &["oidc"],
        "just_in_time",
        ThrottlePolicy {
            address_failures: 3,
            ..ThrottlePolicy::default()
        },
    )
    .await;
    let callback = |state: &'static str| {
        let w = &s.w;
        let path = format!(
            "/api/v1/auth/oidc/{}/callback?code=stolen&state={state}",
            s.org
        );
        async move {
            w.call_from(Some("203.0.113.9"), &[], "GET", &path, None, None)
                .await
        }
    };
    for guess in ["guess-1", "guess-2", "guess-3"] {
        let (status, text) = callback(guess).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    }
    // The third guess locked the address: the fourth is refused before any
    // state is looked up…
    let (status, text) = callback("guess-4").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(text.contains("account_locked"), "{text}");
    // …while a real sign-in from elsewhere still works.
    let mut browser = Browser::new();
    let answer = sign_in(&s, &mut browser, "erin").await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let (status, _) = me(&s, &mut browser).await;
    assert_eq!(status, StatusCode::OK);
    s.w.audit_flushed().await;
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT a::text FROM audit_log a WHERE action = 'auth.login'")
            .fetch_all(s.w.db())
            .await
            .unwrap();
    assert!(
        audited
            .iter()
            .any(|d| d.contains("\"oidc\"") && d.contains("locked_out")),
        "{audited:?}"
    );
    assert_eq!(
        audited
            .iter()
            .filter(|d| d.contains("\"oidc\"") && d.contains("\"state\""))
            .count(),
        3,
        "{audited:?}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_refused_browser_callback_goes_back_to_the_sign_in_page_with_its_code(db: PgPool) {
    let s = setup(db, &["oidc"], "just_in_time").await;
    let path = format!(
        "/api/v1/auth/oidc/{}/callback?code=stolen&state=forged",
        s.org
    );
    // A browser navigating here from the provider asks for HTML…
    let req = Request::builder()
        .uri(&path)
        .header("accept", "text/html,application/xhtml+xml")
        .body(Body::empty())
        .unwrap();
    let resp = s.w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        resp.headers().get("location").unwrap(),
        "/app/signin?error=sign_in_rejected"
    );
    // …an API client still gets the JSON error.
    let (status, text) = s.w.call_from(None, &[], "GET", &path, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("sign_in_rejected"), "{text}");
}
