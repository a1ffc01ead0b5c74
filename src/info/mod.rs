//! `ucri info`: a prerequisite doctor in the spirit of `podman info`. Every
//! problem comes with the command that fixes it.

mod checks;

use serde::Serialize;

use crate::config::Config;

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

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// ucri's version.
    pub version: &'static str,
    /// Every check, in a stable order.
    pub checks: Vec<Check>,
    /// Count of errors.
    pub errors: usize,
    /// Count of warnings.
    pub warnings: usize,
}

impl Report {
    fn new(checks: Vec<Check>) -> Report {
        let count = |v| checks.iter().filter(|c| c.status == v).count();
        Report {
            version: env!("CARGO_PKG_VERSION"),
            errors: count(Verdict::Error),
            warnings: count(Verdict::Warning),
            checks,
        }
    }

    fn render_text(&self) -> String {
        let mut out = format!("ucri {} prerequisites\n", self.version);
        for c in &self.checks {
            let mark = match c.status {
                Verdict::Ok => "ok  ",
                Verdict::Warning => "WARN",
                Verdict::Error => "FAIL",
            };
            out.push_str(&format!("  {mark}  {:<22} {}\n", c.name, c.detail));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("        {:<22} fix: {fix}\n", ""));
            }
        }
        out.push_str(&format!(
            "{} error(s), {} warning(s)\n",
            self.errors, self.warnings
        ));
        out
    }
}

/// Runs every check and prints the report; exit code 1 when any check failed.
pub fn run(config: &Config, json: bool) -> anyhow::Result<i32> {
    let report = Report::new(checks::all(config));
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render_text());
    }
    Ok(if report.errors > 0 { 1 } else { 0 })
}
