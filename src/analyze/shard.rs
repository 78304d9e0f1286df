//! `ShardAnalysis`: the analysis state of every service owned by one shard.
//! It is synchronous and owns its data, so the live worker and the offline
//! scenario evaluation drive exactly the same code.

use std::collections::HashMap;
use std::sync::Arc;

use super::service::{AnalysisSettings, Recorded, ServiceState};
use crate::detect::event::EventUpdate;
use crate::extract::{SpanFact, Sym};

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
    services: HashMap<Sym, ServiceState>,
}

impl ShardAnalysis {
    pub fn new(settings: Arc<AnalysisSettings>) -> ShardAnalysis {
        ShardAnalysis { settings, services: HashMap::new() }
    }

    /// Records a batch and runs the evaluations it made due; drift updates
    /// are appended to `out`.
    pub fn observe(&mut self, facts: &[SpanFact], out: &mut Vec<EventUpdate>) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        for run in facts.chunk_by(|a, b| Arc::ptr_eq(&a.service, &b.service) || a.service == b.service) {
            let name = &run[0].service;
            if !self.services.contains_key(name) {
                if self.services.len() >= self.settings.max_services {
                    outcome.over_service_limit += run.len() as u64;
                    continue;
                }
                self.services.insert(name.clone(), ServiceState::new(name.clone(), &self.settings));
            }
            let Some(service) = self.services.get_mut(name) else { continue };
            for fact in run {
                match service.record(fact, &self.settings) {
                    Recorded::Analysed => outcome.analysed += 1,
                    Recorded::TooLate => outcome.too_late += 1,
                }
            }
            service.evaluate_due(&self.settings, out);
        }
        outcome
    }

    pub fn services(&self) -> impl Iterator<Item = &ServiceState> {
        self.services.values()
    }

    pub fn service(&self, name: &str) -> Option<&ServiceState> {
        self.services.get(name)
    }
}
