//! Signed checkpoints: the chain's head anchored outside the database.
//!
//! The chain alone cannot show that rows were removed from its *end*: what
//! remains still verifies. So Lectern periodically writes the head (last
//! row id and hash, signed with the chain key) to object storage under
//! `audit/checkpoints/<id>.json`, one object per checkpoint (zero-padded
//! ids sort by key), and the same body to `audit/checkpoints/latest.json`
//! so finding the newest is one read, not a listing that grows by one
//! object a minute. [`check`] compares the table with the newest one: a head below the checkpoint is a truncation, a different
//! hash at the checkpointed row an edit. Rows written after the newest
//! checkpoint can still go unnoticed; the interval
//! (`LECTERN_AUDIT_CHECKPOINT_INTERVAL`) bounds that window, and a bucket
//! with object lock (WORM) keeps checkpoints themselves from being removed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::Mac;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use lectern_storage::{PutOptions, Store};

use super::ChainKey;

const PREFIX: &str = "audit/checkpoints/";
const LATEST: &str = "audit/checkpoints/latest.json";

/// One checkpoint as stored (JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// The last row of the chain when the checkpoint was taken.
    pub last_id: i64,
    /// Its hash, hex.
    pub last_hash: String,
    pub at: DateTime<Utc>,
    /// HMAC-SHA-256 with the chain key over the fields above, hex.
    pub signature: String,
}

impl Checkpoint {
    fn signed_bytes(last_id: i64, last_hash: &str, at: &DateTime<Utc>) -> String {
        format!(
            "lectern audit checkpoint v1\n{last_id}\n{last_hash}\n{}",
            at.to_rfc3339_opts(SecondsFormat::Micros, true)
        )
    }

    fn new(key: &ChainKey, last_id: i64, last_hash: &[u8]) -> Self {
        let now = Utc::now();
        let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
        let last_hash = hex::encode(last_hash);
        let mut mac = key.mac();
        mac.update(Self::signed_bytes(last_id, &last_hash, &at).as_bytes());
        Self {
            last_id,
            signature: hex::encode(mac.finalize().into_bytes()),
            last_hash,
            at,
        }
    }

    /// Constant-time check of the signature.
    pub fn is_signed_by(&self, key: &ChainKey) -> bool {
        let Ok(signature) = hex::decode(&self.signature) else {
            return false;
        };
        let mut mac = key.mac();
        mac.update(Self::signed_bytes(self.last_id, &self.last_hash, &self.at).as_bytes());
        mac.verify_slice(&signature).is_ok()
    }

    fn storage_key(last_id: i64) -> String {
        format!("{PREFIX}{last_id:020}.json")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("audit database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("audit checkpoint storage: {0}")]
    Storage(#[from] lectern_storage::StorageError),
    #[error("audit checkpoint {key} is not valid JSON: {message}")]
    Malformed { key: String, message: String },
}

/// The newest checkpoint in `store`, if any: `latest.json`, or (a store
/// written before it existed, or one whose pointer was removed) the
/// highest-numbered checkpoint.
pub async fn latest(store: &dyn Store) -> Result<Option<Checkpoint>, CheckpointError> {
    let key = match store.head(LATEST).await {
        Ok(_) => LATEST.to_string(),
        Err(lectern_storage::StorageError::NotFound { .. }) => {
            let listed = store.list(PREFIX).await?;
            match listed.iter().rfind(|o| o.key.ends_with(".json")) {
                Some(newest) => newest.key.clone(),
                None => return Ok(None),
            }
        }
        Err(e) => return Err(e.into()),
    };
    let body = store.get(&key, None).await?.bytes().await?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| CheckpointError::Malformed {
            key,
            message: e.to_string(),
        })
}

/// Writes a checkpoint of the current head unless the newest one already
/// names it; returns the checkpoint written.
pub async fn write(
    db: &PgPool,
    store: &dyn Store,
    key: &ChainKey,
) -> Result<Option<Checkpoint>, CheckpointError> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
            .fetch_optional(db)
            .await?;
    let Some((last_id, last_hash)) = head else {
        return Ok(None);
    };
    if latest(store)
        .await?
        .is_some_and(|c| c.last_id == last_id && c.last_hash == hex::encode(&last_hash))
    {
        return Ok(None);
    }
    let checkpoint = Checkpoint::new(key, last_id, &last_hash);
    let body =
        Bytes::from(serde_json::to_vec_pretty(&checkpoint).expect("a checkpoint serialises"));
    let json = || PutOptions {
        content_type: Some("application/json".into()),
        cache_control: None,
    };
    // The numbered object first: a crash between the two leaves the
    // pointer one checkpoint behind, never ahead of what exists.
    store
        .put_bytes(&Checkpoint::storage_key(last_id), body.clone(), json())
        .await?;
    store.put_bytes(LATEST, body, json()).await?;
    Ok(Some(checkpoint))
}

/// How the table compares with the newest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No checkpoint has been written yet.
    None,
    /// The checkpointed row is there with the checkpointed hash (or was
    /// purged by retention since).
    Matches { checkpoint: Checkpoint },
    /// Rows up to the checkpointed one are missing from the end of the table.
    Truncated {
        checkpoint: Checkpoint,
        /// The last row the table still has.
        table_head: i64,
    },
    /// The checkpointed row is there with another hash.
    Diverged { checkpoint: Checkpoint },
    /// The newest checkpoint's signature is not the chain key's.
    Forged { checkpoint: Checkpoint },
}

pub async fn check(
    db: &PgPool,
    store: &dyn Store,
    key: &ChainKey,
) -> Result<Verdict, CheckpointError> {
    let Some(checkpoint) = latest(store).await? else {
        return Ok(Verdict::None);
    };
    if !checkpoint.is_signed_by(key) {
        return Ok(Verdict::Forged { checkpoint });
    }
    let anchor: i64 = sqlx::query_scalar("SELECT last_id FROM audit_anchor")
        .fetch_one(db)
        .await?;
    if checkpoint.last_id <= anchor {
        return Ok(Verdict::Matches { checkpoint });
    }
    let row: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
        .bind(checkpoint.last_id)
        .fetch_optional(db)
        .await?;
    Ok(match row {
        Some(hash) if hex::encode(&hash) == checkpoint.last_hash => Verdict::Matches { checkpoint },
        Some(_) => Verdict::Diverged { checkpoint },
        None => {
            let table_head: Option<i64> = sqlx::query_scalar("SELECT max(id) FROM audit_log")
                .fetch_one(db)
                .await?;
            Verdict::Truncated {
                checkpoint,
                table_head: table_head.unwrap_or(anchor),
            }
        }
    })
}

/// Writes a checkpoint every `every` (when the head moved) until `cancel`,
/// and once more on the way out.
pub async fn write_periodically(
    db: PgPool,
    store: Arc<dyn Store>,
    key: ChainKey,
    schema_ready: Arc<AtomicBool>,
    every: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        if !schema_ready.load(Ordering::Acquire) {
            continue;
        }
        if let Err(e) = write(&db, store.as_ref(), &key).await {
            tracing::warn!(error = %e, "audit checkpoint failed");
        }
    }
    if schema_ready.load(Ordering::Acquire) {
        if let Err(e) = write(&db, store.as_ref(), &key).await {
            tracing::warn!(error = %e, "final audit checkpoint failed");
        }
    }
}
