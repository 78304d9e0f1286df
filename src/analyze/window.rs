//! `LatencyWindows`: the event-time latency history of one (operation,
//! revision).
//!
//! Recent traffic lives in a ring of short windows (the "current" sample of
//! the detector). An evaluation at event time `at` reads only windows that
//! end by `at` (they are *settled*): spans already recorded for later
//! windows, which arrived within the evaluation delay, wait in the ring's
//! lead windows. So what an evaluation sees depends on the spans' times, not
//! on how they were batched or paced. Windows that age out of the ring fold into two coarse
//! blocks that together cover up to `baseline_window` (the trailing
//! baseline when no deploy happened). Each window also leaves a few numbers
//! (count, sum of log-latency) in a longer series for change-point
//! estimation, and its error count for the error-rate detector. Memory per series is therefore fixed: ring + 2 blocks +
//! the moments series, whatever the traffic.
//!
//! The moments series is most of that memory once it is full (two baseline
//! windows of windows: 360 at the defaults), so a retired window is kept in
//! 24 bytes rather than the 40 of the live [`WindowMoments`]: counts as
//! `u32`, and the log-latencies as their mean and the sum of squared
//! deviations from it in `f32` (a relative error of 6e-8 on each, which
//! keeps the variance accurate where a raw sum of squares in `f32` would
//! lose it to cancellation).

use std::collections::VecDeque;

use crate::detect::stats::{LatencyHistogram, WindowMoments, new_histogram, record};

/// Sizes of the windows, shared by every series of an analysis.
#[derive(Debug, Clone, Copy)]
pub struct WindowLayout {
    pub window_nanos: u64,
    /// Windows in the ring: the current sample spans `ring_len` windows.
    pub ring_len: usize,
    /// Windows kept beyond the current sample for spans newer than the
    /// next evaluation (they arrive up to the evaluation delay early).
    pub lead_len: usize,
    /// Length of each of the two baseline blocks.
    pub block_nanos: u64,
    /// Windows kept in the change-point series.
    pub moments_len: usize,
}

struct Window {
    start: u64,
    histogram: LatencyHistogram,
    moments: WindowMoments,
}

struct Block {
    start: u64,
    histogram: LatencyHistogram,
}

/// A retired window's moments, compact (see the module's documentation).
#[derive(Debug, Clone, Copy)]
struct Retired {
    start_unix_nanos: u64,
    /// Saturating: a 10 s window would need 400 million spans a second.
    count: u32,
    errors: u32,
    mean_ln: f32,
    /// Sum of squared deviations of the log-latencies from their mean.
    deviation_ln2: f32,
}

impl Retired {
    fn new(m: &WindowMoments) -> Retired {
        let mean = m.mean();
        let deviation = if m.count == 0 { 0.0 } else { (m.sum_ln2 - m.sum_ln * mean).max(0.0) };
        Retired {
            start_unix_nanos: m.start_unix_nanos,
            count: u32::try_from(m.count).unwrap_or(u32::MAX),
            errors: u32::try_from(m.errors).unwrap_or(u32::MAX),
            mean_ln: mean as f32,
            deviation_ln2: deviation as f32,
        }
    }

    fn moments(self) -> WindowMoments {
        let count = f64::from(self.count);
        let mean = f64::from(self.mean_ln);
        WindowMoments {
            start_unix_nanos: self.start_unix_nanos,
            count: u64::from(self.count),
            sum_ln: mean * count,
            sum_ln2: f64::from(self.deviation_ln2) + mean * mean * count,
            errors: u64::from(self.errors),
        }
    }
}

pub struct LatencyWindows {
    layout: WindowLayout,
    ring: VecDeque<Window>,
    /// Sum of the ring's settled windows, kept up to date so an evaluation
    /// reads the current sample without merging.
    ring_sum: LatencyHistogram,
    /// Windows starting before this are settled (in `ring_sum`).
    settled: u64,
    /// `[previous, current]` baseline blocks: together, the trailing
    /// baseline. Their sum is made when an evaluation asks for it rather
    /// than kept, as it would be the series' largest histogram.
    blocks: [Option<Block>; 2],
    moments: VecDeque<Retired>,
    /// Histograms of rotated-out windows, reused to avoid allocation.
    spare: Vec<LatencyHistogram>,
    total: u64,
}

