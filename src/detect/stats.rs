//! Statistics on latency histograms: quantiles, the one-sided Mann-Whitney U
//! test computed from histogram buckets, and change-point estimation; and
//! Fisher's exact test for error proportions.
//!
//! Mann-Whitney U is rank-based, so it is robust to the heavy tails of
//! latency distributions, and it can be computed exactly from two histograms
//! that share bucket boundaries: values within one bucket are ties, which the
//! tie-corrected variance accounts for.

use crate::detect::histogram::SparseHistogram;

/// Latency histograms: microseconds, buckets at most 1/32 of their values wide.
pub(crate) type LatencyHistogram = SparseHistogram;

/// Largest latency recorded exactly, in microseconds (1 hour); longer spans
/// are clamped to it.
pub(crate) const MAX_TRACKABLE_MICROS: u64 = crate::detect::histogram::MAX_VALUE;

/// A new, empty latency histogram with the shared bucket layout.
pub(crate) fn new_histogram() -> LatencyHistogram {
    SparseHistogram::new()
}

/// Records a duration, clamped into the trackable range.
pub(crate) fn record(histogram: &mut LatencyHistogram, micros: u64) {
    histogram.record(micros.clamp(1, MAX_TRACKABLE_MICROS));
}

/// `histogram` with every value multiplied by `factor`: the baseline
/// shifted by a margin, for tests of "slower by at least the margin".
pub(crate) fn scaled(histogram: &LatencyHistogram, factor: f64) -> LatencyHistogram {
    let mut out = new_histogram();
    for v in histogram.iter_recorded() {
        let value = (v.value_iterated_to() as f64 * factor).round() as u64;
        out.record_n(value.clamp(1, MAX_TRACKABLE_MICROS), v.count_at_value());
    }
    out
}

/// Count and the three reported quantiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl Summary {
    pub(crate) fn of(histogram: &LatencyHistogram) -> Summary {
        if histogram.is_empty() {
            return Summary::default();
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Summary {
            count: histogram.len(),
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }
}

/// Latency distributions as shares of spans per bin.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Distribution {
    /// Bin edges in milliseconds (one more than bins).
    pub edges_ms: Vec<f64>,
    pub baseline: Vec<f64>,
    pub current: Vec<f64>,
}

/// Both histograms over `bins` log-spaced bins spanning their common
/// range (p0.1 to p99.9), as shares of each histogram's spans.
pub(crate) fn distribution(
    baseline: &LatencyHistogram,
    current: &LatencyHistogram,
    bins: usize,
) -> Option<Distribution> {
    if baseline.is_empty() || current.is_empty() || bins == 0 {
        return None;
    }
    let low = baseline.value_at_quantile(0.001).min(current.value_at_quantile(0.001)).max(1) as f64;
    let high = baseline.value_at_quantile(0.999).max(current.value_at_quantile(0.999)).max(2) as f64;
    let high = if high <= low { low * 2.0 } else { high };
    let step = (high / low).ln() / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| low * (step * i as f64).exp()).collect();
    let shares = |h: &LatencyHistogram| -> Vec<f64> {
        let mut counts = vec![0u64; bins];
        for v in h.iter_recorded() {
            let value = v.value_iterated_to() as f64;
            let bin = (((value / low).ln() / step).floor().max(0.0) as usize).min(bins - 1);
            counts[bin] += u64::from(v.count_at_value());
        }
        let total = h.len().max(1) as f64;
        counts.into_iter().map(|c| c as f64 / total).collect()
    };
    Some(Distribution {
        edges_ms: edges.iter().map(|e| (e / 1000.0 * 1000.0).round() / 1000.0).collect(),
        baseline: shares(baseline),
        current: shares(current),
    })
}

/// Result of the one-sided test "current is stochastically greater than
/// baseline".
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct MannWhitney {
    /// U statistic of the current sample.
    pub u: f64,
    /// Standardised statistic (continuity- and tie-corrected).
    pub z: f64,
    /// One-sided p-value.
    pub p_value: f64,
    /// Probability that a random current value exceeds a random baseline
    /// value (ties count half): the common-language effect size, U / (n1·n2).
    pub effect_size: f64,
}

/// One-sided Mann-Whitney U test of `current > baseline` from histograms.
/// Returns `None` when either side is empty or every value ties.
pub(crate) fn mann_whitney_greater(baseline: &LatencyHistogram, current: &LatencyHistogram) -> Option<MannWhitney> {
    mann_whitney_counts(
        baseline.iter_recorded().map(|v| (v.value_iterated_to(), u64::from(v.count_at_value()))),
        current.iter_recorded().map(|v| (v.value_iterated_to(), u64::from(v.count_at_value()))),
    )
}

