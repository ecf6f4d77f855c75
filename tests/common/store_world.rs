//! One world for the CLI tests on the database store (`tests/foundation.rs`,
//! `tests/write_order.rs`, `tests/content_limit.rs`, `tests/generated_inputs.rs`): a fresh
//! migrated database, the shared Redis and a key of its own, and the CLI run against them.
#![allow(dead_code)]

use std::process::Output;

use bifrost_requirements::cache::{Cache, CacheConfig};
use bifrost_requirements::database::Database;
use sqlx::postgres::PgRow;

use super::cli;
use super::services::{fresh_key, migrated_database, redis_get, redis_url};

/// A migrated database, the shared Redis and a Redis key no other test uses.
pub struct DbWorld {
    /// The database's URL (`DATABASE_URL`).
    pub url: String,
    pub db: Database,
    /// The shared Redis (`REDIS_URL`).
    pub redis: String,
    /// This world's key (`BIFROST_REQUIREMENTS_REDIS_KEY`).
    pub key: String,
}

impl DbWorld {
    pub async fn new() -> DbWorld {
        let (url, db) = migrated_database().await;
        DbWorld {
            url,
            db,
            redis: redis_url(),
            key: fresh_key(),
        }
    }

    /// The CLI's environment for this world.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        self.env_with(&self.url, &self.redis)
    }

    /// The CLI's environment with this key but another database or Redis (a dead one, another
    /// user).
    pub fn env_with<'a>(&'a self, db_url: &'a str, redis: &'a str) -> Vec<(&'static str, &'a str)> {
        vec![
            ("DATABASE_URL", db_url),
            ("REDIS_URL", redis),
            ("BIFROST_REQUIREMENTS_REDIS_KEY", &self.key),
        ]
    }

    /// Run the CLI in this world.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(args, &self.env())
    }

    /// Run a statement (or several) on the database.
    pub async fn sql(&self, statement: &str) {
        sql(&self.db, statement).await;
    }

    /// What Redis holds under this world's key.
    pub async fn cached(&self) -> Option<String> {
        redis_get(&self.redis, &self.key).await
    }

    /// A cache client of this world's key.
    pub async fn cache(&self) -> Cache {
        cache(&self.key).await
    }
}

/// Run a statement (or several) on `db`.
pub async fn sql(db: &Database, statement: &str) {
    sqlx::raw_sql(statement).execute(db.pool()).await.unwrap();
}

/// Every row a `SELECT` returns.
pub async fn select<T>(db: &Database, query: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, PgRow> + Send + Unpin,
{
    sqlx::query_as(query).fetch_all(db.pool()).await.unwrap()
}

/// A cache client of `key` on the shared Redis, with the default attempts.
pub async fn cache(key: &str) -> Cache {
    connect(CacheConfig {
        key: key.to_string(),
        ..CacheConfig::new(redis_url())
    })
    .await
}

/// A cache client of `key` on the shared Redis that tries each operation once.
pub async fn cache_trying_once(key: &str) -> Cache {
    connect(CacheConfig {
        key: key.to_string(),
        attempts: 1,
        ..CacheConfig::new(redis_url())
    })
    .await
}

async fn connect(config: CacheConfig) -> Cache {
    Cache::connect(config).await.unwrap()
}
