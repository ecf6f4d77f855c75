//! `install`: the step every worker runs before it starts (an init container in a pod, the
//! start-up command under docker compose).
//!
//! 1. **Fetch** requirements.txt: Redis (bounded retries, overall deadline) → the fallback file
//!    (the ConfigMap snapshot) → nothing ([`source`]). Every payload's hash is verified.
//! 2. **Check** it against the [policy](crate::policy) before anything runs.
//! 3. **Skip** when the target's marker already names this hash (a restart costs a file read).
//! 4. **Install** with `uv pip install --target` (default) or `python -m pip install --target`
//!    for the worker's own interpreter, into a staging folder inside the target, under a
//!    deadline that stops the installer's whole process group ([`process`]).
//! 5. **Swap** the staged entries in and write the marker last ([`target`]): a killed or failed
//!    install never leaves a marker that claims success, and leaves the previous install
//!    importable.
//!
//! Failures follow `--on-failure`: `fail` (default, for init containers: a broken change halts
//! the rolling update) exits non-zero; `continue` (Bifrost's worker behaviour) warns and exits 0
//! with the target as it was. Invalid flags and configuration always fail (exit 2).

pub mod guard;
mod process;
pub mod source;
pub mod target;

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;
use tokio::sync::watch;

use crate::cli::InstallArgs;
use crate::error::{Error, Result};
use crate::requirements::normalize_hash;
use process::{Invocation, RunFailure};
use source::{Fetched, Origin, Sources};
use target::{Marker, Staging, Target};

/// `--help` text of `install`: what each exit code means.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    installed, already installed (marker matches), nothing to install, or any failure
       under --on-failure continue (a warning says what failed)
  1    I/O error (target not writable, …)
  2    invalid flags or configuration (always, even with --on-failure continue), or a
       requirements.txt the policy rejects (names the line)
  4    no usable source: Redis unreachable/failing/corrupt and no usable fallback file,
       or a corrupt fallback file
  5    the installer failed, timed out (--timeout; its process group is stopped), or the
       interpreter/uv could not be found
  130  interrupted (SIGINT), 143 terminated (SIGTERM): the installer was stopped first
In every failure case the target is left as it was: the previous install stays importable
and its marker unchanged.";

/// Which program installs the packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallerKind {
    /// `uv pip install --target DIR --python PYTHON` (fast; the default).
    Uv,
    /// `PYTHON -m pip install --target DIR` (what Bifrost's worker does).
    Pip,
}

impl InstallerKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Uv => "uv",
            Self::Pip => "pip",
        }
    }
}

/// What a failure does to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Exit non-zero: the init container fails and a rolling update halts.
    Fail,
    /// Log a warning and exit 0 so the worker starts anyway (Bifrost's worker behaviour).
    Continue,
}

/// `--expected-hash`: a SHA-256 hex digest, with or without `sha256:`.
pub fn parse_expected_hash(s: &str) -> std::result::Result<String, String> {
    let h = normalize_hash(s);
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(format!(
            "`{s}` is not a SHA-256 hex digest (64 hex characters, optionally prefixed with sha256:)"
        ))
    }
}

/// `--timeout`: a positive duration (`300`, `90s`, `5m`).
pub fn parse_timeout(s: &str) -> std::result::Result<Duration, String> {
    let d = crate::cli::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be greater than zero"));
    }
    Ok(d)
}

/// Run `install`; returns the process exit code (errors are reported here, not by the caller).
pub async fn run(args: InstallArgs) -> Result<u8> {
    let mut run = Run {
        started: Instant::now(),
        stop: process::listen_for_signals(),
        interrupted: None,
        warnings: Vec::new(),
        facts: Facts::default(),
        target_note: None,
        args,
    };
    let result = run.install().await;
    Ok(run.finish(result))
}

enum Outcome {
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
    origin: Option<Origin>,
    package_count: Option<usize>,
    python: Option<PathBuf>,
}

struct Run {
    args: InstallArgs,
    started: Instant,
    stop: watch::Receiver<Option<i32>>,
    interrupted: Option<i32>,
    warnings: Vec<String>,
    facts: Facts,
    /// What the target holds, for failure messages.
    target_note: Option<String>,
}

