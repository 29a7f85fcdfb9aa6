//! The absorber: where heartbeats land before PostgreSQL. In-process (a
//! sharded map), or Redis (several API nodes share it: each node absorbs
//! into its own map and pushes what changed to Redis every second); the
//! flusher (`super::flush`) moves what changed to PostgreSQL in batches.
//!
//! Rules of one beat, per learner × lesson:
//! - a beat identical to the newest one applied (same position, interval
//!   and speed: a client retry) changes nothing;
//! - a beat of a playback session has its played interval credited as far
//!   as [`crate::credit`] allows (the wall time since the previous beat ×
//!   speed): that part joins the watched union (idempotent, order-free);
//!   a beat without a session credits nothing;
//! - if its time is not older than the newest beat applied, it sets the
//!   resume position and the speed, and adds its credited media ÷ speed to
//!   the watch time; an older beat (late, retried after a newer one) only
//!   adds its credited interval.
//!
//! Watch time is therefore counted once per distinct beat, in beat order;
//! the price is that a beat overtaken by a newer one adds no watch time.
//! A beat's time is the client's `sent_at` capped at its arrival (else its
//! arrival), so a late retry never moves the resume point back and a
//! client clock ahead of ours cannot pin it.
//!
//! Redis mode ([`RedisAbsorber`]) answers each beat from the node's own map
//! and pushes every [`PUSH_INTERVAL`]: answering only once Redis had applied
//! a beat made Redis's single thread the limit for every player. Redis
//! holds one JSON string per learner × lesson (`<prefix>p:<user>:<lesson>`),
//! one per learner's speed (`<prefix>sp:<user>`), the playback sessions
//! (`<prefix>ps:<id>`), all with an expiry, and sorted sets of dirty keys.
//! While Redis is unreachable beats are still answered and kept on the
//! node, reads fall back to the node's state over PostgreSQL, and every
//! call gives up within about a second, so no request waits on it; a Redis
//! restarted without persistence loses the watch time it held unflushed,
//! not the intervals or positions the nodes still hold. Across nodes each
//! node knows only its own beats' order, so a retry reaching another node
//! can count its watch time twice (as far as the credit allows).
//!
//! The playback sessions beats name live here too: in the node's map, and
//! in Redis mode also in Redis, so a beat reaching another node than the
//! one that issued its session is checked there (one read per node and
//! session).
//!
//! An entry carries a version bumped by every change; the flusher writes a
//! snapshot, then acknowledges it: the pending watch time it wrote is
//! subtracted, and the entry leaves the dirty set only if no beat arrived
//! meanwhile.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::credit::{self, Budget, Claim, SESSION_TTL};
use crate::intervals::{self, Intervals};

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
    /// When the beat's playback session was issued ([`crate::credit::Clock`]);
    /// `None` for a beat without one, which credits nothing.
    pub issued_ms: Option<i64>,
    /// When the beat arrived ([`crate::credit::Clock`]): what its credit is
    /// bounded by.
    pub arrival_ms: i64,
}

impl Beat {
    /// What makes a retry recognisable without a beat id.
    fn signature(&self) -> String {
        format!(
            "{},{},{},{}",
            self.position_s, self.from_s, self.to_s, self.speed
        )
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
    /// Redis mode, in what a node pushes: its beats since the last push,
    /// for Redis to credit against the shared allowance.
    pub claims: Vec<Claim>,
    /// Redis mode, in what a node pushes: the watched union Redis last
    /// answered (already credited there; pushed again so that a Redis
    /// restarted empty gets it back).
    pub confirmed: Intervals,
}

/// A playback session as beats are checked against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub user_id: Uuid,
    pub lesson_id: Uuid,
    /// [`crate::credit::Clock`] milliseconds.
    pub issued_ms: i64,
}

