//! The absorber: where heartbeats land before PostgreSQL. In-process (a
//! sharded map) or Redis (several API nodes share it); both apply a beat
//! by the same rules, and the flusher (`super::flush`) moves what changed
//! to PostgreSQL in batches.
//!
//! Rules of one beat, per learner × lesson:
//! - its played interval joins the watched union (idempotent, order-free);
//! - a beat identical to the newest one applied (same position, interval
//!   and speed: a client retry) changes nothing else;
//! - otherwise, if its time is not older than the newest beat applied, it
//!   sets the resume position and the speed, and adds its wall-clock
//!   length ((to − from) ÷ speed) to the watch time; an older beat (late,
//!   retried after a newer one) only adds its interval.
//!
//! Watch time is therefore counted once per distinct beat, in beat order;
//! the price is that a beat overtaken by a newer one adds no watch time.
//!
//! An entry carries a version bumped by every change; the flusher writes a
//! snapshot, then acknowledges it: the pending watch time it wrote is
//! subtracted, and the entry leaves the dirty set only if no beat arrived
//! meanwhile.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, Semaphore};
use uuid::Uuid;

use super::intervals::{self, Intervals};

/// One validated heartbeat.
#[derive(Debug, Clone)]
pub struct Beat {
    pub user_id: Uuid,
    pub lesson_id: Uuid,
    pub org_id: Uuid,
    pub duration_s: f64,
    pub position_s: f64,
    pub speed: f32,
    pub from_s: f64,
    pub to_s: f64,
    /// Milliseconds since the epoch: the client's `sent_at`, never later
    /// than the beat's arrival, or its arrival.
    pub at_ms: i64,
}

impl Beat {
    /// What makes a retry recognisable without a beat id.
    fn signature(&self) -> String {
        format!(
            "{},{},{},{}",
            self.position_s, self.from_s, self.to_s, self.speed
        )
    }

    fn wall_s(&self) -> f64 {
        (self.to_s - self.from_s).max(0.0) / f64::from(self.speed)
    }
}

/// What the absorber knows of one learner × lesson.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub user_id: Uuid,
    pub lesson_id: Uuid,
    pub org_id: Uuid,
    pub duration_s: f64,
    pub position_s: f64,
    pub speed: f32,
    pub at_ms: i64,
    pub watched: Intervals,
    /// Watch time not yet written to PostgreSQL.
    pub pending_watch_s: f64,
    pub version: u64,
}

/// A learner's newest speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeedSnapshot {
    pub user_id: Uuid,
    pub speed: f32,
    pub at_ms: i64,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("progress store: {0}")]
pub struct AbsorbError(pub String);

impl From<redis::RedisError> for AbsorbError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// What one flush writes: the dirty entries and speeds, and for Redis the
/// token of the cluster-wide flush lock it holds.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Snapshot>,
    pub speeds: Vec<SpeedSnapshot>,
    lock_token: Option<String>,
}

pub enum Absorber {
    Memory(Memory),
    Redis(RedisAbsorber),
}

impl Default for Absorber {
    fn default() -> Self {
        Absorber::Memory(Memory::default())
    }
}

