//! Database → resource mirror: keeps `spec.content` equal to Bifrost's requirements row.
//!
//! For every resource with `spec.source.database`, a task reads the row and server-side-applies
//! `spec.content` under its own field manager when they differ. Changes arrive within a second
//! through `LISTEN` on the migration's NOTIFY channel (one listener per database, shared by all
//! resources using it); polling every `pollIntervalSeconds` is the safety net for notifications
//! lost while disconnected. When the database is unreachable the content is kept as it is — never
//! blanked — and the failure is handed to the reconciler, which owns the status (Synced=False).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::FutureExt;
use futures::channel::mpsc::UnboundedSender;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::{SyncState, SyncStates, secret_value};
use crate::crd::{DatabaseSource, MIRROR_MANAGER, WorkspaceRequirements};
use crate::database::{Database, NOTIFY_CHANNEL, RowSelector};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::supervise::{Backoff, OnExit, Supervisor};

/// A notification fan-out: `Some(path)` for a changed row, `None` after a reconnect (resync all).
type Notices = broadcast::Sender<Option<String>>;

/// One database shared by every resource that points at it.
struct Source {
    db: Database,
    notices: Notices,
    listener: JoinHandle<()>,
}

impl Drop for Source {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

struct Sources {
    by_url: tokio::sync::Mutex<HashMap<String, Arc<Source>>>,
    tasks: Supervisor,
}

impl Sources {
    async fn get(&self, url: &str) -> Result<Arc<Source>> {
        let mut map = self.by_url.lock().await;
        if let Some(s) = map.get(url) {
            return Ok(s.clone());
        }
        let db = Database::connect(url, RowSelector::default(), Duration::from_secs(5)).await?;
        let (notices, _) = broadcast::channel(256);
        let name = format!("mirror-listen/{}", crate::error::redact_url(db.url()));
        let (d, n) = (db.clone(), notices.clone());
        let listener = self
            .tasks
            .spawn(name, OnExit::Restart(Backoff::default()), move || {
                listen(d.clone(), n.clone()).map(Ok::<(), std::convert::Infallible>)
            });
        let source = Arc::new(Source {
            db,
            notices,
            listener,
        });
        map.insert(url.to_string(), source.clone());
        Ok(source)
    }

    async fn forget(&self, url: &str) {
        self.by_url.lock().await.remove(url);
    }
}

/// LISTEN forever, reconnecting with backoff; fan out the changed paths.
async fn listen(db: Database, notices: Notices) {
    let mut attempt = 0u32;
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(db.pool()).await?;
            l.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(l)
        };
        let mut listener = match connected.await {
            Ok(l) => l,
            Err(e) => {
                attempt += 1;
                debug!(error = %crate::redact::scrub(&e.to_string(), db.url()), "LISTEN failed");
                let pause = crate::cache::backoff(Duration::from_millis(500), attempt.min(4));
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        // Anything may have changed while we were not listening.
        let _ = notices.send(None);
        attempt = 0;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    let path = serde_json::from_str::<serde_json::Value>(n.payload())
                        .ok()
                        .and_then(|v| v.get("path").and_then(|p| p.as_str()).map(String::from));
                    let _ = notices.send(path);
                }
                // The connection dropped and was re-established: notifications may be lost.
                Ok(None) => {
                    let _ = notices.send(None);
                }
                Err(e) => {
                    debug!(error = %crate::redact::scrub(&e.to_string(), db.url()), "LISTEN connection lost");
                    // Let every resource re-read now: a lost connection is how an outage shows.
                    let _ = notices.send(None);
                    break;
                }
            }
        }
    }
}

/// Start, restart and stop per-resource mirror tasks as resources come and go: the store is
/// rescanned when the controller's watch of `WorkspaceRequirements` delivers an event (`changed`
/// is notified for each, including the end of the first listing), not on a timer.
pub async fn run(
    client: Client,
    store: Store<WorkspaceRequirements>,
    changed: Arc<Notify>,
    sync: Arc<SyncStates>,
    metrics: Arc<Metrics>,
    trigger: UnboundedSender<ObjectRef<WorkspaceRequirements>>,
    supervisor: Supervisor,
) {
    debug!("database mirror started");
    let sources = Arc::new(Sources {
        by_url: Default::default(),
        tasks: supervisor.clone(),
    });
    let mut tasks: HashMap<ObjectRef<WorkspaceRequirements>, (DatabaseSource, Owned)> =
        HashMap::new();
    loop {
        let mut wanted: HashMap<ObjectRef<WorkspaceRequirements>, DatabaseSource> = HashMap::new();
        for obj in store.state() {
            if let Some(db) = obj.spec.source.as_ref().and_then(|s| s.database.clone()) {
                wanted.insert(ObjectRef::from_obj(obj.as_ref()), db);
            }
        }
        tasks.retain(|oref, (source, handle)| {
            let keep = wanted.get(oref) == Some(source) && !handle.0.is_finished();
            if !keep {
                sync.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(oref);
            }
            keep
        });
        for (oref, source) in wanted {
            if tasks.contains_key(&oref) {
                continue;
            }
            info!(resource = %oref, path = %source.path, "mirroring the database row into spec.content");
            let task = Mirror {
                client: client.clone(),
                oref: oref.clone(),
                source: source.clone(),
                store: store.clone(),
                sync: sync.clone(),
                metrics: metrics.clone(),
                trigger: trigger.clone(),
                sources: sources.clone(),
            };
            let name = format!("mirror/{oref}");
            let handle = supervisor.spawn(name, OnExit::Restart(Backoff::default()), move || {
                task.clone().run().map(Ok::<(), std::convert::Infallible>)
            });
            tasks.insert(oref, (source, Owned(handle)));
        }
        // A notification sent while scanning is kept (Notify stores one permit): none is lost.
        changed.notified().await;
    }
}