impl Run {
    async fn install(&mut self) -> Result<Outcome> {
        let a = &self.args;
        let redis = a.redis.config();
        if redis.is_none() && a.fallback_file.is_none() {
            return Err(Error::Config(
                "nothing to install from: set --redis-url (REDIS_URL) and/or --fallback-file \
                 (BIFROST_INSTALL_FALLBACK_FILE)"
                    .into(),
            ));
        }
        if a.target.as_os_str().is_empty() {
            return Err(Error::Config("--target must not be empty".into()));
        }
        let dir =
            std::path::absolute(&a.target).map_err(|e| Error::io("resolving", &a.target, e))?;
        if dir.parent().is_none() {
            return Err(Error::Config(
                "--target / would mix packages into the root folder; use a dedicated folder".into(),
            ));
        }
        self.facts.target = Some(dir.clone());
        let sources = Sources {
            redis,
            redis_deadline: a.redis_deadline,
            fallback_file: a.fallback_file.clone(),
            expected_hash: a.expected_hash.clone(),
        };
        let mut policy = a.policy.policy();
        policy.allowed_index_urls.extend(
            a.index_url
                .iter()
                .chain(&a.extra_index_url)
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty()),
        );
        policy.only_binary |= a.only_binary;
        let python = which(&a.python);
        let python_real = python
            .as_ref()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .map(|p| p.display().to_string());
        self.facts.python = python.clone();

        // One install per target at a time; waiting stays interruptible.
        let lock = target::lock_file(&dir)?;
        let mut waiting = false;
        while !target::try_lock(&lock, &dir)? {
            if !waiting {
                tracing::info!(
                    "another install into {} is running; waiting for it to finish",
                    dir.display()
                );
                waiting = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                sig = process::interrupted(&mut self.stop) => {
                    self.interrupted = Some(sig);
                    return Err(Error::Install(format!(
                        "interrupted by {} while waiting for another install into {}",
                        signal_name(sig),
                        dir.display()
                    )));
                }
            }
        }
        let mut target = Target::locked(&dir, lock)?;
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

        // A restart of the same pod: the marker already has the hash the pod was admitted for.
        if let Some(expected) = &sources.expected_hash
            && let Ok(m) = target.current(expected, python_real.as_deref())
        {
            self.facts.hash = Some(m.hash.clone());
            self.facts.package_count = Some(m.package_count);
            return Ok(Outcome::Unchanged {
                marker: m.clone(),
                by_expected_hash: true,
            });
        }

        let fetched = tokio::select! {
            r = source::fetch(&sources, &mut self.warnings) => r?,
            sig = process::interrupted(&mut self.stop) => {
                self.interrupted = Some(sig);
                return Err(Error::Install(format!("interrupted by {} while reading the requirements", signal_name(sig))));
            }
        };
        let sourced = match fetched {
            Fetched::Found(s) => s,
            Fetched::Absent { why } => return Ok(Outcome::Absent { why }),
        };
        let payload = sourced.payload;
        self.facts.hash = Some(payload.hash.clone());
        self.facts.origin = Some(sourced.origin.clone());
        let accepted = policy.check_content(&payload.content)?;
        self.facts.package_count = Some(accepted.package_count);
        tracing::info!(
            "requirements from the {}: sha256 {}, {} package(s)",
            sourced.origin.describe(),
            payload.hash,
            accepted.package_count
        );

        match target.current(&payload.hash, python_real.as_deref()) {
            Ok(m) => {
                return Ok(Outcome::Unchanged {
                    marker: m.clone(),
                    by_expected_hash: false,
                });
            }
            Err(why) => tracing::info!("{why}: installing sha256 {}", payload.hash),
        }

        let mut marker = Marker {
            hash: payload.hash.clone(),
            installer: "none".into(),
            package_count: accepted.package_count,
            distribution_count: 0,
            duration_ms: 0,
            installed_at: String::new(),
            python: python.as_ref().map(|p| p.display().to_string()),
            python_realpath: python_real.clone(),
            python_version: None,
            source: sourced.origin.kind().into(),
            compile_bytecode: false,
            entries: Vec::new(),
        };

        if accepted.package_count == 0 {
            let removed = target.marker().map(|m| m.hash.clone());
            let staging = target.staging()?;
            stamp(&mut marker, self.started);
            target.commit(staging, marker.clone())?;
            return Ok(Outcome::Empty { marker, removed });
        }

