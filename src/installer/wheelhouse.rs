//! Installing the lock from the wheelhouse: the controller copied the lock's files into S3
//! (`<prefix>/<lock sha256>/`, manifest last); when it is complete they are downloaded into the
//! work folder, each checked against its sha256, and the lock is installed from that folder
//! with `--no-index`. The index is then never asked, so a pod starts while it is down.
//!
//! The wheelhouse only ever speeds up or protects an install: missing, incomplete, unreachable
//! or refused (a file whose bytes differ), it is set aside with a warning and the lock is
//! installed from the index as before. Either way the installer still checks every file
//! against the lock's hashes (`--require-hashes`).

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::Run;
use crate::lock::Lock;
use crate::requirements::content_hash;
use crate::s3::S3Config;

/// The install container's wheelhouse keys (from the Secret the spec names), never arguments.
pub(crate) const WHEELHOUSE_ACCESS_KEY_ENV: &str = "BIFROST_WHEELHOUSE_ACCESS_KEY";
pub(crate) const WHEELHOUSE_SECRET_KEY_ENV: &str = "BIFROST_WHEELHOUSE_SECRET_KEY";

/// Where the controller copied the lock's files (`--wheelhouse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WheelhouseSource {
    /// The bucket and how to reach it (its `key` is not used).
    pub config: S3Config,
    /// The folder of per-lock folders.
    pub prefix: String,
}

/// What was decided about the wheelhouse, for the log and the `--json` report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(super) struct WheelhouseNote {
    /// Whether the lock was installed from it.
    pub used: bool,
    /// `s3://bucket/prefix/<lock sha256>/`.
    pub location: String,
    /// Files downloaded, and their bytes (when used).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Why the index was used instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Run {
    /// When a wheelhouse is configured and holds this lock completely: its files in a local
    /// folder, and the options switched to install from there only. Otherwise the options are
    /// left alone (the index), with a warning saying why.
    /// A signal or `--timeout` while downloading ends the run (`Err`), as everywhere else.
    pub(super) async fn use_wheelhouse(&mut self, lock: &Lock) -> crate::error::Result<()> {
        let Some(source) = self.options.wheelhouse.clone() else {
            return Ok(());
        };
        let text = lock.render();
        let digest = content_hash(&text);
        let dir = std::env::temp_dir().join(format!("bifrost-wheelhouse-{}", &digest[..12]));
        let started = Instant::now();
        let fetched = self.fetch_wheelhouse(&source, &text, &digest, &dir).await?;
        let location = format!("s3://{}/{}/{digest}/", source.config.bucket, source.prefix);
        let note = match fetched {
            Ok((files, bytes)) => {
                tracing::info!(
                    "installing the lock from the wheelhouse {location}: {files} file(s), {:.1} MB \
                     fetched and checked in {:.2} s; no package index is asked",
                    bytes as f64 / 1e6,
                    started.elapsed().as_secs_f64()
                );
                self.options.find_links = vec![dir.display().to_string()];
                self.options.no_index = true;
                self.options.index_url = None;
                self.options.extra_index_url.clear();
                WheelhouseNote {
                    used: true,
                    location,
                    files: Some(files),
                    bytes: Some(bytes),
                    reason: None,
                }
            }
            Err(why) => {
                let _ = std::fs::remove_dir_all(&dir);
                let text = format!(
                    "not installing from the wheelhouse {location}: {why}; installing the lock \
                     from the index"
                );
                tracing::warn!("{text}");
                self.warnings.push(text);
                WheelhouseNote {
                    used: false,
                    location,
                    files: None,
                    bytes: None,
                    reason: Some(why),
                }
            }
        };
        self.facts.wheelhouse = Some(note);
        Ok(())
    }

    /// Download the lock's files into `dir`: `Ok(Ok((files, bytes)))`, or `Ok(Err(why not))`;
    /// `Err` when a signal or `--timeout` stopped it.
    async fn fetch_wheelhouse(
        &mut self,
        source: &WheelhouseSource,
        text: &str,
        digest: &str,
        dir: &std::path::Path,
    ) -> crate::error::Result<Result<(usize, u64), String>> {
        let wheelhouse = match crate::wheelhouse::Wheelhouse::new(&source.config, &source.prefix) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e.to_string())),
        };
        if let Err(e) = std::fs::create_dir_all(dir) {
            return Ok(Err(format!("cannot create {}: {e}", dir.display())));
        }
        let download = async {
            wheelhouse
                .download(text, digest, dir)
                .await
                .map_err(|e| crate::error::Error::Install(e.to_string()))
        };
        match self.phase("downloading the wheelhouse", download).await {
            Ok(done) => Ok(Ok((done.files.len(), done.bytes))),
            Err(e) if self.interrupted.is_some() || self.timed_out() => Err(e),
            Err(e) => Ok(Err(e.to_string())),
        }
    }
}

/// The folder a wheelhouse was downloaded to, removed once installed from.
pub(super) fn downloaded_dir(run: &Run) -> Option<PathBuf> {
    run.facts
        .wheelhouse
        .as_ref()
        .filter(|n| n.used)
        .and_then(|_| run.options.find_links.first().map(PathBuf::from))
}
