//! Generates a scenario's traffic, one second of event time at a time, as
//! the span facts the analysis consumes.

use super::scenario::{CallSpec, ChangeSpec, OperationSpec, Scenario, ServiceSpec};
use crate::extract::{SpanFact, SpanKind, SpanStatus, Sym};
use crate::rng::Rng;

/// Scenario time zero: Monday 2026-01-05 00:00:00 UTC.
pub(crate) const EPOCH_UNIX_NANOS: u64 = 1_767_571_200 * NANOS;
const NANOS: u64 = 1_000_000_000;
/// Share of requests failing during a flaky dependency's outage.
const OUTAGE_ERRORS: f64 = 0.25;

struct OperationState {
    name: Sym,
    burst_until: u64,
    /// End of the current outage of a flaky dependency.
    outage_until: u64,
    rate_factor: f64,
    /// Calls of the operation itself, then those each deploy adds.
    calls: Vec<CallState>,
}

struct CallState {
    /// First revision (index) that makes the call.
    since: usize,
    spec: CallSpec,
    peer: Sym,
    scope: Option<Sym>,
    /// For periodic calls: the second of the last one.
    last_second: Option<u64>,
}

struct ServiceTraffic<'a> {
    spec: &'a ServiceSpec,
    name: Sym,
    /// Revision names: the initial one, then one per deploy.
    revisions: Vec<Sym>,
    /// The latency changes each revision carries.
    carried: Vec<Vec<&'a ChangeSpec>>,
    /// Whose outbound calls each revision makes (see `call_lineage`).
    lineage: Vec<usize>,
    ops: Vec<OperationState>,
}

pub(crate) struct TrafficGenerator<'a> {
    scenario: &'a Scenario,
    services: Vec<ServiceTraffic<'a>>,
    rng: Rng,
    second: u64,
    client_operation: Sym,
}

