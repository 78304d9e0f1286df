//! Who wrote a commit, as far as its markers tell: the typed verdict the
//! classifier gives and events, alerts, the API and the pages carry. A leaf
//! of shared types, so events need not depend on the attribution stage.

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
