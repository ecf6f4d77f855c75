//! Flags of `install`, of the hidden `installer-guard` and of `bootstrap`, and their conversion
//! into the typed options of [`crate::installer`] and [`crate::bootstrap`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse;
use super::shared::{PolicyArgs, RedisArgs};
use super::wheelhouse::WheelhouseArgs;
use crate::installer::{self, Installer, OnFailure};

/// `--help` text of `install`: what each exit code means.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0    installed, already installed (marker matches), nothing to install, or any failure
       under --on-failure continue (a warning says what failed), including some packages
       not installing (the others are installed; the next run retries the failed ones)
  1    I/O error (target not writable, …)
  2    invalid flags or configuration (always, even with --on-failure continue), or a
       requirements.txt the policy rejects (names the line)
  4    no usable source: Redis unreachable/failing/corrupt and no usable fallback file,
       or a corrupt fallback file, or a requirements.lock beside it that the policy rejects
  5    the installer failed, timed out (--timeout; its process group is stopped), the
       interpreter/uv could not be found, or some packages did not install when each was
       tried on its own (named; the ones that did are not applied)
  130  interrupted (SIGINT), 143 terminated (SIGTERM): the installer was stopped first
In every failure case the target is left as it was: the previous install stays importable
and its marker unchanged.";

/// `install`: flags of the worker's start-up step; every flag has a `BIFROST_INSTALL_*`
/// environment fallback (flag names are a contract with the webhook and with compose files).
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Folder to install into; put it on the worker's PYTHONPATH. Created if missing; may be a
    /// mount point (an emptyDir). Holds `.bifrost-requirements.json`, the marker.
    #[arg(
        long,
        env = "BIFROST_INSTALL_TARGET",
        value_name = "DIR",
        required_unless_present = "user_base",
        conflicts_with = "user_base"
    )]
    pub target: Option<PathBuf>,

    /// Install into the user site of the worker's interpreter under this base instead of
    /// `--target`: the folder `PYTHON` reports as `site.getusersitepackages()` with
    /// `PYTHONUSERBASE=DIR` (e.g. `DIR/lib/python3.11/site-packages`). Set `PYTHONUSERBASE=DIR`
    /// in the worker and Python puts the packages on `sys.path` by itself, leaving `PYTHONPATH`
    /// alone.
    #[arg(long, env = "BIFROST_INSTALL_USER_BASE", value_name = "DIR")]
    pub user_base: Option<PathBuf>,

    /// Which program installs the packages.
    #[arg(long, env = "BIFROST_INSTALL_INSTALLER", value_enum,
          default_value_t = Installer::Uv)]
    pub installer: Installer,

    /// The worker's Python interpreter (name on PATH or path); wheels are chosen for its ABI.
    #[arg(
        long,
        env = "BIFROST_INSTALL_PYTHON",
        default_value = "python3",
        value_name = "PYTHON"
    )]
    pub python: String,

    /// The uv executable. Default: `uv` next to this binary (the one shipped with it), then `uv`
    /// on PATH.
    #[arg(long, env = "BIFROST_INSTALL_UV", value_name = "PATH")]
    pub uv: Option<String>,

    /// Used when Redis is down or lacks the key: the ConfigMap snapshot, either plain
    /// requirements.txt (checked against a sibling file `hash` if present) or the JSON payload.
    /// A `requirements.lock` beside it (the controller's lock) is installed instead of resolving
    /// when it was resolved from the content being installed and for this worker's interpreter
    /// (`--no-deps --require-hashes`); otherwise the log and `--json` say why not.
    #[arg(long, env = "BIFROST_INSTALL_FALLBACK_FILE", value_name = "FILE")]
    pub fallback_file: Option<PathBuf>,

    /// The hash this worker was admitted for (`sha256:` prefix accepted). A source holding it is
    /// preferred; if none does, the newest (Redis) is installed and a warning says so.
    #[arg(long, env = "BIFROST_INSTALL_EXPECTED_HASH", value_name = "SHA256",
          value_parser = parse::expected_hash)]
    pub expected_hash: Option<String>,

    /// The SHA-256 of the lock the controller resolved for the content `--expected-hash` names
    /// (the webhook passes `status.lock.sha256`). When that content is installed, the
    /// `requirements.lock` beside `--fallback-file` must be there and hash to this, else
    /// `install` refuses it (exit 4) and leaves the target as it was.
    #[arg(long, env = "BIFROST_INSTALL_LOCK_SHA256", value_name = "SHA256",
          value_parser = parse::expected_hash, requires = "expected_hash")]
    pub lock_sha256: Option<String>,

    /// What a failure does: `fail` exits non-zero (halts a rolling update), `continue` warns and
    /// exits 0 so the worker starts with the target as it was, or, when only some packages
    /// failed, with the ones that installed. Invalid flags always fail.
    #[arg(long, env = "BIFROST_INSTALL_ON_FAILURE", value_enum,
          default_value_t = OnFailure::Fail)]
    pub on_failure: OnFailure,

    /// Deadline for the installer (`300`, `90s`, `5m`), shared by the batch and, when it fails,
    /// the per-package attempts; on expiry the running installer's whole process group is
    /// stopped (SIGTERM, then SIGKILL).
    #[arg(long, env = "BIFROST_INSTALL_TIMEOUT", default_value = "300s", allow_hyphen_values = true,
          value_parser = parse::timeout, value_name = "DURATION")]
    pub timeout: Duration,

    /// Overall deadline for reading Redis (connect and GET, retries included).
    #[arg(long, env = "BIFROST_INSTALL_REDIS_DEADLINE", default_value = "15s",
          allow_hyphen_values = true, value_parser = parse::timeout,
          value_name = "DURATION")]
    pub redis_deadline: Duration,

    /// Installer cache folder (e.g. a shared volume): warm caches make installs much faster.
    #[arg(long, env = "BIFROST_INSTALL_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Package index to install from (also allowed in requirements.txt `-i` lines).
    #[arg(long, env = "BIFROST_INSTALL_INDEX_URL", value_name = "URL")]
    pub index_url: Option<String>,

    /// Additional index (repeat, or comma-separate in the environment variable).
    #[arg(
        long,
        env = "BIFROST_INSTALL_EXTRA_INDEX_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub extra_index_url: Vec<String>,

    /// Folder or URL of wheels to install from (repeat, or comma-separate in the variable).
    #[arg(
        long,
        env = "BIFROST_INSTALL_FIND_LINKS",
        value_delimiter = ',',
        value_name = "DIR|URL"
    )]
    pub find_links: Vec<String>,

    /// Do not use any package index (only --find-links).
    #[arg(long, env = "BIFROST_INSTALL_NO_INDEX",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_index: bool,

    /// Install wheels only, never build from source (also rejects `--no-binary` lines).
    #[arg(id = "install_only_binary", long = "only-binary", env = "BIFROST_INSTALL_ONLY_BINARY",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub only_binary: bool,

    /// Compile .pyc files at install time (slower install, faster first import). Off by
    /// default: a pod's install is on every start's critical path, while Python compiles only
    /// the modules a worker imports, once, into the writable target.
    #[arg(long, env = "BIFROST_INSTALL_COMPILE_BYTECODE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub compile_bytecode: bool,

    /// Print one JSON result object on stdout (progress stays on stderr).
    #[arg(long, env = "BIFROST_INSTALL_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,

    /// File for a one-line summary (`installed 12/13; failed: NAME (REASON)`, or the error's
    /// first line) that Kubernetes shows as the container's termination message. Default:
    /// /dev/termination-log when it exists and is writable (the kubelet mounts it).
    #[arg(long, env = "BIFROST_INSTALL_TERMINATION_LOG", value_name = "FILE")]
    pub termination_log: Option<PathBuf>,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,

    #[command(flatten)]
    pub wheelhouse: WheelhouseArgs,
}

