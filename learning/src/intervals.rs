//! Watched intervals: a sorted list of disjoint `[from, to]` pairs in media
//! seconds. Union is idempotent and order-free, which is what makes
//! duplicated and out-of-order heartbeats harmless. The same rule lives in
//! SQL (`lectern_merge_intervals`, used by the flusher) and in the Redis
//! absorber's Lua script; the gap must stay the same in all three.

/// Intervals closer than this are joined: consecutive heartbeats report
/// `played_to` and the next `played_from` from two clock reads.
pub const GAP_S: f64 = 0.25;

pub type Intervals = Vec<[f64; 2]>;

/// Adds `[from, to]` to a merged list, keeping it merged. Called for every
/// credited beat, so it finds its place by binary search instead of
/// re-sorting: a client whose claims the credit bound cuts leaves many
/// fragments behind, and each beat would otherwise cost O(n log n) in them.
///
/// Exactly [`normalise`] of the list with the interval pushed: in a merged
/// list starts and ends both increase and neighbours are more than
/// [`GAP_S`] apart, so the new interval joins precisely the run of
/// intervals that end no earlier than `from − GAP_S` and start no later
/// than `to + GAP_S`, and no other.
pub fn insert(list: &mut Intervals, from: f64, to: f64) {
    if !(to > from && from.is_finite() && to.is_finite()) {
        return;
    }
    let first = list.partition_point(|x| x[1] + GAP_S < from);
    let past = list.partition_point(|x| x[0] <= to + GAP_S);
    if first >= past {
        list.insert(first, [from, to]);
    } else {
        let joined = [from.min(list[first][0]), to.max(list[past - 1][1])];
        list.splice(first..past, [joined]);
    }
}

/// Most disjoint intervals a credited beat may leave in one learner ×
/// lesson row. A player leaves a few (one per stretch between seeks); only
/// a client claiming more than it plays — each claim cut by the credit
/// bound to a fragment of its own — gets near it. Past it, a credited
/// interval that would start a new fragment is not added (one that
/// extends or joins existing ones still is), so such a client can no
/// longer grow the row, the flush and the Redis push without bound, and
/// nothing unplayed is ever credited. The Redis absorber's script applies
/// the same rule.
pub const MAX_FRAGMENTS: usize = 256;

/// [`insert`], unless the list holds [`MAX_FRAGMENTS`] and the interval
/// would be a new fragment; returns whether it was added.
pub fn insert_capped(list: &mut Intervals, from: f64, to: f64) -> bool {
    if list.len() >= MAX_FRAGMENTS {
        let first = list.partition_point(|x| x[1] + GAP_S < from);
        let past = list.partition_point(|x| x[0] <= to + GAP_S);
        if first >= past {
            return false;
        }
    }
    insert(list, from, to);
    true
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
    fn past_the_cap_only_existing_fragments_grow() {
        let mut l: Intervals = (0..MAX_FRAGMENTS)
            .map(|i| [i as f64 * 10.0, i as f64 * 10.0 + 1.0])
            .collect();
        let total_before = total(&l);
        assert!(
            !insert_capped(&mut l, 1e6, 1e6 + 5.0),
            "a new fragment past the cap"
        );
        assert_eq!(l.len(), MAX_FRAGMENTS);
        assert!(insert_capped(&mut l, 1.0, 3.0), "extending the first one");
        assert!(insert_capped(&mut l, 3.0, 10.0), "joining the first two");
        assert_eq!(l.len(), MAX_FRAGMENTS - 1);
        assert!(total(&l) > total_before);
        assert!(insert_capped(&mut l, 1e6, 1e6 + 5.0), "room again for one");
        assert_eq!(l.len(), MAX_FRAGMENTS);
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
    fn insert_is_normalise_of_the_pushed_list() {
        // A small deterministic generator: no dependency for one test.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let mut fast = Intervals::new();
            let mut slow = Intervals::new();
            for _ in 0..(next() % 40) {
                // Quarter-second grid around the gap, so touching, nearby
                // and overlapping intervals all occur.
                let from = (next() % 400) as f64 * 0.125;
                let to = from + (next() % 24) as f64 * 0.125;
                insert(&mut fast, from, to);
                if to > from {
                    slow.push([from, to]);
                    normalise(&mut slow);
                }
                assert_eq!(fast, slow, "after inserting [{from}, {to}]");
            }
        }
    }

    #[test]
    fn ignores_empty_and_reversed() {
        let mut l = Intervals::new();
        insert(&mut l, 5.0, 5.0);
        insert(&mut l, 6.0, 4.0);
        insert(&mut l, f64::NAN, 4.0);
        insert(&mut l, 0.0, f64::INFINITY);
        assert!(l.is_empty());
    }
}
