//! Partner webhooks end to end inside one process: an endpoint registered
//! through the API, an asset that fails, and a real HTTP receiver on
//! loopback that answers 500 twice and then 200. The event arrives signed
//! with the secret shown at registration, is retried with backoff, and is
//! delivered exactly once. And a bad endpoint — slow to answer, or
//! disabled — harms only itself.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// How long each answer takes.
    delay: Duration,
    /// When each request arrived and when each was answered.
    arrivals: Arc<Mutex<Vec<Instant>>>,
    answers: Arc<Mutex<Vec<Instant>>>,
    /// Requests being answered now, and the most there were at once.
    in_flight: Arc<Mutex<(usize, usize)>>,
}

impl Receiver {
    async fn start(script: Vec<u16>) -> (Self, String) {
        Self::start_with(script, Duration::ZERO).await
    }

    /// A receiver that takes `delay` to answer each request.
    async fn slow(delay: Duration) -> (Self, String) {
        Self::start_with(vec![], delay).await
    }

    async fn start_with(script: Vec<u16>, delay: Duration) -> (Self, String) {
        let receiver = Receiver {
            script: Arc::new(Mutex::new(script)),
            delay,
            ..Receiver::default()
        };
        let r = receiver.clone();
        let app = axum::Router::new().route(
            "/hooks/lectern",
            axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let r = r.clone();
                async move {
                    r.arrivals.lock().unwrap().push(Instant::now());
                    {
                        let mut in_flight = r.in_flight.lock().unwrap();
                        in_flight.0 += 1;
                        in_flight.1 = in_flight.1.max(in_flight.0);
                    }
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
                    tokio::time::sleep(r.delay).await;
                    let status = {
                        let mut script = r.script.lock().unwrap();
                        if script.is_empty() {
                            200
                        } else {
                            script.remove(0)
                        }
                    };
                    r.in_flight.lock().unwrap().0 -= 1;
                    r.answers.lock().unwrap().push(Instant::now());
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

    /// Distinct deliveries answered so far.
    fn answered(&self) -> usize {
        let answered = self.answers.lock().unwrap().len();
        let mut ids: Vec<String> = self.seen().into_iter().map(|(id, _, _)| id).collect();
        ids.sort();
        ids.dedup();
        answered.min(ids.len())
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
    // `/metrics` counts each attempt once by what became of it.
    world
        .user(None, "root@webhooks.example", lectern_web::Role::SuperAdmin)
        .await;
    let root = world.login("root@webhooks.example").await;
    let (status, metrics) = world.call_raw("GET", "/metrics", Some(&root), None).await;
    assert_eq!(status, StatusCode::OK, "{metrics}");
    for line in [
        "lectern_webhook_deliveries_total{outcome=\"delivered\"} 1",
        "lectern_webhook_deliveries_total{outcome=\"retried\"} 2",
        "lectern_webhook_deliveries_total{outcome=\"given_up\"} 0",
        "lectern_webhook_deliveries_total{outcome=\"failed\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} missing:\n{metrics}"
        );
    }

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

async fn register(world: &World, key: &str, url: &str) -> String {
    let (status, created) = world
        .call(
            "POST",
            "/api/v1/webhooks",
            Some(key),
            Some(serde_json::json!({ "url": url })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

/// A bad endpoint harms only itself (issue #16): a receiver that takes two
/// seconds to answer gets its deliveries concurrently, a few at a time, and
/// each exactly once although two dispatchers (two nodes) run; another
/// partner's event does not wait behind them; and an endpoint disabled
/// while its events were pending receives none of them.
#[sqlx::test(migrations = "../migrations")]
async fn a_slow_endpoint_delays_no_one_and_a_disabled_one_gets_nothing(db: PgPool) {
    const SLOW_EVENTS: usize = 8;
    let world = World::new(db).await;
    let (slow_org, slow_key) = partner(&world, "Cardiology Society").await;
    let (fast_org, fast_key) = partner(&world, "Alumni Office").await;
    let (slow, slow_url) = Receiver::slow(Duration::from_secs(2)).await;
    let (disabled, disabled_url) = Receiver::start(vec![]).await;
    let (fast, fast_url) = Receiver::start(vec![]).await;
    let slow_id = register(&world, &slow_key, &slow_url).await;
    let disabled_id = register(&world, &slow_key, &disabled_url).await;
    register(&world, &fast_key, &fast_url).await;
    for _ in 0..SLOW_EVENTS {
        fail_an_asset(world.db(), slow_org).await;
    }
    // Disabled with its events pending.
    let (status, body) = world
        .call(
            "DELETE",
            &format!("/api/v1/webhooks/{disabled_id}"),
            Some(&slow_key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    fail_an_asset(world.db(), fast_org).await;

    let mut state = world.state.ingest.clone();
    state.webhooks = Arc::new(WebhookSettings {
        poll: Duration::from_millis(50),
        // Longer than the slow receiver takes: it does answer, slowly.
        timeout: Duration::from_secs(3),
        per_endpoint: 4,
        ..loopback_allowed(Duration::from_secs(60))
    });
    let cancel = tokio_util::sync::CancellationToken::new();
    let nodes: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(webhooks::dispatch_periodically(
                state.clone(),
                cancel.clone(),
            ))
        })
        .collect();
    for _ in 0..1200 {
        if slow.answered() >= SLOW_EVENTS && !fast.seen().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    for node in nodes {
        node.await.unwrap();
    }

    assert!(
        disabled.seen().is_empty(),
        "a disabled endpoint was posted to"
    );
    let seen = slow.seen();
    let mut ids: Vec<&str> = seen.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort();
    let posts = ids.len();
    ids.dedup();
    assert_eq!(
        (ids.len(), posts),
        (SLOW_EVENTS, SLOW_EVENTS),
        "every delivery to the slow endpoint posted exactly once"
    );
    let most_at_once = slow.in_flight.lock().unwrap().1;
    assert!(
        (2..=4).contains(&most_at_once),
        "the slow endpoint's deliveries run concurrently, at most 4 at once: {most_at_once}"
    );
    let fast_arrived = fast.arrivals.lock().unwrap()[0];
    let first_slow_answer = *slow.answers.lock().unwrap().iter().min().unwrap();
    assert!(
        fast_arrived < first_slow_answer,
        "another partner's event waited for the slow receiver"
    );

    let log = |id: String| {
        let world = &world;
        let key = slow_key.clone();
        async move {
            let (status, log) = world
                .call(
                    "GET",
                    &format!("/api/v1/webhooks/{id}/deliveries"),
                    Some(&key),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{log}");
            log["deliveries"].as_array().unwrap().clone()
        }
    };
    let delivered = log(slow_id).await;
    assert_eq!(delivered.len(), SLOW_EVENTS);
    for d in &delivered {
        assert_eq!(
            (d["state"].as_str(), d["attempts"].as_i64()),
            (Some("delivered"), Some(1)),
            "{d}"
        );
    }
    let settled = log(disabled_id).await;
    assert_eq!(settled.len(), SLOW_EVENTS);
    for d in &settled {
        assert_eq!(d["state"], "failed", "{d}");
        assert!(
            d["last_error"].as_str().unwrap().contains("disabled"),
            "{d}"
        );
    }
}