/// One-sided Mann-Whitney U test of `current > baseline` from two
/// samples given as (value, count) pairs in increasing value order.
/// Returns `None` when either side is empty or every value ties.
pub(crate) fn mann_whitney_counts(
    baseline: impl Iterator<Item = (u64, u64)>,
    current: impl Iterator<Item = (u64, u64)>,
) -> Option<MannWhitney> {
    let baseline: Vec<(u64, u64)> = baseline.filter(|(_, c)| *c > 0).collect();
    let current: Vec<(u64, u64)> = current.filter(|(_, c)| *c > 0).collect();
    let n1 = baseline.iter().map(|(_, c)| *c as f64).sum::<f64>();
    let n2 = current.iter().map(|(_, c)| *c as f64).sum::<f64>();
    if n1 == 0.0 || n2 == 0.0 {
        return None;
    }
    // Walk both samples in value order.
    let mut base = baseline.into_iter().peekable();
    let mut cur = current.into_iter().peekable();
    let (mut base_below, mut u, mut tie_term) = (0.0_f64, 0.0_f64, 0.0_f64);
    loop {
        let next = match (base.peek(), cur.peek()) {
            (None, None) => break,
            (Some(b), None) => b.0,
            (None, Some(c)) => c.0,
            (Some(b), Some(c)) => b.0.min(c.0),
        };
        let a = if base.peek().is_some_and(|b| b.0 == next) {
            base.next().map_or(0, |b| b.1)
        } else {
            0
        } as f64;
        let c = if cur.peek().is_some_and(|c| c.0 == next) {
            cur.next().map_or(0, |c| c.1)
        } else {
            0
        } as f64;
        u += c * (base_below + a / 2.0);
        base_below += a;
        let t = a + c;
        tie_term += t * t * t - t;
    }
    let n = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    if variance <= 0.0 {
        return None;
    }
    let mean = n1 * n2 / 2.0;
    let diff = u - mean;
    // Continuity correction towards the null.
    let corrected = if diff > 0.5 {
        diff - 0.5
    } else if diff < -0.5 {
        diff + 0.5
    } else {
        0.0
    };
    let z = corrected / variance.sqrt();
    Some(MannWhitney {
        u,
        z,
        p_value: upper_tail(z),
        effect_size: u / (n1 * n2),
    })
}

/// A p-value for people: "p = 5.4e-23", or "p < 1e-300" where the normal
/// tail underflows (an exact 0 would overstate what the test knows).
pub(crate) fn describe_p_value(p: f64) -> String {
    if p < 1e-300 {
        "p < 1e-300".to_owned()
    } else {
        format!("p = {p:.1e}")
    }
}

/// P(Z > z) for a standard normal Z.
pub(crate) fn upper_tail(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// A window's contribution to change-point estimation: count and the sum of
/// log-latencies, so segment means are of log-latency (latency is
/// multiplicative, and logs tame the tail); and how many of its spans were
/// errors, for the error-rate detector.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct WindowMoments {
    pub start_unix_nanos: u64,
    pub count: u64,
    pub sum_ln: f64,
    pub sum_ln2: f64,
    pub errors: u64,
}

impl WindowMoments {
    pub(crate) fn add(&mut self, ln: f64, error: bool) {
        self.count += 1;
        self.sum_ln += ln;
        self.sum_ln2 += ln * ln;
        self.errors += u64::from(error);
    }

    pub(crate) fn merge(&mut self, other: &WindowMoments) {
        self.count += other.count;
        self.sum_ln += other.sum_ln;
        self.sum_ln2 += other.sum_ln2;
        self.errors += other.errors;
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ln / self.count as f64
        }
    }

    /// Sample standard deviation of log-latency.
    pub(crate) fn std_dev(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        ((self.sum_ln2 - self.sum_ln * self.sum_ln / n) / (n - 1.0)).max(0.0).sqrt()
    }
}

