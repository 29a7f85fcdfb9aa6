//! The request path's audit writer: one task, one database connection at a
//! time, rows appended in batches.
//!
//! Before it, every audited request took a pool connection and waited on
//! the chain's advisory lock in turn, so a flood of unauthenticated
//! requests (each a 401/404 row) could hold the whole pool and starve
//! sign-ins. Now requests hand their event to a bounded queue; the writer
//! appends whatever has queued up in one transaction (the chain stays one
//! chain: the batch is hashed in order under the lock). A request that
//! changed state still waits for its row before it answers.
//!
//! Noise — an anonymous request refused with a 4xx — is not queued one row
//! per request. Per client address and minute, the first
//! [`NOISE_SAMPLES`] are recorded as they are; the rest are counted and
//! written as one `audit.noise` row when the minute ends. An address past
//! [`NOISE_LIMIT`] in a minute gets 429 `rate_limited` for requests to
//! routes that do not exist, before any work is done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::chain::{self, ChainKey};
use super::AuditEvent;
use crate::alerts::SecurityMetrics;

/// Events waiting for the writer; a request that must wait for its row
/// waits here when the queue is full (back-pressure, not unbounded memory).
const QUEUE: usize = 4096;
/// Most rows appended in one transaction.
const BATCH: usize = 256;
/// Noise rows recorded one by one per address and window.
pub const NOISE_SAMPLES: u32 = 5;
/// Noise requests per address and window after which requests for unknown
/// routes are refused with 429.
pub const NOISE_LIMIT: u32 = 300;
const NOISE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past this, new addresses share one entry so a
/// spray of source addresses cannot grow memory.
const NOISE_ADDRESSES: usize = 10_000;
const OVERFLOW_ADDRESS: &str = "(many addresses)";

// Nearly every job is a write: boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Job {
    Write(AuditEvent, Option<oneshot::Sender<bool>>),
    Flush(oneshot::Sender<()>),
}

struct NoiseWindow {
    started: Instant,
    seen: u32,
    suppressed: u32,
}

#[derive(Default)]
struct NoiseLedger {
    windows: HashMap<String, NoiseWindow>,
}

impl NoiseLedger {
    fn window(&mut self, ip: &str, now: Instant) -> &mut NoiseWindow {
        let key = if self.windows.contains_key(ip) || self.windows.len() < NOISE_ADDRESSES {
            ip
        } else {
            OVERFLOW_ADDRESS
        };
        self.windows
            .entry(key.to_string())
            .or_insert_with(|| NoiseWindow {
                started: now,
                seen: 0,
                suppressed: 0,
            })
    }

    /// Windows that have ended, as the aggregate rows to write.
    fn take_ended(&mut self, now: Instant) -> Vec<AuditEvent> {
        let mut ended = Vec::new();
        self.windows.retain(|ip, w| {
            if now.duration_since(w.started) < NOISE_WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                ended.push(noise_row(ip, w));
            }
            false
        });
        ended
    }

    fn take_all(&mut self) -> Vec<AuditEvent> {
        self.windows
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .map(|(ip, w)| noise_row(&ip, &w))
            .collect()
    }
}

fn noise_row(ip: &str, w: &NoiseWindow) -> AuditEvent {
    AuditEvent {
        action: "audit.noise".into(),
        outcome: "denied",
        ip: (ip != OVERFLOW_ADDRESS).then(|| ip.to_string()),
        detail: Some(
            json!({
                "suppressed": w.suppressed,
                "requests": w.seen,
                "window_secs": NOISE_WINDOW.as_secs(),
            })
            .to_string(),
        ),
        ..AuditEvent::default()
    }
}

/// Handle on the writer task; the task ends when the last handle is gone,
/// after writing what was queued.
pub struct AuditWriter {
    queue: mpsc::Sender<Job>,
    noise: Arc<Mutex<NoiseLedger>>,
    metrics: Arc<SecurityMetrics>,
}

