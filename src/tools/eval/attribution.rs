//! `driftwatch eval --attribution DIR`: how often the commit that caused a
//! drift is ranked first, or among the first three.
//!
//! Each case (`*.toml`) describes a small repository as the steps that
//! made it (commits with their authors and messages, branches, merge
//! commits, squash merges, renames), a drift as driftwatch would report it
//! (kind, operation, peer, the spans' `code.*` attributes), the deploy's
//! range by step labels, and the label of the commit that caused it. The
//! repository is built with `git` in a temporary directory and attributed
//! by the same code the sidecar runs.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::attribute::Attributor;
use crate::attribute::classify::Classifier;
use crate::config::GitRepoConfig;
use crate::detect::event::DriftEvent;

#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("case {case:?}: {message}")]
    Build { case: String, message: String },
}

/// One labelled attribution case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    /// What the case exercises (squash merge, monorepo, bot, …).
    #[serde(default)]
    pub covers: Vec<String>,
    #[serde(default)]
    pub subdir: Option<String>,
    #[serde(default)]
    pub strip_prefix: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub steps: Vec<Step>,
    /// The last good revision and the drifting one, as step labels.
    pub baseline: String,
    pub revision: String,
    /// The label of the commit that caused the drift.
    pub culprit: String,
    pub drift: Drift,
}

/// The drift as an event names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drift {
    /// `latency_regression`, `new_outbound_peer`, `error_rate_regression`
    /// or `new_dependency`.
    pub kind: String,
    pub operation: String,
    #[serde(default)]
    pub peer: Option<String>,
    /// The instrumentation scope of a `new_dependency`.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub function: Option<String>,
    #[serde(default)]
    pub filepath: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
}

/// One step of building the repository.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Names the commit this step makes, for `baseline`, `revision`,
    /// `culprit`.
    #[serde(default)]
    pub label: Option<String>,
    /// Start a branch here (`git checkout -b`).
    #[serde(default)]
    pub branch: Option<String>,
    /// Switch to a branch.
    #[serde(default)]
    pub checkout: Option<String>,
    /// Merge this branch with a merge commit (`message` is its message).
    #[serde(default)]
    pub merge: Option<String>,
    /// Squash this branch into one commit (`message`, `author`).
    #[serde(default)]
    pub squash: Option<String>,
    /// Files written (path → content); an empty content deletes the file.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Renames: from → to.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub message: Option<String>,
    /// `Name <email>`; a human by default.
    #[serde(default)]
    pub author: Option<String>,
}

/// Where a case's culprit ranked.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub name: String,
    pub covers: Vec<String>,
    /// 1-based; `None` when it was not among the suspects.
    pub rank: Option<usize>,
    pub suspects: usize,
    pub top: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttributionReport {
    pub cases: Vec<CaseResult>,
    pub top1: f64,
    pub top3: f64,
}

impl AttributionReport {
    pub fn table(&self) -> String {
        let mut out = format!("{:<72} {:>5} {:>9}\n", "case", "rank", "suspects");
        for case in &self.cases {
            let rank = case.rank.map_or("-".to_owned(), |r| r.to_string());
            out.push_str(&format!("{:<72} {:>5} {:>9}\n", case.name, rank, case.suspects));
        }
        out.push_str(&format!(
            "\n{} cases: top-1 {:.0}%, top-3 {:.0}%\n",
            self.cases.len(),
            100.0 * self.top1,
            100.0 * self.top3
        ));
        out
    }
}

