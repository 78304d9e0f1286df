//! Who wrote a commit, as far as its markers tell: the typed verdict the
//! classifier gives and events, alerts, the API and the pages carry, and
//! the marker rules (`[[attribution.rules]]`) it applies. A leaf of shared
//! types, so events and the configuration need not depend on the
//! attribution stage.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// The verdict on one commit, with the exact marker that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AiAuthorship {
    pub tool: String,
    pub confidence: Confidence,
    pub marker: String,
}

/// How a rule recognises its marker.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Matcher {
    /// An author, committer or co-author e-mail, case-insensitive.
    Email(String),
    /// The numeric id of a GitHub noreply address (`<id>+<login>@users.noreply.github.com`).
    GithubId(u64),
    /// The login of a GitHub noreply address, for bots whose id is not known.
    GithubLogin(String),
    /// A trailer (`Key: value`) whose value starts with the given text; an
    /// empty prefix matches any value.
    Trailer { key: String, value_prefix: String },
    /// Any line of the message containing the text, case-insensitive.
    LineContains(String),
    /// An author or committer name ending with the text.
    NameSuffix(String),
    /// The subject line starting with the text.
    SubjectPrefix(String),
}

/// One rule: a matcher and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub tool: String,
    pub confidence: Confidence,
    #[serde(flatten)]
    pub matcher: Matcher,
}
