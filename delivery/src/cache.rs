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
//! - Filled on the way through: the request that misses streams the
//!   object from storage to its client as it arrives (nothing is buffered
//!   before the first byte goes out, on S3 too) while a copy accumulates;
//!   once the whole object has gone through, it is held. Requests missing
//!   the same object meanwhile stream from storage themselves rather than
//!   wait on another learner's connection.
//! - Only whole objects of at most [`MediaCache::max_object`] bytes; a
//!   ranged miss goes to storage for just its range.
//! - At most [`MAX_FILLS`] objects are being copied at once; beyond that a
//!   miss streams from storage as without the cache, so a burst of
//!   distinct cold objects cannot take memory without bound.
//! - Entries are dropped [`MediaCache::revalidate_after`] after they were
//!   read, so an object deleted or replaced behind the origin's back
//!   (superseded attempts being collected) stops being served within that
//!   bound, as revoked sessions and key changes are (see `Playback`).
//! - Objects made from stored ones (an encrypted asset's segments, see
//!   [`MediaCache::derived`]) are made once and held like the rest, under
//!   the key they are asked for by (the key-marked path), so ranges and
//!   repeats are answered from memory. They are made in one of
//!   [`DERIVE_LANES`] lanes chosen by key: a crowd asking for one object
//!   at once waits for the one request making it, and however many
//!   requests arrive, at most that many objects are being made, so the
//!   memory spent making them stays bounded.
//! - Nothing here authorizes: the caller has checked the token before it
//!   asks, and the key is the storage key (or for derived objects the
//!   request's path), the same for every learner.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use futures::StreamExt;
use lectern_storage::{ByteStream, ObjectMeta};
use lectern_web::metrics::{self, Collector, DescriptorEncoder};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// 256 MiB: a few thousand segments of a 1080p ladder, the hot set of a
/// catalogue being watched by a class at once.
pub const DEFAULT_CAPACITY_BYTES: u64 = 256 * 1024 * 1024;
/// How long a cached object is believed without reading storage again.
pub const DEFAULT_REVALIDATE_AFTER: Duration = Duration::from_secs(60);
const SHARDS: usize = 16;
/// Objects being copied into memory at once (each at most `max_object`:
/// 128 MiB in flight with the default capacity).
pub const MAX_FILLS: usize = 32;
/// Bookkeeping per entry beyond its bytes (key, map slot, clock slot).
const ENTRY_OVERHEAD: u64 = 256;
/// Objects being made from stored ones at once (each holds its source and
/// its result in memory while it is made: an encrypted segment twice).
pub const DERIVE_LANES: usize = 8;

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
    pub misses: u64,
    /// Fills started (storage reads whose bytes were to be kept).
    pub fills: u64,
    /// Objects made from stored ones (segments encrypted).
    pub derived: u64,
    pub entries: u64,
    pub bytes: u64,
}

pub struct MediaCache {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: u64,
    max_object: u64,
    revalidate_after: Duration,
    /// Keys being filled now.
    filling: Mutex<HashSet<String>>,
    fill_permits: Arc<Semaphore>,
    /// One object is made at a time per lane (see [`MediaCache::derived`]).
    derive_lanes: Vec<tokio::sync::Mutex<()>>,
    hits: AtomicU64,
    /// Lookups that found nothing to serve from memory (fills and bypasses).
    misses: AtomicU64,
    fills: AtomicU64,
    derived: AtomicU64,
}

/// What [`MediaCache::lookup`] finds.
pub enum Lookup {
    Hit(CachedObject),
    /// This request reads the object and passes it through the [`Filler`].
    Fill(Filler),
    /// Read storage as without the cache (off, full of fills, or this
    /// object is being filled by another request).
    Bypass,
}

