//! Partner webhooks end to end inside one process: an endpoint registered
//! through the API, an asset that fails, and a real HTTP receiver on
//! loopback that answers 500 twice and then 200. The event arrives signed
//! with the secret shown at registration, is retried with backoff, and is
//! delivered exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use lectern_assets::{self as assets, NewAsset};
use lectern_identity::users;
use lectern_ingest::http::webhooks::{self, WebhookSettings};
use lectern_testkit::World;
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

/// (delivery id, signature header, raw body) of one request.
type Request = (String, String, Vec<u8>);

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Request>>>,
    /// Statuses to answer, in order; then 200.
    script: Arc<Mutex<Vec<u16>>>,
}

impl Receiver {
    async fn start(script: Vec<u16>) -> (Self, String) {
        let receiver = Receiver {
            seen: Arc::default(),
            script: Arc::new(Mutex::new(script)),
        };
        let r = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks/lectern",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    r.seen.lock().unwrap().push((
                        header("lectern-delivery"),
                        header("lectern-signature"),
                        body.to_vec(),
                    ));
                    let mut script = r.script.lock().unwrap();
                    let status = if script.is_empty() {
                        200
                    } else {
                        script.remove(0)
                    };
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/lectern", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

/// What a partner's receiver does: recompute the HMAC over "<t>.<body>".
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value.to_owned()),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&v1).is_ok()
}

async fn partner(world: &World, org_name: &str) -> (Uuid, String) {
    let org = world.org(org_name).await;
    let (_, key) = users::create_partner_key(world.db(), org, "integration")
        .await
        .unwrap();
    (org, key)
}

async fn fail_an_asset(db: &PgPool, org: Uuid) -> Uuid {
    let id = Uuid::new_v4();
    assets::create(
        db,
        &NewAsset {
            id,
            organisation_id: org,
            source_key: lectern_assets::keys::source_key(id),
            title: Some("Broken recording".into()),
            profile: "default".into(),
            priority: 0,
        },
    )
    .await
    .unwrap();
    sqlx::query(
        "UPDATE assets SET status = 'failed', error_code = 'corrupt_media',
                error_message = 'the file ends in the middle of a frame' WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await
    .unwrap();
    id
}

fn loopback_allowed(backoff: Duration) -> WebhookSettings {
    WebhookSettings {
        backoff,
        allow_private: "127.0.0.0/8".parse().unwrap(),
        ..WebhookSettings::default()
    }
}

#[sqlx::test(migrations = "../migrations")]
async fn a_failed_asset_is_delivered_once_signed_after_two_500s(db: PgPool) {
    let world = World::new(db).await;
    let (org, key) = partner(&world, "Cardiology Society").await;
    let (receiver, url) = Receiver::start(vec![500, 500]).await;
    let (status, created) = world
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(&key),
            Some(serde_json::json!({ "url": url })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let webhook_id = created["id"].as_str().unwrap().to_owned();
    let (_, listed) = world
        .call("GET", "/api/v1/webhooks", Some(&key), None)
        .await;
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once: {listed}"
    );

    let asset = fail_an_asset(world.db(), org).await;
    let mut state = world.state.ingest.clone();
    state.webhooks = Arc::new(loopback_allowed(Duration::from_millis(200)));
    for _ in 0..200 {
        webhooks::dispatch_due(&state).await.unwrap();
        if receiver.seen().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more is sent once it was taken.
    for _ in 0..5 {
        webhooks::dispatch_due(&state).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = receiver.seen();
    assert_eq!(seen.len(), 3, "two refusals, one delivery, nothing after");
    for (delivery, signature, body) in &seen {
        assert_eq!(delivery, &seen[0].0, "one delivery id across retries");
        assert!(
            verify(&secret, signature, body),
            "signature {signature} verifies"
        );
        assert!(!verify("whsec_wrong", signature, body));
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["event"], "asset.failed");
        assert_eq!(event["asset"]["id"], asset.to_string());
        assert_eq!(event["asset"]["error"]["code"], "corrupt_media");
    }
    let (status, log) = world
        .call(
            "GET",
            &format!("/api/v1/webhooks/{webhook_id}/deliveries"),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let deliveries = log["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{log}");
    assert_eq!(deliveries[0]["state"], "delivered");
    assert_eq!(deliveries[0]["attempts"], 3);
    assert_eq!(deliveries[0]["last_status"], 200);

    // Another organisation neither sees the log nor the endpoint.
    let (_, other) = partner(&world, "Alumni Office").await;
    let (status, _) = world
        .call(
            "GET",
            &format!("/api/v1/webhooks/{webhook_id}/deliveries"),
            Some(&other),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[sqlx::test(migrations = "../migrations")]
async fn private_targets_are_refused_unless_allowed(db: PgPool) {
    let world = World::new(db).await;
    let (org, key) = partner(&world, "District Training Centre").await;
    let (receiver, url) = Receiver::start(vec![]).await;
    let (status, created) = world
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(&key),
            Some(serde_json::json!({ "url": url })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    for bad in [
        "ftp://example.org/x",
        "http://user:pw@example.org/",
        "not a url",
    ] {
        let (status, body) = world
            .call(
                "POST",
                "/api/v1/webhooks",
                Some(&key),
                Some(serde_json::json!({ "url": bad })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_url");
    }
    fail_an_asset(world.db(), org).await;
    // Default settings: loopback is not a partner's to reach.
    let mut state = world.state.ingest.clone();
    state.webhooks = Arc::new(WebhookSettings::default());
    assert_eq!(webhooks::dispatch_due(&state).await.unwrap(), 1);
    assert!(receiver.seen().is_empty());
    let (error, pending): (String, String) =
        sqlx::query_as("SELECT last_error, state FROM webhook_deliveries")
            .fetch_one(world.db())
            .await
            .unwrap();
    assert!(
        error.contains("127.0.0.1"),
        "the refusal names the address: {error}"
    );
    assert_eq!(
        pending, "pending",
        "retried later, in case the operator allows it"
    );
}