        let a = &self.args;
        let python = python.ok_or_else(|| {
            Error::Install(format!(
                "Python interpreter {} not found{}; pass --python with the worker's interpreter",
                a.python,
                if a.python.contains('/') {
                    ""
                } else {
                    " on PATH"
                }
            ))
        })?;
        let version = python_version(&python).await?;
        let program = match a.installer {
            InstallerKind::Uv => find_uv(a.uv.as_deref())?,
            InstallerKind::Pip => python.clone(),
        };
        let staging = target.staging()?;
        let requirements = staging.root().join("requirements.txt");
        // The installers read the text rendered from the checked model, never the stored bytes:
        // what the policy counted is byte-for-byte what uv or pip reads.
        if let Err(e) = std::fs::write(&requirements, &accepted.installer_text) {
            staging.discard();
            return Err(Error::io("writing", &requirements, e));
        }
        let invocation = match self.invocation(program, &python, &staging, &requirements, &dir) {
            Ok(inv) => inv,
            Err(e) => {
                staging.discard();
                return Err(e);
            }
        };
        tracing::info!(
            "installing {} package(s) with {} for Python {version} ({})",
            accepted.package_count,
            a.installer.name(),
            python.display()
        );
        tracing::debug!("running {}", invocation.display());
        let ran = Instant::now();
        if let Err(failure) = process::run(&invocation, a.timeout, &mut self.stop).await {
            staging.discard();
            return Err(self.failure(failure, &invocation));
        }
        if a.installer == InstallerKind::Uv {
            // uv's own lock for the folder it installed into: meaningless once swapped in.
            let _ = std::fs::remove_file(staging.site.join(".lock"));
        }
        let entries = staging.entries()?;
        marker.installer = a.installer.name().into();
        marker.python_version = Some(version);
        marker.compile_bytecode = a.compile_bytecode;
        marker.distribution_count = entries.iter().filter(|e| e.ends_with(".dist-info")).count();
        tracing::info!(
            "{} finished in {:.2} s ({} distribution(s)); swapping into {}",
            a.installer.name(),
            ran.elapsed().as_secs_f64(),
            marker.distribution_count,
            dir.display()
        );
        stamp(&mut marker, self.started);
        target.commit(staging, marker.clone())?;
        Ok(Outcome::Installed(marker))
    }

    /// The installer's command line.
    fn invocation(
        &self,
        program: PathBuf,
        python: &Path,
        staging: &Staging,
        requirements: &Path,
        target: &Path,
    ) -> Result<Invocation> {
        let a = &self.args;
        let mut args: Vec<OsString> = Vec::new();
        let push = |args: &mut Vec<OsString>, items: &[&dyn AsRef<std::ffi::OsStr>]| {
            args.extend(items.iter().map(|i| i.as_ref().to_os_string()));
        };
        match a.installer {
            InstallerKind::Uv => {
                push(
                    &mut args,
                    &[
                        &"pip",
                        &"install",
                        &"--target",
                        &staging.site,
                        &"--python",
                        &python,
                        // Never pick up a uv.toml/pyproject.toml above the target or the cwd.
                        &"--no-config",
                        &"-r",
                        &requirements,
                    ],
                );
                if a.compile_bytecode {
                    push(&mut args, &[&"--compile-bytecode"]);
                }
            }
            InstallerKind::Pip => {
                push(
                    &mut args,
                    &[
                        &"-m",
                        &"pip",
                        &"install",
                        &"--target",
                        &staging.site,
                        &"-r",
                        &requirements,
                        &"--disable-pip-version-check",
                        &"--no-input",
                        &"--no-warn-script-location",
                        &"--progress-bar",
                        &"off",
                    ],
                );
                if !a.compile_bytecode {
                    push(&mut args, &[&"--no-compile"]);
                }
            }
        }
        if a.only_binary {
            push(&mut args, &[&"--only-binary", &":all:"]);
        }
        if let Some(url) = a
            .index_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        {
            push(&mut args, &[&"--index-url", &url]);
        }
        for url in a
            .extra_index_url
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            push(&mut args, &[&"--extra-index-url", &url]);
        }
        // pip ignores a plain-HTTP index on any host but localhost unless told to trust it
        // ("not a trusted or secure host"); these URLs are the ones the administrator allowed.
        if a.installer == InstallerKind::Pip {
            let urls = a.index_url.iter().chain(a.extra_index_url.iter());
            for host in urls.filter_map(|u| http_host(u)) {
                push(&mut args, &[&"--trusted-host", &host]);
            }
        }
        for link in a
            .find_links
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
        {
            // The installer runs in the staging folder: local paths must be absolute.
            push(&mut args, &[&"--find-links", &absolute_location(link)?]);
        }
        if a.no_index {
            push(&mut args, &[&"--no-index"]);
        }
        if let Some(cache) = &a.cache_dir {
            let cache = &std::path::absolute(cache)
                .map_err(|e| Error::io("resolving the cache folder", cache, e))?;
            std::fs::create_dir_all(cache)
                .map_err(|e| Error::io("creating the cache folder", cache, e))?;
            push(&mut args, &[&"--cache-dir", cache]);
            // uv hardlinks from its cache; across filesystems it would warn and copy anyway.
            if a.installer == InstallerKind::Uv && std::env::var_os("UV_LINK_MODE").is_none() {
                let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
                if dev(cache) != dev(target) {
                    push(&mut args, &[&"--link-mode", &"copy"]);
                }
            }
        }
        Ok(Invocation {
            label: a.installer.name(),
            program,
            args,
            // The worker's PYTHONPATH may point at the target itself: the installer must see a
            // clean interpreter, not the packages it is about to replace.
            // RUST_LOG is ours: uv would honour it too and flood the log.
            env_remove: vec!["PYTHONPATH", "RUST_LOG"],
            cwd: staging.root().to_path_buf(),
        })
    }

    fn failure(&mut self, failure: RunFailure, inv: &Invocation) -> Error {
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
                self.interrupted = Some(signal);
                Error::Install(format!(
                    "interrupted by {}; stopped {label}'s process group",
                    signal_name(signal)
                ))
            }
        }
    }

    /// Report the result; return the exit code.
    fn finish(&mut self, result: Result<Outcome>) -> u8 {
        let duration_ms = self.started.elapsed().as_millis() as u64;
        let secs = duration_ms as f64 / 1000.0;
        let target = self
            .facts
            .target
            .as_ref()
            .unwrap_or(&self.args.target)
            .display()
            .to_string();
        let mut report = Report {
            status: "failed",
            exit_code: 0,
            target: target.clone(),
            hash: self.facts.hash.clone(),
            expected_hash: self.args.expected_hash.clone(),
            source: self.facts.origin.as_ref().map(Origin::kind),
            source_detail: self.facts.origin.as_ref().map(Origin::describe),
            package_count: self.facts.package_count,
            distribution_count: None,
            installer: None,
            installer_run: false,
            python: self.facts.python.as_ref().map(|p| p.display().to_string()),
            duration_ms,
            on_failure: self.args.on_failure,
            marker: None,
            warnings: std::mem::take(&mut self.warnings),
            error: None,
        };
        let origin = self
            .facts
            .origin
            .as_ref()
            .map(Origin::describe)
            .unwrap_or_default();
        match result {
            Ok(outcome) => {
                report.marker = Some(
                    Path::new(&target)
                        .join(target::MARKER)
                        .display()
                        .to_string(),
                );
                match outcome {
                    Outcome::Installed(m) => {
                        report.status = "installed";
                        report.installer = Some(m.installer.clone());
                        report.installer_run = true;
                        report.distribution_count = Some(m.distribution_count);
                        eprintln!(
                            "installed: {} package(s) ({} distribution(s)) from the {origin}, sha256 {}, \
                             with {} in {secs:.2} s into {target}",
                            m.package_count, m.distribution_count, m.hash, m.installer
                        );
                    }
                    Outcome::Unchanged {
                        marker: m,
                        by_expected_hash,
                    } => {
                        report.status = "unchanged";
                        report.installer = Some(m.installer.clone());
                        report.distribution_count = Some(m.distribution_count);
                        if by_expected_hash {
                            report.source = Some("marker");
                            report.source_detail =
                                Some("--expected-hash matches the marker".into());
                        }
                        eprintln!(
                            "already installed: {target} holds sha256 {} ({} package(s), installed {} with {}); \
                             skipped, installer not run{}",
                            m.hash,
                            m.package_count,
                            m.installed_at,
                            m.installer,
                            if by_expected_hash {
                                " (matched --expected-hash; no source read)"
                            } else {
                                ""
                            }
                        );
                    }
                    Outcome::Empty { marker: m, removed } => {
                        report.status = "empty";
                        report.installer = Some(m.installer.clone());
                        report.distribution_count = Some(0);
                        eprintln!(
                            "nothing to install: requirements.txt from the {origin} (sha256 {}) lists no packages{}",
                            m.hash,
                            match removed {
                                Some(h) => format!(
                                    "; removed the previous install (sha256 {h}) from {target}"
                                ),
                                None => String::new(),
                            }
                        );
                    }
                    Outcome::Absent { why } => {
                        report.status = "absent";
                        report.marker = None;
                        eprintln!(
                            "nothing to install: no requirements found ({why}); {target} left as it is"
                        );
                    }
                }
            }
            Err(e) => {
                let code = if let Some(sig) = self.interrupted {
                    128u8.saturating_add(sig as u8)
                } else if matches!(e, Error::Config(_)) || self.args.on_failure == OnFailure::Fail {
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
                    eprintln!(
                        "warning: install failed; continuing because of --on-failure continue: {e}{note}"
                    );
                } else {
                    eprintln!("error: {e}{note}");
                }
                report.exit_code = code;
                report.error = Some(ErrorReport {
                    reason: e.reason(),
                    message: e.to_string(),
                });
            }
        }
        if self.args.json {
            match serde_json::to_string(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("error: cannot print the JSON report: {e}"),
            }
        }
        report.exit_code
    }
}

