//! WeChat sign-in through the router. WeChat's servers are an external
//! service no test can reach, so the HTTP exchanges run against a LOCAL
//! STAND-IN started by each test (an axum server on a loopback port) that
//! answers `sns/jscode2session`, `cgi-bin/token`, `sns/oauth2/access_token`
//! and `sns/userinfo` the way WeChat's documentation shows, errors
//! included (`errcode` 40029 for an unknown code, 40163 for a code used
//! twice). The user data and its session key are the example values
//! WeChat publishes (the WXBizDataCrypt demo), so the decryption runs on
//! WeChat's own ciphertext. The official account's authorisation page is
//! played by the test: it reads `state` and `redirect_uri` from the URL
//! Lectern sends the browser to and comes back with a code, as WeChat does.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{Request, StatusCode};
use axum::routing::get;
use axum::Json;
use http_body_util::BodyExt;
use lectern_identity::{IdentitySettings, SsoSettings, ThrottlePolicy};
use lectern_testkit::World;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

const MINI: &str = "wx4f4bc4dec97d474b"; // the app id of WeChat's published example
const OFFICIAL: &str = "wx00000000000000aa";
const SECRET: &str = "app-secret-never-shown";
const PLATFORM: &str = "open-platform-hospital";
const SESSION_KEY: &str = "tiihtNczf5v6AKRyjwEUhQ==";
const UNIONID: &str = "ocMvos6NjeKLIBqg5Mr9QjxrP1FA";
const IV: &str = "r7BXXKkLb8qrSNn05n0qiA==";
const ENCRYPTED: &str = "CiyLU1Aw2KjvrjMdj8YKliAjtP4gsMZMQmRzooG2xrDcvSnxIMXFufNstNGTyaGS9uT5geRa0W4oTOb1WT7fJlAC+oNPdbB+3hVbJSRgv+4lGOETKUQz6OYStslQ142dNCuabNPGBzlooOmB231qMM85d2/fV6ChevvXvQP8Hkue1poOFtnEtpyxVLW1zAo6/1Xx1COxFvrc2d7UL/lmHInNlxuacJXwu0fjpXfz/YqYzBIBzD6WUfTIF9GRHpOn/Hz7saL8xz+W//FRAUid1OksQaQx4CMs8LOddcQhULW4ucetDf96JcR3g0gfRK4PC7E/r7Z6xNrXd2UIeorGj5Ef7b1pJAYB6Y5anaHqZ9J6nKEBvB4DnNLIVWSgARns/8wR2SiRS7MNACwTyrGvt9ts8p12PKFdlqYTopNHR1Vf7XjfhQlVsAJdNiKdYmYVoKlaRv85IfVunYzO0IKXsyl7JCUjCpoG20f0a04COwfneQAGGwd5oa+T8yO5hzuyDb/XcxxmK01EpqOyuxINew==";

/// What the stand-in remembers.
#[derive(Default)]
struct WeChat {
    used: Mutex<HashSet<String>>,
    tokens_issued: AtomicUsize,
}

type Params = Query<HashMap<String, String>>;

fn error(code: i64, msg: &str) -> Json<Value> {
    Json(json!({ "errcode": code, "errmsg": msg }))
}

impl WeChat {
    /// A code is good once; the app's secret must be right.
    fn take(&self, q: &HashMap<String, String>, code_param: &str) -> Result<String, Json<Value>> {
        if q.get("secret").map(String::as_str) != Some(SECRET) {
            return Err(error(40125, "invalid appsecret"));
        }
        let code = q.get(code_param).cloned().unwrap_or_default();
        if !code.starts_with("code-") {
            return Err(error(40029, "invalid code"));
        }
        if !self.used.lock().unwrap().insert(code.clone()) {
            return Err(error(40163, "code been used"));
        }
        Ok(code.trim_start_matches("code-").to_owned())
    }
}

async fn jscode2session(State(wx): State<Arc<WeChat>>, Query(q): Params) -> Json<Value> {
    match wx.take(&q, "js_code") {
        Ok(who) => Json(json!({
            "openid": format!("mini-{who}"),
            "session_key": SESSION_KEY,
            "unionid": UNIONID,
        })),
        Err(e) => e,
    }
}

