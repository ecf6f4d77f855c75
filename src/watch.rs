//! How the operator watches the cluster: one [`Scope`] of namespaces, one way to build a
//! reflector cache that keeps only what is read ([`cached`]), and one watch per replica on
//! `WorkspaceRequirements` that the webhook and the controller share ([`Resources`]). Each watch
//! opened logs `watching` with its kind, so a log shows how many watches each kind has.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{Mutex, Notify, watch};
use tracing::{info, warn};

use crate::crd::WorkspaceRequirements;

/// Which namespaces the operator watches.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// `None`: all namespaces.
    pub namespace: Option<String>,
}

impl Scope {
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// The one way the controller watches a workload kind: a reflector cache of `K` and the stream of watch
/// events that feeds it (the controller polls the stream). `slim` cuts each object down to what
/// is read as it arrives — at least its managedFields, a third of a typical object — so the
/// caches stay small with thousands of objects.
pub(crate) fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: impl FnMut(&mut K) + Send + 'static,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    opening::<K>();
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff().modify(slim));
    (store, stream)
}

/// Say that a watch on `K` opens: one line per watch, so the log shows how many each kind has.
pub(crate) fn opening<K: Resource<DynamicType = ()>>() {
    info!(kind = %K::kind(&()), "watching");
}

pub(crate) fn without_managed_fields<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
}

/// How many applied resources a subscriber may fall behind before it starts over from the store.
const SUBSCRIBER_BUFFER: usize = 1024;

/// The one watch a replica opens on `WorkspaceRequirements`. The webhook reads its store on
/// every replica; the controller, which runs only on the leader and is restarted with each term,
/// subscribes to it ([`Resources::subscribe`]) and the mirror is woken by it
/// ([`Resources::changed`]).
///
/// Not kube's `reflect_shared`: its subscriptions come from the store's writer, which the watch
/// stream takes for its lifetime, so a controller starting after the watch could not subscribe;
/// and a subscription nobody polls (a standby's) would hold the shared watch back, with the
/// webhook reading a stale store. Here a subscriber that falls behind starts over from the store.
#[derive(Clone)]
pub struct Resources {
    store: Store<WorkspaceRequirements>,
    /// Shared so that a restarted [`Resources::feed`] resumes feeding the same store, which
    /// readers keep reading meanwhile.
    writer: Arc<Mutex<Writer<WorkspaceRequirements>>>,
    changed: Arc<Notify>,
    applied: broadcast::Sender<ObjectRef<WorkspaceRequirements>>,
    deleted: broadcast::Sender<ObjectRef<WorkspaceRequirements>>,
    /// True once the first listing is in. kube's `Store::wait_until_ready` wakes only the last
    /// of several concurrent waiters (one oneshot receiver behind a lock), and the controller's
    /// runner already waits on it: everyone else waits here.
    listed: watch::Sender<bool>,
}

impl Default for Resources {
    fn default() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer: Arc::new(Mutex::new(writer)),
            changed: Arc::new(Notify::new()),
            applied: broadcast::channel(SUBSCRIBER_BUFFER).0,
            deleted: broadcast::channel(SUBSCRIBER_BUFFER).0,
            listed: watch::channel(false).0,
        }
    }
}

impl Resources {
    /// The resources as last seen by the watch (managedFields dropped).
    pub(crate) fn store(&self) -> Store<WorkspaceRequirements> {
        self.store.clone()
    }

    /// Notified on every watch event, deletions and the end of a listing included.
    pub(crate) fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// True once the store holds its first complete listing, for readers that wait with their
    /// own deadline.
    pub(crate) fn listed_signal(&self) -> watch::Receiver<bool> {
        self.listed.subscribe()
    }

    /// Wait until the store holds its first complete listing.
    pub(crate) async fn listed(&self) {
        let _ = self.listed.subscribe().wait_for(|l| *l).await;
    }

    /// Watch the resources `api` covers into the store until `stop`; a watch error is retried
    /// by the watcher's own backoff, an ended stream is this task's failure.
    pub async fn feed(
        &self,
        api: Api<WorkspaceRequirements>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), &'static str> {
        let mut writer = self.writer.lock().await;
        opening::<WorkspaceRequirements>();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(without_managed_fields);
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = stop.wait_for(|s| *s) => return Ok(()),
            };
            match event {
                Some(Ok(event)) => {
                    writer.apply_watcher_event(&event);
                    if let watcher::Event::InitDone = event {
                        self.listed.send_replace(true);
                    }
                    // No subscriber (a standby, or a replica without a controller): dropped.
                    match &event {
                        watcher::Event::Apply(r) | watcher::Event::InitApply(r) => {
                            let _ = self.applied.send(ObjectRef::from_obj(r));
                        }
                        watcher::Event::Delete(r) => {
                            let _ = self.deleted.send(ObjectRef::from_obj(r));
                        }
                        _ => {}
                    }
                }
                Some(Err(e)) => {
                    warn!(error = %e, "watching WorkspaceRequirements failed; retrying")
                }
                None => return Err("the WorkspaceRequirements watch ended"),
            }
            self.changed.notify_one();
        }
    }

    /// The resources deleted from now on (a receiver that falls behind misses some).
    pub(crate) fn deleted(&self) -> broadcast::Receiver<ObjectRef<WorkspaceRequirements>> {
        self.deleted.subscribe()
    }

    /// The resources to reconcile: each one the store holds once its first listing is in, then
    /// each one the watch applies from now on. A subscriber that falls behind by more than
    /// [`SUBSCRIBER_BUFFER`] gets every resource of the store again.
    pub(crate) fn subscribe(
        &self,
    ) -> impl Stream<Item = Arc<WorkspaceRequirements>> + Send + 'static {
        struct State {
            resources: Resources,
            applied: broadcast::Receiver<ObjectRef<WorkspaceRequirements>>,
            queue: VecDeque<Arc<WorkspaceRequirements>>,
            from_store: bool,
        }
        // Subscribed before the store is read: an object applied in between comes twice, never
        // not at all.
        let state = State {
            resources: self.clone(),
            applied: self.applied.subscribe(),
            queue: VecDeque::new(),
            from_store: true,
        };
        futures::stream::unfold(state, |mut s| async move {
            loop {
                if s.from_store {
                    s.resources.listed().await;
                    s.queue.extend(s.resources.store.state());
                    s.from_store = false;
                }
                if let Some(r) = s.queue.pop_front() {
                    return Some((r, s));
                }
                match s.applied.recv().await {
                    Ok(oref) => s.queue.extend(s.resources.store.get(&oref)),
                    Err(RecvError::Lagged(_)) => s.from_store = true,
                    Err(RecvError::Closed) => return None,
                }
            }
        })
    }
}
