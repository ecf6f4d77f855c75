//! The source of truth: Bifrost's `workspace_files` row for requirements.txt.
//!
//! Bifrost's Python writes this row when a user installs a package; so do we (`requirements add`).
//! Writers never take locks across the read–modify–write: a save only succeeds where the row's
//! `content_hash` is still the one that was read (compare-and-swap), and a loser re-reads and
//! re-applies its change, so concurrent adds from either side lose nothing. Whatever follows a
//! save (the Redis refresh) runs only after COMMIT, in commit order (see [`Database::update`]).
//!
//! Queries are checked at run time (no database is needed to build).

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgConnection, PgPool, Postgres, Row, Transaction};
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::redact;
use crate::requirements::{content_hash, hash_matches};

/// The `NOTIFY` channel the migration's trigger signals on.
pub(crate) const NOTIFY_CHANNEL: &str = "bifrost_requirements_changed";
/// Defaults used by Bifrost.
pub(crate) const DEFAULT_PATH: &str = "requirements.txt";
pub(crate) const DEFAULT_ENTITY_TYPE: &str = "requirements";

const MIGRATION: &str = include_str!("../migrations/0001_workspace_files.sql");
/// Serializes concurrent migrations (an arbitrary constant: "bifrost-r").
const MIGRATION_LOCK: i64 = 0x6269_6672_6f73_7472;

/// Which row holds the requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSelector {
    pub path: String,
    pub entity_type: String,
}

impl Default for RowSelector {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.into(),
            entity_type: DEFAULT_ENTITY_TYPE.into(),
        }
    }
}

/// The requirements row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequirementsRow {
    pub id: uuid::Uuid,
    pub content: String,
    /// As stored (may carry a `sha256:` prefix if Bifrost wrote it so); used for compare-and-swap.
    pub content_hash: Option<String>,
    pub updated_at: Option<NaiveDateTime>,
}

/// What a [`Database::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveOutcome {
    Created,
    Updated,
    Revived,
    Unchanged,
}

/// Accept SQLAlchemy-style URLs (`postgresql+asyncpg://…`), as Bifrost configures them.
pub fn normalize_database_url(url: &str) -> String {
    let url = url.trim();
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgres") => {
            let base = scheme.split('+').next().unwrap_or(scheme);
            format!("{base}://{rest}")
        }
        _ => url.to_string(),
    }
}

#[derive(Clone)]
pub struct Database {
    pool: PgPool,
    url: String,
    selector: RowSelector,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("url", &redact::url(&self.url))
            .field("selector", &self.selector)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connect (bounded by `timeout`); the error names the redacted URL.
    pub async fn connect(url: &str, selector: RowSelector, timeout: Duration) -> Result<Self> {
        let normalized = normalize_database_url(url);
        let redacted = redact::url(&normalized);
        // sqlx's texts are rebuilt here, where the URL is known: they may quote it.
        let failed = |e: sqlx::Error| Error::DatabaseConnect {
            url: redacted.clone(),
            reason: redact::scrub(&redact::scrub(&e.to_string(), &normalized), url),
        };
        let options = PgConnectOptions::from_str(&normalized).map_err(failed)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(timeout)
            .connect_with(options)
            .await
            .map_err(failed)?;
        Ok(Self {
            pool,
            url: normalized,
            selector,
        })
    }

    /// The same connection pool, reading another row.
    pub(crate) fn with_selector(&self, selector: RowSelector) -> Self {
        Self {
            pool: self.pool.clone(),
            url: self.url.clone(),
            selector,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The connection URL (secret; use [`redact::url`] before printing).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn selector(&self) -> &RowSelector {
        &self.selector
    }

    /// Create `workspace_files` where missing and install the NOTIFY trigger. Idempotent.
    pub async fn migrate(&self) -> Result<()> {
        let mut tx = self.begin("starting the migration").await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db("taking the migration lock"))?;
        sqlx::raw_sql(MIGRATION)
            .execute(&mut *tx)
            .await
            .map_err(db("applying the migration"))?;
        tx.commit().await.map_err(db("committing the migration"))?;
        Ok(())
    }

    /// Whether the migration's NOTIFY trigger is installed on `workspace_files` (without it,
    /// changes reach the mirror only by polling). A missing table has no trigger either.
    pub(crate) async fn has_notify_trigger(&self) -> Result<bool> {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger \
             WHERE tgname = 'bifrost_requirements_notify' \
               AND tgrelid = to_regclass('workspace_files'))",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db("looking for the NOTIFY trigger"))
    }

