//! Command-line interface: typed arguments, each with an environment-variable fallback.

//!
//! Clap stops here: [`commands`] destructures the parsed command and hands each domain module its
//! own typed options (`installer::Options`, `operator::Config`, …); no module outside `cli`
//! sees a clap type.

mod commands;
mod install;
mod lock;
mod operator;
pub(crate) mod parse;
mod shared;
mod wheelhouse;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use commands::run;
pub(crate) use install::{BootstrapArgs, GuardArgs, InstallArgs};
pub(crate) use operator::OperatorArgs;
pub(crate) use shared::{DatabaseArgs, RedisWriteArgs, SourceArgs, StoreArgs};

use crate::telemetry::LogFormat;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 internal or I/O error; 2 invalid input \
(bad requirement, policy violation, bad flag, missing bucket); 3 the store of requirements.txt \
unreachable, refusing the credentials or failing (PostgreSQL or S3), or holding content that is \
not a requirements file; 4 Redis unreachable, failing or holding a corrupt value; 5 installation \
failed.";

/// Persist Bifrost's Python requirements across container restarts.
///
/// requirements.txt is kept in a store, the source of truth: the `workspace_files` row in
/// PostgreSQL, or the S3 object `_repo/requirements.txt` of Bifrost today (`--store s3`); Redis
/// (`bifrost:requirements:content`) caches it for workers; every worker installs it before it
/// starts. On Kubernetes run `operator`; on hosts without Kubernetes use `warm` as the one-shot
/// init step and `install` as the worker's start-up step.
#[derive(Debug, Parser)]
#[command(name = "bifrost-requirements", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "BIFROST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,bifrost_requirements=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create Bifrost's `workspace_files` table where it is missing and install the NOTIFY
    /// trigger the operator listens to. Never alters an existing table; safe to run every start.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Copy requirements.txt from its store (the PostgreSQL row, or the S3 object with
    /// `--store s3`) into Redis (the one-shot init step of a docker-compose deployment). Exits 0
    /// when warmed or when there is no row or object (and says which).
    Warm {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show or change requirements.txt the way Bifrost's package install does: read it, merge,
    /// validate, save with compare-and-swap (the row's hash, or the S3 object's ETag), refresh
    /// Redis. Invalid input changes nothing.
    Requirements {
        #[command(subcommand)]
        command: RequirementsCommand,
    },
    /// Run the Kubernetes operator: the controller (validate, warm Redis, snapshot, roll out), the
    /// database mirror, leader election, and the metrics/health endpoints. Needs only a
    /// kubeconfig (in-cluster or KUBECONFIG); every flag has a default.
    Operator(OperatorArgs),
    /// Print the `WorkspaceRequirements` CustomResourceDefinition as YAML
    /// (`crds/workspacerequirements.bifrost.io.yaml` is this output).
    Crd,
    /// Install requirements.txt into a folder on PYTHONPATH before the worker starts (the init
    /// container's command; under docker compose, run it before the worker's own command).
    /// Reads Redis, then --fallback-file; checks the hash and the policy; installs with uv (or
    /// pip) into a staging folder and swaps it in; skips when the marker has the same hash.
    #[command(after_help = install::EXIT_CODES)]
    Install(InstallArgs),
    /// Copy this binary and `uv` into a folder (the injected bootstrap init container's command:
    /// the operator image has no shell, so the binary copies itself).
    Bootstrap(BootstrapArgs),
    /// Internal: run the installer so that it and its descendants die with `install` (see
    /// `uv::guard`).
    #[command(name = crate::uv::guard::SUBCOMMAND, hide = true)]
    InstallerGuard(GuardArgs),
}