/// One-sided Fisher's exact test that `current_errors` of `current` spans
/// is a higher error proportion than `baseline_errors` of `baseline` spans:
/// P(X ≥ current_errors) for X hypergeometric with the table's margins. It
/// stays exact for the small counts of rare errors, where a normal
/// approximation would be far off.
pub(crate) fn fisher_greater(current_errors: u64, current: u64, baseline_errors: u64, baseline: u64) -> f64 {
    let (x, n1) = (current_errors.min(current), current);
    let n2 = baseline;
    let y = baseline_errors.min(baseline);
    let total = n1 + n2;
    let errors = x + y;
    if n1 == 0 || total == 0 || errors == 0 {
        return 1.0;
    }
    let ln_choose = |n: u64, k: u64| ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k);
    let ln_pmf = |k: u64| ln_choose(errors, k) + ln_choose(total - errors, n1 - k) - ln_choose(total, n1);
    let (ef, n1f, tf) = (errors as f64, n1 as f64, total as f64);
    // Terms are summed from the mode outward, by the ratio of neighbours,
    // until they no longer change the sum: from the observed count up when
    // it lies above the expected count, else the complementary lower tail
    // down from below it. Either way the first term is near the mode, so
    // nothing underflows that matters.
    if x as f64 > ef * n1f / tf {
        let highest = errors.min(n1);
        let mut term = ln_pmf(x).exp();
        let mut sum = term;
        let mut k = x;
        while k < highest {
            let kf = k as f64;
            term *= (ef - kf) * (n1f - kf) / ((kf + 1.0) * (tf - ef - n1f + kf + 1.0));
            k += 1;
            sum += term;
            if term <= sum * 1e-17 {
                break;
            }
        }
        return sum.clamp(0.0, 1.0);
    }
    let lowest = n1.saturating_sub(total - errors);
    if x <= lowest {
        return 1.0;
    }
    let mut k = x - 1;
    let mut term = ln_pmf(k).exp();
    let mut below = term;
    while k > lowest {
        let kf = k as f64;
        term *= kf * (tf - ef - n1f + kf) / ((ef - kf + 1.0) * (n1f - kf + 1.0));
        k -= 1;
        below += term;
        if term <= below * 1e-17 {
            break;
        }
    }
    (1.0 - below).clamp(0.0, 1.0)
}

fn ln_factorial(n: u64) -> f64 {
    libm::lgamma(n as f64 + 1.0)
}

/// The family-wise chance that [`Dispersion::steady`] takes a group of
/// errors that came one by one for a burst.
const BURST_ALPHA: f64 = 0.01;
/// Groups a dispersion estimate needs; with fewer it is 1.
const MIN_DISPERSION_GROUPS: usize = 5;

/// The overdispersion of error counts: windows merged in order into groups
/// of at least `group_spans` spans, then Pearson's χ² of the groups' errors
/// against their pooled rate, over its degrees of freedom. It is about 1
/// when each span fails independently at one rate, and larger when errors
/// come in bursts (a flaky dependency's outages). At least 1.
#[derive(Debug, Clone, Default)]
pub(crate) struct Dispersion {
    group_spans: u64,
    open: (u64, u64),
    groups: Vec<(u64, u64)>,
}

impl Dispersion {
    pub(crate) fn new(group_spans: u64) -> Dispersion {
        Dispersion {
            group_spans: group_spans.max(1),
            ..Default::default()
        }
    }

    pub(crate) fn add(&mut self, window: &WindowMoments) {
        self.open.0 += window.count;
        self.open.1 += window.errors.min(window.count);
        if self.open.0 >= self.group_spans {
            self.groups.push(std::mem::take(&mut self.open));
        }
    }

    /// Whether enough groups were seen to judge, their overdispersion is at
    /// most `limit`, and no group alone holds significantly more errors
    /// than the others (one-sided Fisher test against the rest, below
    /// `BURST_ALPHA` over the number of groups): errors that came one by
    /// one, not in bursts. The overdispersion alone would miss one burst
    /// in a long history, where its share of χ² is diluted.
    pub(crate) fn steady(&self, min_groups: usize, limit: f64) -> bool {
        if self.groups.len() < min_groups.max(2) || self.overdispersion() > limit {
            return false;
        }
        let (spans, errors) = self.groups.iter().fold((0u64, 0u64), |(s, e), g| (s + g.0, e + g.1));
        let threshold = BURST_ALPHA / self.groups.len() as f64;
        let expected = |g: &(u64, u64)| errors as f64 * g.0 as f64 / spans.max(1) as f64;
        self.groups.iter().all(|g| {
            // Only a group above its share can be a burst.
            g.1 as f64 <= expected(g) || fisher_greater(g.1, g.0, errors - g.1, spans - g.0) >= threshold
        })
    }

