//! The install target: marker, lock, staging and the crash-safe swap.
//!
//! The target directory is what workers put on `PYTHONPATH`. In a pod it is an `emptyDir` mount
//! point, which cannot be renamed or replaced, so the swap works *inside* it:
//!
//! ```text
//! TARGET/
//!   .bifrost-requirements.json        marker: exists ⇒ the entries it lists are a complete install
//!   .bifrost-requirements.lock        advisory lock (one install at a time per target)
//!   .bifrost-requirements.swap.json   journal: exists only while a swap is in progress
//!   .bifrost-staging-<pid>/           the installer's --target (same filesystem ⇒ renames)
//!   .bifrost-trash-<pid>/             the previous install's entries during a swap
//!   flask/  flask-3.0.3.dist-info/ …   the installed entries
//! ```
//!
//! A swap is: write the journal (previous marker, entries to move out, entries to move in) →
//! remove the marker → rename the previous entries into the trash → rename the staged entries
//! into the target → write the new marker (tmp + rename) → remove the journal. Every step is a
//! rename on one filesystem, so the window is milliseconds, and it is safe against a kill at any
//! point: the marker is absent from before the first move until after the last one, so a killed
//! swap never leaves a marker that claims success; and the next run finds the journal and rolls
//! the target back to exactly the previous install (restoring its marker) before doing anything
//! else. A failed rename rolls back the same way, in-process. Names starting with `.bifrost-` are
//! reserved; other entries the target holds that neither the previous nor the new install owns
//! are left alone.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::failures::FailedPackage;
use crate::error::{Error, Result};

/// File name of the marker inside the target.
pub(crate) const MARKER: &str = ".bifrost-requirements.json";
const LOCK: &str = ".bifrost-requirements.lock";
const JOURNAL: &str = ".bifrost-requirements.swap.json";
/// Every name starting with this is ours (never an installed entry).
const RESERVED_PREFIX: &str = ".bifrost-";
const STAGING_PREFIX: &str = ".bifrost-staging-";
const TRASH_PREFIX: &str = ".bifrost-trash-";
const DISCARD_PREFIX: &str = ".bifrost-discard-";

/// `TARGET/.bifrost-requirements.json`: what the last successful install put there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// SHA-256 (lowercase hex) of the installed requirements.txt.
    pub hash: String,
    /// `uv`, `pip`, or `none` (empty requirements: nothing to run).
    pub installer: String,
    /// Packages requirements.txt asks for.
    pub package_count: usize,
    /// Distributions installed, dependencies included (`*.dist-info` folders).
    #[serde(default)]
    pub distribution_count: usize,
    /// How long the install took, fetch to marker.
    pub duration_ms: u64,
    /// RFC 3339, UTC.
    pub installed_at: String,
    /// The interpreter the packages were installed for (absolute path as found).
    #[serde(default)]
    pub python: Option<String>,
    /// That interpreter with symlinks resolved (`python3` → `python3.11`): a different value
    /// means a different ABI, so the install is redone.
    #[serde(default)]
    pub python_realpath: Option<String>,
    #[serde(default)]
    pub python_version: Option<String>,
    /// Where the requirements came from: `redis` or `fallback-file`.
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub compile_bytecode: bool,
    /// Top-level names this install owns in the target.
    #[serde(default)]
    pub entries: Vec<String>,
    /// Requirements that did not install (`--on-failure continue`): the install is partial, and
    /// the next run with the same hash retries these only. Absent in older markers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedPackage>,
    /// Installed from the controller's `requirements.lock` (exactly its hash-checked
    /// distributions; `package_count` then counts those) rather than by resolving
    /// requirements.txt. Absent in older markers.
    #[serde(default)]
    pub installed_from_lock: bool,
}

/// Written before a swap touches anything; its presence without a marker means "roll back".
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    previous_marker: Option<Marker>,
    /// Entries that were present and get moved into the trash (previous install + conflicts).
    moved: Vec<String>,
    /// Entries the new install moves in.
    new: Vec<String>,
    trash: String,
    staging: String,
}

/// The installer's working area inside the target.
#[derive(Debug)]
pub(crate) struct Staging {
    root: PathBuf,
    /// Passed to the installer as `--target`.
    pub site: PathBuf,
}

impl Staging {
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Top-level entries the installer produced, sorted.
    pub(crate) fn entries(&self) -> Result<Vec<String>> {
        list_entries(&self.site)
    }

