//! Hand-off codes through the router, on a real PostgreSQL: a session
//! mints a single-use code, a page without that session (the H5 app in a
//! mini-program's `web-view`) redeems it once for its own cookie session.
//! Replayed, expired, forged and other-organisation codes are refused with
//! their own error codes, and the code never reaches the audit log. The
//! mini-program's own `wx.login` path into this is in `sign_in_wechat.rs`.

use axum::http::StatusCode;
use lectern_identity::{IdentitySettings, ThrottlePolicy};
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

struct Setup {
    w: World,
    a: Uuid,
    b: Uuid,
    alice: Uuid,
}

async fn setup(db: PgPool) -> Setup {
    let w = World::new(db).await;
    let a = w.org("Hospital A").await;
    let b = w.org("Hospital B").await;
    let alice = w.user(Some(a), "alice@a.example.org", Role::Learner).await;
    w.user(Some(b), "bob@b.example.org", Role::Learner).await;
    Setup { w, a, b, alice }
}

async fn mint(w: &World, token: &str) -> String {
    let (status, body) = w
        .call("POST", "/api/v1/auth/handoff", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 60);
    let code = body["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("lh_") && code.len() > 40, "{code}");
    code
}

/// Redeems `code` as a page without any session: the status, the cookie
/// set (if any) and the body.
async fn redeem(w: &World, body: Value) -> (StatusCode, Option<String>, Value) {
    let (status, headers, text) = w
        .call_with_headers("POST", "/api/v1/auth/handoff/redeem", None, Some(body))
        .await;
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("lectern_session=ls_"));
    (status, cookie, serde_json::from_str(&text).unwrap())
}

