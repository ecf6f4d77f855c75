//! `install`: the step every worker runs before it starts (an init container in a pod, the
//! start-up command under docker compose).
//!
//! 1. **Fetch** requirements.txt: Redis (bounded retries, overall deadline) → the fallback file
//!    (the ConfigMap snapshot) → nothing ([`source`]). Every payload's hash is verified.
//! 2. **Check** it against the [policy](crate::policy) before anything runs.
//! 3. **Skip** when the target's marker already names this hash (a restart costs a file read).
//! 4. **Install** with `uv pip install --target` (default) or `python -m pip install --target`
//!    for the worker's own interpreter, into a staging folder inside the target, under a
//!    deadline that stops the installer's whole process group ([`process`]). What is installed
//!    is the controller's lock beside the fallback file when it fits the content and the
//!    worker's interpreter (exactly its distributions, hash-checked), else requirements.txt,
//!    saying why ([`locked`]).
//! 5. **Swap** the staged entries in and write the marker last ([`target`]): a killed or failed
//!    install never leaves a marker that claims success, and leaves the previous install
//!    importable.
//!
//!    When the batch fails, each requirement is installed on its own into the same staging
//!    folder, within what is left of the same deadline ([`each`]): one bad package fails only
//!    itself. The failures go into the marker, the `--json` report and the termination message
//!    ([`failures`]); a marker that lists failures makes the next run of the same hash retry
//!    those only, keeping what installed.
//!
//! Failures follow `--on-failure`: `fail` (default, for init containers: a broken change halts
//! the rolling update) exits non-zero and swaps nothing in, not even the packages that did
//! install; `continue` (Bifrost's worker behaviour) warns and exits 0, swapping in what
//! installed (or, when nothing did, leaving the target as it was). Invalid flags and
//! configuration always fail (exit 2).

mod command;
mod each;
pub(crate) mod failures;
mod locked;
mod options;
mod report;
pub(crate) mod source;
pub(crate) mod target;
mod wheelhouse;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{Error, Result};
use crate::policy::{Accepted, Policy};
use crate::shutdown::{self, Stop};
use crate::uv::which;
use failures::FailedPackage;
use locked::Choice;
pub(crate) use options::Options;
pub(crate) use options::Target as InstallTarget;
pub use options::{Installer, OnFailure};
use source::{Fetched, Sourced, Sources};
use target::{Marker, Staging, Target};
pub(crate) use wheelhouse::{
    WHEELHOUSE_ACCESS_KEY_ENV, WHEELHOUSE_SECRET_KEY_ENV, WheelhouseSource,
};

/// Run `install`; returns the process exit code (errors are reported here, not by the caller).
pub(crate) async fn run(options: Options) -> Result<u8> {
    let mut run = Run {
        started: Instant::now(),
        stop: shutdown::on_signals().1,
        interrupted: None,
        warnings: Vec::new(),
        facts: Facts::default(),
        target_note: None,
        options,
    };
    let result = run.install().await;
    Ok(run.finish(result))
}

enum Ending {
    Installed(Marker),
    /// `by_expected_hash`: decided from `--expected-hash` alone, no source was read.
    Unchanged {
        marker: Marker,
        by_expected_hash: bool,
    },
    Empty {
        marker: Marker,
        removed: Option<String>,
    },
    Absent {
        why: String,
    },
}

/// What is known so far, for the report (also on failure).
#[derive(Default)]
struct Facts {
    target: Option<PathBuf>,
    hash: Option<String>,
    origin: Option<source::Origin>,
    package_count: Option<usize>,
    python: Option<PathBuf>,
    /// Packages of this hash the target holds after the run, when packages were installed.
    installed_count: Option<usize>,
    /// Requirements that did not install in this run.
    failed: Vec<FailedPackage>,
    /// Whether `requirements.lock` was installed, or why not.
    lock: Option<locked::LockNote>,
    /// Whether the lock came from the wheelhouse, or why not.
    wheelhouse: Option<wheelhouse::WheelhouseNote>,
}

/// One `install`, from the flags to the report.
struct Run {
    options: Options,
    started: Instant,
    stop: Stop,
    /// The signal that stopped the install: the exit code is `128 + signal`.
    interrupted: Option<Signal>,
    warnings: Vec<String>,
    facts: Facts,
    /// What the target holds, for failure messages.
    target_note: Option<String>,
}

