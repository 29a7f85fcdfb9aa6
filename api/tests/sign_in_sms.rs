//! Signing in with a code sent by SMS, and proving a phone number on an
//! account, through the router on a real PostgreSQL database per test.
//! Codes are read back from the development outbox the SMS deliveries go
//! to (the dispatcher runs as `serve`'s would). Expiry is proven by
//! moving the stored code's expiry into the past (codes expire in SQL,
//! `expires_at > now()`), never by sleeping.

use axum::http::StatusCode;
use lectern_testkit::{one_time_code, World};
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const PHONE: &str = "+8613800138000";

async fn policy(w: &World, org: Uuid, methods: &[&str], new_accounts: &str) {
    sqlx::query(
        "INSERT INTO sign_in_policies (org_id, methods, new_accounts) VALUES ($1, $2, $3) \
         ON CONFLICT (org_id) DO UPDATE SET methods = $2, new_accounts = $3",
    )
    .bind(org)
    .bind(methods)
    .bind(new_accounts)
    .execute(w.db())
    .await
    .unwrap();
}

async fn ask_code(w: &World, org: Uuid, phone: &str) -> (StatusCode, serde_json::Value) {
    w.call(
        "POST",
        "/api/v1/auth/sms/code",
        None,
        Some(json!({ "org_id": org, "phone": phone })),
    )
    .await
}

async fn sign_in(w: &World, org: Uuid, phone: &str, code: &str) -> (StatusCode, serde_json::Value) {
    w.call(
        "POST",
        "/api/v1/auth/sms/sign-in",
        None,
        Some(json!({ "org_id": org, "phone": phone, "code": code })),
    )
    .await
}

async fn messages_to(w: &World, phone: &str) -> i64 {
    w.dispatch().await;
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE recipient_bidx = $1")
        .bind(w.keys.email_index(phone))
        .fetch_one(w.db())
        .await
        .unwrap()
}