    /// Remove it (after a failed install). Best effort.
    pub(crate) fn discard(self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::warn!(path = %self.root.display(), error = %e, "cannot remove the staging folder");
        }
    }
}

/// An opened, locked target.
#[derive(Debug)]
pub(crate) struct Target {
    dir: PathBuf,
    _lock: File,
    marker: Option<Marker>,
    /// What happened while opening (recovery, stale folders), for the log.
    pub notes: Vec<String>,
}

impl Target {
    /// Create the folder if needed, take the lock (waiting for another install), roll back an
    /// interrupted swap, remove stale staging folders, read the marker.
    /// Blocking form of [`lock_file`] + [`try_lock`] + [`Target::locked`]; only the unit tests
    /// open a target this way (the installer waits for the lock itself).
    #[cfg(test)]
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let lock = lock_file(dir)?;
        lock.lock()
            .map_err(|e| Error::io("locking", dir.join(LOCK), e))?;
        Self::locked(dir, lock)
    }

    /// Open with the lock (from [`lock_file`], taken with [`try_lock`]) already held.
    pub(crate) fn locked(dir: &Path, lock: File) -> Result<Self> {
        let mut target = Target {
            dir: dir.to_path_buf(),
            _lock: lock,
            marker: None,
            notes: Vec::new(),
        };
        target.recover()?;
        target.remove_stale();
        target.marker = target.read_marker();
        Ok(target)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn marker(&self) -> Option<&Marker> {
        self.marker.as_ref()
    }

    /// `Ok(marker)` when the target already holds a complete install of `hash` for this
    /// interpreter, with no failed package; `Err(why not)` otherwise.
    pub(crate) fn current(
        &self,
        hash: &str,
        python_realpath: Option<&str>,
    ) -> Result<&Marker, String> {
        let m = self.installed(hash, python_realpath)?;
        if !m.failed.is_empty() {
            let names: Vec<&str> = m.failed.iter().map(|f| f.name.as_str()).collect();
            return Err(format!(
                "{} package(s) of sha256 {hash} failed last time ({}); retrying them",
                names.len(),
                names.join(", ")
            ));
        }
        Ok(m)
    }

    /// The marker of a partial install of `hash` for this interpreter whose installed entries
    /// are all present: only its failed packages need another attempt.
    pub(crate) fn partial(&self, hash: &str, python_realpath: Option<&str>) -> Option<&Marker> {
        self.installed(hash, python_realpath)
            .ok()
            .filter(|m| !m.failed.is_empty())
    }

    /// The marker when it names `hash` for this interpreter and every entry it lists is present.
    fn installed(&self, hash: &str, python_realpath: Option<&str>) -> Result<&Marker, String> {
        let Some(m) = &self.marker else {
            return Err("nothing installed yet".into());
        };
        if m.hash != hash {
            return Err(format!("the target holds sha256 {}", m.hash));
        }
        if !m.entries.is_empty()
            && let (Some(installed), Some(now)) = (m.python_realpath.as_deref(), python_realpath)
            && installed != now
        {
            return Err(format!(
                "the interpreter changed ({installed} → {now}); reinstalling for its ABI"
            ));
        }
        if let Some(missing) = m
            .entries
            .iter()
            .find(|e| fs::symlink_metadata(self.dir.join(e)).is_err())
        {
            return Err(format!("installed entry {missing} has gone missing"));
        }
        Ok(m)
    }

    /// A fresh, empty staging area (`TARGET/.bifrost-staging-<pid>/site-packages`).
    pub(crate) fn staging(&self) -> Result<Staging> {
        let root = self
            .dir
            .join(format!("{STAGING_PREFIX}{}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root).map_err(|e| Error::io("clearing", &root, e))?;
        }
        let site = root.join("site-packages");
        fs::create_dir_all(&site)
            .map_err(|e| Error::io("creating the staging folder", &site, e))?;
        Ok(Staging { root, site })
    }

    /// Swap the staged entries in and write `marker` (with its `entries` filled in).
    pub(crate) fn commit(&mut self, staging: Staging, marker: Marker) -> Result<()> {
        self.swap(staging, marker, None, false)
    }

    /// Like [`Self::commit`], but the previous install's entries stay: the staged ones are
    /// added (replacing entries of the same name, e.g. a dependency installed again), and the
    /// marker lists both. For retrying the failed packages of a partial install.
    pub(crate) fn commit_adding(&mut self, staging: Staging, marker: Marker) -> Result<()> {
        self.swap(staging, marker, None, true)
    }

    /// `fault = Some((n, crash))`: stop after `n` renames — as a kill would (`crash`, no roll
    /// back) or as a failing rename would (in-process roll back). Tests only pass `Some`.
    fn swap(
        &mut self,
        staging: Staging,
        mut marker: Marker,
        fault: Option<(usize, bool)>,
        adding: bool,
    ) -> Result<()> {
        let journal = self.journal(&staging, &mut marker, adding)?;
        write_json_atomic(&self.dir.join(JOURNAL), &journal)?;
        let mut renames = 0usize;
        match self.move_entries(&journal, &staging, &marker, fault, &mut renames) {
            Ok(()) => {
                remove_if_exists(&self.dir.join(JOURNAL))?;
                remove_tree(&self.dir.join(&journal.trash));
                staging.discard();
                self.marker = Some(marker);
                Ok(())
            }
            Err(e) if matches!(fault, Some((_, true))) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "swap failed after {renames} move(s); rolling back");
                self.rollback(&journal)?;
                Err(e)
            }
        }
    }

    /// What a swap will do, before it touches anything; fills in `marker`'s entries (the staged
    /// ones, plus the previous install's when `adding`) and its distribution count.
    fn journal(&self, staging: &Staging, marker: &mut Marker, adding: bool) -> Result<Journal> {
        let new = staging.entries()?;
        let previous = self.marker.clone();
        let kept = previous.iter().filter(|_| adding).flat_map(|m| &m.entries);
        marker.entries = kept
            .chain(&new)
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        marker.distribution_count = marker
            .entries
            .iter()
            .filter(|e| e.ends_with(".dist-info"))
            .count();
        // The entries that leave the target: the previous install's (all of them, unless
        // adding), and whatever a new entry's name replaces. The journal restores exactly these.
        let owned: BTreeSet<&str> = previous
            .iter()
            .filter(|_| !adding)
            .flat_map(|m| m.entries.iter().map(String::as_str))
            .chain(new.iter().map(String::as_str))
            .collect();
        let moved: Vec<String> = owned
            .into_iter()
            .filter(|e| fs::symlink_metadata(self.dir.join(e)).is_ok())
            .map(str::to_string)
            .collect();
        Ok(Journal {
            previous_marker: previous,
            moved,
            new,
            trash: format!("{TRASH_PREFIX}{}", std::process::id()),
            staging: file_name(&staging.root),
        })
    }

    /// The swap's moves, once its journal is written: remove the marker, move the leaving
    /// entries into the trash and the staged ones into the target, write the new marker.
    /// `renames` counts the moves done (`fault`: see [`Self::swap`]).
    fn move_entries(
        &self,
        journal: &Journal,
        staging: &Staging,
        marker: &Marker,
        fault: Option<(usize, bool)>,
        renames: &mut usize,
    ) -> Result<()> {
        remove_if_exists(&self.dir.join(MARKER))?;
        let trash = self.dir.join(&journal.trash);
        fs::create_dir(&trash).map_err(|e| Error::io("creating", &trash, e))?;
        let moves = journal
            .moved
            .iter()
            .map(|e| (self.dir.join(e), trash.join(e)))
            .chain(
                journal
                    .new
                    .iter()
                    .map(|e| (staging.site.join(e), self.dir.join(e))),
            );
        for (from, to) in moves {
            if let Some((n, _)) = fault
                && *renames == n
            {
                return Err(Error::io(
                    "moving (injected fault)",
                    &from,
                    std::io::Error::other("injected"),
                ));
            }
            fs::rename(&from, &to).map_err(|e| Error::io("moving into place", &from, e))?;
            *renames += 1;
        }
        write_json_atomic(&self.dir.join(MARKER), marker)
    }

    /// Finish what an interrupted swap left behind: with a marker, the swap either had not
    /// started moving or had finished (the marker is consistent); without one, roll back.
    fn recover(&mut self) -> Result<()> {
        let path = self.dir.join(JOURNAL);
        let raw = match fs::read_to_string(&path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        let journal: Journal = match serde_json::from_str(&raw) {
            Ok(j) => j,
            Err(e) => {
                // Written with tmp + rename, so this is not a torn write: someone else's file.
                self.notes
                    .push(format!("ignored an unreadable swap journal ({e})"));
                return remove_if_exists(&path);
            }
        };
        if fs::symlink_metadata(self.dir.join(MARKER)).is_ok() {
            return remove_if_exists(&path);
        }
        self.rollback(&journal)?;
        self.notes.push(match &journal.previous_marker {
            Some(m) => format!(
                "an earlier install was interrupted while swapping; restored the previous install (sha256 {})",
                m.hash
            ),
            None => "an earlier install was interrupted while swapping; removed its partial entries".into(),
        });
        Ok(())
    }

    /// Put the target back exactly as the journal found it (idempotent).
    fn rollback(&mut self, journal: &Journal) -> Result<()> {
        let trash = self.dir.join(&journal.trash);
        let discard = self
            .dir
            .join(format!("{DISCARD_PREFIX}{}", std::process::id()));
        let exists = |p: &Path| fs::symlink_metadata(p).is_ok();
        for e in &journal.new {
            let here = self.dir.join(e);
            let was_moved_out = journal.moved.contains(e);
            // A new entry is in the target when its name was not there before, or when the
            // original of that name already sits in the trash.
            if exists(&here) && (!was_moved_out || exists(&trash.join(e))) {
                if !exists(&discard) {
                    fs::create_dir(&discard).map_err(|err| Error::io("creating", &discard, err))?;
                }
                fs::rename(&here, discard.join(e))
                    .map_err(|err| Error::io("rolling back", &here, err))?;
            }
        }
        for e in &journal.moved {
            let from = trash.join(e);
            if exists(&from) {
                fs::rename(&from, self.dir.join(e))
                    .map_err(|err| Error::io("restoring", &from, err))?;
            }
        }
        match &journal.previous_marker {
            Some(m) if m.entries.iter().all(|e| exists(&self.dir.join(e))) => {
                write_json_atomic(&self.dir.join(MARKER), m)?;
                self.marker = Some(m.clone());
            }
            _ => self.marker = None,
        }
        remove_if_exists(&self.dir.join(JOURNAL))?;
        remove_tree(&discard);
        remove_tree(&trash);
        remove_tree(&self.dir.join(&journal.staging));
        Ok(())
    }

    /// Staging, trash and temporary files left by killed runs (we hold the lock: none is live).
    fn remove_stale(&mut self) {
        let Ok(read) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in read.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stale = [STAGING_PREFIX, TRASH_PREFIX, DISCARD_PREFIX]
                .iter()
                .any(|p| name.starts_with(p))
                || (name.starts_with(RESERVED_PREFIX) && name.contains(".tmp-"));
            if stale {
                remove_tree(&entry.path());
                self.notes
                    .push(format!("removed {name}, left behind by an interrupted run"));
            }
        }
    }

    fn read_marker(&mut self) -> Option<Marker> {
        let path = self.dir.join(MARKER);
        let raw = fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&raw) {
            Ok(m) => Some(m),
            Err(e) => {
                self.notes.push(format!(
                    "ignored the unreadable marker {} ({e}); installing again",
                    path.display()
                ));
                None
            }
        }
    }
}

