//! The origin's memory of hot media objects.
//!
//! A lecture's segments are written once under an attempt's prefix and
//! never change; thousands of learners ask for the same few while a class
//! watches a replay. Serving them from memory skips the storage read (a
//! blocking-pool hop and a file copy on the fs backend, a round trip on S3)
//! that otherwise dominates the origin's cost per request.
//!
//! - Bounded in bytes (`LECTERN_ORIGIN_CACHE_MIB`, 0 turns it off), in
//!   shards so concurrent requests rarely meet on one lock; eviction is
//!   CLOCK (a recently used object gets a second chance), O(1) per insert.
//! - Single flight: when many requests miss the same object at once, one
//!   reads storage and the others wait for its bytes.
//! - Only whole objects of at most [`MediaCache::max_object`] bytes; a
//!   ranged miss goes to storage for just its range.
//! - At most [`MAX_LOADS`] objects are being read into memory at once;
//!   beyond that a miss streams from storage as without the cache, so a
//!   burst of distinct cold objects cannot take memory without bound.
//! - Entries are dropped [`MediaCache::revalidate_after`] after they were
//!   read, so an object deleted or replaced behind the origin's back
//!   (superseded attempts being collected) stops being served within that
//!   bound, as revoked sessions and key changes are (see `Playback`).
//! - Nothing here authorizes: the caller has checked the token before it
//!   asks, and the key is the storage key, the same for every learner.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use lectern_storage::ObjectMeta;
use tokio::sync::OnceCell;

/// 256 MiB: a few thousand segments of a 1080p ladder, the hot set of a
/// catalogue being watched by a class at once.
pub const DEFAULT_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;
/// How long a cached object is believed without reading storage again.
pub const DEFAULT_REVALIDATE_AFTER: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Objects read into memory at once (each at most `max_object`: 128 MiB
/// in flight with the default capacity).
pub const MAX_LOADS: usize = 32;
/// Bookkeeping per entry beyond its bytes (key, map slot, clock slot).
const ENTRY_OVERHEAD: u64 = 256;

/// A whole stored object: its metadata, bytes and the headers of a
/// whole-object answer (built once, not per request), cheap to clone.
#[derive(Clone, Debug)]
pub struct CachedObject {
    pub meta: Arc<ObjectMeta>,
    pub body: Bytes,
    pub headers: Arc<HeaderMap>,
}

impl CachedObject {
    fn cost(&self) -> u64 {
        self.body.len() as u64 + self.meta.key.len() as u64 + ENTRY_OVERHEAD
    }
}

/// Counters for tests and the benchmark's record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Storage reads made to fill the cache (one per single-flight group).
    pub loads: u64,
    pub entries: u64,
    pub bytes: u64,
}

pub struct MediaCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: u64,
    max_object: u64,
    revalidate_after: Duration,
    loading: Mutex<HashMap<String, Arc<OnceCell<Option<CachedObject>>>>>,
    load_permits: tokio::sync::Semaphore,
    hits: AtomicU64,
    loads: AtomicU64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Arc<str>, Entry>,
    /// The clock hand's order; may hold keys no longer in `entries`
    /// (expired or replaced), skipped when reached.
    clock: VecDeque<Arc<str>>,
    bytes: u64,
}

struct Entry {
    object: CachedObject,
    stored: Instant,
    referenced: bool,
}

impl std::fmt::Debug for MediaCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaCache")
            .field("capacity", &self.capacity())
            .field("revalidate_after", &self.revalidate_after)
            .finish_non_exhaustive()
    }
}

impl Default for MediaCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY_BYTES, DEFAULT_REVALIDATE_AFTER)
    }
}