/// The right, and duty, to fill one key: hand it the object's bytes.
/// Dropped unfinished (the client went away, storage failed), it holds
/// nothing and frees the key.
pub struct Filler {
    cache: Arc<MediaCache>,
    key: String,
    _permit: OwnedSemaphorePermit,
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
            filling: Mutex::default(),
            fill_permits: Arc::new(Semaphore::new(MAX_FILLS)),
            derive_lanes: (0..DERIVE_LANES).map(|_| Default::default()).collect(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            derived: AtomicU64::new(0),
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
        &self.shards[(hash(key) % SHARDS as u64) as usize]
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

    /// What a whole-object request for `key` should do.
    pub fn lookup(self: &Arc<Self>, key: &str) -> Lookup {
        if let Some(hit) = self.get(key) {
            return Lookup::Hit(hit);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        if !self.enabled() {
            return Lookup::Bypass;
        }
        let Ok(permit) = self.fill_permits.clone().try_acquire_owned() else {
            return Lookup::Bypass;
        };
        if !self
            .filling
            .lock()
            .expect("media cache lock")
            .insert(key.to_string())
        {
            return Lookup::Bypass;
        }
        self.fills.fetch_add(1, Ordering::Relaxed);
        Lookup::Fill(Filler {
            cache: self.clone(),
            key: key.to_string(),
            _permit: permit,
        })
    }

    /// The object under `key` made from a stored one (`make` reads and
    /// transforms it), from memory when held, else made here and held
    /// (when the cache is on and it fits). Requests for the same key wait
    /// for one another instead of each making it; at most
    /// [`DERIVE_LANES`] objects are made at once.
    pub async fn derived<E>(
        &self,
        key: &str,
        make: impl std::future::Future<Output = Result<CachedObject, E>>,
    ) -> Result<CachedObject, E> {
        if let Some(hit) = self.get(key) {
            return Ok(hit);
        }
        let lane = &self.derive_lanes[(hash(key) % DERIVE_LANES as u64) as usize];
        let _turn = lane.lock().await;
        // Made by the request ahead of this one in the lane.
        if let Some(hit) = self.get(key) {
            return Ok(hit);
        }
        self.derived.fetch_add(1, Ordering::Relaxed);
        let object = make.await?;
        if self.enabled() {
            self.insert(key, object.clone());
        }
        Ok(object)
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
            let mut seen = HashSet::new();
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
            misses: self.misses.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            derived: self.derived.load(Ordering::Relaxed),
            entries,
            bytes,
        }
    }
}

/// What `/metrics` shows of a cache, read at each scrape.
#[derive(Debug)]
pub struct CacheCollector(pub Arc<MediaCache>);

impl Collector for CacheCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        metrics::counter(
            &mut enc,
            "lectern_origin_cache_hits",
            "Whole-object media requests answered from the origin's memory.",
            s.hits,
        )?;
        metrics::counter(
            &mut enc,
            "lectern_origin_cache_misses",
            "Whole-object media requests the memory did not hold (read from storage).",
            s.misses,
        )?;
        metrics::counter(
            &mut enc,
            "lectern_origin_cache_fills",
            "Storage reads whose bytes were kept in memory.",
            s.fills,
        )?;
        metrics::gauge(
            &mut enc,
            "lectern_origin_cache_bytes",
            "Bytes of media the origin holds in memory.",
            s.bytes as f64,
        )?;
        metrics::gauge(
            &mut enc,
            "lectern_origin_cache_objects",
            "Objects the origin holds in memory.",
            s.entries as f64,
        )
    }
}

impl Filler {
    /// Holds `object`, whole in hand (the caller needed every byte anyway).
    pub fn keep(self, object: CachedObject) {
        self.cache.insert(&self.key, object);
    }

    /// `body` as it comes from storage, passed on unchanged; the object
    /// (`meta` says its size) is held once all of it has gone through.
    pub fn tee(
        self,
        meta: Arc<ObjectMeta>,
        headers: Arc<HeaderMap>,
        body: ByteStream,
    ) -> ByteStream {
        if meta.size > self.cache.max_object {
            return body;
        }
        // The chunks themselves (shared, not copied) and their length until
        // the end: the fs backend hands a segment out as one chunk, held as
        // it is.
        let fill = Some((self, Vec::<Bytes>::new(), 0u64));
        Box::pin(futures::stream::unfold(
            (body, fill, meta, headers),
            |(mut body, mut fill, meta, headers)| async move {
                let item = body.next().await;
                match (&item, fill.as_mut()) {
                    (Some(Ok(chunk)), Some((_, copy, len))) => {
                        copy.push(chunk.clone());
                        *len += chunk.len() as u64;
                        // Held as soon as the last byte is in: a server that
                        // stops polling at Content-Length never asks again.
                        // More than the object's size: not this object.
                        if *len >= meta.size {
                            let (filler, copy, len) = fill.take().expect("filling");
                            if len == meta.size {
                                filler.keep(whole(copy, &meta, &headers));
                            }
                        }
                    }
                    // A failed read, or an end short of the object's size:
                    // nothing held (the filler is dropped).
                    (Some(Err(_)) | None, Some(_)) => fill = None,
                    _ => {}
                }
                item.map(|item| (item, (body, fill, meta, headers)))
            },
        ))
    }
}