/// Every `*.toml` case in `dir`, by file name.
pub fn load_cases(dir: &Path) -> Result<Vec<Case>, CaseError> {
    let read = |path: &Path, e: std::io::Error| CaseError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|e| read(path, e))?;
            toml::from_str(&text).map_err(|e| CaseError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// Builds and attributes every case.
pub fn evaluate(cases: &[Case]) -> Result<AttributionReport, CaseError> {
    let mut results = Vec::with_capacity(cases.len());
    for case in cases {
        results.push(run(case)?);
    }
    let share = |hit: &dyn Fn(usize) -> bool| {
        let hits = results.iter().filter(|r| r.rank.is_some_and(hit)).count();
        if results.is_empty() { 0.0 } else { hits as f64 / results.len() as f64 }
    };
    Ok(AttributionReport {
        top1: share(&|r| r == 1),
        top3: share(&|r| r <= 3),
        cases: results,
    })
}

fn run(case: &Case) -> Result<CaseResult, CaseError> {
    let fail = |message: String| CaseError::Build {
        case: case.name.clone(),
        message,
    };
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let labels = build(dir.path(), case).map_err(fail)?;
    let label = |name: &str| labels.get(name).cloned().ok_or_else(|| fail(format!("no step is labelled {name:?}")));
    let (baseline, revision, culprit) = (label(&case.baseline)?, label(&case.revision)?, label(&case.culprit)?);
    let attributor = Attributor::new(
        &[GitRepoConfig {
            service: "*".into(),
            path: dir.path().to_owned(),
            subdir: case.subdir.clone(),
            strip_prefix: case.strip_prefix.clone(),
            path_prefix: case.path_prefix.clone(),
            ..Default::default()
        }],
        Classifier::default(),
    );
    let event: DriftEvent = serde_json::from_value(serde_json::json!({
        "id": "case", "fingerprint": "case", "kind": case.drift.kind, "state": "firing", "severity": "warning",
        "service": "svc", "operation": case.drift.operation, "peer": case.drift.peer,
        "revision": revision, "baseline_revision": baseline,
        "onset": "2026-01-01T00:00:00Z", "detected_at": "2026-01-01T00:01:00Z", "resolved_at": null, "suspects": [],
        "code": {"function": case.drift.function, "filepath": case.drift.filepath, "route": case.drift.route},
        "dependency": case.drift.scope.as_ref().map(|scope| serde_json::json!({"scope": scope, "spans": 1, "operations": []})),
    }))
    .map_err(|e| fail(format!("the drift: {e}")))?;
    let attribution = attributor.attribute(&event).map_err(|e| fail(e.to_string()))?;
    let rank = attribution.suspects.iter().position(|s| s.commit == culprit).map(|i| i + 1);
    Ok(CaseResult {
        name: case.name.clone(),
        covers: case.covers.clone(),
        rank,
        suspects: attribution.suspects.len(),
        top: attribution.suspects.first().map(|s| s.summary.clone()),
    })
}

const HUMAN: &str = "Dana Smith <dana@example.com>";

/// Runs the steps with `git` in `dir`; returns label → commit SHA.
fn build(dir: &Path, case: &Case) -> Result<HashMap<String, String>, String> {
    let git = |args: &[&str], author: &str| -> Result<String, String> {
        let (name, email) = author
            .rsplit_once(" <")
            .map(|(n, e)| (n.trim(), e.trim_end_matches('>')))
            .unwrap_or((author, "someone@example.com"));
        let output = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", name)
            .env("GIT_AUTHOR_EMAIL", email)
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .map_err(|e| format!("cannot run git (needed to build the cases): {e}"))?;
        if !output.status.success() {
            return Err(format!("git {args:?}: {}", String::from_utf8_lossy(&output.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    git(&["init", "-q", "-b", "main"], HUMAN)?;
    let mut labels = HashMap::new();
    for step in &case.steps {
        let author = step.author.as_deref().unwrap_or(HUMAN);
        let message = step.message.as_deref().unwrap_or("Change");
        if let Some(branch) = &step.branch {
            git(&["checkout", "-q", "-b", branch], author)?;
        }
        if let Some(branch) = &step.checkout {
            git(&["checkout", "-q", branch], author)?;
        }
        if let Some(branch) = &step.merge {
            git(&["merge", "-q", "--no-ff", branch, "-m", message], author)?;
        }
        if let Some(branch) = &step.squash {
            git(&["merge", "-q", "--squash", branch], author)?;
            git(&["commit", "-q", "-m", message], author)?;
        }
        for (from, to) in &step.rename {
            if let Some(parent) = Path::new(to).parent() {
                std::fs::create_dir_all(dir.join(parent)).map_err(|e| e.to_string())?;
            }
            git(&["mv", from, to], author)?;
        }
        for (path, content) in &step.files {
            let file = dir.join(path);
            if content.is_empty() {
                git(&["rm", "-q", path], author)?;
                continue;
            }
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::write(&file, content).map_err(|e| e.to_string())?;
            git(&["add", path], author)?;
        }
        if !step.files.is_empty() || !step.rename.is_empty() {
            git(&["commit", "-q", "-m", message], author)?;
        }
        if let Some(label) = &step.label {
            labels.insert(label.clone(), git(&["rev-parse", "HEAD"], author)?);
        }
    }
    Ok(labels)
}
