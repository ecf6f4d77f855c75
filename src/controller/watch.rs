//! How the operator watches the cluster: one [`Scope`] of namespaces and one way to build a
//! reflector cache that keeps only what is read.

use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::info;

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

/// The one way the controller watches a kind: a reflector cache of `K` and the stream of watch
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
    info!(kind = %K::kind(&()), "watching");
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff().modify(slim));
    (store, stream)
}

pub(crate) fn without_managed_fields<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
}