/// Create the target folder if needed and open its lock file.
pub(crate) fn lock_file(dir: &Path) -> Result<File> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating the target folder", dir, e))?;
    if !dir.is_dir() {
        return Err(Error::Config(format!(
            "--target {} is not a directory",
            dir.display()
        )));
    }
    let path = dir.join(LOCK);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io("opening the lock file", &path, e))
}

/// Take the target's advisory lock if it is free (`false`: another install holds it).
pub(crate) fn try_lock(lock: &File, dir: &Path) -> Result<bool> {
    match lock.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(Error::io("locking", dir.join(LOCK), e)),
    }
}

/// Non-reserved top-level names in `dir`, sorted.
fn list_entries(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let entry = entry.map_err(|e| Error::io("listing", dir, e))?;
        let name = entry.file_name().into_string().map_err(|n| {
            Error::Install(format!(
                "the installer produced a file name that is not UTF-8: {}",
                n.to_string_lossy()
            ))
        })?;
        if !name.starts_with(RESERVED_PREFIX) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Write JSON to `path.tmp-<pid>`, then rename over `path`.
fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).map_err(|e| Error::Serialization(e.to_string()))?;
    let tmp = PathBuf::from(format!("{}.tmp-{}", path.display(), std::process::id()));
    let mut f = File::create(&tmp).map_err(|e| Error::io("writing", &tmp, e))?;
    f.write_all(&json)
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|e| Error::io("writing", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing", path, e)),
    }
}

fn remove_tree(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if let Err(e) = fs::remove_dir_all(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove");
            }
        }
        Ok(_) => {
            let _ = fs::remove_file(path);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests;
