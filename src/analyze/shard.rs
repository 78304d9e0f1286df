//! `ShardAnalysis`: the analysis state of every service owned by one shard.
//! It is synchronous and owns its data, so the live worker and the offline
//! scenario evaluation drive exactly the same code.

use std::collections::HashMap;
use std::sync::Arc;

use crate::fleet::baseline::FleetBaseline;
use super::service::{AnalysisSettings, Recorded, ServiceState};
use crate::detect::event::EventUpdate;
use crate::extract::{ServiceKey, SpanFact};

/// Per-batch counts, for the caller's metrics.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub analysed: u64,
    pub too_late: u64,
    /// Spans of services beyond `analyze.max_services`.
    pub over_service_limit: u64,
}

pub struct ShardAnalysis {
    settings: Arc<AnalysisSettings>,
    services: HashMap<ServiceKey, ServiceState>,
    /// Other replicas' view of each service (fleet mode), also for services
    /// this replica has not seen yet.
    fleet: HashMap<ServiceKey, Arc<FleetBaseline>>,
}

impl ShardAnalysis {
    pub fn new(settings: Arc<AnalysisSettings>) -> ShardAnalysis {
        ShardAnalysis {
            settings,
            services: HashMap::new(),
            fleet: HashMap::new(),
        }
    }

    /// Records a batch and runs the evaluations it made due; drift updates
    /// are appended to `out`.
    pub fn observe(&mut self, facts: &[SpanFact], out: &mut Vec<EventUpdate>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for run in facts.chunk_by(SpanFact::same_service) {
            let key = run[0].key();
            if !self.services.contains_key(&key) {
                if self.services.len() >= self.settings.max_services {
                    outcome.over_service_limit += run.len() as u64;
                    continue;
                }
                let mut state = ServiceState::new(key.clone(), &self.settings);
                if let Some(fleet) = self.fleet.get(&key) {
                    state.adopt_fleet(fleet.clone());
                }
                self.services.insert(key.clone(), state);
            }
            let services = self.services.len();
            let Some(service) = self.services.get_mut(&key) else {
                continue;
            };
            service.peers.set_share(services);
            for fact in run {
                match service.observe(fact, &self.settings, out) {
                    Recorded::Analysed => outcome.analysed += 1,
                    Recorded::TooLate => outcome.too_late += 1,
                }
            }
            service.peers.link_new_calls();
        }
        outcome
    }

    /// Lets event time follow the wall clock for services that have gone
    /// quiet, so their evaluations — and resolutions — still happen live.
    /// Replays never call this, so they stay deterministic.
    pub(crate) fn tick(&mut self, elapsed: std::time::Duration, out: &mut Vec<EventUpdate>) {
        let elapsed = crate::clock::nanos(elapsed);
        for service in self.services.values_mut() {
            if service.idle_tick(elapsed) {
                service.evaluate_due(&self.settings, out);
            }
        }
    }

