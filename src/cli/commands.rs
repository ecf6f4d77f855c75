//! Runs each CLI command: turns its flags into the domain's typed options, connects what it
//! needs and reports in plain words on stderr.

use std::io::Read;

use super::{Cli, Command, DatabaseArgs, RedisWriteArgs, RequirementsCommand, StoreArgs};
use crate::cache::Cache;
use crate::database::{Database, SaveOutcome};
use crate::error::{Error, Result};
use crate::packages::{self, Change, WarmOutcome};
use crate::redact;

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
            let StoreArgs { db, redis, policy } = store;
            let database = connect_db(&db).await?;
            let cache = connect_cache(&redis, true).await?.expect("required");
            match packages::warm(&database, &cache, &policy.policy()).await? {
                WarmOutcome::Warmed(p) => eprintln!(
                    "warmed: Redis key {} now holds {} ({} bytes, sha256 {}), TTL {} s",
                    cache.key(),
                    db.path,
                    p.content.len(),
                    p.hash,
                    redis.ttl_seconds
                ),
                WarmOutcome::NoRow => eprintln!(
                    "nothing to warm: no live {} row (entity_type {}) in workspace_files; Redis untouched",
                    db.path, db.entity_type
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
        Command::Install(args) => crate::installer::run(args.into()).await,
        Command::Bootstrap(args) => crate::bootstrap::run(args.into()),
        Command::InstallerGuard(args) => {
            let mut command = args.command.into_iter();
            let program = command.next().unwrap_or_default();
            crate::installer::guard::run(args.parent, program, command.collect()).await
        }
    }
}

async fn requirements(command: RequirementsCommand) -> Result<u8> {
    let (store, change) = match command {
        RequirementsCommand::Show { db } => {
            let database = connect_db(&db).await?;
            match database.read().await? {
                Some(row) => print!("{}", row.content),
                None => eprintln!("no live {} row in workspace_files", db.path),
            }
            return Ok(0);
        }
        RequirementsCommand::Add { specs, store } => (store, Change::Add(specs)),
        RequirementsCommand::Remove { names, store } => (store, Change::Remove(names)),
        RequirementsCommand::Set { file, store } => (store, Change::Set(read_input(&file)?)),
    };
    let StoreArgs { db, redis, policy } = store;
    let policy = policy.policy();
    // Check the arguments before connecting anywhere: bad input fails fast and touches nothing.
    packages::validate(&change, &policy)?;
    // Connect to both before writing either, so an unreachable Redis changes nothing.
    let database = connect_db(&db).await?;
    let cache = connect_cache(&redis, false).await?;
    let applied = packages::apply(&database, cache.as_ref(), &policy, &change).await?;
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
        db.path, applied.package_count, applied.hash
    );
    match (&cache, applied.cache_refreshed, &applied.cache_error) {
        (Some(c), _, Some(e)) => {
            eprintln!(
                "error: {e}\n{} is saved in PostgreSQL, but Redis key {} still holds the previous \
                 content: the operator's controller repairs it, or run `bifrost-requirements warm`",
                db.path,
                c.key()
            );
            return Ok(e.exit_code());
        }
        (Some(c), true, None) => eprintln!("Redis key {} refreshed", c.key()),
        (Some(_), false, None) => eprintln!("Redis not touched (nothing changed)"),
        (None, _, _) => eprintln!("REDIS_URL not set: Redis not refreshed"),
    }
    Ok(0)
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
    Database::connect(&args.database_url, args.selector(), args.database_timeout).await
}

/// Connect to Redis; `required` makes a missing URL an error.
async fn connect_cache(args: &RedisWriteArgs, required: bool) -> Result<Option<Cache>> {
    match args.config() {
        Some(config) => {
            tracing::debug!(url = %redact::url(&config.url), key = %config.key, "connecting to Redis");
            Ok(Some(Cache::connect(config).await?))
        }
        None if required => Err(Error::Config(
            "a Redis URL is required (--redis-url or REDIS_URL)".into(),
        )),
        None => Ok(None),
    }
}
