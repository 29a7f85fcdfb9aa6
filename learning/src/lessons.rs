//! What a heartbeat needs to know about its lesson — organisation,
//! duration, whether it may be watched — cached for a few seconds so a
//! beat costs no PostgreSQL query. Unpublishing therefore takes effect for
//! heartbeats within about two [`TTL`]s; the playback session always reads
//! fresh. One query per lesson at a time: when an entry is missing, one
//! request reads it while the others of that lesson wait for it; when it
//! is stale, one background task re-reads it while every request keeps
//! using it (thousands of beats a second of one lecture must not become
//! thousands of queries the moment it expires, nor one beat wait on a busy
//! pool). Reads are bounded by a semaphore well below the pool size.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Semaphore;
use uuid::Uuid;

pub const TTL: Duration = Duration::from_secs(5);
/// A cached lesson older than this is not answered even while it is being
/// re-read (PostgreSQL unreachable for that long: beats then fail).
pub const MAX_STALE: Duration = Duration::from_secs(60);
/// Past this many cached lessons the cache starts over (ids sent by a
/// hostile client must not grow it without bound).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone)]
pub struct LessonInfo {
    pub id: Uuid,
    pub org_id: Uuid,
    pub course_id: Uuid,
    pub title: String,
    pub asset_id: Option<Uuid>,
    pub duration_s: Option<f64>,
    /// The ladder's prefix: the finished one, else the growing preview.
    pub prefix: Option<String>,
    pub published: bool,
    /// A live lesson whose event is live right now (not before, not its replay).
    pub live_now: bool,
}

impl LessonInfo {
    pub fn watchable(&self) -> bool {
        self.published && self.prefix.is_some() && self.asset_id.is_some()
    }

    /// Visible to a caller whose queries are limited to `scope`.
    pub fn in_scope(&self, scope: Option<Uuid>) -> bool {
        scope.is_none_or(|org| org == self.org_id)
    }
}

/// A lesson as [`LessonCache::fresh`] reads it.
#[derive(sqlx::FromRow)]
struct LessonRow {
    organisation_id: Uuid,
    course_id: Uuid,
    title: String,
    asset_id: Option<Uuid>,
    duration_s: Option<f64>,
    prefix: Option<String>,
    published: bool,
    live_now: bool,
}

/// Cheap to clone: clones share the cache (a background re-read holds one).
#[derive(Default, Clone)]
pub struct LessonCache {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    map: RwLock<HashMap<Uuid, (Instant, Option<LessonInfo>)>>,
    /// One lock per lesson being read, so reads of a lesson never overlap.
    loading: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// Sized from the pool on first use.
    readers: OnceLock<Semaphore>,
}

impl LessonCache {
    /// The lesson, from the cache when fresh enough. Unknown lessons are
    /// cached too (as `None`), so a stream of beats naming a deleted
    /// lesson does not turn into a stream of queries. A stale entry is
    /// answered at once while one background task re-reads it, so a beat
    /// waits on PostgreSQL only for a lesson this node has never seen
    /// (or not for [`MAX_STALE`]).
    pub async fn get(&self, db: &PgPool, id: Uuid) -> Result<Option<LessonInfo>, sqlx::Error> {
        let cached = self.cached(id);
        if let Some((at, info)) = &cached {
            let age = at.elapsed();
            if age < TTL {
                return Ok(info.clone());
            }
            if age < MAX_STALE {
                if let Ok(guard) = self.loading_lock(id).try_lock_owned() {
                    let db = db.clone();
                    let cache = self.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        if let Err(e) = cache.load(&db, id).await {
                            tracing::warn!(lesson = %id, error = %e, "re-reading a cached lesson failed");
                        }
                    });
                }
                return Ok(info.clone());
            }
        }
        let lock = self.loading_lock(id);
        let _guard = lock.lock().await;
        // Whoever held the lock may have just read it.
        if let Some((at, info)) = self.cached(id) {
            if at.elapsed() < TTL {
                return Ok(info);
            }
        }
        self.load(db, id).await
    }

    /// [`Self::fresh`], at most a few at a time: a node seeing thousands
    /// of lessons at once queues their reads instead of taking the whole
    /// pool (and failing on its acquire timeout).
    async fn load(&self, db: &PgPool, id: Uuid) -> Result<Option<LessonInfo>, sqlx::Error> {
        let readers = self.inner.readers.get_or_init(|| {
            Semaphore::new((db.options().get_max_connections() / 4).clamp(1, 8) as usize)
        });
        let _permit = readers
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        self.fresh(db, id).await
    }

    fn cached(&self, id: Uuid) -> Option<(Instant, Option<LessonInfo>)> {
        self.inner
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The lesson's read lock. Locks stay (one per lesson ever read, a few
    /// bytes each) and are dropped with the cache when it starts over.
    fn loading_lock(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// Reads the lesson from PostgreSQL and refreshes the cache.
    pub async fn fresh(&self, db: &PgPool, id: Uuid) -> Result<Option<LessonInfo>, sqlx::Error> {
        let row: Option<LessonRow> = sqlx::query_as(
            "SELECT l.organisation_id, l.course_id, l.title, a.id AS asset_id, a.duration_s,
                    coalesce(a.output_prefix, a.playable_prefix) AS prefix,
                    c.state = 'published' AS published,
                    EXISTS (SELECT 1 FROM live_events e
                            WHERE e.lesson_id = l.id AND e.state = 'live') AS live_now
             FROM lessons l
             JOIN courses c ON c.id = l.course_id
             LEFT JOIN assets a ON a.id = l.asset_id
             WHERE l.id = $1",
        )
        .bind(id)
        .fetch_optional(db)
        .await?;
        let info = row.map(|r| LessonInfo {
            id,
            org_id: r.organisation_id,
            course_id: r.course_id,
            title: r.title,
            asset_id: r.asset_id,
            duration_s: r.duration_s,
            prefix: r.prefix,
            published: r.published,
            live_now: r.live_now,
        });
        let mut map = self.inner.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
            self.inner
                .loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        map.insert(id, (Instant::now(), info.clone()));
        Ok(info)
    }
}