    /// The live (not soft-deleted) requirements row, if any.
    pub async fn read(&self) -> Result<Option<RequirementsRow>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(db("reading the requirements row"))?;
        self.read_on(&mut conn).await
    }

    async fn read_on(&self, conn: &mut sqlx::PgConnection) -> Result<Option<RequirementsRow>> {
        let row = sqlx::query(
            "SELECT id, content, content_hash, updated_at FROM workspace_files \
             WHERE path = $1 AND entity_type = $2 AND NOT is_deleted",
        )
        .bind(&self.selector.path)
        .bind(&self.selector.entity_type)
        .fetch_optional(conn)
        .await
        .map_err(db("reading the requirements row"))?;
        row.map(|r| self.decode(&r)).transpose()
    }

    /// Read the row and hand it to `then` (which writes Redis) under the write-order lock of
    /// [`Database::update`]: a save that commits meanwhile waits, so `then` never writes content
    /// older than what a concurrent save already put in Redis.
    pub async fn read_in_order<T, F, Fut>(&self, then: F) -> Result<T>
    where
        F: FnOnce(Option<RequirementsRow>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let key = self.order_lock_key();
        let mut order = OrderConn::acquire(&self.pool, "reading the requirements row").await?;
        order.locked = true;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(key)
            .execute(&mut *order.conn)
            .await
            .map_err(db("taking the write-order lock"))?;
        let result = match self.read_on(&mut order.conn).await {
            Ok(row) => then(row).await,
            Err(e) => Err(e),
        };
        order.unlock(key).await;
        result
    }

    fn decode(&self, r: &sqlx::postgres::PgRow) -> Result<RequirementsRow> {
        let bad = |reason: String| Error::BadRow {
            path: self.selector.path.clone(),
            reason,
        };
        let content: Option<String> = r
            .try_get("content")
            .map_err(|e| bad(format!("content column: {e}")))?;
        let content = content.ok_or_else(|| bad("content is NULL".into()))?;
        Ok(RequirementsRow {
            id: r
                .try_get("id")
                .map_err(|e| bad(format!("id column: {e}")))?,
            content,
            content_hash: r
                .try_get("content_hash")
                .map_err(|e| bad(format!("content_hash column: {e}")))?,
            updated_at: r.try_get("updated_at").ok(),
        })
    }

    async fn begin(&self, context: &'static str) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db(context))
    }

    /// Read–modify–write with optimistic concurrency.
    ///
    /// `modify` gets the current content ("" when there is no live row) and returns the new
    /// content, or `None` to leave the row alone. The row is written only where `content_hash`
    /// still equals what was read; on conflict the whole step is retried with the fresh content.
    ///
    /// `after_commit` (used to refresh Redis) runs only once the write is committed, so nothing
    /// downstream ever sees content the source of truth did not keep. A session-level advisory
    /// lock per row path is taken after the write and held across COMMIT and `after_commit`:
    /// two writers reach `after_commit` in the order they committed, so Redis never ends older
    /// than the row. A failed COMMIT runs nothing; an error from `after_commit` is returned, but
    /// the row stays saved (callers say so: the controller or the next `warm` repairs Redis).
    pub async fn update<M, A, Fut>(
        &self,
        mut modify: M,
        mut after_commit: A,
    ) -> Result<(SaveOutcome, String)>
    where
        M: FnMut(&str) -> Result<Option<String>>,
        A: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        const ATTEMPTS: u32 = 100;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let pause = crate::cache::backoff(Duration::from_millis(5), attempt.min(6));
                tokio::time::sleep(pause).await;
            }
            let existing = sqlx::query(
                "SELECT id, entity_type, content, content_hash, is_deleted FROM workspace_files \
                 WHERE path = $1",
            )
            .bind(&self.selector.path)
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading the requirements row"))?;

            let mut order = OrderConn::acquire(&self.pool, "connecting for the save").await?;
            let mut tx = sqlx::Connection::begin(&mut *order.conn)
                .await
                .map_err(db("starting the save"))?;
            let attempted = match existing {
                None => self.try_insert(&mut tx, &mut modify).await?,
                Some(row) => self.try_update(&mut tx, &row, &mut modify).await?,
            };
            match attempted {
                Attempt::Unchanged(content) => return Ok((SaveOutcome::Unchanged, content)),
                Attempt::Written(outcome, new) => {
                    let key = self.order_lock_key();
                    order.locked = true;
                    sqlx::query("SELECT pg_advisory_lock($1)")
                        .bind(key)
                        .execute(&mut *tx)
                        .await
                        .map_err(db("taking the write-order lock"))?;
                    tx.commit().await.map_err(db("committing the save"))?;
                    let propagated = after_commit(new.clone()).await;
                    order.unlock(key).await;
                    propagated?;
                    return Ok((outcome, new));
                }
                Attempt::Raced => {
                    tracing::debug!(attempt, "requirements row changed concurrently; retrying");
                }
            }
        }
        Err(Error::Conflict { attempts: ATTEMPTS })
    }

    /// No row yet: insert one, unless another writer inserted it first.
    async fn try_insert<M>(&self, tx: &mut PgConnection, modify: &mut M) -> Result<Attempt>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        let Some(new) = modify("")? else {
            return Ok(Attempt::Unchanged(String::new()));
        };
        let inserted = sqlx::query(
            "INSERT INTO workspace_files (id, path, entity_type, content, content_hash, \
             size_bytes, content_type, git_status, is_deleted, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'text/plain', 'untracked', false, \
             now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc') \
             ON CONFLICT (path) DO NOTHING",
        )
        .bind(uuid::Uuid::new_v4())
        .bind(&self.selector.path)
        .bind(&self.selector.entity_type)
        .bind(&new)
        .bind(content_hash(&new))
        .bind(size_i32(&new)?)
        .execute(&mut *tx)
        .await
        .map_err(db("creating the requirements row"))?;
        Ok(Attempt::written(
            inserted.rows_affected(),
            SaveOutcome::Created,
            new,
        ))
    }

    /// A row (live or soft-deleted): write the new content where the row is still what was read.
    async fn try_update<M>(
        &self,
        tx: &mut PgConnection,
        row: &PgRow,
        modify: &mut M,
    ) -> Result<Attempt>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        let stored = self.stored(row)?;
        let Some(new) = modify(&stored.content)? else {
            return Ok(Attempt::Unchanged(stored.content));
        };
        if !stored.deleted
            && new == stored.content
            && stored
                .hash
                .as_deref()
                .is_some_and(|h| hash_matches(&new, h))
        {
            return Ok(Attempt::Unchanged(stored.content));
        }
        let updated = sqlx::query(
            "UPDATE workspace_files SET content = $1, content_hash = $2, size_bytes = $3, \
             is_deleted = false, updated_at = now() AT TIME ZONE 'utc' \
             WHERE id = $4 AND content_hash IS NOT DISTINCT FROM $5 AND is_deleted = $6",
        )
        .bind(&new)
        .bind(content_hash(&new))
        .bind(size_i32(&new)?)
        .bind(stored.id)
        .bind(&stored.hash)
        .bind(stored.deleted)
        .execute(&mut *tx)
        .await
        .map_err(db("saving the requirements row"))?;
        let outcome = if stored.deleted {
            SaveOutcome::Revived
        } else {
            SaveOutcome::Updated
        };
        Ok(Attempt::written(updated.rows_affected(), outcome, new))
    }

    /// The row as [`Database::update`] reads it; refuses a row of another `entity_type`.
    fn stored(&self, row: &PgRow) -> Result<StoredRow> {
        let entity_type: String = row
            .try_get("entity_type")
            .map_err(db("reading entity_type"))?;
        if entity_type != self.selector.entity_type {
            return Err(Error::BadRow {
                path: self.selector.path.clone(),
                reason: format!(
                    "entity_type is {entity_type:?}, expected {:?}; refusing to overwrite another kind of file",
                    self.selector.entity_type
                ),
            });
        }
        let deleted: bool = row
            .try_get("is_deleted")
            .map_err(db("reading is_deleted"))?;
        let content: Option<String> = row.try_get("content").map_err(db("reading content"))?;
        // A soft-deleted file's old content is not merged into the revived one.
        let content = if deleted {
            String::new()
        } else {
            content.ok_or_else(|| Error::BadRow {
                path: self.selector.path.clone(),
                reason: "content is NULL".into(),
            })?
        };
        Ok(StoredRow {
            id: row.try_get("id").map_err(db("reading id"))?,
            deleted,
            hash: row
                .try_get("content_hash")
                .map_err(db("reading content_hash"))?,
            content,
        })
    }
}

