//! git-ai authorship notes (`refs/notes/ai`, "authorship/3.0.0"): which
//! lines of which files an agent wrote in a commit, and which agent and
//! model it was.
//!
//! A note is attestation lines, a line that is exactly `---`, then JSON.
//! An attestation is a file path at column 0 (quoted if it has spaces),
//! followed by lines indented two spaces: `<session hash> <ranges>`, with
//! 1-based line ranges like `1-4,9-10,12` in that commit's version of the
//! file.

use std::collections::HashMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

/// The agent behind a session.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Agent {
    #[serde(default)]
    pub tool: String,
    #[serde(default)]
    pub model: String,
}

/// The lines of a file one session wrote: (session, line ranges).
pub(crate) type SessionLines = (String, Vec<RangeInclusive<u32>>);

/// One commit's note.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthorshipNote {
    /// path → (session, line ranges).
    pub files: HashMap<String, Vec<SessionLines>>,
    /// session → agent.
    pub agents: HashMap<String, Agent>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum NoteError {
    #[error("git-ai note line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("git-ai note JSON: {0}")]
    Json(String),
}

#[derive(Deserialize)]
struct NoteJson {
    #[serde(default)]
    prompts: HashMap<String, PromptJson>,
}

#[derive(Deserialize)]
struct PromptJson {
    #[serde(default)]
    agent_id: Agent,
}

impl AuthorshipNote {
    pub(crate) fn parse(text: &str) -> Result<AuthorshipNote, NoteError> {
        let mut note = AuthorshipNote::default();
        let mut lines = text.lines().enumerate();
        let mut current: Option<String> = None;
        let mut json_start = None;
        for (number, line) in lines.by_ref() {
            if line == "---" {
                json_start = Some(number + 1);
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            if let Some(entry) = line.strip_prefix("  ") {
                let file = current.clone().ok_or_else(|| NoteError::Syntax {
                    line: number + 1,
                    message: "session line before any file path".into(),
                })?;
                let (session, ranges) = entry.trim().split_once(' ').ok_or_else(|| NoteError::Syntax {
                    line: number + 1,
                    message: format!("expected `<session> <ranges>`, got {entry:?}"),
                })?;
                let ranges = parse_ranges(ranges).map_err(|message| NoteError::Syntax {
                    line: number + 1,
                    message,
                })?;
                note.files.entry(file).or_default().push((session.to_owned(), ranges));
            } else {
                current = Some(unquote(line));
            }
        }
        if json_start.is_some() {
            let json: String = lines.map(|(_, l)| l).collect::<Vec<_>>().join("\n");
            if !json.trim().is_empty() {
                let parsed: NoteJson = serde_json::from_str(&json).map_err(|e| NoteError::Json(e.to_string()))?;
                note.agents = parsed.prompts.into_iter().map(|(k, v)| (k, v.agent_id)).collect();
            }
        }
        Ok(note)
    }

    /// The agent that wrote `line` of `path`, if the note says one did.
    pub(crate) fn agent_for(&self, path: &str, line: u32) -> Option<Agent> {
        let sessions = self.files.get(path)?;
        let (session, _) = sessions.iter().find(|(_, ranges)| ranges.iter().any(|r| r.contains(&line)))?;
        Some(self.agents.get(session).cloned().unwrap_or_else(|| Agent {
            tool: "unknown-agent".into(),
            model: String::new(),
        }))
    }

    /// Whether the note attributes any line at all to an agent.
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn unquote(path: &str) -> String {
    let trimmed = path.trim_end();
    match trimmed.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => trimmed.to_owned(),
    }
}

fn parse_ranges(text: &str) -> Result<Vec<RangeInclusive<u32>>, String> {
    text.split(',')
        .map(|part| {
            let part = part.trim();
            let parse = |s: &str| {
                s.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("bad line number {s:?} in {text:?}"))
            };
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (parse(a)?, parse(b)?);
                    if a > b {
                        return Err(format!("range {part:?} runs backwards"));
                    }
                    Ok(a..=b)
                }
                None => parse(part).map(|n| n..=n),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: &str = "src/pay.py\n  d9978a8723e02b52 1-4,9-10,12\n\"docs/read me.md\"\n  0123456789abcdef 3\n---\n\
        {\"schema_version\": \"authorship/3.0.0\", \"base_commit_sha\": \"abc\", \"prompts\": {\"d9978a8723e02b52\": \
        {\"agent_id\": {\"tool\": \"claude-code\", \"id\": \"x\", \"model\": \"claude-opus-4\"}, \"human_author\": \"Dana\"}}}";

    #[test]
    fn parses_attestations_and_agents() {
        let note = AuthorshipNote::parse(NOTE).expect("valid note");
        let agent = note.agent_for("src/pay.py", 10).expect("line 10 is AI");
        assert_eq!(
            agent,
            Agent {
                tool: "claude-code".into(),
                model: "claude-opus-4".into()
            }
        );
        assert!(note.agent_for("src/pay.py", 5).is_none());
        assert!(note.agent_for("src/pay.py", 12).is_some());
        assert_eq!(
            note.agent_for("docs/read me.md", 3).map(|a| a.tool),
            Some("unknown-agent".into())
        );
    }

    #[test]
    fn bad_notes_are_errors_not_panics() {
        assert!(matches!(
            AuthorshipNote::parse("  abc 1-2\n"),
            Err(NoteError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            AuthorshipNote::parse("f\n  abc 9-2\n"),
            Err(NoteError::Syntax { .. })
        ));
        assert!(matches!(AuthorshipNote::parse("f\n  abc x\n"), Err(NoteError::Syntax { .. })));
        assert!(matches!(
            AuthorshipNote::parse("f\n  abc 1\n---\n{not json"),
            Err(NoteError::Json(_))
        ));
        assert!(AuthorshipNote::parse("").expect("empty").is_empty());
    }
}