/// The worker's interpreter as found, and its real path (the marker records it: a different
/// interpreter needs a fresh install even for the same hash).
struct Python {
    found: Option<PathBuf>,
    real: Option<String>,
}

impl Run {
    async fn install(&mut self) -> Result<Ending> {
        let found = which(&self.options.python);
        let dir = self.target_dir(found.as_deref()).await?;
        self.facts.target = Some(dir.clone());
        let sources = Sources {
            redis: self.options.redis.clone(),
            redis_deadline: self.options.redis_deadline,
            fallback_file: self.options.fallback_file.clone(),
            expected_hash: self.options.expected_hash.clone(),
        };
        let policy = self.policy();
        let python = Python {
            real: found
                .as_ref()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .map(|p| p.display().to_string()),
            found,
        };
        self.facts.python = python.found.clone();
        let mut target = self.lock(&dir).await?;

        // A restart of the same pod: the marker already has the hash the pod was admitted for.
        if let Some(expected) = &sources.expected_hash
            && let Ok(m) = target.current(expected, python.real.as_deref())
        {
            self.facts.hash = Some(m.hash.clone());
            self.facts.package_count = Some(m.package_count);
            return Ok(Ending::Unchanged {
                marker: m.clone(),
                by_expected_hash: true,
            });
        }
        let sourced = match self.fetch(&sources).await? {
            Fetched::Found(s) => s,
            Fetched::Absent { why } => return Ok(Ending::Absent { why }),
        };
        let accepted = self.check(&sourced, &policy)?;
        let hash = &sourced.payload.hash;
        match target.current(hash, python.real.as_deref()) {
            Ok(m) => {
                return Ok(Ending::Unchanged {
                    marker: m.clone(),
                    by_expected_hash: false,
                });
            }
            Err(why) => tracing::info!("{why}: installing sha256 {hash}"),
        }
        if accepted.package_count == 0 {
            return self.empty(&mut target, new_marker(&sourced, &accepted, &python));
        }
        let lock_sha256 = self.lock_sha256_for(hash);
        let installing = locked::Installing {
            hash,
            content: &sourced.payload.content,
            lock_sha256: lock_sha256.as_deref(),
        };
        let (accepted, from_lock) = match self
            .choose_lock(&installing, &policy, python.found.as_deref())
            .await?
        {
            Choice::Lock { accepted, lock } => {
                self.use_wheelhouse(&lock).await?;
                (accepted, true)
            }
            Choice::Requirements { .. } => (accepted, false),
        };
        self.facts.package_count = Some(accepted.package_count);
        let mut marker = new_marker(&sourced, &accepted, &python);
        marker.installed_from_lock = from_lock;
        // An earlier partial run retries its failed entries only if they are entries of the
        // same kind (locked distributions, or requirements).
        let partial = target
            .partial(hash, python.real.as_deref())
            .filter(|m| m.installed_from_lock == from_lock)
            .cloned();
        let ended = self
            .install_packages(&mut target, &accepted, python.found, marker, partial)
            .await;
        if let Some(dir) = wheelhouse::downloaded_dir(self) {
            // Only the installed packages are kept: the wheels are in the wheelhouse.
            let _ = std::fs::remove_dir_all(dir);
        }
        ended
    }

    /// The target folder, absolute; invalid flags are configuration errors (always exit 2).
    /// With `--user-base` it is the interpreter's user site under that base, created if missing.
    async fn target_dir(&mut self, python: Option<&Path>) -> Result<PathBuf> {
        let o = &self.options;
        if o.redis.is_none() && o.fallback_file.is_none() {
            return Err(Error::Config(
                "nothing to install from: set --redis-url (REDIS_URL or BIFROST_REDIS_URL) and/or \
                 --fallback-file (BIFROST_INSTALL_FALLBACK_FILE)"
                    .into(),
            ));
        }
        let (flag, path) = match &o.target {
            options::Target::Dir(p) => ("--target", p),
            options::Target::UserBase(p) => ("--user-base", p),
        };
        if path.as_os_str().is_empty() {
            return Err(Error::Config(format!("{flag} must not be empty")));
        }
        let dir = std::path::absolute(path).map_err(|e| Error::io("resolving", path, e))?;
        if dir.parent().is_none() {
            return Err(Error::Config(format!(
                "{flag} / would mix packages into the root folder; use a dedicated folder"
            )));
        }
        let options::Target::UserBase(_) = &o.target else {
            return Ok(dir);
        };
        let python = command::require_python(&o.python, python.map(Path::to_path_buf))?;
        let site = self
            .phase(
                "asking the worker's interpreter for its user site",
                command::user_site(&python, &dir),
            )
            .await?;
        std::fs::create_dir_all(&site).map_err(|e| Error::io("creating", &site, e))?;
        tracing::info!(
            "PYTHONUSERBASE={}: installing into the user site {}",
            dir.display(),
            site.display()
        );
        Ok(site)
    }

