//! Flag groups several commands share: the store (database row or S3 object), the Redis cache,
//! the policy.

use std::time::Duration;

use clap::Args;

use super::parse;
use crate::cache::{CacheConfig, DEFAULT_KEY, DEFAULT_TTL_SECONDS};
use crate::database::{DEFAULT_ENTITY_TYPE, DEFAULT_PATH, RowSelector};
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::s3::{self, Credentials, S3Config};
use crate::store::StoreKind;

/// Bifrost's own name for the Redis URL (Secret `bifrost-secrets`), read when neither
/// `--redis-url` nor `REDIS_URL` is set: clap's `env` takes one name.
pub(crate) const BIFROST_REDIS_URL: &str = "BIFROST_REDIS_URL";

/// What a command that writes needs: the store, the cache refreshed after it, the policy the
/// content must pass.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub redis: RedisWriteArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Which store holds requirements.txt, and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Where requirements.txt lives: the `workspace_files` row in PostgreSQL (`database`, the
    /// --database-url/--path flags) or the S3 object of Bifrost today (`s3`, the --s3-* flags,
    /// which read Bifrost's own BIFROST_S3_* names).
    #[arg(id = "store_kind", long = "store", env = "BIFROST_REQUIREMENTS_STORE", value_enum,
          default_value_t = StoreKind::Database)]
    pub kind: StoreKind,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub s3: S3Args,
}

/// Where the requirements row lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (`postgresql://…`; SQLAlchemy's `postgresql+asyncpg://…` is accepted).
    /// Required by `migrate` and with `--store database`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

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
    /// The URL, or an error naming the flag and variable that give it.
    pub(crate) fn url(&self) -> Result<&str> {
        set(&self.database_url).ok_or_else(|| {
            Error::Config(
                "a PostgreSQL URL is required (--database-url or DATABASE_URL); for Bifrost's S3 \
                 object use --store s3"
                    .into(),
            )
        })
    }

    pub(crate) fn selector(&self) -> RowSelector {
        RowSelector {
            path: self.path.clone(),
            entity_type: self.entity_type.clone(),
        }
    }
}

/// Where Bifrost's requirements.txt object lives. Each flag falls back to Bifrost's own
/// environment name, so `envFrom` of its Secret `bifrost-secrets` and ConfigMap `bifrost-config`
/// works unchanged; an empty value counts as unset.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Bucket holding requirements.txt. Required with `--store s3`.
    #[arg(long, env = s3::ENV_BUCKET, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,

    /// Key of requirements.txt in the bucket (Bifrost's `RepoStorage` prefixes `_repo/`).
    #[arg(long, env = "BIFROST_REQUIREMENTS_S3_KEY", default_value = s3::DEFAULT_KEY,
          value_name = "KEY")]
    pub s3_key: String,

    /// S3 endpoint, e.g. `http://seaweedfs:8333` (path-style addressing then). Unset: AWS S3.
    #[arg(long, env = s3::ENV_ENDPOINT, value_name = "URL")]
    pub s3_endpoint_url: Option<String>,

    /// Region (default `us-east-1`, as Bifrost's).
    #[arg(long, env = s3::ENV_REGION, value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Access key id. With neither key set, the default AWS credential chain is used
    /// (AWS_ACCESS_KEY_ID…, web identity, pod identity, instance metadata).
    #[arg(long, env = s3::ENV_ACCESS_KEY, hide_env_values = true, value_name = "ID")]
    pub s3_access_key: Option<String>,

    /// Secret access key (prefer the environment variable: a flag shows in `ps`). Never printed.
    #[arg(long, env = s3::ENV_SECRET_KEY, hide_env_values = true, value_name = "SECRET")]
    pub s3_secret_key: Option<String>,

    /// Path-style addressing (`https://host/bucket/key`); default: on when an endpoint is set.
    #[arg(long, env = "BIFROST_S3_FORCE_PATH_STYLE", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub s3_force_path_style: Option<bool>,

    /// Timeout of each S3 request, connecting included.
    #[arg(long, env = "BIFROST_S3_TIMEOUT", default_value = "10s", value_parser = parse::timeout,
          value_name = "DURATION")]
    pub s3_timeout: Duration,
}