impl Session {
    /// Whether it may still carry beats at `now_ms`.
    pub fn live_at(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.issued_ms) < SESSION_TTL.as_millis() as i64
    }
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
            Absorber::Redis(r) => {
                r.absorb(beat);
                Ok(())
            }
        }
    }

    /// Records a playback session issued as `id`. In Redis mode it is
    /// written there too, for the other nodes; if Redis cannot take it,
    /// beats reaching this node still find it.
    pub async fn open_session(&self, id: Uuid, session: Session) {
        match self {
            Absorber::Memory(m) => m.open_session(id, session),
            Absorber::Redis(r) => r.open_session(id, session).await,
        }
    }

    /// The playback session `id` if it was issued to `user_id`. An error
    /// only in Redis mode, when this node has never seen it and Redis
    /// cannot be asked.
    pub async fn session(&self, user_id: Uuid, id: Uuid) -> Result<Option<Session>, AbsorbError> {
        match self {
            Absorber::Memory(m) => Ok(m.session(user_id, id)),
            Absorber::Redis(r) => r.session(user_id, id).await,
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
    /// The allowance beats are credited from ([`crate::credit`]): the
    /// learner × lesson's own in memory mode; in Redis mode this node's
    /// view, which Redis checks again when the node pushes.
    budget: Budget,
    /// Redis mode: beats not yet pushed, with what this node credited.
    unpushed: Vec<(Claim, f64)>,
    /// Redis mode: the watched union Redis answered to the last push.
    confirmed: Intervals,
}

impl Entry {
    fn new(beat: &Beat) -> Self {
        Self {
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
                claims: Vec::new(),
                confirmed: Intervals::new(),
            },
            signature: String::new(),
            flushed_version: 0,
            touched: Instant::now(),
            budget: Budget::default(),
            unpushed: Vec::new(),
            confirmed: Intervals::new(),
        }
    }

    /// What a push sends or a flush writes.
    fn to_push(&self) -> Snapshot {
        Snapshot {
            claims: self.unpushed.iter().map(|(c, _)| *c).collect(),
            confirmed: self.confirmed.clone(),
            ..self.snap.clone()
        }
    }
}

struct SpeedEntry {
    snap: SpeedSnapshot,
    flushed_version: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<(Uuid, Uuid), Entry>,
    speeds: HashMap<Uuid, SpeedEntry>,
    /// Playback sessions by id, in their learner's shard.
    sessions: HashMap<Uuid, Session>,
}

/// In-process absorber: a map split into shards by learner, so beats of
/// different learners rarely wait on the same lock (never across an await).
pub struct Memory {
    shards: Vec<Mutex<Shard>>,
    /// Keep each beat's claim until a push (a Redis node's own state).
    record_claims: bool,
    /// Who watches each live lesson now ([`crate::viewers`]).
    pub(crate) presence: crate::viewers::Presence,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            record_claims: false,
            presence: crate::viewers::Presence::default(),
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

    fn open_session(&self, id: Uuid, session: Session) {
        self.shard(session.user_id).sessions.insert(id, session);
    }

    fn session(&self, user_id: Uuid, id: Uuid) -> Option<Session> {
        self.shard(user_id)
            .sessions
            .get(&id)
            .filter(|s| s.user_id == user_id)
            .copied()
    }

