//! The figures of watching, computed exactly from viewings: what a learner
//! played, viewing by viewing (each viewing a playback on some device, as
//! media intervals at a speed). Seeking is the absence of an interval, so
//! skipping ahead can add neither watch time nor credit.
//!
//! - **views**: viewings that played anything — every viewing counts;
//! - **played** media seconds: every interval counted as often as played;
//! - **watch time**: wall seconds spent playing (media ÷ speed), so 60 s of
//!   media at 2× is 30 s of watch time;
//! - **unique seconds**: the union of everything played, on every device,
//!   clipped to the lesson — the only figure credit is given for;
//! - **completion**: unique seconds ÷ duration; complete at
//!   [`COMPLETE_AT`] (the same threshold `learning` stamps `completed_at` with);
//! - **retention** of a lesson: for each 1 % point of the duration (101
//!   points, 0 % … 100 %), the share of starters whose union covers it;
//! - **re-watched moments**: per 1 % bin, the media seconds played beyond
//!   the first time, summed over learners, as "extra plays" of the bin.
//!
//! The rollups (`rollup`) read what `learning` stores — the merged union
//! and the watch time per learner × lesson — which are these same figures
//! kept incrementally; this module is the definition they are checked
//! against.

/// Share of a lesson watched that counts as complete.
pub const COMPLETE_AT: f64 = 0.9;
/// Points of the retention curve: 0 %, 1 %, …, 100 %.
pub const RETENTION_POINTS: usize = 101;
/// Bins of the re-watch histogram (1 % of the duration each).
pub const BINS: usize = 100;

/// One played stretch of media, in seconds, at a speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    pub from_s: f64,
    pub to_s: f64,
    pub speed: f64,
}

impl Segment {
    pub fn new(from_s: f64, to_s: f64, speed: f64) -> Self {
        Self {
            from_s,
            to_s,
            speed,
        }
    }

    fn media_s(&self) -> f64 {
        (self.to_s - self.from_s).max(0.0)
    }
}

/// One playback (a device, a session): the segments it played.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Viewing {
    pub segments: Vec<Segment>,
}

/// Sorted, disjoint, closed intervals `[from, to]`.
pub type Intervals = Vec<[f64; 2]>;

/// The exact union of intervals (touching ones join; no gap tolerance:
/// `learning` joins beats closer than 0.25 s, which this does not guess).
pub fn union<I: IntoIterator<Item = [f64; 2]>>(items: I) -> Intervals {
    let mut all: Intervals = items
        .into_iter()
        .filter(|[f, t]| f.is_finite() && t.is_finite() && t > f)
        .collect();
    all.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let mut out: Intervals = Vec::with_capacity(all.len());
    for [f, t] in all {
        match out.last_mut() {
            Some(last) if f <= last[1] => last[1] = last[1].max(t),
            _ => out.push([f, t]),
        }
    }
    out
}

/// Seconds covered by `list` inside `[lo, hi]`.
pub fn covered(list: &[[f64; 2]], lo: f64, hi: f64) -> f64 {
    list.iter()
        .map(|[f, t]| (t.min(hi) - f.max(lo)).max(0.0))
        .sum()
}

/// Whether the point `t` is inside one of the (closed) intervals.
pub fn covers(list: &[[f64; 2]], t: f64) -> bool {
    list.iter().any(|[f, to]| *f <= t && t <= *to)
}

/// One learner's figures for one lesson.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnerLesson {
    pub views: u32,
    pub played_s: f64,
    pub watch_time_s: f64,
    pub unique_s: f64,
    pub completion: f64,
    pub completed: bool,
    /// The union of everything played, clipped to the lesson.
    pub watched: Intervals,
}

/// The figures of one learner's viewings of a lesson `duration_s` long.
pub fn learner_lesson(viewings: &[Viewing], duration_s: f64) -> LearnerLesson {
    let segments = || viewings.iter().flat_map(|v| v.segments.iter());
    let views = viewings
        .iter()
        .filter(|v| v.segments.iter().any(|s| s.media_s() > 0.0))
        .count() as u32;
    let played_s = segments().map(Segment::media_s).sum();
    let watch_time_s = segments()
        .filter(|s| s.speed > 0.0)
        .map(|s| s.media_s() / s.speed)
        .sum();
    let watched = union(segments().map(|s| [s.from_s.max(0.0), s.to_s.min(duration_s)]));
    let unique_s = covered(&watched, 0.0, duration_s);
    let completion = if duration_s > 0.0 {
        (unique_s / duration_s).min(1.0)
    } else {
        0.0
    };
    LearnerLesson {
        views,
        played_s,
        watch_time_s,
        unique_s,
        completion,
        completed: completion >= COMPLETE_AT,
        watched,
    }
}

