//! `ucri info`: a prerequisite doctor in the spirit of `podman info`. Every
//! problem comes with the command that fixes it.

mod check;
mod checks;

use serde::Serialize;

pub use check::{Check, Verdict};

use crate::config::Config;

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