async fn token(State(wx): State<Arc<WeChat>>, Query(q): Params) -> Json<Value> {
    if q.get("secret").map(String::as_str) != Some(SECRET)
        || q.get("grant_type").map(String::as_str) != Some("client_credential")
    {
        return error(40125, "invalid appsecret");
    }
    let n = wx.tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({ "access_token": format!("ACCESS_TOKEN_{n}"), "expires_in": 7200 }))
}

async fn oauth2_access_token(State(wx): State<Arc<WeChat>>, Query(q): Params) -> Json<Value> {
    match wx.take(&q, "code") {
        Ok(who) => Json(json!({
            "access_token": format!("user-token-{who}"),
            "expires_in": 7200,
            "refresh_token": "REFRESH_TOKEN",
            "openid": format!("oa-{who}"),
            "scope": "snsapi_userinfo",
        })),
        Err(e) => e,
    }
}

async fn userinfo(Query(q): Params) -> Json<Value> {
    let Some(who) = q
        .get("access_token")
        .and_then(|t| t.strip_prefix("user-token-"))
    else {
        return error(
            40001,
            "invalid credential, access_token is invalid or not latest",
        );
    };
    Json(json!({
        "openid": q.get("openid"),
        "nickname": who,
        "sex": 1,
        "province": "PROVINCE",
        "city": "CITY",
        "country": "COUNTRY",
        "headimgurl": "https://thirdwx.qlogo.cn/mmopen/x/46",
        "privilege": [],
        "unionid": UNIONID,
    }))
}

struct Setup {
    w: World,
    org: Uuid,
    wx: Arc<WeChat>,
}

async fn setup(db: PgPool, methods: &[&str]) -> Setup {
    setup_with(db, methods, ThrottlePolicy::default()).await
}