    pub(crate) fn factor(&self) -> f64 {
        if self.groups.len() < MIN_DISPERSION_GROUPS {
            return 1.0;
        }
        self.overdispersion()
    }

    /// Pearson's χ² of the groups over its degrees of freedom, at least 1
    /// (1 with fewer than two groups).
    fn overdispersion(&self) -> f64 {
        if self.groups.len() < 2 {
            return 1.0;
        }
        let (spans, errors) = self.groups.iter().fold((0u64, 0u64), |(s, e), g| (s + g.0, e + g.1));
        let p = errors as f64 / spans as f64;
        if p <= 0.0 || p >= 1.0 {
            return 1.0;
        }
        let chi2: f64 = self
            .groups
            .iter()
            .map(|&(n, e)| {
                let expected = n as f64 * p;
                (e as f64 - expected).powi(2) / (expected * (1.0 - p))
            })
            .sum();
        (chi2 / (self.groups.len() - 1) as f64).max(1.0)
    }
}

/// The traffic of the last `span_nanos` (newest first in `recent`), cut
/// into groups of at least `group_spans` spans, without its worst half of
/// groups: (spans, errors) pooled over the rest. A burst of errors that
/// covers a third of the span is dropped whole, with the groups it only
/// touches, so what is left shows whether the rise is in the traffic or
/// only in the burst. `None`
/// with fewer than `min_groups` groups, or before the span is covered.
pub(crate) fn errors_without_worst_half(
    recent: impl Iterator<Item = WindowMoments>,
    min_groups: usize,
    group_spans: u64,
    span_nanos: u64,
    window_nanos: u64,
) -> Option<(u64, u64)> {
    let mut groups: Vec<(u64, u64)> = Vec::new();
    let mut group = (0u64, 0u64);
    let mut newest_end: Option<u64> = None;
    for window in recent {
        let end = *newest_end.get_or_insert(window.start_unix_nanos.saturating_add(window_nanos));
        group.0 += window.count;
        group.1 += window.errors.min(window.count);
        if group.0 < group_spans.max(1) {
            continue;
        }
        groups.push(std::mem::take(&mut group));
        if groups.len() >= min_groups.max(1) && end.saturating_sub(window.start_unix_nanos) >= span_nanos {
            return Some(better_half(&mut groups));
        }
    }
    None
}

/// (spans, errors) pooled over the better half of `groups` (spans, errors)
/// by error rate, compared exactly.
fn better_half(groups: &mut [(u64, u64)]) -> (u64, u64) {
    // Worst first.
    groups.sort_by(|a, b| (u128::from(b.1) * u128::from(a.0)).cmp(&(u128::from(a.1) * u128::from(b.0))));
    groups[groups.len() / 2..].iter().fold((0, 0), |(s, e), g| (s + g.0, e + g.1))
}

/// The calm error rate of a stretch of traffic: its windows, in order, cut
/// into groups of at least `group_spans` spans, without their worst half
/// of groups. A flaky dependency's outages that cover less than half of
/// the stretch drop out whole, so two stretches compare what their traffic
/// fails with between outages. Returns (spans, errors) pooled over the
/// better half, and the number of groups; (0, 0, 0) without a group.
pub(crate) fn calm_errors(windows: impl Iterator<Item = WindowMoments>, group_spans: u64) -> (u64, u64, usize) {
    let mut groups: Vec<(u64, u64)> = Vec::new();
    let mut group = (0u64, 0u64);
    for window in windows {
        group.0 += window.count;
        group.1 += window.errors.min(window.count);
        if group.0 >= group_spans.max(1) {
            groups.push(std::mem::take(&mut group));
        }
    }
    if groups.is_empty() {
        return (0, 0, 0);
    }
    let (spans, errors) = better_half(&mut groups);
    (spans, errors, groups.len())
}

