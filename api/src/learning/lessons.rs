//! What a heartbeat needs to know about its lesson — organisation,
//! duration, whether it may be watched — cached for a few seconds so a
//! beat costs no PostgreSQL query. Unpublishing therefore takes effect for
//! heartbeats within about two [`TTL`]s; the playback session always reads
//! fresh. One query per lesson at a time: when an entry is missing, one
//! request reads it while the others of that lesson wait for it; when it
//! is stale, one request refreshes it while the others keep using it
//! (thousands of beats a second of one lecture must not become thousands
//! of queries the moment it expires).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

pub const TTL: Duration = Duration::from_secs(5);
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

type LessonRow = (
    Uuid,
    Uuid,
    String,
    Option<Uuid>,
    Option<f64>,
    Option<String>,
    bool,
);

#[derive(Default)]
pub struct LessonCache {
    map: RwLock<HashMap<Uuid, (Instant, Option<LessonInfo>)>>,
    /// One lock per lesson being read, so reads of a lesson never overlap.
    loading: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

impl LessonCache {
    /// The lesson, from the cache when fresh enough. Unknown lessons are
    /// cached too (as `None`), so a stream of beats naming a deleted
    /// lesson does not turn into a stream of queries.
    pub async fn get(&self, db: &PgPool, id: Uuid) -> Result<Option<LessonInfo>, sqlx::Error> {
        let cached = self.cached(id);
        if let Some((at, info)) = &cached {
            if at.elapsed() < TTL {
                return Ok(info.clone());
            }
        }
        let lock = self.loading_lock(id);
        match (&cached, lock.try_lock()) {
            // Stale, and someone else is refreshing it: stale will do.
            (Some((_, info)), Err(_)) => return Ok(info.clone()),
            (Some(_), Ok(_guard)) => return self.fresh(db, id).await,
            (None, _) => {}
        }
        let _guard = lock.lock().await;
        // Whoever held the lock may have just read it.
        if let Some((at, info)) = self.cached(id) {
            if at.elapsed() < TTL {
                return Ok(info);
            }
        }
        self.fresh(db, id).await
    }

    fn cached(&self, id: Uuid) -> Option<(Instant, Option<LessonInfo>)> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The lesson's read lock. Locks stay (one per lesson ever read, a few
    /// bytes each) and are dropped with the cache when it starts over.
    fn loading_lock(&self, id: Uuid) -> Arc<tokio::sync::Mutex<()>> {
        self.loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// Reads the lesson from PostgreSQL and refreshes the cache.
    pub async fn fresh(&self, db: &PgPool, id: Uuid) -> Result<Option<LessonInfo>, sqlx::Error> {
        let row: Option<LessonRow> = sqlx::query_as(
            "SELECT l.organisation_id, l.course_id, l.title, a.id, a.duration_s,
                    coalesce(a.output_prefix, a.playable_prefix), c.state = 'published'
             FROM lessons l
             JOIN courses c ON c.id = l.course_id
             LEFT JOIN assets a ON a.id = l.asset_id
             WHERE l.id = $1",
        )
        .bind(id)
        .fetch_optional(db)
        .await?;
        let info = row.map(
            |(org_id, course_id, title, asset_id, duration_s, prefix, published)| LessonInfo {
                id,
                org_id,
                course_id,
                title,
                asset_id,
                duration_s,
                prefix,
                published,
            },
        );
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
            self.loading
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
        map.insert(id, (Instant::now(), info.clone()));
        Ok(info)
    }
}
