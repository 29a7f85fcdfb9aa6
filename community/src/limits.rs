//! Posting limits: each person, and each client address, may post at most
//! a number of times within a sliding window ([`Rate`]); beyond that a post
//! answers 429 `posting_too_fast` with `Retry-After` (the seconds until
//! the oldest post in the window leaves it). The address limit is larger,
//! since a hospital or a school puts many learners behind one address.
//!
//! Time comes from [`Clock`], so tests move a manual clock instead of
//! sleeping. The windows live in this node's memory: with several API
//! nodes behind a balancer, a person spread over them gets up to the limit
//! per node. That bounds abuse, which is the point; an exact global count
//! would cost a database write per post.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lectern_clock::Clock;
use lectern_web::{ApiError, ErrorCode};

/// At most `count` posts within `per`.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// The per-person and per-address windows of one node.
pub struct PostingLimiter {
    clock: Clock,
    user: Rate,
    address: Rate,
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    posts: HashMap<String, VecDeque<Instant>>,
    calls: u64,
}

impl PostingLimiter {
    pub fn new(clock: Clock, user: Rate, address: Rate) -> Self {
        Self {
            clock,
            user,
            address,
            windows: Mutex::default(),
        }
    }

    /// Counts one post by `user` from `address`, or refuses it (counting
    /// nothing) when either window is full.
    pub fn admit(&self, user: uuid::Uuid, address: Option<&str>) -> Result<(), ApiError> {
        let now = self.clock.now();
        let mut w = self.windows.lock().expect("posting limiter lock");
        w.calls += 1;
        if w.calls.is_multiple_of(4096) {
            // Forget windows nobody has posted into for a while, so memory
            // stays proportional to recent posters.
            let longest = self.user.per.max(self.address.per);
            w.posts
                .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < longest));
        }
        let mut keys = vec![(format!("user:{user}"), self.user)];
        if let Some(a) = address {
            keys.push((format!("ip:{a}"), self.address));
        }
        for (key, rate) in &keys {
            let q = w.posts.entry(key.clone()).or_default();
            while q
                .front()
                .is_some_and(|t| now.duration_since(*t) >= rate.per)
            {
                q.pop_front();
            }
            if q.len() >= rate.count as usize {
                let oldest = *q.front().expect("a full window has a first post");
                let wait = rate.per.saturating_sub(now.duration_since(oldest));
                let who = if key.starts_with("user:") {
                    "you have"
                } else {
                    "this address has"
                };
                return Err(ApiError::new(
                    ErrorCode::PostingTooFast,
                    format!(
                        "{who} posted {} times within {} s; wait before posting again",
                        rate.count,
                        rate.per.as_secs()
                    ),
                )
                .with_retry_after(wait.as_secs().max(1)));
            }
        }
        for (key, _) in keys {
            w.posts.entry(key).or_default().push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_refuses_until_time_moves_on() {
        let (clock, hand) = Clock::manual();
        let minute = Duration::from_secs(60);
        let l = PostingLimiter::new(
            clock,
            Rate {
                count: 2,
                per: minute,
            },
            Rate {
                count: 3,
                per: minute,
            },
        );
        let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        l.admit(a, Some("10.0.0.1")).unwrap();
        hand.advance(Duration::from_secs(10));
        l.admit(a, Some("10.0.0.1")).unwrap();
        let e = l.admit(a, Some("10.0.0.1")).unwrap_err();
        assert_eq!(e.code, ErrorCode::PostingTooFast);
        assert_eq!(e.retry_after, Some(50));
        // Another person from the same address: the address window (3) fills.
        l.admit(b, Some("10.0.0.1")).unwrap();
        assert_eq!(
            l.admit(b, Some("10.0.0.1")).unwrap_err().code,
            ErrorCode::PostingTooFast
        );
        // From elsewhere, b is fine; a is still limited by its own window.
        l.admit(b, Some("10.0.0.2")).unwrap();
        hand.advance(Duration::from_secs(49));
        assert!(l.admit(a, Some("10.0.0.3")).is_err());
        hand.advance(Duration::from_secs(1));
        l.admit(a, Some("10.0.0.3")).unwrap();
    }
}
