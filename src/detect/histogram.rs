//! `SparseHistogram`: the latency histogram every series keeps, sized by
//! the latencies it saw rather than by the range it could see.
//!
//! Its buckets follow HdrHistogram's layout over 1 µs to 1 hour, with 32
//! linear sub-buckets per power of two: a bucket is at most 1/32 of its
//! lowest value wide, so a reported quantile is at most 3.2% above the
//! sample it stands for (never below it). The detectors' margins are ten
//! times that (a 20% rise fires, back within 10% resolves), and the
//! Mann-Whitney test counts values within a bucket as ties, which its
//! tie-corrected variance accounts for. Finer buckets would cost memory
//! in proportion: a series keeps about ten histograms, and a wide latency
//! distribution fills a bucket layout this fine end to end.
//!
//! The storage holds one `(bucket, count)` pair (8 bytes) per bucket in
//! use, sorted by bucket, where a dense layout of the range would hold 896
//! counters whatever was recorded: a window of a few dozen spans costs a
//! few hundred bytes, and a sum of 100,000 log-normal latencies (σ 0.5)
//! fills under 250 buckets.
//!
//! Stored snapshots and the fleet's merged baselines carry `(value,
//! count)` pairs, each value its bucket's highest, and are read back by
//! recording those values. A bucket of a finer layout of the same kind
//! (such as the 128 sub-buckets per power of two of earlier versions) lies
//! within one bucket of this one, so older snapshots load exactly into it.
//!
//! Recording is a binary search over the buckets in use; merging is a
//! linear merge of two sorted lists.

/// 64 sub-buckets per bucket, of which the upper half (32) is used past
/// the first bucket: 32 per power of two.
const SUB_BUCKET_HALF_COUNT_MAGNITUDE: u32 = 5;
const SUB_BUCKET_HALF_COUNT: u32 = 1 << SUB_BUCKET_HALF_COUNT_MAGNITUDE;
const SUB_BUCKET_MASK: u64 = (1 << (SUB_BUCKET_HALF_COUNT_MAGNITUDE + 1)) - 1;
const LEADING_ZERO_COUNT_BASE: u32 = 64 - SUB_BUCKET_HALF_COUNT_MAGNITUDE - 1;

/// Largest value recorded as itself (1 hour in microseconds); larger
/// values are recorded as this.
pub(crate) const MAX_VALUE: u64 = 3_600_000_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseHistogram {
    /// `(bucket index, count)`, sorted by index, counts above zero.
    buckets: Vec<(u16, u32)>,
    total: u64,
}

/// One bucket in use, as iteration yields it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    index: u16,
    count: u32,
}

impl Recorded {
    /// The highest value of the bucket.
    pub(crate) fn value_iterated_to(&self) -> u64 {
        highest_equivalent(value_for(self.index))
    }

    pub(crate) fn count_at_value(&self) -> u32 {
        self.count
    }
}

fn bucket_for(value: u64) -> u32 {
    LEADING_ZERO_COUNT_BASE - (value | SUB_BUCKET_MASK).leading_zeros()
}

fn index_for(value: u64) -> u16 {
    let value = value.min(MAX_VALUE);
    let bucket = bucket_for(value);
    let sub_bucket = (value >> bucket) as u32;
    // At most (27 + 1) × 32 for MAX_VALUE, well within u16.
    (((bucket + 1) << SUB_BUCKET_HALF_COUNT_MAGNITUDE) + sub_bucket - SUB_BUCKET_HALF_COUNT) as u16
}

/// The lowest value of bucket `index`.
fn value_for(index: u16) -> u64 {
    let index = u32::from(index);
    let mut bucket = (index >> SUB_BUCKET_HALF_COUNT_MAGNITUDE) as i32 - 1;
    let mut sub_bucket = (index & (SUB_BUCKET_HALF_COUNT - 1)) + SUB_BUCKET_HALF_COUNT;
    if bucket < 0 {
        sub_bucket -= SUB_BUCKET_HALF_COUNT;
        bucket = 0;
    }
    u64::from(sub_bucket) << bucket
}

fn equivalent_range(value: u64) -> u64 {
    1 << bucket_for(value)
}

fn lowest_equivalent(value: u64) -> u64 {
    let bucket = bucket_for(value);
    (value >> bucket) << bucket
}

/// The highest value sharing `value`'s bucket.
pub(crate) fn highest_equivalent(value: u64) -> u64 {
    lowest_equivalent(value) + equivalent_range(value) - 1
}

/// The middle of `value`'s bucket (rounded up).
#[cfg(test)]
fn median_equivalent(value: u64) -> u64 {
    lowest_equivalent(value) + (equivalent_range(value) >> 1)
}

impl SparseHistogram {
    pub(crate) fn new() -> SparseHistogram {
        SparseHistogram::default()
    }

