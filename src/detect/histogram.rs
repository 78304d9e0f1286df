//! `SparseHistogram`: the latency histogram every series keeps, sized by
//! the latencies it saw rather than by the range it could see.
//!
//! Its buckets are exactly those of an HdrHistogram covering 1 µs to 1 hour
//! with 2 significant figures (values within 1% share a bucket: 128 linear
//! sub-buckets per power of two), so quantiles, Mann-Whitney ties and the
//! stored snapshots (recorded `(value, count)` pairs) are unchanged. Only
//! the storage differs: a dense HdrHistogram of that range holds 3,328
//! counters (13 KiB) whatever was recorded, while this holds one
//! `(bucket, count)` pair (8 bytes) per bucket in use, sorted by bucket. A
//! window of a few dozen spans costs a few hundred bytes instead of 13 KiB,
//! and even a sum of 100,000 log-normal latencies fills under 1,000 buckets;
//! an analysis holds about ten histograms per (operation, revision).
//!
//! Recording is a binary search over the buckets in use; merging is a
//! linear merge of two sorted lists.

/// 2 significant figures: 2^8 = 256 ≥ 2 × 10² sub-buckets per bucket, of
/// which the upper half (128) is used past the first bucket.
const SUB_BUCKET_HALF_COUNT_MAGNITUDE: u32 = 7;
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
    // At most (25 + 1) × 128 for MAX_VALUE, well within u16.
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

    fn reference() -> hdrhistogram::Histogram<u32> {
        hdrhistogram::Histogram::new_with_bounds(1, MAX_VALUE, 2).expect("bounds")
    }

    fn same(sparse: &SparseHistogram, dense: &hdrhistogram::Histogram<u32>) {
        assert_eq!(sparse.len(), dense.len());
        let a: Vec<(u64, u32)> = sparse.iter_recorded().map(|r| (r.value_iterated_to(), r.count_at_value())).collect();
        let b: Vec<(u64, u32)> = dense.iter_recorded().map(|r| (r.value_iterated_to(), r.count_at_value())).collect();
        assert_eq!(a, b);
        for q in [0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(sparse.value_at_quantile(q), dense.value_at_quantile(q), "quantile {q}");
        }
        assert_eq!(sparse.max(), dense.max());
        assert_eq!(sparse.count_between(900, 20_000), dense.count_between(900, 20_000));
        assert!((sparse.mean() - dense.mean()).abs() <= 1e-9 * dense.mean().max(1.0));
    }

    #[test]
    fn buckets_quantiles_and_means_are_those_of_the_equivalent_hdr_histogram() {
        let mut rng = Rng::new(11);
        for case in 0..50 {
            let (mut sparse, mut dense) = (SparseHistogram::new(), reference());
            let (mut other_sparse, mut other_dense) = (SparseHistogram::new(), reference());
            let median = [50.0, 900.0, 20_000.0, 3_000_000.0][case % 4];
            for i in 0..(200 + case * 37) {
                let value = (rng.log_normal(median, 1.2) as u64).clamp(1, MAX_VALUE);
                let n = 1 + (i % 3) as u32;
                sparse.record_n(value, n);
                dense.record_n(value, n).expect("in range");
                let other = (rng.log_normal(median * 2.0, 0.3) as u64).clamp(1, MAX_VALUE);
                other_sparse.record(other);
                other_dense.record(other).expect("in range");
            }
            same(&sparse, &dense);
            sparse.add(&other_sparse);
            dense.add(&other_dense).expect("add");
            same(&sparse, &dense);
            sparse.subtract(&other_sparse);
            dense.subtract(&other_dense).expect("subtract");
            same(&sparse, &dense);
        }
        // The edges of the range.
        let (mut sparse, mut dense) = (SparseHistogram::new(), reference());
        for value in [1, 2, 127, 128, 255, 256, 257, 1000, 65_535, MAX_VALUE] {
            sparse.record(value);
            dense.record(value).expect("in range");
        }
        same(&sparse, &dense);
    }

    #[test]
    fn memory_follows_the_buckets_in_use_not_the_range() {
        let mut h = SparseHistogram::new();
        let mut rng = Rng::new(3);
        for _ in 0..100_000 {
            h.record((rng.log_normal(20_000.0, 0.5) as u64).max(1));
        }
        // 128 buckets per doubling over the span of 100,000 log-normal
        // samples (about 6 doublings): under half the dense layout's 3,328.
        assert!(h.buckets() < 1000, "{} buckets", h.buckets());
        assert!(h.heap_bytes() <= 8192, "{} bytes", h.heap_bytes());
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