#[derive(Debug, Subcommand)]
pub enum RequirementsCommand {
    /// Print requirements.txt exactly as stored, or with --lock the lock it resolves to.
    Show {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        lock: lock::LockArgs,
    },
    /// Add requirements (`flask==3.0`, `requests[socks]>=2`); an entry of the same normalized
    /// name is replaced, never duplicated.
    Add {
        /// PEP 508 requirements, one per argument.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove packages by name (PEP 503 normalized comparison).
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Replace requirements.txt with the content of a file (`-` for standard input).
    Set {
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
    },
}

impl Cli {
    /// Parse the process's arguments. A variable that is set but empty counts as unset (a
    /// ConfigMap key left blank, `envFrom` of a Secret with an empty value), so the flag's
    /// default applies, as the README says; clap alone would take the empty value.
    pub fn from_process() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let empty = |name: &std::ffi::OsStr| std::env::var_os(name).is_some_and(|v| v.is_empty());
        let matches = without_empty_env(Self::command(), &empty).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// `cmd` with the environment fallback dropped from every argument (of every subcommand) whose
/// variable `empty` says is blank.
fn without_empty_env(
    cmd: clap::Command,
    empty: &dyn Fn(&std::ffi::OsStr) -> bool,
) -> clap::Command {
    cmd.mut_args(|arg| match arg.get_env() {
        Some(name) if empty(name) => arg.env(None),
        _ => arg,
    })
    .mut_subcommands(|sub| without_empty_env(sub, empty))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument with an environment fallback, by variable name, on every subcommand path.
    fn env_names(cmd: &clap::Command) -> Vec<String> {
        let mut names: Vec<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env())
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        for sub in cmd.get_subcommands() {
            names.extend(env_names(sub));
        }
        names
    }

    #[test]
    fn blank_variables_lose_their_fallback_everywhere_and_others_keep_it() {
        let all = env_names(&Cli::command());
        assert!(
            all.iter().any(|n| n == "BIFROST_REQUIREMENTS_S3_KEY"),
            "{all:?}"
        );
        let blank = |n: &std::ffi::OsStr| n == "BIFROST_REQUIREMENTS_S3_KEY" || n == "REDIS_URL";
        let left = env_names(&without_empty_env(Cli::command(), &blank));
        assert!(
            !left
                .iter()
                .any(|n| n == "BIFROST_REQUIREMENTS_S3_KEY" || n == "REDIS_URL")
        );
        let kept = all
            .iter()
            .filter(|n| *n != "BIFROST_REQUIREMENTS_S3_KEY" && *n != "REDIS_URL")
            .count();
        assert_eq!(left.len(), kept);
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The long flags of a (sub)command path, e.g. `["requirements", "add"]`.
    fn long_flags(path: &[&str]) -> Vec<String> {
        let mut cmd = Cli::command();
        cmd.build();
        let mut sub = &cmd;
        for name in path {
            sub = sub
                .find_subcommand(name)
                .unwrap_or_else(|| panic!("no subcommand {name}"));
        }
        sub.get_arguments()
            .filter_map(|a| a.get_long())
            .map(str::to_owned)
            .collect()
    }

    /// `install` offers exactly what it reads (each flag is destructured into
    /// `installer::Options` or the Redis/policy options): no `--ttl-seconds`, which only
    /// commands that write Redis honour.
    #[test]
    fn install_offers_only_the_flags_it_reads() {
        let mut flags = long_flags(&["install"]);
        flags.sort();
        let mut expected = vec![
            "target",
            "user-base",
            "installer",
            "python",
            "uv",
            "fallback-file",
            "expected-hash",
            "lock-sha256",
            "on-failure",
            "timeout",
            "redis-deadline",
            "cache-dir",
            "index-url",
            "extra-index-url",
            "find-links",
            "no-index",
            "only-binary",
            "compile-bytecode",
            "json",
            "termination-log",
            "redis-url",
            "redis-key",
            "redis-timeout",
            "redis-attempts",
            "allow-index-url",
            "policy-only-binary",
            "wheelhouse",
            "wheelhouse-endpoint",
            "wheelhouse-region",
            "wheelhouse-path-style",
            // global
            "log-format",
            "log-level",
            "help",
        ];
        expected.sort();
        assert_eq!(flags, expected);
        for writer in [
            &["warm"][..],
            &["requirements", "add"],
            &["requirements", "remove"],
            &["requirements", "set"],
        ] {
            assert!(
                long_flags(writer).iter().any(|f| f == "ttl-seconds"),
                "{writer:?} writes Redis and must offer --ttl-seconds"
            );
        }
    }
}