/// The retention curve of a lesson from its learners' unions: point `k`
/// is the share of starters (learners who watched anything) whose union
/// covers `k` % of the duration. Empty when nobody started.
pub fn retention(unions: &[Intervals], duration_s: f64) -> Vec<f64> {
    let starters: Vec<&Intervals> = unions.iter().filter(|u| !u.is_empty()).collect();
    if starters.is_empty() || duration_s <= 0.0 {
        return Vec::new();
    }
    (0..RETENTION_POINTS)
        .map(|k| {
            let t = duration_s * k as f64 / 100.0;
            let n = starters.iter().filter(|u| covers(u, t)).count();
            n as f64 / starters.len() as f64
        })
        .collect()
}

/// A stretch of a lesson played again.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewatched {
    /// The bin (0–99): `[bin %, bin+1 %)` of the duration.
    pub bin: usize,
    pub from_s: f64,
    pub to_s: f64,
    /// Media seconds played in the bin beyond each learner's first time.
    pub extra_s: f64,
    /// `extra_s` over the bin's length: how many extra plays of the bin.
    pub extra_plays: f64,
}

/// The most re-watched bins (at most `top`, most first; ties by position),
/// from each learner's viewings. A bin played once by everyone is absent.
pub fn rewatched(learners: &[Vec<Viewing>], duration_s: f64, top: usize) -> Vec<Rewatched> {
    if duration_s <= 0.0 {
        return Vec::new();
    }
    let width = duration_s / BINS as f64;
    let mut extra = [0.0f64; BINS];
    for viewings in learners {
        let segs: Vec<[f64; 2]> = viewings
            .iter()
            .flat_map(|v| v.segments.iter())
            .map(|s| [s.from_s.max(0.0), s.to_s.min(duration_s)])
            .filter(|[f, t]| t > f)
            .collect();
        let once = union(segs.iter().copied());
        for (bin, e) in extra.iter_mut().enumerate() {
            let (lo, hi) = (bin as f64 * width, (bin + 1) as f64 * width);
            *e += covered(&segs, lo, hi) - covered(&once, lo, hi);
        }
    }
    let mut bins: Vec<Rewatched> = extra
        .iter()
        .enumerate()
        .filter(|(_, e)| **e > 1e-9)
        .map(|(bin, e)| Rewatched {
            bin,
            from_s: bin as f64 * width,
            to_s: (bin + 1) as f64 * width,
            extra_s: *e,
            extra_plays: e / width,
        })
        .collect();
    bins.sort_by(|a, b| b.extra_s.total_cmp(&a.extra_s).then(a.bin.cmp(&b.bin)));
    bins.truncate(top);
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 100 s lesson, one learner on two devices:
    /// - phone, 1×: 0–40, then skips ahead to 70 and plays 70–80;
    /// - laptop, 2×: 30–60 (overlaps the phone's 30–40), rewinds, 50–60
    ///   again, then plays 60–95.
    fn two_devices() -> Vec<Viewing> {
        vec![
            Viewing {
                segments: vec![Segment::new(0.0, 40.0, 1.0), Segment::new(70.0, 80.0, 1.0)],
            },
            Viewing {
                segments: vec![
                    Segment::new(30.0, 60.0, 2.0),
                    Segment::new(50.0, 60.0, 2.0),
                    Segment::new(60.0, 95.0, 2.0),
                ],
            },
        ]
    }

    #[test]
    fn every_figure_of_two_devices_overlaps_rewinds_and_double_speed() {
        let f = learner_lesson(&two_devices(), 100.0);
        assert_eq!(f.views, 2);
        // 40 + 10 + 30 + 10 + 35 media seconds, repeats included.
        assert_eq!(f.played_s, 125.0);
        // Phone 50 s at 1×; laptop 75 media seconds at 2× = 37.5 s.
        assert_eq!(f.watch_time_s, 87.5);
        // Union [0, 95]: 95 unique seconds, though 125 were played.
        assert_eq!(f.watched, vec![[0.0, 95.0]]);
        assert_eq!(f.unique_s, 95.0);
        assert_eq!(f.completion, 0.95);
        assert!(f.completed);
    }

    #[test]
    fn skipping_ahead_adds_neither_watch_time_nor_unique_seconds() {
        let watched = vec![Viewing {
            segments: vec![Segment::new(0.0, 10.0, 1.0)],
        }];
        let skipped = vec![Viewing {
            // Played 0–10, then sought to 90 and played nothing more.
            segments: vec![Segment::new(0.0, 10.0, 1.0), Segment::new(90.0, 90.0, 1.0)],
        }];
        let a = learner_lesson(&watched, 100.0);
        let b = learner_lesson(&skipped, 100.0);
        assert_eq!(a, b);
        assert_eq!(b.unique_s, 10.0);
        assert_eq!(b.watch_time_s, 10.0);
        assert!(!b.completed);
    }

    #[test]
    fn watched_twice_counts_twice_for_views_once_for_unique_seconds() {
        let whole = Viewing {
            segments: vec![Segment::new(0.0, 100.0, 1.0)],
        };
        let f = learner_lesson(&[whole.clone(), whole], 100.0);
        assert_eq!(f.views, 2);
        assert_eq!(f.played_s, 200.0);
        assert_eq!(f.watch_time_s, 200.0);
        assert_eq!(f.unique_s, 100.0);
        assert_eq!(f.completion, 1.0);
    }

    #[test]
    fn retention_is_the_share_of_starters_covering_each_percent() {
        let a = learner_lesson(&two_devices(), 100.0).watched; // [0, 95]
        let b = union([[0.0, 50.0]]);
        let c = union([[20.0, 30.0], [60.0, 100.0]]);
        let nobody = Intervals::new(); // opened, played nothing: not a starter
        let curve = retention(&[a, b, c, nobody], 100.0);
        assert_eq!(curve.len(), 101);
        let third = 1.0 / 3.0;
        let two_thirds = 2.0 / 3.0;
        for (k, share) in curve.iter().enumerate() {
            let expected = match k {
                0..=19 => two_thirds,  // a, b
                20..=30 => 1.0,        // a, b, c
                31..=50 => two_thirds, // a, b
                51..=59 => third,      // a
                60..=95 => two_thirds, // a, c
                _ => third,            // c alone to the end
            };
            assert_eq!(*share, expected, "point {k} %");
        }
    }

    #[test]
    fn most_rewatched_bins_count_plays_beyond_the_first() {
        // 200 s lesson: bins are 2 s wide.
        let one = vec![two_devices()[1].clone()]; // 50–60 twice
        let two = vec![Viewing {
            segments: vec![
                Segment::new(0.0, 20.0, 1.0),
                Segment::new(10.0, 14.0, 1.0), // bins 5, 6 again
                Segment::new(10.0, 12.0, 1.0), // bin 5 a third time
            ],
        }];
        let top = rewatched(&[one, two], 200.0, 3);
        assert_eq!(top.len(), 3);
        assert_eq!(
            (top[0].bin, top[0].extra_s, top[0].extra_plays),
            (5, 4.0, 2.0)
        );
        // 25–29 (50–60 s) tie at 2 extra seconds (one extra play); first by position.
        assert_eq!(
            (top[1].bin, top[1].extra_s, top[1].extra_plays),
            (6, 2.0, 1.0)
        );
        assert_eq!((top[2].bin, top[2].extra_s), (25, 2.0));
        let all = rewatched(&[two_devices()], 100.0, 100);
        // Two devices: 30–40 and 70–80 on both, 50–60 twice on the laptop.
        let bins: Vec<usize> = all.iter().map(|r| r.bin).collect();
        let mut sorted = bins.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            (30..40).chain(50..60).chain(70..80).collect::<Vec<_>>()
        );
        assert!(all.iter().all(|r| r.extra_s == 1.0));
    }
}