    fn absorb(&self, beat: &Beat) {
        let signature = beat.signature();
        let record_claims = self.record_claims;
        let mut shard = self.shard(beat.user_id);
        let entry = shard
            .entries
            .entry((beat.user_id, beat.lesson_id))
            .or_insert_with(|| Entry::new(beat));
        entry.touched = Instant::now();
        if entry.signature == signature {
            return;
        }
        let newest = beat.at_ms >= entry.snap.at_ms;
        if let Some(issued_ms) = beat.issued_ms {
            let claim = Claim {
                from_s: beat.from_s,
                to_s: beat.to_s,
                speed: beat.speed,
                arrival_ms: beat.arrival_ms,
                issued_ms,
                counts_watch_time: newest,
            };
            let credited = entry.budget.credit(&claim);
            if let Some([from, to]) = claim.credited_interval(credited) {
                // A fragment past the cap is not credited: neither unique
                // seconds nor the watch time it would have carried.
                if intervals::insert_capped(&mut entry.snap.watched, from, to) && newest {
                    entry.snap.pending_watch_s += credited / f64::from(beat.speed);
                }
            }
            if record_claims {
                entry.unpushed.push((claim, credited));
            }
        }
        let s = &mut entry.snap;
        s.duration_s = beat.duration_s;
        s.org_id = beat.org_id;
        if newest {
            s.position_s = beat.position_s;
            s.speed = beat.speed;
            s.at_ms = beat.at_ms;
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
        let expired_before = chrono::Utc::now().timestamp_millis() - SESSION_TTL.as_millis() as i64;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            shard.entries.retain(|_, e| {
                e.snap.version != e.flushed_version || now.duration_since(e.touched) < IDLE
            });
            shard.sessions.retain(|_, s| s.issued_ms > expired_before);
            for e in shard.entries.values() {
                if batch.entries.len() < max && e.snap.version != e.flushed_version {
                    batch.entries.push(e.to_push());
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

    /// Redis took `pushed` and answered each entry's watched union: the
    /// claims pushed leave, and what this node shows becomes Redis's union
    /// with what it credited to the beats absorbed since (a credit Redis
    /// cut is no longer shown).
    fn ack_pushed(&self, pushed: &[Snapshot], unions: Vec<Intervals>) {
        for (s, union) in pushed.iter().zip(unions) {
            let mut shard = self.shard(s.user_id);
            if let Some(e) = shard.entries.get_mut(&(s.user_id, s.lesson_id)) {
                let n = s.claims.len().min(e.unpushed.len());
                e.unpushed.drain(..n);
                let mut shown = union.clone();
                for (claim, credited) in &e.unpushed {
                    if let Some([from, to]) = claim.credited_interval(*credited) {
                        intervals::insert_capped(&mut shown, from, to);
                    }
                }
                e.confirmed = union;
                e.snap.watched = shown;
            }
        }
        self.ack(&Batch {
            entries: pushed.to_vec(),
            ..Batch::default()
        });
    }
}

// ----------------------------------------------------------------- redis

// An entry is one string, the JSON object {p: position, s: speed, a: time
// of the newest beat (ms), i: watched intervals (absent when none), o:
// organisation, d: duration, w: pending watch time, v: version, c: arrival
// of the latest beat credited (ms), b: allowance carried (s)}; a learner's
// speed is the string "<at ms> <speed> <version>"; a playback session is
// "<user> <lesson> <issued ms>". One GET and one SET per entry: the
// earlier hash of a dozen fields cost Redis ~28 µs an entry (14 commands).

/// Merges a node's snapshots into the shared entries, atomically, by the
/// same rules as the flusher's merge into PostgreSQL: watched intervals
/// unite, position and speed move only for a newer beat, watch time adds
/// up. The node's claims are credited here against the entry's shared
/// allowance, by the rule of [`crate::credit::Budget`] (which this must
/// mirror), so beats sent to several nodes at once share one allowance.
/// Per entry, KEYS: entry, dirty zset; ARGV: member, org, duration,
/// position, speed, at (ms), confirmed intervals (JSON), claims (JSON,
/// `[from, to, speed, arrival, issued, counts]`), ttl (s), gap, slack,
/// carry cap. Answers each entry's watched union (JSON).
const MERGE_LUA: &str = r#"
local gap, slack, carry_max = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12])
local function credit(e, c)
  local since = c[5]
  if e.c ~= nil and e.c > since then since = e.c end
  local wall = c[4] - since
  if wall < 0 then wall = 0 end
  local available = (e.b or 0) + wall / 1000 * c[3] * (1 + slack)
  local credited = c[2] - c[1]
  if available < credited then credited = available end
  if credited < 0 then credited = 0 end
  e.b = math.min(carry_max, available - credited)
  if e.c == nil or c[4] > e.c then e.c = c[4] end
  return credited
end
local max_fragments = @@MAX_FRAGMENTS@@
local function unite(iv)
  table.sort(iv, function(x, y)
    if x[1] == y[1] then return x[2] < y[2] end
    return x[1] < y[1]
  end)
  local merged = {}
  for _, x in ipairs(iv) do
    local last = merged[#merged]
    if last and x[1] <= last[2] + gap then
      if x[2] > last[2] then last[2] = x[2] end
    else
      table.insert(merged, {x[1], x[2]})
    end
  end
  return merged
end
local function apply(k, a)
  local raw = redis.call('GET', KEYS[k])
  local e
  if raw then e = cjson.decode(raw) else e = {v = 0, w = 0} end
  local add = cjson.decode(ARGV[a + 7])
  local fresh = {}
  local watch = 0
  for _, c in ipairs(cjson.decode(ARGV[a + 8])) do
    local credited = credit(e, c)
    if credited > 0 then
      local w = 0
      if c[6] == 1 then w = credited / c[3] end
      if credited >= c[2] - c[1] then
        table.insert(fresh, {c[1], c[2], w})
      else
        table.insert(fresh, {c[1], c[1] + credited, w})
      end
    end
  end
  if #add > 0 or #fresh > 0 then
    local iv = {}
    if type(e.i) == 'table' then iv = e.i end
    for _, x in ipairs(add) do table.insert(iv, x) end
    iv = unite(iv)
    -- A credited claim that would start a new fragment past the cap is
    -- not added (intervals::insert_capped, the same rule).
    for _, x in ipairs(fresh) do
      local candidate = {}
      for _, y in ipairs(iv) do table.insert(candidate, y) end
      table.insert(candidate, {x[1], x[2]})
      candidate = unite(candidate)
      if #candidate <= #iv or #candidate <= max_fragments then
        iv = candidate
        watch = watch + x[3]
      end
    end
    e.i = iv
  end
  local at = tonumber(ARGV[a + 6])
  if e.a == nil or at >= e.a then
    e.p, e.s, e.a = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), at
  end
  e.g = nil
  e.w = (e.w or 0) + watch
  e.o, e.d, e.v = ARGV[a + 2], tonumber(ARGV[a + 3]), (e.v or 0) + 1
  redis.call('SET', KEYS[k], cjson.encode(e), 'EX', ARGV[a + 9])
  redis.call('ZADD', KEYS[k + 1], 'NX', at, ARGV[a + 1])
  if type(e.i) == 'table' and #e.i > 0 then return cjson.encode(e.i) end
  return '[]'
end
local unions = {}
for i = 0, #KEYS / 2 - 1 do
  unions[i + 1] = apply(i * 2 + 1, i * 12)
end
return unions
"#;

/// Merges a node's learner speeds: the newest wins. Per speed, KEYS:
/// speed, dirty-speed zset; ARGV: user, at (ms), speed, ttl (s).
const MERGE_SPEEDS_LUA: &str = r#"
for i = 0, #KEYS / 2 - 1 do
  local k, a = i * 2 + 1, i * 4
  local at = tonumber(ARGV[a + 2])
  local raw = redis.call('GET', KEYS[k])
  local sat, sv = 0, 0
  if raw then
    local x, _, y = string.match(raw, '^(%S+) (%S+) (%S+)$')
    sat, sv = tonumber(x) or 0, tonumber(y) or 0
  end
  if raw == false or at >= sat then
    redis.call('SET', KEYS[k], ARGV[a + 2] .. ' ' .. ARGV[a + 3] .. ' ' .. (sv + 1), 'EX', ARGV[a + 4])
    redis.call('ZADD', KEYS[k + 1], 'NX', at, ARGV[a + 1])
  end
end
return 1
"#;

/// Acknowledges written entries. KEYS: dirty zset, then entry keys;
/// ARGV: per entry (member, version, watch time written).
const ACK_LUA: &str = r#"
for k = 2, #KEYS do
  local a = (k - 2) * 3 + 1
  local raw = redis.call('GET', KEYS[k])
  if raw then
    local e = cjson.decode(raw)
    if e.v == tonumber(ARGV[a + 1]) then
      e.w = 0
      redis.call('ZREM', KEYS[1], ARGV[a])
    else
      e.w = e.w - tonumber(ARGV[a + 2])
    end
    redis.call('SET', KEYS[k], cjson.encode(e), 'KEEPTTL')
  else
    redis.call('ZREM', KEYS[1], ARGV[a])
  end
end
return 1
"#;

/// Acknowledges written speeds. KEYS: dirty-speed zset, then speed keys;
/// ARGV: per speed (user, version).
const ACK_SPEEDS_LUA: &str = r#"
for k = 2, #KEYS do
  local a = (k - 2) * 2 + 1
  local raw = redis.call('GET', KEYS[k])
  local v = raw and string.match(raw, ' (%S+)$')
  if v == nil or v == ARGV[a + 1] then
    redis.call('ZREM', KEYS[1], ARGV[a])
  end
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

/// How often a node moves what it absorbed to Redis: the most a node's
/// crash loses (with the push's own duration), well inside the flush
/// interval the requirement allows, and how stale another node's view
/// of a learner can be.
pub const PUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Entries read, pushed or acknowledged by one Redis call at most: Redis
/// runs one call at a time, and a flush of 10,000 entries in one call held
/// every other client behind it for ~65 ms.
const FLUSH_CHUNK: usize = 500;

/// Redis absorber: several API nodes share the learners' progress through
/// Redis, and one node at a time (a lock with expiry) flushes it to
/// PostgreSQL.
///
/// A beat lands in the node's own in-process absorber, as in memory mode,
/// and is answered at once; every [`PUSH_INTERVAL`] the node merges what
/// changed into Redis (in chunks, by [`MERGE_LUA`]) and acknowledges it
/// locally. Reads merge the node's unpushed state over Redis, so a node
/// sees its own beats at once and other nodes' within a push interval.
/// Measured on 2 cores, 10,000 players: answering each beat only once
/// Redis had applied it (group-committed Lua calls) capped Redis mode at
/// 0.25× the do-nothing handler; Redis's single thread, not the API, was
/// the limit, and every beat waited for it.
///
/// Credit ([`crate::credit`]) is decided where the nodes' beats meet: a
/// node credits a beat against its own view of the allowance, at once,
/// and pushes the beat's claim with it; Redis credits the claims of every
/// node against the one shared allowance, keeps only that, and answers
/// the entry's union, which the node then shows instead of its own
/// credit. A script sending one lesson's beats to several nodes at once
/// therefore gains nothing in PostgreSQL, and for at most a push interval
/// on each node's own reads.
///
/// What this costs: a node's crash loses what it absorbed since its last
/// push (≤ [`PUSH_INTERVAL`] plus the push), inside the one flush
/// interval the progress requirement allows; and a retry of a beat that
/// reaches another node than the original can count that beat's watch
/// time twice as far as the allowance had room (each node recognises only
/// its own retries).
pub struct RedisAbsorber {
    shared: Arc<Shared>,
    flush_con: redis::aio::ConnectionManager,
    ack: redis::Script,
    ack_speeds: redis::Script,
    unlock: redis::Script,
}

/// What the push task and the request handlers share.
struct Shared {
    local: Memory,
    con: redis::aio::ConnectionManager,
    prefix: String,
    merge: redis::Script,
    merge_speeds: redis::Script,
    /// One push at a time (the timer's, or a flush's).
    pushing: tokio::sync::Mutex<()>,
}

impl Shared {
    fn dirty(&self) -> String {
        format!("{}dirty", self.prefix)
    }

    fn dirty_speeds(&self) -> String {
        format!("{}dirty-speeds", self.prefix)
    }

    /// Moves everything this node absorbed and has not pushed to Redis.
    /// Each chunk is acknowledged locally once Redis holds it, so a failed
    /// push resends only what Redis did not take (pending watch time is
    /// added once).
    async fn push(&self) -> Result<usize, AbsorbError> {
        let _one = self.pushing.lock().await;
        let batch = self.local.take(usize::MAX);
        let mut con = self.con.clone();
        let (dirty, dirty_speeds) = (self.dirty(), self.dirty_speeds());
        for chunk in batch.entries.chunks(FLUSH_CHUNK) {
            let mut inv = self.merge.prepare_invoke();
            for s in chunk {
                let member = format!("{}:{}", s.user_id, s.lesson_id);
                let confirmed = serde_json::to_string(&s.confirmed).unwrap_or_else(|_| "[]".into());
                let claims: Vec<_> = s.claims.iter().copied().map(Claim::to_wire).collect();
                let claims = serde_json::to_string(&claims).unwrap_or_else(|_| "[]".into());
                inv.key(entry_key(&self.prefix, &member)).key(&dirty);
                inv.arg(&member)
                    .arg(s.org_id.to_string())
                    .arg(s.duration_s)
                    .arg(s.position_s)
                    .arg(s.speed)
                    .arg(s.at_ms)
                    .arg(confirmed)
                    .arg(claims)
                    .arg(REDIS_TTL_S)
                    .arg(intervals::GAP_S)
                    .arg(credit::SLACK)
                    .arg(credit::CARRY_MAX_S);
            }
            let unions: Vec<String> = inv.invoke_async(&mut con).await?;
            // Lua's JSON encoder writes an empty list as `{}`.
            let unions = unions
                .iter()
                .map(|u| serde_json::from_str(u).unwrap_or_default())
                .collect();
            self.local.ack_pushed(chunk, unions);
        }
        for chunk in batch.speeds.chunks(FLUSH_CHUNK) {
            let mut inv = self.merge_speeds.prepare_invoke();
            for s in chunk {
                let user = s.user_id.to_string();
                inv.key(speed_key(&self.prefix, &user)).key(&dirty_speeds);
                inv.arg(&user).arg(s.at_ms).arg(s.speed).arg(REDIS_TTL_S);
            }
            let _: i64 = inv.invoke_async(&mut con).await?;
            self.local.ack(&Batch {
                speeds: chunk.to_vec(),
                ..Batch::default()
            });
        }
        Ok(batch.entries.len())
    }
}

/// The push task of one absorber; ends when the absorber is dropped.
async fn push_every_interval(shared: std::sync::Weak<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when pushes fail, and when that was last logged: one warning
    // a minute while Redis is away, not one a second.
    let mut failing: Option<(Instant, Instant)> = None;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.push().await {
            Ok(_) => {
                if let Some((since, _)) = failing.take() {
                    tracing::info!(after = ?since.elapsed(), "pushing heartbeats to Redis again");
                }
            }
            // Kept locally and pushed again next time.
            Err(e) => match &mut failing {
                Some((_, logged)) if logged.elapsed() < Duration::from_secs(60) => {}
                Some((since, logged)) => {
                    *logged = Instant::now();
                    tracing::warn!(error = %e, for_ = ?since.elapsed(), "still cannot push heartbeats to Redis; they are kept in this node");
                }
                None => {
                    failing = Some((Instant::now(), Instant::now()));
                    tracing::warn!(error = %e, "cannot push heartbeats to Redis; kept in this node, retrying every second");
                }
            },
        }
    }
}

/// `shared` (from Redis) with this node's unpushed state over it.
fn overlay(shared: Option<Snapshot>, mine: Option<Snapshot>) -> Option<Snapshot> {
    match (shared, mine) {
        (s, None) => s,
        (None, m) => m,
        (Some(s), Some(m)) => {
            let watched = intervals::union(&s.watched, &m.watched);
            let newest = if m.at_ms >= s.at_ms { &m } else { &s };
            Some(Snapshot {
                watched,
                position_s: newest.position_s,
                speed: newest.speed,
                at_ms: newest.at_ms,
                pending_watch_s: s.pending_watch_s + m.pending_watch_s,
                ..s
            })
        }
    }
}

impl RedisAbsorber {
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, AbsorbError> {
        Self::connect_pushing(url, prefix, Some(PUSH_INTERVAL)).await
    }