impl LatencyWindows {
    pub(crate) fn new(layout: WindowLayout) -> LatencyWindows {
        LatencyWindows {
            layout,
            // The current sample and the lead windows, and the fresh window
            // a roll pushes before it retires the oldest: never more.
            ring: VecDeque::with_capacity(layout.ring_len + layout.lead_len + 1),
            ring_sum: new_histogram(),
            settled: 0,
            blocks: [None, None],
            moments: VecDeque::new(),
            spare: Vec::new(),
            total: 0,
        }
    }

    /// A series whose history is `histogram` (from a snapshot), held as
    /// baseline data older than the current window.
    pub(crate) fn restored(
        layout: WindowLayout,
        histogram: LatencyHistogram,
        moments: Vec<WindowMoments>,
        watermark: u64,
    ) -> LatencyWindows {
        let mut windows = LatencyWindows::new(layout);
        windows.total = histogram.len();
        let start = watermark - watermark % layout.block_nanos.max(1);
        windows.blocks[1] = Some(Block { start, histogram });
        let skip = moments.len().saturating_sub(layout.moments_len);
        windows.moments = moments.iter().skip(skip).map(Retired::new).collect();
        windows
    }

    /// Spans recorded since the series began.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Records one span ending at `end_unix_nanos`; `error` when it failed.
    pub(crate) fn record(&mut self, end_unix_nanos: u64, duration_micros: u64, error: bool) {
        let start = end_unix_nanos - end_unix_nanos % self.layout.window_nanos;
        self.roll(start, self.layout.ring_len + self.layout.lead_len);
        self.total += 1;
        let ln = (duration_micros.max(1) as f64).ln();
        let ln = if ln.is_finite() { ln } else { 0.0 };
        let settled = start < self.settled;
        if let Some(window) = self.ring.iter_mut().rev().find(|w| w.start == start) {
            record(&mut window.histogram, duration_micros);
            window.moments.add(ln, error);
            if settled {
                record(&mut self.ring_sum, duration_micros);
            }
            return;
        }
        let latest = self.ring.back().map_or(start, |w| w.start);
        let kept = (self.layout.ring_len + self.layout.lead_len) as u64;
        let horizon = latest.saturating_sub(self.layout.window_nanos * (kept - 1));
        if start >= horizon {
            // A late span for a window the ring has no entry for yet.
            let index = self.ring.iter().position(|w| w.start > start).unwrap_or(self.ring.len());
            let mut window = self.new_window(start);
            record(&mut window.histogram, duration_micros);
            window.moments.add(ln, error);
            if settled {
                record(&mut self.ring_sum, duration_micros);
            }
            self.ring.insert(index, window);
            return;
        }
        // Older than the ring: late but admitted; it joins the baseline.
        if let Some(block) = self.blocks[1].as_mut() {
            record(&mut block.histogram, duration_micros);
        }
    }

    /// Prepares the series for an evaluation at `at`: windows that end by
    /// `at` are settled into the current sample, and windows older than the
    /// current sample roll into the baseline blocks.
    pub(crate) fn settle(&mut self, at: u64) {
        let window = self.layout.window_nanos;
        let at = at - at % window;
        for w in self.ring.iter().filter(|w| w.start >= self.settled && w.start < at) {
            self.ring_sum.add(&w.histogram);
        }
        self.settled = self.settled.max(at);
        self.roll(at.saturating_sub(window), self.layout.ring_len);
    }

    /// Moves the ring forward to `now`, keeping `keep` windows up to it:
    /// older windows roll into the baseline blocks.
    fn roll(&mut self, now: u64, keep: usize) {
        let window = self.layout.window_nanos;
        let aligned = now - now % window;
        if self.ring.back().is_none_or(|w| w.start < aligned) {
            let fresh = self.new_window(aligned);
            self.ring.push_back(fresh);
        }
        let horizon = aligned.saturating_sub(window * (keep as u64 - 1));
        while self.ring.front().is_some_and(|w| w.start < horizon) {
            if let Some(old) = self.ring.pop_front() {
                self.retire(old);
            }
        }
    }

    fn new_window(&mut self, start: u64) -> Window {
        let histogram = self.spare.pop().unwrap_or_else(new_histogram);
        Window {
            start,
            histogram,
            moments: WindowMoments {
                start_unix_nanos: start,
                ..Default::default()
            },
        }
    }

