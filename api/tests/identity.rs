//! Identity end to end through the router, on a real PostgreSQL database
//! per test: sign-in, encryption at rest and key rotation, throttling,
//! step-up, the audit chain, invitations and partner keys.

use axum::http::StatusCode;
use lectern_identity::audit;
use lectern_identity::users;
use lectern_testkit::{World, PASSWORD};
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use totp_rs::{Algorithm, Secret, TOTP};

#[sqlx::test(migrations = "../migrations")]
async fn sign_in_gives_a_token_and_a_hardened_cookie_and_logout_revokes_it(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "Learner@Example.org", Role::Learner)
        .await;

    let (status, text) = w
        .call_raw(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "learner@example.org", "password": "wrong password 1" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    assert!(text.contains("invalid_credentials"), "{text}");

    let req = axum::http::Request::post("/api/v1/auth/login")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            json!({ "email": " LEARNER@example.org ", "password": PASSWORD }).to_string(),
        ))
        .unwrap();
    let resp = tower::ServiceExt::oneshot(w.app.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in [
        "lectern_session=ls_",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let token = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("lectern_session=")
        .to_string();

    // The cookie alone authenticates a browser.
    let req = axum::http::Request::get("/api/v1/me")
        .header("cookie", format!("theme=dark; lectern_session={token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(w.app.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let (status, me) = w.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["email"], "learner@example.org");
    assert_eq!(me["role"], "learner");
    assert_eq!(me["org_id"], org.to_string());

    let (status, _) = w
        .call("POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Signing out everywhere ends every other session too.
    let phone = w.login("learner@example.org").await;
    let laptop = w.login("learner@example.org").await;
    let (status, body) = w
        .call("POST", "/api/v1/me/sessions/revoke", Some(&phone), None)
        .await;
    assert_eq!(
        (status, body["revoked"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    let (status, _) = w.call("GET", "/api/v1/me", Some(&laptop), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = w.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthenticated");

    let (status, body) = w.call_raw("POST", "/api/v1/auth/login", None, None).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body.contains("unsupported_media_type"),
        "JSON error for a missing body: {body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn personal_data_is_encrypted_at_rest_and_rotate_keys_reseals_every_row(db: PgPool) {
    let old = lectern_secrets::Keyring::generate_settings();
    let w = World::with_keys(db.clone(), old.clone()).await;
    let org = w.org("Alumni Office").await;
    for i in 0..7 {
        w.user(
            Some(org),
            &format!("person{i}@alumni.example.edu"),
            Role::Learner,
        )
        .await;
    }
    let token = w.login("person3@alumni.example.edu").await;
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/me/totp",
            Some(&token),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Raw SQL sees no plaintext in any column of any row.
    let dump: Vec<String> = sqlx::query_scalar("SELECT u::text FROM users u")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(dump.len(), 7);
    for row in &dump {
        assert!(!row.contains("alumni"), "plaintext in {row}");
        assert!(!row.contains("person"), "plaintext in {row}");
    }
    let hex_email = hex::encode("person3@alumni.example.edu");
    assert!(!dump.iter().any(|r| r.contains(&hex_email)));

    // A new active key k2; k1 still opens the old rows until rotation.
    let new = lectern_secrets::Keyring::generate_settings();
    let rotated = (
        format!("{},{}", new.0.replacen("k1:", "k2:", 1), old.0),
        old.1.clone(),
        old.2.clone(),
    );
    let w2 = World::with_keys(db.clone(), rotated).await;
    let changed = users::rotate_keys(&db, &w2.keys, 3).await.unwrap();
    assert_eq!(changed, 7, "every row re-encrypted, in batches of 3");
    let key_ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT key_id FROM users")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(key_ids, vec!["k2".to_string()]);
    assert_eq!(
        users::rotate_keys(&db, &w2.keys, 3).await.unwrap(),
        0,
        "idempotent"
    );

    // With k1 gone entirely, every row still opens and sign-in by email works.
    let only_new = (new.0.replacen("k1:", "k2:", 1), old.1, old.2);
    let w3 = World::with_keys(db.clone(), only_new).await;
    let admin = w3
        .user(Some(org), "admin@alumni.example.edu", Role::ContentAdmin)
        .await;
    let token = w3.login("person5@alumni.example.edu").await;
    let (status, me) = w3.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "person5@alumni.example.edu");
    let admin_token = w3.login("admin@alumni.example.edu").await;
    let (status, list) = w3
        .call("GET", "/api/v1/users", Some(&admin_token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["users"].as_array().unwrap().len(), 8);
    let _ = admin;
}

/// With a syslog receiver configured, the lockout's alert also reaches it
/// as an RFC 5424 message a SIEM can parse, with no personal data.
#[sqlx::test(migrations = "../migrations")]
async fn a_security_alert_reaches_the_configured_syslog_receiver(db: PgPool) {
    let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let identity = lectern_identity::IdentitySettings {
        alert_syslog: Some(receiver.local_addr().unwrap()),
        ..Default::default()
    };
    let w = World::with_settings(db, identity).await;
    let org = w.org("SME Centre").await;
    w.user(Some(org), "owner@sme.example.cn", Role::Learner)
        .await;
    for attempt in 0..5 {
        let body =
            json!({ "email": "owner@sme.example.cn", "password": format!("guess {attempt}") });
        w.call("POST", "/api/v1/auth/login", None, Some(body)).await;
    }
    let mut datagram = vec![0u8; 4096];
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        receiver.recv(&mut datagram),
    )
    .await
    .expect("no syslog message within 10 s")
    .unwrap();
    let message = String::from_utf8(datagram[..n].to_vec()).unwrap();
    let fields: Vec<&str> = message.splitn(7, ' ').collect();
    assert_eq!(fields[0], "<84>1", "{message}");
    assert!(
        chrono::DateTime::parse_from_rfc3339(fields[1]).is_ok(),
        "{message}"
    );
    assert_eq!(
        (fields[3], fields[5]),
        ("lectern", "brute_force"),
        "{message}"
    );
    assert!(
        fields[6].starts_with("[lectern@32473 kind=\"brute_force\""),
        "{message}"
    );
    assert!(!message.contains("owner@"), "no personal data: {message}");
}

#[sqlx::test(migrations = "../migrations")]
async fn twenty_wrong_passwords_lock_the_account_raise_an_alert_and_refuse_the_right_one(
    db: PgPool,
) {
    let w = World::new(db.clone()).await;
    let org = w.org("SME Centre").await;
    w.user(Some(org), "owner@sme.example.cn", Role::Learner)
        .await;
    let mut statuses = Vec::new();
    for attempt in 0..20 {
        let (status, body) = w
            .call("POST", "/api/v1/auth/login", None, Some(json!({ "email": "owner@sme.example.cn", "password": format!("guess number {attempt}") })))
            .await;
        statuses.push((
            status.as_u16(),
            body["error"]["code"].as_str().unwrap_or("").to_string(),
        ));
    }
    println!("attempt statuses: {statuses:?}");
    assert!(statuses[..5]
        .iter()
        .all(|(s, c)| *s == 401 && c == "invalid_credentials"));
    assert!(statuses[5..]
        .iter()
        .all(|(s, c)| *s == 429 && c == "account_locked"));

    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "owner@sme.example.cn", "password": PASSWORD })),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password during lockout: {body}"
    );
    assert_eq!(body["error"]["code"], "account_locked");

    let alerts: Vec<(String, String)> = sqlx::query_as("SELECT kind, detail FROM security_alerts")
        .fetch_all(&db)
        .await
        .unwrap();
    println!("alerts: {alerts:?}");
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].0, "brute_force");
    assert!(
        !alerts[0].1.contains("owner@"),
        "no personal data in alerts"
    );

    let outcomes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM audit_log WHERE action = 'auth.login' GROUP BY outcome ORDER BY outcome",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        vec![("denied".to_string(), 16), ("failed".to_string(), 5)]
    );

    // Unknown emails are throttled the same way: no account enumeration.
    for _ in 0..6 {
        w.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "nobody@sme.example.cn", "password": "whatever 123456" })),
        )
        .await;
    }
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "nobody@sme.example.cn", "password": "x" })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let root = w.user(None, "root@lectern.example", Role::SuperAdmin).await;
    let token = w.login("root@lectern.example").await;
    let (status, metrics) = w.call_raw("GET", "/metrics", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        metrics.contains("lectern_security_alerts_total{kind=\"brute_force\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("lectern_logins_total{outcome=\"locked\"} 18"),
        "{metrics}"
    );
    let _ = root;
}