/// A per-resource task, aborted when dropped: when the mirror itself stops (leadership lost,
/// shutdown) its tasks must not go on writing `spec.content`.
struct Owned(JoinHandle<()>);

impl Drop for Owned {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Clone)]
struct Mirror {
    client: Client,
    oref: ObjectRef<WorkspaceRequirements>,
    source: DatabaseSource,
    store: Store<WorkspaceRequirements>,
    sync: Arc<SyncStates>,
    metrics: Arc<Metrics>,
    trigger: UnboundedSender<ObjectRef<WorkspaceRequirements>>,
    sources: Arc<Sources>,
}

impl Mirror {
    fn namespace(&self) -> String {
        self.oref.namespace.clone().unwrap_or_default()
    }

    /// Record a state; wake the reconciler only when it changed.
    fn report(&self, state: SyncState) {
        let changed = {
            let mut map = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
            // Repeated successful syncs do not wake the reconciler (the status would only move
            // its timestamp); a first sync, a failure or a recovery does.
            let same = match (map.get(&self.oref), &state) {
                (Some(SyncState::Synced { .. }), SyncState::Synced { .. }) => true,
                (Some(old), new) => old == new,
                (None, _) => false,
            };
            map.insert(self.oref.clone(), state);
            !same
        };
        if changed {
            let _ = self.trigger.unbounded_send(self.oref.clone());
        }
    }

    fn fail(&self, e: &Error) {
        self.metrics.db_sync(false, None);
        let state = SyncState::Failed {
            reason: e.reason().to_string(),
            message: e.to_string(),
        };
        if !matches!(self.sync.lock().unwrap_or_else(PoisonError::into_inner).get(&self.oref), Some(s) if *s == state)
        {
            warn!(resource = %self.oref, error = %e, "database mirror failed");
        }
        self.report(state);
    }

    async fn run(self) {
        let poll = Duration::from_secs(self.source.poll_interval_seconds.max(1).into());
        let mut failures = 0u32;
        loop {
            let url = match secret_value(
                &self.client,
                &self.namespace(),
                &self.source.url_secret_ref.name,
                &self.source.url_secret_ref.key,
            )
            .await
            {
                Ok(u) => u,
                Err(e) => {
                    self.fail(&e);
                    failures += 1;
                    tokio::time::sleep(retry_delay(failures, poll)).await;
                    continue;
                }
            };
            let source = match self.sources.get(&url).await {
                Ok(s) => s,
                Err(e) => {
                    self.fail(&e);
                    failures += 1;
                    tokio::time::sleep(retry_delay(failures, poll)).await;
                    continue;
                }
            };
            let mut notices = source.notices.subscribe();
            let db = source.db.with_selector(RowSelector {
                path: self.source.path.clone(),
                entity_type: self.source.entity_type.clone(),
            });
            // Sync now, then on every notice for our path and every poll interval.
            loop {
                match self.sync_once(&db).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        self.fail(&e);
                        failures += 1;
                        if matches!(e, Error::DatabaseConnect { .. }) || failures.is_multiple_of(5)
                        {
                            // Maybe the Secret changed (rotated password): resolve again.
                            self.sources.forget(&url).await;
                            tokio::time::sleep(retry_delay(failures, poll)).await;
                            break;
                        }
                    }
                }
                let wait = if failures > 0 {
                    retry_delay(failures, poll)
                } else {
                    poll
                };
                let deadline = tokio::time::sleep(wait);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        _ = &mut deadline => break,
                        notice = notices.recv() => match notice {
                            Ok(Some(path)) if path != self.source.path => continue,
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                            Err(broadcast::error::RecvError::Closed) => break,
                        },
                    }
                }
            }
        }
    }

    /// Read the row; apply `spec.content` when it differs.
    async fn sync_once(&self, db: &Database) -> Result<()> {
        let row = db.read().await?;
        let Some(row) = row else {
            return Err(Error::NotFound {
                what: "live workspace_files row with path",
                name: self.source.path.clone(),
            });
        };
        let current = self.store.get(&self.oref).map(|o| o.spec.content.clone());
        let mut lag = None;
        if current.as_deref() != Some(row.content.as_str()) {
            let ns = self.namespace();
            let api = Api::<WorkspaceRequirements>::namespaced(self.client.clone(), &ns);
            let patch = json!({
                "apiVersion": "bifrost.io/v1alpha1",
                "kind": "WorkspaceRequirements",
                "metadata": {"name": self.oref.name, "namespace": ns},
                "spec": {"content": row.content},
            });
            api.patch(
                &self.oref.name,
                &PatchParams::apply(MIRROR_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube(format!("applying spec.content of {}", self.oref), e))?;
            info!(resource = %self.oref, hash = %&crate::requirements::content_hash(&row.content)[..12], "spec.content now mirrors the database row");
            lag = row.updated_at.and_then(|u| {
                let d = chrono::Utc::now().naive_utc() - u;
                d.to_std().ok().filter(|d| *d < Duration::from_secs(86_400))
            });
        }
        self.metrics.db_sync(true, lag);
        self.report(SyncState::Synced {
            at: super::status::now_rfc3339(),
        });
        Ok(())
    }
}

fn retry_delay(failures: u32, poll: Duration) -> Duration {
    crate::cache::backoff(Duration::from_millis(500), failures.min(5))
        .min(poll.max(Duration::from_secs(1)))
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mirror({})", self.oref)
    }
}
