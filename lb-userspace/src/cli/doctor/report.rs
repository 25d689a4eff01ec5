//! The report: one [`Check`] per check with its status and fix, the backend set-up, the
//! summary, and the text form of all of it (the JSON form is its `Serialize`).

use std::fmt::Write as _;

use serde::Serialize;

/// Format version of the JSON report.
pub const REPORT_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Skip => "SKIP",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    pub check: &'static str,
    pub subject: Option<String>,
    pub status: Status,
    pub message: String,
    /// What to do, one command or step per entry; empty when OK.
    pub fix: Vec<String>,
}

impl Check {
    pub(super) fn new(
        check: &'static str,
        subject: Option<&str>,
        status: Status,
        message: String,
    ) -> Self {
        Check {
            check,
            subject: subject.map(str::to_string),
            status,
            message,
            fix: Vec::new(),
        }
    }
    pub(super) fn fix(mut self, step: impl Into<String>) -> Self {
        self.fix.push(step.into());
        self
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendSetup {
    pub mode: &'static str,
    pub steps: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub skip: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub version: u32,
    pub checks: Vec<Check>,
    pub backend_setup: Vec<BackendSetup>,
    pub summary: Summary,
}

impl Report {
    /// Whether no check failed (the exit code).
    pub fn passed(&self) -> bool {
        self.summary.fail == 0
    }

    /// The human-readable report.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let name = match &c.subject {
                Some(s) => format!("{} {s}", c.check),
                None => c.check.to_string(),
            };
            let _ = writeln!(out, "{:<5} {name}: {}", c.status.label(), c.message);
            for f in &c.fix {
                let _ = writeln!(out, "      fix: {f}");
            }
        }
        if !self.backend_setup.is_empty() {
            let _ = writeln!(
                out,
                "\nOn each backend (doctor cannot see them; check there):"
            );
            for b in &self.backend_setup {
                let _ = writeln!(out, "  {}:", b.mode);
                for s in &b.steps {
                    let _ = writeln!(out, "    - {s}");
                }
            }
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} ok, {} warn, {} fail, {} skip",
            s.ok, s.warn, s.fail, s.skip
        );
        out
    }
}
