//! Watched intervals: a sorted list of disjoint `[from, to]` pairs in media
//! seconds. Union is idempotent and order-free, which is what makes
//! duplicated and out-of-order heartbeats harmless. The same rule lives in
//! SQL (`lectern_merge_intervals`, used by the flusher) and in the Redis
//! absorber's Lua script; the gap must stay the same in all three.

/// Intervals closer than this are joined: consecutive heartbeats report
/// `played_to` and the next `played_from` from two clock reads.
pub const GAP_S: f64 = 0.25;

pub type Intervals = Vec<[f64; 2]>;

/// Adds `[from, to]` to a merged list, keeping it merged.
pub fn insert(list: &mut Intervals, from: f64, to: f64) {
    if to <= from {
        return;
    }
    list.push([from, to]);
    normalise(list);
}

/// The union of two merged lists.
pub fn union(a: &[[f64; 2]], b: &[[f64; 2]]) -> Intervals {
    let mut all: Intervals = a.iter().chain(b).copied().collect();
    normalise(&mut all);
    all
}

fn normalise(list: &mut Intervals) {
    list.retain(|[f, t]| t > f && f.is_finite() && t.is_finite());
    list.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    let mut merged: Intervals = Vec::with_capacity(list.len());
    for &[f, t] in list.iter() {
        match merged.last_mut() {
            Some(last) if f <= last[1] + GAP_S => last[1] = last[1].max(t),
            _ => merged.push([f, t]),
        }
    }
    *list = merged;
}

/// Seconds covered.
pub fn total(list: &[[f64; 2]]) -> f64 {
    list.iter().map(|[f, t]| t - f).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_overlapping_touching_and_nearby_intervals() {
        let mut l = Intervals::new();
        insert(&mut l, 10.0, 20.0);
        insert(&mut l, 0.0, 5.0);
        insert(&mut l, 5.1, 8.0);
        insert(&mut l, 15.0, 30.0);
        assert_eq!(l, vec![[0.0, 8.0], [10.0, 30.0]]);
        assert_eq!(total(&l), 28.0);
    }

    #[test]
    fn union_is_idempotent_and_order_free() {
        let a = vec![[0.0, 10.0], [20.0, 30.0]];
        let b = vec![[5.0, 22.0]];
        assert_eq!(union(&a, &b), vec![[0.0, 30.0]]);
        assert_eq!(union(&b, &a), union(&a, &b));
        assert_eq!(union(&a, &a), a);
    }

    #[test]
    fn ignores_empty_and_reversed() {
        let mut l = Intervals::new();
        insert(&mut l, 5.0, 5.0);
        insert(&mut l, 6.0, 4.0);
        assert!(l.is_empty());
    }
}
