//! What every reconcile shares: the API client, the caches it reads, the Warnings it has said
//! once, and a place for each step's own memory ([`Context::memory`]) that this module never
//! looks into: no step's type is named here.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures::FutureExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::{Client, Resource};
use serde_json::json;
use tracing::warn;

use crate::crd::{MANAGER, WorkspaceRequirements};
use crate::error::{Error, Result};
use crate::lock::Resolver;
use crate::metrics::Metrics;
use crate::shutdown::Stop;
use crate::text::truncate;

/// What the source mirror last saw for one resource (the reconciler owns the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    /// `note`: something the status should say although the sync works (e.g. no NOTIFY trigger).
    Synced {
        at: String,
        note: Option<String>,
    },
    Failed {
        reason: String,
        message: String,
    },
}

/// Shared between the mirror (writer) and the reconciler (reader).
pub(crate) type SyncStates = Mutex<HashMap<ObjectRef<WorkspaceRequirements>, SyncState>>;

/// The pods carrying the opt-in label, slimmed by `progress::slim` (see `rollout::pod_cache`).
pub(crate) type PodCache = Store<Pod>;

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub sync: Arc<SyncStates>,
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    /// Metadata of pods labelled with the opt-in label (for `uninjectedPods`).
    pub pods: PodCache,
    /// Last Warning event per (resource, reason) so trouble is reported once, not every retry.
    warned: Mutex<HashMap<(ObjectRef<WorkspaceRequirements>, &'static str), String>>,
    /// How locks are resolved; `None`: this operator resolves nothing (pods do).
    pub resolver: Option<Resolver>,
    /// The operator's stop: ends a running resolution.
    pub(super) stop: Option<Stop>,
    /// Each step's memory across reconciles, by its type.
    memories: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl Context {
    /// Set pod-template annotations of a workload (a change of the template rolls it out).
    pub(super) async fn annotate_template(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        annotations: &[(&str, &str)],
    ) -> Result<(), kube::Error> {
        let annotations: serde_json::Map<String, serde_json::Value> = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let patch = json!({"spec": {"template": {"metadata": {"annotations": annotations}}}});
        let params = PatchParams {
            field_manager: Some(MANAGER.to_string()),
            ..PatchParams::default()
        };
        match kind {
            "Deployment" => {
                Api::<Deployment>::namespaced(self.client.clone(), ns)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await?;
            }
            _ => {
                Api::<StatefulSet>::namespaced(self.client.clone(), ns)
                    .patch(name, &params, &Patch::Merge(&patch))
                    .await?;
            }
        }
        Ok(())
    }

    /// A context with empty bookkeeping, reading the given caches.
    pub(super) fn new(
        client: Client,
        metrics: Arc<Metrics>,
        recorder: Recorder,
        sync: Arc<SyncStates>,
        deployments: Store<Deployment>,
        statefulsets: Store<StatefulSet>,
        pods: PodCache,
    ) -> Self {
        Self {
            client,
            metrics,
            recorder,
            sync,
            deployments,
            statefulsets,
            pods,
            warned: Default::default(),
            resolver: None,
            stop: None,
            memories: Default::default(),
        }
    }

    /// The same context resolving locks with `resolver` (`stop` ends a running resolution).
    pub(super) fn resolving_with(mut self, resolver: Option<Resolver>, stop: Stop) -> Self {
        self.resolver = resolver;
        self.stop = Some(stop);
        self
    }

    /// The memory of type `T` a step keeps across reconciles (its debounce windows, the
    /// interpreters it probed…), made empty on first use. The step owns the type; the context
    /// only keeps it alive, so it never imports a step.
    pub(super) fn memory<T: Default + Send + Sync + 'static>(&self) -> Arc<T> {
        let mut memories = self.memories.lock().unwrap_or_else(PoisonError::into_inner);
        let memory = memories
            .entry(TypeId::of::<T>())
            .or_insert_with(|| Arc::new(T::default()))
            .clone();
        memory
            .downcast::<T>()
            .unwrap_or_else(|_| unreachable!("memories are kept under their own TypeId"))
    }

    pub(super) async fn publish(
        &self,
        obj: &WorkspaceRequirements,
        type_: EventType,
        reason: &str,
        note: String,
        action: &str,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(truncate(&crate::redact::text(&note), 1000)),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// Publish a Warning once per distinct message; cleared by [`Context::clear_warning`].
    pub(super) async fn warn_once(
        &self,
        obj: &WorkspaceRequirements,
        reason: &'static str,
        note: String,
        action: &str,
    ) {
        self.warn_once_per(obj, reason, note.clone(), note, action)
            .await;
    }

    /// Publish a Warning once per distinct `key` (e.g. a content hash, when the note names
    /// things that change while the cause does not).
    ///
    /// kube's `Recorder` folds Events of one (reason, action, object) into a series that keeps
    /// its first note: each key gets an action of its own (`<action>-<8 hex of its digest>`),
    /// so a new problem's Event carries its own note, and only repeats of one fold.
    pub(super) async fn warn_once_per(
        &self,
        obj: &WorkspaceRequirements,
        reason: &'static str,
        key: String,
        note: String,
        action: &str,
    ) {
        let id = (ObjectRef::from_obj(obj), reason);
        let fresh = {
            let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
            warned.insert(id, key.clone()).as_deref() != Some(key.as_str())
        };
        if fresh {
            let action = format!("{action}-{}", &crate::requirements::content_hash(&key)[..8]);
            self.publish(obj, EventType::Warning, reason, note, &action)
                .await;
        }
    }

    pub(super) fn clear_warning(&self, obj: &WorkspaceRequirements, reason: &'static str) -> bool {
        let key = (ObjectRef::from_obj(obj), reason);
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
            .is_some()
    }

    /// Whether the workload and pod caches have their first complete listing.
    pub(super) fn caches_ready(&self) -> bool {
        let ready =
            |r: Option<Result<(), reflector::store::WriterDropped>>| matches!(r, Some(Ok(())));
        ready(self.deployments.wait_until_ready().now_or_never())
            && ready(self.statefulsets.wait_until_ready().now_or_never())
            && ready(self.pods.wait_until_ready().now_or_never())
    }
}

/// Read one key of a Secret; errors name the Secret and key.
pub(crate) async fn secret_value(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {ns}/{name}"), e))?
        .ok_or_else(|| Error::SecretMissing {
            secret: format!("{ns}/{name}"),
            key: None,
        })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| Error::SecretMissing {
            secret: format!("{ns}/{name}"),
            key: Some(key.into()),
        })?;
    let value = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("Secret {ns}/{name} key {key:?} is not UTF-8")))?;
    Ok(value.trim().to_string())
}