impl Absorber {
    pub fn backend_name(&self) -> &'static str {
        match self {
            Absorber::Memory(_) => "memory",
            Absorber::Redis(_) => "redis",
        }
    }

    pub async fn absorb(&self, beat: &Beat) -> Result<(), AbsorbError> {
        match self {
            Absorber::Memory(m) => {
                m.absorb(beat);
                Ok(())
            }
            Absorber::Redis(r) => r.absorb(beat).await,
        }
    }

    /// Unflushed (and recently flushed) state of some lessons of a learner.
    pub async fn peek(
        &self,
        user_id: Uuid,
        lessons: &[Uuid],
    ) -> Result<Vec<Option<Snapshot>>, AbsorbError> {
        match self {
            Absorber::Memory(m) => Ok(lessons.iter().map(|l| m.peek(user_id, *l)).collect()),
            Absorber::Redis(r) => r.peek(user_id, lessons).await,
        }
    }

    pub async fn speed(&self, user_id: Uuid) -> Result<Option<SpeedSnapshot>, AbsorbError> {
        match self {
            Absorber::Memory(m) => Ok(m.speed(user_id)),
            Absorber::Redis(r) => r.speed(user_id).await,
        }
    }

    /// Up to `max` dirty entries (and the dirty speeds) to write.
    pub async fn take(&self, max: usize) -> Result<Batch, AbsorbError> {
        match self {
            Absorber::Memory(m) => Ok(m.take(max)),
            Absorber::Redis(r) => r.take(max).await,
        }
    }

    /// The batch is in PostgreSQL.
    pub async fn ack(&self, batch: &Batch) -> Result<(), AbsorbError> {
        match self {
            Absorber::Memory(m) => {
                m.ack(batch);
                Ok(())
            }
            Absorber::Redis(r) => r.ack(batch).await,
        }
    }

    /// The batch could not be written: let another flush (or node) retry.
    pub async fn abandon(&self, batch: &Batch) -> Result<(), AbsorbError> {
        match self {
            Absorber::Memory(_) => Ok(()),
            Absorber::Redis(r) => r.release(batch).await,
        }
    }
}

// ---------------------------------------------------------------- memory

const SHARDS: usize = 32;
/// Clean entries idle this long are dropped; PostgreSQL has them.
const IDLE: Duration = Duration::from_secs(600);

struct Entry {
    snap: Snapshot,
    signature: String,
    flushed_version: u64,
    touched: Instant,
}

struct SpeedEntry {
    snap: SpeedSnapshot,
    flushed_version: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<(Uuid, Uuid), Entry>,
    speeds: HashMap<Uuid, SpeedEntry>,
}

/// In-process absorber: a map split into shards by learner, so beats of
/// different learners rarely wait on the same lock (never across an await).
pub struct Memory {
    shards: Vec<Mutex<Shard>>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Memory {
    fn shard(&self, user_id: Uuid) -> std::sync::MutexGuard<'_, Shard> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user_id.hash(&mut h);
        let i = (h.finish() as usize) % SHARDS;
        // A panic while holding a shard cannot leave it half-updated in a
        // way that matters more than losing the process's beats.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn absorb(&self, beat: &Beat) {
        let signature = beat.signature();
        let mut shard = self.shard(beat.user_id);
        let entry = shard
            .entries
            .entry((beat.user_id, beat.lesson_id))
            .or_insert_with(|| Entry {
                snap: Snapshot {
                    user_id: beat.user_id,
                    lesson_id: beat.lesson_id,
                    org_id: beat.org_id,
                    duration_s: beat.duration_s,
                    position_s: 0.0,
                    speed: 1.0,
                    at_ms: i64::MIN,
                    watched: Intervals::new(),
                    pending_watch_s: 0.0,
                    version: 0,
                },
                signature: String::new(),
                flushed_version: 0,
                touched: Instant::now(),
            });
        entry.touched = Instant::now();
        if entry.signature == signature {
            return;
        }
        let s = &mut entry.snap;
        intervals::insert(&mut s.watched, beat.from_s, beat.to_s);
        s.duration_s = beat.duration_s;
        s.org_id = beat.org_id;
        if beat.at_ms >= s.at_ms {
            s.position_s = beat.position_s;
            s.speed = beat.speed;
            s.at_ms = beat.at_ms;
            s.pending_watch_s += beat.wall_s();
            entry.signature = signature;
        }
        s.version += 1;
        let speed = shard.speeds.entry(beat.user_id).or_insert(SpeedEntry {
            snap: SpeedSnapshot {
                user_id: beat.user_id,
                speed: 1.0,
                at_ms: i64::MIN,
                version: 0,
            },
            flushed_version: 0,
        });
        if beat.at_ms >= speed.snap.at_ms {
            speed.snap.speed = beat.speed;
            speed.snap.at_ms = beat.at_ms;
            speed.snap.version += 1;
        }
    }

    fn peek(&self, user_id: Uuid, lesson_id: Uuid) -> Option<Snapshot> {
        self.shard(user_id)
            .entries
            .get(&(user_id, lesson_id))
            .map(|e| e.snap.clone())
    }

