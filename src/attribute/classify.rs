//! AI-authorship classification of commits.
//!
//! The rules are the markers AI coding tools actually leave (see
//! `shared/ai-markers.md`): trailers anywhere in the message (GitHub squash
//! merges bury them in the body), author and committer identities matched
//! by e-mail or GitHub numeric noreply id (never by a bare name: Claude,
//! Devin and Jules are people too; cursor and amp are words), name suffixes
//! and subject prefixes. Non-AI bots (Dependabot, Renovate, GitHub Actions)
//! are their own class. No marker means *unknown*, not human.

use serde::Serialize;

pub(crate) use crate::authorship::{AiAuthorship, Confidence, Matcher, Rule};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "class", rename_all = "snake_case")]
pub enum Authorship {
    Ai(AiAuthorship),
    /// A non-AI bot (dependency updates, CI).
    Bot {
        name: String,
        marker: String,
    },
    /// No marker: it may or may not be AI-written.
    Unknown,
}

impl Authorship {
    pub fn ai(&self) -> Option<&AiAuthorship> {
        match self {
            Authorship::Ai(ai) => Some(ai),
            _ => None,
        }
    }
}

/// What the classifier reads of a commit.
#[derive(Debug, Clone, Default)]
pub struct CommitIdentity<'a> {
    pub message: &'a str,
    pub author_name: &'a str,
    pub author_email: &'a str,
    pub committer_name: &'a str,
    pub committer_email: &'a str,
}

/// Known non-AI bots by GitHub id, checked before the AI rules.
const NON_AI_BOTS: &[(&str, u64)] = &[
    ("dependabot[bot]", 49_699_333),
    ("renovate[bot]", 29_139_614),
    ("github-actions[bot]", 41_898_282),
];

fn rule(tool: &str, confidence: Confidence, matcher: Matcher) -> Rule {
    Rule {
        tool: tool.to_owned(),
        confidence,
        matcher,
    }
}

/// The default rule set (ai-markers.md, late 2026).
pub(crate) fn builtin_rules() -> Vec<Rule> {
    use Confidence::{High, Low, Medium};
    use Matcher::*;
    let email = |e: &str| Email(e.to_owned());
    let trailer = |k: &str, v: &str| Trailer {
        key: k.to_owned(),
        value_prefix: v.to_owned(),
    };
    let line = |t: &str| LineContains(t.to_owned());
    vec![
        rule("claude-code", High, email("noreply@anthropic.com")),
        rule("claude-code", High, line("Generated with [Claude Code](")),
        rule("claude-code", High, trailer("Claude-Session", "https://claude.ai/code/")),
        rule("claude", Medium, GithubId(209_825_114)),
        rule("claude", Medium, GithubId(208_546_643)),
        rule("copilot-agent", High, GithubId(198_982_749)),
        rule("copilot-agent", High, trailer("Agent-Logs-Url", "https://github.com/")),
        rule("copilot", High, GithubId(175_728_472)),
        rule("copilot-cli", High, GithubId(223_556_219)),
        rule("copilot", Medium, email("copilot@github.com")),
        rule("codex", Medium, email("noreply@openai.com")),
        rule("codex", Medium, email("codex@openai.com")),
        rule("codex", Medium, GithubId(242_516_109)),
        rule("codex", Medium, GithubId(199_175_422)),
        rule("codex", Medium, line("[Codex Task](https://chatgpt.com/codex/tasks/")),
        rule("cursor", High, email("cursoragent@cursor.com")),
        rule("cursor", High, trailer("Made-with", "Cursor")),
        rule("cursor", High, GithubId(206_951_365)),
        rule("aider", High, email("aider@aider.chat")),
        rule("aider", High, email("noreply@aider.chat")),
        rule("aider", High, email("noreply@aider.dev")),
        rule("aider", High, NameSuffix(" (aider)".to_owned())),
        rule("aider", High, SubjectPrefix("aider: ".to_owned())),
        rule("devin", High, GithubId(158_243_242)),
        rule("devin", High, line("Generated with [Devin](")),
        rule("jules", High, GithubId(161_369_871)),
        rule("gemini-code-assist", High, GithubId(176_961_590)),
        rule("amazon-q", Medium, GithubId(208_079_219)),
        rule("kiro", Medium, GithubId(245_459_735)),
        rule("windsurf", Low, GithubId(189_301_087)),
        rule("windsurf", Low, email("cascade@windsurf.com")),
        rule("openhands", High, email("openhands@all-hands.dev")),
        rule("openhands", High, GithubLogin("openhands-agent".to_owned())),
        rule("amp", High, email("amp@ampcode.com")),
        rule("amp", High, trailer("Amp-Thread-ID", "https://ampcode.com/threads/")),
        rule("factory-droid", High, GithubId(138_933_559)),
        rule("roo-code", Medium, email("roomote@roocode.com")),
        rule("roo-code", Medium, GithubLogin("roomote[bot]".to_owned())),
        rule("replit-agent", High, trailer("Replit-Commit-Author", "Agent")),
        rule("replit-agent", High, trailer("Replit-Commit-Author", "Assistant")),
        rule("cody", Low, GithubId(201_248_094)),
        rule("continue", Low, GithubId(230_936_708)),
        rule("cline", Low, GithubId(205_137_888)),
        rule("assisted-by", High, trailer("Assisted-by", "")),
        rule("generated-by", High, trailer("Generated-by", "")),
        rule("ai-assisted", Low, trailer("AI-Assisted", "true")),
        rule("ai-tool", Low, trailer("AI-Tool", "")),
    ]
}

