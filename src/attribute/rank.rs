//! Ranking the commits of a deploy by how well they explain a drift.
//!
//! Evidence comes first. A commit is **linked** to the drift when its diff
//! shows a direct link: an added line containing the new peer, a change
//! inside the function the drifting spans name, a change to the file they
//! name, an added line calling that function, or an added route of the
//! drifting operation; for a new dependency, an added manifest or lockfile
//! line naming the library, any change to a manifest or lockfile, or an
//! added line naming the library in the code; for a repeated call, an
//! added line with the peer or an added retry. Each link has a weight wᵢ, and a linked commit
//! scores 0.5 + 0.5 × (1 − Π(1 − wᵢ)), so more links rank higher and every
//! linked commit ranks above every commit without a link, which scores at
//! most 0.1 (0.05 for being in range, up to 0.05 more for its size: big
//! changes hide more). AI authorship adds nothing to a score: it breaks
//! ties, linked commits with linked commits, and then the newer commit
//! goes first. The evidence is kept as sentences a person can check in the
//! diff.

use super::classify::{AiAuthorship, Confidence};
use super::repo::{CommitRecord, FileChange};
use crate::detect::event::{DriftEvent, EventKind, Hunk, HunkLine, Suspect};
use crate::extract::peer::peer_host;

/// Suspects reported per event.
pub(crate) const MAX_SUSPECTS: usize = 10;
/// Evidence lines reported per suspect.
const MAX_EVIDENCE: usize = 6;
/// Hunks shown per suspect, and lines of context either side of the line
/// that links it; longer lines are cut.
const MAX_HUNKS: usize = 2;
const SUSPECTS_WITH_HUNKS: usize = 3;
const HUNK_CONTEXT: u32 = 3;
const MAX_HUNK_LINE_BYTES: usize = 160;

const W_ADDS_PEER: f64 = 0.6;
const W_CHANGES_FUNCTION: f64 = 0.45;
const W_TOUCHES_FILE: f64 = 0.3;
const W_MENTIONS_FUNCTION: f64 = 0.2;
const W_ROUTE: f64 = 0.15;
const W_ADDS_DEPENDENCY: f64 = 0.6;
const W_CHANGES_MANIFEST: f64 = 0.25;
const W_USES_LIBRARY: f64 = 0.2;
const W_ADDS_RETRY: f64 = 0.35;
const W_ADDS_LOOP: f64 = 0.3;
/// What a linked commit scores at least.
const LINKED_FLOOR: f64 = 0.5;
/// Every commit in range could be the cause.
const W_IN_RANGE: f64 = 0.05;
/// Up to this much more for size, for a commit without a link.
const W_SIZE_MAX: f64 = 0.05;

/// How strongly the commit is AI-authored, for breaking ties: 0 for none.
fn ai_rank(confidence: Option<Confidence>) -> u8 {
    match confidence {
        Some(Confidence::High) => 3,
        Some(Confidence::Medium) => 2,
        Some(Confidence::Low) => 1,
        None => 0,
    }
}

/// The drifting spans' file, as attribution found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileClue {
    /// The repository path the spans' `code.file.path` maps to.
    Repo(String),
    /// The spans' own path, matched by suffix (the revision's files could
    /// not be listed).
    Span(String),
}

/// What the drifting spans tell about where to look.
struct Clues {
    /// Texts an added line introducing the peer would contain.
    peer_needles: Vec<String>,
    function: Option<String>,
    file: Option<FileClue>,
    /// The spans' `code.file.path` as they carry it.
    span_path: Option<String>,
    route: Option<String>,
    /// For a new dependency: words of its instrumentation scope that a
    /// manifest line adding the library would contain.
    library: Option<Vec<String>>,
    /// The spans the code clues come from, as evidence names them.
    spans: &'static str,
    /// For a repeated call: an added retry names it again.
    retries: bool,
    /// For a fan-out: an added loop makes the call once per item.
    loops: bool,
}

