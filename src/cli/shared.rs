//! Flag groups several commands share: the database row, the Redis cache, the policy.

use std::time::Duration;

use clap::Args;

use super::parse;
use crate::cache::{CacheConfig, DEFAULT_KEY, DEFAULT_TTL_SECONDS};
use crate::database::{DEFAULT_ENTITY_TYPE, DEFAULT_PATH, RowSelector};
use crate::policy::Policy;

/// What a command that writes needs: the row, the cache refreshed after it, the policy the
/// content must pass.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub redis: RedisWriteArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
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
    #[arg(long, env = "BIFROST_DATABASE_TIMEOUT", default_value = "10s", value_parser = parse::duration)]
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

/// How to reach the Redis cache: all a reader (`install`) needs.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[:password@]host:port/db`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis key holding `{"content": …, "hash": …}`.
    #[arg(long, env = "BIFROST_REQUIREMENTS_REDIS_KEY", default_value = DEFAULT_KEY)]
    pub redis_key: String,

    /// Timeout of each Redis connect and command.
    #[arg(long, env = "BIFROST_REDIS_TIMEOUT", default_value = "3s", value_parser = parse::duration)]
    pub redis_timeout: Duration,

    /// Attempts per Redis operation (exponential backoff between attempts).
    #[arg(long, env = "BIFROST_REDIS_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub redis_attempts: u32,
}

impl RedisArgs {
    /// The cache configuration, if a URL was given (with the default TTL: a reader writes
    /// nothing, see [`RedisWriteArgs`]).
    pub fn config(&self) -> Option<CacheConfig> {
        // Destructured: a flag added here and never read fails to compile (unused binding).
        let Self {
            redis_url,
            redis_key,
            redis_timeout,
            redis_attempts,
        } = self;
        let url = redis_url.as_ref()?.trim();
        if url.is_empty() {
            return None;
        }
        Some(CacheConfig {
            key: redis_key.clone(),
            connect_timeout: *redis_timeout,
            command_timeout: *redis_timeout,
            attempts: *redis_attempts,
            ..CacheConfig::new(url)
        })
    }
}

/// The Redis cache of a command that writes it (`warm`, `requirements`): the connection and the
/// TTL of the key it writes. `install` only reads, so it does not offer `--ttl-seconds`.
#[derive(Debug, Clone, Args)]
pub struct RedisWriteArgs {
    #[command(flatten)]
    pub connection: RedisArgs,

    /// TTL of the Redis key in seconds.
    #[arg(long, env = "BIFROST_REQUIREMENTS_TTL_SECONDS", default_value_t = DEFAULT_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl_seconds: u64,
}

impl RedisWriteArgs {
    /// The cache configuration, if a URL was given.
    pub fn config(&self) -> Option<CacheConfig> {
        Some(CacheConfig {
            ttl: Duration::from_secs(self.ttl_seconds),
            ..self.connection.config()?
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
        let Self {
            allowed_index_urls,
            only_binary,
        } = self;
        Policy {
            allowed_index_urls: allowed_index_urls
                .iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            only_binary: *only_binary,
        }
    }
}