impl AuditWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn start(db: PgPool, key: Option<ChainKey>, metrics: Arc<SecurityMetrics>) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let noise = Arc::new(Mutex::new(NoiseLedger::default()));
        tokio::spawn(run(db, key, jobs, noise.clone(), metrics.clone()));
        Self {
            queue,
            noise,
            metrics,
        }
    }

    /// Appends `event` and waits until its row is written; a failure is
    /// logged and counted (`lectern_audit_failures_total`) rather than
    /// turning a done operation into an error the client would retry.
    pub async fn record(&self, event: AuditEvent) {
        let (done, written) = oneshot::channel();
        let action = event.action.clone();
        if self
            .queue
            .send(Job::Write(event, Some(done)))
            .await
            .is_err()
        {
            self.metrics.audit_failed();
            tracing::error!(%action, "audit writer has stopped");
            return;
        }
        // The writer counts and logs its own failures.
        let _ = written.await;
    }

    /// Records an anonymous refusal: sampled and aggregated per address,
    /// never waited for.
    pub fn record_noise(&self, event: AuditEvent) {
        let ip = event.ip.clone().unwrap_or_else(|| "unknown".into());
        let sample = {
            let mut ledger = self.noise.lock().expect("noise ledger lock");
            let w = ledger.window(&ip, Instant::now());
            w.seen = w.seen.saturating_add(1);
            if w.seen <= NOISE_SAMPLES {
                true
            } else {
                w.suppressed = w.suppressed.saturating_add(1);
                false
            }
        };
        if sample && self.queue.try_send(Job::Write(event, None)).is_err() {
            // The queue is full: count it in the aggregate instead.
            let mut ledger = self.noise.lock().expect("noise ledger lock");
            let w = ledger.window(&ip, Instant::now());
            w.suppressed = w.suppressed.saturating_add(1);
        }
        self.metrics.noise_seen();
    }

    /// Seconds until `ip` may reach unknown routes again, when it has sent
    /// more than [`NOISE_LIMIT`] noise requests this window.
    pub fn noise_exceeded(&self, ip: Option<&str>) -> Option<u64> {
        let ip = ip.unwrap_or("unknown");
        let mut ledger = self.noise.lock().expect("noise ledger lock");
        let now = Instant::now();
        let w = ledger.window(ip, now);
        if w.seen < NOISE_LIMIT || now.duration_since(w.started) >= NOISE_WINDOW {
            return None;
        }
        w.seen = w.seen.saturating_add(1);
        w.suppressed = w.suppressed.saturating_add(1);
        let left = NOISE_WINDOW.saturating_sub(now.duration_since(w.started));
        Some(left.as_secs().max(1))
    }

    /// Waits until everything queued so far, and the noise counted so far,
    /// is written (shutdown, tests).
    pub async fn flush(&self) {
        let ended = self.noise.lock().expect("noise ledger lock").take_all();
        for event in ended {
            let _ = self.queue.send(Job::Write(event, None)).await;
        }
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Job::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

async fn run(
    db: PgPool,
    key: Option<ChainKey>,
    mut jobs: mpsc::Receiver<Job>,
    noise: Arc<Mutex<NoiseLedger>>,
    metrics: Arc<SecurityMetrics>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => job,
                None => break,
            },
            _ = tick.tick() => {
                let ended = noise.lock().expect("noise ledger lock").take_ended(Instant::now());
                write(&db, key.as_ref(), ended, Vec::new(), &metrics).await;
                continue;
            }
        };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        let mut waiting = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for job in batch {
            match job {
                Job::Write(event, done) => {
                    events.push(event);
                    waiting.push(done);
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        write(&db, key.as_ref(), events, waiting, &metrics).await;
        for done in flushes {
            let _ = done.send(());
        }
    }
    // Every handle is gone: what was counted but not yet written goes now.
    let ended = noise.lock().expect("noise ledger lock").take_all();
    write(&db, key.as_ref(), ended, Vec::new(), &metrics).await;
}

/// Appends `events` as one batch; if the batch fails, one by one, so a row
/// the database refuses does not take the others with it.
async fn write(
    db: &PgPool,
    key: Option<&ChainKey>,
    events: Vec<AuditEvent>,
    mut waiting: Vec<Option<oneshot::Sender<bool>>>,
    metrics: &SecurityMetrics,
) {
    if events.is_empty() {
        return;
    }
    waiting.resize_with(events.len(), || None);
    let outcomes: Vec<bool> = match chain::append(db, key, &events).await {
        Ok(_) => vec![true; events.len()],
        Err(batch_error) => {
            tracing::warn!(error = %batch_error, rows = events.len(), "audit batch failed; writing its rows one by one");
            let mut outcomes = Vec::with_capacity(events.len());
            for event in &events {
                match chain::record(db, key, event).await {
                    Ok(_) => outcomes.push(true),
                    Err(e) => {
                        metrics.audit_failed();
                        tracing::error!(error = %e, action = %event.action, "audit record failed");
                        outcomes.push(false);
                    }
                }
            }
            outcomes
        }
    };
    for (done, ok) in waiting.into_iter().zip(outcomes) {
        if let Some(done) = done {
            let _ = done.send(ok);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_sampled_then_counted_and_ends_as_one_row() {
        let mut ledger = NoiseLedger::default();
        let t0 = Instant::now();
        for _ in 0..12 {
            let w = ledger.window("203.0.113.9", t0);
            w.seen += 1;
            if w.seen > NOISE_SAMPLES {
                w.suppressed += 1;
            }
        }
        assert!(ledger.take_ended(t0).is_empty(), "the window is still open");
        let rows = ledger.take_ended(t0 + NOISE_WINDOW);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].action, "audit.noise");
        assert_eq!(rows[0].ip.as_deref(), Some("203.0.113.9"));
        assert!(rows[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("\"suppressed\":7"));
        assert!(ledger.windows.is_empty());
    }

    #[test]
    fn a_spray_of_addresses_shares_one_entry_past_the_cap() {
        let mut ledger = NoiseLedger::default();
        let t0 = Instant::now();
        for i in 0..(NOISE_ADDRESSES + 50) {
            ledger.window(
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                t0,
            );
        }
        assert_eq!(ledger.windows.len(), NOISE_ADDRESSES + 1);
        assert!(ledger.windows.contains_key(OVERFLOW_ADDRESS));
    }
}
