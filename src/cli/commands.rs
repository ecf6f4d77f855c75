//! Runs each CLI command: turns its flags into the domain's typed options, connects what it
//! needs and reports in plain words on stderr.

use std::io::Read;

use super::lock::LockArgs;
use super::shared::SourceArgs;
use super::{Cli, Command, DatabaseArgs, RedisWriteArgs, RequirementsCommand, StoreArgs};
use crate::cache::Cache;
use crate::database::{Database, SaveOutcome};
use crate::error::{Error, Result};
use crate::lock::Failure;
use crate::packages::{self, Change, WarmOutcome};
use crate::redact;
use crate::s3::S3Store;
use crate::store::{Store, StoreKind};

/// Run the parsed command line; `Ok(code)` is the process exit code.
pub async fn run(cli: Cli) -> Result<u8> {
    let Cli {
        log_format,
        log_level: _,
        command,
    } = cli;
    match command {
        Command::Migrate { db } => {
            let db = connect_db(&db).await?;
            db.migrate().await?;
            eprintln!(
                "migrated: workspace_files present, NOTIFY trigger on channel {}",
                crate::database::NOTIFY_CHANNEL
            );
            Ok(0)
        }
        Command::Warm { store } => {
            let StoreArgs {
                source,
                redis,
                policy,
            } = store;
            let store = open_store(&source).await?;
            let cache = connect_cache(&redis, true).await?.expect("required");
            match packages::warm(&store, &cache, &policy.policy()).await? {
                WarmOutcome::Warmed(p) => eprintln!(
                    "warmed: Redis key {} now holds {} ({} bytes, sha256 {}), TTL {} s",
                    cache.key(),
                    store.location(),
                    p.content.len(),
                    p.hash,
                    redis.ttl_seconds
                ),
                WarmOutcome::NoRow => eprintln!(
                    "nothing to warm: {}; Redis untouched",
                    absent(&source, &store)
                ),
            }
            Ok(0)
        }
        Command::Requirements { command } => requirements(command).await,
        Command::Operator(args) => crate::operator::run(args.config(log_format)).await,
        Command::Crd => {
            print!("{}", crate::crd::crd_yaml());
            Ok(0)
        }
        Command::Install(args) => crate::installer::run(args.try_into()?).await,
        Command::Bootstrap(args) => crate::bootstrap::run(args.into()),
        Command::InstallerGuard(args) => {
            let mut command = args.command.into_iter();
            let program = command.next().unwrap_or_default();
            crate::uv::guard::run(
                args.parent,
                crate::uv::guard::Limits {
                    memory: args.memory_limit,
                    address_space: args.address_space_limit,
                },
                program,
                command.collect(),
            )
            .await
        }
    }
}

async fn requirements(command: RequirementsCommand) -> Result<u8> {
    let (store, change) = match command {
        RequirementsCommand::Show { source, lock } => return show(source, lock).await,
        RequirementsCommand::Add { specs, store } => (store, Change::Add(specs)),
        RequirementsCommand::Remove { names, store } => (store, Change::Remove(names)),
        RequirementsCommand::Set { file, store } => (store, Change::Set(read_input(&file)?)),
    };
    let StoreArgs {
        source,
        redis,
        policy,
    } = store;
    let policy = policy.policy();
    // Check the arguments before connecting anywhere: bad input fails fast and touches nothing.
    packages::validate(&change, &policy)?;
    // Connect to both before writing either, so an unreachable Redis changes nothing.
    let store = open_store(&source).await?;
    let cache = connect_cache(&redis, false).await?;
    let applied = packages::apply(&store, cache.as_ref(), &policy, &change).await?;
    for note in &applied.notes {
        eprintln!("{note}");
    }
    let what = match applied.outcome {
        SaveOutcome::Created => "created",
        SaveOutcome::Updated => "updated",
        SaveOutcome::Revived => "restored (was soft-deleted)",
        SaveOutcome::Unchanged => "unchanged",
    };
    eprintln!(
        "{} {what}: {} package(s), sha256 {}",
        store.location(),
        applied.package_count,
        applied.hash
    );
    match (&cache, applied.cache_refreshed, &applied.cache_error) {
        (Some(c), _, Some(e)) => {
            eprintln!(
                "error: {e}\n{} is saved in {}, but Redis key {} still holds the previous \
                 content: the operator's controller repairs it, or run `bifrost-requirements warm`",
                store.location(),
                match source.kind {
                    StoreKind::Database => "PostgreSQL",
                    StoreKind::S3 => "S3",
                },
                c.key()
            );
            return Ok(e.exit_code());
        }
        (Some(c), true, None) => eprintln!("Redis key {} refreshed", c.key()),
        (Some(_), false, None) => eprintln!("Redis not touched (nothing changed)"),
        (None, _, _) => {
            eprintln!("no Redis URL (REDIS_URL or BIFROST_REDIS_URL): Redis not refreshed")
        }
    }
    Ok(0)
}

