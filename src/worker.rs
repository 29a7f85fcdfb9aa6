//! `lectern worker`, and the in-process worker `serve` runs in embedded
//! mode: both are the same `pipelines::worker::Worker` over the shared
//! database and object storage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lectern_pipelines::worker::{Worker, WorkerConfig};
use lectern_storage::Store;
use sqlx::PgPool;

use crate::config::Config;
use crate::database::Database;

pub async fn run(config: Config) -> Result<()> {
    let db = Database::open(&config).await?;
    // A worker with no schema can do nothing: wait for the database (the
    // background migration logs why it is waiting).
    let schema_ready = Arc::new(AtomicBool::new(false));
    db.migrate_in_background(schema_ready.clone());
    while !schema_ready.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let store = crate::process::open_store(&config.storage).await?;
    let concurrency = config
        .worker
        .concurrency
        .unwrap_or_else(WorkerConfig::default_concurrency);
    worker(&config, db.pool.clone(), store, concurrency)?
        .run(crate::process::shutdown_signal())
        .await;
    db.close().await;
    Ok(())
}

/// A worker named after this host and process, so events and leases say
/// which machine did what.
pub fn worker(
    config: &Config,
    db: PgPool,
    store: Arc<dyn Store>,
    concurrency: usize,
) -> Result<Worker> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let work_dir = config.settings.data_dir.join("work");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create {}", work_dir.display()))?;
    Ok(Worker::new(
        db,
        store,
        WorkerConfig {
            name: format!("{host}:{}", std::process::id()),
            lease: Duration::from_secs(config.worker.lease_secs),
            concurrency,
            work_dir,
            poll_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(config.worker.drain_secs),
            chunking: config.worker.chunking,
        },
    ))
}
