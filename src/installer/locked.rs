//! Whether `install` installs the controller's lock or resolves requirements.txt itself.
//!
//! The lock is `requirements.lock` beside the fallback file (the ConfigMap snapshot holds both).
//! It is used only when it parses, was resolved from the very content being installed, and was
//! resolved for an interpreter the worker's `python3` is (asked, not assumed). Then exactly its
//! distributions are installed, `--no-deps --require-hashes`: what the controller resolved is
//! what every pod of that content gets, and a file whose bytes changed on the index is refused.
//! In every other case requirements.txt is installed as before, and the reason is logged and
//! reported: a missing lock is normal (`resolve: Pod`, docker compose), the others are not.
//!
//! The lock is user input too (anyone who can write the ConfigMap can write it): its text goes
//! through the same policy as requirements.txt, and a line the policy refuses fails the install
//! before anything runs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Run;
use super::command;
use crate::error::{Error, Result};
use crate::lock::{LOCK_FILE, Lock, WORKER_SCRIPT, Worker, pins, satisfy};
use crate::policy::{Accepted, Policy};
use crate::requirements::{RequirementsFile, content_hash};

/// What was decided about the lock, for the log and the `--json` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct LockNote {
    /// Whether the locked distributions were installed.
    pub used: bool,
    /// The lock file looked for (none without `--fallback-file`).
    pub file: Option<PathBuf>,
    /// Why requirements.txt was installed instead (`None` when the lock was used).
    pub reason: Option<String>,
}

/// What to install.
pub(super) enum Choice {
    /// The lock's distributions, checked by the policy.
    Lock { lock: Lock, accepted: Accepted },
    /// requirements.txt itself, and why not the lock.
    Requirements { why: String },
}

/// `requirements.lock` beside the fallback file.
pub(super) fn lock_path(fallback_file: &Path) -> PathBuf {
    fallback_file
        .parent()
        .unwrap_or(Path::new(""))
        .join(LOCK_FILE)
}

/// What is being installed, which the lock must be a lock of.
pub(super) struct Installing<'a> {
    /// The content hash being installed.
    pub hash: &'a str,
    /// requirements.txt itself.
    pub content: &'a str,
    /// The digest the lock of this content must have (`--lock-sha256`, when it applies to
    /// this content).
    pub lock_sha256: Option<&'a str>,
}

/// Decide from plain values: the lock file's text (`None`: there is none), what is being
/// installed and the worker's interpreter (`Err`: why it could not be asked). A lock whose
/// digest is not the admitted one, one the policy refuses and one that is not a lock of
/// requirements.txt are errors naming what differs.
pub(super) fn choose(
    file: &Path,
    text: Option<&str>,
    installing: &Installing<'_>,
    worker: std::result::Result<&Worker, &str>,
    policy: &Policy,
) -> Result<Choice> {
    let not = |why: String| Ok(Choice::Requirements { why });
    let shown = file.display();
    let refuse = |reason: String| Error::Snapshot {
        path: file.to_path_buf(),
        reason,
    };
    let Some(text) = text else {
        if let Some(wanted) = installing.lock_sha256 {
            return Err(refuse(format!(
                "the pod was admitted with the lock sha256 {wanted} (status.lock.sha256) for \
                 this content, but there is no lock"
            )));
        }
        return not(format!("no {shown} beside the fallback file"));
    };
    let parsed = Lock::parse(text);
    // A lock of another content is not used whatever its digest (requirements.txt is then
    // resolved, its own pins honoured by the installer): during a rollout the snapshot may
    // already hold the next content's lock.
    if let Ok(lock) = &parsed
        && !lock.resolves(installing.hash)
    {
        return not(format!(
            "{shown} was resolved from content sha256 {}, not the sha256 {} being installed",
            lock.content_hash, installing.hash
        ));
    }
    if let Some(wanted) = installing.lock_sha256
        && content_hash(text) != wanted
    {
        return Err(refuse(format!(
            "its sha256 is {}, not the sha256 {wanted} of the lock the pod was admitted with \
             (status.lock.sha256): it was changed since the controller wrote it",
            content_hash(text)
        )));
    }
    let lock = match parsed {
        Ok(lock) => lock,
        Err(e) => return not(format!("{shown} is damaged: {e}")),
    };
    let worker = match worker {
        Ok(w) => w,
        Err(why) => return not(format!("cannot ask the worker's interpreter: {why}")),
    };
    if let Some(why) = lock.interpreter.mismatch(worker) {
        return not(format!("{shown} does not fit this worker: {why}"));
    }
    // The file as read, so that the line numbers of a refusal are the file's.
    let accepted = policy
        .check_content(text)
        .map_err(|v| refuse(format!("the lock is refused: {v}")))?;
    // Only called for content with packages: a lock of none would install nothing and mark the
    // content installed.
    if accepted.package_count == 0 {
        return not(format!("{shown} lists no distributions"));
    }
    satisfies(&lock, installing.content, worker).map_err(|why| {
        refuse(format!(
            "the lock is not a lock of requirements.txt (sha256 {}): {why}",
            installing.hash
        ))
    })?;
    Ok(Choice::Lock { lock, accepted })
}