impl Clues {
    fn of(event: &DriftEvent, file: Option<&FileClue>) -> Clues {
        let mut peer_needles = Vec::new();
        let calls_peer = matches!(
            event.kind,
            EventKind::NewOutboundPeer | EventKind::RepeatedUnsafeCall | EventKind::FanoutRegression
        );
        if let (true, Some(peer)) = (calls_peer, event.peer.as_deref()) {
            let host = peer_host(peer);
            if !host.is_empty() {
                peer_needles.push(host.to_ascii_lowercase());
            }
            // Databases and queues: the namespace or destination too.
            if let Some((_, rest)) = peer.split_once("://") {
                if let Some((_, namespace)) = rest.split_once('/') {
                    peer_needles.push(namespace.to_ascii_lowercase());
                }
            } else if let Some((system, destination)) = peer.split_once(':')
                && !destination.chars().all(|c| c.is_ascii_digit())
                && !system.contains('.')
            {
                peer_needles.push(destination.to_ascii_lowercase());
            }
            peer_needles.retain(|n| n.len() >= 3);
        }
        let function = event
            .code
            .function
            .as_deref()
            .map(short_function)
            .filter(|f| f.len() >= 3)
            .map(str::to_owned);
        Clues {
            peer_needles,
            function,
            file: file.cloned(),
            span_path: event.code.filepath.clone(),
            route: event.code.route.clone(),
            library: event.dependency.as_ref().map(|d| library_words(&d.scope)),
            retries: event.kind == EventKind::RepeatedUnsafeCall,
            loops: event.kind == EventKind::FanoutRegression,
            spans: match event.kind {
                EventKind::LatencyRegression => "slow spans",
                EventKind::ErrorRateRegression => "failing spans",
                EventKind::NewOutboundPeer
                | EventKind::NewDependency
                | EventKind::RepeatedUnsafeCall
                | EventKind::FanoutRegression => "drifting spans",
            },
        }
    }
}

/// Words of a scope name too generic to name a library.
const GENERIC_SCOPE_WORDS: &[&str] = &[
    "opentelemetry", "otel", "instrumentation", "instrumentor", "contrib", "extra", "io", "org", "com", "net",
    "github", "gitlab", "go", "golang", "auto", "autoinstrumentation", "javaagent", "api", "sdk", "lib", "library",
    "http", "https", "core", "client", "server", "java", "js", "node", "python", "dotnet", "rust", "semconv",
    "trace", "tracing", "tracer", "version", "module", "plugin", "the",
];

