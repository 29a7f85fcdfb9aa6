//! The monotonic time source of time-based policies (a drop settling, a
//! cache entry ageing): [`Clock::system`] in production, [`Clock::manual`]
//! in tests, which move it with [`ManualClock::advance`] instead of
//! sleeping. A test can then prove that something did *not* happen before
//! a bound exactly, at the bound's last instant, rather than by sleeping
//! "long enough" and hoping the machine was not loaded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cheap-to-clone time source.
#[derive(Clone, Debug)]
pub struct Clock(Source);

#[derive(Clone, Debug)]
enum Source {
    System,
    Manual(Arc<ManualInner>),
}

#[derive(Debug)]
struct ManualInner {
    base: Instant,
    offset_nanos: AtomicU64,
}

impl Clock {
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// A clock that stands still until the returned handle advances it.
    pub fn manual() -> (Self, ManualClock) {
        let inner = Arc::new(ManualInner {
            base: Instant::now(),
            offset_nanos: AtomicU64::new(0),
        });
        (Clock(Source::Manual(inner.clone())), ManualClock(inner))
    }

    pub fn now(&self) -> Instant {
        match &self.0 {
            Source::System => Instant::now(),
            Source::Manual(m) => {
                m.base + Duration::from_nanos(m.offset_nanos.load(Ordering::Acquire))
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

/// Moves a [`Clock::manual`] clock.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<ManualInner>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).expect("a test advances less than 584 years");
        self.0.offset_nanos.fetch_add(nanos, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let (clock, hand) = Clock::manual();
        let t0 = clock.now();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(clock.now(), t0);
        hand.advance(Duration::from_secs(60));
        assert_eq!(clock.now() - t0, Duration::from_secs(60));
        assert!(Clock::system().now() >= t0);
    }
}