/// The one `--json` object.
#[derive(Serialize)]
struct Report {
    /// `installed`, `unchanged`, `empty`, `absent` or `failed`.
    status: &'static str,
    exit_code: u8,
    target: String,
    hash: Option<String>,
    expected_hash: Option<String>,
    /// `redis`, `fallback-file` or `marker`.
    source: Option<&'static str>,
    source_detail: Option<String>,
    package_count: Option<usize>,
    distribution_count: Option<usize>,
    installer: Option<String>,
    /// Whether uv/pip ran in this invocation.
    installer_run: bool,
    python: Option<String>,
    duration_ms: u64,
    on_failure: OnFailure,
    marker: Option<String>,
    warnings: Vec<String>,
    error: Option<ErrorReport>,
}

#[derive(Serialize)]
struct ErrorReport {
    reason: &'static str,
    message: String,
}

fn stamp(marker: &mut Marker, started: Instant) {
    marker.duration_ms = started.elapsed().as_millis() as u64;
    marker.installed_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
}

/// A `--find-links` value as the installer must see it from another working directory: URLs
/// as they are, local paths made absolute.
fn absolute_location(link: &str) -> Result<OsString> {
    if link.contains("://") {
        return Ok(link.into());
    }
    std::path::absolute(link)
        .map(PathBuf::into_os_string)
        .map_err(|e| Error::io("resolving --find-links", link, e))
}