/// The words of an instrumentation scope that name its library:
/// `opentelemetry.instrumentation.psycopg2` → `psycopg2`,
/// `@opentelemetry/instrumentation-pg` → `pg`,
/// `go.opentelemetry.io/contrib/instrumentation/github.com/redis/go-redis/extra/redisotel`
/// → `redis`, `redisotel`.
fn library_words(scope: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for word in scope.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let word = word.to_ascii_lowercase();
        let versionish = word.trim_start_matches('v').chars().all(|c| c.is_ascii_digit());
        if word.len() >= 2 && !versionish && !GENERIC_SCOPE_WORDS.contains(&word.as_str()) && !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// Whether an added line is a comment, which calls nothing.
fn is_comment(text: &str) -> bool {
    let code = text.trim_start();
    ["#", "//", "/*", "*", "--"].iter().any(|mark| code.starts_with(mark))
}

/// Whether an added line of code retries: a retry decorator, loop or
/// policy.
fn adds_retry(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    !is_comment(text)
        && ["retry", "retries", "retrying", "backoff", "tenacity", "attempt"]
            .iter()
            .any(|word| lower.contains(word))
}

/// Whether an added line loops over items: `for`, `while`, a comprehension,
/// or an iterator's `map` / `forEach` / `each`.
fn adds_loop(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    !is_comment(text)
        && (["for ", "for(", "while ", "while(", "foreach", "for_each"].iter().any(|k| lower.starts_with(k))
            || [".map(", ".foreach(", ".for_each(", ".each ", ".each(", ".each_with", "async for "]
                .iter()
                .any(|k| lower.contains(k))
            || (lower.contains(" for ") && lower.contains(" in ")))
}

/// Whether `path` is a dependency manifest or lockfile.
fn is_manifest(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    const NAMES: &[&str] = &[
        "package.json", "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb",
        "pyproject.toml", "poetry.lock", "Pipfile", "Pipfile.lock", "uv.lock", "setup.py", "setup.cfg", "go.mod",
        "go.sum", "Cargo.toml", "Cargo.lock", "pom.xml", "build.gradle", "build.gradle.kts", "gradle.lockfile",
        "libs.versions.toml", "Gemfile", "Gemfile.lock", "composer.json", "composer.lock", "packages.config",
        "Directory.Packages.props", "mix.exs", "mix.lock",
    ];
    NAMES.contains(&name)
        || (name.starts_with("requirements") && (name.ends_with(".txt") || name.ends_with(".in")))
        || name.ends_with(".csproj")
}

/// `shop.pay.charge_card` / `Pay::charge_card` / `charge_card` → `charge_card`.
fn short_function(function: &str) -> &str {
    function.rsplit(['.', ':', '/', '#']).next().unwrap_or(function).trim()
}

/// Whether a repository path and a span's `code.filepath` name the same
/// file: one is a suffix of the other on path-component boundaries
/// (`/app/src/pay.py` and `src/pay.py`).
fn same_file(repo_path: &str, span_path: &str) -> bool {
    let a = repo_path.trim_start_matches("./");
    let b = span_path.trim_start_matches("./");
    let suffix = |long: &str, short: &str| long == short || long.ends_with(&format!("/{short}"));
    !a.is_empty() && !b.is_empty() && (suffix(b, a) || suffix(a, b))
}

/// Whether line `line` (1-based) of `content` lies inside the definition
/// of `function`: the nearest definition-looking line above it names it.
fn inside_function(content: &str, line: u32, function: &str) -> bool {
    const KEYWORDS: &[&str] = &[
        "def ",
        "fn ",
        "func ",
        "function ",
        "async ",
        "public ",
        "private ",
        "protected ",
        "static ",
        "void ",
    ];
    let lines: Vec<&str> = content.lines().collect();
    let start = (line as usize).min(lines.len());
    for text in lines[..start].iter().rev() {
        let trimmed = text.trim_start();
        let defines = KEYWORDS.iter().any(|k| trimmed.starts_with(k)) || trimmed.starts_with("class ");
        if defines {
            return trimmed.contains(&format!("{function}(")) || trimmed.contains(&format!("{function}<"));
        }
    }
    false
}

#[derive(Default)]
struct Scored {
    links: Vec<f64>,
    evidence: Vec<String>,
    hunks: Vec<Hunk>,
    /// An agent wrote a line that links the commit (git-ai notes).
    ai_line: bool,
}

impl Scored {
    /// A direct link to the drift, with the sentence that shows it.
    fn link(&mut self, weight: f64, evidence: String) {
        self.links.push(weight);
        self.say(evidence);
    }

    /// Keeps the lines around `line` of `file`; a window that overlaps or
    /// touches a kept one of the same file joins it.
    fn show(&mut self, commit: &CommitRecord, file: &FileChange, line: u32) {
        if file.content.is_empty() {
            return;
        }
        let (mut start, mut end) = (line.saturating_sub(HUNK_CONTEXT).max(1), line + HUNK_CONTEXT);
        let last_line = |h: &Hunk| h.start_line + h.lines.len() as u32 - 1;
        let near = self
            .hunks
            .iter()
            .position(|h| h.path == file.path && start <= last_line(h) + 1 && h.start_line <= end + 1);
        match near {
            Some(i) => {
                let kept = self.hunks.remove(i);
                start = start.min(kept.start_line);
                end = end.max(last_line(&kept));
                self.hunks.insert(i, hunk(commit, file, start, end));
            }
            None if self.hunks.len() < MAX_HUNKS => {
                let hunk = hunk(commit, file, start, end);
                if !hunk.lines.is_empty() {
                    self.hunks.push(hunk);
                }
            }
            None => {}
        }
    }

    fn say(&mut self, text: String) {
        if self.evidence.len() < MAX_EVIDENCE && !self.evidence.contains(&text) {
            self.evidence.push(text);
        }
    }

    fn linked(&self) -> bool {
        !self.links.is_empty()
    }

    fn score(&self, lines_changed: u32) -> f64 {
        if self.linked() {
            let combined = 1.0 - self.links.iter().map(|w| 1.0 - w.clamp(0.0, 1.0)).product::<f64>();
            LINKED_FLOOR + (1.0 - LINKED_FLOOR) * combined
        } else {
            W_IN_RANGE + W_SIZE_MAX * (f64::from(lines_changed) / 200.0).min(1.0)
        }
    }
}

/// Ranks `commits` (all inside the deploy's range) for `event`; `file` is
/// where the drifting spans' file is in the repository, when known.
pub(crate) fn rank(event: &DriftEvent, commits: &[CommitRecord], file: Option<&FileClue>) -> Vec<Suspect> {
    let clues = Clues::of(event, file);
    let mut scored: Vec<(Suspect, u8)> = commits.iter().map(|commit| score_commit(commit, &clues)).collect();
    scored.sort_by(|(a, a_ai), (b, b_ai)| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| b_ai.cmp(a_ai))
            .then_with(|| b.committed_at.cmp(&a.committed_at))
    });
    scored.truncate(MAX_SUSPECTS);
    // Hunks for the suspects people read first; the rest keep their
    // evidence sentences, so an event stays a few kilobytes.
    for (suspect, _) in scored.iter_mut().skip(SUSPECTS_WITH_HUNKS) {
        suspect.hunks.clear();
    }
    scored.into_iter().map(|(suspect, _)| suspect).collect()
}