    /// Values recorded.
    pub(crate) fn len(&self) -> u64 {
        self.total
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Buckets in use.
    #[cfg(test)]
    pub(crate) fn buckets(&self) -> usize {
        self.buckets.len()
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<(u16, u32)>()
    }

    pub(crate) fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    pub(crate) fn record_n(&mut self, value: u64, count: u32) {
        if count == 0 {
            return;
        }
        let index = index_for(value);
        match self.buckets.binary_search_by_key(&index, |b| b.0) {
            Ok(at) => self.buckets[at].1 = self.buckets[at].1.saturating_add(count),
            Err(at) => self.buckets.insert(at, (index, count)),
        }
        self.total += u64::from(count);
    }

    /// Adds every count of `other`.
    pub(crate) fn add(&mut self, other: &SparseHistogram) {
        if other.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets.extend_from_slice(&other.buckets);
            self.total = other.total;
            return;
        }
        let mut merged = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (self.buckets.iter().peekable(), other.buckets.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(i, x)), Some(&&(j, y))) => {
                    if i == j {
                        merged.push((i, x.saturating_add(y)));
                        a.next();
                        b.next();
                    } else if i < j {
                        merged.push((i, x));
                        a.next();
                    } else {
                        merged.push((j, y));
                        b.next();
                    }
                }
                (Some(&&entry), None) => {
                    merged.push(entry);
                    a.next();
                }
                (None, Some(&&entry)) => {
                    merged.push(entry);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = merged;
        self.total += other.total;
    }

    /// Removes every count of `other`, which must have been added before
    /// (a count never goes below zero).
    pub(crate) fn subtract(&mut self, other: &SparseHistogram) {
        let mut from = 0;
        for &(index, count) in &other.buckets {
            if let Ok(at) = self.buckets[from..].binary_search_by_key(&index, |b| b.0) {
                let at = from + at;
                let taken = self.buckets[at].1.min(count);
                self.buckets[at].1 -= taken;
                self.total -= u64::from(taken);
                from = at;
            }
        }
        self.buckets.retain(|b| b.1 > 0);
    }

    /// Empties it, keeping its allocation.
    pub(crate) fn reset(&mut self) {
        self.buckets.clear();
        self.total = 0;
    }