    fn retire(&mut self, mut window: Window) {
        if window.moments.count > 0 {
            if window.start < self.settled {
                self.ring_sum.subtract(&window.histogram);
            }
            let block_nanos = self.layout.block_nanos;
            let needs_new_block = self.blocks[1].as_ref().is_none_or(|b| window.start >= b.start + block_nanos);
            if needs_new_block {
                let start = window.start - window.start % block_nanos;
                let mut recycled = self.blocks[0].take().map(|b| b.histogram);
                if let Some(oldest) = recycled.as_mut() {
                    oldest.reset();
                }
                // A block older than two block lengths is stale: drop it too.
                let previous = self.blocks[1].take();
                self.blocks[0] = previous.filter(|b| b.start + 2 * block_nanos > start);
                self.blocks[1] = Some(Block {
                    start,
                    histogram: recycled.unwrap_or_else(new_histogram),
                });
            }
            if let Some(block) = self.blocks[1].as_mut() {
                block.histogram.add(&window.histogram);
            }
            if self.moments.len() >= self.layout.moments_len {
                self.moments.pop_front();
            } else if self.moments.len() == self.moments.capacity() {
                // Doubling, but never past the series' length.
                let more = self.moments.len().max(4).min(self.layout.moments_len - self.moments.len());
                self.moments.reserve_exact(more);
            }
            self.moments.push_back(Retired::new(&window.moments));
        }
        window.histogram.reset();
        if self.spare.len() < 2 {
            self.spare.push(window.histogram);
        }
    }

    /// Whether the series served spans in windows that end after `since`
    /// (an evaluation's `at` less the current window): its current sample
    /// holds some, or — restored from a snapshot, which keeps only history
    /// — the newest window it was restored with ends after `since`. The
    /// windows a running series retires all end by then.
    pub(crate) fn served_after(&self, since: u64) -> bool {
        !self.ring_sum.is_empty()
            || self
                .moments
                .back()
                .is_some_and(|m| m.count > 0 && m.start_unix_nanos.saturating_add(self.layout.window_nanos) > since)
    }

    /// The current sample: the ring's settled windows.
    pub(crate) fn current(&self) -> &LatencyHistogram {
        &self.ring_sum
    }

    /// Adds the trailing baseline to `into`: everything older than the
    /// ring, within the two blocks.
    pub(crate) fn trailing(&self, into: &mut LatencyHistogram) {
        for block in self.blocks.iter().flatten() {
            into.add(&block.histogram);
        }
    }

    /// Everything settled: the ring's settled windows and the blocks.
    pub(crate) fn all(&self, into: &mut LatencyHistogram) {
        self.trailing(into);
        into.add(&self.ring_sum);
    }

    /// Everything retained, settled or not (for snapshots).
    pub(crate) fn retained(&self, into: &mut LatencyHistogram) {
        self.trailing(into);
        for w in &self.ring {
            into.add(&w.histogram);
        }
    }

