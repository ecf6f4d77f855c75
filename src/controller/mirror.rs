//! Source → resource mirror: keeps `spec.content` equal to Bifrost's requirements, wherever
//! they live.
//!
//! For every resource with a `spec.source`, a task reads the source and server-side-applies
//! `spec.content` under its own field manager when they differ. The two sources differ only in
//! how a read is triggered and done ([`Feed`]):
//! - database: changes arrive within a second through `LISTEN` on the migration's NOTIFY channel
//!   (one listener per database, shared by all resources using it); polling every
//!   `pollIntervalSeconds` is the safety net for notifications lost while disconnected;
//! - S3: a conditional `GET` every `pollIntervalSeconds` (`If-None-Match` the last ETag, so an
//!   unchanged object costs one `304`).
//!
//! Either way nothing is written before the first successful read, and when the source cannot
//! be read the content is kept as it is — never blanked — and the failure is handed to the
//! reconciler, which owns the status (Synced=False).

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

use super::context::{SyncState, SyncStates, secret_value};
use crate::crd::{DatabaseSource, MIRROR_MANAGER, S3Source, WorkspaceRequirements};
use crate::database::{Database, NOTIFY_CHANNEL, RowSelector};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::s3::{Credentials, Poll, S3Store};
use crate::supervise::{Backoff, OnExit, Supervisor};

/// A notification fan-out: `Some(path)` for a changed row, `None` after a reconnect (resync all).
type Notices = broadcast::Sender<Option<String>>;

/// One database shared by every resource that points at it.
struct SharedDatabase {
    db: Database,
    notices: Notices,
    listener: JoinHandle<()>,
}