/// FNV-1a: cheap, and keys are not attacker-chosen beyond what a valid
/// token for one asset allows.
fn hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The object from the chunks that made it up (one chunk: itself).
fn whole(chunks: Vec<Bytes>, meta: &Arc<ObjectMeta>, headers: &Arc<HeaderMap>) -> CachedObject {
    let body = match <[Bytes; 1]>::try_from(chunks) {
        Ok([one]) => one,
        Err(chunks) => Bytes::from(chunks.concat()),
    };
    CachedObject {
        meta: meta.clone(),
        body,
        headers: headers.clone(),
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        self.cache
            .filling
            .lock()
            .expect("media cache lock")
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, len: usize) -> Arc<ObjectMeta> {
        Arc::new(ObjectMeta {
            key: key.to_string(),
            size: len as u64,
            etag: "e".into(),
            content_type: None,
            cache_control: None,
            last_modified: chrono::Utc::now(),
        })
    }

    /// A storage body of `len` bytes in chunks of at most 4096.
    fn body(len: usize) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = vec![7u8; len]
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    /// A whole-object request for `key`, read through to its end.
    async fn serve(cache: &Arc<MediaCache>, key: &str, len: usize) -> (bool, usize) {
        match cache.lookup(key) {
            Lookup::Hit(o) => (true, o.body.len()),
            Lookup::Fill(filler) => {
                let mut through = filler.tee(meta(key, len), Arc::default(), body(len));
                let mut n = 0;
                while let Some(chunk) = through.next().await {
                    n += chunk.unwrap().len();
                }
                (false, n)
            }
            Lookup::Bypass => (false, len),
        }
    }

    #[tokio::test]
    async fn stays_within_its_byte_bound_and_keeps_what_is_used() {
        let cache = Arc::new(MediaCache::new(16 * 64 * 1024, DEFAULT_REVALIDATE_AFTER));
        for i in 0..2000 {
            serve(&cache, &format!("k{i}"), 10_000).await;
            // One object read over and over survives the churn.
            assert_eq!(serve(&cache, "hot", 10_000).await.1, 10_000);
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
    async fn what_went_through_is_held_byte_for_byte() {
        let cache = Arc::new(MediaCache::default());
        assert_eq!(serve(&cache, "seg", 10_000).await, (false, 10_000));
        let held = cache.get("seg").expect("held");
        assert_eq!(held.body.as_ref(), &[7u8; 10_000][..]);
        assert_eq!(serve(&cache, "seg", 10_000).await, (true, 10_000));
        assert_eq!(cache.stats().fills, 1);
        assert!(cache.filling.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn objects_too_large_or_a_disabled_cache_keep_nothing() {
        let cache = Arc::new(MediaCache::new(16 * 64 * 1024, DEFAULT_REVALIDATE_AFTER));
        let big = cache.max_object() as usize + 1;
        assert_eq!(serve(&cache, "big", big).await.1, big);
        assert!(cache.get("big").is_none());
        assert!(cache.filling.lock().unwrap().is_empty());
        let off = Arc::new(MediaCache::disabled());
        assert!(matches!(off.lookup("a"), Lookup::Bypass));
        // Nothing kept; the request counts as a miss (every request is one).
        assert_eq!(
            off.stats(),
            CacheStats {
                misses: 1,
                ..CacheStats::default()
            }
        );
    }

    #[tokio::test]
    async fn entries_are_read_again_after_the_revalidation_bound() {
        let cache = Arc::new(MediaCache::new(16 * 64 * 1024, Duration::from_millis(50)));
        serve(&cache, "k", 100).await;
        assert!(cache.get("k").is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(cache.get("k").is_none());
        assert_eq!(cache.stats().bytes, 0);
    }

    #[tokio::test]
    async fn a_miss_during_a_fill_goes_to_storage_and_an_abandoned_fill_keeps_nothing() {
        let cache = Arc::new(MediaCache::default());
        let Lookup::Fill(filler) = cache.lookup("seg") else {
            panic!("the first miss fills")
        };
        // Another learner meanwhile: straight to storage, not waiting.
        assert!(matches!(cache.lookup("seg"), Lookup::Bypass));
        // The first learner leaves after one chunk.
        let mut through = filler.tee(meta("seg", 10_000), Arc::default(), body(10_000));
        through.next().await.unwrap().unwrap();
        drop(through);
        assert!(cache.get("seg").is_none());
        assert!(cache.filling.lock().unwrap().is_empty());
        // A short read (storage gave less than the object's size) neither.
        let Lookup::Fill(filler) = cache.lookup("seg") else {
            panic!("free to fill again")
        };
        let mut through = filler.tee(meta("seg", 10_000), Arc::default(), body(9_000));
        while through.next().await.is_some() {}
        assert!(cache.get("seg").is_none());
        // Nor a long one (more bytes than the object has: not this object).
        let Lookup::Fill(filler) = cache.lookup("seg") else {
            panic!("free to fill again")
        };
        let mut through = filler.tee(meta("seg", 10_000), Arc::default(), body(11_000));
        while through.next().await.is_some() {}
        assert!(cache.get("seg").is_none());
        assert_eq!(serve(&cache, "seg", 10_000).await, (false, 10_000));
        assert!(cache.get("seg").is_some());
    }

    #[tokio::test]
    async fn a_failed_read_is_not_held() {
        let cache = Arc::new(MediaCache::default());
        let Lookup::Fill(filler) = cache.lookup("k") else {
            panic!("fills")
        };
        let failing: ByteStream = Box::pin(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("storage went away")),
            Ok(Bytes::from_static(b"def")),
        ]));
        let mut through = filler.tee(meta("k", 6), Arc::default(), failing);
        while through.next().await.is_some() {}
        assert!(cache.get("k").is_none());
        assert!(cache.filling.lock().unwrap().is_empty());
    }

    /// A derived object is made once however many ask for it at once,
    /// then served from memory; with the cache off it is made per request.
    #[tokio::test]
    async fn derived_objects_are_made_once_for_a_crowd() {
        let made = Arc::new(AtomicU64::new(0));
        let make = |made: Arc<AtomicU64>| async move {
            made.fetch_add(1, Ordering::SeqCst);
            // Slow enough that the whole crowd arrives meanwhile.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, ()>(CachedObject {
                meta: meta("x", 32),
                body: Bytes::from(vec![9u8; 32]),
                headers: Arc::default(),
            })
        };
        let cache = Arc::new(MediaCache::default());
        let crowd: Vec<_> = (0..3 * DERIVE_LANES)
            .map(|_| {
                let (cache, made) = (cache.clone(), made.clone());
                tokio::spawn(async move { cache.derived("enc", make(made)).await })
            })
            .collect();
        for request in crowd {
            assert_eq!(request.await.unwrap().unwrap().body.len(), 32);
        }
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().derived, 1);
        assert!(cache.get("enc").is_some());
        // A failed making holds nothing; the next request tries again.
        let failed = cache.derived("other", async { Err::<CachedObject, _>(()) });
        assert!(failed.await.is_err());
        assert!(cache.get("other").is_none());

        let off = Arc::new(MediaCache::disabled());
        for _ in 0..3 {
            off.derived("enc", make(made.clone())).await.unwrap();
        }
        assert_eq!(off.stats().derived, 3);
        assert_eq!(off.stats().entries, 0);
    }

    #[tokio::test]
    async fn misses_beyond_the_fill_bound_are_left_to_storage() {
        let cache = Arc::new(MediaCache::default());
        let fillers: Vec<Filler> = (0..MAX_FILLS)
            .map(|i| match cache.lookup(&format!("slow{i}")) {
                Lookup::Fill(f) => f,
                _ => panic!("fill {i} refused"),
            })
            .collect();
        assert!(matches!(cache.lookup("one-more"), Lookup::Bypass));
        drop(fillers);
        assert!(matches!(cache.lookup("one-more"), Lookup::Fill(_)));
    }
}
