//! Recording drops: a live platform writes its session recordings under a
//! storage prefix the operator names (`LECTERN_DROP_PREFIX`), and each new
//! complete object there becomes an asset of one organisation
//! (`LECTERN_DROP_ORG`), exactly once.
//!
//! **Complete** means its size and ETag have not changed for a settle
//! period. On S3 a multipart upload is invisible until it completes, but a
//! platform writing through plain PUTs of growing versions, or a sync tool,
//! can expose an object that is still changing; a recording taken too early
//! would be cut short. A watcher that starts (or restarts) observes every
//! candidate afresh, so nothing is taken before a full settle period of its
//! own.
//!
//! **Exactly once** is the database's job, not the watcher's memory: the
//! `(key, etag)` row in `drops` is inserted in the transaction that creates
//! the asset, and its primary key makes a second watcher — another node, or
//! this one after a restart — insert nothing and roll its asset back. A
//! later version of the same key (new ETag) is a new recording.
//!
//! The asset's source is the dropped object itself, not a copy: recordings
//! are large and the pipeline only reads its source.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lectern_assets::{self as assets, NewAsset};
use lectern_clock::Clock;
use lectern_storage::{ByteRange, ObjectMeta, StorageError, Store};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::sniff::{sniff, SNIFF_LEN};

/// Operator settings of the drop watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropConfig {
    /// Storage prefix to watch, e.g. `drops/live/`.
    pub prefix: String,
    /// The organisation new assets belong to: its id or its name.
    pub organisation: String,
    /// Encoding profile of the assets.
    pub profile: String,
    /// Time between two listings of the prefix.
    pub interval: Duration,
    /// How long an object must stay unchanged to count as complete.
    pub settle: Duration,
}