/// What [`Database::update`] read: the compare-and-swap compares `hash` and `deleted`.
struct StoredRow {
    id: uuid::Uuid,
    deleted: bool,
    hash: Option<String>,
    /// Empty for a soft-deleted row.
    content: String,
}

/// What one attempt of [`Database::update`] did.
enum Attempt {
    /// Nothing to write: the content the caller gets back.
    Unchanged(String),
    /// Written in the open transaction, not committed yet.
    Written(SaveOutcome, String),
    /// Another writer changed the row between our read and our write.
    Raced,
}

impl Attempt {
    fn written(rows_affected: u64, outcome: SaveOutcome, new: String) -> Self {
        if rows_affected == 1 {
            Self::Written(outcome, new)
        } else {
            Self::Raced
        }
    }
}

/// A pooled connection that may hold the session-level write-order lock. Unless unlocked, it is
/// closed when dropped — after an error, a panic or a cancelled future in between — because a
/// session lock survives transactions and would otherwise go back to the pool still held.
struct OrderConn {
    conn: sqlx::pool::PoolConnection<Postgres>,
    locked: bool,
}

impl OrderConn {
    async fn acquire(pool: &PgPool, context: &'static str) -> Result<Self> {
        let conn = pool.acquire().await.map_err(db(context))?;
        Ok(Self {
            conn,
            locked: false,
        })
    }

