//! The rollout verdict: may revision R of a service take more traffic?
//!
//! A gate asks while a rollout runs, so the answer must never be "pass"
//! merely because too little was seen. The rules, in order:
//!
//! 1. **fail** when an event of the service fires in R (introduced by R, or
//!    carried into R and listed in its `seen_in`) whose kind is one of the
//!    failing kinds (all by default) and whose severity is at least the
//!    failing severity (`warning` by default, so every drift fails; with
//!    `severity=critical` only critical ones do).
//! 2. **inconclusive** while R has served nothing, or while any operation R
//!    serves is not yet judged. An operation is judged once R has served it
//!    `min_samples` times (the detector's, or the gate's when higher) and,
//!    when an earlier revision served it with enough samples to compare, the
//!    latency detector has compared R with that baseline in `consecutive`
//!    evaluations in a row and found no regression: the same evaluations
//!    that would have fired an event had R regressed. An operation new in
//!    R, or whose baseline is too small to compare, is judged on its samples
//!    alone, and the reasons say so. `missing_samples` adds up what the
//!    operations still lack.
//! 3. **pass** otherwise.
//!
//! New outbound peers fire on first sight, so rule 1 covers them as soon as
//! R makes the call.

use serde::{Deserialize, Serialize};

use crate::coverage::{OperationCoverage, RevisionCoverage, ServiceCoverage};
use crate::detect::event::{DriftEvent, EventKind, EventState, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// What the detectors require, from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub min_samples: u64,
    pub consecutive: u32,
}

impl Rules {
    pub(crate) fn from_config(config: &crate::config::Config) -> Rules {
        Rules {
            min_samples: config.detect.latency.min_samples,
            consecutive: config.detect.latency.consecutive.max(1),
        }
    }
}

/// One question.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub service: String,
    /// `deployment.environment.name`. Without it, drifts of every
    /// environment count, and the traffic judged is the service's that
    /// names no environment, or its only one.
    pub environment: Option<String>,
    /// Full or abbreviated SHA, or the name the spans carry.
    pub revision: String,
    /// Samples per operation the caller requires, when above the detector's.
    pub min_samples: Option<u64>,
    /// The kinds that fail a revision; all when `None`.
    pub kinds: Option<Vec<EventKind>>,
    /// The least severity that fails a revision.
    pub severity: Severity,
}

/// The answer, as `GET /api/v1/verdict` serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub verdict: Outcome,
    pub service: String,
    /// The environment judged: the request's, or the only one the
    /// service's spans name.
    #[serde(default)]
    pub environment: Option<String>,
    pub revision: String,
    /// The revision as the spans name it, when traffic of it was seen.
    pub seen_as: Option<String>,
    pub reasons: Vec<String>,
    /// Samples the operations still lack before they can be judged.
    pub missing_samples: u64,
    pub operations: Vec<OperationVerdict>,
    /// Events firing in this revision, with their suspects.
    pub events: Vec<DriftEvent>,
}

/// One operation of the revision against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationVerdict {
    pub operation: String,
    pub samples: u64,
    pub samples_needed: u64,
    pub baseline_revision: Option<String>,
    pub baseline_samples: u64,
    pub clean_evaluations: u32,
    /// 0 when the operation is judged on its samples alone.
    pub evaluations_needed: u32,
    pub judged: bool,
}

/// Whether `asked` names the revision `known`: equal, or one an
/// abbreviation of the other (at least 7 characters, case-insensitive).
pub(crate) fn revision_matches(asked: &str, known: &str) -> bool {
    if asked.is_empty() {
        return false;
    }
    if asked == known {
        return true;
    }
    let (short, long) = if asked.len() <= known.len() {
        (asked, known)
    } else {
        (known, asked)
    };
    short.len() >= 7
        && long
            .get(..short.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(short))
}

fn fails(event: &DriftEvent, request: &Request) -> bool {
    event.severity >= request.severity && request.kinds.as_ref().is_none_or(|kinds| kinds.contains(&event.kind))
}

fn describe(event: &DriftEvent) -> String {
    let subject = event.operation.as_deref().or(event.peer.as_deref()).unwrap_or("the service");
    let severity = event.severity.as_str();
    let first = event
        .suspects
        .first()
        .map(|s| {
            let commit: String = s.commit.chars().take(12).collect();
            format!("; top suspect {commit} \"{}\"", s.summary)
        })
        .unwrap_or_default();
    format!(
        "{} of {subject} is firing ({severity}, event {}){first}",
        event.kind.as_str(),
        event.id
    )
}

