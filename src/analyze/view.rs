//! `ServiceView`: the read-only view of one service that the detectors
//! evaluate, and the per-operation facts it carries.
//!
//! It sits below both the detectors and `ServiceState`, so that the
//! detectors read a service's state without importing the state that owns
//! them: `ServiceState` lends this view at each evaluation.

use std::collections::HashMap;

use crate::fleet::baseline::FleetBaseline;
use super::operations::{OpId, OperationTable};
use super::timeline::{RevId, RevisionEntry, RevisionTimeline};
use super::window::LatencyWindows;
use crate::detect::event::CodeHint;
use crate::extract::{CodeLocation, ServiceKey, Sym};

/// What the latest spans of an operation say about where they come from.
#[derive(Debug, Clone, Default)]
pub(crate) struct OperationInfo {
    pub code: Option<CodeLocation>,
    pub route: Option<Sym>,
    /// Where the latest failing span's exception was raised (else that
    /// span's own `code.*`).
    pub error_code: Option<CodeLocation>,
}

/// Error types kept per operation and revision; more distinct types are
/// only counted.
const MAX_ERROR_TYPES: usize = 16;
/// How often an operation of one revision failed with each error type,
/// bounded to the first `MAX_ERROR_TYPES` types.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorTypes {
    counts: Vec<(Sym, u64)>,
    /// Failures of types beyond the bound.
    pub untracked: u64,
}

impl ErrorTypes {
    pub(crate) fn add(&mut self, error_type: &Sym) {
        if let Some((_, count)) = self.counts.iter_mut().find(|(t, _)| t == error_type) {
            *count += 1;
        } else if self.counts.len() < MAX_ERROR_TYPES {
            self.counts.push((error_type.clone(), 1));
        } else {
            self.untracked += 1;
        }
    }

    pub(crate) fn contains(&self, error_type: &str) -> bool {
        self.counts.iter().any(|(t, _)| &**t == error_type)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Sym, u64)> {
        self.counts.iter().map(|(t, c)| (t, *c))
    }
}

/// A read-only view of a service for the detectors.
pub(crate) struct ServiceView<'a> {
    pub key: &'a ServiceKey,
    pub operations: &'a OperationTable,
    pub timeline: &'a RevisionTimeline,
    pub latency: &'a HashMap<(OpId, RevId), LatencyWindows>,
    pub op_info: &'a HashMap<OpId, OperationInfo>,
    pub error_types: &'a HashMap<(OpId, RevId), ErrorTypes>,
    pub fleet: Option<&'a FleetBaseline>,
}

impl<'a> ServiceView<'a> {
    /// The most recent revision before `revision` that served `op` with at
    /// least `min_samples` spans (here and, in fleet mode, elsewhere) and
    /// that `regressed` does not rule out: a detector's last good revision.
    pub(crate) fn last_good(
        &self,
        op: OpId,
        revision: RevId,
        min_samples: u64,
        regressed: impl Fn(RevId) -> bool,
    ) -> Option<&'a RevisionEntry> {
        self.timeline
            .before(revision)
            .find(|b| !regressed(b.id) && self.history(op, b).map(|s| s.total()).sum::<u64>() >= min_samples)
    }

    /// Where the spans of `op` come from, as events report it.
    pub(crate) fn code_hint(&self, op: OpId) -> CodeHint {
        self.op_info
            .get(&op)
            .map(|info| hint(info.code.as_ref(), info))
            .unwrap_or_default()
    }

    /// Where the failing spans of `op` fail: their exceptions' raise site
    /// (or their own `code.*`), else where the operation's spans come from.
    pub(crate) fn error_code_hint(&self, op: OpId) -> CodeHint {
        self.op_info
            .get(&op)
            .map(|info| hint(info.error_code.as_ref().or(info.code.as_ref()), info))
            .unwrap_or_default()
    }

    /// The latency history of `op` under `revision`: this replica's and, in
    /// fleet mode, the other replicas'.
    pub(crate) fn history(&self, op: OpId, revision: &RevisionEntry) -> impl Iterator<Item = &LatencyWindows> {
        let local = self.latency.get(&(op, revision.id));
        let fleet = self
            .fleet
            .zip(self.operations.name(op))
            .and_then(|(fleet, name)| fleet.series(name, &revision.revision));
        local.into_iter().chain(fleet)
    }
}

/// Where spans come from, as events report it: `code`, and the route of
/// the operation `info` describes.
pub(crate) fn hint(code: Option<&CodeLocation>, info: &OperationInfo) -> CodeHint {
    CodeHint {
        function: code.and_then(|c| c.function.as_deref().map(str::to_owned)),
        filepath: code.and_then(|c| c.filepath.as_deref().map(str::to_owned)),
        lineno: code.and_then(|c| c.lineno),
        route: info.route.as_deref().map(str::to_owned),
    }
}