    /// Snapshots of every service (see `snapshot`), each made when the
    /// iteration reaches it, so a flush holds one service's at a time.
    pub(crate) fn snapshots(&self, retention_nanos: u64) -> impl Iterator<Item = super::snapshot::ServiceSnapshot> + '_ {
        self.services.values().map(move |s| s.snapshot(retention_nanos))
    }

    /// Adds a service restored from a snapshot.
    pub(crate) fn restore(&mut self, snapshot: &super::snapshot::ServiceSnapshot) {
        let mut state = ServiceState::restore(snapshot, &self.settings);
        if let Some(fleet) = self.fleet.get(&state.key) {
            state.adopt_fleet(fleet.clone());
        }
        self.services.insert(state.key.clone(), state);
    }

    /// Replaces the other replicas' view of the shard's services.
    pub(crate) fn adopt_fleet(&mut self, baselines: Vec<Arc<FleetBaseline>>) {
        for fleet in baselines {
            if let Some(state) = self.services.get_mut(&fleet.key) {
                state.adopt_fleet(fleet.clone());
            }
            self.fleet.insert(fleet.key.clone(), fleet);
        }
    }

    /// What this replica and, in fleet mode, the others saw of `service`'s
    /// revisions: this replica's revisions (with the others' samples
    /// added), then revisions only other replicas served.
    ///
    /// Without an environment: the service's spans that name none, or, if
    /// all of them name one and it is the same, that environment's.
    pub(crate) fn coverage(&self, service: &str, environment: Option<&str>) -> Option<crate::coverage::ServiceCoverage> {
        let key = match environment {
            Some(environment) => ServiceKey::new(service, Some(environment)),
            None => self.only_environment(service)?,
        };
        let local = self.services.get(&key).map(ServiceState::coverage);
        let fleet = self.fleet.get(&key).map(|f| f.coverage());
        match (local, fleet) {
            (Some(mut local), Some(fleet)) => {
                for revision in fleet.revisions {
                    if !local.revisions.iter().any(|r| r.revision == revision.revision) {
                        local.revisions.push(revision);
                    }
                }
                local.revisions.sort_by_key(|r| r.first_seen_unix_nanos);
                Some(local)
            }
            (local, fleet) => local.or(fleet),
        }
    }

    /// The key a question about `service` without an environment means
    /// (see `coverage`).
    fn only_environment(&self, service: &str) -> Option<ServiceKey> {
        let plain = ServiceKey::new(service, None);
        if self.services.contains_key(&plain) || self.fleet.contains_key(&plain) {
            return Some(plain);
        }
        let mut keys = self.services.keys().chain(self.fleet.keys()).filter(|k| &*k.service == service);
        let first = keys.next()?.clone();
        keys.all(|k| *k == first).then_some(first)
    }

    pub(crate) fn services(&self) -> impl Iterator<Item = &ServiceState> {
        self.services.values()
    }

    pub(crate) fn service(&self, key: &ServiceKey) -> Option<&ServiceState> {
        self.services.get(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::event::{EventKind, EventLog, EventState};
    use crate::tools::eval::scenario::Scenario;
    use crate::tools::eval::traffic::{EPOCH_UNIX_NANOS, TrafficGenerator};

    fn replay(scenario_toml: &str) -> EventLog {
        let scenario: Scenario = toml::from_str(scenario_toml).expect("scenario");
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let mut analysis = ShardAnalysis::new(settings);
        let mut generator = TrafficGenerator::new(&scenario);
        let (mut facts, mut updates, mut log) = (Vec::new(), Vec::new(), EventLog::new(1000));
        while generator.next_second(&mut facts) {
            analysis.observe(&facts, &mut updates);
            facts.clear();
            for update in updates.drain(..) {
                log.apply(update);
            }
        }
        log
    }

    const SERVICE: &str = r#"
        name = "t"
        duration = "90m"
        [[services]]
        name = "checkout"
        [[services.operations]]
        name = "POST /checkout"
        rate = 25.0
        median_ms = 40.0
        [[services.operations]]
        name = "GET /cart"
        rate = 25.0
        median_ms = 10.0
    "#;

    #[test]
    fn a_deploy_that_slows_an_endpoint_fires_then_a_rollback_resolves_it() {
        let log = replay(&format!(
            r#"{SERVICE}
            [[services.deploys]]
            at = "40m"
            revision = "slow"
            [[services.deploys.changes]]
            operation = "POST /checkout"
            latency_factor = 1.5
            [[services.deploys]]
            at = "60m"
            revision = "fixed"
            [[services.deploys.changes]]
            operation = "POST /checkout"
            latency_factor = 0.6667
            "#
        ));
        let events = log.list();
        assert_eq!(events.len(), 1, "{events:#?}");
        let event = &events[0];
        assert_eq!(event.kind, EventKind::LatencyRegression);
        assert_eq!(event.operation.as_deref(), Some("POST /checkout"));
        assert_eq!(event.revision, "slow");
        assert_eq!(event.baseline_revision.as_deref(), Some("rev-1"));
        assert_eq!(event.state, EventState::Resolved, "the fixed revision replaced it");
        let deploy = EPOCH_UNIX_NANOS + 40 * 60 * 1_000_000_000;
        assert!(
            event.onset.unix_nanos() >= deploy && event.onset.unix_nanos() < deploy + 30_000_000_000,
            "onset at the deploy"
        );
        assert!(event.detected_at.unix_nanos() - deploy <= 90_000_000_000);
    }

    #[test]
    fn a_deploy_that_changes_nothing_stays_quiet() {
        let log = replay(&format!(
            r#"{SERVICE}
            [[services.deploys]]
            at = "40m"
            revision = "same"
            "#
        ));
        assert!(log.list().is_empty(), "{:#?}", log.list());
    }

    #[test]
    fn a_slowdown_without_deploy_is_compared_with_the_trailing_window() {
        let scenario: Scenario = toml::from_str(SERVICE).expect("scenario");
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let mut analysis = ShardAnalysis::new(settings);
        let mut generator = TrafficGenerator::new(&scenario);
        let (mut facts, mut updates) = (Vec::new(), Vec::new());
        let mut log = EventLog::new(100);
        while generator.next_second(&mut facts) {
            // A dependency slows every checkout by 60 ms after 50 minutes.
            if generator.elapsed_seconds() > 50 * 60 {
                for fact in facts.iter_mut().filter(|f| &*f.operation == "POST /checkout") {
                    fact.end_unix_nanos += 60_000_000;
                }
            }
            analysis.observe(&facts, &mut updates);
            facts.clear();
            for update in updates.drain(..) {
                log.apply(update);
            }
        }
        let events = log.list();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!(events[0].baseline_revision, None);
        assert!(events[0].attribution.as_deref().is_some_and(|a| a.contains("no deploy")));
        let change = EPOCH_UNIX_NANOS + 50 * 60 * 1_000_000_000;
        let onset_error = events[0].onset.unix_nanos().abs_diff(change);
        assert!(
            onset_error <= 20_000_000_000,
            "onset estimated within 20 s of the change: {onset_error}"
        );
    }

    #[test]
    fn spans_too_late_are_counted_not_analysed() {
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let mut analysis = ShardAnalysis::new(settings);
        let scenario: Scenario = toml::from_str(SERVICE).expect("scenario");
        let mut generator = TrafficGenerator::new(&scenario);
        let mut facts = Vec::new();
        generator.next_second(&mut facts);
        let mut late = facts[0].clone();
        let now = facts.iter().map(|f| f.end_unix_nanos).max().unwrap_or(0);
        let mut fresh = late.clone();
        fresh.end_unix_nanos = now + 600_000_000_000;
        late.end_unix_nanos = now;
        late.start_unix_nanos = now - 1_000_000;
        let outcome = analysis.observe(&[fresh, late], &mut Vec::new());
        assert_eq!(
            outcome,
            BatchOutcome {
                analysed: 1,
                too_late: 1,
                over_service_limit: 0
            }
        );
    }

    #[test]
    fn a_services_environments_are_analysed_and_covered_apart() {
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let mut analysis = ShardAnalysis::new(settings);
        let scenario: Scenario = toml::from_str(SERVICE).expect("scenario");
        let mut generator = TrafficGenerator::new(&scenario);
        let mut facts = Vec::new();
        generator.next_second(&mut facts);
        let service = facts[0].service.clone();
        let in_environment = |environment: Option<&str>| -> Vec<SpanFact> {
            let mut facts = facts.clone();
            for fact in &mut facts {
                fact.environment = environment.map(crate::extract::Sym::from);
            }
            facts
        };
        analysis.observe(&in_environment(Some("production")), &mut Vec::new());
        let only = analysis.coverage(&service, None).expect("the only environment answers for the service");
        assert_eq!(only.environment.as_deref(), Some("production"));

        let mut both = in_environment(Some("staging"));
        both.extend(in_environment(Some("production")));
        analysis.observe(&both, &mut Vec::new());
        assert_eq!(analysis.services().count(), 2, "one state per environment");
        for environment in ["production", "staging"] {
            let coverage = analysis.coverage(&service, Some(environment)).expect("covered");
            assert_eq!(coverage.environment.as_deref(), Some(environment));
            let samples: u64 = coverage.revisions.iter().flat_map(|r| &r.operations).map(|o| o.samples).sum();
            let sent = facts.iter().filter(|f| !f.kind.is_outbound()).count() as u64;
            let expected = if environment == "production" { 2 * sent } else { sent };
            assert_eq!(samples, expected, "{environment} counts its own spans only");
        }
        assert!(analysis.coverage(&service, None).is_none(), "two environments: the question must name one");

        analysis.observe(&in_environment(None), &mut Vec::new());
        let plain = analysis.coverage(&service, None).expect("spans without an environment");
        assert_eq!(plain.environment, None);
        let snapshots: Vec<_> = analysis.snapshots(u64::MAX).collect();
        let mut keys: Vec<String> = snapshots.iter().map(|s| s.store_key()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [service.to_string(), format!("{service}\u{1f}production"), format!("{service}\u{1f}staging")],
            "stored apart; a service without an environment keeps its old key"
        );
        let mut restored = ShardAnalysis::new(Arc::new(AnalysisSettings::from_config(&crate::config::Config::default())));
        for snapshot in &snapshots {
            restored.restore(snapshot);
        }
        for environment in [Some("production"), Some("staging"), None] {
            let key = ServiceKey::new(&service, environment);
            assert!(restored.service(&key).is_some(), "{key} restored");
        }
    }

    /// Replays a corpus scenario, cutting its spans into batches with
    /// `rebatch`, and returns every event as the API serialises it.
    fn replay_batched(name: &str, rebatch: impl Fn(Vec<SpanFact>) -> Vec<Vec<SpanFact>>) -> Vec<serde_json::Value> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/scenarios")
            .join(name);
        let scenario = Scenario::load(&path).expect("scenario");
        let settings = Arc::new(AnalysisSettings::from_config(&crate::config::Config::default()));
        let mut analysis = ShardAnalysis::new(settings);
        let mut generator = TrafficGenerator::new(&scenario);
        let (mut second, mut pending, mut updates) = (Vec::new(), Vec::new(), Vec::new());
        let mut log = EventLog::new(usize::MAX);
        let mut more = true;
        while more {
            more = generator.next_second(&mut second);
            pending.append(&mut second);
            // Batches of up to seven seconds of traffic.
            if pending.len() < 7 * 200 && more {
                continue;
            }
            for batch in rebatch(std::mem::take(&mut pending)) {
                analysis.observe(&batch, &mut updates);
                for update in updates.drain(..) {
                    log.apply(update);
                }
            }
        }
        log.list().iter().map(|e| serde_json::to_value(&**e).expect("json")).collect()
    }

    #[test]
    fn the_same_spans_give_the_same_events_however_they_are_batched() {
        for scenario in [
            "lifecycle-fix-deploy.toml",
            "outbound-new-peers.toml",
            "lifecycle-carried-across-deploy.toml",
        ] {
            let as_generated = replay_batched(scenario, |spans| vec![spans]);
            assert!(!as_generated.is_empty(), "{scenario}: the scenario has events");
            // Small batches, each in reverse order: spans arrive out of
            // order, within the evaluation delay.
            let shuffled = replay_batched(scenario, |spans| {
                spans.chunks(37).map(|c| c.iter().rev().cloned().collect()).collect()
            });
            assert_eq!(as_generated, shuffled, "{scenario}: reordered small batches");
            // One span at a time.
            let single = replay_batched(scenario, |spans| spans.into_iter().map(|s| vec![s]).collect());
            assert_eq!(as_generated, single, "{scenario}: one span per batch");
        }
    }
}
