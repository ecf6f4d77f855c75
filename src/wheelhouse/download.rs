//! The pod's side: a complete wheelhouse into a folder, every byte checked, for
//! `uv pip install --no-index --find-links <folder> --require-hashes`. S3 only: the index may be
//! down.

use std::path::{Path, PathBuf};

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::manifest::ManifestFile;
use super::{CONCURRENCY, MANIFEST, Wheelhouse, read_lock, sha};
use crate::error::{Error, Result};

/// What a download put into the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// The files written, sorted.
    pub files: Vec<PathBuf>,
    pub bytes: u64,
}

impl Wheelhouse {
    /// Download the wheelhouse of `lock_sha256` into `dir` (created if missing): the files
    /// `lock_text` (whose hash it is) installs from, each checked against the manifest's hash
    /// and size while it streams, a file whose bytes differ never kept. Every pin must have at
    /// least one file whose hash it lists. An incomplete wheelhouse is
    /// [`Error::WheelhouseIncomplete`]; anything else wrong with it [`Error::BadWheelhouse`],
    /// naming the file or pin.
    pub async fn download(
        &self,
        lock_text: &str,
        lock_sha256: &str,
        dir: &Path,
    ) -> Result<Downloaded> {
        let sha = sha(lock_sha256)?;
        let (_, pins) = read_lock(lock_text, &sha)?;
        let manifest = self
            .manifest(&sha)
            .await?
            .ok_or_else(|| Error::WheelhouseIncomplete {
                location: self.location(&sha),
                reason: format!(
                    "it has no {MANIFEST} (not filled yet, or a fill is under way or was stopped)"
                ),
            })?;
        let needed = manifest.cover(&pins).map_err(|why| self.bad(&sha, why))?;
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::io("creating", dir, e))?;
        let results: Vec<Result<PathBuf>> = futures::stream::iter(&needed)
            .map(|file| self.fetch(&sha, file, dir))
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut files = results.into_iter().collect::<Result<Vec<_>>>()?;
        files.sort();
        let bytes = needed.iter().map(|f| f.size).sum();
        Ok(Downloaded { files, bytes })
    }

    /// One file into `dir`, through a hidden partial file that is renamed only once its bytes
    /// are the manifest's (and removed when they are not).
    async fn fetch(&self, sha: &str, file: &ManifestFile, dir: &Path) -> Result<PathBuf> {
        let partial = dir.join(format!(".{}.partial", file.name));
        let written = self.fetch_into(sha, file, &partial).await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        let target = dir.join(&file.name);
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(|e| Error::io("renaming", &partial, e))?;
        Ok(target)
    }

    async fn fetch_into(&self, sha: &str, file: &ManifestFile, partial: &Path) -> Result<()> {
        let path = self.key(sha, &file.name);
        let bad = |why: String| self.bad(sha, format!("{}: {why}", file.name));
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(bad("listed in the manifest but not stored".into()));
            }
            Err(e) => return Err(self.s3_error("reading", &path, e)),
        };
        if got.meta.size != file.size {
            return Err(bad(format!(
                "{} bytes stored, the manifest says {}: not kept",
                got.meta.size, file.size
            )));
        }
        let mut out = tokio::fs::File::create(partial)
            .await
            .map_err(|e| Error::io("creating", partial, e))?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks
            .try_next()
            .await
            .map_err(|e| self.s3_error("reading", &path, e))?
        {
            size += chunk.len() as u64;
            if size > file.size {
                return Err(bad(format!(
                    "more than the {} bytes the manifest says: not kept",
                    file.size
                )));
            }
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::io("writing", partial, e))?;
        }
        out.flush()
            .await
            .map_err(|e| Error::io("writing", partial, e))?;
        let actual = hex::encode(hasher.finalize());
        if actual != file.sha256 || size != file.size {
            return Err(bad(format!(
                "its bytes hash to sha256:{actual} ({size} bytes), the manifest says \
                 sha256:{} ({} bytes): not kept",
                file.sha256, file.size
            )));
        }
        Ok(())
    }
}
