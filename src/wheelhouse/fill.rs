//! The operator's side: copy a lock's files from its index into its wheelhouse, once.

use futures::StreamExt;
use object_store::{GetOptions, ObjectMeta, ObjectStoreExt};

use super::fetch::{Candidate, Fetcher};
use super::manifest::{Manifest, ManifestFile};
use super::upload::{Upload, recorded};
use super::{CONCURRENCY, MANIFEST, Wheelhouse, read_lock, sha};
use crate::error::{Error, Result};
use crate::lock::{Lock, Pinned};
use crate::shutdown::Stop;

/// What a fill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filled {
    /// Files the wheelhouse holds now (the manifest's entries).
    pub files: usize,
    /// Files this fill downloaded from the index and stored.
    pub copied: usize,
    /// Files that were stored already, with a pinned hash, and kept.
    pub reused: usize,
    /// Bytes of the copied files.
    pub bytes_copied: u64,
    /// The wheelhouse was complete already: nothing was asked of the index.
    pub was_complete: bool,
}

/// A file a pin keeps in the wheelhouse.
struct Kept {
    file: ManifestFile,
    copied: bool,
}

/// What one download from the index came to.
enum Copied {
    Kept(Kept),
    /// The page gave no hash and the bytes are not pinned (another platform's wheel, say):
    /// `name (sha256:…)`, for the message when no file of the pin is.
    NotPinned(String),
}

