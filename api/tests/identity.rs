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
    let (status, _) = w.call("POST", "/api/v1/me/totp", Some(&token), None).await;
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

    let (status, enrolment) = w.call("POST", "/api/v1/me/totp", Some(&token), None).await;
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
    let report = audit::verify(&db).await.unwrap();
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
    let report = audit::verify(&db).await.unwrap();
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
    let report = audit::verify(&db).await.unwrap();
    assert_eq!(
        report,
        audit::ChainReport {
            rows_checked: 6,
            first_bad_row: None
        }
    );
    w.login("a@med.example.org").await;
    assert_eq!(audit::verify(&db).await.unwrap().first_bad_row, None);
}

#[sqlx::test(migrations = "../migrations")]
async fn an_expert_invitation_is_signed_single_use_and_makes_an_expert(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Medical Association").await;
    w.user(Some(org), "editor@med.example.org", Role::ContentAdmin)
        .await;
    w.user(Some(org), "learner@med.example.org", Role::Learner)
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
    let invite = message.rsplit(' ').next().unwrap().to_string();

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

    // An existing learner of the organisation becomes an expert.
    w.call(
        "POST",
        "/api/v1/invitations",
        Some(&token),
        Some(json!({ "email": "learner@med.example.org" })),
    )
    .await;
    let invite = w
        .last_message("learner@med.example.org")
        .await
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/invitations/accept",
            None,
            Some(json!({ "token": invite })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let learner = w.login("learner@med.example.org").await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&learner), None).await;
    assert_eq!(me["role"], "expert");
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
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let db = db.clone();
            tokio::spawn(async move {
                let event = audit::AuditEvent {
                    action: format!("test.write-{i}"),
                    outcome: "ok",
                    ..Default::default()
                };
                audit::record(&db, &event).await.unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for w in writers {
        ids.push(w.await.unwrap());
    }
    ids.sort_unstable();
    assert_eq!(ids, (1..=40).collect::<Vec<i64>>());
    let report = audit::verify(&db).await.unwrap();
    assert_eq!(
        report,
        audit::ChainReport {
            rows_checked: 40,
            first_bad_row: None
        }
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn learners_sign_up_under_the_password_policy(db: PgPool) {
    let w = World::new(db.clone()).await;
    let org = w.org("Alumni Office").await;
    let signup = |email: &str, password: &str| {
        Some(json!({ "org_id": org, "email": email, "password": password }))
    };
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
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("new@alumni.example.edu", PASSWORD),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["role"], "learner");
    let (status, body) = w
        .call(
            "POST",
            "/api/v1/auth/signup",
            None,
            signup("NEW@alumni.example.edu", PASSWORD),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("email_in_use"))
    );
    let token = w.login("new@alumni.example.edu").await;
    let (_, me) = w.call("GET", "/api/v1/me", Some(&token), None).await;
    assert_eq!(me["role"], "learner");
    let (status, _) = w
        .call("POST", "/api/v1/auth/signup", None, Some(json!({ "org_id": uuid::Uuid::nil(), "email": "x@y.example", "password": PASSWORD })))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
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

    let (status, enrolment) = w.call("POST", "/api/v1/me/totp", Some(&token), None).await;
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
