//! One prerequisite check and its verdict: what `checks` produce and the
//! report lists.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Works.
    Ok,
    /// Works in a degraded way, or only some features are affected.
    Warning,
    /// ucri cannot work (or a feature is unusable) until fixed.
    Error,
}

/// One prerequisite and what was found.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier (`subuid`, `dev_fuse`, `oci_runtime.crun`…).
    pub name: String,
    /// The verdict.
    pub status: Verdict,
    /// What was found.
    pub detail: String,
    /// How to fix it, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    /// A passing check.
    pub fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            status: Verdict::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A failing or degraded check with its fix.
    pub fn bad(
        name: impl Into<String>,
        status: Verdict,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}