impl Drop for SharedDatabase {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

struct SharedDatabases {
    by_url: tokio::sync::Mutex<HashMap<String, Arc<SharedDatabase>>>,
    tasks: Supervisor,
}

impl SharedDatabases {
    async fn get(&self, url: &str) -> Result<Arc<SharedDatabase>> {
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
        let source = Arc::new(SharedDatabase {
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

/// Start, restart and stop per-resource mirror tasks as resources come and go.
/// What a resource's `spec.source` asks the mirror to follow.
#[derive(Clone, Debug, PartialEq)]
enum Wanted {
    Database(DatabaseSource),
    S3(S3Source),
}

impl Wanted {
    fn of(obj: &WorkspaceRequirements) -> Option<Self> {
        let source = obj.spec.source.as_ref()?;
        // Both at once is refused by the schema and by validation: follow neither rather than
        // pick one silently.
        match (&source.database, &source.s3) {
            (Some(db), None) => Some(Self::Database(db.clone())),
            (None, Some(s3)) => Some(Self::S3(s3.clone())),
            _ => None,
        }
    }

    fn poll(&self) -> Duration {
        let seconds = match self {
            Self::Database(db) => db.poll_interval_seconds,
            Self::S3(s3) => s3.poll_interval_seconds,
        };
        Duration::from_secs(seconds.max(1).into())
    }

    fn describe(&self) -> String {
        match self {
            Self::Database(db) => format!("the database row {:?}", db.path),
            Self::S3(s3) => s3.location(),
        }
    }
}

/// Start, restart and stop per-resource mirror tasks as resources come and go: the store is
/// rescanned when the controller's watch of `WorkspaceRequirements` delivers an event (`changed`
/// is notified for each, including the end of the first listing), not on a timer.
pub(crate) async fn run(
    client: Client,
    store: Store<WorkspaceRequirements>,
    changed: Arc<Notify>,
    sync: Arc<SyncStates>,
    metrics: Arc<Metrics>,
    trigger: UnboundedSender<ObjectRef<WorkspaceRequirements>>,
    supervisor: Supervisor,
) {
    debug!("source mirror started");
    let sources = Arc::new(SharedDatabases {
        by_url: Default::default(),
        tasks: supervisor.clone(),
    });
    let mut tasks: HashMap<ObjectRef<WorkspaceRequirements>, (Wanted, Owned)> = HashMap::new();
    loop {
        let mut wanted: HashMap<ObjectRef<WorkspaceRequirements>, Wanted> = HashMap::new();
        for obj in store.state() {
            if let Some(w) = Wanted::of(&obj) {
                wanted.insert(ObjectRef::from_obj(obj.as_ref()), w);
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
            info!(resource = %oref, source = %source.describe(), "mirroring the source into spec.content");
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

/// One read of a source.
struct SourceRead {
    /// `None`: unchanged since the last read (an S3 `304`).
    content: Option<String>,
    /// When the source says the content last changed (for the lag metric).
    changed_at: Option<chrono::NaiveDateTime>,
}

/// A connected source: the small interface the mirror loop drives.
enum Feed {
    Database {
        db: Database,
        notices: broadcast::Receiver<Option<String>>,
        path: String,
        url: String,
    },
    S3 {
        store: S3Store,
        /// ETag of the last content that was applied (not merely read: a read whose write
        /// failed must be read again in full).
        etag: Option<String>,
        /// ETag of the last read, adopted by [`Feed::applied`].
        read_etag: Option<String>,
    },
}

impl Feed {
    /// Read the source now.
    async fn read(&mut self) -> Result<SourceRead> {
        match self {
            Self::Database { db, path, .. } => {
                let Some(row) = db.read().await? else {
                    return Err(Error::NotFound {
                        what: "live workspace_files row with path",
                        name: path.clone(),
                    });
                };
                crate::limit::check(|| format!("workspace_files row {path:?}"), &row.content)?;
                Ok(SourceRead {
                    content: Some(row.content),
                    changed_at: row.updated_at,
                })
            }
            Self::S3 {
                store,
                etag,
                read_etag,
            } => match store.read_if_changed(etag.as_deref()).await? {
                Poll::NotModified => Ok(SourceRead {
                    content: None,
                    changed_at: None,
                }),
                Poll::Changed(v) => {
                    // Refused as every other door refuses it; the resource keeps what it had.
                    crate::limit::check(|| store.config().location(), &v.content)?;
                    *read_etag = Some(v.etag);
                    Ok(SourceRead {
                        content: Some(v.content),
                        changed_at: None,
                    })
                }
                Poll::NotFound => {
                    // Deleted: the next object, whatever its ETag, is new.
                    *etag = None;
                    Err(Error::NotFound {
                        what: "S3 object",
                        name: store.config().location(),
                    })
                }
            },
        }
    }

    /// The content of the last read is in `spec.content` now.
    fn applied(&mut self) {
        if let Self::S3 {
            etag, read_etag, ..
        } = self
            && read_etag.is_some()
        {
            *etag = read_etag.take();
        }
    }

    /// Wait `wait`, or less when the source announces a change.
    async fn next(&mut self, wait: Duration) {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        match self {
            Self::S3 { .. } => deadline.await,
            Self::Database { notices, path, .. } => loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    notice = notices.recv() => match notice {
                        Ok(Some(p)) if p != *path => continue,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => break,
                    },
                }
            },
        }
    }

    /// Whether this failure means the connection settings (the Secret) should be read again.
    fn reconnect_after(&self, e: &Error, failures: u32) -> bool {
        matches!(
            e,
            Error::DatabaseConnect { .. } | Error::S3AccessDenied { .. }
        ) || failures.is_multiple_of(5)
    }
}

#[derive(Clone)]
struct Mirror {
    client: Client,
    oref: ObjectRef<WorkspaceRequirements>,
    source: Wanted,
    store: Store<WorkspaceRequirements>,
    sync: Arc<SyncStates>,
    metrics: Arc<Metrics>,
    trigger: UnboundedSender<ObjectRef<WorkspaceRequirements>>,
    sources: Arc<SharedDatabases>,
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
            // its timestamp); a first sync, a failure, a recovery or a new note does.
            let same = match (map.get(&self.oref), &state) {
                (Some(SyncState::Synced { note: a, .. }), SyncState::Synced { note: b, .. }) => {
                    a == b
                }
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
            warn!(resource = %self.oref, error = %e, "source mirror failed");
        }
        self.report(state);
    }

    /// Resolve the Secret(s) and connect; `note` is what the status should say about the feed.
    async fn connect(&self) -> Result<(Feed, Option<String>)> {
        let ns = self.namespace();
        match &self.source {
            Wanted::Database(src) => {
                let url = secret_value(
                    &self.client,
                    &ns,
                    &src.url_secret_ref.name,
                    &src.url_secret_ref.key,
                )
                .await?;
                let shared = self.sources.get(&url).await?;
                let notices = shared.notices.subscribe();
                let db = shared.db.with_selector(RowSelector {
                    path: src.path.clone(),
                    entity_type: src.entity_type.clone(),
                });
                // Without the migration's trigger nothing is ever NOTIFYed: changes still
                // arrive, but only by polling — say so instead of promising "at once".
                let note = match db.has_notify_trigger().await {
                    Ok(true) => None,
                    Ok(false) => Some(format!(
                        "no NOTIFY trigger: changes arrive by polling every {} s; run \
                         `bifrost-requirements migrate` (or the chart's migrate.enabled)",
                        self.source.poll().as_secs()
                    )),
                    Err(e) => {
                        self.sources.forget(&url).await;
                        return Err(e);
                    }
                };
                Ok((
                    Feed::Database {
                        db,
                        notices,
                        path: src.path.clone(),
                        url,
                    },
                    note,
                ))
            }
            Wanted::S3(src) => {
                let credentials = match &src.credentials_secret_ref {
                    None => None,
                    Some(r) => Some(Credentials {
                        access_key_id: secret_value(
                            &self.client,
                            &ns,
                            &r.name,
                            &r.access_key_id_key,
                        )
                        .await?
                        .trim()
                        .to_string(),
                        secret_access_key: secret_value(
                            &self.client,
                            &ns,
                            &r.name,
                            &r.secret_access_key_key,
                        )
                        .await?,
                    }),
                };
                let store = S3Store::new(crate::spec::s3_config(src, credentials))?;
                Ok((
                    Feed::S3 {
                        store,
                        etag: None,
                        read_etag: None,
                    },
                    None,
                ))
            }
        }
    }

    async fn run(self) {
        let poll = self.source.poll();
        let mut failures = 0u32;
        loop {
            let (mut feed, note) = match self.connect().await {
                Ok(f) => f,
                Err(e) => {
                    self.fail(&e);
                    failures += 1;
                    tokio::time::sleep(retry_delay(failures, poll)).await;
                    continue;
                }
            };
            // What the source held at the last read (an unchanged S3 object is not downloaded
            // again, yet `spec.content` must still be put back if someone else changed it).
            let mut known: Option<String> = None;
            // Sync now, then on every notice for our row and every poll interval.
            loop {
                match self.sync_once(&mut feed, &mut known, &note).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        self.fail(&e);
                        failures += 1;
                        if feed.reconnect_after(&e, failures) {
                            // Maybe the Secret changed (rotated password or keys): resolve again.
                            if let Feed::Database { url, .. } = &feed {
                                self.sources.forget(url).await;
                            }
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
                feed.next(wait).await;
            }
        }
    }

    /// Read the source; apply `spec.content` when it differs.
    async fn sync_once(
        &self,
        feed: &mut Feed,
        known: &mut Option<String>,
        note: &Option<String>,
    ) -> Result<()> {
        let fetched = feed.read().await?;
        if let Some(content) = fetched.content {
            *known = Some(content);
        }
        let Some(content) = known.as_deref() else {
            // Unchanged since a read this task never saw: cannot happen (the first read of a
            // feed is unconditional), but never write what was not read.
            return Ok(());
        };
        let current = self.store.get(&self.oref).map(|o| o.spec.content.clone());
        let mut lag = None;
        if current.as_deref() != Some(content) {
            self.apply(content).await?;
            lag = fetched.changed_at.and_then(|u| {
                let d = chrono::Utc::now().naive_utc() - u;
                d.to_std().ok().filter(|d| *d < Duration::from_secs(86_400))
            });
        }
        feed.applied();
        self.metrics.db_sync(true, lag);
        self.report(SyncState::Synced {
            at: super::status::now_rfc3339(),
            note: note.clone(),
        });
        Ok(())
    }

    async fn apply(&self, content: &str) -> Result<()> {
        let ns = self.namespace();
        let api = Api::<WorkspaceRequirements>::namespaced(self.client.clone(), &ns);
        // An empty file is omitted: the 1.20 API server decodes "" as null.
        let spec = if content.is_empty() {
            json!({})
        } else {
            json!({"content": content})
        };
        let patch = json!({
            "apiVersion": "bifrost.io/v1alpha1",
            "kind": "WorkspaceRequirements",
            "metadata": {"name": self.oref.name, "namespace": ns},
            "spec": spec,
        });
        api.patch(
            &self.oref.name,
            &PatchParams::apply(MIRROR_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube(format!("applying spec.content of {}", self.oref), e))?;
        info!(resource = %self.oref, source = %self.source.describe(), hash = %&crate::requirements::content_hash(content)[..12], "spec.content now mirrors the source");
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