    /// As [`RedisAbsorber::connect`], pushing every `every`, or only when
    /// told ([`Absorber::push`]) with `None`: tests that decide which
    /// node's claims reach Redis first.
    pub async fn connect_pushing(
        url: &str,
        prefix: &str,
        every: Option<Duration>,
    ) -> Result<Self, AbsorbError> {
        let client = redis::Client::open(url)?;
        // While Redis is away a call fails within about a second (two
        // quick reconnect attempts) instead of the client's default six
        // with backoff (~6 s): reads then fall back to this node's state and
        // pushes retry on their own timer, so nothing waits on Redis.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(3)))
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(400));
        let con = client
            .get_connection_manager_with_config(config.clone())
            .await?;
        // The flusher's large replies never queue in front of pushes.
        let flush_con = client.get_connection_manager_with_config(config).await?;
        let shared = Arc::new(Shared {
            local: Memory {
                record_claims: true,
                ..Memory::default()
            },
            con,
            prefix: prefix.to_string(),
            merge: redis::Script::new(
                &MERGE_LUA.replace("@@MAX_FRAGMENTS@@", &intervals::MAX_FRAGMENTS.to_string()),
            ),
            merge_speeds: redis::Script::new(MERGE_SPEEDS_LUA),
            pushing: tokio::sync::Mutex::new(()),
        });
        if let Some(every) = every {
            tokio::spawn(push_every_interval(Arc::downgrade(&shared), every));
        }
        Ok(Self {
            shared,
            flush_con,
            ack: redis::Script::new(ACK_LUA),
            ack_speeds: redis::Script::new(ACK_SPEEDS_LUA),
            unlock: redis::Script::new(UNLOCK_LUA),
        })
    }

    fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The request handlers' connection and the key prefix, for
    /// [`crate::viewers`].
    pub(crate) fn presence_connection(&self) -> (redis::aio::ConnectionManager, &str) {
        (self.shared.con.clone(), self.prefix())
    }

    fn entry_key(&self, member: &str) -> String {
        entry_key(self.prefix(), member)
    }

    fn speed_key(&self, user: &str) -> String {
        speed_key(self.prefix(), user)
    }

    fn absorb(&self, beat: &Beat) {
        self.shared.local.absorb(beat);
    }

    fn session_key(&self, id: Uuid) -> String {
        format!("{}ps:{id}", self.prefix())
    }

    async fn open_session(&self, id: Uuid, session: Session) {
        self.shared.local.open_session(id, session);
        let value = format!(
            "{} {} {}",
            session.user_id, session.lesson_id, session.issued_ms
        );
        let mut con = self.shared.con.clone();
        let written: Result<(), _> = redis::cmd("SET")
            .arg(self.session_key(id))
            .arg(value)
            .arg("EX")
            .arg(SESSION_TTL.as_secs())
            .query_async(&mut con)
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot record a playback session in Redis; only this node knows it");
        }
    }

    async fn session(&self, user_id: Uuid, id: Uuid) -> Result<Option<Session>, AbsorbError> {
        if let Some(s) = self.shared.local.session(user_id, id) {
            return Ok(Some(s));
        }
        let mut con = self.shared.con.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.session_key(id))
            .query_async(&mut con)
            .await?;
        let found = raw
            .and_then(|raw| parse_session(&raw))
            .filter(|s| s.user_id == user_id);
        if let Some(s) = found {
            self.shared.local.open_session(id, s);
        }
        Ok(found)
    }

    /// Pushes this node's unpushed beats now (tests; before a flush).
    pub async fn push(&self) -> Result<usize, AbsorbError> {
        self.shared.push().await
    }

    async fn peek(
        &self,
        user_id: Uuid,
        lessons: &[Uuid],
    ) -> Result<Vec<Option<Snapshot>>, AbsorbError> {
        if lessons.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = lessons
            .iter()
            .map(|l| self.entry_key(&format!("{user_id}:{l}")))
            .collect();
        let mut con = self.shared.con.clone();
        // Redis away: this node's own state (PostgreSQL has the rest, up to
        // one flush interval behind) rather than no playback at all.
        let rows: Vec<Option<String>> = match redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut con)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read progress from Redis; using this node's");
                vec![None; lessons.len()]
            }
        };
        Ok(rows
            .into_iter()
            .zip(lessons)
            .map(|(raw, l)| {
                let shared = raw.and_then(|raw| parse_entry(user_id, *l, &raw));
                overlay(shared, self.shared.local.peek(user_id, *l))
            })
            .collect())
    }

    async fn speed(&self, user_id: Uuid) -> Result<Option<SpeedSnapshot>, AbsorbError> {
        let mut con = self.shared.con.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.speed_key(&user_id.to_string()))
            .query_async(&mut con)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read a speed from Redis; using this node's");
                None
            });
        let shared = raw.and_then(|raw| parse_speed(user_id, &raw));
        let mine = self.shared.local.speed(user_id);
        Ok(match (shared, mine) {
            (Some(s), Some(m)) => Some(if m.at_ms >= s.at_ms { m } else { s }),
            (s, m) => s.or(m),
        })
    }

    async fn take(&self, max: usize) -> Result<Batch, AbsorbError> {
        // This node's own beats first, so a flush (and the last flush of a
        // graceful shutdown) includes everything it absorbed.
        self.shared.push().await?;
        let mut con = self.flush_con.clone();
        let token = Uuid::new_v4().to_string();
        let locked: Option<String> = redis::cmd("SET")
            .arg(format!("{}flush-lock", self.prefix()))
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
                .arg(self.shared.dirty())
                .arg(0)
                .arg(max.saturating_sub(1))
                .query_async(&mut con)
                .await?;
            let users: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.shared.dirty_speeds())
                .arg(0)
                .arg(max.saturating_sub(1))
                .query_async(&mut con)
                .await?;
            let mut stale = Vec::new();
            for chunk in members.chunks(FLUSH_CHUNK) {
                let keys: Vec<String> = chunk.iter().map(|m| self.entry_key(m)).collect();
                let rows: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut con).await?;
                for (m, raw) in chunk.iter().zip(rows) {
                    let parsed = m.split_once(':').and_then(|(u, l)| {
                        parse_entry(u.parse().ok()?, l.parse().ok()?, raw.as_deref()?)
                    });
                    match parsed {
                        Some(s) => batch.entries.push(s),
                        // Expired or unreadable: nothing to write.
                        None => stale.push(m.clone()),
                    }
                }
            }
            for chunk in users.chunks(FLUSH_CHUNK) {
                let keys: Vec<String> = chunk.iter().map(|u| self.speed_key(u)).collect();
                let rows: Vec<Option<String>> =
                    redis::cmd("MGET").arg(&keys).query_async(&mut con).await?;
                for (u, raw) in chunk.iter().zip(rows) {
                    let parsed = u.parse().ok().and_then(|u| parse_speed(u, raw.as_deref()?));
                    if let Some(s) = parsed {
                        batch.speeds.push(s);
                    }
                }
            }
            for chunk in stale.chunks(FLUSH_CHUNK) {
                let _: i64 = redis::cmd("ZREM")
                    .arg(self.shared.dirty())
                    .arg(chunk)
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
        let mut con = self.flush_con.clone();
        for chunk in batch.entries.chunks(FLUSH_CHUNK) {
            let mut inv = self.ack.prepare_invoke();
            inv.key(self.shared.dirty());
            for s in chunk {
                let member = format!("{}:{}", s.user_id, s.lesson_id);
                inv.key(self.entry_key(&member));
                inv.arg(member).arg(s.version).arg(s.pending_watch_s);
            }
            let _: i64 = inv.invoke_async(&mut con).await?;
        }
        for chunk in batch.speeds.chunks(FLUSH_CHUNK) {
            let mut inv = self.ack_speeds.prepare_invoke();
            inv.key(self.shared.dirty_speeds());
            for s in chunk {
                let user = s.user_id.to_string();
                inv.key(self.speed_key(&user));
                inv.arg(user).arg(s.version);
            }
            let _: i64 = inv.invoke_async(&mut con).await?;
        }
        self.release(batch).await
    }

    async fn release(&self, batch: &Batch) -> Result<(), AbsorbError> {
        if let Some(token) = &batch.lock_token {
            let mut con = self.flush_con.clone();
            let _: i64 = self
                .unlock
                .key(format!("{}flush-lock", self.prefix()))
                .arg(token)
                .invoke_async(&mut con)
                .await?;
        }
        Ok(())
    }
}