impl<'a> TrafficGenerator<'a> {
    pub(crate) fn new(scenario: &'a Scenario) -> TrafficGenerator<'a> {
        let services = scenario
            .services
            .iter()
            .map(|spec| ServiceTraffic {
                spec,
                name: Sym::from(spec.name.as_str()),
                revisions: spec.revision_names().into_iter().map(Sym::from).collect(),
                carried: spec
                    .carried_changes()
                    .into_iter()
                    .map(|changes| changes.into_iter().map(|(d, c)| &spec.deploys[d].changes[c]).collect())
                    .collect(),
                lineage: spec.call_lineage(),
                ops: spec
                    .operations
                    .iter()
                    .map(|o| {
                        // (first revision index that makes the call, call, peer)
                        let own = o.calls.iter().map(|c| (0, c.clone()));
                        let added = spec.deploys.iter().enumerate().flat_map(|(i, d)| {
                            d.new_calls
                                .iter()
                                .filter(|c| c.operation == o.name)
                                .map(move |c| (i + 1, c.call()))
                        });
                        OperationState {
                            name: Sym::from(o.name.as_str()),
                            burst_until: 0,
                            outage_until: 0,
                            rate_factor: 1.0,
                            calls: own
                                .chain(added)
                                .map(|(since, spec)| CallState {
                                    since,
                                    peer: Sym::from(spec.peer.as_str()),
                                    scope: spec.scope.as_deref().map(Sym::from),
                                    spec,
                                    last_second: None,
                                })
                                .collect(),
                        }
                    })
                    .collect(),
            })
            .collect();
        TrafficGenerator {
            scenario,
            services,
            rng: Rng::new(scenario.seed),
            second: 0,
            client_operation: Sym::from("HTTP GET"),
        }
    }

    /// Seconds of event time generated so far.
    #[cfg(test)]
    pub(crate) fn elapsed_seconds(&self) -> u64 {
        self.second
    }

    /// Appends the next second of traffic to `out`, grouped by service.
    /// Returns false once the scenario's duration is over.
    pub(crate) fn next_second(&mut self, out: &mut Vec<SpanFact>) -> bool {
        if self.second >= self.scenario.duration.as_secs() {
            return false;
        }
        let t = self.second;
        let rng = &mut self.rng;
        for service in &mut self.services {
            if t < service.spec.start.as_secs() {
                continue;
            }
            for change in &service.spec.rate_changes {
                if change.at.as_secs() == t
                    && let Some(i) = service.spec.operations.iter().position(|o| o.name == change.operation)
                {
                    service.ops[i].rate_factor = change.factor;
                }
            }
            for (i, spec) in service.spec.operations.iter().enumerate() {
                let state = &mut service.ops[i];
                let rate = spec.rate * state.rate_factor * diurnal(spec.diurnal, t);
                if spec.bursts_per_hour > 0.0 && state.burst_until <= t && rng.uniform() < spec.bursts_per_hour / 3600.0 {
                    state.burst_until = t + 5 + rng.next_u64() % 16;
                }
                let in_burst = state.burst_until > t;
                // Drawn only where errors are configured, so scenarios
                // without them keep their random stream.
                if spec.error_bursts_per_hour > 0.0
                    && state.outage_until <= t
                    && rng.uniform() < spec.error_bursts_per_hour / 3600.0
                {
                    state.outage_until = t + 10 + rng.next_u64() % 51;
                }
                let outage = state.outage_until > t;
                for _ in 0..poisson(rng, rate) {
                    let offset = (rng.uniform() * NANOS as f64) as u64;
                    let start = EPOCH_UNIX_NANOS + t * NANOS + offset;
                    let deploy = revision_index(service.spec, t, offset, rng);
                    let mut ms = latency_ms(spec, rng, in_burst, t, offset);
                    for change in service.carried[deploy].iter().filter(|c| c.operation == spec.name) {
                        if rng.uniform() < change.fraction {
                            ms = ms * change.latency_factor + change.extra_ms;
                        }
                    }
                    let mut failing = if outage { spec.errors.max(OUTAGE_ERRORS) } else { spec.errors };
                    for change in service.carried[deploy].iter().filter(|c| c.operation == spec.name) {
                        failing = failing.max(change.errors);
                    }
                    let status = if failing > 0.0 && rng.uniform() < failing {
                        SpanStatus::Error
                    } else {
                        SpanStatus::Unset
                    };
                    let duration = (ms * 1e6).max(1000.0) as u64;
                    let span_id = rng.next_u64() | 1;
                    let trace_id = u128::from(rng.next_u64());
                    let lineage = service.lineage[deploy];
                    let carried = &service.carried[deploy];
                    for call in state.calls.iter_mut().filter(|c| lineage >= c.since) {
                        let due = match call.spec.every {
                            Some(every) => t.is_multiple_of(every.as_secs().max(1)) && call.last_second != Some(t),
                            None => rng.uniform() < call.spec.probability,
                        };
                        if !due {
                            continue;
                        }
                        call.last_second = Some(t);
                        let changes = || {
                            carried
                                .iter()
                                .filter(|c| c.operation == spec.name)
                                .flat_map(|c| &c.calls)
                                .filter(|c| c.peer == call.spec.peer)
                        };
                        // Drawn only where a spread or a repeat is
                        // configured, so other scenarios keep their random
                        // stream.
                        let mut times = match changes().filter_map(|c| c.times).next_back() {
                            Some(times) => times,
                            None if call.spec.times_spread > 0 => {
                                call.spec.times + (rng.next_u64() % (u64::from(call.spec.times_spread) + 1)) as u32
                            }
                            None => call.spec.times,
                        };
                        let repeat = changes().filter_map(|c| c.repeat).next_back().unwrap_or(call.spec.repeat);
                        if repeat > 0.0 && rng.uniform() < repeat {
                            times += 1;
                        }
                        let call_nanos = (duration as f64 * call.spec.share) as u64;
                        for _ in 0..times {
                            out.push(SpanFact {
                                trace_id,
                                span_id: rng.next_u64() | 1,
                                parent_span_id: span_id,
                                peer: Some(call.peer.clone()),
                                scope: call.scope.clone(),
                                non_idempotent: call.spec.non_idempotent,
                                ..SpanFact::new(
                                    service.name.clone(),
                                    service.revisions[deploy].clone(),
                                    self.client_operation.clone(),
                                    SpanKind::Client,
                                    start + (duration - call_nanos) / 2,
                                    start + (duration - call_nanos) / 2 + call_nanos,
                                )
                            });
                        }
                    }
                    out.push(SpanFact {
                        status,
                        trace_id,
                        span_id,
                        ..SpanFact::new(
                            service.name.clone(),
                            service.revisions[deploy].clone(),
                            state.name.clone(),
                            SpanKind::Server,
                            start,
                            start + duration,
                        )
                    });
                }
            }
        }
        self.second += 1;
        true
    }
}

fn diurnal(amplitude: f64, t: u64) -> f64 {
    let day = 86_400.0;
    // Quietest at 03:00, busiest at 15:00.
    1.0 + amplitude * (2.0 * std::f64::consts::PI * ((t as f64 - 9.0 * 3600.0) / day)).sin()
}

/// Poisson arrivals: Knuth's method for small means, normal otherwise.
fn poisson(rng: &mut Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean < 30.0 {
        let limit = (-mean).exp();
        let (mut k, mut p) = (0u64, 1.0);
        loop {
            p *= rng.uniform();
            if p <= limit {
                return k;
            }
            k += 1;
        }
    }
    (mean + mean.sqrt() * rng.normal()).round().max(0.0) as u64
}

/// Which revision serves a request: during a rollout, the new revision's
/// share grows linearly from 0 to 1.
fn revision_index(spec: &ServiceSpec, t: u64, offset: u64, rng: &mut Rng) -> usize {
    let now = t as f64 + offset as f64 / NANOS as f64;
    let mut current = 0;
    for (i, deploy) in spec.deploys.iter().enumerate() {
        let at = deploy.at.as_secs_f64();
        if now < at {
            break;
        }
        let progress = (now - at) / deploy.rollout.as_secs_f64().max(1e-9);
        if progress >= 1.0 || rng.uniform() < progress {
            current = i + 1;
        }
    }
    current
}

fn latency_ms(spec: &OperationSpec, rng: &mut Rng, in_burst: bool, t: u64, offset: u64) -> f64 {
    let mut ms = rng.log_normal(spec.median_ms, spec.sigma);
    if spec.outliers > 0.0 && rng.uniform() < spec.outliers {
        ms *= 5.0 + 15.0 * rng.uniform();
    }
    if in_burst && rng.uniform() < 0.3 {
        ms *= 3.0;
    }
    if let Some(every) = spec.gc_every {
        let every = every.as_secs().max(1);
        let pause_nanos = (spec.gc_pause_ms.min(1000.0) * 1e6) as u64;
        if t.is_multiple_of(every) && offset < pause_nanos {
            ms += (pause_nanos - offset) as f64 / 1e6;
        }
    }
    ms
}

/// The relative p95 rise a change causes on its own, estimated by sampling
/// the operation's latency model with and without it.
pub(crate) fn expected_p95_increase(spec: &OperationSpec, change: &ChangeSpec, seed: u64) -> f64 {
    let mut rng = Rng::new(seed);
    let n = 20_000;
    let mut before: Vec<f64> = (0..n).map(|_| rng.log_normal(spec.median_ms, spec.sigma)).collect();
    let mut after: Vec<f64> = before
        .iter()
        .map(|ms| {
            if rng.uniform() < change.fraction {
                ms * change.latency_factor + change.extra_ms
            } else {
                *ms
            }
        })
        .collect();
    let p95 = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[(v.len() as f64 * 0.95) as usize]
    };
    p95(&mut after) / p95(&mut before) - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_mean_is_right() {
        let mut rng = Rng::new(9);
        for mean in [0.3, 4.0, 55.0] {
            let n = 20_000;
            let total: u64 = (0..n).map(|_| poisson(&mut rng, mean)).sum();
            let got = total as f64 / n as f64;
            assert!((got - mean).abs() / mean < 0.03, "mean {mean}: {got}");
        }
    }

    #[test]
    fn a_thirty_percent_slowdown_raises_p95_by_thirty_percent() {
        let spec: OperationSpec = toml::from_str("name = \"x\"\nrate = 1.0\nmedian_ms = 40.0\n").expect("spec");
        let change: ChangeSpec = toml::from_str("operation = \"x\"\nlatency_factor = 1.3\n").expect("change");
        let rise = expected_p95_increase(&spec, &change, 1);
        assert!((rise - 0.3).abs() < 0.01, "{rise}");
    }
}