async fn setup_with(db: PgPool, methods: &[&str], throttle: ThrottlePolicy) -> Setup {
    let wx = Arc::new(WeChat::default());
    let app = axum::Router::new()
        .route("/sns/jscode2session", get(jscode2session))
        .route("/cgi-bin/token", get(token))
        .route("/sns/oauth2/access_token", get(oauth2_access_token))
        .route("/sns/userinfo", get(userinfo))
        .with_state(wx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let w = World::with_settings(
        db,
        IdentitySettings {
            sso: SsoSettings {
                allow: "127.0.0.1".parse().unwrap(),
                allow_plain: true,
                wechat_api: base,
                wechat_open: "https://open.weixin.qq.com".into(),
                ..SsoSettings::default()
            },
            throttle,
            ..IdentitySettings::default()
        },
    )
    .await;
    let org = w.org("Hospital").await;
    sqlx::query("INSERT INTO sign_in_policies (org_id, methods, new_accounts) VALUES ($1, $2, 'just_in_time')")
        .bind(org)
        .bind(methods)
        .execute(w.db())
        .await
        .unwrap();
    w.user(
        Some(org),
        "admin@hospital.example",
        lectern_web::Role::SuperAdmin,
    )
    .await;
    let admin = w.login("admin@hospital.example").await;
    for (appid, kind) in [(MINI, "mini_program"), (OFFICIAL, "official_account")] {
        w.step_up(&admin, "admin@hospital.example").await;
        let (status, body) = w
            .call(
                "PUT",
                &format!("/api/v1/organisations/{org}/wechat-apps/{appid}"),
                Some(&admin),
                Some(json!({ "kind": kind, "secret": SECRET, "open_platform": PLATFORM })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(!body.to_string().contains(SECRET), "{body}");
    }
    // The public policy names the official account (the H5 app goes to
    // its authorisation inside WeChat), never the mini-program or a secret.
    let (status, body) = w
        .call(
            "GET",
            &format!("/api/v1/organisations/{org}/sign-in-policy"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["wechat_official_account"], OFFICIAL, "{body}");
    assert_eq!(body["oidc_issuer"], serde_json::Value::Null, "{body}");
    assert!(!body.to_string().contains(SECRET), "{body}");
    Setup { w, org, wx }
}

async fn mini_sign_in(w: &World, code: &str) -> (StatusCode, String) {
    w.call_raw(
        "POST",
        "/api/v1/auth/wechat/mini-program",
        None,
        Some(json!({ "appid": MINI, "code": code })),
    )
    .await
}

async fn everything_stored_and_logged(w: &World) -> Vec<String> {
    w.audit_flushed().await;
    sqlx::query_scalar("SELECT a::text FROM audit_log a")
        .fetch_all(w.db())
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_mini_program_code_signs_in_once_and_the_session_key_stays_on_the_server(db: PgPool) {
    let s = setup(db, &["wechat"]).await;
    let (status, text) = mini_sign_in(&s.w, "code-alice").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        !text.contains(SESSION_KEY) && !text.contains("code-alice"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["user"]["role"], "learner");
    let alice = body["user"]["id"].clone();
    let token = body["token"].as_str().unwrap().to_owned();

    // The same code again: WeChat refuses it, so does Lectern.
    let (status, text) = mini_sign_in(&s.w, "code-alice").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(
        text.contains("sign_in_rejected") && text.contains("40163"),
        "{text}"
    );
    let (status, text) = mini_sign_in(&s.w, "forged").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");

    // User data decrypts with the session key only the server holds.
    let (status, profile) =
        s.w.call(
            "POST",
            "/api/v1/me/wechat/user-data",
            Some(&token),
            Some(json!({ "encrypted_data": ENCRYPTED, "iv": IV })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    assert_eq!(profile["nick_name"], "Band");
    assert_eq!(profile["union_linked"], true);
    // A forged signature, or a tampered ciphertext, is refused.
    let (status, body) =
        s.w.call(
            "POST",
            "/api/v1/me/wechat/user-data",
            Some(&token),
            Some(json!({
                "encrypted_data": ENCRYPTED, "iv": IV,
                "raw_data": "{\"nickName\":\"Mallory\"}",
                "signature": "75e81ceda165f4ffa64f4068af58c64b8f54b88c",
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let tampered = ENCRYPTED.replacen("Ciy", "Dly", 1);
    let (status, _) =
        s.w.call(
            "POST",
            "/api/v1/me/wechat/user-data",
            Some(&token),
            Some(json!({ "encrypted_data": tampered, "iv": IV })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A second wx.login is the same person (the UnionID).
    let (_, text) = mini_sign_in(&s.w, "code-alice-2").await;
    assert_eq!(body_user(&text), alice);

    for row in everything_stored_and_logged(&s.w).await {
        assert!(
            !row.contains(SESSION_KEY) && !row.contains(SECRET) && !row.contains("code-alice"),
            "{row}"
        );
    }
    let stored: Vec<String> = sqlx::query_scalar("SELECT w::text FROM wechat_sessions w")
        .fetch_all(s.w.db())
        .await
        .unwrap();
    assert!(stored.iter().all(|r| !r.contains(SESSION_KEY)));
}

fn body_user(text: &str) -> Value {
    serde_json::from_str::<Value>(text).unwrap()["user"]["id"].clone()
}

#[sqlx::test(migrations = "../migrations")]
async fn the_official_account_authorises_with_state_bound_to_the_browser(db: PgPool) {
    let s = setup(db, &["wechat"]).await;
    // First through the mini-program: the UnionID's account.
    let (_, text) = mini_sign_in(&s.w, "code-bob").await;
    let mini_user = body_user(&text);

    let start = |scope: &'static str| {
        let w = &s.w;
        async move {
            let req = Request::get(format!(
                "/api/v1/auth/wechat/{OFFICIAL}/authorize?scope={scope}&return_to=/app/courses"
            ))
            .body(Body::empty())
            .unwrap();
            let resp = w.app.clone().oneshot(req).await.unwrap();
            assert_eq!(resp.status(), StatusCode::SEE_OTHER);
            let to = resp.headers()["location"].to_str().unwrap().to_owned();
            let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
            let cookie = cookie.split(';').next().unwrap().to_owned();
            (to, cookie)
        }
    };
    let (to, cookie) = start("snsapi_userinfo").await;
    assert!(
        to.starts_with("https://open.weixin.qq.com/connect/oauth2/authorize?"),
        "{to}"
    );
    assert!(to.ends_with("#wechat_redirect"), "{to}");
    let url = reqwest::Url::parse(&to).unwrap();
    let q: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["appid"], OFFICIAL);
    assert_eq!(q["scope"], "snsapi_userinfo");
    // The only redirect URI is Lectern's own callback.
    assert_eq!(
        q["redirect_uri"],
        format!("http://127.0.0.1:8080/api/v1/auth/wechat/{OFFICIAL}/callback")
    );
    // WeChat's page sends the browser back with a code and the state.
    let back = |code: &str, state: &str, cookie: &str| {
        let req = Request::get(format!(
            "/api/v1/auth/wechat/{OFFICIAL}/callback?code={code}&state={state}"
        ))
        .header("cookie", cookie.to_owned())
        .body(Body::empty())
        .unwrap();
        let app = s.w.app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // Another browser (another cookie) cannot use this state, and the
    // attempt uses it up.
    let (status, _, text) = back("code-bob", &q["state"], "lectern_wechat=not-this-browser").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    let (status, _, _) = back("code-bob", &q["state"], &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (to, cookie) = start("snsapi_userinfo").await;
    let state = reqwest::Url::parse(&to)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let (status, headers, text) = back("code-bob-oa", &state, &cookie).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{text}");
    assert_eq!(headers["location"], "/app/courses");
    let session = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("lectern_session=ls_"))
        .unwrap();
    let token = session
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("lectern_session=")
        .to_owned();
    let (_, me) = s.w.call("GET", "/api/v1/me", Some(&token), None).await;
    // The same person as through the mini-program: the UnionID.
    assert_eq!(me["id"], mini_user);
    // Replayed: refused.
    let (status, _, _) = back("code-bob-oa", &state, &cookie).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // snsapi_base, and a redirect off the site refused before WeChat.
    let (to, _) = start("snsapi_base").await;
    assert!(to.contains("scope=snsapi_base"));
    let req = Request::get(format!(
        "/api/v1/auth/wechat/{OFFICIAL}/authorize?return_to=//evil.example/"
    ))
    .body(Body::empty())
    .unwrap();
    let resp = s.w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_organisation_without_wechat_refuses_it(db: PgPool) {
    let s = setup(db, &["sms"]).await;
    let (status, text) = mini_sign_in(&s.w, "code-carol").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("sign_in_method_disabled"), "{text}");
    let (status, text) =
        s.w.call_raw(
            "GET",
            &format!("/api/v1/auth/wechat/{OFFICIAL}/authorize"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let _ = s.org;
}

#[sqlx::test(migrations = "../migrations")]
async fn the_access_token_is_shared_by_nodes_and_refreshed_before_it_expires(db: PgPool) {
    let mut s = setup(db, &["wechat"]).await;
    let node_a = s.w.state.identity.clone();
    let first = lectern_identity::wechat::access_token(&node_a, MINI)
        .await
        .unwrap();
    assert_eq!(first, "ACCESS_TOKEN_1");
    // Another node (its own memory, the same database) gets the same token.
    let mut settings = s.w.settings();
    settings.identity = IdentitySettings {
        sso: s.w.state.identity.settings.sso.clone(),
        ..IdentitySettings::default()
    };
    s.w.rebuild(None, settings);
    let node_b = s.w.state.identity.clone();
    assert_eq!(
        lectern_identity::wechat::access_token(&node_b, MINI)
            .await
            .unwrap(),
        "ACCESS_TOKEN_1"
    );
    assert_eq!(s.wx.tokens_issued.load(Ordering::SeqCst), 1);
    // Sealed at rest.
    let stored: String = sqlx::query_scalar("SELECT t::text FROM wechat_access_tokens t")
        .fetch_one(s.w.db())
        .await
        .unwrap();
    assert!(!stored.contains("ACCESS_TOKEN"));
    // Four minutes before it expires — inside the refresh margin — both
    // nodes asking at once cause one refresh, and both get the new token.
    sqlx::query("UPDATE wechat_access_tokens SET expires_at = now() + interval '4 minutes'")
        .execute(s.w.db())
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        lectern_identity::wechat::access_token(&node_a, MINI),
        lectern_identity::wechat::access_token(&node_b, MINI),
    );
    assert_eq!(a.unwrap(), "ACCESS_TOKEN_2");
    assert_eq!(b.unwrap(), "ACCESS_TOKEN_2");
    assert_eq!(s.wx.tokens_issued.load(Ordering::SeqCst), 2);
    // Six minutes before: still good, nothing fetched.
    sqlx::query("UPDATE wechat_access_tokens SET expires_at = now() + interval '6 minutes'")
        .execute(s.w.db())
        .await
        .unwrap();
    lectern_identity::wechat::access_token(&node_a, MINI)
        .await
        .unwrap();
    assert_eq!(s.wx.tokens_issued.load(Ordering::SeqCst), 2);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_mini_program_session_hands_the_h5_a_single_use_code(db: PgPool) {
    let s = setup(db, &["wechat"]).await;
    // The mini-program: wx.login's code exchanged, a bearer token kept
    // (wx.request has no cookie jar).
    let (status, text) = mini_sign_in(&s.w, "code-dora").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let mini: Value = serde_json::from_str(&text).unwrap();
    let token = mini["token"].as_str().unwrap();
    let (status, minted) =
        s.w.call("POST", "/api/v1/auth/handoff", Some(token), None)
            .await;
    assert_eq!(status, StatusCode::OK, "{minted}");
    let code = minted["code"].as_str().unwrap();
    // The web-view's page, with no session, redeems it once.
    let (status, page) =
        s.w.call(
            "POST",
            "/api/v1/auth/handoff/redeem",
            None,
            Some(json!({ "code": code, "org_id": s.org })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["user"]["id"], mini["user"]["id"]);
    assert_ne!(page["token"], mini["token"]);
    let (status, again) =
        s.w.call(
            "POST",
            "/api/v1/auth/handoff/redeem",
            None,
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::GONE, "{again}");
    // The web-view's session is an ordinary one: it has no session key
    // (user data stays the mini-program session's business).
    let (status, _) =
        s.w.call(
            "POST",
            "/api/v1/me/wechat/user-data",
            page["token"].as_str(),
            Some(json!({ "encrypted_data": ENCRYPTED, "iv": IV })),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for row in everything_stored_and_logged(&s.w).await {
        assert!(!row.contains(code) && !row.contains(SESSION_KEY), "{row}");
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn refused_codes_lock_the_address_before_wechat_is_asked(db: PgPool) {
    let s = setup_with(
        db,
        &["wechat"],
        ThrottlePolicy {
            address_failures: 3,
            ..ThrottlePolicy::default()
        },
    )
    .await;
    let from = |ip: &'static str, code: &'static str| {
        let w = &s.w;
        async move {
            w.call_from(
                Some(ip),
                &[],
                "POST",
                "/api/v1/auth/wechat/mini-program",
                None,
                Some(json!({ "appid": MINI, "code": code })),
            )
            .await
        }
    };
    const PHONE: &str = "203.0.113.7";
    // Two refused codes, then a good one: the success gives its own
    // attempt back but does not wipe the failures counted before it.
    for code in ["forged-1", "forged-2"] {
        let (status, text) = from(PHONE, code).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    }
    let (status, text) = from(PHONE, "code-erin").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // The third refusal (a replayed code) locks the address…
    let (status, text) = from(PHONE, "code-erin").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    // …so even a good code is refused, before WeChat is asked: the same
    // code still works from another address afterwards.
    let (status, text) = from(PHONE, "code-frank").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(text.contains("account_locked"), "{text}");
    let (status, text) = from("198.51.100.2", "code-frank").await;
    assert_eq!(status, StatusCode::OK, "{text}");

    // The official account's callback: a bad state counts the same way.
    for _ in 0..3 {
        let (status, text) =
            s.w.call_from(
                Some("192.0.2.44"),
                &[],
                "GET",
                &format!("/api/v1/auth/wechat/{OFFICIAL}/callback?code=code-x&state=guess"),
                None,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    }
    let (status, _) =
        s.w.call_from(
            Some("192.0.2.44"),
            &[],
            "GET",
            &format!("/api/v1/auth/wechat/{OFFICIAL}/callback?code=code-y&state=guess"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let rows = everything_stored_and_logged(&s.w).await;
    assert!(rows
        .iter()
        .any(|r| r.contains("wechat_mini_program") && r.contains("locked_out")));
    assert!(rows
        .iter()
        .any(|r| r.contains("wechat_official_account") && r.contains("locked_out")));
}
