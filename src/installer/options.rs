//! What `install` is asked to do: typed values, built from the command line at the edge
//! (`cli`) and, for the two enums, also read from the `WorkspaceRequirements` resource.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cache::CacheConfig;
use crate::policy::Policy;

// One enum for the `--installer` flag (its value names come from `ValueEnum`) and the resource's
// `spec.install.installer` (serde): the webhook renders the one into the other. Doc comments
// here are the CRD's descriptions.
/// Which installer runs inside the worker's image.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Installer {
    /// `uv pip install --target DIR --python PYTHON` (fast; the default).
    #[default]
    Uv,
    /// `PYTHON -m pip install --target DIR` (what Bifrost's worker does).
    Pip,
}

impl Installer {
    /// The flag value, which is also the program's name in logs and the marker.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Uv => "uv",
            Self::Pip => "pip",
        }
    }
}

// The resource spells the values `Fail`/`Continue` (serde, the published CRD); the flag and the
// `--json` report spell them `fail`/`continue` (`ValueEnum`, `OnFailure::name`).
/// What a failed install does to the pod.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize, Deserialize, JsonSchema,
)]
pub enum OnFailure {
    /// Exit non-zero: the init container fails and a rolling update halts.
    #[default]
    Fail,
    /// Log a warning and exit 0 so the worker starts anyway (Bifrost's worker behaviour).
    Continue,
}

impl OnFailure {
    /// The flag value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Continue => "continue",
        }
    }
}

/// Where the packages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `--target DIR`: this folder (the worker puts it on `PYTHONPATH`).
    Dir(PathBuf),
    /// `--user-base DIR`: the user site of the worker's interpreter under this base (the worker
    /// sets `PYTHONUSERBASE=DIR`).
    UserBase(PathBuf),
}

impl Target {
    /// The folder the flag names (the base, for `--user-base`).
    pub(crate) fn path(&self) -> &std::path::Path {
        match self {
            Self::Dir(p) | Self::UserBase(p) => p,
        }
    }
}

/// Everything `install` needs; see `bifrost-requirements install --help` for each field.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub target: Target,
    pub installer: Installer,
    /// The worker's interpreter: a name on PATH or a path.
    pub python: String,
    /// The uv executable; `None`: the one shipped with this binary ([`super::find_uv`]).
    pub uv: Option<String>,
    pub fallback_file: Option<PathBuf>,
    /// Normalized (lowercase hex, no `sha256:`).
    pub expected_hash: Option<String>,
    /// The digest of the lock resolved for `expected_hash`'s content (normalized as it is).
    pub lock_sha256: Option<String>,
    pub on_failure: OnFailure,
    /// Deadline of the installer process.
    pub timeout: Duration,
    /// Deadline of reading Redis, retries included.
    pub redis_deadline: Duration,
    pub cache_dir: Option<PathBuf>,
    pub index_url: Option<String>,
    pub extra_index_url: Vec<String>,
    pub find_links: Vec<String>,
    pub no_index: bool,
    pub only_binary: bool,
    pub compile_bytecode: bool,
    /// Print the result as one JSON object on stdout.
    pub json: bool,
    /// The termination message file; `None`: `/dev/termination-log` when it is writable.
    pub termination_log: Option<PathBuf>,
    /// `None`: no Redis configured.
    pub redis: Option<CacheConfig>,
    /// The administrator's policy; the installer adds its own index URLs to it.
    pub policy: Policy,
    /// Where the controller copied the lock's files; `None`: the index only.
    pub wheelhouse: Option<super::WheelhouseSource>,
}
