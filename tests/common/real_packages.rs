//! Real packages from the public index, for tests that must meet what users install (numpy,
//! pandas, boto3…) rather than the tiny wheels of `wheels.rs`.
//!
//! `scripts/real-packages.sh` downloads each set once with `pip download`, for the workers'
//! interpreter (CPython 3.11, x86_64, manylinux up to 2_28), into
//! `${XDG_CACHE_HOME:-~/.cache}/bifrost-requirements/real-packages/<set>-<digest>/`; `scripts/setup.sh`
//! runs it, and [`set`] runs it again (a no-op when the set is there), so a test also works where
//! set-up did not run. The script is the one place that knows the pins and the folder's name.
//! Serve a set with `Index::serve_dir` (`real_index.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::index::normalize;

/// The download script, relative to the crate.
pub const SCRIPT: &str = "scripts/real-packages.sh";

/// One downloaded set.
pub struct RealSet {
    /// The folder: the distributions, `requirements.txt` and `SHA256SUMS`.
    pub dir: PathBuf,
    /// The pinned top-level requirements (`name==version` a line): what a test stores and locks.
    pub requirements: String,
    /// The distributions (wheels, and sdists where the set has one), sorted.
    pub files: Vec<PathBuf>,
}

/// The set `name` (`small`, `automation`, `data-science`, `docopt`), downloaded first when the
/// cache lacks it. Panics naming the script when it is unknown or the download fails.
pub fn set(name: &str) -> RealSet {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join(SCRIPT))
        .arg(name)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run bash {SCRIPT}: {e}"));
    assert!(
        out.status.success(),
        "`bash {SCRIPT} {name}` failed ({}; its reasons are above): the real package set \
         `{name}` is unknown, or missing from the cache and could not be downloaded. The script \
         downloads each set from the public index once: run it, or scripts/setup.sh, where the \
         index is reachable",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = PathBuf::from(stdout.lines().last().unwrap_or_default());
    let requirements = std::fs::read_to_string(dir.join("requirements.txt"))
        .unwrap_or_else(|e| panic!("{SCRIPT} named {}: no requirements.txt: {e}", dir.display()));
    let sums = sha256sums(&dir);
    assert!(
        !sums.is_empty(),
        "{SCRIPT} left no SHA256SUMS in {}",
        dir.display()
    );
    let files = sums.into_keys().map(|f| dir.join(f)).collect();
    RealSet {
        dir,
        requirements,
        files,
    }
}

impl RealSet {
    /// The pinned version of `project` at the top level (`None` when it is not pinned there).
    pub fn pin(&self, project: &str) -> Option<String> {
        self.pins().remove(&normalize(project))
    }

    /// Every top-level pin: normalized name → version.
    pub fn pins(&self) -> BTreeMap<String, String> {
        self.requirements
            .lines()
            .filter_map(|l| l.split_once("=="))
            .map(|(name, version)| (normalize(name.trim()), version.trim().to_string()))
            .collect()
    }

    /// `requirements.txt` of the pinned top-level list.
    pub fn requirements_file(&self) -> PathBuf {
        self.dir.join("requirements.txt")
    }

    /// Each distribution's SHA-256 (lowercase hex), by file name.
    pub fn sha256(&self) -> BTreeMap<String, String> {
        sha256sums(&self.dir)
    }

    /// How many distributions the folder holds of each project (normalized name).
    pub fn files_per_project(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for file in &self.files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            *counts.entry(project_of(name)).or_default() += 1;
        }
        counts
    }

    /// The folder's size in bytes (its distributions).
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

/// `dir/SHA256SUMS` as the script writes it (`sha256sum`'s format): file name → hash; empty
/// when the folder has none.
pub fn sha256sums(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(hash, file)| (file.to_string(), hash.to_string()))
        .collect()
}

/// The normalized project name of a distribution's file name: a wheel's first field (its `-`
/// are escaped as `_`), an sdist's name before its version (`docopt-0.6.2.tar.gz`).
pub fn project_of(file: &str) -> String {
    let name = match file.strip_suffix(".whl") {
        Some(stem) => stem.split('-').next().unwrap_or(stem),
        None => {
            let stem = file
                .strip_suffix(".tar.gz")
                .or_else(|| file.strip_suffix(".zip"))
                .unwrap_or(file);
            stem.rsplit_once('-').map_or(stem, |(name, _)| name)
        }
    };
    normalize(name)
}