async fn audit_details(w: &World, action: &str) -> Vec<String> {
    w.audit_flushed().await;
    sqlx::query_scalar(
        "SELECT outcome || ' ' || coalesce(detail, '') FROM audit_log WHERE action = $1 ORDER BY id",
    )
    .bind(action)
    .fetch_all(w.db())
    .await
    .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_code_signs_in_once_and_a_first_sign_in_creates_a_learner(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    policy(&w, org, &["sms"], "just_in_time").await;

    let (status, body) = ask_code(&w, org, "138 0013 8000").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert!(body["expires_at"].is_string(), "{body}");
    let code = one_time_code(&w.last_message(PHONE).await);

    let (status, body) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    assert_eq!(body["user"]["role"], "learner");
    assert_eq!(body["user"]["org_id"], org.to_string());
    let (status, me) = w.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["phone"], PHONE);
    assert_eq!(me["email"], serde_json::Value::Null);
    assert_eq!(me["has_password"], false);

    // The number is sealed at rest and found by its blind index.
    let (sealed, index): (Vec<u8>, Vec<u8>) =
        sqlx::query_as("SELECT phone_ct, phone_bidx FROM users WHERE id = $1")
            .bind(
                body["user"]["id"]
                    .as_str()
                    .unwrap()
                    .parse::<Uuid>()
                    .unwrap(),
            )
            .fetch_one(w.db())
            .await
            .unwrap();
    assert!(!String::from_utf8_lossy(&sealed).contains("13800138000"));
    assert_eq!(index, w.keys.phone_index(PHONE));

    // Replay: the code worked once.
    let (status, body) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invalid_code");

    // A second sign-in finds the same account; no second learner.
    let (_, _) = ask_code(&w, org, PHONE).await;
    let code = one_time_code(&w.last_message(PHONE).await);
    let (status, again) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["user"]["id"], me["id"]);

    // Neither the code nor the number is in the audit log; the method is.
    let logins = audit_details(&w, "auth.login").await;
    assert_eq!(
        logins
            .iter()
            .filter(|d| d.starts_with("ok") && d.contains("\"method\":\"sms\""))
            .count(),
        2,
        "{logins:?}"
    );
    let failed = logins.iter().find(|d| d.starts_with("failed")).unwrap();
    assert!(failed.contains("invalid_code"), "{failed}");
    let everything: Vec<String> = sqlx::query_scalar("SELECT a::text FROM audit_log a")
        .fetch_all(w.db())
        .await
        .unwrap();
    for row in everything {
        assert!(
            !row.contains(&code) && !row.contains("13800138000"),
            "{row}"
        );
    }
    assert_eq!(audit_details(&w, "sign_in.link").await.len(), 1);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expired_code_does_not_sign_in(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    policy(&w, org, &["sms"], "just_in_time").await;
    ask_code(&w, org, PHONE).await;
    let code = one_time_code(&w.last_message(PHONE).await);
    // Time passes beyond the code's life.
    sqlx::query("UPDATE phone_codes SET expires_at = now() - interval '1 second'")
        .execute(w.db())
        .await
        .unwrap();
    let (status, body) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invalid_code");
    // A newer code supersedes the older one.
    ask_code(&w, org, PHONE).await;
    let first = one_time_code(&w.last_message(PHONE).await);
    ask_code(&w, org, PHONE).await;
    let second = one_time_code(&w.last_message(PHONE).await);
    if first != second {
        let (status, _) = sign_in(&w, org, PHONE, &first).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, body) = sign_in(&w, org, PHONE, &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn an_organisation_that_does_not_allow_sms_refuses_it(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    // No policy at all: passwords only.
    let (status, body) = ask_code(&w, org, PHONE).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "sign_in_method_disabled");
    // Allowed, a code sent, then the organisation turns SMS off.
    policy(&w, org, &["sms"], "just_in_time").await;
    ask_code(&w, org, PHONE).await;
    let code = one_time_code(&w.last_message(PHONE).await);
    policy(&w, org, &["oidc"], "just_in_time").await;
    let (status, body) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "sign_in_method_disabled");
    let (status, body) = w
        .call(
            "GET",
            &format!("/api/v1/organisations/{org}/sign-in-policy"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["methods"], json!(["oidc"]));
    assert_eq!(body["new_accounts"], "just_in_time");
}

#[sqlx::test(migrations = "../migrations")]
async fn asking_for_a_code_says_nothing_about_whether_the_number_has_an_account(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    let other = w.org("Other").await;
    policy(&w, org, &["sms"], "invitation").await;
    let user = w.user(Some(org), "doctor@example.org", Role::Learner).await;
    give_phone(&w, user, PHONE).await;
    let stranger = "+8613900139000";
    let elsewhere = "+8613700137000";
    let them = w
        .user(Some(other), "nurse@example.org", Role::Learner)
        .await;
    give_phone(&w, them, elsewhere).await;

    let mut answers = Vec::new();
    for phone in [PHONE, stranger, elsewhere] {
        let (status, headers, body) = w
            .call_with_headers(
                "POST",
                "/api/v1/auth/sms/code",
                None,
                Some(json!({ "org_id": org, "phone": phone })),
            )
            .await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut keys: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let mut names: Vec<_> = headers
            .keys()
            .map(|h| h.as_str().to_string())
            .filter(|h| h != "date")
            .collect();
        names.sort();
        answers.push((status, keys, names));
    }
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    // Only the account of this organisation was sent a code.
    assert_eq!(messages_to(&w, PHONE).await, 1);
    assert_eq!(messages_to(&w, stranger).await, 0);
    assert_eq!(messages_to(&w, elsewhere).await, 0);
    // A stranger's guess is just a wrong code, like anyone's.
    let (status, body) = sign_in(&w, org, stranger, "123456").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invalid_code");
    // The account signs in with its code.
    let code = one_time_code(&w.last_message(PHONE).await);
    let (status, body) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], user.to_string());
}