impl DropConfig {
    pub fn new(prefix: impl Into<String>, organisation: impl Into<String>) -> Self {
        DropConfig {
            prefix: prefix.into(),
            organisation: organisation.into(),
            profile: "default".to_owned(),
            interval: Duration::from_secs(30),
            settle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DropError {
    #[error("LECTERN_DROP_ORG names no organisation: {0:?}")]
    UnknownOrganisation(String),
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    #[error("database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// What one [`DropWatcher::scan`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Assets created by this scan.
    pub created: Vec<Uuid>,
    /// Objects refused because they are not media.
    pub rejected: Vec<String>,
    /// Objects still settling (new, or changed since the last scan).
    pub waiting: usize,
}

/// A candidate as last seen, and since when it has looked like that.
#[derive(Debug)]
struct Observation {
    size: u64,
    etag: String,
    since: Instant,
}

/// Watches one prefix. Several may run at once (one per API node); the
/// database keeps them from taking an object twice.
pub struct DropWatcher {
    db: PgPool,
    store: Arc<dyn Store>,
    config: DropConfig,
    organisation_id: Option<Uuid>,
    seen: HashMap<String, Observation>,
    /// What "unchanged for the settle period" is measured with.
    clock: Clock,
}

impl DropWatcher {
    pub fn new(db: PgPool, store: Arc<dyn Store>, config: DropConfig) -> Self {
        DropWatcher {
            db,
            store,
            config,
            organisation_id: None,
            seen: HashMap::new(),
            clock: Clock::system(),
        }
    }

    /// The same watcher, timing settles on `clock` (tests move it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Lists the prefix once and takes every object that has settled.
    pub async fn scan(&mut self) -> Result<ScanReport, DropError> {
        let organisation_id = self.organisation().await?;
        let listed = self.store.list(&self.config.prefix).await?;
        let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        let taken: HashSet<(String, String)> =
            sqlx::query_as("SELECT key, etag FROM drops WHERE key = ANY($1)")
                .bind(&keys)
                .fetch_all(&self.db)
                .await?
                .into_iter()
                .collect();
        let now = self.clock.now();
        let mut report = ScanReport::default();
        let mut candidates = HashSet::new();
        for object in listed {
            if taken.contains(&(object.key.clone(), object.etag.clone())) {
                continue;
            }
            candidates.insert(object.key.clone());
            let settled = match self.seen.get_mut(&object.key) {
                Some(o) if o.size == object.size && o.etag == object.etag => {
                    now.duration_since(o.since) >= self.config.settle
                }
                Some(o) => {
                    *o = Observation {
                        size: object.size,
                        etag: object.etag.clone(),
                        since: now,
                    };
                    false
                }
                None => {
                    self.seen.insert(
                        object.key.clone(),
                        Observation {
                            size: object.size,
                            etag: object.etag.clone(),
                            since: now,
                        },
                    );
                    false
                }
            };
            if !settled {
                report.waiting += 1;
                continue;
            }
            match self.take(organisation_id, &object).await? {
                Taken::Asset(id) => report.created.push(id),
                Taken::NotMedia => report.rejected.push(object.key.clone()),
                Taken::Changed => report.waiting += 1,
                Taken::ByAnother => {}
            }
        }
        // Forget what vanished or was taken, so memory tracks the prefix.
        self.seen.retain(|key, _| candidates.contains(key));
        Ok(report)
    }

    async fn organisation(&mut self) -> Result<Uuid, DropError> {
        if let Some(id) = self.organisation_id {
            return Ok(id);
        }
        let named = self.config.organisation.trim();
        let found: Option<(Uuid,)> = match named.parse::<Uuid>() {
            Ok(id) => {
                sqlx::query_as("SELECT id FROM organisations WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.db)
                    .await?
            }
            Err(_) => {
                sqlx::query_as("SELECT id FROM organisations WHERE name = $1")
                    .bind(named)
                    .fetch_optional(&self.db)
                    .await?
            }
        };
        let (id,) = found.ok_or_else(|| DropError::UnknownOrganisation(named.to_owned()))?;
        self.organisation_id = Some(id);
        Ok(id)
    }

    /// Turns one settled object into an asset, unless another watcher did.
    async fn take(
        &mut self,
        organisation_id: Uuid,
        listed: &ObjectMeta,
    ) -> Result<Taken, DropError> {
        // The listing may be stale by now: take only what is still exactly
        // what settled, or the asset would point at different bytes.
        let current = match self.store.head(&listed.key).await {
            Ok(meta) => meta,
            Err(StorageError::NotFound { .. }) => return Ok(Taken::Changed),
            Err(e) => return Err(e.into()),
        };
        if current.etag != listed.etag || current.size != listed.size {
            self.seen.remove(&listed.key);
            return Ok(Taken::Changed);
        }
        let head = if current.size == 0 {
            bytes::Bytes::new()
        } else {
            let range = ByteRange::FromTo(0, SNIFF_LEN as u64 - 1);
            match self.store.get(&listed.key, Some(range)).await {
                Ok(got) => got.bytes().await?,
                Err(StorageError::NotFound { .. }) => return Ok(Taken::Changed),
                Err(e) => return Err(e.into()),
            }
        };
        let media = sniff(&head).is_some();
        let asset_id = Uuid::now_v7();
        let mut tx = self.db.begin().await?;
        // The foreign key to the asset is checked at commit, so the claim
        // can come first and a losing watcher creates nothing at all.
        let claimed = sqlx::query(
            "INSERT INTO drops (key, etag, size, organisation_id, asset_id, outcome)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (key, etag) DO NOTHING",
        )
        .bind(&listed.key)
        .bind(&listed.etag)
        .bind(i64::try_from(listed.size).unwrap_or(i64::MAX))
        .bind(organisation_id)
        .bind(media.then_some(asset_id))
        .bind(if media { "asset" } else { "not_media" })
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            tx.rollback().await?;
            return Ok(Taken::ByAnother);
        }
        if !media {
            tx.commit().await?;
            tracing::warn!(key = %listed.key, "dropped object is not media; ignored");
            return Ok(Taken::NotMedia);
        }
        assets::create(
            &mut *tx,
            &NewAsset {
                id: asset_id,
                organisation_id,
                source_key: listed.key.clone(),
                title: title_from_key(&listed.key),
                profile: self.config.profile.clone(),
                priority: 0,
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(key = %listed.key, asset = %asset_id, size = listed.size, "dropped recording became an asset");
        Ok(Taken::Asset(asset_id))
    }

    /// Scans every `interval` for as long as the task runs, skipping rounds
    /// while `ready` says the schema is not there yet. Failures are logged
    /// and retried next round: a storage or database outage must not stop
    /// the watcher for good.
    pub async fn run(mut self, ready: impl Fn() -> bool + Send, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !ready() {
                continue;
            }
            match self.scan().await {
                Ok(report) if !report.created.is_empty() || !report.rejected.is_empty() => {
                    tracing::info!(
                        prefix = %self.config.prefix,
                        created = report.created.len(),
                        rejected = report.rejected.len(),
                        waiting = report.waiting,
                        "drop scan"
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(prefix = %self.config.prefix, error = %e, "drop scan failed; retrying next round")
                }
            }
        }
    }
}

enum Taken {
    Asset(Uuid),
    NotMedia,
    /// Changed or vanished since the listing: observe it again.
    Changed,
    ByAnother,
}

/// `drops/live/2026-05-01 Cardiology grand round.mp4` → `2026-05-01
/// Cardiology grand round`.
fn title_from_key(key: &str) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let stem = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() <= 5 => stem,
        _ => name,
    };
    let title: String = stem.chars().filter(|c| !c.is_control()).take(300).collect();
    let title = title.trim();
    (!title.is_empty()).then(|| title.to_owned())
}

#[cfg(test)]
mod tests {
    use super::title_from_key;

    #[test]
    fn titles_come_from_file_names() {
        assert_eq!(
            title_from_key("drops/live/2026-05-01 Grand round.mp4").as_deref(),
            Some("2026-05-01 Grand round")
        );
        assert_eq!(
            title_from_key("drops/live/session").as_deref(),
            Some("session")
        );
        assert_eq!(title_from_key("drops/live/.mp4").as_deref(), Some(".mp4"));
    }
}