impl MediaCache {
    /// `capacity` bytes in all (0: nothing is cached).
    pub fn new(capacity: u64, revalidate_after: Duration) -> Self {
        let shard_capacity = capacity / SHARDS as u64;
        MediaCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity,
            // An object may take at most a quarter of its shard, so one
            // large file cannot flush the hot set.
            max_object: shard_capacity / 4,
            revalidate_after,
            loading: Mutex::default(),
            load_permits: tokio::sync::Semaphore::new(MAX_LOADS),
            hits: AtomicU64::new(0),
            loads: AtomicU64::new(0),
        }
    }

    pub fn disabled() -> Self {
        Self::new(0, DEFAULT_REVALIDATE_AFTER)
    }

    pub fn capacity(&self) -> u64 {
        self.shard_capacity * SHARDS as u64
    }

    /// The largest object kept; larger ones are always streamed.
    pub fn max_object(&self) -> u64 {
        self.max_object
    }

    pub fn enabled(&self) -> bool {
        self.max_object > 0
    }

    pub fn revalidate_after(&self) -> Duration {
        self.revalidate_after
    }

    fn shard(&self, key: &str) -> &Mutex<Shard> {
        // FNV-1a: cheap, and keys are not attacker-chosen beyond what a
        // valid token for one asset allows.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// The object under `key` if it is in memory and young enough.
    pub fn get(&self, key: &str) -> Option<CachedObject> {
        if !self.enabled() {
            return None;
        }
        let mut shard = self.shard(key).lock().expect("media cache lock");
        let entry = shard.entries.get_mut(key)?;
        if entry.stored.elapsed() >= self.revalidate_after {
            let cost = entry.object.cost();
            shard.entries.remove(key);
            shard.bytes -= cost;
            return None;
        }
        entry.referenced = true;
        let object = entry.object.clone();
        drop(shard);
        self.hits.fetch_add(1, Ordering::Relaxed);
        Some(object)
    }

    /// The object under `key`, from memory or by running `load` (once for
    /// all concurrent callers of the same key). `Ok(None)` when the object
    /// is not to be kept: `load` found it too large, or [`MAX_LOADS`]
    /// other objects are being read; those callers then serve it from
    /// storage themselves.
    pub async fn get_or_load<E, F, Fut>(
        &self,
        key: &str,
        load: F,
    ) -> Result<Option<CachedObject>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<CachedObject>, E>>,
    {
        if let Some(hit) = self.get(key) {
            return Ok(Some(hit));
        }
        if !self.enabled() {
            return Ok(None);
        }
        let cell = self
            .loading
            .lock()
            .expect("media cache lock")
            .entry(key.to_string())
            .or_default()
            .clone();
        let result = cell
            .get_or_try_init(|| async {
                // Filled while this caller waited for the lock of `cell`?
                if let Some(hit) = self.get(key) {
                    return Ok(Some(hit));
                }
                let Ok(_permit) = self.load_permits.try_acquire() else {
                    return Ok(None);
                };
                self.loads.fetch_add(1, Ordering::Relaxed);
                let object = load().await?;
                if let Some(o) = &object {
                    self.insert(key, o.clone());
                }
                Ok(object)
            })
            .await
            .cloned();
        let mut loading = self.loading.lock().expect("media cache lock");
        if loading.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            loading.remove(key);
        }
        result
    }

    fn insert(&self, key: &str, object: CachedObject) {
        let cost = object.cost();
        if object.body.len() as u64 > self.max_object {
            return;
        }
        let mut guard = self.shard(key).lock().expect("media cache lock");
        let shard = &mut *guard;
        let key: Arc<str> = Arc::from(key);
        if let Some(old) = shard.entries.remove(&key) {
            shard.bytes -= old.object.cost();
        }
        while shard.bytes + cost > self.shard_capacity {
            let Some(candidate) = shard.clock.pop_front() else {
                break;
            };
            let Some(entry) = shard.entries.get_mut(&candidate) else {
                continue;
            };
            if entry.referenced {
                entry.referenced = false;
                shard.clock.push_back(candidate);
            } else {
                let gone = shard.entries.remove(&candidate).expect("present");
                shard.bytes -= gone.object.cost();
            }
        }
        shard.bytes += cost;
        shard.entries.insert(
            key.clone(),
            Entry {
                object,
                stored: Instant::now(),
                referenced: false,
            },
        );
        shard.clock.push_back(key);
        // Keys of expired or replaced entries linger in the clock until the
        // hand passes; drop them before they outnumber the live ones.
        if shard.clock.len() > 2 * shard.entries.len() + 64 {
            let entries = &shard.entries;
            let mut seen = std::collections::HashSet::new();
            shard
                .clock
                .retain(|k| entries.contains_key(k) && seen.insert(k.clone()));
        }
    }

    pub fn stats(&self) -> CacheStats {
        let (mut entries, mut bytes) = (0, 0);
        for shard in &self.shards {
            let shard = shard.lock().expect("media cache lock");
            entries += shard.entries.len() as u64;
            bytes += shard.bytes;
        }
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            loads: self.loads.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, len: usize) -> CachedObject {
        CachedObject {
            meta: Arc::new(ObjectMeta {
                key: key.to_string(),
                size: len as u64,
                etag: "e".into(),
                content_type: None,
                cache_control: None,
                last_modified: chrono::Utc::now(),
            }),
            body: Bytes::from(vec![7; len]),
            headers: Arc::default(),
        }
    }

    async fn fill(cache: &MediaCache, key: &str, len: usize) -> Option<CachedObject> {
        cache
            .get_or_load(key, || async { Ok::<_, ()>(Some(object(key, len))) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound_and_keeps_what_is_used() {
        let cache = MediaCache::new(16 * 64 * 1024, DEFAULT_REVALIDATE_AFTER);
        for i in 0..2000 {
            fill(&cache, &format!("k{i}"), 10_000).await;
            // One object read over and over survives the churn.
            assert!(fill(&cache, "hot", 10_000).await.is_some());
            assert!(
                cache.get("hot").is_some(),
                "the hot object was evicted at {i}"
            );
        }
        let stats = cache.stats();
        assert!(stats.bytes <= cache.capacity(), "{stats:?}");
        assert!(stats.entries > 16, "{stats:?}");
        for shard in &cache.shards {
            let shard = shard.lock().unwrap();
            assert!(shard.clock.len() <= 2 * shard.entries.len() + 64);
        }
    }

    #[tokio::test]
    async fn objects_too_large_or_a_disabled_cache_keep_nothing() {
        let cache = MediaCache::new(16 * 64 * 1024, DEFAULT_REVALIDATE_AFTER);
        let big = cache.max_object() as usize + 1;
        assert!(fill(&cache, "big", big).await.is_some());
        assert!(cache.get("big").is_none());
        let off = MediaCache::disabled();
        assert!(fill(&off, "a", 10).await.is_none());
        assert_eq!(off.stats(), CacheStats::default());
    }

    #[tokio::test]
    async fn entries_are_read_again_after_the_revalidation_bound() {
        let cache = MediaCache::new(16 * 64 * 1024, Duration::from_millis(50));
        fill(&cache, "k", 100).await;
        assert!(cache.get("k").is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get("k").is_none());
        assert_eq!(cache.stats().bytes, 0);
    }

    #[tokio::test]
    async fn concurrent_misses_of_one_object_read_storage_once() {
        let cache = Arc::new(MediaCache::default());
        let reads = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (cache, reads) = (cache.clone(), reads.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load("seg", || async move {
                            reads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Ok::<_, ()>(Some(object("seg", 1000)))
                        })
                        .await
                        .unwrap()
                        .unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().body.len(), 1000);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        assert!(cache.loading.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn misses_beyond_the_load_bound_are_left_to_storage() {
        let cache = Arc::new(MediaCache::default());
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(tokio::sync::Semaphore::new(0));
        let slow: Vec<_> = (0..MAX_LOADS)
            .map(|i| {
                let (cache, release, started) = (cache.clone(), release.clone(), started.clone());
                tokio::spawn(async move {
                    let key = format!("slow{i}");
                    cache
                        .get_or_load(&key, || async {
                            started.add_permits(1);
                            release.acquire().await.unwrap().forget();
                            Ok::<_, ()>(Some(object(&key, 10)))
                        })
                        .await
                        .unwrap()
                })
            })
            .collect();
        let all = u32::try_from(MAX_LOADS).unwrap();
        started.acquire_many(all).await.unwrap().forget();
        let called = AtomicU64::new(0);
        let extra = cache
            .get_or_load("one-more", || async {
                called.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ()>(Some(object("one-more", 10)))
            })
            .await
            .unwrap();
        assert!(extra.is_none());
        assert_eq!(called.load(Ordering::SeqCst), 0, "read beyond the bound");
        release.add_permits(MAX_LOADS);
        for t in slow {
            assert!(t.await.unwrap().is_some());
        }
        // With the bound free again, the object is read and kept.
        assert!(fill(&cache, "one-more", 10).await.is_some());
        assert!(cache.get("one-more").is_some());
    }

    #[tokio::test]
    async fn a_failed_read_is_not_remembered() {
        let cache = MediaCache::default();
        let failed = cache.get_or_load("k", || async { Err::<Option<CachedObject>, _>("gone") });
        assert_eq!(failed.await.unwrap_err(), "gone");
        assert!(fill(&cache, "k", 10).await.is_some());
        assert!(cache.loading.lock().unwrap().is_empty());
    }
}