impl S3Args {
    /// The object's configuration; every error names the flag and the variable to fix.
    pub(crate) fn config(&self) -> Result<S3Config> {
        // Destructured: a flag added here and never read fails to compile (unused binding).
        let Self {
            s3_bucket,
            s3_key,
            s3_endpoint_url,
            s3_region,
            s3_access_key,
            s3_secret_key,
            s3_force_path_style,
            s3_timeout,
        } = self;
        let bucket = set(s3_bucket).ok_or_else(|| {
            Error::Config(format!(
                "--store s3 needs the bucket: set --s3-bucket or {} (it is unset or empty)",
                s3::ENV_BUCKET
            ))
        })?;
        from_input("--s3-bucket", s3::ENV_BUCKET, s3::validate_bucket(bucket))?;
        let mut config = S3Config::new(bucket);
        from_input(
            "--s3-key",
            "BIFROST_REQUIREMENTS_S3_KEY",
            s3::validate_key(s3_key),
        )?;
        config.key = s3_key.clone();
        if let Some(endpoint) = set(s3_endpoint_url) {
            from_input(
                "--s3-endpoint-url",
                s3::ENV_ENDPOINT,
                s3::validate_endpoint(endpoint),
            )?;
            config = config.with_endpoint(endpoint);
        }
        if let Some(path_style) = s3_force_path_style {
            config.force_path_style = *path_style;
        }
        if let Some(region) = set(s3_region) {
            from_input("--s3-region", s3::ENV_REGION, s3::validate_region(region))?;
            config.region = region.to_string();
        }
        // The secret is taken as given (spaces may be part of it); the rest is trimmed.
        let secret = s3_secret_key.as_deref().filter(|s| !s.is_empty());
        config.credentials = match (set(s3_access_key), secret) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id.to_string(),
                secret_access_key: secret.to_string(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "--s3-access-key ({}) is set but --s3-secret-key ({}) is not: set both, or \
                     neither to use the default AWS credential chain",
                    s3::ENV_ACCESS_KEY,
                    s3::ENV_SECRET_KEY
                )));
            }
            (None, Some(_)) => {
                return Err(Error::Config(format!(
                    "--s3-secret-key ({}) is set but --s3-access-key ({}) is not: set both, or \
                     neither to use the default AWS credential chain",
                    s3::ENV_SECRET_KEY,
                    s3::ENV_ACCESS_KEY
                )));
            }
        };
        config.timeout = *s3_timeout;
        from_input(
            "--s3-access-key/--s3-secret-key",
            "BIFROST_S3_ACCESS_KEY/BIFROST_S3_SECRET_KEY",
            config.validate(),
        )?;
        Ok(config)
    }
}

/// A flag's value, trimmed; empty counts as unset (a ConfigMap key left blank).
fn set(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// Say which flag and variable a configuration error came from.
fn from_input(flag: &str, env: &str, checked: Result<()>) -> Result<()> {
    checked.map_err(|e| match e {
        Error::Config(why) => Error::Config(format!("{flag} ({env}): {why}")),
        other => other,
    })
}

/// How to reach the Redis cache: all a reader (`install`) needs.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[:password@]host:port/db`). When neither this flag nor REDIS_URL is
    /// set (or both are empty), BIFROST_REDIS_URL is read: Bifrost's own name, from its Secret
    /// `bifrost-secrets`. REDIS_URL wins when both are set.
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
    /// The cache configuration, if a URL was given (`--redis-url`, `REDIS_URL`, then
    /// `BIFROST_REDIS_URL`), with the default TTL: a reader writes nothing, see
    /// [`RedisWriteArgs`].
    pub(crate) fn config(&self) -> Option<CacheConfig> {
        self.config_with(|name| std::env::var(name).ok())
    }

    /// [`RedisArgs::config`] with the environment given as a lookup.
    fn config_with(&self, env: impl Fn(&str) -> Option<String>) -> Option<CacheConfig> {
        // Destructured: a flag added here and never read fails to compile (unused binding).
        let Self {
            redis_url,
            redis_key,
            redis_timeout,
            redis_attempts,
        } = self;
        let url = match set(redis_url) {
            Some(url) => url.to_string(),
            None => env(BIFROST_REDIS_URL)?.trim().to_string(),
        };
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
    pub(crate) fn config(&self) -> Option<CacheConfig> {
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
    pub(crate) fn policy(&self) -> Policy {
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
