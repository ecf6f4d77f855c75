//! Old wheelhouses go: a lock's folder that no resource and no running pod refers to any more,
//! once nothing in it is younger than a grace period (a fill under way writes into it; a pod
//! that started on that lock may still be reading it).

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};

use super::{MANIFEST, Wheelhouse, layout};
use crate::error::Result;

/// What a prune found, each a lock's SHA-256, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Deleted, manifest first.
    pub removed: Vec<String>,
    /// In the set to keep.
    pub kept: Vec<String>,
    /// Not to keep, but written to within the grace period.
    pub recent: Vec<String>,
}

impl Wheelhouse {
    /// Delete every `<prefix>/<sha>/` whose sha is not in `keep` (hex, either case, `sha256:`
    /// allowed) and whose newest object is older than `grace`. Folders that are not a lock's
    /// SHA-256 are not ours and stay.
    pub async fn prune(&self, keep: &HashSet<String>, grace: Duration) -> Result<Pruned> {
        let keep: HashSet<String> = keep.iter().filter_map(|k| layout::lock_sha256(k)).collect();
        let root = Path::from(self.prefix.as_str());
        let listed = self
            .store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| self.s3_error("listing", &root, e))?;
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
        let now = chrono::Utc::now();
        let mut pruned = Pruned::default();
        for folder in listed.common_prefixes {
            let Some(sha) = folder
                .filename()
                .filter(|name| layout::lock_sha256(name).as_deref() == Some(*name))
                .map(str::to_string)
            else {
                continue;
            };
            if keep.contains(&sha) {
                pruned.kept.push(sha);
                continue;
            }
            let objects: Vec<ObjectMeta> = self
                .store
                .list(Some(&folder))
                .try_collect()
                .await
                .map_err(|e| self.s3_error("listing", &folder, e))?;
            let newest = objects.iter().map(|o| o.last_modified).max();
            if newest.is_some_and(|t| now.signed_duration_since(t) < grace) {
                pruned.recent.push(sha);
                continue;
            }
            self.remove(&sha, objects).await?;
            tracing::info!(location = %self.location(&sha), "wheelhouse pruned");
            pruned.removed.push(sha);
        }
        pruned.removed.sort();
        pruned.kept.sort();
        pruned.recent.sort();
        Ok(pruned)
    }

    /// Delete a lock's folder: its manifest first, so that it is never complete with files
    /// missing, then the rest.
    async fn remove(&self, sha: &str, objects: Vec<ObjectMeta>) -> Result<()> {
        let manifest = self.key(sha, MANIFEST);
        if objects.iter().any(|o| o.location == manifest) {
            self.store
                .delete(&manifest)
                .await
                .map_err(|e| self.s3_error("deleting", &manifest, e))?;
        }
        let rest: Vec<object_store::Result<Path>> = objects
            .into_iter()
            .map(|o| o.location)
            .filter(|l| *l != manifest)
            .map(Ok)
            .collect();
        let folder = self.folder(sha);
        self.store
            .delete_stream(futures::stream::iter(rest).boxed())
            .try_collect::<Vec<Path>>()
            .await
            .map_err(|e| self.s3_error("deleting", &folder, e))?;
        Ok(())
    }
}