/// `name` as a path when it has a `/`, otherwise the first executable of that name on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let p = std::path::absolute(name).ok()?;
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// `--uv`, else `uv` on `PATH`, else `uv` next to this executable (where the bootstrap init
/// container copies both).
fn find_uv(given: Option<&str>) -> Result<PathBuf> {
    if let Some(given) = given.map(str::trim).filter(|s| !s.is_empty()) {
        return which(given)
            .ok_or_else(|| Error::Install(format!("--uv {given}: not found or not executable")));
    }
    which("uv")
        .or_else(|| {
            let beside = std::env::current_exe().ok()?.parent()?.join("uv");
            which(beside.to_str()?)
        })
        .ok_or_else(|| {
            Error::Install(
                "uv not found on PATH nor next to bifrost-requirements; pass --uv PATH or use --installer pip"
                    .into(),
            )
        })
}

/// `3.11.7`: asks the interpreter itself (isolated mode: no PYTHONPATH, no user site).
async fn python_version(python: &Path) -> Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(python)
            .args([
                "-I",
                "-c",
                "import sys; print('%d.%d.%d' % sys.version_info[:3])",
            ])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| Error::Install(format!("{} did not answer within 60 s", python.display())))?
    .map_err(|e| Error::Install(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(Error::Install(format!(
            "{} does not run ({}): {}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// `host[:port]` of a plain-HTTP URL (credentials dropped), for pip's `--trusted-host`.
fn http_host(url: &str) -> Option<String> {
    let rest = url.trim().strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_index_hosts_for_pip() {
        use super::http_host;
        assert_eq!(
            http_host("http://10.244.0.1:8080/simple/").as_deref(),
            Some("10.244.0.1:8080")
        );
        assert_eq!(
            http_host("http://user:pw@index.local?x").as_deref(),
            Some("index.local")
        );
        assert_eq!(http_host("https://pypi.org/simple/"), None);
        assert_eq!(http_host("http://"), None);
    }

    use super::*;

    #[test]
    fn expected_hash_and_timeout_parsers() {
        let h = "a".repeat(64);
        assert_eq!(parse_expected_hash(&h).unwrap(), h);
        assert_eq!(
            parse_expected_hash(&format!("sha256:{}", h.to_uppercase())).unwrap(),
            h
        );
        assert!(parse_expected_hash("abc").is_err());
        assert!(parse_expected_hash(&"g".repeat(64)).is_err());
        assert_eq!(parse_timeout("90").unwrap(), Duration::from_secs(90));
        assert!(
            parse_timeout("0")
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!(parse_timeout("-3").is_err());
    }

    #[test]
    fn which_finds_programs() {
        assert!(which("sh").is_some());
        assert!(which("/bin/sh").is_some());
        assert!(which("definitely-not-a-program-here").is_none());
        assert!(which("").is_none());
    }
}