/// The persistence test of error rates. The most recent traffic (newest
/// window first in `recent`) is cut into groups of at least `group_spans`
/// spans each, until the groups cover `span_nanos` of event time and number
/// at least `min_groups`. It passes when at least two thirds of the groups
/// have an error proportion above `floor_rate`. An outage of a flaky
/// dependency fails a large share of requests, but only for a while: it
/// lifts the groups it overlaps, not two thirds of a span longer than
/// itself, whereas a regression lifts them all.
pub(crate) fn persistent_errors(
    recent: impl Iterator<Item = WindowMoments>,
    floor_rate: f64,
    min_groups: usize,
    group_spans: u64,
    span_nanos: u64,
    window_nanos: u64,
) -> bool {
    let (mut groups, mut raised) = (0usize, 0usize);
    let mut group = WindowMoments::default();
    let mut newest_end: Option<u64> = None;
    for window in recent {
        let end = *newest_end.get_or_insert(window.start_unix_nanos.saturating_add(window_nanos));
        group.merge(&window);
        if group.count < group_spans.max(1) {
            continue;
        }
        groups += 1;
        raised += usize::from(group.errors as f64 > floor_rate * group.count as f64);
        group = WindowMoments::default();
        if groups >= min_groups.max(1) && end.saturating_sub(window.start_unix_nanos) >= span_nanos {
            return raised * 3 >= groups * 2;
        }
    }
    false
}

/// Whether each of the `chunks` most recent non-overlapping stretches of
/// traffic (newest first in `recent`, grouped so each holds at least
/// `min_chunk` spans) has a mean log-latency above the baseline's by more
/// than `z` standard errors. This is the persistence test: a burst that
/// touches one or two windows cannot pass it, however large.
pub(crate) fn persistent_shift(
    recent: impl Iterator<Item = WindowMoments>,
    baseline: &WindowMoments,
    chunks: usize,
    min_chunk: u64,
    z: f64,
) -> bool {
    let (mean, sd) = (baseline.mean(), baseline.std_dev());
    if baseline.count < 2 || sd <= 0.0 {
        return false;
    }
    let mut shifted = 0;
    let mut chunk = WindowMoments::default();
    for window in recent {
        chunk.merge(&window);
        if chunk.count < min_chunk {
            continue;
        }
        let standard_error = sd / (chunk.count as f64).sqrt();
        if (chunk.mean() - mean) / standard_error <= z {
            return false;
        }
        shifted += 1;
        if shifted == chunks {
            return true;
        }
        chunk = WindowMoments::default();
    }
    false
}

