//! Who is watching a live lesson now: the playback sessions of the lesson
//! that sent a heartbeat within [`WINDOW`], counted exactly (each session
//! once, however many beats), from the beats the API answers anyway — no
//! query and no write to PostgreSQL.
//!
//! Only beats that name a valid playback session of a lesson whose event
//! is live right now are recorded (the lesson cache says which), so
//! replays and ordinary lessons cost nothing. A player sends a beat every
//! few seconds while it plays (`player-sdk`: 5 s) and none while paused,
//! so a paused or closed player stops counting within the window.
//!
//! Memory mode keeps, per live lesson, each session's last beat; Redis
//! mode keeps a sorted set per lesson (`<prefix>live:<lesson>`, member the
//! session, score its last beat in ms), shared by every node: one
//! pipelined `ZADD`/trim/expire per beat, one `ZCOUNT` per count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use uuid::Uuid;

use crate::absorber::{AbsorbError, Absorber};

/// A session counts while its last beat is at most this old: four beats
/// of a playing player, so one lost beat does not drop it.
pub const WINDOW: Duration = Duration::from_secs(20);

const WINDOW_MS: i64 = WINDOW.as_millis() as i64;

/// Memory mode: per live lesson, each session's last beat (ms).
#[derive(Default)]
pub struct Presence(Mutex<HashMap<Uuid, HashMap<Uuid, i64>>>);

impl Presence {
    fn seen(&self, lesson: Uuid, playback: Uuid, now_ms: i64) {
        let mut lessons = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = lessons.entry(lesson).or_default();
        sessions.insert(playback, now_ms);
        // Sessions that left are dropped as the audience grows (and by
        // every count), so a lesson holds about one window's sessions.
        if sessions.len() >= 64 && sessions.len().is_power_of_two() {
            sessions.retain(|_, at| now_ms - *at <= WINDOW_MS);
        }
    }

    fn count(&self, lesson: Uuid, now_ms: i64) -> u64 {
        let mut lessons = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sessions) = lessons.get_mut(&lesson) else {
            return 0;
        };
        sessions.retain(|_, at| now_ms - *at <= WINDOW_MS);
        let n = sessions.len() as u64;
        if n == 0 {
            lessons.remove(&lesson);
        }
        n
    }
}

fn key(prefix: &str, lesson: Uuid) -> String {
    format!("{prefix}live:{lesson}")
}

impl Absorber {
    /// Playback session `playback` of live lesson `lesson` beat at `now_ms`.
    pub async fn seen_live(
        &self,
        lesson: Uuid,
        playback: Uuid,
        now_ms: i64,
    ) -> Result<(), AbsorbError> {
        match self {
            Absorber::Memory(m) => {
                m.presence.seen(lesson, playback, now_ms);
                Ok(())
            }
            Absorber::Redis(r) => {
                let (mut con, prefix) = r.presence_connection();
                let key = key(prefix, lesson);
                redis::pipe()
                    .cmd("ZADD")
                    .arg(&key)
                    .arg(now_ms)
                    .arg(playback.to_string())
                    .ignore()
                    .cmd("ZREMRANGEBYSCORE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(format!("({}", now_ms - WINDOW_MS))
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(2 * WINDOW_MS)
                    .ignore()
                    .query_async::<()>(&mut con)
                    .await?;
                Ok(())
            }
        }
    }

    /// The playback sessions of `lesson` that beat within [`WINDOW`] of `now_ms`.
    pub async fn viewers(&self, lesson: Uuid, now_ms: i64) -> Result<u64, AbsorbError> {
        match self {
            Absorber::Memory(m) => Ok(m.presence.count(lesson, now_ms)),
            Absorber::Redis(r) => {
                let (mut con, prefix) = r.presence_connection();
                let n: u64 = redis::cmd("ZCOUNT")
                    .arg(key(prefix, lesson))
                    .arg(now_ms - WINDOW_MS)
                    .arg("+inf")
                    .query_async(&mut con)
                    .await?;
                Ok(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_counts_once_and_leaves_after_the_window() {
        let p = Presence::default();
        let (lesson, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        p.seen(lesson, a, 1_000);
        p.seen(lesson, a, 6_000);
        p.seen(lesson, b, 6_000);
        assert_eq!(p.count(lesson, 6_000), 2);
        assert_eq!(p.count(Uuid::new_v4(), 6_000), 0);
        assert_eq!(p.count(lesson, 6_000 + WINDOW_MS), 2);
        p.seen(lesson, b, 10_000);
        assert_eq!(p.count(lesson, 6_001 + WINDOW_MS), 1);
        assert_eq!(p.count(lesson, 10_001 + WINDOW_MS), 0);
    }
}