// `p:` and `sp:` rather than the hashes' `e:` and `s:`: a node of this
// version never reads a key of the earlier layout as the wrong type.
fn entry_key(prefix: &str, member: &str) -> String {
    format!("{prefix}p:{member}")
}

fn speed_key(prefix: &str, user: &str) -> String {
    format!("{prefix}sp:{user}")
}

/// An entry as [`MERGE_LUA`] stores it.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct StoredEntry {
    p: Option<f64>,
    s: Option<f64>,
    a: Option<f64>,
    /// Lua's JSON encoder writes an empty list as `{}`; anything but a
    /// list of pairs counts as nothing watched yet.
    #[serde(default)]
    i: serde_json::Value,
    o: Uuid,
    d: f64,
    #[serde(default)]
    w: f64,
    v: f64,
}

fn parse_entry(user_id: Uuid, lesson_id: Uuid, raw: &str) -> Option<Snapshot> {
    let e: StoredEntry = serde_json::from_str(raw).ok()?;
    Some(Snapshot {
        user_id,
        lesson_id,
        org_id: e.o,
        duration_s: e.d,
        position_s: e.p.unwrap_or(0.0),
        speed: e.s.unwrap_or(1.0) as f32,
        at_ms: e.a.map_or(i64::MIN, |a| a as i64),
        watched: serde_json::from_value(e.i).unwrap_or_default(),
        pending_watch_s: e.w,
        version: e.v as u64,
        claims: Vec::new(),
        confirmed: Intervals::new(),
    })
}

/// A playback session as [`RedisAbsorber::open_session`] stores it:
/// "<user> <lesson> <issued ms>".
fn parse_session(raw: &str) -> Option<Session> {
    let mut parts = raw.split(' ');
    Some(Session {
        user_id: parts.next()?.parse().ok()?,
        lesson_id: parts.next()?.parse().ok()?,
        issued_ms: parts.next()?.parse().ok()?,
    })
}

/// A speed as [`MERGE_SPEEDS_LUA`] stores it: "<at ms> <speed> <version>".
fn parse_speed(user_id: Uuid, raw: &str) -> Option<SpeedSnapshot> {
    let mut parts = raw.split(' ');
    let at_ms = parts.next()?.parse::<f64>().ok()? as i64;
    let speed = parts.next()?.parse().ok()?;
    let version = parts.next()?.parse::<f64>().ok()? as u64;
    Some(SpeedSnapshot {
        user_id,
        speed,
        at_ms,
        version,
    })
}