/// Arguments of the hidden `installer-guard` command.
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// The `install` process the guard belongs to.
    #[arg(long)]
    pub parent: i32,
    /// Resident memory the program and everything it starts may hold together, in bytes (the
    /// resolver's memory limit): over it, the guard stops them all.
    #[arg(long, value_name = "BYTES")]
    pub memory_limit: Option<u64>,
    /// Address-space limit of the program, in bytes (default with --memory-limit: that plus
    /// 4 GiB, a backstop; see `uv::guard`).
    #[arg(long, value_name = "BYTES")]
    pub address_space_limit: Option<u64>,
    /// The installer and its arguments (after `--`).
    #[arg(required = true, num_args = 1.., last = true)]
    pub command: Vec<OsString>,
}

/// `bootstrap`: copy the binary and uv into the shared volume.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Folder to copy into (created if missing).
    #[arg(long, env = "BIFROST_BOOTSTRAP_TO", value_name = "DIR")]
    pub to: PathBuf,

    /// The uv executable to copy. Default: `uv` next to this binary, else on PATH.
    #[arg(long, env = "BIFROST_BOOTSTRAP_UV", value_name = "PATH")]
    pub uv: Option<PathBuf>,
}

impl TryFrom<InstallArgs> for installer::Options {
    type Error = crate::error::Error;

    /// The options, or a configuration error (exit 2) naming the flag.
    fn try_from(a: InstallArgs) -> crate::error::Result<Self> {
        // Destructured: a flag that `install` offers but never reads fails to compile (unused
        // binding), so `install --help` lists only what it honours.
        let InstallArgs {
            target,
            user_base,
            installer,
            python,
            uv,
            fallback_file,
            expected_hash,
            lock_sha256,
            on_failure,
            timeout,
            redis_deadline,
            cache_dir,
            index_url,
            extra_index_url,
            find_links,
            no_index,
            only_binary,
            compile_bytecode,
            json,
            termination_log,
            redis,
            policy,
            wheelhouse,
        } = a;
        Ok(Self {
            wheelhouse: wheelhouse.source(|name| std::env::var(name).ok())?,
            redis: redis.config(),
            policy: policy.policy(),
            target: match user_base {
                Some(base) => installer::InstallTarget::UserBase(base),
                None => installer::InstallTarget::Dir(target.unwrap_or_default()),
            },
            installer,
            python,
            uv,
            fallback_file,
            expected_hash,
            lock_sha256,
            on_failure,
            timeout,
            redis_deadline,
            cache_dir,
            index_url,
            extra_index_url,
            find_links,
            no_index,
            only_binary,
            compile_bytecode,
            json,
            termination_log,
        })
    }
}

impl From<BootstrapArgs> for crate::bootstrap::Options {
    fn from(a: BootstrapArgs) -> Self {
        Self { to: a.to, uv: a.uv }
    }
}