/// A commit as a suspect, with its AI rank for breaking ties.
fn score_commit(commit: &CommitRecord, clues: &Clues) -> (Suspect, u8) {
    let mut s = Scored::default();
    let mut peer_found = false;
    for file in &commit.files {
        if !peer_found && let Some((line, needle)) = find_added(file, &clues.peer_needles) {
            peer_found = true;
            s.link(W_ADDS_PEER, format!("adds {needle:?} at {}:{line}", file.path));
            s.show(commit, file, line);
            note_ai_line(commit, file, line, &mut s);
        }
        if let Some(function) = &clues.function {
            let changed_inside = file.added.iter().find(|(n, _)| inside_function(&file.content, *n, function));
            if let Some((line, _)) = changed_inside {
                s.link(
                    W_CHANGES_FUNCTION,
                    format!(
                        "changes function {function} (the {}' code.function) at {}:{line}",
                        clues.spans, file.path
                    ),
                );
                s.show(commit, file, *line);
                note_ai_line(commit, file, *line, &mut s);
            } else if let Some((line, _)) = file.added.iter().find(|(_, text)| contains_word(text, function)) {
                s.link(
                    W_MENTIONS_FUNCTION,
                    format!("adds a line mentioning {function} at {}:{line}", file.path),
                );
                s.show(commit, file, *line);
            }
        }
        let touches = match &clues.file {
            Some(FileClue::Repo(path)) => file.path == *path,
            Some(FileClue::Span(path)) => same_file(&file.path, path),
            None => false,
        };
        if touches {
            let named = match clues.span_path.as_deref() {
                Some(span) if span.trim_start_matches("./") != file.path => format!("code.file.path {span}"),
                _ => "code.file.path".to_owned(),
            };
            s.link(W_TOUCHES_FILE, format!("touches {} (the {}' {named})", file.path, clues.spans));
            if let Some((line, _)) = file.added.first() {
                s.show(commit, file, *line);
            }
        }
        if let Some(words) = &clues.library {
            link_library(commit, file, words, &mut s);
        }
        if clues.retries
            && let Some((line, text)) = file.added.iter().find(|(_, text)| adds_retry(text))
        {
            s.link(
                W_ADDS_RETRY,
                format!("adds a retry at {}:{line}: {:?}", file.path, crate::text::truncate(text.trim(), 80)),
            );
            s.show(commit, file, *line);
            note_ai_line(commit, file, *line, &mut s);
        }
        // A loop links only where the drifting spans point: in the function
        // they name, in their file, or anywhere when they name neither.
        let unpointed = clues.function.is_none() && clues.file.is_none();
        if clues.loops
            && let Some((line, text)) = file.added.iter().find(|(n, text)| {
                adds_loop(text)
                    && (unpointed
                        || touches
                        || clues.function.as_deref().is_some_and(|f| inside_function(&file.content, *n, f)))
            })
        {
            s.link(
                W_ADDS_LOOP,
                format!("adds a loop at {}:{line}: {:?}", file.path, crate::text::truncate(text.trim(), 80)),
            );
            s.show(commit, file, *line);
            note_ai_line(commit, file, *line, &mut s);
        }
        if let Some(route) = clues.route.as_deref().filter(|r| r.len() > 1)
            && let Some((line, _)) = file.added.iter().find(|(_, text)| text.contains(route))
        {
            s.link(W_ROUTE, format!("adds route {route:?} at {}:{line}", file.path));
            s.show(commit, file, *line);
        }
    }
    let size = commit.lines_changed();
    if !s.linked() {
        s.evidence
            .insert(0, format!("in range, no link to the drift found ({size} lines changed)"));
    }
    let ai = commit.authorship.ai().map(|ai| {
        s.say(format!(
            "AI-authored ({}, {} confidence): {}",
            ai.tool,
            ai.confidence.as_str(),
            ai.marker
        ));
        ai.clone()
    });
    let ai = ai.or_else(|| {
        // No marker in the message, but git-ai notes say an agent wrote lines.
        let note = commit.note.as_ref().filter(|n| !n.is_empty())?;
        let agent = note.agents.values().next().cloned().unwrap_or_default();
        let tool = if agent.tool.is_empty() { "unknown-agent".to_owned() } else { agent.tool };
        s.say(format!("git-ai notes attribute lines to {tool}"));
        Some(AiAuthorship {
            tool,
            confidence: Confidence::High,
            marker: format!("git-ai note ({})", super::repo::AI_NOTES_REF),
        })
    });
    let ai_rank = if s.ai_line { 4 } else { ai_rank(ai.as_ref().map(|a| a.confidence)) };
    let suspect = Suspect {
        commit: commit.id.clone(),
        summary: commit.summary.clone(),
        author: commit.author(),
        committed_at: crate::clock::Timestamp::from_unix_secs(commit.committed_at),
        ai,
        score: (s.score(size) * 1000.0).round() / 1000.0,
        linked: s.linked(),
        evidence: s.evidence,
        hunks: s.hunks,
        // Linked by the caller, which knows the repository's web address.
        pull_request: None,
    };
    (suspect, ai_rank)
}