/// Whether the lock's pins are those requirements.txt asks for on this worker: its `--hash`
/// pins kept ([`pins`]), and the rules of [`satisfy`]; the error lists every difference.
fn satisfies(lock: &Lock, content: &str, worker: &Worker) -> std::result::Result<(), String> {
    let pinned = lock.pinned()?;
    let file = RequirementsFile::parse(content);
    let env = satisfy::environment(worker)?;
    let mut problems = satisfy::problems(&file, &pinned, &env);
    if let Err(why) = pins::check(&file, &pinned) {
        problems.push(why);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

impl Run {
    /// The lock when it can be used, else requirements.txt; either way the log says which and
    /// why, and the report carries it.
    pub(super) async fn choose_lock(
        &mut self,
        installing: &Installing<'_>,
        policy: &Policy,
        python: Option<&Path>,
    ) -> Result<Choice> {
        let Some(fallback) = self.options.fallback_file.clone() else {
            let why = "no --fallback-file, so no requirements.lock beside it".to_string();
            return Ok(self.noted(None, Choice::Requirements { why }, false));
        };
        let file = lock_path(&fallback);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text),
            // Normal without a controller's lock (`resolve: Pod`, an older snapshot), unless
            // the pod was admitted with one (`choose` refuses that).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                let why = format!("cannot read {}: {e}", file.display());
                return Ok(self.noted(Some(file), Choice::Requirements { why }, true));
            }
        };
        let worker = match (&text, python) {
            (None, _) => Err("no lock".to_string()),
            (Some(_), None) => Err(format!("{} not found", self.options.python)),
            (Some(_), Some(python)) => {
                // A stop or --timeout ends the run here too; a probe that fails (or does not
                // answer within its own 60 s) only sets the lock aside.
                match self
                    .phase(
                        "asking the worker's interpreter",
                        command::ask(python, WORKER_SCRIPT, None),
                    )
                    .await
                {
                    Ok(out) => Worker::parse(&out),
                    Err(e) if self.interrupted.is_some() || self.timed_out() => return Err(e),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let worker = worker.as_ref().map_err(String::as_str);
        let choice = choose(&file, text.as_deref(), installing, worker, policy)?;
        let warn = text.is_some();
        Ok(self.noted(Some(file), choice, warn))
    }

    /// Log and record the choice; `warn`: not using the lock is worth a warning.
    fn noted(&mut self, file: Option<PathBuf>, choice: Choice, warn: bool) -> Choice {
        let reason = match &choice {
            Choice::Lock { lock, .. } => {
                tracing::info!(
                    "installing the lock {} ({} distribution(s) resolved for {}) with --no-deps \
                     --require-hashes",
                    file.as_deref().unwrap_or(Path::new(LOCK_FILE)).display(),
                    lock.pins().len(),
                    lock.interpreter.describe()
                );
                None
            }
            Choice::Requirements { why } => {
                let text = format!("not using a lock, resolving requirements.txt: {why}");
                if warn {
                    tracing::warn!("{text}");
                    self.warnings.push(text);
                } else {
                    tracing::info!("{text}");
                }
                Some(why.clone())
            }
        };
        self.facts.lock = Some(LockNote {
            used: reason.is_none(),
            file,
            reason,
        });
        choice
    }
}

#[cfg(test)]
mod tests;