/// Names of models and agents that make a `Co-developed-by` trailer an AI
/// marker (the trailer is also used between people).
const MODEL_WORDS: &[&str] = &[
    "claude", "gpt", "gemini", "llama", "copilot", "codex", "mistral", "qwen", "deepseek", "grok",
];

/// A classifier over the built-in rules plus configured ones.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier { rules: builtin_rules() }
    }
}

/// A person or bot named by the commit: author, committer or co-author.
struct Identity<'a> {
    role: &'static str,
    name: &'a str,
    email: &'a str,
    /// The message line it came from, for trailers.
    line: Option<&'a str>,
}

impl Identity<'_> {
    fn marker(&self) -> String {
        match self.line {
            Some(line) => line.trim().to_owned(),
            None => format!("{}: {} <{}>", self.role, self.name, self.email),
        }
    }
}

impl Classifier {
    /// Built-in rules followed by `extra` (configured rules win ties by
    /// coming first at equal confidence).
    pub fn with_rules(extra: Vec<Rule>) -> Classifier {
        let mut rules = extra;
        rules.extend(builtin_rules());
        Classifier { rules }
    }

    pub fn classify(&self, commit: &CommitIdentity<'_>) -> Authorship {
        let mut identities = vec![
            Identity {
                role: "author",
                name: commit.author_name,
                email: commit.author_email,
                line: None,
            },
            Identity {
                role: "committer",
                name: commit.committer_name,
                email: commit.committer_email,
                line: None,
            },
        ];
        let trailers: Vec<(&str, &str, &str)> = commit.message.lines().filter_map(trailer).collect();
        for (key, value, line) in &trailers {
            if key.eq_ignore_ascii_case("co-authored-by")
                && let Some((name, email)) = name_and_email(value)
            {
                identities.push(Identity {
                    role: "co-author",
                    name,
                    email,
                    line: Some(line),
                });
            }
        }
        let subject = commit.message.lines().next().unwrap_or("").trim();

        let mut best: Option<AiAuthorship> = None;
        let mut consider = |rule: &Rule, marker: String| {
            if best.as_ref().is_none_or(|b| rule.confidence > b.confidence) {
                best = Some(AiAuthorship {
                    tool: tool_name(rule, &marker),
                    confidence: rule.confidence,
                    marker,
                });
            }
        };
        for rule in &self.rules {
            match &rule.matcher {
                Matcher::Email(email) => {
                    for id in identities.iter().filter(|id| id.email.eq_ignore_ascii_case(email)) {
                        consider(rule, id.marker());
                    }
                }
                Matcher::GithubId(wanted) => {
                    for id in identities
                        .iter()
                        .filter(|id| github_noreply(id.email).is_some_and(|(n, _)| n == *wanted))
                    {
                        consider(rule, id.marker());
                    }
                }
                Matcher::GithubLogin(login) => {
                    for id in identities
                        .iter()
                        .filter(|id| github_noreply(id.email).is_some_and(|(_, l)| l.eq_ignore_ascii_case(login)))
                    {
                        consider(rule, id.marker());
                    }
                }
                Matcher::Trailer { key, value_prefix } => {
                    for (_, _, line) in trailers.iter().filter(|(k, v, _)| {
                        k.eq_ignore_ascii_case(key) && starts_with_ignore_case(v, value_prefix) && !v.trim().is_empty()
                    }) {
                        consider(rule, line.trim().to_owned());
                    }
                }
                Matcher::LineContains(text) => {
                    let text = text.to_ascii_lowercase();
                    if let Some(line) = commit.message.lines().find(|l| l.to_ascii_lowercase().contains(&text)) {
                        consider(rule, line.trim().to_owned());
                    }
                }
                Matcher::NameSuffix(suffix) => {
                    for id in identities.iter().take(2).filter(|id| id.name.ends_with(suffix.as_str())) {
                        consider(rule, id.marker());
                    }
                }
                Matcher::SubjectPrefix(prefix) => {
                    if subject.starts_with(prefix.as_str()) {
                        consider(rule, format!("subject: {subject}"));
                    }
                }
            }
        }
        for (key, value, line) in &trailers {
            if key.eq_ignore_ascii_case("co-developed-by") {
                let lower = value.to_ascii_lowercase();
                if MODEL_WORDS.iter().any(|w| lower.contains(w)) {
                    consider(
                        &rule("co-developed-by", Confidence::Low, Matcher::LineContains(String::new())),
                        line.trim().to_owned(),
                    );
                }
            }
        }
        if let Some(ai) = best {
            return Authorship::Ai(ai);
        }
        for id in identities.iter().take(2) {
            if let Some((number, _)) = github_noreply(id.email)
                && let Some((name, _)) = NON_AI_BOTS.iter().find(|(_, bot)| *bot == number)
            {
                return Authorship::Bot {
                    name: (*name).to_owned(),
                    marker: id.marker(),
                };
            }
        }
        Authorship::Unknown
    }
}