/// The links of a new dependency in one file: a manifest line that adds
/// the library, a manifest change, or a code line that names the library.
fn link_library(commit: &CommitRecord, file: &FileChange, words: &[String], s: &mut Scored) {
    let names = |text: &str| {
        let lower = text.to_ascii_lowercase();
        words.iter().find(|w| contains_word(&lower, w)).cloned()
    };
    let manifest = is_manifest(&file.path);
    match file.added.iter().find_map(|(line, text)| names(text).map(|w| (*line, text, w))) {
        Some((line, text, word)) if manifest => {
            s.link(
                W_ADDS_DEPENDENCY,
                format!(
                    "adds {:?} to {}:{line} (the new library {word:?})",
                    crate::text::truncate(text.trim(), 80),
                    file.path
                ),
            );
            s.show(commit, file, line);
            note_ai_line(commit, file, line, s);
        }
        _ if manifest && file.lines_added + file.lines_removed > 0 => {
            s.link(W_CHANGES_MANIFEST, format!("changes dependency manifest {}", file.path));
            if let Some((line, _)) = file.added.first() {
                s.show(commit, file, *line);
            }
        }
        Some((line, _, word)) => {
            s.link(W_USES_LIBRARY, format!("adds a line naming {word:?} at {}:{line}", file.path));
            s.show(commit, file, line);
        }
        None => {}
    }
}

/// Lines `start..=end` of `file` as the commit left them.
fn hunk(commit: &CommitRecord, file: &FileChange, start: u32, end: u32) -> Hunk {
    let lines = file
        .content
        .lines()
        .enumerate()
        .skip(start as usize - 1)
        .take((end + 1 - start) as usize)
        .map(|(i, text)| {
            let number = i as u32 + 1;
            HunkLine {
                text: crate::text::truncate(text, MAX_HUNK_LINE_BYTES).to_owned(),
                added: file.added.iter().any(|(n, _)| *n == number),
                agent: commit
                    .note
                    .as_ref()
                    .and_then(|n| n.agent_for(&file.path, number))
                    .map(|a| a.tool),
            }
        })
        .collect();
    Hunk {
        path: file.path.clone(),
        start_line: start,
        lines,
    }
}