    fn speed(&self, user_id: Uuid) -> Option<SpeedSnapshot> {
        self.shard(user_id).speeds.get(&user_id).map(|e| e.snap)
    }

    fn take(&self, max: usize) -> Batch {
        let mut batch = Batch::default();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            shard.entries.retain(|_, e| {
                e.snap.version != e.flushed_version || now.duration_since(e.touched) < IDLE
            });
            for e in shard.entries.values() {
                if batch.entries.len() < max && e.snap.version != e.flushed_version {
                    batch.entries.push(e.snap.clone());
                }
            }
            for e in shard.speeds.values() {
                if e.snap.version != e.flushed_version {
                    batch.speeds.push(e.snap);
                }
            }
            let live: std::collections::HashSet<Uuid> =
                shard.entries.keys().map(|(u, _)| *u).collect();
            shard
                .speeds
                .retain(|u, e| e.snap.version != e.flushed_version || live.contains(u));
        }
        batch
    }

    fn ack(&self, batch: &Batch) {
        for s in &batch.entries {
            let mut shard = self.shard(s.user_id);
            if let Some(e) = shard.entries.get_mut(&(s.user_id, s.lesson_id)) {
                e.snap.pending_watch_s -= s.pending_watch_s;
                if e.snap.version == s.version {
                    e.snap.pending_watch_s = 0.0;
                    e.flushed_version = s.version;
                }
            }
        }
        for s in &batch.speeds {
            let mut shard = self.shard(s.user_id);
            if let Some(e) = shard.speeds.get_mut(&s.user_id) {
                if e.snap.version == s.version {
                    e.flushed_version = s.version;
                }
            }
        }
    }
}

// ----------------------------------------------------------------- redis