/// `lectern_password_verifications_total` now: argon2 checks so far.
async fn password_verifications(w: &World, admin_token: &str) -> u64 {
    let (status, metrics) = w.call_raw("GET", "/metrics", Some(admin_token), None).await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("lectern_password_verifications_total "))
        .unwrap_or_else(|| panic!("no password verification counter in {metrics}"))
        .parse()
        .unwrap()
}

/// `n` requests at once, each `POST path` with its body, as if from TCP
/// peer `peer` (an address with its port); each answer's status, error
/// code and `Retry-After`.
async fn burst(
    w: &World,
    peer: std::net::SocketAddr,
    path: &'static str,
    token: Option<&str>,
    bodies: Vec<serde_json::Value>,
) -> Vec<(u16, String, Option<u64>)> {
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let mut requests = tokio::task::JoinSet::new();
    for body in bodies {
        let app = w.app.clone();
        let token = token.map(str::to_owned);
        requests.spawn(async move {
            let mut req = Request::post(path).header("content-type", "application/json");
            if let Some(token) = token {
                req = req.header("authorization", format!("Bearer {token}"));
            }
            let mut req = req.body(Body::from(body.to_string())).unwrap();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let resp = app.oneshot(req).await.unwrap();
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            lectern_testkit::assert_error_vocabulary(status, &text);
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or("").to_owned();
            (status.as_u16(), code, retry_after)
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = requests.join_next().await {
        answers.push(answer.unwrap());
    }
    answers
}

/// Counts answers by (status, code).
fn tally(answers: &[(u16, String, Option<u64>)]) -> std::collections::BTreeMap<(u16, &str), usize> {
    let mut counts = std::collections::BTreeMap::new();
    for (status, code, _) in answers {
        *counts.entry((*status, code.as_str())).or_insert(0) += 1;
    }
    counts
}

/// Issue #16 item 7: the lockout decision and the failure count were two
/// steps with argon2 between them, so 50 wrong passwords sent at once were
/// all checked (and all answered `invalid_credentials`). Now at most the
/// limit (5) are checked, for a real account and an unknown email alike;
/// the rest are refused without argon2.
#[sqlx::test(migrations = "../migrations")]
async fn fifty_parallel_wrong_passwords_get_at_most_five_checks(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("SME Centre").await;
    w.user(Some(org), "owner@sme.example.cn", Role::Learner)
        .await;
    w.user(None, "root@lectern.example", Role::SuperAdmin).await;
    let root = w.login("root@lectern.example").await;
    let peer: std::net::SocketAddr = "198.51.100.20:40000".parse().unwrap();

    for email in ["owner@sme.example.cn", "nobody@sme.example.cn"] {
        let before = password_verifications(&w, &root).await;
        let guesses = (0..50)
            .map(|i| json!({ "email": email, "password": format!("guess number {i}") }))
            .collect();
        let answers = burst(&w, peer, "/api/v1/auth/login", None, guesses).await;
        let checked = password_verifications(&w, &root).await - before;
        let counts = tally(&answers);
        println!("{email}: {counts:?}, {checked} argon2 checks");
        let wrong = counts
            .get(&(401, "invalid_credentials"))
            .copied()
            .unwrap_or(0);
        let locked = counts.get(&(429, "account_locked")).copied().unwrap_or(0);
        assert!(
            wrong <= 5,
            "{email}: {wrong} guesses were checked: {counts:?}"
        );
        assert_eq!(wrong + locked, 50, "{email}: {counts:?}");
        assert!(checked <= 5, "{email}: {checked} argon2 checks");
        assert_eq!(
            checked, wrong as u64,
            "{email}: one check per guess answered"
        );
        for (status, _, retry_after) in &answers {
            if *status == 429 {
                assert!(
                    retry_after.is_some_and(|s| (1..=900).contains(&s)),
                    "{retry_after:?}"
                );
            }
        }
        // The right password is refused too while the account is locked.
        let (status, body) = w
            .call(
                "POST",
                "/api/v1/auth/login",
                None,
                Some(json!({ "email": email, "password": PASSWORD })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("account_locked"))
        );
    }
    // One alert per lock, for the real account and the unknown email.
    let alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM security_alerts WHERE kind = 'brute_force'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(alerts, 2);
}

/// A right password forgets the account's failures and does not count
/// against the address; the limit then allows five wrong ones again.
#[sqlx::test(migrations = "../migrations")]
async fn a_right_password_clears_the_account_and_gives_the_address_its_attempt_back(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("SME Centre").await;
    w.user(Some(org), "owner@sme.example.cn", Role::Learner)
        .await;
    let from = Some("192.0.2.40");
    let login =
        |password: &str| Some(json!({ "email": "owner@sme.example.cn", "password": password }));
    let failures = |subject: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i32>("SELECT failures FROM login_throttle WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&db)
                .await
                .unwrap()
        }
    };
    for _ in 0..4 {
        let (status, _) = w
            .call_from(
                from,
                &[],
                "POST",
                "/api/v1/auth/login",
                None,
                login("wrong guess 1"),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(failures("ip:192.0.2.40").await, Some(4));
    let (status, _) = w
        .call_from(
            from,
            &[],
            "POST",
            "/api/v1/auth/login",
            None,
            login(PASSWORD),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        failures("ip:192.0.2.40").await,
        Some(4),
        "the success is not counted"
    );
    let accounts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_throttle WHERE subject LIKE 'email:%'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(accounts, 0, "the account's failures are forgotten");
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, _) = w
            .call_from(
                from,
                &[],
                "POST",
                "/api/v1/auth/login",
                None,
                login("wrong guess 2"),
            )
            .await;
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
}

/// An IPv6 client has a /64 to pick addresses from: it is counted by it.
#[sqlx::test(migrations = "../migrations")]
async fn an_ipv6_client_is_throttled_by_its_64(db: PgPool) {
    let identity = lectern_identity::IdentitySettings {
        throttle: lectern_identity::ThrottlePolicy {
            address_failures: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let w = World::with_settings(db, identity).await;
    let org = w.org("SME Centre").await;
    w.user(Some(org), "owner@sme.example.cn", Role::Learner)
        .await;
    let login = |email: &str, password: &str| Some(json!({ "email": email, "password": password }));
    for (i, host) in [
        "[2001:db8:1:2::a]",
        "[2001:db8:1:2:ffff::b]",
        "[2001:db8:1:2::c]",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, _) = w
            .call_from(
                Some(host),
                &[],
                "POST",
                "/api/v1/auth/login",
                None,
                login(&format!("spray{i}@sme.example.cn"), "spring 2026 pw"),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let from = |host| {
        w.call_from(
            Some(host),
            &[],
            "POST",
            "/api/v1/auth/login",
            None,
            login("owner@sme.example.cn", PASSWORD),
        )
    };
    assert_eq!(
        from("[2001:db8:1:2::d]").await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(from("[2001:db8:1:3::a]").await.0, StatusCode::OK);
    // An IPv4 client seen through an IPv6 socket is counted as IPv4.
    assert_eq!(from("[::ffff:192.0.2.9]").await.0, StatusCode::OK);
}

/// The password given again from a session (enrolling an authenticator)
/// is throttled as sign-in is, in one step too.
#[sqlx::test(migrations = "../migrations")]
async fn parallel_wrong_passwords_from_a_session_get_at_most_five_checks(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "chief@med.example.org", Role::SuperAdmin)
        .await;
    let session = w.login("chief@med.example.org").await;
    w.user(None, "root@lectern.example", Role::SuperAdmin).await;
    let root = w.login("root@lectern.example").await;
    let before = password_verifications(&w, &root).await;
    let guesses = (0..20)
        .map(|i| json!({ "password": format!("guess number {i}") }))
        .collect();
    let peer = "198.51.100.21:40000".parse().unwrap();
    let answers = burst(&w, peer, "/api/v1/me/totp", Some(&session), guesses).await;
    let checked = password_verifications(&w, &root).await - before;
    let counts = tally(&answers);
    println!("{counts:?}, {checked} argon2 checks");
    let wrong = counts.get(&(403, "wrong_password")).copied().unwrap_or(0);
    let locked = counts.get(&(429, "account_locked")).copied().unwrap_or(0);
    assert!(wrong <= 5, "{counts:?}");
    assert_eq!(wrong + locked, 20, "{counts:?}");
    assert!(checked <= 5, "{checked} argon2 checks");
}

fn totp_for(secret_base32: &str) -> TOTP {
    let secret = Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .unwrap();
    TOTP::new_unchecked(Algorithm::SHA1, 6, 1, 30, secret)
}

fn one_time_code(message: &str) -> String {
    message
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .unwrap_or_else(|| panic!("no code in {message:?}"))
        .to_string()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[sqlx::test(migrations = "../migrations")]
async fn critical_operations_need_a_fresh_single_use_step_up(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    let other = w.org("Alumni Office").await;
    w.user(Some(org), "chief@med.example.org", Role::SuperAdmin)
        .await;
    let victim = w
        .user(Some(org), "leaver@med.example.org", Role::Learner)
        .await;
    let second = w
        .user(Some(org), "second@med.example.org", Role::Learner)
        .await;
    let foreign = w
        .user(Some(other), "someone@alumni.example.edu", Role::Learner)
        .await;
    let token = w.login("chief@med.example.org").await;

    let delete = format!("/api/v1/users/{victim}");
    let (status, body) = w.call("DELETE", &delete, Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "step_up_required");

    let (status, enrolment) = w
        .call(
            "POST",
            "/api/v1/me/totp",
            Some(&token),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enrolment}");
    let totp = totp_for(enrolment["secret"].as_str().unwrap());
    // Confirm with the previous step's code, so the current one is fresh.
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&token),
            Some(json!({ "code": totp.generate(now() - 30) })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "totp": "000000" })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let code = totp.generate(now());
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "totp": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w.call("DELETE", &delete, Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    let audited: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT outcome, actor, target FROM audit_log WHERE action = 'DELETE /api/v1/users/{user_id}' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(audited.len(), 2, "{audited:?}");
    assert_eq!(audited[0].0, "denied");
    assert_eq!(audited[1].0, "ok");
    assert_eq!(audited[1].2.as_deref(), Some(delete.as_str()));

    // The grant was single use, and so is the code.
    let (status, body) = w
        .call(
            "DELETE",
            &format!("/api/v1/users/{second}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_required"))
    );
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "totp": code })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a reused code: {body}");
    assert_eq!(body["error"]["code"], "invalid_code");

    // A one-time code through the notifier works too, once.
    let (status, _) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let one_time = one_time_code(&w.last_message("chief@med.example.org").await);
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "code": one_time })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w
        .call(
            "PUT",
            &format!("/api/v1/users/{second}/role"),
            Some(&token),
            Some(json!({ "role": "expert" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "expert");
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "code": one_time })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another organisation's user is not found, even with a valid step-up.
    w.call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
        .await;
    let one_time = one_time_code(&w.last_message("chief@med.example.org").await);
    w.call(
        "POST",
        "/api/v1/auth/step-up",
        Some(&token),
        Some(json!({ "code": one_time })),
    )
    .await;
    let (status, body) = w
        .call(
            "DELETE",
            &format!("/api/v1/users/{foreign}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_audit_chain_is_append_only_and_names_an_edited_row(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "a@med.example.org", Role::Learner).await;
    for _ in 0..3 {
        let token = w.login("a@med.example.org").await;
        w.call("POST", "/api/v1/auth/logout", Some(&token), None)
            .await;
    }
    let report = audit::verify(&db, Some(&w.chain_key())).await.unwrap();
    assert_eq!(report.first_bad_row, None);
    assert!(report.rows_checked >= 6, "{report:?}");

    let refused = sqlx::query("UPDATE audit_log SET outcome = 'ok' WHERE id = 2")
        .execute(&db)
        .await;
    assert!(refused.unwrap_err().to_string().contains("append-only"));
    let refused = sqlx::query("DELETE FROM audit_log WHERE id = 2")
        .execute(&db)
        .await;
    assert!(refused.is_err());

    // Someone with the power to drop the trigger edits row 4 by hand.
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_log SET ip = '10.9.9.9' WHERE id = 4")
        .execute(&db)
        .await
        .unwrap();
    let report = audit::verify(&db, Some(&w.chain_key())).await.unwrap();
    assert_eq!(report.first_bad_row, Some(4));
}

#[sqlx::test(migrations = "../migrations")]
async fn a_retention_purge_keeps_the_rest_of_the_chain_verifiable(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "a@med.example.org", Role::Learner).await;
    for _ in 0..4 {
        w.login("a@med.example.org").await;
    }
    // Age the first two rows (the test stands in for the passing of time).
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&db)
        .await
        .unwrap();
    let rows: Vec<audit::AuditRow> = sqlx::query_as("SELECT * FROM audit_log ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        8,
        "each sign-in: the request and the sign-in event"
    );
    sqlx::query("UPDATE audit_log SET at = at - interval '400 days' WHERE id <= 2")
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only")
        .execute(&db)
        .await
        .unwrap();
    // Aged rows no longer match their hashes, but they are about to go.
    assert_eq!(audit::purge(&db, 180).await.unwrap(), 2);
    let report = audit::verify(&db, Some(&w.chain_key())).await.unwrap();
    assert_eq!(
        report,
        audit::ChainReport {
            rows_checked: 6,
            first_bad_row: None,
            head: Some(8),
        }
    );
    w.login("a@med.example.org").await;
    assert_eq!(
        audit::verify(&db, Some(&w.chain_key()))
            .await
            .unwrap()
            .first_bad_row,
        None
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expert_invitation_is_signed_single_use_and_makes_an_expert(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "editor@med.example.org", Role::ContentAdmin)
        .await;
    let token = w.login("editor@med.example.org").await;

    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations",
            Some(&token),
            Some(json!({ "email": "Dr.Wang@hospital.example.cn" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        body.get("token").is_none(),
        "the token goes to the invitee only"
    );
    let message = w.last_message("dr.wang@hospital.example.cn").await;
    let invite = token_in(&message);

    let mut forged = invite.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": String::from_utf8(forged).unwrap(), "password": PASSWORD })),
        )
        .await;
    // A forged token is refused like a forged playback token: one code,
    // one status.
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_token"))
    );

    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": invite, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "expert");
    let expert = w.login("dr.wang@hospital.example.cn").await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&expert), None).await;
    assert_eq!(
        (me["role"].as_str(), me["org_id"].as_str()),
        (Some("expert"), Some(org.to_string().as_str()))
    );

    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": invite, "password": PASSWORD })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GONE, Some("invitation_used"))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn partner_keys_are_hashed_scoped_and_revocable(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Video Partner Ltd").await;
    let (key_id, key) = users::create_partner_key(&db, org, "uploads")
        .await
        .unwrap();
    assert!(key.starts_with("lk_") && key.len() > 40);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM partner_keys")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_ne!(stored, key.as_bytes());

    let (status, me) = w.call("GET", "/api/v1/me", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (me["role"].as_str(), me["org_id"].as_str()),
        (Some("partner"), Some(org.to_string().as_str()))
    );
    // A key is not a person: no step-up, no session routes.
    let (status, _) = w.call("POST", "/api/v1/me/totp", Some(&key), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    assert!(users::revoke_partner_key(&db, key_id).await.unwrap());
    let (status, _) = w.call("GET", "/api/v1/me", Some(&key), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[sqlx::test(migrations = "../migrations")]
async fn addresses_are_throttled_and_new_networks_raise_an_alert(db: PgPool) {
    let identity = lectern_identity::IdentitySettings {
        trusted_proxies: lectern_identity::TrustedProxies::parse("10.0.0.1").unwrap(),
        ..Default::default()
    };
    let w = World::with_settings(db.clone(), identity).await;
    let org = w.org("SME Centre").await;
    w.user(Some(org), "owner@sme.example.cn", Role::Learner)
        .await;
    let login = |email: &str, password: &str| Some(json!({ "email": email, "password": password }));

    // The first sign-in has nothing to compare with; the same /24 is home.
    for ip in ["198.51.100.5", "198.51.100.77"] {
        let (status, _) = w
            .call_from(
                Some(ip),
                &[],
                "POST",
                "/api/v1/auth/login",
                None,
                login("owner@sme.example.cn", PASSWORD),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let alerts: i64 = sqlx::query_scalar("SELECT count(*) FROM security_alerts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(alerts, 0);
    // Behind the trusted proxy, the forwarded address is the client's.
    let (status, _) = w
        .call_from(
            Some("10.0.0.1"),
            &[("x-forwarded-for", "203.0.113.9")],
            "POST",
            "/api/v1/auth/login",
            None,
            login("owner@sme.example.cn", PASSWORD),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let alert: (String, Option<String>) = sqlx::query_as("SELECT kind, ip FROM security_alerts")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        alert,
        ("new_ip_range".to_string(), Some("203.0.113.9".to_string()))
    );
    // An untrusted peer cannot choose its address by header.
    w.call_from(
        Some("192.0.2.1"),
        &[("x-forwarded-for", "198.51.100.5")],
        "POST",
        "/api/v1/auth/login",
        None,
        login("owner@sme.example.cn", PASSWORD),
    )
    .await;
    let last_ip: String =
        sqlx::query_scalar("SELECT ip FROM sessions ORDER BY created_at DESC LIMIT 1")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(last_ip, "192.0.2.1");

    // Fifty failures from one address, each on a different account, lock
    // the address — but not the accounts, nor other addresses.
    for i in 0..50 {
        let (status, _) = w
            .call_from(
                Some("192.0.2.66"),
                &[],
                "POST",
                "/api/v1/auth/login",
                None,
                login(&format!("spray{i}@sme.example.cn"), "spring 2026 pw"),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let (status, _) = w
        .call_from(
            Some("192.0.2.66"),
            &[],
            "POST",
            "/api/v1/auth/login",
            None,
            login("owner@sme.example.cn", PASSWORD),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = w
        .call_from(
            Some("192.0.2.67"),
            &[],
            "POST",
            "/api/v1/auth/login",
            None,
            login("owner@sme.example.cn", PASSWORD),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let brute: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM security_alerts WHERE kind = 'brute_force' AND ip = '192.0.2.66'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(brute, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn concurrent_audit_writers_never_fork_the_chain(db: PgPool) {
    // Forty requests' rows through the batching writer and ten operator
    // commands' rows appended directly, all at once: one chain.
    let key = audit::ChainKey::new([7; 32]);
    let metrics = std::sync::Arc::new(lectern_identity::SecurityMetrics::default());
    let writer = std::sync::Arc::new(audit::AuditWriter::start(
        db.clone(),
        Some(key.clone()),
        metrics,
    ));
    let event = |name: String| audit::AuditEvent {
        action: name,
        outcome: "ok",
        ..Default::default()
    };
    let mut tasks = Vec::new();
    for i in 0..40 {
        let writer = writer.clone();
        let event = event(format!("test.request-{i}"));
        tasks.push(tokio::spawn(async move { writer.record(event).await }));
    }
    for i in 0..10 {
        let (db, key) = (db.clone(), key.clone());
        let event = event(format!("test.cli-{i}"));
        tasks.push(tokio::spawn(async move {
            audit::record(&db, Some(&key), &event).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(ids, (1..=50).collect::<Vec<i64>>());
    let report = audit::verify(&db, Some(&key)).await.unwrap();
    assert_eq!(
        report,
        audit::ChainReport {
            rows_checked: 50,
            first_bad_row: None,
            head: Some(50),
        }
    );
    // The chain is keyed: with another key nothing verifies.
    let other = audit::ChainKey::new([8; 32]);
    assert_eq!(
        audit::verify(&db, Some(&other))
            .await
            .unwrap()
            .first_bad_row,
        Some(1)
    );
}

/// The token of the link in an invitation or confirmation message.
fn token_in(message: &str) -> String {
    lectern_testkit::link_token(message)
}

#[sqlx::test(migrations = "../migrations")]
async fn self_sign_up_is_opt_in_proves_the_email_and_answers_alike_for_known_emails(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Alumni Office").await;
    w.user(Some(org), "known@alumni.example.edu", Role::Learner)
        .await;
    let signup = |email: &str, password: &str| {
        Some(json!({ "org_id": org, "email": email, "password": password }))
    };
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("new@alumni.example.edu", PASSWORD),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("signup_disabled")),
        "self sign-up is off until the organisation turns it on: {body}"
    );
    sqlx::query("UPDATE organisations SET self_signup = true WHERE id = $1")
        .bind(org)
        .execute(&db)
        .await
        .unwrap();

    // The policy is checked up front, whoever the email belongs to.
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("new@alumni.example.edu", "short1"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("weak_password"))
    );
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("not-an-email", PASSWORD),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_email"))
    );

    // A known and an unknown email get the same answer.
    let known = w
        .call_raw(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("KNOWN@alumni.example.edu", PASSWORD),
        )
        .await;
    let unknown = w
        .call_raw(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("new@alumni.example.edu", PASSWORD),
        )
        .await;
    assert_eq!(known.0, StatusCode::ACCEPTED, "{}", known.1);
    assert_eq!(
        known, unknown,
        "the answer reveals whether the email exists"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&unknown.1).unwrap(),
        json!({ "status": "confirmation_sent" })
    );
    // The owner of the known address hears of it; nothing is created.
    let notice = w.last_message("known@alumni.example.edu").await;
    assert!(notice.contains("already has one"), "{notice}");
    // No account until the address is proven.
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": "new@alumni.example.edu", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let confirm = |token: &str| Some(json!({ "token": token }));
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup/confirm",
            None,
            confirm("su_forged"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_token"))
    );
    let message = w.last_message("new@alumni.example.edu").await;
    // The link opens the learner app's confirmation page.
    assert!(message.contains("/app/signup/confirm?token="), "{message}");
    let token = token_in(&message);
    let (status, body) = w
        .call("POST", "/api/v1/auth/signup/confirm", None, confirm(&token))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        (body["role"].as_str(), body["org_id"].as_str()),
        (Some("learner"), Some(org.to_string().as_str()))
    );
    let learner = w.login("new@alumni.example.edu").await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&learner), None).await;
    assert_eq!(me["role"], "learner");
    let (status, body) = w
        .call("POST", "/api/v1/auth/signup/confirm", None, confirm(&token))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::GONE, Some("confirmation_expired"))
    );
    let (status, _) = w
        .call("POST", "/api/v1/auth/signup", None, Some(json!({ "org_id": uuid::Uuid::nil(), "email": "x@y.example", "password": PASSWORD })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Account pre-hijacking: the attacker signs up with the victim's email
/// and a password of their own before the victim is invited.
#[sqlx::test(migrations = "../migrations")]
async fn a_sign_up_in_the_victims_name_never_reaches_their_expert_account(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "chief@med.example.org", Role::SuperAdmin)
        .await;
    w.user(Some(org), "editor@med.example.org", Role::ContentAdmin)
        .await;
    let victim = "dr.li@hospital.example.cn";
    let attackers = "attacker chose 99";

    // The organisation opens self sign-up (a role-granting setting: step-up).
    // Statuses are asserted after the scenario, so that without the
    // defence the failure names what went wrong.
    let chief = w.login("chief@med.example.org").await;
    w.step_up(&chief, "chief@med.example.org").await;
    let opened = w
        .call(
            "PUT",
            &format!("/api/v1/organisations/{org}/signup"),
            Some(&chief),
            Some(json!({ "enabled": true })),
        )
        .await;
    let signed_up = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({ "org_id": org, "email": victim, "password": attackers })),
        )
        .await;

    let editor = w.login("editor@med.example.org").await;
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations",
            Some(&editor),
            Some(json!({ "email": victim })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let invite = token_in(&w.last_message(victim).await);
    let accepted = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": invite, "password": PASSWORD })),
        )
        .await;

    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": victim, "password": attackers })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "the attacker's password reached the expert account: {body}"
    );

    assert_eq!(opened.0, StatusCode::OK, "{}", opened.1);
    assert_eq!(
        opened.1,
        json!({ "org_id": org, "enabled": true }),
        "{}",
        opened.1
    );
    assert_eq!(signed_up.0, StatusCode::ACCEPTED, "{}", signed_up.1);
    assert_eq!(accepted.0, StatusCode::OK, "{}", accepted.1);
    let expert = w.login(victim).await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&expert), None).await;
    assert_eq!(me["role"], "expert");
    // The attacker's pending sign-up cannot be confirmed into anything now.
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM signup_requests WHERE confirmed_at IS NULL")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(pending, 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_invitation_raises_an_account_as_it_is_only_if_its_owner_proved_the_email(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "editor@med.example.org", Role::ContentAdmin)
        .await;
    let editor = w.login("editor@med.example.org").await;
    let invite = |email: &'static str| {
        let (w, editor) = (&w, editor.clone());
        async move {
            let (status, body) = w
                .call(
                    "POST",
                    "/api/v1/invitations",
                    Some(&editor),
                    Some(json!({ "email": email })),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            token_in(&w.last_message(email).await)
        }
    };
    let accept =
        |body: serde_json::Value| w.call("POST", "/api/v1/invitations/accept", None, Some(body));

    // An operator created this learner and chose its password: whoever
    // holds it (here, someone already signed in with it) is not
    // necessarily the person behind the email.
    let learner = "learner@med.example.org";
    w.user(Some(org), learner, Role::Learner).await;
    let holder = w.login(learner).await;
    let token = invite(learner).await;
    let (status, body) = accept(json!({ "token": token })).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("password_required")),
        "an account whose password the invitee did not set was raised: {body}"
    );
    let (status, body) = accept(json!({ "token": token, "password": "the invitee's own 7" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["role"], "expert");
    let (status, _) = w.call("GET", "/api/v1/me", Some(&holder), None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the earlier holder is signed out"
    );
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": learner, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old password is gone");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({ "email": learner, "password": "the invitee's own 7" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["role"], "expert");

    // A learner who signed up and proved the address keeps the password.
    sqlx::query("UPDATE organisations SET self_signup = true WHERE id = $1")
        .bind(org)
        .execute(&db)
        .await
        .unwrap();
    let proven = "proven@med.example.org";
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({ "org_id": org, "email": proven, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let confirmation = token_in(&w.last_message(proven).await);
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/signup/confirm",
            None,
            Some(json!({ "token": confirmation })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let token = invite(proven).await;
    let (status, body) = accept(json!({ "token": token })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = w.login(proven).await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&session), None).await;
    assert_eq!(me["role"], "expert");
}

#[sqlx::test(migrations = "../migrations")]
async fn super_admins_read_their_organisations_audit_as_json_or_csv(db: PgPool) {
    let w = World::new(db.clone()).await;
    let a = w.org("Org A").await;
    let b = w.org("Org B").await;
    w.user(Some(a), "admin@a.example.org", Role::SuperAdmin)
        .await;
    w.user(Some(b), "admin@b.example.org", Role::SuperAdmin)
        .await;
    let token_a = w.login("admin@a.example.org").await;
    let token_b = w.login("admin@b.example.org").await;
    // A user agent that would be a formula in a spreadsheet.
    w.call_from(
        None,
        &[("user-agent", "=HYPERLINK(\"http://evil\")")],
        "POST",
        "/api/v1/auth/logout",
        Some(&token_b),
        None,
    )
    .await;
    let token_b = w.login("admin@b.example.org").await;

    let (status, body) = w
        .call("GET", "/api/v1/audit?limit=500", Some(&token_a), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let entries = body["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(
        entries.iter().all(|e| e["org_id"] == a.to_string()),
        "only org A's rows: {body}"
    );

    let (status, csv) = w
        .call_raw("GET", "/api/v1/audit?format=csv", Some(&token_b), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,at,actor,org_id,role,action,target,outcome,ip,user_agent,request_id,detail,hash"
    );
    assert!(csv.contains("POST /api/v1/auth/logout"), "{csv}");
    assert!(
        csv.contains("\"'=HYPERLINK(\"\"http://evil\"\")\""),
        "formulas are defused: {csv}"
    );

    let (status, body) = w
        .call("GET", "/api/v1/audit?format=xml", Some(&token_b), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_format"))
    );
    let (status, body) = w
        .call("GET", "/api/v1/audit?limit=many", Some(&token_b), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn deleting_a_course_needs_a_fresh_step_up_and_is_audited(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "editor@med.example.org", Role::ContentAdmin)
        .await;
    let token = w.login("editor@med.example.org").await;
    let create = |title: &'static str| {
        let (w, token) = (&w, token.clone());
        async move {
            let (status, body) = w
                .call(
                    "POST",
                    "/api/v1/courses",
                    Some(&token),
                    Some(json!({ "title": title })),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            format!("/api/v1/courses/{}", body["id"].as_str().unwrap())
        }
    };
    let course = create("心血管疾病诊疗指南").await;

    let (status, body) = w.call("DELETE", &course, Some(&token), None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_required"))
    );

    let (status, enrolment) = w
        .call(
            "POST",
            "/api/v1/me/totp",
            Some(&token),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enrolment}");
    let totp = totp_for(enrolment["secret"].as_str().unwrap());
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&token),
            Some(json!({ "code": totp.generate(now() - 30) })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let code = totp.generate(now());
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "totp": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w.call("DELETE", &course, Some(&token), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = w.call("DELETE", &course, Some(&token), None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the step-up allowed one request"
    );

    // A reused code buys nothing.
    let second = create("指南更新").await;
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "totp": code })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = w.call("DELETE", &second, Some(&token), None).await;
    assert_eq!(body["error"]["code"], "step_up_required", "{status} {body}");

    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM audit_log WHERE action = 'DELETE /api/v1/courses/{course_id}' ORDER BY id",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(outcomes.first().map(String::as_str), Some("denied"));
    assert!(outcomes.iter().any(|o| o == "ok"), "{outcomes:?}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM courses")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(left, 1, "only the second course remains");
}

/// A code the authenticator does not show now, nor a step either side.
fn wrong_totp(totp: &TOTP) -> String {
    let shown: Vec<String> = [now() - 30, now(), now() + 30]
        .iter()
        .map(|t| totp.generate(*t))
        .collect();
    (0..1_000_000u32)
        .map(|n| format!("{n:06}"))
        .find(|c| !shown.contains(c))
        .unwrap()
}

async fn enrol_totp(w: &World, token: &str) -> TOTP {
    let (status, enrolment) = w
        .call(
            "POST",
            "/api/v1/me/totp",
            Some(token),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{enrolment}");
    let totp = totp_for(enrolment["secret"].as_str().unwrap());
    // Confirmed with the previous step's code, so the current one is fresh.
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(token),
            Some(json!({ "code": totp.generate(now() - 30) })),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    totp
}

/// Issue #16: session only → enrol TOTP → step up → change a role must be
/// refused at the first step.
#[sqlx::test(migrations = "../migrations")]
async fn a_stolen_session_cannot_enrol_an_authenticator_to_step_up_with(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "chief@med.example.org", Role::SuperAdmin)
        .await;
    let victim = w
        .user(Some(org), "learner@med.example.org", Role::Learner)
        .await;
    let promote = format!("/api/v1/users/{victim}/role");
    // All the thief has is the session token.
    let stolen = w.login("chief@med.example.org").await;
    let (status, body) = w
        .call("POST", "/api/v1/me/totp", Some(&stolen), Some(json!({})))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("reauthentication_required")),
        "a session alone enrolled an authenticator: {body}"
    );
    // So nothing follows: no secret to confirm or step up with, and the
    // role change still wants a step-up.
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/totp/confirm",
            Some(&stolen),
            Some(json!({ "code": "123456" })),
        )
        .await;
    assert_eq!(body["error"]["code"], "no_pending_totp", "{status} {body}");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&stolen),
            Some(json!({ "totp": "123456" })),
        )
        .await;
    assert_eq!(body["error"]["code"], "totp_not_enabled", "{status} {body}");
    let (status, body) = w
        .call(
            "PUT",
            &promote,
            Some(&stolen),
            Some(json!({ "role": "super_admin" })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_required"))
    );

    // Guessing the password through the session is throttled as sign-in is.
    for attempt in 0..5 {
        let (status, body) = w
            .call(
                "POST",
                "/api/v1/me/totp",
                Some(&stolen),
                Some(json!({ "password": format!("guess number {attempt}") })),
            )
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("wrong_password")),
            "attempt {attempt}"
        );
    }
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/totp",
            Some(&stolen),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("account_locked"))
    );
    let alerts: Vec<String> = sqlx::query_scalar("SELECT kind FROM security_alerts")
        .fetch_all(&db)
        .await
        .unwrap();
    assert_eq!(alerts, vec!["brute_force".to_string()]);

    // The owner, who knows the password, enrols and steps up; replacing
    // the enabled authenticator then needs a step-up, not the password.
    w.user(Some(org), "deputy@med.example.org", Role::SuperAdmin)
        .await;
    let owner = w.login("deputy@med.example.org").await;
    let totp = enrol_totp(&w, &owner).await;
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/totp",
            Some(&owner),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("step_up_required")),
        "{body}"
    );
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&owner),
            Some(json!({ "totp": totp.generate(now()) })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w
        .call(
            "PUT",
            &promote,
            Some(&owner),
            Some(json!({ "role": "expert" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.step_up(&owner, "deputy@med.example.org").await;
    let (status, body) = w
        .call("POST", "/api/v1/me/totp", Some(&owner), Some(json!({})))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a step-up replaces the authenticator: {body}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn wrong_codes_lock_step_up_per_account_and_address_and_code_requests_are_limited(
    db: PgPool,
) {
    let identity = lectern_identity::IdentitySettings {
        throttle: lectern_identity::ThrottlePolicy {
            address_failures: 8,
            ..Default::default()
        },
        ..Default::default()
    };
    let w = World::with_settings(db.clone(), identity).await;
    let org = w.org("Medical Association").await;
    let a = w
        .user(Some(org), "a@med.example.org", Role::SuperAdmin)
        .await;
    let token = w.login("a@med.example.org").await;
    let totp = enrol_totp(&w, &token).await;
    let from = |ip: &'static str, token: &str, body: serde_json::Value| {
        let (w, token) = (&w, token.to_string());
        async move {
            let (status, text) = w
                .call_from(
                    Some(ip),
                    &[],
                    "POST",
                    "/api/v1/auth/step-up",
                    Some(&token),
                    Some(body),
                )
                .await;
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        }
    };
    let home = "198.51.100.7";
    for attempt in 0..5 {
        assert_eq!(
            from(home, &token, json!({ "totp": wrong_totp(&totp) })).await,
            (StatusCode::FORBIDDEN, "invalid_code".to_string()),
            "attempt {attempt}"
        );
    }
    assert_eq!(
        from(home, &token, json!({ "totp": totp.generate(now()) })).await,
        (StatusCode::TOO_MANY_REQUESTS, "locked_out".to_string()),
        "the right code after five wrong ones"
    );
    let alert: (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT kind, user_id FROM security_alerts")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(alert, ("brute_force".to_string(), Some(a)));

    // One-time codes count too, and the address's count spans accounts:
    // 5 + 3 wrong codes from one address lock it for everyone.
    w.user(Some(org), "b@med.example.org", Role::Learner).await;
    w.user(Some(org), "c@med.example.org", Role::Learner).await;
    let b = w.login("b@med.example.org").await;
    let c = w.login("c@med.example.org").await;
    for who in [&b, &c] {
        let (status, _) = w
            .call("POST", "/api/v1/auth/step-up/code", Some(who), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let b_code = lectern_testkit::one_time_code(&w.last_message("b@med.example.org").await);
    let wrong = if b_code == "000000" {
        "000001"
    } else {
        "000000"
    };
    for _ in 0..3 {
        assert_eq!(
            from(home, &b, json!({ "code": wrong })).await.0,
            StatusCode::FORBIDDEN
        );
    }
    let c_code = lectern_testkit::one_time_code(&w.last_message("c@med.example.org").await);
    assert_eq!(
        from(home, &c, json!({ "code": c_code.clone() })).await,
        (StatusCode::TOO_MANY_REQUESTS, "locked_out".to_string()),
        "the address is locked for every account"
    );
    assert_eq!(
        from("203.0.113.50", &c, json!({ "code": c_code })).await.0,
        StatusCode::OK,
        "another address, and an account without failures, is not"
    );

    // Requests for one-time codes are limited per account.
    w.user(Some(org), "d@med.example.org", Role::Learner).await;
    let d = w.login("d@med.example.org").await;
    // `stepup::CODE_SENDS_PER_WINDOW`.
    let limit = 10;
    for i in 0..limit {
        let (status, body) = w
            .call("POST", "/api/v1/auth/step-up/code", Some(&d), None)
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "request {i}: {body}");
    }
    let (status, body) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(&d), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("locked_out")),
        "code request {limit}: {body}"
    );
    // Only the newest code of a session is good.
    let sent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM step_up_codes c JOIN sessions s ON s.id = c.session_id \
         JOIN users u ON u.id = s.user_id WHERE u.email_bidx = $1 AND c.used_at IS NULL",
    )
    .bind(w.keys.email_index("d@med.example.org"))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(sent, 1);
}

/// Every row of `tables`, as text, as someone with a copy of the
/// database reads it.
async fn dump(db: &PgPool, tables: &[&str]) -> String {
    let mut out = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM {table} t"))
            .fetch_all(db)
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} holds a row");
        out.push_str(&rows.join("\n"));
        out.push('\n');
    }
    out
}

#[sqlx::test(migrations = "../migrations")]
async fn one_time_codes_tokens_and_outbox_messages_are_not_readable_at_rest(db: PgPool) {
    use lectern_secrets::token_fingerprint;

    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "editor@med.example.org", Role::ContentAdmin)
        .await;
    let token = w.login("editor@med.example.org").await;
    let (status, _) = w
        .call("POST", "/api/v1/auth/step-up/code", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/invitations",
            Some(&token),
            Some(json!({ "email": "invitee@hospital.example.cn" })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    // The development outbox still reads back, through the keys…
    let code = lectern_testkit::one_time_code(&w.last_message("editor@med.example.org").await);
    let invitation = token_in(&w.last_message("invitee@hospital.example.cn").await);
    // …but a copy of the database does not give them away.
    let at_rest = dump(&db, &["outbox", "step_up_codes", "invitations"]).await;
    for secret in [
        invitation.as_str(),
        "verification code is",
        "invitee@hospital",
        "editor@med",
    ] {
        assert!(
            !at_rest.contains(secret),
            "{secret:?} is readable at rest:\n{at_rest}"
        );
    }
    // A six-digit code's plain SHA-256 is undone by trying a million; the
    // stored value must need the key.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT code_hash FROM step_up_codes")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_ne!(
        stored,
        token_fingerprint(&code),
        "the code's hash needs no key"
    );

    // A sign-up's confirmation token likewise.
    sqlx::query("UPDATE organisations SET self_signup = true WHERE id = $1")
        .bind(org)
        .execute(&db)
        .await
        .unwrap();
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            Some(json!({ "org_id": org, "email": "newcomer@hospital.example.cn", "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let confirmation = token_in(&w.last_message("newcomer@hospital.example.cn").await);
    let at_rest = dump(&db, &["outbox", "signup_requests"]).await;
    for secret in [
        confirmation.as_str(),
        "newcomer@hospital",
        "with this token",
    ] {
        assert!(
            !at_rest.contains(secret),
            "{secret:?} is readable at rest:\n{at_rest}"
        );
    }

    // Stored hashed, the code and the tokens still work.
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/step-up",
            Some(&token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup/confirm",
            None,
            Some(json!({ "token": confirmation })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": invitation, "password": PASSWORD })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        w.state.notify.email_is_development(),
        "the outbox says it is for development, so `serve` can refuse it"
    );
}

// ------------------------------------------------------- the session cache

/// A world whose session cache runs on `timing` (and, for the burst test,
/// with the benchmark's do-nothing route, which queries nothing itself).
async fn world_with_session_cache(
    db: PgPool,
    timing: lectern_identity::session::SessionCacheTiming,
) -> World {
    use lectern_identity::session::SessionCache;
    use lectern_learning::{Learning, ProgressSettings};

    let mut w = World::new(db).await;
    let settings = lectern_api::Settings {
        sessions: Some(SessionCache::new(timing)),
        learning: Learning {
            settings: ProgressSettings {
                bench_noop: true,
                ..ProgressSettings::default()
            },
            ..Learning::default()
        },
        ..w.settings()
    };
    w.rebuild(None, settings);
    w
}

/// Every use re-reads in the background; nothing expires during a test.
fn always_refreshing() -> lectern_identity::session::SessionCacheTiming {
    lectern_identity::session::SessionCacheTiming {
        refresh_after: std::time::Duration::ZERO,
        max_age: std::time::Duration::from_secs(3600),
        read_pause: std::time::Duration::ZERO,
    }
}

/// CI once served a signed-out session: the request after the sign-out
/// missed the evicted entry and joined a re-read that had looked before
/// the sign-out. Here every read pauses after its query, so that order is
/// certain: the joined read must be done again, not believed.
#[sqlx::test(migrations = "../migrations")]
async fn a_sign_out_overtaking_a_re_read_is_not_undone_by_it(db: PgPool) {
    let timing = lectern_identity::session::SessionCacheTiming {
        read_pause: std::time::Duration::from_millis(300),
        ..always_refreshing()
    };
    let w = world_with_session_cache(db, timing).await;
    let org = w.org("Cardiology Society").await;
    w.user(Some(org), "learner@a.example.org", Role::Learner)
        .await;
    let token = w.login("learner@a.example.org").await;
    // Cached by the first use (which waits for its read); the second is
    // served from the cache and queues a re-read, which has queried by the
    // time the sign-out comes and is pausing with "alive".
    for _ in 0..2 {
        assert_eq!(
            w.call("GET", "/api/v1/me", Some(&token), None).await.0,
            StatusCode::OK
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let (status, _) = w
        .call("POST", "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        w.call("GET", "/api/v1/me", Some(&token), None).await.0,
        StatusCode::UNAUTHORIZED,
        "a signed-out session is refused, even by a read that began before"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_cached_session_is_served_while_it_is_re_read_and_a_revocation_elsewhere_lands(
    db: PgPool,
) {
    let w = world_with_session_cache(db, always_refreshing()).await;
    let org = w.org("Cardiology Society").await;
    w.user(Some(org), "learner@a.example.org", Role::Learner)
        .await;
    let token = w.login("learner@a.example.org").await;
    assert_eq!(
        w.call("GET", "/api/v1/me", Some(&token), None).await.0,
        StatusCode::OK
    );

    // Another API node signs the session out: only PostgreSQL knows.
    sqlx::query("UPDATE sessions SET revoked_at = now()")
        .execute(w.db())
        .await
        .unwrap();
    // This node answers from its cache without waiting on PostgreSQL, and
    // re-reads the session behind the answer…
    let (status, body) = w.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the cached session is served: {body}"
    );
    // …so the revocation reaches it with that re-read.
    let mut status = StatusCode::OK;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        status = w.call("GET", "/api/v1/me", Some(&token), None).await.0;
        if status == StatusCode::UNAUTHORIZED {
            break;
        }
    }
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the background re-read saw the revocation"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn signing_out_is_refused_at_once_on_the_node_even_with_re_reads_in_flight(db: PgPool) {
    let w = world_with_session_cache(db, always_refreshing()).await;
    let org = w.org("Cardiology Society").await;
    w.user(Some(org), "learner@a.example.org", Role::Learner)
        .await;
    let phone = w.login("learner@a.example.org").await;
    let laptop = w.login("learner@a.example.org").await;
    for t in [&phone, &laptop, &phone, &laptop] {
        assert_eq!(
            w.call("GET", "/api/v1/me", Some(t), None).await.0,
            StatusCode::OK
        );
    }

    let (status, _) = w
        .call("POST", "/api/v1/auth/logout", Some(&phone), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for _ in 0..5 {
        assert_eq!(
            w.call("GET", "/api/v1/me", Some(&phone), None).await.0,
            StatusCode::UNAUTHORIZED,
            "a signed-out session is refused at once, never served stale"
        );
        assert_eq!(
            w.call("GET", "/api/v1/me", Some(&laptop), None).await.0,
            StatusCode::OK
        );
    }

    let (status, _) = w
        .call("POST", "/api/v1/me/sessions/revoke", Some(&laptop), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(
            w.call("GET", "/api/v1/me", Some(&laptop), None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}

/// 10,000 players first seen in the same second once failed here: each
/// miss raced for a pool connection until the pool's acquire timeout. Now
/// misses queue for a few readers, each reading every queued session in
/// one query. Pool of 2 with a short acquire timeout, N distinct cold
/// sessions at once: every request must succeed.
#[sqlx::test(migrations = "../migrations")]
async fn a_burst_of_cold_sessions_on_a_tiny_pool_all_succeed(
    pool: sqlx::postgres::PgPoolOptions,
    connect: sqlx::postgres::PgConnectOptions,
) {
    use axum::body::Body;
    use axum::http::Request;
    use lectern_secrets::token_fingerprint;
    use tower::ServiceExt;

    const SESSIONS: usize = 500;
    let db = pool
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_millis(200))
        .connect_with(connect)
        .await
        .unwrap();
    let w = world_with_session_cache(db, Default::default()).await;
    let org = w.org("Cardiology Society").await;
    let user = w
        .user(Some(org), "learner@a.example.org", Role::Learner)
        .await;
    let tokens: Vec<String> = (0..SESSIONS).map(|i| format!("ls_burst{i:05}")).collect();
    let hashes: Vec<Vec<u8>> = tokens.iter().map(|t| token_fingerprint(t)).collect();
    sqlx::query(
        "INSERT INTO sessions (id, user_id, token_hash, expires_at) \
         SELECT gen_random_uuid(), $1, h, now() + interval '1 hour' FROM unnest($2::bytea[]) h",
    )
    .bind(user)
    .bind(&hashes)
    .execute(w.db())
    .await
    .unwrap();

    let mut burst = tokio::task::JoinSet::new();
    for token in tokens {
        let app = w.app.clone();
        burst.spawn(async move {
            let req = Request::post("/api/v1/bench/noop")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        });
    }
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(status) = burst.join_next().await {
        *statuses.entry(status.unwrap().as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        std::collections::BTreeMap::from([(204, SESSIONS)]),
        "every cold session is recognised"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn personal_data_export_and_its_step_up_are_audited(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    let admin = w
        .user(Some(org), "admin@med.example.org", Role::SuperAdmin)
        .await;
    w.user(Some(org), "learner@med.example.org", Role::Learner)
        .await;
    let token = w.login("admin@med.example.org").await;
    // Without a step-up: refused, and the refusal recorded.
    let (status, body) = w
        .call_raw("GET", "/api/v1/users/export", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    w.step_up(&token, "admin@med.example.org").await;
    let (status, body) = w
        .call_raw("GET", "/api/v1/users/export", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("learner@med.example.org"));
    let (status, _) = w
        .call("GET", "/api/v1/audit?format=csv", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let actor = format!("user:{admin}");
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT action, outcome, detail FROM audit_log WHERE actor = $1 AND action IN \
         ('GET /api/v1/users/export', 'POST /api/v1/auth/step-up', 'users.export', 'audit.read') \
         ORDER BY id",
    )
    .bind(&actor)
    .fetch_all(&db)
    .await
    .unwrap();
    let summary: Vec<(&str, &str)> = rows
        .iter()
        .map(|(a, o, _)| (a.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("GET /api/v1/users/export", "denied"),
            ("POST /api/v1/auth/step-up", "ok"),
            ("users.export", "ok"),
            ("audit.read", "ok"),
        ]
    );
    let export = rows[2].2.as_deref().unwrap();
    assert!(
        export.contains("\"accounts\":2") && export.contains("\"step_up\":\"consumed\""),
        "{export}"
    );
    assert!(rows[3].2.as_deref().unwrap().contains("\"format\":\"csv\""));
}
