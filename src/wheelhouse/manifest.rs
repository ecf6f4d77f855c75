//! `manifest.json`, written last into a lock's folder: its presence says the wheelhouse of that
//! lock is complete, its entries say which files it holds and what their bytes must hash to.
//!
//! A pod reads it from storage that others can write to, so it is read as hostile: bounded in
//! size and count, every name one plain path segment, every hash 64 hex digits, the lock it
//! names the one asked for. What is wrong is said with the entry.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{MAX_FILE_BYTES, dist, layout};
use crate::lock::Pinned;

/// Larger manifests are refused before they are read: 10,000 entries take about 1.5 MB less.
pub const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;
/// More files than any lock pins (a lock of a thousand distributions with ten files each).
const MAX_FILES: usize = 10_000;

/// What a complete wheelhouse holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The lock's SHA-256 (lowercase hex): the folder it describes.
    pub lock_sha256: String,
    /// Sorted by name.
    pub files: Vec<ManifestFile>,
    /// RFC 3339, when the fill that completed it wrote it.
    pub written_at: String,
}

/// One file of a wheelhouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// The distribution's file name, as the index served it (one path segment).
    pub name: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

impl Manifest {
    /// The manifest of `files` for the lock `lock_sha256`, written now.
    pub(super) fn new(lock_sha256: &str, mut files: Vec<ManifestFile>) -> Manifest {
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Manifest {
            lock_sha256: lock_sha256.to_string(),
            files,
            written_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    pub(super) fn render(&self) -> Vec<u8> {
        // Serializing plain strings and numbers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// The manifest of the lock `lock_sha256` (lowercase hex) in `bytes`, or what is wrong with
    /// it. Hashes are lowercased.
    pub(super) fn parse(bytes: &[u8], lock_sha256: &str) -> Result<Manifest, String> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(too_large(bytes.len() as u64));
        }
        let mut manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("it is not a manifest: {e}"))?;
        if !manifest.lock_sha256.eq_ignore_ascii_case(lock_sha256) {
            return Err(format!(
                "it is the manifest of the lock {:?}, not of {lock_sha256}",
                cut(&manifest.lock_sha256)
            ));
        }
        if chrono::DateTime::parse_from_rfc3339(&manifest.written_at).is_err() {
            return Err(format!(
                "writtenAt {:?} is not an RFC 3339 time",
                cut(&manifest.written_at)
            ));
        }
        if manifest.files.len() > MAX_FILES {
            return Err(format!(
                "it lists {} files, over the limit of {MAX_FILES}",
                manifest.files.len()
            ));
        }
        let mut names = HashSet::new();
        for file in &mut manifest.files {
            check(file).map_err(|why| format!("files[{:?}]: {why}", cut(&file.name)))?;
            if !names.insert(file.name.clone()) {
                return Err(format!("files: {:?} is listed twice", file.name));
            }
            file.sha256.make_ascii_lowercase();
        }
        Ok(manifest)
    }

    /// The files a lock installs from, at least one per pin: those of the pin's project and
    /// version whose hash the pin lists. `Err` names the first pin without one.
    pub(super) fn cover(&self, pins: &[Pinned]) -> Result<Vec<&ManifestFile>, String> {
        let mut out: Vec<&ManifestFile> = Vec::new();
        for pin in pins {
            let mut found = self
                .files
                .iter()
                .filter(|f| dist::is_file_of(&f.name, &pin.name, &pin.version))
                .filter(|f| pin.hashes.contains(&format!("sha256:{}", f.sha256)))
                .peekable();
            if found.peek().is_none() {
                return Err(format!(
                    "{} (lock line {}) has no file here whose hash the lock pins",
                    pin.pin(),
                    pin.line
                ));
            }
            for file in found {
                if !out.iter().any(|f| f.name == file.name) {
                    out.push(file);
                }
            }
        }
        Ok(out)
    }
}

/// Why a manifest of `size` bytes is not read.
pub(super) fn too_large(size: u64) -> String {
    format!("the manifest is {size} bytes, over the limit of {MAX_MANIFEST_BYTES} (1 MiB)")
}

fn check(file: &ManifestFile) -> Result<(), String> {
    layout::file_name(&file.name)?;
    if !layout::is_sha256(&file.sha256) {
        return Err(format!(
            "sha256 {:?} is not 64 hex digits",
            cut(&file.sha256)
        ));
    }
    if file.size > MAX_FILE_BYTES {
        return Err(format!(
            "size {} is over the limit of {MAX_FILE_BYTES} bytes",
            file.size
        ));
    }
    Ok(())
}

/// A hostile value shown in a message, at most 80 characters of it.
fn cut(value: &str) -> String {
    match value.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &value[..at]),
        None => value.to_string(),
    }
}
