//! The wheelhouse: a lock's files, copied once into storage the cluster already has, so that
//! pods install the exact lock from there, the public index only a fallback.
//!
//! Bifrost's S3 bucket holds it, under a prefix of ours ([`DEFAULT_PREFIX`]):
//!
//! ```text
//! <prefix>/<lock sha256>/<file name>       each file the lock pins (x-amz-meta-sha256: its hash)
//! <prefix>/<lock sha256>/manifest.json     written last: its presence says the lock is complete
//! ```
//!
//! 1. [`Wheelhouse::fill`] (the operator): for every pin, the index's page of its release
//!    ([`Fetcher`]), each of its files whose hash the lock pins downloaded and checked while it
//!    streams into S3 (small files in one `PutObject`, large ones by multipart upload, aborted
//!    when the bytes turn out not to be the pinned ones: nothing unpinned is ever visible);
//!    files already stored are not copied again; the [`Manifest`] last.
//! 2. [`Wheelhouse::download`] (a pod): the manifest, then every file the lock needs, each
//!    checked against its recorded hash as it arrives (a file whose bytes differ is not kept),
//!    every pin covered by at least one file whose hash it lists. It reads S3 only: the index
//!    may be down.
//! 3. [`Wheelhouse::prune`]: the folders of locks nothing refers to any more, once older than a
//!    grace period, manifest first (a half-deleted wheelhouse is never complete).
//!
//! The S3 client is [`crate::s3`]'s (signing, credentials, one origin, errors without the
//! secret); what is read back from S3 or an index is checked as hostile input.

mod dist;
mod download;
mod fetch;
mod fill;
mod layout;
mod manifest;
mod page;
mod prune;
#[cfg(test)]
mod tests;
mod upload;

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};
use crate::lock::{Lock, Pinned};
use crate::s3::{Named, S3Config, Transfers, describe, no_such_bucket};

pub use download::Downloaded;
pub use fetch::{Fetcher, MAX_PAGE_BYTES};
pub use fill::Filled;
pub use manifest::{MAX_MANIFEST_BYTES, Manifest, ManifestFile};
pub use prune::Pruned;

/// `prefix` as a wheelhouse folder (no trailing `/`), or why it cannot be one: what the spec's
/// validation, `install --wheelhouse` and [`Wheelhouse::new`] all check.
pub(crate) fn valid_prefix(prefix: &str) -> std::result::Result<String, String> {
    layout::prefix(prefix)
}

/// Where wheelhouses go in Bifrost's bucket unless configured otherwise: beside `_repo/`, not in
/// it.
/// How long the folder of a lock no resource and no pod uses is kept (`--wheelhouse-retention`).
pub const DEFAULT_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);
pub const DEFAULT_PREFIX: &str = "bifrost-requirements/wheelhouse";
/// The last object of a complete wheelhouse.
pub const MANIFEST: &str = "manifest.json";
/// Larger files are refused, from an index or from S3.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024 * 1024;
/// Files copied (fill) or downloaded (pod) at once.
const CONCURRENCY: usize = 4;
/// Files up to this size are held in memory and stored in one `PutObject`; larger ones go by
/// multipart upload in parts of this size (S3 takes parts of 5 MiB and more).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// The user metadata (`x-amz-meta-sha256`) a copied file's hash is recorded in.
const SHA256_METADATA: &str = "sha256";

/// The wheelhouses of one prefix in one bucket.
pub struct Wheelhouse {
    store: Arc<dyn ObjectStore>,
    /// Names errors (bucket, endpoint, credentials to scrub); its key is not used.
    config: S3Config,
    endpoint_shown: String,
    /// Validated, without a trailing `/`.
    prefix: String,
    part_size: usize,
}