/// The tool a marker names: the rule's tool, except for the generic
/// trailers, where the marker's value names the agent (`Assisted-by:
/// Claude:opus` → `claude`).
fn tool_name(rule: &Rule, marker: &str) -> String {
    if !matches!(
        rule.tool.as_str(),
        "assisted-by" | "generated-by" | "ai-tool" | "co-developed-by"
    ) {
        return rule.tool.clone();
    }
    let value = marker.split_once(':').map_or("", |(_, v)| v).trim();
    let agent: String = value
        .split(|c: char| c == ':' || c == '/' || c.is_whitespace() || c == '<')
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect::<String>()
        .to_ascii_lowercase();
    if agent.is_empty() { rule.tool.clone() } else { agent }
}

/// Splits a `Key: value` trailer line. Keys are single tokens of letters,
/// digits and dashes, as git's trailer syntax requires; a squash merge's
/// `* ` bullet does not hide a trailer.
fn trailer(line: &str) -> Option<(&str, &str, &str)> {
    let text = line.trim().trim_start_matches("* ").trim_start();
    let (key, value) = text.split_once(':')?;
    let valid = !key.is_empty() && key.len() <= 64 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    // "https://..." is a URL, not a trailer named "https".
    if !valid || value.starts_with("//") {
        return None;
    }
    Some((key, value.trim(), line))
}

/// `Name <email>` → (name, email).
fn name_and_email(value: &str) -> Option<(&str, &str)> {
    let open = value.rfind('<')?;
    let close = value[open..].find('>')? + open;
    Some((value[..open].trim(), value[open + 1..close].trim()))
}

