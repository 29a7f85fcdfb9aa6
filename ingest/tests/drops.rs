//! Recording drops on real storage (a local `fs` root and the Garage
//! bucket) and a real PostgreSQL: each settled object becomes one asset,
//! whatever restarts or runs beside the watcher.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{media_bytes, s3_store};
use lectern_clock::Clock;
use lectern_ingest::drops::{DropConfig, DropError, DropWatcher};
use lectern_storage::{FsStore, PutOptions, Store};
use sqlx::PgPool;
use uuid::Uuid;

/// A new organisation (tenant) to own what the test creates.
async fn organisation(db: &PgPool, name: &str) -> (Uuid, ()) {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO organisations (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(name)
        .execute(db)
        .await
        .expect("insert organisation");
    (id, ())
}

/// The production default: the clock is moved, never waited on.
const SETTLE: Duration = Duration::from_secs(60);

fn config(prefix: &str, organisation: &str) -> DropConfig {
    DropConfig {
        settle: SETTLE,
        ..DropConfig::new(prefix, organisation)
    }
}

/// A prefix of its own, so tests sharing the Garage bucket never meet.
fn prefix() -> String {
    format!("drops/test-{}/", Uuid::new_v4().simple())
}

async fn put(store: &dyn Store, key: &str, bytes: Vec<u8>) {
    store
        .put_bytes(key, Bytes::from(bytes), PutOptions::default())
        .await
        .expect("drop an object");
}

async fn assets_from(db: &PgPool, key: &str) -> Vec<(Uuid, Uuid, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT a.id, a.organisation_id, a.title,
                (SELECT count(*) FROM jobs j WHERE j.asset_id = a.id)
         FROM assets a WHERE a.source_key = $1",
    )
    .bind(key)
    .fetch_all(db)
    .await
    .unwrap()
}

async fn clean(store: &dyn Store, prefix: &str) {
    for object in store.list(prefix).await.unwrap() {
        store.delete(&object.key).await.unwrap();
    }
}