    /// One step before the installer runs (asking the worker's interpreter), under the stops
    /// the installer has: a signal, and `--timeout` counted from the start of `install` (the
    /// installer's own deadline starts when it does).
    async fn phase<T>(
        &mut self,
        what: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let timeout = self.options.timeout;
        let deadline = tokio::time::Instant::from_std(self.started + timeout);
        tokio::select! {
            done = work => done,
            sig = self.stop.signalled() => Err(self.interrupted_by(sig, &format!(" while {what}"))),
            _ = tokio::time::sleep_until(deadline) => Err(Error::Install(format!(
                "did not finish within {} (--timeout) while {what}",
                report::human_duration(timeout)
            ))),
        }
    }

    /// Whether `--timeout`, counted from the start, has passed.
    fn timed_out(&self) -> bool {
        self.started.elapsed() >= self.options.timeout
    }

    /// `--lock-sha256` when the content being installed is the one it was given for (the
    /// content `--expected-hash` names); another content's lock has no known digest.
    fn lock_sha256_for(&self, hash: &str) -> Option<String> {
        let o = &self.options;
        let admitted = o.expected_hash.as_deref()?;
        let digest = o.lock_sha256.clone()?;
        if crate::requirements::hashes_equal(admitted, hash) {
            Some(digest)
        } else {
            tracing::warn!(
                "--lock-sha256 is the lock of sha256 {admitted}, not of the sha256 {hash} being \
                 installed: this lock's digest is not known"
            );
            None
        }
    }

    /// The administrator's policy, plus the indexes this install was itself told to use: a
    /// requirements.txt may select those too.
    fn policy(&self) -> Policy {
        let o = &self.options;
        let mut policy = o.policy.clone();
        policy.allowed_index_urls.extend(
            o.index_url
                .iter()
                .chain(&o.extra_index_url)
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
        );
        policy.only_binary |= o.only_binary;
        policy
    }

    /// The target, locked: one install per target at a time; waiting stays interruptible.
    async fn lock(&mut self, dir: &Path) -> Result<Target> {
        let lock = target::lock_file(dir)?;
        let mut waiting = false;
        while !target::try_lock(&lock, dir)? {
            if !waiting {
                tracing::info!(
                    "another install into {} is running; waiting for it to finish",
                    dir.display()
                );
                waiting = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                sig = self.stop.signalled() => {
                    let rest = format!(" while waiting for another install into {}", dir.display());
                    return Err(self.interrupted_by(sig, &rest));
                }
            }
        }
        let target = Target::locked(dir, lock)?;
        for note in &target.notes {
            tracing::info!("{}: {note}", dir.display());
        }
        self.target_note = Some(match target.marker() {
            Some(m) => format!(
                "{} still holds the previous install (sha256 {}, {} package(s))",
                dir.display(),
                m.hash,
                m.package_count
            ),
            None => format!("{} holds no complete install", dir.display()),
        });
        Ok(target)
    }

    async fn fetch(&mut self, sources: &Sources) -> Result<Fetched> {
        tokio::select! {
            r = source::fetch(sources, &mut self.warnings) => r,
            sig = self.stop.signalled() => {
                Err(self.interrupted_by(sig, " while reading the requirements"))
            }
        }
    }

    /// The requirements checked against the policy before anything runs.
    fn check(&mut self, sourced: &Sourced, policy: &Policy) -> Result<Accepted> {
        let payload = &sourced.payload;
        self.facts.hash = Some(payload.hash.clone());
        self.facts.origin = Some(sourced.origin.clone());
        // Before parsing: the limit every writer enforces, so what no writer stores is never
        // parsed here either (parsing is linear, but 5 MB would still cost seconds).
        let len = payload.content.len();
        if len > crate::limit::MAX_CONTENT_BYTES {
            return Err(Error::InvalidContent {
                location: sourced.origin.describe(),
                reason: crate::limit::exceeded(len),
            });
        }
        let accepted = policy.check_content(&payload.content)?;
        self.facts.package_count = Some(accepted.package_count);
        tracing::info!(
            "requirements from the {}: sha256 {}, {} package(s)",
            sourced.origin.describe(),
            payload.hash,
            accepted.package_count
        );
        Ok(accepted)
    }

