//! How much of a heartbeat's played interval counts toward completion and
//! watch time. A beat claims media seconds; a script can claim a whole
//! lesson in a few beats, so what is credited is bounded by the wall time
//! that really passed: per learner × lesson, a beat may add at most the
//! wall time since the previous beat of that learner and lesson (or since
//! its playback session was issued, whichever is later) × its speed ×
//! (1 + [`SLACK`]), plus what earlier beats left unused, at most
//! [`CARRY_MAX_S`]. The carry absorbs network jitter (a beat that arrives
//! late leaves allowance to the next one, which then arrives early) and the
//! several beats a player sends at once after a seek, without letting
//! slack accumulate: over any stretch, the media credited is at most the
//! wall time × the fastest speed × (1 + slack), plus [`CARRY_MAX_S`].
//!
//! The bound is per learner × lesson rather than per playback session, so
//! opening several sessions of one lesson buys nothing. What exceeds it is
//! not refused — the resume point and speed still move — only cut: the
//! beat's interval is credited from its start for as long as the bound
//! allows.
//!
//! The same rule runs in Rust (the in-process absorber, and each Redis
//! node's own view) and in the Redis absorber's merge script, where every
//! node's beats meet; the two must stay the same.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

/// Media may run this much faster than wall time × speed: players read
/// the media clock and the server its own, a few requests apart.
pub const SLACK: f64 = 0.1;
/// Allowance a beat may leave to the next ones, in media seconds.
pub const CARRY_MAX_S: f64 = 30.0;
/// How long a playback session may carry beats after it was issued; a
/// player still open after that starts a new one.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// The wall clock beats are bounded by (milliseconds since the epoch).
/// Tests advance it instead of sleeping through a lesson; nothing else
/// does.
#[derive(Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(ms, Ordering::Relaxed);
    }
}

/// One beat's claim on the allowance of its learner × lesson.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Claim {
    pub from_s: f64,
    pub to_s: f64,
    pub speed: f32,
    /// When the beat arrived ([`Clock`]).
    pub arrival_ms: i64,
    /// When its playback session was issued ([`Clock`]).
    pub issued_ms: i64,
    /// Whether its credited time adds to the watch time (not for a beat
    /// older than the newest one applied).
    pub counts_watch_time: bool,
}

impl Claim {
    /// As the Redis merge script reads it: `[from, to, speed, arrival,
    /// issued, counts (0|1)]`.
    pub fn to_wire(self) -> (f64, f64, f32, i64, i64, u8) {
        (
            self.from_s,
            self.to_s,
            self.speed,
            self.arrival_ms,
            self.issued_ms,
            u8::from(self.counts_watch_time),
        )
    }

    /// The part of the interval that `credited` media seconds cover. The
    /// whole interval when all of it is credited, exactly as claimed (no
    /// rounding through from + (to − from)).
    pub fn credited_interval(&self, credited: f64) -> Option<[f64; 2]> {
        if credited <= 0.0 {
            None
        } else if credited >= self.to_s - self.from_s {
            Some([self.from_s, self.to_s])
        } else {
            Some([self.from_s, self.from_s + credited])
        }
    }
}

/// The allowance of one learner × lesson.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Budget {
    /// Arrival of the latest beat counted.
    pub last_ms: Option<i64>,
    /// Allowance left by earlier beats, ≤ [`CARRY_MAX_S`].
    pub carry_s: f64,
}

impl Budget {
    /// Media seconds of `claim` to credit, spending them. Claims may come
    /// in any order (from several nodes): one older than the latest
    /// counted accrues nothing and spends only the carry.
    pub fn credit(&mut self, claim: &Claim) -> f64 {
        let since = self
            .last_ms
            .map_or(claim.issued_ms, |l| l.max(claim.issued_ms));
        let wall_s = (claim.arrival_ms - since).max(0) as f64 / 1000.0;
        let available = self.carry_s + wall_s * f64::from(claim.speed) * (1.0 + SLACK);
        let credited = (claim.to_s - claim.from_s).min(available).max(0.0);
        self.carry_s = (available - credited).min(CARRY_MAX_S);
        self.last_ms = Some(
            self.last_ms
                .map_or(claim.arrival_ms, |l| l.max(claim.arrival_ms)),
        );
        credited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(from: f64, to: f64, speed: f32, arrival_ms: i64) -> Claim {
        Claim {
            from_s: from,
            to_s: to,
            speed,
            arrival_ms,
            issued_ms: 0,
            counts_watch_time: true,
        }
    }

    #[test]
    fn a_player_beating_in_real_time_is_credited_in_full() {
        let mut b = Budget::default();
        // Every 5 s, 10 s of media at 2×, with a second of network jitter.
        let mut credited = 0.0;
        for (i, jitter) in [0, 900, -900, 400, 0, -1000, 1000, 0].iter().enumerate() {
            let at = 1_000 + (i as i64 + 1) * 5_000 + jitter;
            let from = i as f64 * 10.0;
            credited += b.credit(&claim(from, from + 10.0, 2.0, at));
        }
        assert_eq!(credited, 80.0);
    }

    #[test]
    fn claims_beyond_the_wall_time_are_cut() {
        let mut b = Budget::default();
        // A one-hour lesson claimed in 8 beats within a second of its session.
        let credited: f64 = (0..8)
            .map(|i| {
                let from = f64::from(i) * 450.0;
                b.credit(&claim(from, from + 450.0, 2.0, 100 + i64::from(i) * 100))
            })
            .sum();
        assert!(credited < 1.0 * 2.0 * (1.0 + SLACK) + 1e-9, "{credited}");
        // Idle time is carried over only up to the cap.
        let mut b = Budget::default();
        b.credit(&claim(0.0, 0.0, 2.0, 3_600_000));
        assert_eq!(b.credit(&claim(0.0, 240.0, 2.0, 3_600_000)), CARRY_MAX_S);
    }

    #[test]
    fn older_claims_spend_only_the_carry() {
        let mut b = Budget::default();
        assert_eq!(b.credit(&claim(0.0, 5.0, 1.0, 10_000)), 5.0);
        // Carry is min(30, 11 − 5) = 6; a claim older than the last accrues nothing.
        assert!((b.credit(&claim(5.0, 15.0, 1.0, 9_000)) - 6.0).abs() < 1e-9);
        assert_eq!(b.last_ms, Some(10_000));
        assert_eq!(b.credit(&claim(15.0, 16.0, 1.0, 10_000)), 0.0);
    }

    #[test]
    fn credited_intervals_are_exact_when_whole() {
        let c = claim(0.1, 0.3, 1.0, 0);
        assert_eq!(c.credited_interval(1.0), Some([0.1, 0.3]));
        assert_eq!(c.credited_interval(0.0), None);
        assert_eq!(c.credited_interval(0.1), Some([0.1, 0.2]));
    }
}