async fn once_across_restarts(db: PgPool, store: Arc<dyn Store>) {
    let (org, _) = organisation(&db, "Cardiology Society").await;
    let prefix = prefix();
    let key = format!("{prefix}2026-05-01 Grand round.mp4");
    put(store.as_ref(), &key, media_bytes(300_000)).await;

    let (clock, hand) = Clock::manual();
    let mut watcher = DropWatcher::new(
        db.clone(),
        store.clone(),
        config(&prefix, "Cardiology Society"),
    )
    .with_clock(clock.clone());
    let first = watcher.scan().await.unwrap();
    assert!(
        first.created.is_empty(),
        "never taken on first sight: {first:?}"
    );
    assert_eq!(first.waiting, 1);
    hand.advance(SETTLE);
    let settled = watcher.scan().await.unwrap();
    assert_eq!(settled.created.len(), 1, "{settled:?}");
    assert!(watcher.scan().await.unwrap().created.is_empty());
    drop(watcher);

    // A restarted watcher (by id this time) sees the object settle again
    // but the database knows it was taken.
    let mut restarted =
        DropWatcher::new(db.clone(), store.clone(), config(&prefix, &org.to_string()))
            .with_clock(clock);
    let again = restarted.scan().await.unwrap();
    assert_eq!(
        again.waiting, 0,
        "a recorded drop is not even observed: {again:?}"
    );
    hand.advance(SETTLE);
    assert!(restarted.scan().await.unwrap().created.is_empty());

    let assets = assets_from(&db, &key).await;
    assert_eq!(assets.len(), 1, "exactly one asset: {assets:?}");
    let (id, asset_org, title, jobs) = assets[0].clone();
    assert_eq!(id, settled.created[0]);
    assert_eq!(asset_org, org);
    assert_eq!(title.as_deref(), Some("2026-05-01 Grand round"));
    assert_eq!(jobs, 1, "its transcode job is enqueued");
    // The source is the dropped object itself, untouched.
    assert_eq!(store.head(&key).await.unwrap().size, 300_000);
    clean(store.as_ref(), &prefix).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_drop_becomes_one_asset_across_restarts_on_fs(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    once_across_restarts(db, Arc::new(FsStore::open(dir.path()).await.unwrap())).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_drop_becomes_one_asset_across_restarts_on_garage(db: PgPool) {
    once_across_restarts(db, s3_store()).await;
}

async fn growing_waits(db: PgPool, store: Arc<dyn Store>) {
    organisation(&db, "Cardiology Society").await;
    let prefix = prefix();
    let key = format!("{prefix}live-session.ts.mp4");
    let (clock, hand) = Clock::manual();
    let mut watcher = DropWatcher::new(
        db.clone(),
        store.clone(),
        config(&prefix, "Cardiology Society"),
    )
    .with_clock(clock);
    // The platform rewrites the object as the recording grows.
    let mut size = 0;
    for step in 1..=4 {
        size = step * 100_000;
        put(store.as_ref(), &key, media_bytes(size)).await;
        let report = watcher.scan().await.unwrap();
        assert!(
            report.created.is_empty(),
            "taken while still growing at step {step}"
        );
        hand.advance(SETTLE * 2 / 3);
    }
    // Unchanged for all but the last instant of the settle period: still
    // waiting. The clock stands still between scans, so this holds
    // however loaded the machine is.
    hand.advance(SETTLE / 3 - Duration::from_millis(1));
    assert!(watcher.scan().await.unwrap().created.is_empty());
    hand.advance(Duration::from_millis(1));
    let report = watcher.scan().await.unwrap();
    assert_eq!(report.created.len(), 1, "{report:?}");
    let (recorded,): (i64,) = sqlx::query_as("SELECT size FROM drops WHERE key = $1")
        .bind(&key)
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(recorded, size as i64, "the whole recording was taken");
    clean(store.as_ref(), &prefix).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_growing_object_waits_until_settled_on_fs(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    growing_waits(db, Arc::new(FsStore::open(dir.path()).await.unwrap())).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn a_growing_object_waits_until_settled_on_garage(db: PgPool) {
    growing_waits(db, s3_store()).await;
}

async fn concurrent_watchers(db: PgPool, store: Arc<dyn Store>) {
    organisation(&db, "Cardiology Society").await;
    let prefix = prefix();
    let keys: Vec<String> = (0..6).map(|i| format!("{prefix}room-{i}.mp4")).collect();
    for key in &keys {
        put(store.as_ref(), key, media_bytes(50_000)).await;
    }
    put(
        store.as_ref(),
        &format!("{prefix}notes.pdf"),
        b"%PDF-1.7\n".repeat(100),
    )
    .await;
    let (clock, hand) = Clock::manual();
    let mut a = DropWatcher::new(
        db.clone(),
        store.clone(),
        config(&prefix, "Cardiology Society"),
    )
    .with_clock(clock.clone());
    let mut b = DropWatcher::new(
        db.clone(),
        store.clone(),
        config(&prefix, "Cardiology Society"),
    )
    .with_clock(clock);
    a.scan().await.unwrap();
    b.scan().await.unwrap();
    hand.advance(SETTLE);
    let (ra, rb) = tokio::join!(a.scan(), b.scan());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.created.len() + rb.created.len(),
        keys.len(),
        "{ra:?} {rb:?}"
    );
    assert_eq!(
        ra.rejected.len() + rb.rejected.len(),
        1,
        "the PDF is refused once"
    );
    for key in &keys {
        assert_eq!(assets_from(&db, key).await.len(), 1, "{key}");
    }
    let (total,): (i64,) = sqlx::query_as("SELECT count(*) FROM assets")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(total, keys.len() as i64);
    clean(store.as_ref(), &prefix).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn two_watchers_at_once_create_each_asset_once_on_fs(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    concurrent_watchers(db, Arc::new(FsStore::open(dir.path()).await.unwrap())).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn two_watchers_at_once_create_each_asset_once_on_garage(db: PgPool) {
    concurrent_watchers(db, s3_store()).await;
}

#[sqlx::test(migrations = "../migrations")]
async fn an_unknown_organisation_is_named(db: PgPool) {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(FsStore::open(dir.path()).await.unwrap());
    let mut watcher = DropWatcher::new(db, store, config("drops/live/", "No Such Society"));
    let err = watcher.scan().await.unwrap_err();
    assert!(matches!(err, DropError::UnknownOrganisation(_)), "{err}");
    assert!(err.to_string().contains("No Such Society"));
}
