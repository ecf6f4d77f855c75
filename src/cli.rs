//! Command-line interface: typed arguments, each with an environment-variable fallback.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cache::{CacheConfig, DEFAULT_KEY, DEFAULT_TTL_SECONDS};
use crate::database::{DEFAULT_ENTITY_TYPE, DEFAULT_PATH, RowSelector};
use crate::policy::Policy;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 internal or I/O error; 2 invalid input \
(bad requirement, policy violation, bad flag); 3 PostgreSQL unreachable or failing; \
4 Redis unreachable, failing or holding a corrupt value; 5 installation failed.";

/// Persist Bifrost's Python requirements across container restarts.
///
/// The requirements.txt row in PostgreSQL (`workspace_files`) is the source of truth; Redis
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create Bifrost's `workspace_files` table where it is missing and install the NOTIFY
    /// trigger the operator listens to. Never alters an existing table; safe to run every start.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Copy the requirements row from PostgreSQL into Redis (the one-shot init step of a
    /// docker-compose deployment). Exits 0 when warmed or when there is no row (and says which).
    Warm {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Show or change requirements.txt the way Bifrost's package install does: read the row,
    /// merge, validate, save with compare-and-swap, refresh Redis. Invalid input changes nothing.
    Requirements {
        #[command(subcommand)]
        command: RequirementsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequirementsCommand {
    /// Print requirements.txt exactly as stored.
    Show {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Add requirements (`flask==3.0`, `requests[socks]>=2`); an entry of the same normalized
    /// name is replaced, never duplicated.
    Add {
        /// PEP 508 requirements, one per argument.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Remove packages by name (PEP 503 normalized comparison).
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Replace requirements.txt with the content of a file (`-` for standard input).
    Set {
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Where the requirements row lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (`postgresql://…`; SQLAlchemy's `postgresql+asyncpg://…` is accepted).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// `workspace_files.path` of the requirements row.
    #[arg(long, env = "BIFROST_REQUIREMENTS_PATH", default_value = DEFAULT_PATH)]
    pub path: String,

    /// `workspace_files.entity_type` of the requirements row.
    #[arg(long, env = "BIFROST_REQUIREMENTS_ENTITY_TYPE", default_value = DEFAULT_ENTITY_TYPE)]
    pub entity_type: String,

    /// How long to wait for a database connection (e.g. `10s`, `500ms`).
    #[arg(long, env = "BIFROST_DATABASE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_timeout: Duration,
}

impl DatabaseArgs {
    pub fn selector(&self) -> RowSelector {
        RowSelector {
            path: self.path.clone(),
            entity_type: self.entity_type.clone(),
        }
    }
}

/// How to reach the Redis cache.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[:password@]host:port/db`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis key holding `{"content": …, "hash": …}`.
    #[arg(long, env = "BIFROST_REQUIREMENTS_REDIS_KEY", default_value = DEFAULT_KEY)]
    pub redis_key: String,

    /// TTL of the Redis key in seconds.
    #[arg(long, env = "BIFROST_REQUIREMENTS_TTL_SECONDS", default_value_t = DEFAULT_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl_seconds: u64,

    /// Timeout of each Redis connect and command.
    #[arg(long, env = "BIFROST_REDIS_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// Attempts per Redis operation (exponential backoff between attempts).
    #[arg(long, env = "BIFROST_REDIS_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub redis_attempts: u32,
}

impl RedisArgs {
    /// The cache configuration, if a URL was given.
    pub fn config(&self) -> Option<CacheConfig> {
        let url = self.redis_url.as_ref()?.trim();
        if url.is_empty() {
            return None;
        }
        Some(CacheConfig {
            key: self.redis_key.clone(),
            ttl: Duration::from_secs(self.ttl_seconds),
            connect_timeout: self.redis_timeout,
            command_timeout: self.redis_timeout,
            attempts: self.redis_attempts,
            ..CacheConfig::new(url)
        })
    }
}

/// What the requirements policy allows beyond the safe default.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Index URL that requirements.txt may select with `-i/--index-url/--extra-index-url`
    /// (repeat, or comma-separate in the environment variable).
    #[arg(
        long = "allow-index-url",
        env = "BIFROST_ALLOWED_INDEX_URLS",
        value_delimiter = ','
    )]
    pub allowed_index_urls: Vec<String>,

    /// Reject `--no-binary` lines (no source builds).
    #[arg(long = "policy-only-binary", env = "BIFROST_POLICY_ONLY_BINARY")]
    pub only_binary: bool,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            allowed_index_urls: self
                .allowed_index_urls
                .iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            only_binary: self.only_binary,
        }
    }
}

/// `1500ms`, `3s`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 3s, 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{s}` has an unknown unit `{unit}` (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(
            parse_duration("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