    async fn unlock(&mut self, key: i64) {
        let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(key)
            .execute(&mut *self.conn)
            .await;
        if unlocked.is_ok() {
            self.locked = false;
        }
    }
}

impl Drop for OrderConn {
    fn drop(&mut self) {
        if self.locked {
            self.conn.close_on_drop();
        }
    }
}

impl Database {
    /// The advisory lock that orders "commit, then refresh Redis" per row path (keys derived
    /// from a fixed prefix and the path, so other users of advisory locks are unlikely to
    /// collide).
    fn order_lock_key(&self) -> i64 {
        let digest = content_hash(&format!(
            "bifrost-requirements:order:{}",
            self.selector.path
        ));
        let top = u64::from_str_radix(&digest[..16], 16).unwrap_or(MIGRATION_LOCK as u64);
        top as i64
    }
}

fn size_i32(content: &str) -> Result<i32> {
    i32::try_from(content.len()).map_err(|_| {
        Error::Config(format!(
            "requirements.txt is too large ({} bytes)",
            content.len()
        ))
    })
}

fn db(context: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |source| Error::Database { context, source }
}

#[cfg(test)]
mod tests {
    use super::normalize_database_url;

    #[test]
    fn sqlalchemy_urls_are_accepted() {
        assert_eq!(
            normalize_database_url("postgresql+asyncpg://u:p@db/bifrost"),
            "postgresql://u:p@db/bifrost"
        );
        assert_eq!(
            normalize_database_url("postgres://u@db/x"),
            "postgres://u@db/x"
        );
        assert_eq!(normalize_database_url(" redis://x "), "redis://x");
    }
}