/// Decides, from what the analysis saw of the service and the events.
pub(crate) fn decide<'a>(
    request: &Request,
    rules: &Rules,
    coverage: Option<&ServiceCoverage>,
    events: impl IntoIterator<Item = &'a DriftEvent>,
) -> Verdict {
    let in_revision = |e: &&DriftEvent| {
        e.service == request.service
            && request.environment.as_ref().is_none_or(|env| e.environment.as_ref() == Some(env))
            && e.state == EventState::Firing
            && (revision_matches(&request.revision, &e.revision)
                || e.seen_in.iter().any(|r| revision_matches(&request.revision, r)))
    };
    let firing: Vec<DriftEvent> = events.into_iter().filter(in_revision).cloned().collect();
    let revision: Option<&RevisionCoverage> = coverage.and_then(|c| {
        c.revisions
            .iter()
            .find(|r| r.revision == request.revision)
            .or_else(|| c.revisions.iter().find(|r| revision_matches(&request.revision, &r.revision)))
    });
    let needed = rules.min_samples.max(request.min_samples.unwrap_or(0)).max(1);
    let operations: Vec<OperationVerdict> = revision
        .map(|r| r.operations.iter().map(|op| judge(op, needed, rules)).collect())
        .unwrap_or_default();
    let missing_samples = match revision {
        None => needed,
        Some(_) => operations.iter().map(|o| o.samples_needed.saturating_sub(o.samples)).sum(),
    };
    let mut reasons = Vec::new();
    let failing: Vec<&DriftEvent> = firing.iter().filter(|e| fails(e, request)).collect();
    let verdict = if !failing.is_empty() {
        reasons.extend(failing.iter().map(|e| describe(e)));
        Outcome::Fail
    } else if revision.is_none() || operations.is_empty() {
        let service = match &request.environment {
            Some(environment) => format!("{} in {environment}", request.service),
            None => request.service.clone(),
        };
        reasons.push(if request.revision.is_empty() {
            format!("no traffic of {service} seen yet: {needed} samples needed per operation")
        } else {
            format!(
                "no traffic of revision {} of {service} seen yet: {needed} samples needed per operation",
                request.revision
            )
        });
        Outcome::Inconclusive
    } else {
        for op in &operations {
            reasons.push(explain(op));
        }
        if operations.iter().all(|o| o.judged) {
            Outcome::Pass
        } else {
            Outcome::Inconclusive
        }
    };
    for event in firing.iter().filter(|e| !fails(e, request)) {
        reasons.push(format!("{} (below the failing kinds or severity)", describe(event)));
    }
    Verdict {
        verdict,
        service: request.service.clone(),
        environment: request
            .environment
            .clone()
            .or_else(|| coverage.and_then(|c| c.environment.clone())),
        revision: request.revision.clone(),
        seen_as: revision.map(|r| r.revision.clone()),
        reasons,
        missing_samples,
        operations,
        events: firing,
    }
}

fn judge(op: &OperationCoverage, needed: u64, rules: &Rules) -> OperationVerdict {
    let comparable = op.baseline_revision.is_some() && op.baseline_samples >= rules.min_samples;
    let evaluations_needed = if comparable { rules.consecutive } else { 0 };
    let judged = op.samples >= needed && op.clean_evaluations >= evaluations_needed;
    OperationVerdict {
        operation: op.operation.clone(),
        samples: op.samples,
        samples_needed: needed,
        baseline_revision: op.baseline_revision.clone(),
        baseline_samples: op.baseline_samples,
        clean_evaluations: op.clean_evaluations,
        evaluations_needed,
        judged,
    }
}