#[sqlx::test(migrations = "../migrations")]
async fn the_sixth_wrong_code_locks_the_number(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    policy(&w, org, &["sms"], "just_in_time").await;
    ask_code(&w, org, PHONE).await;
    let code = one_time_code(&w.last_message(PHONE).await);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for attempt in 1..=6 {
        let (status, body) = sign_in(&w, org, PHONE, wrong).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "attempt {attempt}: {body}");
        assert_eq!(body["error"]["code"], "invalid_code");
    }
    // Locked: even the right code is refused, with when to come back.
    let (status, headers, body) = w
        .call_with_headers(
            "POST",
            "/api/v1/auth/sms/sign-in",
            None,
            Some(json!({ "org_id": org, "phone": PHONE, "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert!(body.contains("account_locked"), "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 800 && retry <= 900, "{retry}");
    // Another number is not locked by it.
    let (status, _) = sign_in(&w, org, "+8613900139000", wrong).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Audited and alerted like a password lockout.
    let logins = audit_details(&w, "auth.login").await;
    assert!(
        logins
            .iter()
            .any(|d| d.starts_with("denied") && d.contains("locked_out")),
        "{logins:?}"
    );
    let alerts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM security_alerts WHERE kind = 'brute_force'")
            .fetch_one(w.db())
            .await
            .unwrap();
    assert_eq!(alerts, 1);
    // Once the lockout has passed, the (still valid) code works.
    sqlx::query("UPDATE login_throttle SET locked_until = now() WHERE subject LIKE 'phone:%'")
        .execute(w.db())
        .await
        .unwrap();
    let (status, body) = sign_in(&w, org, PHONE, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn codes_sent_to_one_number_are_limited(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    policy(&w, org, &["sms"], "just_in_time").await;
    for _ in 0..5 {
        let (status, body) = ask_code(&w, org, PHONE).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    let (status, body) = ask_code(&w, org, PHONE).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(messages_to(&w, PHONE).await, 5);
    // Per address too: one client cannot spray numbers.
    let mut refused = 0;
    for n in 0..25 {
        let (status, _) = w
            .call_from(
                Some("203.0.113.9"),
                &[],
                "POST",
                "/api/v1/auth/sms/code",
                None,
                Some(json!({ "org_id": org, "phone": format!("+86139{n:08}") })),
            )
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
}

#[sqlx::test(migrations = "../migrations")]
async fn a_phone_is_added_with_step_up_and_proof_and_removed_with_step_up(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    w.user(Some(org), "doctor@example.org", Role::Learner).await;
    let token = w.login("doctor@example.org").await;
    let add = json!({ "phone": PHONE });
    let (status, body) = w
        .call("POST", "/api/v1/me/phone", Some(&token), Some(add.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "step_up_required");
    w.step_up(&token, "doctor@example.org").await;
    let (status, body) = w
        .call("POST", "/api/v1/me/phone", Some(&token), Some(add.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let code = one_time_code(&w.last_message(PHONE).await);
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/phone/confirm",
            Some(&token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["phone"], PHONE);
    // Replayed proof does nothing more.
    let (status, _) = w
        .call(
            "POST",
            "/api/v1/me/phone/confirm",
            Some(&token),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, ways) = w
        .call("GET", "/api/v1/me/sign-ins", Some(&token), None)
        .await;
    assert_eq!(ways["phone"], PHONE);
    assert_eq!(ways["password"], true);

    // Another account cannot take the proven number.
    let other = w.org("Other").await;
    w.user(Some(other), "nurse@example.org", Role::Learner)
        .await;
    let nurse = w.login("nurse@example.org").await;
    w.step_up(&nurse, "nurse@example.org").await;
    w.call("POST", "/api/v1/me/phone", Some(&nurse), Some(add))
        .await;
    let code = one_time_code(&w.last_message(PHONE).await);
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/me/phone/confirm",
            Some(&nurse),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "phone_in_use");

    let (status, _) = w
        .call("DELETE", "/api/v1/me/phone", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    w.step_up(&token, "doctor@example.org").await;
    let (status, body) = w
        .call("DELETE", "/api/v1/me/phone", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let links = audit_details(&w, "sign_in.link").await;
    let unlinks = audit_details(&w, "sign_in.unlink").await;
    assert_eq!(
        (links.len(), unlinks.len()),
        (1, 1),
        "{links:?} {unlinks:?}"
    );
    assert!(links[0].contains("\"kind\":\"phone\""));
}

#[sqlx::test(migrations = "../migrations")]
async fn an_account_made_by_sms_steps_up_by_sms_and_keeps_its_last_way_in(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    policy(&w, org, &["sms"], "just_in_time").await;
    ask_code(&w, org, PHONE).await;
    let code = one_time_code(&w.last_message(PHONE).await);
    let (_, body) = sign_in(&w, org, PHONE, &code).await;
    let token = body["token"].as_str().unwrap().to_string();
    // No email: the step-up code comes by SMS.
    w.step_up(&token, PHONE).await;
    let (status, body) = w
        .call("DELETE", "/api/v1/me/phone", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "last_sign_in_method");
}

#[sqlx::test(migrations = "../migrations")]
async fn the_policy_is_changed_by_a_super_admin_after_a_step_up(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Hospital").await;
    w.user(Some(org), "admin@example.org", Role::SuperAdmin)
        .await;
    let token = w.login("admin@example.org").await;
    let path = format!("/api/v1/organisations/{org}/sign-in-policy");
    let change = json!({ "methods": ["sms", "ldap", "sms"], "new_accounts": "just_in_time" });
    let (status, body) = w
        .call("PUT", &path, Some(&token), Some(change.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    w.step_up(&token, "admin@example.org").await;
    let (status, body) = w.call("PUT", &path, Some(&token), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["methods"], json!(["ldap", "sms"]));
    let (status, body) = w.call("GET", &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["new_accounts"], "just_in_time");
    let changes = audit_details(&w, "sign_in.policy").await;
    assert_eq!(changes.len(), 1, "{changes:?}");
}

async fn give_phone(w: &World, user: Uuid, phone: &str) {
    sqlx::query(
        "UPDATE users SET phone_ct = $2, phone_bidx = $3, phone_verified_at = now() WHERE id = $1",
    )
    .bind(user)
    .bind(w.keys.seal("users.phone", user, phone))
    .bind(w.keys.phone_index(phone))
    .execute(w.db())
    .await
    .unwrap();
}
