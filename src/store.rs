//! Where requirements.txt lives, seen by the package flows as one thing: the `workspace_files` row
//! of the original design, or the S3 object of Bifrost today.
//!
//! Both give the flows of [`crate::packages`] the same two operations with the same promise —
//! Redis is written only after the source kept the content, and never older over newer:
//!
//! - **Database**: a session-level advisory lock is held across COMMIT and the Redis write
//!   ([`Database::update`], [`Database::read_in_order`]), so Redis sees saves in commit order.
//! - **S3** has no lock to hold. After writing Redis, the object is read again (a conditional GET,
//!   one `304` when nothing moved): if another writer (this CLI elsewhere, or Bifrost's plain
//!   `PutObject`) changed it meanwhile, Redis is written again with what is there now, until the
//!   object stands still. Every writer ends with such a check after its own Redis write, so the
//!   last Redis write is of the object's last content.

use std::future::Future;

use crate::database::{Database, SaveOutcome};
use crate::error::{Error, Result};
use crate::s3::{Poll, S3Store, UpdateOutcome, Versioned};

pub(crate) use crate::s3::{Current, Unreadable};

/// The `--store` choice (`BIFROST_REQUIREMENTS_STORE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The `workspace_files` row in PostgreSQL (the original design).
    Database,
    /// `_repo/requirements.txt` in an S3 bucket (Bifrost since 2026-03).
    S3,
}

/// How often Redis follows a moving S3 object before giving up (the controller repairs it).
/// Each round needs another writer to land in the few milliseconds between a Redis write and the
/// read after it.
const FOLLOW_ROUNDS: u32 = 20;

/// The source of truth of requirements.txt.
#[derive(Debug)]
pub enum Store {
    Database(Database),
    S3(S3Store),
}

impl From<Database> for Store {
    fn from(db: Database) -> Self {
        Self::Database(db)
    }
}

impl From<S3Store> for Store {
    fn from(s3: S3Store) -> Self {
        Self::S3(s3)
    }
}

impl Store {
    /// What and where, for messages: `workspace_files row "requirements.txt"` or `s3://b/k`.
    pub(crate) fn location(&self) -> String {
        match self {
            Self::Database(db) => format!("workspace_files row {:?}", db.selector().path),
            Self::S3(s3) => s3.config().location(),
        }
    }

    /// The content as stored, `None` when there is none (no live row, no object).
    pub(crate) async fn read(&self) -> Result<Option<String>> {
        match self {
            Self::Database(db) => Ok(db.read().await?.map(|row| row.content)),
            Self::S3(s3) => match s3.read_if_changed(None).await? {
                Poll::Changed(v) => Ok(Some(v.content)),
                Poll::NotFound => Ok(None),
                Poll::NotModified => Err(unconditional_304(s3)),
            },
        }
    }

    /// Read the content and hand it to `then` (which writes Redis) so that `then` never leaves
    /// Redis older than a concurrent save: under the database's write-order lock, or for S3 by
    /// following the object until it stands still (`then` runs again on newer content).
    pub(crate) async fn read_in_order<T, F, Fut>(&self, mut then: F) -> Result<T>
    where
        F: FnMut(Option<String>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match self {
            Self::Database(db) => db.read_in_order(|row| then(row.map(|r| r.content))).await,
            Self::S3(s3) => {
                let current = match s3.read_if_changed(None).await? {
                    Poll::Changed(v) => v,
                    // No object: nothing to write. A writer creating it meanwhile writes Redis
                    // after its own PUT.
                    Poll::NotFound => return then(None).await,
                    Poll::NotModified => return Err(unconditional_304(s3)),
                };
                follow(s3, current.content, Some(current.etag), |c| then(Some(c))).await
            }
        }
    }

    /// Read–modify–write with optimistic concurrency (compare-and-swap on `content_hash`, or a
    /// conditional `PutObject`), then `after_commit` with the content kept (Redis). `modify` gets
    /// the current content (`""` when there is none) and may run once per lost race; an error
    /// from it writes nothing anywhere. `after_commit` runs only once the source kept the
    /// content; for S3 it may run again with a newer object another writer put there.
    /// An S3 object that cannot be read as text reaches `modify` as [`Current::Unreadable`],
    /// with its bytes, so that a change may mend it; a row is always text.
    pub(crate) async fn update<M, A, Fut>(
        &self,
        mut modify: M,
        mut after_commit: A,
    ) -> Result<(SaveOutcome, String)>
    where
        M: FnMut(Current<'_>) -> Result<Option<String>>,
        A: FnMut(String) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        match self {
            Self::Database(db) => {
                db.update(|text| modify(Current::Text(text)), after_commit)
                    .await
            }
            Self::S3(s3) => {
                let saved = s3.update_or_mend(modify).await?;
                let outcome = match saved.outcome {
                    UpdateOutcome::Unchanged => return Ok((SaveOutcome::Unchanged, saved.content)),
                    UpdateOutcome::Created => SaveOutcome::Created,
                    UpdateOutcome::Updated => SaveOutcome::Updated,
                };
                follow(s3, saved.content.clone(), saved.etag, &mut after_commit).await?;
                Ok((outcome, saved.content))
            }
        }
    }
}

/// Write `content` on with `write`, then read the object again; while it changed, write what is
/// there now. Returns what the last `write` returned.
async fn follow<T, W, Fut>(
    s3: &S3Store,
    mut content: String,
    mut etag: Option<String>,
    mut write: W,
) -> Result<T>
where
    W: FnMut(String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    for _ in 0..FOLLOW_ROUNDS {
        let written = write(content.clone()).await?;
        // Without an ETag from the PUT, a full read tells whether the object moved.
        match s3.read_if_changed(etag.as_deref()).await? {
            Poll::NotModified => return Ok(written),
            Poll::Changed(Versioned { content: now, .. }) if now == content => {
                return Ok(written);
            }
            Poll::Changed(v) => {
                tracing::debug!(
                    location = %s3.config().location(),
                    "S3 object changed after the Redis write; writing the newer content"
                );
                content = v.content;
                etag = Some(v.etag);
            }
            // Deleted meanwhile: Redis keeps the last content, as the mirror does.
            Poll::NotFound => return Ok(written),
        }
    }
    Err(Error::Conflict {
        attempts: FOLLOW_ROUNDS,
    })
}

fn unconditional_304(s3: &S3Store) -> Error {
    Error::S3 {
        context: "reading",
        location: s3.config().location(),
        reason: "answered 304 Not Modified to a read without a condition".into(),
    }
}
