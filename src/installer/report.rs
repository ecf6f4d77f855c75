//! How `install` ends: the failure text of an installer run, the line on stderr, the exit code
//! and the `--json` object.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use tracing::Level;

use super::failures::{self, FailedPackage};
use super::locked::LockNote;
use super::options::OnFailure;
use super::source::Origin;
use super::target::{self, Marker};
use super::{Ending, Run};
use crate::error::{Error, Result};
use crate::telemetry::say;
use crate::uv::process::{Invocation, RunFailure};

/// The one `--json` object.
#[derive(Serialize)]
struct Report {
    /// `installed`, `partial` (some packages failed, `--on-failure continue`), `unchanged`,
    /// `empty`, `absent` or `failed`.
    status: &'static str,
    exit_code: u8,
    target: String,
    hash: Option<String>,
    expected_hash: Option<String>,
    /// `redis`, `fallback-file` or `marker`.
    source: Option<&'static str>,
    source_detail: Option<String>,
    package_count: Option<usize>,
    /// Packages of this requirements.txt the target holds after the run.
    installed_count: Option<usize>,
    /// Requirements that did not install, each with the first lines of its error.
    failed_packages: Vec<FailedPackage>,
    distribution_count: Option<usize>,
    /// Whether the target's packages for this hash came from the controller's lock (the
    /// marker's `installed_from_lock`).
    from_lock: Option<bool>,
    /// This run's decision about `requirements.lock`: used, or why not.
    lock: Option<LockNote>,
    /// Whether the lock was installed from the wheelhouse, or why not (absent: none given).
    #[serde(skip_serializing_if = "Option::is_none")]
    wheelhouse: Option<super::wheelhouse::WheelhouseNote>,
    installer: Option<String>,
    /// Whether uv/pip ran in this invocation.
    installer_run: bool,
    python: Option<String>,
    duration_ms: u64,
    /// `fail` or `continue`, as the flag spells it.
    on_failure: &'static str,
    marker: Option<String>,
    warnings: Vec<String>,
    error: Option<ErrorReport>,
    /// The one-line summary, as written to the termination message file.
    summary: String,
}

#[derive(Serialize)]
struct ErrorReport {
    reason: &'static str,
    message: String,
}

impl Run {
    /// Report the result; return the exit code.
    pub(super) fn finish(&mut self, result: Result<Ending>) -> u8 {
        let mut report = self.report();
        report.summary = self.summary(&result);
        self.write_termination(&report.summary);
        match result {
            Ok(outcome) => self.succeeded(&mut report, outcome),
            Err(e) => self.failed(&mut report, &e),
        }
        if self.options.json {
            match serde_json::to_string(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => say(
                    Level::ERROR,
                    &format!("error: cannot print the JSON report: {e}"),
                ),
            }
        }
        report.exit_code
    }

    /// What is known whatever the outcome; `failed` until said otherwise.
    fn report(&mut self) -> Report {
        let target = self
            .facts
            .target
            .as_deref()
            .unwrap_or(self.options.target.path());
        let origin = self.facts.origin.as_ref();
        Report {
            status: "failed",
            exit_code: 0,
            target: target.display().to_string(),
            hash: self.facts.hash.clone(),
            expected_hash: self.options.expected_hash.clone(),
            source: origin.map(Origin::kind),
            source_detail: origin.map(Origin::describe),
            package_count: self.facts.package_count,
            installed_count: self.facts.installed_count,
            failed_packages: self.facts.failed.clone(),
            distribution_count: None,
            from_lock: None,
            lock: self.facts.lock.clone(),
            wheelhouse: self.facts.wheelhouse.clone(),
            installer: None,
            installer_run: false,
            python: self.facts.python.as_ref().map(|p| p.display().to_string()),
            duration_ms: self.started.elapsed().as_millis() as u64,
            on_failure: self.options.on_failure.name(),
            marker: None,
            warnings: std::mem::take(&mut self.warnings),
            error: None,
            summary: String::new(),
        }
    }

    /// The termination message: `installed K/N[; failed: …]`, or the error's first line.
    fn summary(&self, result: &Result<Ending>) -> String {
        match result {
            Ok(Ending::Installed(m)) => failures::summary(
                m.package_count - m.failed.len(),
                m.package_count,
                &m.failed,
                false,
            ),
            Ok(Ending::Unchanged { marker: m, .. }) => {
                failures::summary(m.package_count, m.package_count, &[], false)
            }
            Ok(Ending::Empty { .. }) => failures::summary(0, 0, &[], false),
            Ok(Ending::Absent { why }) => failures::one_line(&format!(
                "nothing to install: no requirements found ({why})"
            )),
            Err(_) if !self.facts.failed.is_empty() => failures::summary(
                self.facts.installed_count.unwrap_or(0),
                self.facts.package_count.unwrap_or(self.facts.failed.len()),
                &self.facts.failed,
                true,
            ),
            Err(e) => failures::one_line(&e.to_string()),
        }
    }

    /// Best effort: a termination message that cannot be written must not change the outcome.
    fn write_termination(&self, line: &str) {
        let Some(path) = failures::termination_path(self.options.termination_log.as_deref()) else {
            return;
        };
        if let Err(e) = failures::write_termination(&path, line) {
            say(
                Level::WARN,
                &format!(
                    "warning: cannot write the termination message to {}: {e}",
                    path.display()
                ),
            );
        }
    }

    fn succeeded(&self, report: &mut Report, outcome: Ending) {
        let origin = self
            .facts
            .origin
            .as_ref()
            .map(Origin::describe)
            .unwrap_or_default();
        report.marker = Some(
            Path::new(&report.target)
                .join(target::MARKER)
                .display()
                .to_string(),
        );
        record(report, &outcome);
        let (level, text) = success_line(report, &outcome, &origin);
        say(level, &text);
    }

