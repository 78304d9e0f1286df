//! `driftwatch compare`: the pre-merge check. Two recordings of the same
//! load test, one of the base and one of the head of a pull request, go
//! through the same extraction, detectors and attribution as live traffic,
//! in event time, and the report says whether the head drifted, which of
//! the pull request's commits are the suspects, and which of them AI wrote.
//!
//! A recording is what the OpenTelemetry Collector's file exporter writes:
//! one OTLP/JSON `ExportTraceServiceRequest` per line, optionally gzip
//! compressed as a whole. The base's spans are labelled with the base
//! revision and the head's with the head revision (the two ends of
//! `--range`, or `base` and `head`), whatever revision attributes they
//! carry. The head is moved in time to start just after the base ends, so
//! the detectors see one deploy: base, then head.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::analyze::service::AnalysisSettings;
use crate::analyze::shard::ShardAnalysis;
use crate::attribute::Attributor;
use crate::attribute::classify::Classifier;
use crate::config::GitRepoConfig;
use crate::detect::event::{DriftEvent, EventLog, EventState};
use crate::extract::{Extractor, SpanFact, Sym};

/// Largest recording read, decompressed.
const MAX_RECORDING_BYTES: u64 = 4 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is larger than {MAX_RECORDING_BYTES} bytes decompressed")]
    TooLarge { path: PathBuf },
    #[error("{path}:{line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
    #[error("{path} holds no spans")]
    Empty { path: PathBuf },
    #[error("--range {0:?} is not of the form BASE..HEAD")]
    Range(String),
    #[error("attribution failed: {0}")]
    Attribution(String),
}

/// What to compare.
pub struct CompareOptions {
    pub base: PathBuf,
    pub head: PathBuf,
    /// The repository and `BASE..HEAD` of the pull request, for suspects.
    pub repo: Option<PathBuf>,
    pub range: Option<String>,
    pub subdir: Option<String>,
    pub settings: AnalysisSettings,
    pub classifier: Classifier,
}

/// One recording, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct Recording {
    pub path: String,
    /// The revision its spans were labelled with.
    pub revision: String,
    pub requests: usize,
    pub spans: usize,
    pub services: Vec<String>,
    pub seconds: f64,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub drifted: bool,
    pub base: Recording,
    pub head: Recording,
    /// Drifts of the head against the base, with suspects.
    pub events: Vec<DriftEvent>,
    pub notes: Vec<String>,
}

/// Spans of one recording.
struct Loaded {
    facts: Vec<SpanFact>,
    summary: Recording,
}