    /// The buckets in use, lowest first.
    pub(crate) fn iter_recorded(&self) -> impl Iterator<Item = Recorded> + '_ {
        self.buckets.iter().map(|&(index, count)| Recorded { index, count })
    }

    /// The highest value of the bucket holding the `quantile`'s sample
    /// (the lowest value at quantile 0), or 0 when empty.
    pub(crate) fn value_at_quantile(&self, quantile: f64) -> u64 {
        let quantile = quantile.min(1.0);
        let wanted = ((quantile * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for &(index, count) in &self.buckets {
            seen += u64::from(count);
            if seen >= wanted {
                let value = value_for(index);
                return if quantile == 0.0 { lowest_equivalent(value) } else { highest_equivalent(value) };
            }
        }
        0
    }

    /// Values recorded in the buckets from `low`'s to `high`'s, inclusive.
    #[cfg(test)]
    pub(crate) fn count_between(&self, low: u64, high: u64) -> u64 {
        let (low, high) = (index_for(low), index_for(high));
        self.buckets
            .iter()
            .filter(|b| (low..=high).contains(&b.0))
            .map(|b| u64::from(b.1))
            .sum()
    }

    /// The lowest value of the lowest bucket in use, or 0 when empty.
    #[cfg(test)]
    pub(crate) fn min(&self) -> u64 {
        self.buckets.first().map_or(0, |b| lowest_equivalent(value_for(b.0)))
    }

    /// The highest value of the highest bucket in use, or 0 when empty.
    #[cfg(test)]
    pub(crate) fn max(&self) -> u64 {
        self.buckets.last().map_or(0, |b| highest_equivalent(value_for(b.0)))
    }

    /// The mean, each value taken at its bucket's middle.
    #[cfg(test)]
    pub(crate) fn mean(&self) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let total = self.total as f64;
        self.iter_recorded().fold(0.0, |sum, r| {
            sum + median_equivalent(r.value_iterated_to()) as f64 * f64::from(r.count) / total
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The exact `quantile` of sorted `values`, as `value_at_quantile`
    /// ranks it.
    fn exact_quantile(values: &[u64], quantile: f64) -> u64 {
        let wanted = ((quantile * values.len() as f64).ceil() as usize).max(1);
        values[wanted - 1]
    }

    fn histogram_of(values: &[u64]) -> SparseHistogram {
        let mut h = SparseHistogram::new();
        for &v in values {
            h.record(v);
        }
        h
    }

    #[test]
    fn buckets_are_at_most_a_32nd_of_their_values_wide_and_tile_the_range() {
        for value in (1..5_000).chain((0..2_000).map(|i| 1 + i * 1_800_017)).chain([MAX_VALUE]) {
            let (low, high) = (lowest_equivalent(value), highest_equivalent(value));
            assert!(low <= value && value <= high, "{value}: [{low}, {high}]");
            let width = high - low + 1;
            assert!(width == 1 || width <= low / 32, "{value}: [{low}, {high}] is too wide");
            if value < 64 {
                assert_eq!(width, 1, "values under 64 µs are exact");
            }
            assert_eq!(lowest_equivalent(high + 1), high + 1, "the next bucket starts where this one ends");
            assert_eq!(value_for(index_for(value)), low);
        }
    }

    /// Snapshots and fleet baselines written with 2 significant figures
    /// (128 sub-buckets per power of two) load exactly: each of those
    /// buckets lies within one of these.
    #[test]
    fn every_bucket_of_the_finer_layout_lies_within_one_of_these() {
        let finer = hdrhistogram::Histogram::<u32>::new_with_bounds(1, MAX_VALUE, 2).expect("bounds");
        let mut value = 1;
        while value <= MAX_VALUE {
            let (low, high) = (finer.lowest_equivalent(value), finer.highest_equivalent(value));
            assert_eq!(index_for(low), index_for(high.min(MAX_VALUE)), "[{low}, {high}]");
            value = high + 1;
        }
    }

    #[test]
    fn quantiles_are_at_most_a_32nd_above_the_exact_ones_and_merges_are_exact() {
        let mut rng = Rng::new(11);
        for case in 0..50 {
            let median = [50.0, 900.0, 20_000.0, 3_000_000.0][case % 4];
            let n = 200 + case * 37;
            let values: Vec<u64> = (0..n).map(|_| (rng.log_normal(median, 1.2) as u64).clamp(1, MAX_VALUE)).collect();
            let others: Vec<u64> = (0..n).map(|_| (rng.log_normal(median * 2.0, 0.3) as u64).clamp(1, MAX_VALUE)).collect();
            let mut h = histogram_of(&values);
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for q in [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
                let (exact, reported) = (exact_quantile(&sorted, q), h.value_at_quantile(q));
                assert!(exact <= reported && reported <= exact + exact / 32, "quantile {q}: {reported} for {exact}");
            }
            assert_eq!(h.value_at_quantile(0.0), lowest_equivalent(sorted[0]));
            assert_eq!(h.max(), highest_equivalent(sorted[n - 1]));
            let exact_mean = sorted.iter().sum::<u64>() as f64 / n as f64;
            assert!((h.mean() - exact_mean).abs() <= exact_mean / 32.0, "{} for {exact_mean}", h.mean());
            let between = sorted.iter().filter(|v| (900..=20_000).contains(*v)).count() as u64;
            let edges = sorted.iter().filter(|v| index_for(**v) == index_for(900) || index_for(**v) == index_for(20_000)).count();
            assert!(h.count_between(900, 20_000).abs_diff(between) <= edges as u64);

            let before = h.clone();
            let other = histogram_of(&others);
            h.add(&other);
            let both: Vec<u64> = values.iter().chain(&others).copied().collect();
            assert_eq!(h, histogram_of(&both), "a merge equals recording both");
            h.subtract(&other);
            assert_eq!(h, before, "subtracting what was added restores it");
        }
    }

    #[test]
    fn memory_follows_the_buckets_in_use_not_the_range() {
        let mut h = SparseHistogram::new();
        let mut rng = Rng::new(3);
        for _ in 0..100_000 {
            h.record((rng.log_normal(20_000.0, 0.5) as u64).max(1));
        }
        // 32 buckets per doubling over the span of 100,000 log-normal
        // samples (about 6 doublings).
        assert!(h.buckets() < 250, "{} buckets", h.buckets());
        assert!(h.heap_bytes() <= 2048, "{} bytes", h.heap_bytes());
        // A window of a quiet operation: a few dozen bytes, not 13 KiB.
        let mut quiet = SparseHistogram::new();
        for _ in 0..20 {
            quiet.record((rng.log_normal(20_000.0, 0.5) as u64).max(1));
        }
        assert!(quiet.heap_bytes() <= 20 * 8 * 2, "{} bytes", quiet.heap_bytes());
        h.reset();
        assert!(h.is_empty() && h.value_at_quantile(0.5) == 0 && h.max() == 0);
    }

    #[test]
    fn values_past_an_hour_count_as_an_hour() {
        let mut h = SparseHistogram::new();
        h.record(u64::MAX);
        h.record(0);
        assert_eq!(h.len(), 2);
        assert_eq!(h.max(), highest_equivalent(MAX_VALUE));
        assert_eq!(h.min(), 0);
    }
}