    fn failed(&self, report: &mut Report, e: &Error) {
        // A signal wins over --on-failure: the pod is going away, its caller must see why.
        let code = if let Some(sig) = self.interrupted {
            128u8.saturating_add(sig as i32 as u8)
        } else if matches!(e, Error::Config(_)) || self.options.on_failure == OnFailure::Fail {
            e.exit_code()
        } else {
            0
        };
        let note = self
            .target_note
            .as_ref()
            .map(|n| format!("\n{n}"))
            .unwrap_or_default();
        if code == 0 {
            say(
                Level::WARN,
                &format!(
                    "warning: install failed; continuing because of --on-failure continue: {e}{note}"
                ),
            );
        } else {
            say(Level::ERROR, &format!("error: {e}{note}"));
        }
        report.exit_code = code;
        report.error = Some(ErrorReport {
            reason: e.reason(),
            message: e.to_string(),
        });
    }

    /// The error of a failed installer run, with the tail of its output.
    pub(super) fn failure(&mut self, failure: RunFailure, inv: &Invocation) -> Error {
        let label = inv.label;
        let with_tail = |msg: String, tail: &str| {
            if tail.is_empty() {
                msg
            } else {
                format!("{msg}; its last output:\n{tail}")
            }
        };
        match failure {
            RunFailure::Spawn(e) => {
                Error::Install(format!("cannot run {}: {e}", inv.program.display()))
            }
            RunFailure::Exited { status, tail } => {
                let how = match (status.code(), status.signal()) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(sig)) => format!("signal {}", signal_name(sig)),
                    _ => status.to_string(),
                };
                Error::Install(with_tail(format!("{label} failed ({how})"), &tail))
            }
            RunFailure::TimedOut { after, tail } => Error::Install(with_tail(
                format!(
                    "{label} did not finish within {} (--timeout); stopped its process group",
                    human_duration(after)
                ),
                &tail,
            )),
            RunFailure::Interrupted { signal } => {
                self.interrupted_by(signal, &format!("; stopped {label}'s process group"))
            }
        }
    }

    /// Record the signal that stops the install (it decides the exit code), and say so.
    pub(super) fn interrupted_by(&mut self, signal: Signal, rest: &str) -> Error {
        self.interrupted = Some(signal);
        Error::Install(format!("interrupted by {}{rest}", signal.as_str()))
    }
}

fn signal_name(sig: i32) -> String {
    Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

pub(super) fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// The report's fields that say how the install ended.
fn record(report: &mut Report, outcome: &Ending) {
    let mut from_marker = |status, m: &Marker| {
        report.status = status;
        report.installer = Some(m.installer.clone());
        report.distribution_count = Some(m.distribution_count);
        report.from_lock = Some(m.installed_from_lock);
    };
    match outcome {
        Ending::Installed(m) if !m.failed.is_empty() => {
            from_marker("partial", m);
            report.installer_run = true;
        }
        Ending::Installed(m) => {
            from_marker("installed", m);
            report.installer_run = true;
        }
        Ending::Unchanged {
            marker: m,
            by_expected_hash,
        } => {
            from_marker("unchanged", m);
            if *by_expected_hash {
                report.source = Some("marker");
                report.source_detail = Some("--expected-hash matches the marker".into());
            }
        }
        Ending::Empty { marker: m, .. } => from_marker("empty", m),
        Ending::Absent { .. } => {
            report.status = "absent";
            report.marker = None;
        }
    }
}

/// The line on stderr of an install that ended well, and its level (a partial install warns).
fn success_line(report: &Report, outcome: &Ending, origin: &str) -> (Level, String) {
    let target = &report.target;
    let secs = report.duration_ms as f64 / 1000.0;
    match outcome {
        Ending::Installed(m) if !m.failed.is_empty() => {
            let mut text = format!(
                "warning: {} from the {origin}, sha256 {}, with {} in {secs:.2} s into \
                 {target}; continuing because of --on-failure continue",
                report.summary, m.hash, m.installer
            );
            for f in &m.failed {
                text.push_str(&format!(
                    "\n  {}: {}",
                    f.requirement,
                    f.error.replace('\n', " / ")
                ));
            }
            (Level::WARN, text)
        }
        Ending::Installed(m) => (
            Level::INFO,
            format!(
                "installed: {} package(s) ({} distribution(s)) from the {origin}{}, sha256 {}, \
                 with {} in {secs:.2} s into {target}",
                m.package_count,
                m.distribution_count,
                if m.installed_from_lock {
                    ", as locked (hash-checked)"
                } else {
                    ""
                },
                m.hash,
                m.installer
            ),
        ),
        Ending::Unchanged {
            marker: m,
            by_expected_hash,
        } => {
            let how = if *by_expected_hash {
                " (matched --expected-hash; no source read)"
            } else {
                ""
            };
            (
                Level::INFO,
                format!(
                    "already installed: {target} holds sha256 {} ({} package(s), installed {} with {}); \
                     skipped, installer not run{how}",
                    m.hash, m.package_count, m.installed_at, m.installer,
                ),
            )
        }
        Ending::Empty { marker: m, removed } => {
            let removed = match removed {
                Some(h) => format!("; removed the previous install (sha256 {h}) from {target}"),
                None => String::new(),
            };
            (
                Level::INFO,
                format!(
                    "nothing to install: requirements.txt from the {origin} (sha256 {}) lists no packages{removed}",
                    m.hash,
                ),
            )
        }
        Ending::Absent { why } => (
            Level::INFO,
            format!("nothing to install: no requirements found ({why}); {target} left as it is"),
        ),
    }
}