/// Applies a batch of beats atomically, in order; per beat the same rules
/// as [`Memory::absorb`]. Per beat, KEYS: entry hash, dirty zset, speed
/// hash, dirty-speed zset; ARGV: member, user, org, duration, position,
/// speed, from, to, at (ms), signature, ttl (s), gap.
const ABSORB_LUA: &str = r#"
local function apply(k, a)
  local e = KEYS[k]
  local from, to, at = tonumber(ARGV[a + 7]), tonumber(ARGV[a + 8]), tonumber(ARGV[a + 9])
  local cur = redis.call('HMGET', e, 'at', 'sig', 'iv')
  if cur[2] == ARGV[a + 10] then
    redis.call('EXPIRE', e, ARGV[a + 11])
    return
  end
  if to > from then
    local iv = {}
    if cur[3] then iv = cjson.decode(cur[3]) end
    table.insert(iv, {from, to})
    table.sort(iv, function(x, y)
      if x[1] == y[1] then return x[2] < y[2] end
      return x[1] < y[1]
    end)
    local gap = tonumber(ARGV[a + 12])
    local merged = {}
    for _, x in ipairs(iv) do
      local last = merged[#merged]
      if last and x[1] <= last[2] + gap then
        if x[2] > last[2] then last[2] = x[2] end
      else
        table.insert(merged, {x[1], x[2]})
      end
    end
    redis.call('HSET', e, 'iv', cjson.encode(merged))
  end
  local last_at = tonumber(cur[1])
  if last_at == nil or at >= last_at then
    redis.call('HSET', e, 'pos', ARGV[a + 5], 'speed', ARGV[a + 6], 'at', ARGV[a + 9], 'sig', ARGV[a + 10])
    redis.call('HINCRBYFLOAT', e, 'wt', (to - from) / tonumber(ARGV[a + 6]))
  end
  redis.call('HSET', e, 'org', ARGV[a + 3], 'dur', ARGV[a + 4])
  redis.call('HINCRBY', e, 'v', 1)
  redis.call('EXPIRE', e, ARGV[a + 11])
  redis.call('ZADD', KEYS[k + 1], 'NX', at, ARGV[a + 1])
  local sat = tonumber(redis.call('HGET', KEYS[k + 2], 'at'))
  if sat == nil or at >= sat then
    redis.call('HSET', KEYS[k + 2], 'speed', ARGV[a + 6], 'at', ARGV[a + 9])
    redis.call('HINCRBY', KEYS[k + 2], 'v', 1)
    redis.call('EXPIRE', KEYS[k + 2], ARGV[a + 11])
    redis.call('ZADD', KEYS[k + 3], 'NX', at, ARGV[a + 2])
  end
end
local n = #KEYS / 4
for i = 0, n - 1 do
  apply(i * 4 + 1, i * 12)
end
return n
"#;

/// Acknowledges a written batch. KEYS: dirty zset, dirty-speed zset, then
/// entry keys, then speed keys. ARGV: n entries, then per entry (member,
/// version, watch time written), then per speed (member, version).
const ACK_LUA: &str = r#"
local n = tonumber(ARGV[1])
local k = 3
local a = 2
for i = 1, n do
  local key = KEYS[k]
  if redis.call('EXISTS', key) == 1 then
    redis.call('HINCRBYFLOAT', key, 'wt', -tonumber(ARGV[a + 2]))
    if redis.call('HGET', key, 'v') == ARGV[a + 1] then
      redis.call('ZREM', KEYS[1], ARGV[a])
    end
  else
    redis.call('ZREM', KEYS[1], ARGV[a])
  end
  k = k + 1
  a = a + 3
end
while k <= #KEYS do
  local v = redis.call('HGET', KEYS[k], 'v')
  if v == false or v == ARGV[a + 1] then
    redis.call('ZREM', KEYS[2], ARGV[a])
  end
  k = k + 1
  a = a + 2
end
return 1
"#;

/// Deletes the flush lock only if this node still holds it.
const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// How long an entry outlives its last beat in Redis; a dirty entry is
/// written long before (unless every flusher is down for a day).
const REDIS_TTL_S: u64 = 24 * 3600;
/// A flusher that died holding the lock blocks others this long at most.
const LOCK_MS: u64 = 30_000;

/// Beats applied by one script call at most.
const ABSORB_BATCH: usize = 256;
/// Script calls of one node in flight at once.
const ABSORB_IN_FLIGHT: usize = 3;

type PendingBeat = (Beat, oneshot::Sender<Result<(), AbsorbError>>);

/// Redis absorber: every API node writes beats here, and one node at a
/// time (a lock with expiry) flushes them.
///
/// Beats are group-committed: one writer task applies every beat that
/// arrived while the previous script call ran, in one call, and answers
/// each request once Redis has applied its beat. A beat therefore still
/// returns 204 only when Redis holds it, but Redis runs one script per
/// batch instead of one per beat (measured: a script call per beat capped
/// the node at a few thousand beats a second with 10,000 players).
pub struct RedisAbsorber {
    con: redis::aio::ConnectionManager,
    prefix: String,
    beats: mpsc::UnboundedSender<PendingBeat>,
    ack: redis::Script,
    unlock: redis::Script,
}

impl RedisAbsorber {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, AbsorbError> {
        let client = redis::Client::open(url)?;
        // The client's default (500 ms) turns a burst queued behind other
        // beats into errors; wait as long as for a PostgreSQL connection.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(3)));
        let con = client.get_connection_manager_with_config(config).await?;
        let (beats, queued) = mpsc::unbounded_channel();
        // Ends when the absorber (the only sender) is dropped.
        tokio::spawn(write_beats(con.clone(), prefix.to_string(), queued));
        Ok(Self {
            con,
            prefix: prefix.to_string(),
            beats,
            ack: redis::Script::new(ACK_LUA),
            unlock: redis::Script::new(UNLOCK_LUA),
        })
    }

    fn entry_key(&self, member: &str) -> String {
        entry_key(&self.prefix, member)
    }

    fn speed_key(&self, user: &str) -> String {
        speed_key(&self.prefix, user)
    }

    fn dirty(&self) -> String {
        format!("{}dirty", self.prefix)
    }

    fn dirty_speeds(&self) -> String {
        format!("{}dirty-speeds", self.prefix)
    }

    async fn absorb(&self, beat: &Beat) -> Result<(), AbsorbError> {
        let (done, applied) = oneshot::channel();
        self.beats
            .send((beat.clone(), done))
            .map_err(|_| AbsorbError("the beat writer stopped".into()))?;
        applied
            .await
            .map_err(|_| AbsorbError("the beat writer stopped".into()))?
    }

    async fn peek(
        &self,
        user_id: Uuid,
        lessons: &[Uuid],
    ) -> Result<Vec<Option<Snapshot>>, AbsorbError> {
        if lessons.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for l in lessons {
            pipe.cmd("HGETALL")
                .arg(self.entry_key(&format!("{user_id}:{l}")));
        }
        let mut con = self.con.clone();
        let rows: Vec<HashMap<String, String>> = pipe.query_async(&mut con).await?;
        Ok(rows
            .into_iter()
            .zip(lessons)
            .map(|(h, l)| parse_entry(user_id, *l, &h))
            .collect())
    }

    async fn speed(&self, user_id: Uuid) -> Result<Option<SpeedSnapshot>, AbsorbError> {
        let mut con = self.con.clone();
        let h: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.speed_key(&user_id.to_string()))
            .query_async(&mut con)
            .await?;
        Ok(parse_speed(user_id, &h))
    }

    async fn take(&self, max: usize) -> Result<Batch, AbsorbError> {
        let mut con = self.con.clone();
        let token = Uuid::new_v4().to_string();
        let locked: Option<String> = redis::cmd("SET")
            .arg(format!("{}flush-lock", self.prefix))
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(LOCK_MS)
            .query_async(&mut con)
            .await?;
        if locked.is_none() {
            // Another node is flushing; it writes these beats.
            return Ok(Batch::default());
        }
        let mut batch = Batch {
            lock_token: Some(token),
            ..Batch::default()
        };
        let read = async {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.dirty())
                .arg(0)
                .arg(max.saturating_sub(1))
                .query_async(&mut con)
                .await?;
            let users: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.dirty_speeds())
                .arg(0)
                .arg(max.saturating_sub(1))
                .query_async(&mut con)
                .await?;
            let mut pipe = redis::pipe();
            for m in &members {
                pipe.cmd("HGETALL").arg(self.entry_key(m));
            }
            for u in &users {
                pipe.cmd("HGETALL").arg(self.speed_key(u));
            }
            let rows: Vec<HashMap<String, String>> = if members.is_empty() && users.is_empty() {
                Vec::new()
            } else {
                pipe.query_async(&mut con).await?
            };
            let mut stale = Vec::new();
            for (m, h) in members.iter().zip(&rows) {
                let parsed = m
                    .split_once(':')
                    .and_then(|(u, l)| parse_entry(u.parse().ok()?, l.parse().ok()?, h));
                match parsed {
                    Some(s) => batch.entries.push(s),
                    // Expired or unreadable: nothing to write.
                    None => stale.push(m.clone()),
                }
            }
            for (u, h) in users.iter().zip(&rows[members.len()..]) {
                if let Some(s) = u.parse().ok().and_then(|u| parse_speed(u, h)) {
                    batch.speeds.push(s);
                }
            }
            if !stale.is_empty() {
                let _: i64 = redis::cmd("ZREM")
                    .arg(self.dirty())
                    .arg(&stale)
                    .query_async(&mut con)
                    .await?;
            }
            Ok::<_, AbsorbError>(())
        };
        if let Err(e) = read.await {
            let _ = self.release(&batch).await;
            return Err(e);
        }
        Ok(batch)
    }

    async fn ack(&self, batch: &Batch) -> Result<(), AbsorbError> {
        if !batch.entries.is_empty() || !batch.speeds.is_empty() {
            let mut inv = self.ack.prepare_invoke();
            inv.key(self.dirty()).key(self.dirty_speeds());
            inv.arg(batch.entries.len());
            for s in &batch.entries {
                let member = format!("{}:{}", s.user_id, s.lesson_id);
                inv.key(self.entry_key(&member));
                inv.arg(member).arg(s.version).arg(s.pending_watch_s);
            }
            for s in &batch.speeds {
                let user = s.user_id.to_string();
                inv.key(self.speed_key(&user));
                inv.arg(user).arg(s.version);
            }
            let mut con = self.con.clone();
            let _: i64 = inv.invoke_async(&mut con).await?;
        }
        self.release(batch).await
    }

    async fn release(&self, batch: &Batch) -> Result<(), AbsorbError> {
        if let Some(token) = &batch.lock_token {
            let mut con = self.con.clone();
            let _: i64 = self
                .unlock
                .key(format!("{}flush-lock", self.prefix))
                .arg(token)
                .invoke_async(&mut con)
                .await?;
        }
        Ok(())
    }
}