impl Wheelhouse {
    /// Copy every file `lock_text` pins (each pin's files whose SHA-256 is among its hashes)
    /// from its index into the wheelhouse of `lock_sha256` (the lock text's own hash), then the
    /// manifest. Files already stored with a pinned hash are not copied again; a complete
    /// wheelhouse costs one listing and one read. `fetcher` must read the indexes the lock was
    /// resolved against. `stop` ends it between files and while one downloads (nothing half
    /// written is ever visible; the next fill goes on from what is stored).
    pub async fn fill(
        &self,
        lock_text: &str,
        lock_sha256: &str,
        fetcher: &Fetcher,
        stop: &Stop,
    ) -> Result<Filled> {
        let sha = sha(lock_sha256)?;
        let (lock, pins) = read_lock(lock_text, &sha)?;
        same_indexes(&lock, fetcher)?;
        let stored = self.stored(&sha).await?;
        if let Some(filled) = self.complete(&sha, &pins, &stored).await? {
            return Ok(filled);
        }
        // Owned pins: a closure over `&Pinned` is not general enough for the future to be
        // `Send` where the controller spawns it (rustc's higher-ranked lifetime limit).
        let (sha_ref, stored_ref) = (&sha, &stored);
        let results: Vec<Result<Vec<Kept>>> = futures::stream::iter(pins.clone())
            .map(|pin| async move {
                self.fill_pin(sha_ref, &pin, fetcher, stored_ref, stop)
                    .await
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut kept: Vec<Kept> = Vec::new();
        let mut failed = None;
        for (pin, result) in pins.iter().zip(results) {
            match result {
                Ok(files) => kept.extend(files),
                Err(e) if failed.is_none() => failed = Some(e),
                Err(e) => tracing::warn!(pin = %pin.pin(), "filling the wheelhouse: {e}"),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        kept.sort_by(|a, b| a.file.name.cmp(&b.file.name));
        kept.dedup_by(|a, b| a.file.name == b.file.name);
        let filled = Filled {
            files: kept.len(),
            copied: kept.iter().filter(|k| k.copied).count(),
            reused: kept.iter().filter(|k| !k.copied).count(),
            bytes_copied: kept.iter().filter(|k| k.copied).map(|k| k.file.size).sum(),
            was_complete: false,
        };
        let manifest = Manifest::new(&sha, kept.into_iter().map(|k| k.file).collect());
        let path = self.key(&sha, MANIFEST);
        self.store
            .put(&path, manifest.render().into())
            .await
            .map_err(|e| self.s3_error("writing", &path, e))?;
        tracing::info!(
            location = %self.location(&sha),
            files = filled.files,
            copied = filled.copied,
            reused = filled.reused,
            "wheelhouse complete"
        );
        Ok(filled)
    }

    /// What a fill of a complete wheelhouse says: its manifest readable, covering every pin,
    /// each of its files stored with its size. A manifest that is not all of that is deleted
    /// (the wheelhouse is not complete while it is filled again) and `None` returned.
    async fn complete(
        &self,
        sha: &str,
        pins: &[Pinned],
        stored: &[ObjectMeta],
    ) -> Result<Option<Filled>> {
        let manifest = match self.manifest(sha).await {
            Ok(None) => return Ok(None),
            Ok(Some(manifest)) => manifest,
            Err(e @ Error::BadWheelhouse { .. }) => {
                tracing::warn!("{e}; filling it again");
                return self.forget(sha).await.map(|()| None);
            }
            Err(e) => return Err(e),
        };
        let present = |f: &ManifestFile| {
            stored
                .iter()
                .any(|m| m.location.filename() == Some(f.name.as_str()) && m.size == f.size)
        };
        if manifest.cover(pins).is_ok() && manifest.files.iter().all(present) {
            let files = manifest.files.len();
            return Ok(Some(Filled {
                files,
                reused: files,
                was_complete: true,
                ..Filled::default()
            }));
        }
        tracing::warn!(location = %self.location(sha), "the wheelhouse's manifest lists files it does not hold; filling it again");
        self.forget(sha).await.map(|()| None)
    }

    /// Delete the manifest: the wheelhouse is no longer complete.
    pub(super) async fn forget(&self, sha: &str) -> Result<()> {
        let path = self.key(sha, MANIFEST);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.s3_error("deleting", &path, e)),
        }
    }

    /// The files of one pin: reused where stored, else copied from the first index that lists
    /// its release, until every hash of the pin has its file.
    async fn fill_pin(
        &self,
        sha: &str,
        pin: &Pinned,
        fetcher: &Fetcher,
        stored: &[ObjectMeta],
        stop: &Stop,
    ) -> Result<Vec<Kept>> {
        self.stopped(sha, stop)?;
        let offer = fetcher.offer(pin).await?;
        let mut kept: Vec<Kept> = Vec::new();
        let mut not_pinned = Vec::new();
        // Stored files first: where the page gives no hashes, they may cover the pin before
        // anything is downloaded to learn its hash.
        let mut files: Vec<&Candidate> = offer.files.iter().collect();
        files.sort_by_key(|f| {
            !stored
                .iter()
                .any(|m| m.location.filename() == Some(f.name.as_str()))
        });
        for file in files {
            let covered = |kept: &[Kept]| {
                pin.hashes
                    .iter()
                    .filter(|h| h.starts_with("sha256:"))
                    .all(|h| {
                        kept.iter()
                            .any(|k| h.strip_prefix("sha256:") == Some(k.file.sha256.as_str()))
                    })
            };
            if covered(&kept) {
                break;
            }
            self.stopped(sha, stop)?;
            if let Some(reused) = self.reusable(sha, pin, file, stored).await? {
                kept.push(reused);
                continue;
            }
            match self
                .copy(sha, pin, (&offer.index, file), fetcher, stop)
                .await?
            {
                Copied::Kept(copied) => kept.push(copied),
                Copied::NotPinned(what) => not_pinned.push(what),
            }
        }
        if kept.is_empty() {
            return Err(Error::PackageIndex {
                index: offer.index,
                reason: format!(
                    "{} (lock line {}): none of the index's files of this release has a hash the \
                     lock pins ({}); nothing of it was stored",
                    pin.pin(),
                    pin.line,
                    not_pinned.join(", ")
                ),
            });
        }
        Ok(kept)
    }

    /// `file` as stored already, if it is and its hash (recorded, else read back) is pinned
    /// (and is the page's, where the page gives one).
    async fn reusable(
        &self,
        sha: &str,
        pin: &Pinned,
        file: &Candidate,
        stored: &[ObjectMeta],
    ) -> Result<Option<Kept>> {
        let Some(meta) = stored
            .iter()
            .find(|m| m.location.filename() == Some(file.name.as_str()))
        else {
            return Ok(None);
        };
        let path = self.key(sha, &file.name);
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let recorded = match self.store.get_opts(&path, head).await {
            Ok(got) => recorded(&got.attributes),
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.s3_error("reading", &path, e)),
        };
        let hash = match recorded {
            Some(hash) => hash,
            None => self.hash_of(&path).await?,
        };
        let pinned = pin.hashes.contains(&format!("sha256:{hash}"))
            && file.sha256.as_ref().is_none_or(|h| *h == hash);
        Ok(pinned.then(|| Kept {
            file: ManifestFile {
                name: file.name.clone(),
                sha256: hash,
                size: meta.size,
            },
            copied: false,
        }))
    }

    /// The SHA-256 of a stored object's bytes, read back.
    async fn hash_of(&self, path: &object_store::path::Path) -> Result<String> {
        use sha2::{Digest, Sha256};
        let got = self
            .store
            .get(path)
            .await
            .map_err(|e| self.s3_error("reading", path, e))?;
        let mut hasher = Sha256::new();
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            hasher.update(chunk.map_err(|e| self.s3_error("reading", path, e))?);
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Download `file` from the index (shown as `index`) into the wheelhouse, hashing it as it
    /// streams; it becomes visible only when its hash is pinned.
    async fn copy(
        &self,
        sha: &str,
        pin: &Pinned,
        (index, file): (&str, &Candidate),
        fetcher: &Fetcher,
        stop: &Stop,
    ) -> Result<Copied> {
        let mut body = fetcher.open(index, file).await?;
        let mut upload = Upload::new(self, self.key(sha, &file.name), file.sha256.clone());
        loop {
            let next = tokio::select! {
                () = stop.stopped() => Err(self.stopped_error(sha)),
                next = body.next() => next,
            };
            let written = match next {
                Ok(Some(chunk)) => upload.write(&chunk).await,
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                upload.abort().await;
                return Err(e);
            }
        }
        let actual = upload.sha256();
        let pinned = pin.hashes.contains(&format!("sha256:{actual}"));
        if let Some(promised) = file.sha256.as_ref().filter(|p| !pinned || **p != actual) {
            upload.abort().await;
            return Err(Error::PackageIndex {
                index: index.to_string(),
                reason: format!(
                    "{}: {}: its bytes hash to sha256:{actual}, the index page says \
                     sha256:{promised}: refused, not stored",
                    pin.pin(),
                    file.name
                ),
            });
        }
        if !pinned {
            upload.abort().await;
            return Ok(Copied::NotPinned(format!(
                "{} (sha256:{actual})",
                file.name
            )));
        }
        let size = upload.finish(&actual).await?;
        tracing::debug!(file = %file.name, size, "copied into the wheelhouse");
        Ok(Copied::Kept(Kept {
            file: ManifestFile {
                name: file.name.clone(),
                sha256: actual,
                size,
            },
            copied: true,
        }))
    }

    fn stopped(&self, sha: &str, stop: &Stop) -> Result<()> {
        match stop.is_stopped() {
            true => Err(self.stopped_error(sha)),
            false => Ok(()),
        }
    }

    fn stopped_error(&self, sha: &str) -> Error {
        Error::WheelhouseIncomplete {
            location: self.location(sha),
            reason: "the fill was stopped (the operator is shutting down); the next fill goes on \
                     from the files stored"
                .into(),
        }
    }
}

/// The fetcher must read the indexes the lock was resolved against (both redacted, as the
/// lock's header shows them), in whatever order it tries them.
fn same_indexes(lock: &Lock, fetcher: &Fetcher) -> Result<()> {
    let normal = |urls: Vec<String>| {
        let mut urls: Vec<String> = urls
            .iter()
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect();
        urls.sort();
        urls
    };
    let (resolved, reading) = (normal(lock.index_urls.clone()), normal(fetcher.indexes()));
    if resolved != reading {
        return Err(Error::Config(format!(
            "the lock was resolved against {resolved:?}, the wheelhouse's fetcher reads \
             {reading:?}: a wheelhouse is filled from the lock's own indexes"
        )));
    }
    Ok(())
}
