//! The batch install, and when it fails, each requirement on its own.
//!
//! Every attempt installs into the one staging folder, so what installed stays for the swap and
//! later attempts see it (uv treats `--target` as the environment: shared dependencies are not
//! installed twice). Each attempt reads the file's option lines (index URLs, `--only-binary`, …)
//! and its own requirement with its own `--hash` options, under the same policy, and gets what
//! is left of the one `--timeout` deadline: a hanging attempt ends at that deadline, and the
//! requirements after it are recorded as not attempted rather than given time of their own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Run;
use super::command::{self, Paths};
use super::failures::FailedPackage;
use super::options::Options;
use super::target::{Marker, Staging};
use crate::error::{Error, Result};
use crate::policy::Accepted;
use crate::requirements::{RequirementsFile, Single};
use crate::uv::process::{self, Invocation, RunFailure};

/// Less than this left of the deadline: an attempt could not even start the installer.
const MIN_ATTEMPT: Duration = Duration::from_millis(200);

/// What every attempt of one install shares.
pub(super) struct Runner<'a> {
    /// uv, or the worker's python for pip.
    pub program: PathBuf,
    pub python: &'a Path,
    pub staging: &'a Staging,
    pub target: &'a Path,
    /// The end of `--timeout`, for the batch and every attempt after it together.
    pub deadline: Instant,
    /// Installing a lock: `--no-deps --require-hashes`.
    pub locked: bool,
}

impl Runner<'_> {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The installer reading `text` (written to `file` in the staging root).
    fn invocation(&self, options: &Options, file: &str, text: &str) -> Result<Invocation> {
        let requirements = self.staging.root().join(file);
        // The installers read the text rendered from the checked model, never the stored
        // bytes: what the policy counted is byte-for-byte what uv or pip reads.
        std::fs::write(&requirements, text).map_err(|e| Error::io("writing", &requirements, e))?;
        let paths = Paths {
            python: self.python,
            staging: self.staging,
            requirements: &requirements,
            target: self.target,
            locked: self.locked,
        };
        command::invocation(options, self.program.clone(), &paths)
    }
}

/// What the attempts left uninstalled.
#[derive(Default)]
pub(super) struct Attempted {
    pub failed: Vec<FailedPackage>,
}

impl Run {
    /// The whole file at once; when that fails, each requirement on its own. With `partial`,
    /// only the requirements that failed in that earlier run, each on its own.
    pub(super) async fn attempt(
        &mut self,
        run: &Runner<'_>,
        accepted: &Accepted,
        partial: Option<&Marker>,
        version: &str,
    ) -> Result<Attempted> {
        // Re-reading the canonical text gives back the checked model (a tested round trip).
        let each = RequirementsFile::parse(&accepted.installer_text).installer_texts_each();
        let name = self.options.installer.name();
        if let Some(previous) = partial {
            let retry: BTreeSet<&str> = previous.failed.iter().map(|f| f.name.as_str()).collect();
            let todo: Vec<Single> = each
                .into_iter()
                .filter(|s| retry.contains(s.name.as_str()))
                .collect();
            tracing::info!(
                "retrying with {name} the {} package(s) that failed last time, each on its own, \
                 keeping the {} installed: {}",
                todo.len(),
                accepted.package_count.saturating_sub(previous.failed.len()),
                names(&todo)
            );
            return self.each(run, &todo).await;
        }
        tracing::info!(
            "installing {} package(s) with {name} for Python {version} ({})",
            accepted.package_count,
            run.python.display()
        );
        let inv = run.invocation(&self.options, "requirements.txt", &accepted.installer_text)?;
        tracing::debug!("running {}", inv.display());
        // The batch is the first attempt: the whole of --timeout (as its message says).
        match process::run(&inv, self.options.timeout, &self.stop).await {
            Ok(()) => Ok(Attempted::default()),
            Err(RunFailure::Exited { .. }) if each.len() > 1 => {
                tracing::warn!(
                    "{name} failed for the whole file; installing each of its {} requirements on \
                     its own",
                    each.len()
                );
                self.each(run, &each).await
            }
            Err(failure) => {
                // One requirement: the batch was its attempt.
                if let (RunFailure::Exited { tail, .. }, [single]) = (&failure, each.as_slice()) {
                    self.facts.failed =
                        vec![FailedPackage::from_output(&single.name, &single.spec, tail)];
                    self.facts.installed_count = Some(0);
                }
                Err(self.failure(failure, &inv))
            }
        }
    }

    /// Each of `todo` on its own, in file order, within what is left of the deadline.
    async fn each(&mut self, run: &Runner<'_>, todo: &[Single]) -> Result<Attempted> {
        let mut failed = Vec::new();
        for (i, single) in todo.iter().enumerate() {
            let left = run.left();
            if left < MIN_ATTEMPT {
                failed.push(FailedPackage::not_attempted(&single.name, &single.spec));
                continue;
            }
            let file = format!("requirements-{}.txt", i + 1);
            let inv = run.invocation(&self.options, &file, &single.text())?;
            tracing::info!("installing {} on its own", single.spec);
            let failure = match process::run(&inv, left, &self.stop).await {
                Ok(()) => continue,
                Err(RunFailure::Exited { tail, .. }) => {
                    FailedPackage::from_output(&single.name, &single.spec, &tail)
                }
                Err(RunFailure::TimedOut { after, tail }) => {
                    FailedPackage::timed_out(&single.name, &single.spec, after, &tail)
                }
                Err(other) => return Err(self.failure(other, &inv)),
            };
            tracing::warn!(
                "{} did not install ({}): {}",
                single.spec,
                failure.reason,
                failure.error.replace('\n', " / ")
            );
            failed.push(failure);
        }
        Ok(Attempted { failed })
    }
}

fn names(todo: &[Single]) -> String {
    todo.iter()
        .map(|s| s.spec.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The error of an install that swaps nothing in because of `failed`: `installed` of `total`
/// did install (and are not applied, unless a `partial` install holds them already).
pub(super) fn failed_error(
    failed: &[FailedPackage],
    installed: usize,
    total: usize,
    partial: bool,
) -> Error {
    let list = failed
        .iter()
        .map(|f| format!("{} ({})", f.name, f.reason))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = if partial {
        format!(
            "{} of {total} package(s) still do not install: {list}; the {installed} installed \
             earlier stay",
            failed.len()
        )
    } else if installed == 0 {
        format!("none of the {total} package(s) installed: {list}")
    } else {
        format!(
            "{} of {total} package(s) did not install: {list}; the {installed} that did are not \
             applied (--on-failure fail)",
            failed.len()
        )
    };
    for f in failed {
        text.push_str(&format!(
            "\n  {}: {}",
            f.requirement,
            f.error.replace('\n', " / ")
        ));
    }
    Error::Install(text)
}