/// `<id>+<login>@users.noreply.github.com` → (id, login).
pub(crate) fn github_noreply(email: &str) -> Option<(u64, &str)> {
    let local = email.strip_suffix("@users.noreply.github.com").or_else(|| {
        let lower_at = email.len().checked_sub("@users.noreply.github.com".len())?;
        // Anyone with push access writes these: the cut may fall inside a
        // multi-byte character.
        let suffix = email.get(lower_at..)?;
        suffix
            .eq_ignore_ascii_case("@users.noreply.github.com")
            .then(|| &email[..lower_at])
    })?;
    let (id, login) = local.split_once('+')?;
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) || login.is_empty() {
        return None;
    }
    Some((id.parse().ok()?, login))
}

fn starts_with_ignore_case(text: &str, prefix: &str) -> bool {
    text.len() >= prefix.len() && text.is_char_boundary(prefix.len()) && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit<'a>(message: &'a str, author: (&'a str, &'a str)) -> CommitIdentity<'a> {
        CommitIdentity {
            message,
            author_name: author.0,
            author_email: author.1,
            committer_name: author.0,
            committer_email: author.1,
        }
    }

    const HUMAN: (&str, &str) = ("Dana Smith", "dana@example.com");

    #[test]
    fn an_address_with_multibyte_characters_where_the_suffix_would_start_is_not_a_crash() {
        // Found by fuzzing: the suffix cut fell inside a character.
        // 26 bytes: the 25-byte suffix would start inside the `é`.
        let email = format!("é{}", "x".repeat(24));
        assert_eq!(github_noreply(&email), None);
        assert_eq!(github_noreply("é1+Bob@USERS.NOREPLY.GITHUB.COM").map(|(id, _)| id), None);
        assert_eq!(github_noreply("1+Bob@USERS.NOREPLY.GITHUB.COM"), Some((1, "Bob")));
        let _ = Classifier::with_rules(Vec::new()).classify(&commit("Fix\n\nCo-authored-by: x <é€@users.noreply.github.co>", ("é", &email)));
    }

    fn ai(message: &str, author: (&str, &str)) -> Option<AiAuthorship> {
        Classifier::default().classify(&commit(message, author)).ai().cloned()
    }

    #[test]
    fn one_commit_per_marker_family() {
        let cases: Vec<(&str, (&str, &str), &str, Confidence)> = vec![
            (
                "Add retry\n\nCo-Authored-By: Claude <noreply@anthropic.com>",
                HUMAN,
                "claude-code",
                Confidence::High,
            ),
            (
                "Add retry\n\nCo-Authored-By: Claude Opus 4.5 <noreply@anthropic.com>",
                HUMAN,
                "claude-code",
                Confidence::High,
            ),
            (
                "Fix\n\n🤖 Generated with [Claude Code](https://claude.com/claude-code)",
                HUMAN,
                "claude-code",
                Confidence::High,
            ),
            (
                "Fix\n\nClaude-Session: https://claude.ai/code/session_01ABC",
                HUMAN,
                "claude-code",
                Confidence::High,
            ),
            (
                "Fix",
                ("claude[bot]", "209825114+claude[bot]@users.noreply.github.com"),
                "claude",
                Confidence::Medium,
            ),
            (
                "Initial plan",
                ("copilot-swe-agent[bot]", "198982749+Copilot@users.noreply.github.com"),
                "copilot-agent",
                Confidence::High,
            ),
            (
                "Fix\n\nCo-authored-by: Copilot <175728472+Copilot@users.noreply.github.com>",
                HUMAN,
                "copilot",
                Confidence::High,
            ),
            (
                "Fix\n\nCo-authored-by: Copilot <223556219+Copilot@users.noreply.github.com>",
                HUMAN,
                "copilot-cli",
                Confidence::High,
            ),
            (
                "Fix\n\nCo-authored-by: Copilot <copilot@github.com>",
                HUMAN,
                "copilot",
                Confidence::Medium,
            ),
            (
                "Fix\n\nCo-authored-by: Codex <noreply@openai.com>",
                HUMAN,
                "codex",
                Confidence::Medium,
            ),
            ("Fix", ("Codex", "codex@openai.com"), "codex", Confidence::Medium),
            (
                "Fix\n\nCo-authored-by: Cursor Agent <cursoragent@cursor.com>",
                HUMAN,
                "cursor",
                Confidence::High,
            ),
            ("Fix\n\nMade-with: Cursor", HUMAN, "cursor", Confidence::High),
            (
                "Fix\n\nCo-authored-by: aider (openai/gpt-5) <aider@aider.chat>",
                HUMAN,
                "aider",
                Confidence::High,
            ),
            ("aider: add cache", HUMAN, "aider", Confidence::High),
            ("Fix", ("Dana Smith (aider)", "dana@example.com"), "aider", Confidence::High),
            (
                "Fix",
                (
                    "devin-ai-integration[bot]",
                    "158243242+devin-ai-integration[bot]@users.noreply.github.com",
                ),
                "devin",
                Confidence::High,
            ),
            (
                "Fix",
                (
                    "google-labs-jules[bot]",
                    "161369871+google-labs-jules[bot]@users.noreply.github.com",
                ),
                "jules",
                Confidence::High,
            ),
            (
                "Fix\n\nCo-authored-by: gemini-code-assist[bot] <176961590+gemini-code-assist[bot]@users.noreply.github.com>",
                HUMAN,
                "gemini-code-assist",
                Confidence::High,
            ),
            (
                "Fix",
                (
                    "amazon-q-developer[bot]",
                    "208079219+amazon-q-developer[bot]@users.noreply.github.com",
                ),
                "amazon-q",
                Confidence::Medium,
            ),
            ("Fix", ("Cascade", "cascade@windsurf.com"), "windsurf", Confidence::Low),
            (
                "Fix\n\nCo-authored-by: openhands <openhands@all-hands.dev>",
                HUMAN,
                "openhands",
                Confidence::High,
            ),
            (
                "Fix\n\nAmp-Thread-ID: https://ampcode.com/threads/T-1234",
                HUMAN,
                "amp",
                Confidence::High,
            ),
            (
                "Fix",
                ("factory-droid[bot]", "138933559+factory-droid[bot]@users.noreply.github.com"),
                "factory-droid",
                Confidence::High,
            ),
            (
                "Fix\n\nCo-authored-by: Roomote <roomote@roocode.com>",
                HUMAN,
                "roo-code",
                Confidence::Medium,
            ),
            (
                "Fix\n\nReplit-Commit-Author: Agent\nReplit-Commit-Session-Id: 42",
                HUMAN,
                "replit-agent",
                Confidence::High,
            ),
            (
                "Fix",
                ("cline[bot]", "205137888+cline[bot]@users.noreply.github.com"),
                "cline",
                Confidence::Low,
            ),
            (
                "Fix\n\nAssisted-by: Claude:claude-opus-4 [coccinelle]",
                HUMAN,
                "claude",
                Confidence::High,
            ),
            ("Fix\n\nGenerated-by: ChatGPT 5", HUMAN, "chatgpt", Confidence::High),
            ("Fix\n\nAI-Assisted: true", HUMAN, "ai-assisted", Confidence::Low),
            (
                "Fix\n\nCo-developed-by: gpt-5 <noreply@example.com>",
                HUMAN,
                "gpt-5",
                Confidence::Low,
            ),
        ];
        for (message, author, tool, confidence) in cases {
            let got = ai(message, author).unwrap_or_else(|| panic!("no marker found in {message:?} by {author:?}"));
            assert_eq!(
                (got.tool.as_str(), got.confidence),
                (tool, confidence),
                "{message:?} by {author:?}: {got:?}"
            );
        }
    }

    #[test]
    fn the_marker_is_recorded_exactly() {
        let got = ai("Add fraud check\n\nCo-Authored-By: Claude <noreply@anthropic.com>\n", HUMAN).expect("ai");
        assert_eq!(got.marker, "Co-Authored-By: Claude <noreply@anthropic.com>");
        let got = ai(
            "Fix",
            ("copilot-swe-agent[bot]", "198982749+Copilot@users.noreply.github.com"),
        )
        .expect("ai");
        assert_eq!(
            got.marker,
            "author: copilot-swe-agent[bot] <198982749+Copilot@users.noreply.github.com>"
        );
    }

    #[test]
    fn near_misses_do_not_match() {
        let classifier = Classifier::default();
        // A person named Claude, with their own address.
        assert_eq!(
            classifier.classify(&commit("Tune the pool", ("Claude Shannon", "claude@example.com"))),
            Authorship::Unknown
        );
        // The word "cursor" in a message, and "amp" as a word.
        assert_eq!(
            classifier.classify(&commit("Fix cursor pagination\n\nAmp up the retries", HUMAN)),
            Authorship::Unknown
        );
        // A co-author named Devin who is a person.
        assert_eq!(
            classifier.classify(&commit("Pair work\n\nCo-authored-by: Devin Jones <devin@example.com>", HUMAN)),
            Authorship::Unknown
        );
        // Co-developed-by between people is not a marker.
        assert_eq!(
            classifier.classify(&commit("Fix\n\nCo-developed-by: Ann Lee <ann@example.com>", HUMAN)),
            Authorship::Unknown
        );
        // A URL line is not a trailer.
        assert_eq!(
            classifier.classify(&commit("See https://claude.ai/code/x", HUMAN)),
            Authorship::Unknown
        );
    }

    #[test]
    fn non_ai_bots_are_their_own_class() {
        let got = Classifier::default().classify(&commit(
            "Bump serde from 1.0.1 to 1.0.2",
            ("dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com"),
        ));
        assert!(
            matches!(got, Authorship::Bot { ref name, .. } if name == "dependabot[bot]"),
            "{got:?}"
        );
        let got = Classifier::default().classify(&commit(
            "Update rust crate x",
            ("renovate[bot]", "29139614+renovate[bot]@users.noreply.github.com"),
        ));
        assert!(matches!(got, Authorship::Bot { .. }));
    }

    #[test]
    fn github_ids_survive_renames() {
        let got = ai("Fix", ("some-new-name[bot]", "198982749+renamed@users.noreply.github.com")).expect("ai");
        assert_eq!(got.tool, "copilot-agent");
    }

    #[test]
    fn squash_merge_bodies_are_scanned() {
        let message = "Add fraud scoring (#412)\n\n\
            * Add fraud scoring client\n\n\
            * Call the scorer from checkout\n\n\
            Co-Authored-By: Claude <noreply@anthropic.com>\n\n\
            * Address review\n\n\
            ---------\n\n\
            Co-authored-by: Dana Smith <dana@example.com>\n\
            Co-authored-by: Cursor Agent <cursoragent@cursor.com>";
        let got = ai(message, ("Lee Park", "lee@example.com")).expect("ai");
        assert_eq!(got.confidence, Confidence::High);
        assert!(got.tool == "claude-code" || got.tool == "cursor", "{got:?}");
    }

    #[test]
    fn trailers_match_case_insensitively() {
        assert_eq!(
            ai("Fix\n\nco-authored-by: Claude <NoReply@Anthropic.com>", HUMAN)
                .expect("ai")
                .tool,
            "claude-code"
        );
    }

    #[test]
    fn configured_rules_extend_the_defaults() {
        let extra: Rule =
            toml::from_str("tool = \"corp-agent\"\nconfidence = \"high\"\nemail = \"agent@corp.example\"\n").expect("rule");
        let classifier = Classifier::with_rules(vec![extra]);
        let got = classifier.classify(&commit("Fix", ("Corp Agent", "agent@corp.example")));
        assert_eq!(got.ai().map(|a| a.tool.as_str()), Some("corp-agent"));
        let trailer: Rule =
            toml::from_str("tool = \"x\"\nconfidence = \"low\"\ntrailer = { key = \"X-Agent\", value_prefix = \"\" }\n")
                .expect("rule");
        let got = Classifier::with_rules(vec![trailer]).classify(&commit("Fix\n\nX-Agent: v2", HUMAN));
        assert_eq!(got.ai().map(|a| a.marker.as_str()), Some("X-Agent: v2"));
    }
}