fn note_ai_line(commit: &CommitRecord, file: &FileChange, line: u32, s: &mut Scored) {
    if let Some(agent) = commit.note.as_ref().and_then(|n| n.agent_for(&file.path, line)) {
        let model = if agent.model.is_empty() {
            String::new()
        } else {
            format!(" ({})", agent.model)
        };
        s.ai_line = true;
        s.say(format!("{}:{line} was written by {}{model} per git-ai notes", file.path, agent.tool));
    }
}

/// The first added line containing any needle (case-insensitive).
fn find_added<'a>(file: &FileChange, needles: &'a [String]) -> Option<(u32, &'a str)> {
    file.added.iter().find_map(|(line, text)| {
        let lower = text.to_ascii_lowercase();
        needles
            .iter()
            .find(|n| lower.contains(n.as_str()))
            .map(|n| (*line, n.as_str()))
    })
}

fn contains_word(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary(before) && boundary(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearby_evidence_lines_share_one_hunk() {
        let content: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let file = FileChange {
            path: "src/a.py".into(),
            added: vec![(5, "line 5".into()), (9, "line 9".into()), (25, "line 25".into())],
            lines_added: 3,
            lines_removed: 0,
            content,
        };
        let commit = commit("c", Vec::new());
        let mut s = Scored::default();
        s.show(&commit, &file, 5);
        s.show(&commit, &file, 9);
        assert_eq!(s.hunks.len(), 1, "lines 2-8 and 6-12 join");
        assert_eq!((s.hunks[0].start_line, s.hunks[0].lines.len()), (2, 11));
        assert!(s.hunks[0].lines[3].added && !s.hunks[0].lines[4].added);
        s.show(&commit, &file, 25);
        s.show(&commit, &file, 1);
        assert_eq!(s.hunks.len(), 2);
        assert_eq!((s.hunks[0].start_line, s.hunks[0].lines.len()), (1, 12), "line 1 joins the first");
        assert_eq!(s.hunks[1].start_line, 22);
        // Past the end of the file: nothing to show.
        let mut t = Scored::default();
        t.show(&commit, &file, 90);
        assert!(t.hunks.is_empty());
    }

    #[test]
    fn function_names_and_files() {
        assert_eq!(short_function("shop.pay.charge_card"), "charge_card");
        assert_eq!(short_function("Pay::charge_card"), "charge_card");
        assert!(same_file("src/pay.py", "/app/src/pay.py"));
        assert!(same_file("services/checkout/src/pay.py", "src/pay.py"));
        assert!(!same_file("src/repay.py", "pay.py"));
        let code = "import x\n\ndef charge_card(card):\n    a = 1\n    return a\n\ndef other():\n    pass\n";
        assert!(inside_function(code, 4, "charge_card"));
        assert!(!inside_function(code, 8, "charge_card"));
        assert!(contains_word("x = charge_card(c)", "charge_card"));
        assert!(!contains_word("x = charge_cards(c)", "charge_card"));
    }

    fn commit(id: &str, files: Vec<FileChange>) -> CommitRecord {
        CommitRecord {
            id: id.into(),
            summary: id.into(),
            message: String::new(),
            author_name: String::new(),
            author_email: String::new(),
            committer_name: String::new(),
            committer_email: String::new(),
            committed_at: 0,
            parents: 1,
            authorship: super::super::classify::Authorship::Unknown,
            files,
            note: None,
            merged_by: None,
        }
    }

    fn change(path: &str, added: &[(u32, &str)]) -> FileChange {
        FileChange {
            path: path.into(),
            added: added.iter().map(|(n, t)| (*n, (*t).to_owned())).collect(),
            lines_added: added.len() as u32,
            lines_removed: 0,
            content: String::new(),
        }
    }

    #[test]
    fn scope_names_give_library_words() {
        assert_eq!(library_words("opentelemetry.instrumentation.psycopg2"), ["psycopg2"]);
        assert_eq!(library_words("@opentelemetry/instrumentation-pg"), ["pg"]);
        assert_eq!(library_words("io.opentelemetry.okhttp-3.0"), ["okhttp"]);
        assert_eq!(
            library_words("go.opentelemetry.io/contrib/instrumentation/github.com/redis/go-redis/extra/redisotel"),
            ["redis", "redisotel"]
        );
        assert!(is_manifest("services/cart/requirements-prod.txt"));
        assert!(is_manifest("go.mod") && is_manifest("web/package-lock.json") && is_manifest("api/Api.csproj"));
        assert!(!is_manifest("src/requirements.py"));
    }

    #[test]
    fn a_new_dependency_blames_the_manifest_line_that_adds_it_first() {
        let mut event = crate::detect::event::example_event("e", 1);
        event.kind = EventKind::NewDependency;
        event.code = Default::default();
        event.dependency = Some(crate::detect::details::DependencyStats {
            scope: "opentelemetry.instrumentation.redis".into(),
            spans: 40,
            operations: Vec::new(),
        });
        let commits = [
            commit("unrelated", vec![change("src/pay.py", &[(3, "x = 1")])]),
            commit("uses", vec![change("src/cart.py", &[(1, "import redis"), (2, "cache = redis.Redis()")])]),
            commit("bumps", vec![change("requirements.txt", &[(4, "flask==3.0.3")])]),
            commit("adds", vec![change("requirements.txt", &[(4, "flask==3.0.3"), (9, "redis==5.0.1")])]),
            commit("not-a-word", vec![change("requirements.txt", &[(2, "redisx==1.0")])]),
        ];
        let suspects = rank(&event, &commits, None);
        let order: Vec<&str> = suspects.iter().map(|s| s.commit.as_str()).collect();
        assert_eq!(order[0], "adds", "{suspects:#?}");
        assert!(suspects[0].evidence[0].contains("\"redis==5.0.1\" to requirements.txt:9"), "{:?}", suspects[0].evidence);
        assert_eq!(order.last(), Some(&"unrelated"));
        let linked: Vec<&str> = suspects.iter().filter(|s| s.linked).map(|s| s.commit.as_str()).collect();
        assert_eq!(linked.len(), 4, "a manifest change or a line naming the library is a link: {linked:?}");
        assert!(order.iter().position(|c| *c == "uses") < order.iter().position(|c| *c == "unrelated"));
    }

    #[test]
    fn loops_are_recognised_in_the_common_languages() {
        for line in [
            "    for item in cart.items:",
            "for (const item of items) {",
            "items.forEach(item => fetchStock(item.id));",
            "let stock: Vec<_> = items.iter().map(|i| client.get(i)).collect();",
            "prices = [get_price(i) for i in items]",
            "while page := next_page():",
        ] {
            assert!(adds_loop(line), "{line}");
        }
        for line in ["# for each item we call once", "format = 'GET /cart'", "retry_for = 3", "// for (x of xs)"] {
            assert!(!adds_loop(line), "{line}");
        }
        assert!(adds_retry("    for attempt in range(3):") && adds_retry("@retry(stop=stop_after_attempt(3))"));
        assert!(!adds_retry("    # Retry declined charges."), "a comment retries nothing");
    }

    #[test]
    fn a_fanout_blames_the_loop_where_the_spans_point_not_any_loop() {
        let mut event = crate::detect::event::example_event("e", 1);
        event.kind = EventKind::FanoutRegression;
        event.peer = Some("inventory:8080".into());
        event.code = crate::detect::event::CodeHint { filepath: Some("src/cart.py".into()), ..Default::default() };
        let commits = [
            commit("elsewhere", vec![change("src/report.py", &[(7, "    for row in rows:")])]),
            commit("loops", vec![change("src/cart.py", &[(12, "    for item in cart.items:"), (13, "        stock(item)")])]),
        ];
        let suspects = rank(&event, &commits, Some(&FileClue::Repo("src/cart.py".into())));
        assert_eq!(suspects[0].commit, "loops", "{suspects:#?}");
        assert!(suspects[0].evidence.iter().any(|e| e.starts_with("adds a loop at src/cart.py:12")), "{:?}", suspects[0].evidence);
        let elsewhere = suspects.iter().find(|s| s.commit == "elsewhere").expect("ranked");
        assert!(!elsewhere.linked, "a loop in another file is no link: {elsewhere:#?}");
    }
}
