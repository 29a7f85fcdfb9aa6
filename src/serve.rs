//! `lectern serve` and `lectern migrate`: wiring config → database →
//! storage → HTTP, with graceful shutdown on SIGTERM / Ctrl-C.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use lectern_api::AppState;
use lectern_storage::{FsStore, S3Store, Store};

use crate::config::{Config, StorageConfig};
use crate::database::Database;

pub async fn migrate(config: Config) -> Result<()> {
    let db = Database::open(&config).await?;
    db.migrate().await?;
    println!("migrations applied");
    db.close().await;
    Ok(())
}

pub async fn serve(config: Config) -> Result<()> {
    let db = Database::open(&config).await?;
    let schema_ready = Arc::new(AtomicBool::new(false));
    db.migrate_in_background(schema_ready.clone());
    let store = open_store(&config.storage).await?;
    let state = AppState {
        db: db.pool.clone(),
        store,
        schema_ready,
        probe_timeout: Duration::from_secs(2),
    };
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {} (LECTERN_HTTP_ADDR)", config.http_addr))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, storage = state.store.backend_name(), embedded_db = config.is_embedded(), workers = config.effective_serve_workers(), "lectern is serving");
    println!("lectern: serving on http://{addr}/");
    axum::serve(listener, lectern_api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server failed")?;
    tracing::info!("shutting down");
    db.close().await;
    Ok(())
}

pub async fn open_store(config: &StorageConfig) -> Result<Arc<dyn Store>> {
    Ok(match config {
        StorageConfig::Fs { root } => Arc::new(
            FsStore::open(root.clone())
                .await
                .with_context(|| format!("cannot use {} for object storage", root.display()))?,
        ),
        StorageConfig::S3(s3) => Arc::new(
            S3Store::new(s3.clone()).context("invalid S3 storage configuration (LECTERN_S3_*)")?,
        ),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