    /// The change-point series: retired windows then the ring's settled
    /// windows, oldest first.
    pub(crate) fn moments(&self) -> impl Iterator<Item = WindowMoments> + '_ {
        self.moments.iter().map(|r| r.moments()).chain(self.settled_ring().map(|w| w.moments))
    }

    /// Every window's moments, settled or not (for snapshots).
    pub(crate) fn retained_moments(&self) -> impl Iterator<Item = WindowMoments> + '_ {
        self.moments.iter().map(|r| r.moments()).chain(self.ring.iter().map(|w| w.moments))
    }

    /// The ring's settled windows, newest first: the current traffic.
    pub(crate) fn recent_moments(&self) -> impl Iterator<Item = WindowMoments> + '_ {
        self.settled_ring().rev().map(|w| w.moments)
    }

    fn settled_ring(&self) -> impl DoubleEndedIterator<Item = &Window> + '_ {
        self.ring.iter().filter(move |w| w.start < self.settled)
    }

    /// Bytes the series holds, its own struct included.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> usize {
        let histograms = self.ring.iter().map(|w| &w.histogram).chain(self.blocks.iter().flatten().map(|b| &b.histogram));
        std::mem::size_of::<LatencyWindows>()
            + self.ring.capacity() * std::mem::size_of::<Window>()
            + self.moments.capacity() * std::mem::size_of::<Retired>()
            + self.spare.capacity() * std::mem::size_of::<LatencyHistogram>()
            + histograms
                .chain([&self.ring_sum])
                .chain(&self.spare)
                .map(LatencyHistogram::heap_bytes)
                .sum::<usize>()
    }

    /// Retired windows, newest first, at most `limit`.
    pub(crate) fn retired_moments(&self, limit: usize) -> impl Iterator<Item = WindowMoments> + '_ {
        self.moments.iter().rev().take(limit).map(|r| r.moments())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailing_of(w: &LatencyWindows) -> LatencyHistogram {
        let mut trailing = new_histogram();
        w.trailing(&mut trailing);
        trailing
    }

    const S: u64 = 1_000_000_000;

    fn layout() -> WindowLayout {
        WindowLayout {
            window_nanos: 10 * S,
            ring_len: 6,
            lead_len: 2,
            block_nanos: 300 * S,
            moments_len: 100,
        }
    }

    #[test]
    fn ring_holds_the_current_window_and_blocks_the_rest() {
        let mut w = LatencyWindows::new(layout());
        // Aligned to the 5-minute blocks.
        let t0 = 1_700_000_100 * S;
        // 10 minutes at one span per second, 1 ms each.
        for i in 0..600 {
            w.record(t0 + i * S, 1000, false);
        }
        assert_eq!(w.current().len(), 0, "nothing is settled before an evaluation");
        w.settle(t0 + 600 * S);
        assert_eq!(w.current().len(), 60, "six 10s windows");
        assert_eq!(trailing_of(&w).len(), 540);
        let mut all = new_histogram();
        w.all(&mut all);
        assert_eq!(all.len(), 600);
        assert_eq!(w.total(), 600);
    }

    /// Retired windows keep their counts exactly and their log-latency
    /// mean and deviation to within 1e-6, and the series never holds room
    /// for more of them than its length.
    #[test]
    fn retired_windows_are_compact_and_keep_their_moments() {
        let t0 = 1_700_000_100 * S;
        let mut w = LatencyWindows::new(layout());
        let mut exact: Vec<WindowMoments> = Vec::new();
        // 30 minutes, 200 spans a window: latencies 1 ms to 400 ms, a tenth failing.
        for window in 0..180u64 {
            let mut m = WindowMoments {
                start_unix_nanos: t0 + window * 10 * S,
                ..Default::default()
            };
            for i in 0..200u64 {
                let micros = 1000 + (window * 7919 + i * 104_729) % 400_000;
                let error = (window + i) % 10 == 0;
                w.record(t0 + window * 10 * S + i * (S / 20), micros, error);
                m.add((micros as f64).ln(), error);
            }
            exact.push(m);
        }
        w.settle(t0 + 180 * 10 * S);
        let kept: Vec<WindowMoments> = w.moments().collect();
        assert_eq!(kept.len(), layout().moments_len + layout().ring_len);
        assert!(w.moments.capacity() <= layout().moments_len, "{}", w.moments.capacity());
        let ring = layout().ring_len + layout().lead_len;
        assert!(w.ring.capacity() <= ring + 1, "the ring never grew: {}", w.ring.capacity());
        for m in &kept {
            let i = ((m.start_unix_nanos - t0) / (10 * S)) as usize;
            let e = &exact[i];
            assert_eq!((m.count, m.errors), (e.count, e.errors));
            assert!((m.mean() - e.mean()).abs() < 1e-6, "{m:?} {e:?}");
            assert!((m.std_dev() - e.std_dev()).abs() < 1e-6 * e.std_dev().max(1.0), "{m:?} {e:?}");
        }
        assert_eq!(std::mem::size_of::<Retired>(), 24);
    }

    /// What one series holds after an hour at the default settings, when
    /// its history is full: the README's sizing comes from this
    /// (`cargo test --release --lib -- series_memory --nocapture`).
    #[test]
    fn series_memory_after_an_hour_is_bounded() {
        let settings = crate::analyze::service::AnalysisSettings::from_config(&crate::config::Config::default());
        for (rate, sigma) in [(2u64, 0.3f64), (2, 1.0), (50, 0.3), (50, 1.0)] {
            let mut w = LatencyWindows::new(settings.layout);
            let mut rng = crate::rng::Rng::new(7);
            let t0 = 1_700_000_000 * S;
            for i in 0..3600 * rate {
                // Log-normal latencies around 20 ms, spread by `sigma`.
                let u1 = (rng.next_u64() as f64 / u64::MAX as f64).max(1e-12);
                let u2 = rng.next_u64() as f64 / u64::MAX as f64;
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let at = t0 + i * S / rate;
                w.record(at, (20_000.0 * (sigma * z).exp()) as u64, false);
                if i % (10 * rate) == 0 {
                    w.settle(at);
                }
            }
            let bytes = w.heap_bytes();
            println!("{rate} spans/s, log-normal sigma {sigma}: {bytes} bytes");
            assert!(bytes < 128 << 10, "{rate} spans/s, sigma {sigma}: {bytes} bytes");
        }
    }

    /// A series serves while its current sample holds spans; restored from
    /// a snapshot, while the windows it was restored with are that recent.
    #[test]
    fn a_series_serves_for_a_current_window_after_its_last_span_restored_or_not() {
        let t0 = 1_700_000_100 * S;
        let current = 60 * S;
        let mut running = LatencyWindows::new(layout());
        for i in 0..120 {
            running.record(t0 + i * S, 1000, false);
        }
        let last = t0 + 119 * S;
        let moments: Vec<WindowMoments> = running.retained_moments().collect();
        let mut whole = new_histogram();
        running.retained(&mut whole);
        let restored = LatencyWindows::restored(layout(), whole, moments, last);
        for at in (last..last + 90 * S).step_by(10 * S as usize) {
            running.settle(at);
            let serving = !running.current().is_empty();
            assert_eq!(running.served_after(at - current), serving, "at {}", (at - t0) / S);
            assert_eq!(restored.served_after(at - current), serving, "restored, at {}", (at - t0) / S);
        }
        assert!(!running.served_after(last + 20 * S), "every window retired");
    }

    #[test]
    fn baseline_is_bounded_to_two_blocks() {
        let mut w = LatencyWindows::new(layout());
        let t0 = 1_700_000_000 * S;
        for i in 0..3600 {
            w.record(t0 + i * S, 1000, false);
        }
        let trailing = trailing_of(&w);
        assert!(trailing.len() <= 600, "at most two 5-minute blocks: {}", trailing.len());
        assert!(trailing.len() >= 300, "at least one full block: {}", trailing.len());
    }

    #[test]
    fn late_spans_land_in_their_window_or_the_baseline() {
        let mut w = LatencyWindows::new(layout());
        let t0 = 1_700_000_000 * S;
        w.record(t0 + 100 * S, 1000, false);
        w.record(t0 + 95 * S, 1000, false); // same ring, earlier window
        w.record(t0 + 30 * S, 1000, false); // before the current sample, and no baseline block yet
        w.settle(t0 + 110 * S);
        assert_eq!(w.current().len(), 2);
        assert_eq!(trailing_of(&w).len(), 1, "the late span joined the baseline");
        assert_eq!(w.moments().map(|m| m.count).sum::<u64>(), 3);
        let windows: Vec<u64> = w.moments().map(|m| m.start_unix_nanos).collect();
        let mut sorted = windows.clone();
        sorted.sort_unstable();
        assert_eq!(windows, sorted, "windows stay in event-time order");
    }

    #[test]
    fn an_evaluation_reads_only_windows_that_ended_before_it() {
        let mut early = LatencyWindows::new(layout());
        let mut late = LatencyWindows::new(layout());
        let t0 = 1_700_000_000 * S;
        for i in 0..100 {
            early.record(t0 + i * S, 1000 + i, false);
            late.record(t0 + i * S, 1000 + i, false);
        }
        // Spans of the next window arrive before the evaluation in one
        // replay and after it in the other.
        for i in 100..105 {
            early.record(t0 + i * S, 9000, false);
        }
        early.settle(t0 + 100 * S);
        late.settle(t0 + 100 * S);
        assert_eq!(early.current(), late.current());
        assert_eq!(trailing_of(&early), trailing_of(&late));
        assert_eq!(early.recent_moments().count(), late.recent_moments().count());
        for i in 100..105 {
            late.record(t0 + i * S, 9000, false);
        }
        early.settle(t0 + 110 * S);
        late.settle(t0 + 110 * S);
        assert_eq!(early.current(), late.current());
        assert_eq!(early.current().len(), 55, "five 10s windows and five spans of the sixth");
    }

    #[test]
    fn idle_gaps_do_not_keep_stale_blocks() {
        let mut w = LatencyWindows::new(layout());
        let t0 = 1_700_000_000 * S;
        for i in 0..120 {
            w.record(t0 + i * S, 1000, false);
        }
        // An hour of silence, then traffic again.
        for i in 0..120 {
            w.record(t0 + 3600 * S + i * S, 2000, false);
        }
        w.settle(t0 + 3720 * S);
        let trailing = trailing_of(&w);
        assert_eq!(trailing.len(), 60, "only the recent block survives the gap");
        assert!(trailing.value_at_quantile(0.5) >= 1990);
    }
}