/// `requirements show`: the stored file, or the lock it resolves to (exit 1, nothing on stdout,
/// when it does not resolve).
async fn show(source: SourceArgs, lock: LockArgs) -> Result<u8> {
    // Flags first: a bad interpreter fails before connecting anywhere.
    let lock = lock.request()?;
    let store = open_store(&source).await?;
    let Some(content) = store.read().await? else {
        eprintln!("{}", absent(&source, &store));
        return Ok(0);
    };
    let Some(request) = lock else {
        print!("{content}");
        return Ok(0);
    };
    match request.resolve(&content).await? {
        Ok(lock) => {
            print!("{}", lock.render());
            Ok(0)
        }
        Err(failure) => {
            let what = match failure {
                Failure::Unresolvable(_) => "does not resolve",
                Failure::Failed(_) => "could not be resolved",
                Failure::HashMismatch(_) => "cannot be locked (a --hash does not match the index)",
            };
            eprintln!(
                "error: {} {what} for {}: {failure}",
                store.location(),
                request.interpreter.describe()
            );
            Ok(1)
        }
    }
}

/// Connect to the store `--store` names. S3 sends no request yet: an unreachable server shows
/// on the first read, named with its endpoint and bucket.
async fn open_store(source: &SourceArgs) -> Result<Store> {
    match source.kind {
        StoreKind::Database => Ok(connect_db(&source.db).await?.into()),
        StoreKind::S3 => {
            let config = source.s3.config()?;
            tracing::debug!(?config, "using the S3 object");
            Ok(S3Store::new(config)?.into())
        }
    }
}

/// Why there is nothing to show or warm, in the store's own words.
fn absent(source: &SourceArgs, store: &Store) -> String {
    match source.kind {
        StoreKind::Database => format!(
            "no live {:?} row (entity_type {:?}) in workspace_files",
            source.db.path, source.db.entity_type
        ),
        StoreKind::S3 => format!("no object {}", store.location()),
    }
}

/// The content of `file`, or standard input for `-`.
fn read_input(file: &std::path::Path) -> Result<String> {
    if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Error::io("reading", "standard input", e))?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|e| Error::io("reading", file, e))
    }
}

async fn connect_db(args: &DatabaseArgs) -> Result<Database> {
    Database::connect(args.url()?, args.selector(), args.database_timeout).await
}

/// Connect to Redis; `required` makes a missing URL an error.
async fn connect_cache(args: &RedisWriteArgs, required: bool) -> Result<Option<Cache>> {
    match args.config() {
        Some(config) => {
            tracing::debug!(url = %redact::url(&config.url), key = %config.key, "connecting to Redis");
            Ok(Some(Cache::connect(config).await?))
        }
        None if required => Err(Error::Config(
            "a Redis URL is required (--redis-url, REDIS_URL or BIFROST_REDIS_URL)".into(),
        )),
        None => Ok(None),
    }
}