impl std::fmt::Debug for Wheelhouse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wheelhouse")
            .field("config", &self.config)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Wheelhouse {
    /// The wheelhouses under `prefix` in `config`'s bucket (`config.key` is not used;
    /// `config.timeout` bounds each wait for bytes, not a whole transfer). No request is sent.
    pub fn new(config: &S3Config, prefix: &str) -> Result<Wheelhouse> {
        config.validate()?;
        let prefix = layout::prefix(prefix).map_err(|why| {
            Error::Config(format!("wheelhouse prefix {prefix:?} is not valid: {why}"))
        })?;
        let (store, endpoint_shown) = crate::s3::client(config, Transfers::Large)?;
        Ok(Wheelhouse {
            store: Arc::new(store),
            config: config.clone(),
            endpoint_shown,
            prefix,
            part_size: PART_SIZE,
        })
    }

    /// The same wheelhouses, large files uploaded in parts of `bytes` (at least 5 MiB, what S3
    /// takes) instead of 8 MiB.
    pub fn with_part_size(mut self, bytes: usize) -> Wheelhouse {
        self.part_size = bytes.max(5 * 1024 * 1024);
        self
    }

    /// `s3://bucket/prefix/<lock sha256>/`, for messages and status.
    pub fn location(&self, lock_sha256: &str) -> String {
        format!(
            "s3://{}/{}/{}/",
            self.config.bucket,
            self.prefix,
            lock_sha256.trim().to_ascii_lowercase()
        )
    }

    /// The manifest of the lock's wheelhouse: `None` while it is not complete. A manifest that
    /// is too large, malformed or names what it may not is an error saying what is wrong.
    pub async fn manifest(&self, lock_sha256: &str) -> Result<Option<Manifest>> {
        let sha = sha(lock_sha256)?;
        let path = self.key(&sha, MANIFEST);
        let bad = |reason: String| self.bad(&sha, format!("{MANIFEST}: {reason}"));
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(e @ object_store::Error::NotFound { .. }) if !no_such_bucket(&describe(&e)) => {
                return Ok(None);
            }
            Err(e) => return Err(self.s3_error("reading", &path, e)),
        };
        if got.meta.size > MAX_MANIFEST_BYTES {
            return Err(bad(manifest::too_large(got.meta.size)));
        }
        let mut bytes = Vec::new();
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks
            .try_next()
            .await
            .map_err(|e| self.s3_error("reading", &path, e))?
        {
            if (bytes.len() + chunk.len()) as u64 > MAX_MANIFEST_BYTES {
                return Err(bad(manifest::too_large((bytes.len() + chunk.len()) as u64)));
            }
            bytes.extend_from_slice(&chunk);
        }
        Manifest::parse(&bytes, &sha).map(Some).map_err(bad)
    }

    /// `<prefix>/<sha>/<name>`; `name` was checked ([`layout::file_name`]) or is the manifest's.
    fn key(&self, sha: &str, name: &str) -> Path {
        Path::from(format!("{}/{sha}/{name}", self.prefix))
    }

    /// `<prefix>/<sha>`, the folder of one lock.
    fn folder(&self, sha: &str) -> Path {
        Path::from(format!("{}/{sha}", self.prefix))
    }

    /// The files stored in a lock's folder (the manifest aside), by name.
    async fn stored(&self, sha: &str) -> Result<Vec<ObjectMeta>> {
        let folder = self.folder(sha);
        let listed: Vec<ObjectMeta> = self
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| self.s3_error("listing", &folder, e))?;
        Ok(listed
            .into_iter()
            .filter(|m| m.location.filename() != Some(MANIFEST))
            .collect())
    }

    /// An S3 failure on `path`, named by its location, never holding the secret.
    fn s3_error(&self, doing: &'static str, path: &Path, e: object_store::Error) -> Error {
        let mut config = self.config.clone();
        config.key = path.to_string();
        let named = Named {
            config: &config,
            endpoint_shown: &self.endpoint_shown,
        };
        named.classify(doing, e)
    }

    fn bad(&self, sha: &str, reason: String) -> Error {
        Error::BadWheelhouse {
            location: self.location(sha),
            reason,
        }
    }
}

/// A lock's SHA-256 as its folder is named (lowercase hex), or a configuration error.
fn sha(lock_sha256: &str) -> Result<String> {
    layout::lock_sha256(lock_sha256).ok_or_else(|| {
        Error::Config(format!(
            "{lock_sha256:?} is not a lock's SHA-256 (64 hex digits)"
        ))
    })
}

/// The lock `lock_text`, which must hash to `sha`, and its pins, each with at least one
/// SHA-256: what a wheelhouse is filled from and checked against.
fn read_lock(lock_text: &str, sha: &str) -> Result<(Lock, Vec<Pinned>)> {
    let invalid = |reason: String| Error::InvalidContent {
        location: format!("the lock {sha}"),
        reason,
    };
    let actual = crate::requirements::content_hash(lock_text);
    if actual != sha {
        return Err(invalid(format!(
            "its text hashes to {actual}: the lock given is not the lock named"
        )));
    }
    let lock = Lock::parse(lock_text).map_err(invalid)?;
    let pins = lock.pinned().map_err(invalid)?;
    if let Some(pin) = pins
        .iter()
        .find(|p| !p.hashes.iter().any(|h| h.starts_with("sha256:")))
    {
        return Err(invalid(format!(
            "{} (line {}) pins no sha256 hash, so no file of it can be checked",
            pin.pin(),
            pin.line
        )));
    }
    Ok((lock, pins))
}