fn explain(op: &OperationVerdict) -> String {
    let name = &op.operation;
    if op.samples < op.samples_needed {
        return format!("{name}: {} of {} samples", op.samples, op.samples_needed);
    }
    match &op.baseline_revision {
        None => format!(
            "{name}: new in this revision, {} samples; nothing to compare with",
            op.samples
        ),
        Some(baseline) if op.evaluations_needed == 0 => format!(
            "{name}: {} samples; the baseline {baseline} has only {} samples, too few to compare",
            op.samples, op.baseline_samples
        ),
        Some(baseline) if !op.judged => format!(
            "{name}: {} of {} clean evaluations against {baseline}",
            op.clean_evaluations, op.evaluations_needed
        ),
        Some(baseline) => format!(
            "{name}: no regression against {baseline} in {} evaluations ({} samples vs {})",
            op.clean_evaluations, op.samples, op.baseline_samples
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coverage(samples: u64, clean: u32) -> ServiceCoverage {
        ServiceCoverage {
            service: "checkout".into(),
            environment: None,
            revisions: vec![RevisionCoverage {
                revision: "1a2b3c4".into(),
                first_seen_unix_nanos: 1,
                last_seen_unix_nanos: 2,
                operations: vec![OperationCoverage {
                    operation: "POST /checkout".into(),
                    samples,
                    baseline_revision: Some("0f0f0f0".into()),
                    baseline_samples: 5000,
                    clean_evaluations: clean,
                }],
            }],
        }
    }

    fn request(revision: &str) -> Request {
        Request {
            service: "checkout".into(),
            environment: None,
            revision: revision.into(),
            min_samples: None,
            kinds: None,
            severity: Severity::Warning,
        }
    }

    const RULES: Rules = Rules {
        min_samples: 200,
        consecutive: 3,
    };

    #[test]
    fn too_few_samples_or_evaluations_is_inconclusive_and_says_how_many_are_missing() {
        let full = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d";
        let v = decide(&request(full), &RULES, None, &[]);
        assert_eq!((v.verdict, v.missing_samples), (Outcome::Inconclusive, 200));
        let v = decide(&request(full), &RULES, Some(&coverage(120, 0)), &[]);
        assert_eq!((v.verdict, v.missing_samples), (Outcome::Inconclusive, 80));
        assert_eq!(v.seen_as.as_deref(), Some("1a2b3c4"));
        assert!(v.reasons[0].contains("120 of 200 samples"), "{:?}", v.reasons);
        let v = decide(&request(full), &RULES, Some(&coverage(400, 2)), &[]);
        assert_eq!((v.verdict, v.missing_samples), (Outcome::Inconclusive, 0));
        assert!(v.reasons[0].contains("2 of 3 clean evaluations"), "{:?}", v.reasons);
        let v = decide(&request(full), &RULES, Some(&coverage(400, 3)), &[]);
        assert_eq!(v.verdict, Outcome::Pass);
        let mut gate = request(full);
        gate.min_samples = Some(1000);
        assert_eq!(decide(&gate, &RULES, Some(&coverage(400, 3)), &[]).missing_samples, 600);
    }

    #[test]
    fn a_firing_event_in_the_revision_fails_it_unless_filtered_out() {
        let mut event = crate::detect::event::example_event("e1", 1);
        event.service = "checkout".into();
        event.state = EventState::Firing;
        event.revision = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d".into();
        event.severity = Severity::Warning;
        let v = decide(
            &request("1a2b3c4"),
            &RULES,
            Some(&coverage(10, 0)),
            std::slice::from_ref(&event),
        );
        assert_eq!(v.verdict, Outcome::Fail);
        assert_eq!(v.events.len(), 1);
        let mut critical_only = request("1a2b3c4");
        critical_only.severity = Severity::Critical;
        assert_eq!(
            decide(&critical_only, &RULES, Some(&coverage(400, 3)), std::slice::from_ref(&event)).verdict,
            Outcome::Pass
        );
        // Carried into a later revision: that one fails too.
        event.seen_in = vec!["9999999aaaa".into()];
        assert_eq!(
            decide(&request("9999999"), &RULES, None, std::slice::from_ref(&event)).verdict,
            Outcome::Fail
        );
        assert!(!revision_matches("1a2b3c", "1a2b3c4"), "too short to be an abbreviation");
    }

    #[test]
    fn an_info_event_fails_a_revision_only_when_asked_for() {
        let mut event = crate::detect::event::example_event("e1", 1);
        event.service = "checkout".into();
        event.state = EventState::Firing;
        event.revision = "1a2b3c4d5e6f7a8b9c0d1a2b3c4d5e6f7a8b9c0d".into();
        event.severity = Severity::Info;
        let events = std::slice::from_ref(&event);
        assert_eq!(decide(&request("1a2b3c4"), &RULES, Some(&coverage(400, 3)), events).verdict, Outcome::Pass);
        let mut with_info = request("1a2b3c4");
        with_info.severity = Severity::Info;
        assert_eq!(decide(&with_info, &RULES, Some(&coverage(400, 3)), events).verdict, Outcome::Fail);
    }
}