fn entry_key(prefix: &str, member: &str) -> String {
    format!("{prefix}e:{member}")
}

fn speed_key(prefix: &str, user: &str) -> String {
    format!("{prefix}s:{user}")
}

/// The writer task of [`RedisAbsorber`]: applies whatever beats are queued
/// (up to [`ABSORB_BATCH`]) in one script call, then answers them. Up to
/// [`ABSORB_IN_FLIGHT`] calls overlap, so the next batch is on the wire
/// while Redis runs the previous one; beats of one learner × lesson in two
/// overlapping batches may apply out of order, which the rules above make
/// harmless (like a late retry).
async fn write_beats(
    con: redis::aio::ConnectionManager,
    prefix: String,
    mut queued: mpsc::UnboundedReceiver<PendingBeat>,
) {
    let script = Arc::new(redis::Script::new(ABSORB_LUA));
    let in_flight = Arc::new(Semaphore::new(ABSORB_IN_FLIGHT));
    let keys = Arc::new((
        prefix.clone(),
        format!("{prefix}dirty"),
        format!("{prefix}dirty-speeds"),
    ));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(ABSORB_BATCH);
        if queued.recv_many(&mut batch, ABSORB_BATCH).await == 0 {
            return;
        }
        let (mut con, script) = (con.clone(), script.clone());
        let keys = keys.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (prefix, dirty, dirty_speeds) = &*keys;
            let mut inv = script.prepare_invoke();
            for (beat, _) in &batch {
                let member = format!("{}:{}", beat.user_id, beat.lesson_id);
                let user = beat.user_id.to_string();
                inv.key(entry_key(prefix, &member))
                    .key(dirty)
                    .key(speed_key(prefix, &user))
                    .key(dirty_speeds);
                inv.arg(&member)
                    .arg(&user)
                    .arg(beat.org_id.to_string())
                    .arg(beat.duration_s)
                    .arg(beat.position_s)
                    .arg(beat.speed)
                    .arg(beat.from_s)
                    .arg(beat.to_s)
                    .arg(beat.at_ms)
                    .arg(beat.signature())
                    .arg(REDIS_TTL_S)
                    .arg(intervals::GAP_S);
            }
            let applied: Result<i64, redis::RedisError> = inv.invoke_async(&mut con).await;
            for (_, done) in batch {
                // The request may have gone (client hung up); its beat counts.
                let _ = done.send(match &applied {
                    Ok(_) => Ok(()),
                    Err(e) => Err(AbsorbError(e.to_string())),
                });
            }
        });
    }
}

fn parse_entry(user_id: Uuid, lesson_id: Uuid, h: &HashMap<String, String>) -> Option<Snapshot> {
    let num = |k: &str| h.get(k).and_then(|v| v.parse::<f64>().ok());
    let watched: Intervals = match h.get("iv") {
        Some(v) => serde_json::from_str(v).ok()?,
        None => Intervals::new(),
    };
    Some(Snapshot {
        user_id,
        lesson_id,
        org_id: h.get("org")?.parse().ok()?,
        duration_s: num("dur")?,
        position_s: num("pos").unwrap_or(0.0),
        speed: num("speed").unwrap_or(1.0) as f32,
        at_ms: h.get("at").and_then(|v| v.parse().ok()).unwrap_or(i64::MIN),
        watched,
        pending_watch_s: num("wt").unwrap_or(0.0),
        version: h.get("v")?.parse().ok()?,
    })
}

fn parse_speed(user_id: Uuid, h: &HashMap<String, String>) -> Option<SpeedSnapshot> {
    Some(SpeedSnapshot {
        user_id,
        speed: h.get("speed")?.parse().ok()?,
        at_ms: h.get("at")?.parse().ok()?,
        version: h.get("v")?.parse().ok()?,
    })
}