fn load(path: &Path, revision: &str) -> Result<Loaded, CompareError> {
    let read_error = |source| CompareError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut raw = Vec::new();
    file.take(MAX_RECORDING_BYTES + 1).read_to_end(&mut raw).map_err(read_error)?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .take(MAX_RECORDING_BYTES + 1)
            .read_to_end(&mut out)
            .map_err(read_error)?;
        out
    } else {
        raw
    };
    if bytes.len() as u64 > MAX_RECORDING_BYTES {
        return Err(CompareError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    // Offline, nothing is "from the future": every timestamp is accepted.
    let extractor = Extractor::new(std::time::Duration::from_secs(0), 1 << 20);
    let label = Sym::from(revision);
    let mut facts = Vec::new();
    let mut requests = 0;
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_error = |message: String| CompareError::Line {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let body = crate::receive::http::json_to_protobuf(line).map_err(|e| line_error(e.to_string()))?;
        let request = crate::receive::view::RequestView::parse(&body).map_err(|e| line_error(e.to_string()))?;
        let before = facts.len();
        extractor
            .extract(&request, u64::MAX / 2, &mut facts)
            .map_err(|e| line_error(e.to_string()))?;
        for fact in &mut facts[before..] {
            fact.revision = label.clone();
        }
        requests += 1;
    }
    if facts.is_empty() {
        return Err(CompareError::Empty {
            path: path.to_path_buf(),
        });
    }
    facts.sort_by_key(|f| f.end_unix_nanos);
    let first = facts.iter().map(|f| f.start_unix_nanos).min().unwrap_or(0);
    let last = facts.iter().map(|f| f.end_unix_nanos).max().unwrap_or(0);
    let mut services: Vec<String> = facts.iter().map(|f| f.service.to_string()).collect();
    services.sort();
    services.dedup();
    let summary = Recording {
        path: path.display().to_string(),
        revision: revision.to_owned(),
        requests,
        spans: facts.len(),
        services,
        seconds: last.saturating_sub(first) as f64 / 1e9,
    };
    Ok(Loaded { facts, summary })
}

/// Runs the comparison.
pub fn run(options: CompareOptions) -> Result<Report, CompareError> {
    let (base_name, head_name) = match &options.range {
        Some(range) => match range.split_once("..") {
            Some((base, head)) if !base.is_empty() && !head.is_empty() => (base.to_owned(), head.to_owned()),
            _ => return Err(CompareError::Range(range.clone())),
        },
        None => ("base".to_owned(), "head".to_owned()),
    };
    let mut base = load(&options.base, &base_name)?;
    let mut head = load(&options.head, &head_name)?;

    // The head starts one evaluation interval after the base ends.
    let base_end = base.facts.iter().map(|f| f.end_unix_nanos).max().unwrap_or(0);
    let head_start = head.facts.iter().map(|f| f.start_unix_nanos).min().unwrap_or(0);
    let gap = crate::clock::nanos(options.settings.latency.evaluation_interval);
    let target = base_end.saturating_add(gap);
    for fact in &mut head.facts {
        fact.start_unix_nanos = fact.start_unix_nanos - head_start + target;
        fact.end_unix_nanos = fact.end_unix_nanos - head_start + target;
    }

    let mut analysis = ShardAnalysis::new(Arc::new(options.settings.clone()));
    let mut log = EventLog::new(usize::MAX);
    let mut updates = Vec::new();
    for chunk in base.facts.chunks(1024).chain(head.facts.chunks(1024)) {
        analysis.observe(chunk, &mut updates);
        for update in updates.drain(..) {
            log.apply(update);
        }
    }
    // Let event time run past the last span, so its evaluations happen.
    for _ in 0..16 {
        analysis.tick(std::time::Duration::from_secs(5), &mut updates);
        for update in updates.drain(..) {
            log.apply(update);
        }
    }

    let mut notes = Vec::new();
    let in_base = log.list().iter().filter(|e| e.revision == base_name).count();
    if in_base > 0 {
        notes.push(format!(
            "{in_base} drift(s) within the base recording itself (the base is not steady); they are not counted against the head"
        ));
    }
    let mut events: Vec<DriftEvent> = log.list().iter().filter(|e| e.revision == head_name).map(|e| (**e).clone()).collect();
    for event in &mut events {
        // The report speaks of the comparison, not of a live incident.
        event.state = EventState::Firing;
        event.resolved_at = None;
        event.resolution = None;
    }
    match &options.repo {
        Some(repo) => {
            let attributor = Attributor::new(
                &[GitRepoConfig {
                    service: "*".into(),
                    path: repo.clone(),
                    subdir: options.subdir.clone(),
                    ..Default::default()
                }],
                options.classifier,
            );
            for event in &mut events {
                let attribution = attributor
                    .attribute(event)
                    .map_err(|e| CompareError::Attribution(e.to_string()))?;
                event.suspects = attribution.suspects;
                event.owners = attribution.owners;
                event.attribution = attribution.note;
                if let Some(revision) = attribution.revision {
                    event.revision = revision;
                }
                if let Some(baseline) = attribution.baseline_revision {
                    event.baseline_revision = Some(baseline);
                }
            }
        }
        None => notes.push("no --repo given: no suspects are named".into()),
    }
    base.summary.spans = base.facts.len();
    head.summary.spans = head.facts.len();
    Ok(Report {
        drifted: !events.is_empty(),
        base: base.summary,
        head: head.summary,
        events,
        notes,
    })
}

fn ai_of(suspect: &crate::detect::event::Suspect) -> String {
    suspect.ai.as_ref().map_or("no AI marker".to_owned(), |ai| {
        format!("AI: {} ({} confidence)", ai.tool, ai.confidence.as_str())
    })
}

fn what(event: &DriftEvent) -> String {
    let subject = event.operation.as_deref().or(event.peer.as_deref()).unwrap_or("");
    let detail = match (&event.stats, &event.outbound) {
        (Some(stats), _) => format!(
            ": p95 {:.1} ms → {:.1} ms (+{:.0}%)",
            stats.baseline.p95_ms,
            stats.current.p95_ms,
            stats.relative_increase * 100.0
        ),
        (None, Some(_)) => ": a host the base never called".to_owned(),
        _ => String::new(),
    };
    format!("{} {subject}{detail}", event.kind.as_str())
}

impl Report {
    /// For a terminal.
    pub fn text(&self) -> String {
        let mut out = format!(
            "base {} ({} spans, {:.0} s) vs head {} ({} spans, {:.0} s): {}\n",
            self.base.revision,
            self.base.spans,
            self.base.seconds,
            self.head.revision,
            self.head.spans,
            self.head.seconds,
            if self.drifted { "the head drifted" } else { "no drift" }
        );
        for event in &self.events {
            out.push_str(&format!("\n{} in {}\n", what(event), event.service));
            if let Some(note) = &event.attribution {
                out.push_str(&format!("  {note}\n"));
            }
            for s in &event.suspects {
                let commit: String = s.commit.chars().take(12).collect();
                out.push_str(&format!(
                    "  {commit} {:.2} \"{}\" by {} [{}]\n",
                    s.score,
                    s.summary,
                    s.author,
                    ai_of(s)
                ));
                for evidence in &s.evidence {
                    out.push_str(&format!("    - {evidence}\n"));
                }
            }
        }
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }

    /// For a pull-request comment.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "### driftwatch: {}\n\nBase `{}` ({} spans) vs head `{}` ({} spans) of the same load test.\n",
            if self.drifted { "the head drifted" } else { "no drift" },
            self.base.revision,
            self.base.spans,
            self.head.revision,
            self.head.spans
        );
        for event in &self.events {
            out.push_str(&format!("\n#### {} in `{}`\n\n", what(event), event.service));
            if let Some(note) = &event.attribution {
                out.push_str(&format!("{note}\n\n"));
            }
            if !event.suspects.is_empty() {
                out.push_str("| commit | score | summary | author | AI | evidence |\n|---|---|---|---|---|---|\n");
                for s in &event.suspects {
                    let commit: String = s.commit.chars().take(12).collect();
                    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
                    out.push_str(&format!(
                        "| `{commit}` | {:.2} | {} | {} | {} | {} |\n",
                        s.score,
                        cell(&s.summary),
                        cell(&s.author),
                        cell(&ai_of(s)),
                        cell(&s.evidence.join("; "))
                    ));
                }
            }
        }
        for note in &self.notes {
            out.push_str(&format!("\n_{note}_\n"));
        }
        out
    }
}
