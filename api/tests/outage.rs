//! A database outage is a 503 with `Retry-After`, on every area's routes:
//! the app's pool goes through a relay that drops every open connection
//! and refuses new ones (as a crashed or failing-over PostgreSQL does),
//! with sessions this node already recognised (so requests reach their
//! handlers), then the relay lets connections through again and the same
//! requests succeed.

use std::time::Duration;

use axum::http::StatusCode;
use lectern_identity::users;
use lectern_testkit::{Relay, World};
use lectern_web::Role;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

#[sqlx::test(migrations = "../migrations")]
async fn a_database_outage_is_503_with_retry_after_on_every_area(db: PgPool) {
    let (relay, pool) = Relay::in_front_of(&db, Duration::from_secs(2)).await;
    let w = World::new(pool).await;
    let org = w.org("Outage Society").await;
    w.user(Some(org), "admin@outage.example", Role::ContentAdmin)
        .await;
    w.user(Some(org), "learner@outage.example", Role::Learner)
        .await;
    w.user(None, "root@outage.example", Role::SuperAdmin).await;
    let admin = w.login("admin@outage.example").await;
    let learner = w.login("learner@outage.example").await;
    let root = w.login("root@outage.example").await;
    let (_, partner) = users::create_partner_key(w.db(), org, "outage")
        .await
        .unwrap();
    // A genuine token for an asset this node has never read: its
    // encryption state is not cached, so the origin must ask the database
    // (an asset it has read keeps playing on the last state it knew).
    let media = || {
        let id = Uuid::new_v4();
        let token = w.state.delivery.playback.token(id, None).unwrap();
        format!("/media/assets/{id}/out/attempt-1/seg_00001.m4s?token={token}")
    };
    let calls: Vec<(&str, &str, String, Option<serde_json::Value>)> = vec![
        ("identity", "GET", "/api/v1/users".into(), None),
        ("identity", "GET", "/api/v1/me".into(), None),
        ("identity", "GET", "/api/v1/audit".into(), None),
        ("catalogue", "GET", "/api/v1/courses".into(), None),
        ("catalogue", "GET", "/api/v1/disciplines".into(), None),
        (
            "catalogue",
            "POST",
            "/api/v1/courses".into(),
            Some(json!({ "title": "Outage" })),
        ),
        ("search", "GET", "/api/v1/search?q=heart".into(), None),
        ("learning", "GET", "/api/v1/me/history".into(), None),
        (
            "learning",
            "GET",
            "/api/v1/me/continue-watching".into(),
            None,
        ),
        ("delivery", "GET", "/api/v1/assets".into(), None),
        ("delivery", "GET", "/media/".into(), None),
        ("ingest", "GET", "/api/v1/webhooks".into(), None),
        (
            "ingest",
            "GET",
            format!("/api/v1/pulls/{}", Uuid::new_v4()),
            None,
        ),
    ];
    let who = |area: &str, path: &str| -> Option<String> {
        match (area, path) {
            (_, p) if p.starts_with("/media/") => None,
            ("identity", "/api/v1/audit") => Some(root.clone()),
            ("identity", "/api/v1/me") | ("search", _) | ("learning", _) => Some(learner.clone()),
            ("ingest", _) => Some(partner.clone()),
            _ => Some(admin.clone()),
        }
    };
    // Every caller is recognised (and cached) while the database is up.
    let path_of = |path: &String| {
        if path == "/media/" {
            media()
        } else {
            path.clone()
        }
    };
    for (area, method, path, body) in &calls {
        let path = &path_of(path);
        let (status, _, text) = w
            .call_with_headers(method, path, who(area, path).as_deref(), body.clone())
            .await;
        assert!(
            status.as_u16() < 500,
            "{area} {method} {path} before the outage: {status} {text}"
        );
    }

    relay.cut();
    for (area, method, path, body) in &calls {
        let path = &path_of(path);
        let (status, headers, text) = w
            .call_with_headers(method, path, who(area, path).as_deref(), body.clone())
            .await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{area} {method} {path} during the outage: {text}"
        );
        let code: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            code["error"]["code"], "database_unavailable",
            "{area} {path}"
        );
        let retry = headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            retry.is_some_and(|s| s > 0),
            "{area} {path}: no Retry-After"
        );
    }
    // A sign-in cannot be decided either, and says so the same way.
    let (status, headers, _) = w
        .call_with_headers(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(
                json!({ "email": "learner@outage.example", "password": lectern_testkit::PASSWORD }),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));

    relay.restore();
    for (area, method, path, body) in &calls {
        if *method != "GET" {
            continue;
        }
        let path = &path_of(path);
        let (status, _, text) = w
            .call_with_headers(method, path, who(area, path).as_deref(), body.clone())
            .await;
        assert!(
            status.as_u16() < 500,
            "{area} {path} after the outage: {status} {text}"
        );
    }
}