fn code_of(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn audit_rows(w: &World) -> Vec<String> {
    w.audit_flushed().await;
    sqlx::query_scalar("SELECT a::text FROM audit_log a ORDER BY id")
        .fetch_all(w.db())
        .await
        .unwrap()
}

#[sqlx::test(migrations = "../migrations")]
async fn a_code_signs_the_page_in_once_as_its_person_and_is_never_stored_or_logged(db: PgPool) {
    let s = setup(db).await;
    let minting = s.w.login("alice@a.example.org").await;
    let code = mint(&s.w, &minting).await;

    let (status, cookie, body) = redeem(&s.w, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cookie = cookie.expect("the answer sets the session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert_eq!(body["user"]["id"], json!(s.alice));
    assert_eq!(body["user"]["org_id"], json!(s.a));
    assert_eq!(body["user"]["role"], "learner");
    // A new session of its own, not the minting one.
    let token = body["token"].as_str().unwrap();
    assert_ne!(token, minting);
    let (status, me) = s.w.call("GET", "/api/v1/me", Some(token), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], json!(s.alice));

    // Twice: refused, with its own code.
    let (status, cookie, body) = redeem(&s.w, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(code_of(&body), "handoff_used");
    assert!(cookie.is_none());

    // Only its hash is stored; the audit trail has every mint and every
    // redemption (refused ones too) by id, never the code.
    let stored: Vec<String> = sqlx::query_scalar("SELECT h::text FROM handoff_codes h")
        .fetch_all(s.w.db())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(&code));
    let rows = audit_rows(&s.w).await;
    for row in &rows {
        assert!(!row.contains(&code), "{row}");
        assert!(!row.contains(code.trim_start_matches("lh_")), "{row}");
    }
    let count = |needle: &str| rows.iter().filter(|r| r.contains(needle)).count();
    assert_eq!(count("auth.handoff.mint"), 1);
    assert_eq!(count("auth.handoff.redeem"), 2);
    assert_eq!(
        rows.iter()
            .filter(|r| r.contains("auth.handoff.redeem") && r.contains("replayed"))
            .count(),
        1
    );
    assert!(rows
        .iter()
        .any(|r| r.contains("auth.login") && r.contains("handoff")));
}

#[sqlx::test(migrations = "../migrations")]
async fn expired_forged_and_orphaned_codes_are_refused_with_their_own_codes(db: PgPool) {
    let s = setup(db).await;
    let minting = s.w.login("alice@a.example.org").await;

    // Expired: a minute has passed.
    let code = mint(&s.w, &minting).await;
    sqlx::query("UPDATE handoff_codes SET expires_at = now() - interval '1 second'")
        .execute(s.w.db())
        .await
        .unwrap();
    let (status, cookie, body) = redeem(&s.w, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::GONE, "{body}");
    assert_eq!(code_of(&body), "handoff_expired");
    assert!(cookie.is_none());

    // Forged: never minted, or one character off a real one.
    let real = mint(&s.w, &minting).await;
    let mut forged = real.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for code in [
        forged.as_str(),
        "lh_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "",
    ] {
        let (status, cookie, body) = redeem(&s.w, json!({ "code": code })).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(code_of(&body), "handoff_invalid");
        assert!(cookie.is_none());
    }
    // The forgeries did not spoil the real one.
    let (status, _, body) = redeem(&s.w, json!({ "code": real })).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The session that minted a code signs out: the code dies with it.
    let code = mint(&s.w, &minting).await;
    let (status, _) =
        s.w.call("POST", "/api/v1/auth/logout", Some(&minting), None)
            .await;
    assert!(status.is_success());
    let (status, _, body) = redeem(&s.w, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(code_of(&body), "handoff_invalid");

    // Nobody without a session mints one.
    let (status, _) = s.w.call("POST", "/api/v1/auth/handoff", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let rows = audit_rows(&s.w).await;
    for reason in ["expired", "unknown", "session_ended"] {
        assert!(
            rows.iter()
                .any(|r| r.contains("auth.handoff.redeem") && r.contains(reason)),
            "no refusal audited as {reason}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_code_serves_only_its_own_organisation(db: PgPool) {
    let s = setup(db).await;
    let alice = s.w.login("alice@a.example.org").await;

    // A page that expects organisation B refuses A's code, and the
    // attempt uses it up (whoever holds it could have redeemed it anyway).
    let code = mint(&s.w, &alice).await;
    let (status, cookie, body) = redeem(&s.w, json!({ "code": code, "org_id": s.b })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(code_of(&body), "handoff_invalid");
    assert!(cookie.is_none());
    let (status, _, body) = redeem(&s.w, json!({ "code": code, "org_id": s.a })).await;
    assert_eq!(code_of(&body), "handoff_used", "{status} {body}");

    // The right organisation named: signed in there.
    let code = mint(&s.w, &alice).await;
    let (status, _, body) = redeem(&s.w, json!({ "code": code, "org_id": s.a })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["org_id"], json!(s.a));

    // Bob of organisation B redeeming Alice's code gets Alice's session in
    // A (the code decides whose), never a session of B, and his own
    // session is untouched.
    let bob = s.w.login("bob@b.example.org").await;
    let code = mint(&s.w, &alice).await;
    let (status, body) =
        s.w.call(
            "POST",
            "/api/v1/auth/handoff/redeem",
            Some(&bob),
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], json!(s.alice));
    let (_, me) = s.w.call("GET", "/api/v1/me", Some(&bob), None).await;
    assert_eq!(me["org_id"], json!(s.b));

    // A person moved out of the organisation their code was minted in.
    let code = mint(&s.w, &alice).await;
    sqlx::query("UPDATE users SET org_id = $2 WHERE id = $1")
        .bind(s.alice)
        .bind(s.b)
        .execute(s.w.db())
        .await
        .unwrap();
    let (status, _, body) = redeem(&s.w, json!({ "code": code })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(code_of(&body), "handoff_invalid");
    let rows = audit_rows(&s.w).await;
    for reason in ["other_organisation", "left_organisation"] {
        assert!(
            rows.iter().any(|r| r.contains(reason)),
            "no refusal audited as {reason}"
        );
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn two_pages_racing_for_one_code_get_one_session(db: PgPool) {
    let s = setup(db).await;
    let alice = s.w.login("alice@a.example.org").await;
    let code = mint(&s.w, &alice).await;
    let body = || json!({ "code": code });
    let (r1, r2, r3, r4) = tokio::join!(
        redeem(&s.w, body()),
        redeem(&s.w, body()),
        redeem(&s.w, body()),
        redeem(&s.w, body()),
    );
    let results = [r1, r2, r3, r4];
    let won = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    assert_eq!(
        won,
        1,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(results
        .iter()
        .filter(|(s, _, _)| *s != StatusCode::OK)
        .all(|(_, _, b)| code_of(b) == "handoff_used"));
}

#[sqlx::test(migrations = "../migrations")]
async fn forged_codes_lock_the_address_they_come_from(db: PgPool) {
    let w = World::with_settings(
        db,
        IdentitySettings {
            throttle: ThrottlePolicy {
                address_failures: 3,
                ..ThrottlePolicy::default()
            },
            ..IdentitySettings::default()
        },
    )
    .await;
    let a = w.org("Hospital A").await;
    w.user(Some(a), "alice@a.example.org", Role::Learner).await;
    let alice = w.login("alice@a.example.org").await;
    let real = mint(&w, &alice).await;
    let redeem_from = |ip: &'static str, code: String| {
        let w = &w;
        async move {
            w.call_from(
                Some(ip),
                &[],
                "POST",
                "/api/v1/auth/handoff/redeem",
                None,
                Some(json!({ "code": code })),
            )
            .await
        }
    };
    for n in 0..3 {
        let (status, text) = redeem_from("203.0.113.9", format!("lh_guess{n}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{text}");
    }
    // Locked: the real code is not even looked at (so not used up)…
    let (status, text) = redeem_from("203.0.113.9", real.clone()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{text}");
    assert!(text.contains("account_locked"), "{text}");
    // …and still signs in from another address.
    let (status, text) = redeem_from("198.51.100.20", real).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}