/// Estimates where the series shifted upward: the split maximising the
/// weighted difference of segment means of log-latency (a CUSUM statistic).
/// Returns the start of the first window after the change.
pub(crate) fn change_point(windows: &[WindowMoments]) -> Option<u64> {
    let total_count: u64 = windows.iter().map(|w| w.count).sum();
    let total_sum: f64 = windows.iter().map(|w| w.sum_ln).sum();
    if windows.len() < 2 || total_count < 2 {
        return None;
    }
    let (mut left_count, mut left_sum) = (0u64, 0.0f64);
    let mut best: Option<(f64, u64)> = None;
    for split in 1..windows.len() {
        left_count += windows[split - 1].count;
        left_sum += windows[split - 1].sum_ln;
        let right_count = total_count - left_count;
        if left_count == 0 || right_count == 0 {
            continue;
        }
        let (l, r) = (left_count as f64, right_count as f64);
        let shift = (total_sum - left_sum) / r - left_sum / l;
        let score = shift * (l * r / (l + r)).sqrt();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, windows[split].start_unix_nanos));
        }
    }
    best.filter(|(score, _)| *score > 0.0).map(|(_, at)| at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn histogram_of(values: &[u64]) -> LatencyHistogram {
        let mut h = new_histogram();
        for v in values {
            record(&mut h, *v);
        }
        h
    }

    /// Mann-Whitney computed the textbook way from raw samples: U by
    /// counting pairs, the variance with the tie correction over groups of
    /// equal values.
    fn reference(baseline: &[u64], current: &[u64]) -> (f64, f64) {
        let mut u = 0.0;
        for c in current {
            for b in baseline {
                u += if c > b {
                    1.0
                } else if c == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        let mut all: Vec<u64> = baseline.iter().chain(current).copied().collect();
        all.sort_unstable();
        let tie_term: f64 = all
            .chunk_by(|a, b| a == b)
            .map(|g| (g.len() as f64).powi(3) - g.len() as f64)
            .sum();
        let (n1, n2) = (baseline.len() as f64, current.len() as f64);
        let n = n1 + n2;
        let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
        let z = (u - n1 * n2 / 2.0 - 0.5) / variance.sqrt();
        (u, z)
    }

    /// Quantises samples to the value the histogram reports for them, so
    /// ties in the reference match the histogram's buckets.
    fn quantised(values: &[u64]) -> Vec<u64> {
        values.iter().map(|v| crate::detect::histogram::highest_equivalent(*v)).collect()
    }

    #[test]
    fn mann_whitney_matches_the_raw_sample_reference() {
        let mut rng = Rng::new(42);
        for (shift, n1, n2) in [(1.0, 400, 300), (1.15, 500, 200), (1.4, 50, 60), (0.9, 300, 300)] {
            let baseline: Vec<u64> = (0..n1).map(|_| rng.log_normal(20_000.0, 0.5) as u64).collect();
            let current: Vec<u64> = (0..n2).map(|_| (rng.log_normal(20_000.0, 0.5) * shift) as u64).collect();
            let (hb, hc) = (histogram_of(&baseline), histogram_of(&current));
            let got = mann_whitney_greater(&hb, &hc).expect("test");
            let (u, z) = reference(&quantised(&baseline), &quantised(&current));
            assert!((got.u - u).abs() < 1e-6, "U {} vs reference {u}", got.u);
            if u - (n1 * n2) as f64 / 2.0 > 0.5 {
                assert!((got.z - z).abs() < 1e-9, "z {} vs reference {z}", got.z);
            }
        }
    }

    #[test]
    fn small_exact_example_with_ties() {
        // Baseline {1,2,3,3}, current {3,4,5}: pairs where current wins:
        // 3 beats 1,2 and ties 3,3 → 3; 4 and 5 beat all four → 8. U = 11.
        let hb = histogram_of(&[1, 2, 3, 3]);
        let hc = histogram_of(&[3, 4, 5]);
        let got = mann_whitney_greater(&hb, &hc).expect("test");
        assert_eq!(got.u, 11.0);
        assert!((got.effect_size - 11.0 / 12.0).abs() < 1e-12);
        // Tie term: one group of three 3s → 24. n=7: var = 12/12·(8 − 24/42).
        let variance: f64 = 8.0 - 24.0 / 42.0;
        let z = (11.0 - 6.0 - 0.5) / variance.sqrt();
        assert!((got.z - z).abs() < 1e-12);
        assert!((got.p_value - upper_tail(z)).abs() < 1e-15);
    }

    #[test]
    fn p_values_behave() {
        assert!((upper_tail(0.0) - 0.5).abs() < 1e-15);
        assert!((upper_tail(1.6448536269514722) - 0.05).abs() < 1e-9);
        assert!((upper_tail(3.090232306167813) - 0.001).abs() < 1e-9);
        let mut rng = Rng::new(3);
        let base: Vec<u64> = (0..2000).map(|_| rng.log_normal(30_000.0, 0.6) as u64).collect();
        let same: Vec<u64> = (0..2000).map(|_| rng.log_normal(30_000.0, 0.6) as u64).collect();
        let slower: Vec<u64> = (0..2000).map(|_| (rng.log_normal(30_000.0, 0.6) * 1.3) as u64).collect();
        let (hb, hs, hw) = (histogram_of(&base), histogram_of(&same), histogram_of(&slower));
        assert!(mann_whitney_greater(&hb, &hs).expect("test").p_value > 0.001);
        assert!(mann_whitney_greater(&hb, &hw).expect("test").p_value < 1e-10);
        assert!(mann_whitney_greater(&hw, &hb).expect("test").p_value > 0.99, "one-sided");
    }

    #[test]
    fn identical_constant_samples_are_untestable() {
        let h = histogram_of(&[5, 5, 5]);
        assert_eq!(mann_whitney_greater(&h, &h), None);
        assert_eq!(mann_whitney_greater(&new_histogram(), &h), None);
    }

    #[test]
    fn change_point_finds_the_shift() {
        let windows: Vec<WindowMoments> = (0..20)
            .map(|i| {
                let level: f64 = if i < 13 { 20.0 } else { 26.0 };
                WindowMoments {
                    start_unix_nanos: i * 10,
                    count: 100,
                    sum_ln: 100.0 * level.ln(),
                    sum_ln2: 0.0,
                    errors: 0,
                }
            })
            .collect();
        assert_eq!(change_point(&windows), Some(130));
        let flat: Vec<WindowMoments> = (0..5)
            .map(|i| WindowMoments {
                start_unix_nanos: i,
                count: 10,
                sum_ln: 10.0,
                sum_ln2: 10.0,
                errors: 0,
            })
            .collect();
        assert_eq!(change_point(&flat), None);
    }

    #[test]
    fn fisher_matches_the_exact_hypergeometric_tail() {
        // Reference values from exact rational arithmetic (Python's math.comb).
        let close = |got: f64, want: f64| (got - want).abs() <= want * 1e-9;
        assert!(close(fisher_greater(10, 100, 2, 100), 0.016520054662092488));
        assert!(close(fisher_greater(3, 1000, 1, 1000), 0.31231226529639383));
        assert!(close(fisher_greater(40, 2000, 10, 2000), 1.0663832277579919e-05));
        assert_eq!(fisher_greater(0, 10, 5, 10), 1.0, "fewer errors is no rise");
        assert!(close(fisher_greater(2, 100, 10, 100), 0.9975091413663075));
        assert!(close(fisher_greater(500, 100_000, 500, 100_000), 0.5126441590195943));
        assert_eq!(fisher_greater(0, 0, 0, 0), 1.0);
        // Large samples stay finite and tiny.
        let p = fisher_greater(20_000, 1_000_000, 5_000, 1_000_000);
        assert!(p.is_finite() && p < 1e-100, "{p}");
    }

    #[test]
    fn error_persistence_needs_two_thirds_of_the_span_raised() {
        // Ten-second windows, newest first, over a 60 s span in groups of
        // at least 100 spans.
        let series = |windows: &[(u64, u64)]| -> Vec<WindowMoments> {
            windows
                .iter()
                .enumerate()
                .map(|(i, &(count, errors))| WindowMoments {
                    start_unix_nanos: (100 - i as u64) * 10,
                    count,
                    errors,
                    ..Default::default()
                })
                .collect()
        };
        let judge = |w: &[WindowMoments]| persistent_errors(w.iter().copied(), 0.01, 3, 100, 60, 10);
        // A regression: most windows are above the floor, one is not.
        let steady = series(&[(100, 3), (100, 2), (100, 0), (100, 3), (100, 2), (100, 3)]);
        assert!(judge(&steady));
        // An outage of half the span, however deep, lifts half the groups.
        let outage = series(&[(100, 30), (100, 25), (100, 30), (100, 0), (100, 0), (100, 1)]);
        assert!(!judge(&outage));
        // Sparse windows are grouped until a group holds enough spans.
        let sparse = series(&[(30, 1); 12]);
        assert!(judge(&sparse));
        assert!(!judge(&sparse[..6]), "too little traffic for the span and the groups");
    }

    fn moments(start: u64, values: &[f64]) -> WindowMoments {
        let mut m = WindowMoments {
            start_unix_nanos: start,
            ..Default::default()
        };
        for v in values {
            m.add(v.ln(), false);
        }
        m
    }

    #[test]
    fn moments_mean_and_deviation() {
        let m = moments(0, &[1.0, std::f64::consts::E, std::f64::consts::E * std::f64::consts::E]);
        assert!((m.mean() - 1.0).abs() < 1e-12);
        assert!((m.std_dev() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn persistence_needs_every_recent_chunk_shifted() {
        let mut rng = Rng::new(5);
        let mut sample = |n: usize, factor: f64| -> Vec<f64> { (0..n).map(|_| rng.log_normal(20.0, 0.5) * factor).collect() };
        let baseline = moments(0, &sample(5000, 1.0));
        let slow: Vec<WindowMoments> = (0..3).map(|i| moments(i, &sample(200, 1.3))).collect();
        assert!(persistent_shift(slow.iter().copied(), &baseline, 3, 50, 2.33));
        // A burst in the newest window only.
        let burst = vec![
            moments(2, &sample(200, 3.0)),
            moments(1, &sample(200, 1.0)),
            moments(0, &sample(200, 1.0)),
        ];
        assert!(!persistent_shift(burst.into_iter(), &baseline, 3, 50, 2.33));
        // Sparse windows are grouped until each chunk holds enough spans.
        let sparse: Vec<WindowMoments> = (0..12).map(|i| moments(i, &sample(20, 1.5))).collect();
        assert!(persistent_shift(sparse.iter().copied(), &baseline, 3, 50, 2.33));
        assert!(
            !persistent_shift(sparse.iter().copied().take(6), &baseline, 3, 50, 2.33),
            "not enough data yet"
        );
    }

    #[test]
    fn distributions_share_bins_and_sum_to_one() {
        let base = histogram_of(&(1..=1000).map(|i| 10_000 + i * 10).collect::<Vec<_>>());
        let cur = histogram_of(&(1..=1000).map(|i| 15_000 + i * 10).collect::<Vec<_>>());
        let d = distribution(&base, &cur, 20).expect("distribution");
        assert_eq!(d.edges_ms.len(), 21);
        assert!((d.baseline.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!((d.current.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let mean_bin = |v: &[f64]| v.iter().enumerate().map(|(i, s)| i as f64 * s).sum::<f64>();
        assert!(
            mean_bin(&d.current) > mean_bin(&d.baseline),
            "the slower sample sits in higher bins"
        );
    }

    #[test]
    fn summary_quantiles() {
        let values: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = Summary::of(&histogram_of(&values));
        assert_eq!(s.count, 1000);
        // Never below the exact quantile, and at most a bucket (1/32) above.
        for (reported, exact) in [(s.p50_ms, 500.0), (s.p95_ms, 950.0), (s.p99_ms, 990.0)] {
            assert!(reported >= exact && reported <= exact * (1.0 + 1.0 / 32.0), "{s:?}");
        }
    }

    #[test]
    fn p_values_that_underflow_are_bounded_not_zero() {
        assert_eq!(describe_p_value(0.0), "p < 1e-300");
        assert_eq!(describe_p_value(5.4e-23), "p = 5.4e-23");
    }

    /// Ten-second windows of `rate` requests each, newest first, failing
    /// at `base` except in the windows `outage` covers, which fail at 25%.
    fn error_windows(n: u64, rate: u64, base: f64, outage: std::ops::Range<u64>, seed: u64) -> Vec<WindowMoments> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let p = if outage.contains(&i) { 0.25 } else { base };
                let errors = (0..rate).filter(|_| rng.uniform() < p).count() as u64;
                WindowMoments {
                    start_unix_nanos: (1000 - i) * 10_000_000_000,
                    count: rate,
                    errors,
                    ..Default::default()
                }
            })
            .collect()
    }

    #[test]
    fn bursts_of_errors_raise_the_dispersion_and_steady_errors_do_not() {
        let mut steady = Dispersion::new(200);
        for w in error_windows(180, 300, 0.01, 0..0, 3) {
            steady.add(&w);
        }
        assert!(steady.factor() < 1.6, "{}", steady.factor());
        let mut flaky = Dispersion::new(200);
        for w in error_windows(180, 300, 0.01, 40..46, 3).iter().chain(&error_windows(60, 300, 0.01, 20..26, 4)) {
            flaky.add(w);
        }
        assert!(flaky.factor() > 5.0, "{}", flaky.factor());
        assert_eq!(Dispersion::new(200).factor(), 1.0, "no groups: no evidence of bursts");
    }

    #[test]
    fn one_burst_in_an_hour_is_no_steady_baseline_though_it_barely_lifts_the_dispersion() {
        // An hour of 10 requests/s failing 5%, in groups of one window.
        let mut steady = Dispersion::new(100);
        for w in error_windows(360, 100, 0.05, 0..0, 8) {
            steady.add(&w);
        }
        assert!(steady.steady(30, 1.5), "{}", steady.factor());
        let mut burst = Dispersion::new(100);
        for w in error_windows(360, 100, 0.05, 200..201, 8) {
            burst.add(&w);
        }
        assert!(burst.factor() < 1.5, "diluted over 359 degrees of freedom: {}", burst.factor());
        assert!(!burst.steady(30, 1.5), "ten seconds of a quarter failing is a burst");
        assert!(!Dispersion::new(100).steady(1, 1.5), "no groups: nothing to call steady");
    }

    #[test]
    fn an_outage_filling_a_third_of_the_span_is_dropped_and_a_steady_rise_is_kept() {
        const S10: u64 = 10_000_000_000;
        // Three minutes of 40 requests/s at 1%, a minute of it in an outage.
        let outage = error_windows(18, 400, 0.01, 0..6, 5);
        let (spans, errors) = errors_without_worst_half(outage.into_iter(), 6, 200, 18 * S10, S10).expect("covered");
        assert!((errors as f64 / spans as f64) < 0.015, "{errors}/{spans}");
        // The same three minutes after a deploy that fails 4% throughout.
        let risen = error_windows(18, 400, 0.04, 0..0, 6);
        let (spans, errors) = errors_without_worst_half(risen.into_iter(), 6, 200, 18 * S10, S10).expect("covered");
        assert!((errors as f64 / spans as f64) > 0.025, "{errors}/{spans}");
        // A minute is not three.
        assert_eq!(errors_without_worst_half(error_windows(6, 400, 0.01, 0..0, 7).into_iter(), 6, 200, 18 * S10, S10), None);
    }
}
