//! Assets as partners and operators read them, through the router on a
//! real PostgreSQL per test: the fields every answer carries, the status
//! filter and its refusal, keyset pages, renditions and the lifecycle.

use axum::http::StatusCode;
use lectern_testkit::World;
use lectern_web::Role;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

const FIELDS: [&str; 15] = [
    "id",
    "organisation_id",
    "status",
    "title",
    "profile",
    "progress",
    "duration_s",
    "error",
    "master_url",
    "renditions",
    "created_at",
    "updated_at",
    "first_playable_at",
    "ready_at",
    "loudness",
];

async fn asset(w: &World, org: Uuid, status: &str, minutes_ago: i32) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO assets (id, organisation_id, status, source_key, title, progress, created_at)
         VALUES ($1, $2, $3, $4, $5, 42.04, now() - make_interval(mins => $6))",
    )
    .bind(id)
    .bind(org)
    .bind(status)
    .bind(format!("assets/{id}/source"))
    .bind(format!("Lecture {minutes_ago}"))
    .bind(minutes_ago)
    .execute(w.db())
    .await
    .unwrap();
    id
}

#[sqlx::test(migrations = "../migrations")]
async fn assets_list_show_and_events(db: PgPool) {
    let w = World::new(db).await;
    let org = w.org("Continuing Medical Education").await;
    let (_, partner) = lectern_identity::users::create_partner_key(w.db(), org, "tools")
        .await
        .unwrap();
    let uploaded = asset(&w, org, "uploaded", 3).await;
    let failed = asset(&w, org, "failed", 2).await;
    let ready = asset(&w, org, "ready", 1).await;
    sqlx::query(
        "UPDATE assets SET error_code = 'corrupt_media', error_message = 'no video stream'
         WHERE id = $1",
    )
    .bind(failed)
    .execute(w.db())
    .await
    .unwrap();
    let prefix = format!("assets/{ready}/out/attempt-1/");
    sqlx::query("UPDATE assets SET output_prefix = $2, ready_at = now() WHERE id = $1")
        .bind(ready)
        .bind(&prefix)
        .execute(w.db())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO asset_renditions (asset_id, name, kind, width, height, codecs, bandwidth, status, progress)
         VALUES ($1, 'audio', 'audio', NULL, NULL, 'mp4a.40.2', 64000, 'ready', 100),
                ($1, '360p', 'video', 640, 360, 'avc1.64001e', 800000, 'ready', 100),
                ($1, '720p', 'video', 1280, 720, 'avc1.64001f', 2500000, 'encoding', 55.5)",
    )
    .bind(ready)
    .execute(w.db())
    .await
    .unwrap();

    // Newest first, every field on every asset.
    let (status, page) = w.call("GET", "/api/v1/assets", Some(&partner), None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let assets = page["assets"].as_array().unwrap();
    let ids: Vec<&str> = assets.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [ready.to_string(), failed.to_string(), uploaded.to_string()]
    );
    for a in assets {
        let keys: Vec<&String> = a.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), FIELDS.len(), "{a}");
        for field in FIELDS {
            assert!(a.get(field).is_some(), "{field} missing from {a}");
        }
        assert_eq!(a["renditions"], Value::Array(vec![]), "{a}");
        // Never transcoded: nothing measured.
        assert_eq!(a["loudness"], Value::Null, "{a}");
        assert_eq!(a["progress"], 42.0, "{a}");
        assert_eq!(a["organisation_id"], org.to_string());
    }
    assert_eq!(assets[1]["status"], "failed");
    assert_eq!(
        assets[1]["error"],
        serde_json::json!({"code": "corrupt_media", "message": "no video stream"})
    );
    assert!(assets[2]["error"].is_null() && assets[2]["master_url"].is_null());
    assert!(page["next"].is_null(), "{page}");

    // The status filter, and a status that is none.
    let (status, page) = w
        .call("GET", "/api/v1/assets?status=failed", Some(&partner), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["assets"].as_array().unwrap().len(), 1);
    assert_eq!(page["assets"][0]["id"], failed.to_string());
    let (status, body) = w
        .call("GET", "/api/v1/assets?status=done", Some(&partner), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_status");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("ready"),
        "{body}"
    );
    let (status, body) = w
        .call("GET", "/api/v1/assets?limit=0", Some(&partner), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_limit");

    // Keyset pages: two, then the rest.
    let (_, first) = w
        .call("GET", "/api/v1/assets?limit=2", Some(&partner), None)
        .await;
    assert_eq!(first["assets"].as_array().unwrap().len(), 2);
    let next = &first["next"];
    assert_eq!(next["before_id"], failed.to_string(), "{first}");
    let uri = format!(
        "/api/v1/assets?limit=2&before={}&before_id={}",
        next["before"].as_str().unwrap().replace('+', "%2B"),
        next["before_id"].as_str().unwrap()
    );
    let (status, second) = w.call("GET", &uri, Some(&partner), None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert_eq!(second["assets"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["assets"][0]["id"], uploaded.to_string());
    assert!(second["next"].is_null());

    // One asset: its renditions, highest video first, and the player's URL.
    let (status, one) = w
        .call(
            "GET",
            &format!("/api/v1/assets/{ready}"),
            Some(&partner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["status"], "ready");
    let names: Vec<&str> = one["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["720p", "360p", "audio"], "{one}");
    assert_eq!(one["renditions"][0]["kind"], "video");
    assert_eq!(one["renditions"][0]["status"], "encoding");
    assert_eq!(one["renditions"][0]["bandwidth"], 2_500_000);
    assert_eq!(one["renditions"][2]["width"], Value::Null);
    let master = one["master_url"].as_str().unwrap();
    assert!(
        master.starts_with(&format!("/media/{prefix}master.m3u8?token=")),
        "{master}"
    );

    // Another organisation sees none of it.
    let elsewhere = w.org("Elsewhere").await;
    let (_, stranger) = lectern_identity::users::create_partner_key(w.db(), elsewhere, "x")
        .await
        .unwrap();
    let (status, body) = w
        .call(
            "GET",
            &format!("/api/v1/assets/{ready}"),
            Some(&stranger),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, page) = w.call("GET", "/api/v1/assets", Some(&stranger), None).await;
    assert_eq!(page["assets"], Value::Array(vec![]));

    // The lifecycle, for operators: the creation, then each transition.
    sqlx::query(
        "INSERT INTO asset_events (asset_id, from_status, to_status, worker, attempt, detail)
         VALUES ($1, 'uploaded', 'probing', 'worker-1', 1, '{\"took_ms\": 12}')",
    )
    .bind(uploaded)
    .execute(w.db())
    .await
    .unwrap();
    let email = format!("admin-{}@cme.example.org", Uuid::new_v4().simple());
    w.user(Some(org), &email, Role::ContentAdmin).await;
    let admin = w.login(&email).await;
    let (status, events) = w
        .call(
            "GET",
            &format!("/api/v1/assets/{uploaded}/events"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["asset_id"], uploaded.to_string());
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events[0]["from_status"].is_null());
    assert_eq!(events[0]["to_status"], "uploaded");
    assert_eq!(events[1]["from_status"], "uploaded");
    assert_eq!(events[1]["to_status"], "probing");
    assert_eq!(events[1]["worker"], "worker-1");
    assert_eq!(events[1]["attempt"], 1);
    assert_eq!(events[1]["detail"]["took_ms"], 12);
    let (status, _) = w
        .call(
            "GET",
            &format!("/api/v1/assets/{uploaded}/events"),
            Some(&partner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