    /// An empty requirements.txt: nothing runs, the target is emptied and marked.
    fn empty(&self, target: &mut Target, mut marker: Marker) -> Result<Ending> {
        let removed = target.marker().map(|m| m.hash.clone());
        let staging = target.staging()?;
        stamp(&mut marker, self.started);
        target.commit(staging, marker.clone())?;
        Ok(Ending::Empty { marker, removed })
    }

    /// Run uv or pip into a staging folder and swap it in; `partial`: the marker of an earlier
    /// run of this hash whose failed packages are retried, alone.
    async fn install_packages(
        &mut self,
        target: &mut Target,
        accepted: &Accepted,
        python: Option<PathBuf>,
        mut marker: Marker,
        partial: Option<Marker>,
    ) -> Result<Ending> {
        let o = self.options.clone();
        let python = command::require_python(&o.python, python)?;
        let version = self
            .phase(
                "asking the worker's interpreter its version",
                command::python_version(&python),
            )
            .await?;
        let program = match o.installer {
            Installer::Uv => command::find_uv(o.uv.as_deref())?,
            Installer::Pip => python.clone(),
        };
        let name = o.installer.name();
        let staging = target.staging()?;
        let run = each::Runner {
            program,
            python: &python,
            staging: &staging,
            target: target.dir(),
            // One deadline for the batch and every per-package attempt after it.
            deadline: Instant::now() + o.timeout,
            locked: marker.installed_from_lock,
        };
        let ran = Instant::now();
        let attempted = match self
            .attempt(&run, accepted, partial.as_ref(), &version)
            .await
        {
            Ok(a) => a,
            Err(e) => {
                staging.discard();
                return Err(e);
            }
        };
        if o.installer == Installer::Uv {
            // uv's own lock for the folder it installed into: meaningless once swapped in.
            let _ = std::fs::remove_file(staging.site.join(".lock"));
        }
        let installed = accepted.package_count - attempted.failed.len();
        self.facts.failed = attempted.failed.clone();
        let nothing_new = partial.is_none() && installed == 0;
        if !attempted.failed.is_empty() && (o.on_failure == OnFailure::Fail || nothing_new) {
            staging.discard();
            self.facts.installed_count = Some(partial.as_ref().map_or(0, |_| installed));
            return Err(each::failed_error(
                &attempted.failed,
                installed,
                accepted.package_count,
                partial.is_some(),
            ));
        }
        marker.installer = name.into();
        marker.python_version = Some(version);
        marker.compile_bytecode = o.compile_bytecode;
        marker.failed = attempted.failed;
        stamp(&mut marker, self.started);
        tracing::info!(
            "{name} finished in {:.2} s ({} new entries); swapping into {}",
            ran.elapsed().as_secs_f64(),
            staging.entries()?.len(),
            target.dir().display()
        );
        let marker = swap_in(target, staging, marker, partial.is_some())?;
        self.facts.installed_count = Some(installed);
        Ok(Ending::Installed(marker))
    }
}

/// Swap the staged entries into the target (beside what a partial install left, when `adding`)
/// and write `marker` last; returns the marker as written.
fn swap_in(target: &mut Target, staging: Staging, marker: Marker, adding: bool) -> Result<Marker> {
    if adding {
        target.commit_adding(staging, marker)?;
    } else {
        target.commit(staging, marker)?;
    }
    target
        .marker()
        .cloned()
        .ok_or_else(|| Error::Internal("the marker just written is gone".into()))
}

/// The marker of this install, before anything ran (`installer` stays `none` when nothing
/// needs to run).
fn new_marker(sourced: &Sourced, accepted: &Accepted, python: &Python) -> Marker {
    Marker {
        hash: sourced.payload.hash.clone(),
        installer: "none".into(),
        package_count: accepted.package_count,
        distribution_count: 0,
        duration_ms: 0,
        installed_at: String::new(),
        python: python.found.as_ref().map(|p| p.display().to_string()),
        python_realpath: python.real.clone(),
        python_version: None,
        source: sourced.origin.kind().into(),
        compile_bytecode: false,
        entries: Vec::new(),
        failed: Vec::new(),
        installed_from_lock: false,
    }
}

fn stamp(marker: &mut Marker, started: Instant) {
    marker.duration_ms = started.elapsed().as_millis() as u64;
    marker.installed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
}
