//! What the long-running commands (`serve`, `worker`, `demo`, `admin`)
//! share: opening the configured object store and waiting for the signal
//! to stop.

use std::sync::Arc;

use anyhow::{Context, Result};
use lectern_storage::{FsStore, S3Store, Store};

use crate::config::StorageConfig;

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

pub async fn shutdown_signal() {
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
