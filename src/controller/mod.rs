//! The controller: `WorkspaceRequirements` → validated content → Redis → ConfigMap → rollout.
//!
//! Each reconcile is idempotent and cheap when nothing changed: it validates `spec.content` with
//! the policy (invalid content never reaches Redis and never rolls anything), makes sure Redis
//! holds Bifrost's payload (rewriting it only when missing, different, or past half its TTL),
//! server-side-applies the ConfigMap snapshot the installer falls back to, and patches the
//! pod-template hash annotation of labelled Deployments/StatefulSets whose hash differs — which
//! is what makes Kubernetes roll them. A workload already carrying the hash is never touched, so
//! operator restarts and leader changes cause no rollouts.

pub mod mirror;
pub mod rollout;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, info, instrument, warn};

use crate::cache::{Cache, CacheConfig, Payload};
use crate::crd::{MANAGER, OPT_IN_LABEL, RedisCache, WorkspaceRequirements};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use status::{Conditions, now_rfc3339, truncate};

/// What the database mirror last saw for one resource (the reconciler owns the status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncState {
    Synced { at: String },
    Failed { reason: String, message: String },
}

/// Shared between the mirror (writer) and the reconciler (reader).
pub type SyncStates = Mutex<HashMap<ObjectRef<WorkspaceRequirements>, SyncState>>;

/// A content change waiting out its debounce window.
#[derive(Debug, Clone)]
struct Pending {
    hash: String,
    since: Instant,
}

/// Everything a reconcile needs.
pub struct Context {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub sync: Arc<SyncStates>,
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
    /// Metadata of pods labelled with the opt-in label (for `uninjectedPods`).
    pub pods: rollout::PodCache,
    caches: tokio::sync::Mutex<HashMap<String, Cache>>,
    pending: Mutex<HashMap<ObjectRef<WorkspaceRequirements>, Pending>>,
    /// Last Warning event per (resource, reason) so trouble is reported once, not every retry.
    warned: Mutex<HashMap<(ObjectRef<WorkspaceRequirements>, &'static str), String>>,
}

/// How often Redis is checked (and refreshed when needed) at the latest.
const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconcile step.
const RETRY: Duration = Duration::from_secs(5);

impl Context {
    async fn publish(
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
    async fn warn_once(
        &self,
        obj: &WorkspaceRequirements,
        reason: &'static str,
        note: String,
        action: &str,
    ) {
        let key = (ObjectRef::from_obj(obj), reason);
        let fresh = {
            let mut warned = self.warned.lock().expect("lock");
            warned.insert(key, note.clone()).as_deref() != Some(note.as_str())
        };
        if fresh {
            self.publish(obj, EventType::Warning, reason, note, action)
                .await;
        }
    }

    fn clear_warning(&self, obj: &WorkspaceRequirements, reason: &'static str) -> bool {
        let key = (ObjectRef::from_obj(obj), reason);
        self.warned.lock().expect("lock").remove(&key).is_some()
    }

    /// Whether the workload and pod caches have their first complete listing.
    fn caches_ready(&self) -> bool {
        use futures::FutureExt;
        let ready =
            |r: Option<Result<(), reflector::store::WriterDropped>>| matches!(r, Some(Ok(())));
        ready(self.deployments.wait_until_ready().now_or_never())
            && ready(self.statefulsets.wait_until_ready().now_or_never())
            && ready(self.pods.wait_until_ready().now_or_never())
    }

    /// Make this resource's Redis hold `payload`. Connections are reused across reconciles; one
    /// that fails is dropped (a multiplexed connection does not reconnect by itself), so the next
    /// attempt reconnects — other resources' connections are left alone.
    async fn warm(&self, ns: &str, redis: &RedisCache, payload: &Payload) -> Result<Warmed> {
        let url = secret_value(
            &self.client,
            ns,
            &redis.url_secret_ref.name,
            &redis.url_secret_ref.key,
        )
        .await?;
        let id = format!("{url}\u{0}{}\u{0}{}", redis.key, redis.ttl_seconds);
        let cached = self.caches.lock().await.get(&id).cloned();
        let cache = match cached {
            Some(c) => c,
            None => {
                let c = Cache::connect(CacheConfig {
                    key: redis.key.clone(),
                    ttl: Duration::from_secs(redis.ttl_seconds),
                    connect_timeout: Duration::from_secs(2),
                    command_timeout: Duration::from_secs(2),
                    attempts: 1,
                    ..CacheConfig::new(url)
                })
                .await?;
                self.caches.lock().await.insert(id.clone(), c.clone());
                c
            }
        };
        let result = warm(&cache, payload).await;
        if result.is_err() {
            self.caches.lock().await.remove(&id);
        }
        result
    }
}

/// Read one key of a Secret; errors name the Secret and key.
pub async fn secret_value(client: &Client, ns: &str, name: &str, key: &str) -> Result<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("reading Secret {ns}/{name}"), e))?
        .ok_or_else(|| Error::Config(format!("Secret {ns}/{name} does not exist")))?;
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
        .ok_or_else(|| Error::Config(format!("Secret {ns}/{name} has no key {key:?}")))?;
    let value = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("Secret {ns}/{name} key {key:?} is not UTF-8")))?;
    Ok(value.trim().to_string())
}

/// What Redis ended up holding after [`warm`].
enum Warmed {
    Written,
    AlreadyFresh,
}

/// Make Redis hold the payload: write when missing, different, corrupt, or past half its TTL.
async fn warm(cache: &Cache, payload: &Payload) -> Result<Warmed> {
    let ttl = cache.config().ttl.as_secs();
    let current = match cache.get().await {
        Ok(v) => v,
        Err(Error::CachePayload { .. }) => None, // corrupt: overwrite with a good value
        Err(e) => return Err(e),
    };
    if current.as_ref().is_some_and(|c| c.hash == payload.hash) {
        let remaining = cache.ttl().await?.unwrap_or(0);
        if remaining > ttl / 2 {
            return Ok(Warmed::AlreadyFresh);
        }
    }
    cache.put_payload(payload).await?;
    Ok(Warmed::Written)
}

/// The owned ConfigMap snapshot: the installer's fallback when Redis is unreachable.
async fn apply_snapshot(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
) -> Result<()> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.snapshot_name();
    let owner = obj.controller_owner_ref(&()).ok_or_else(|| {
        Error::Config("the resource has no uid yet; cannot own its ConfigMap".into())
    })?;
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGER,
                OPT_IN_LABEL: obj.name_any(),
            },
            "ownerReferences": [owner],
        },
        "data": {
            "requirements.txt": payload.content,
            "hash": payload.hash,
            "payload.json": payload.to_json(),
        }
    });
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
        .map_err(|e| Error::kube(format!("applying ConfigMap {ns}/{name}"), e))?;
    Ok(())
}

/// Reconcile one resource.
#[instrument(skip(obj, ctx), fields(namespace = obj.namespace().unwrap_or_default(), name = obj.name_any()))]
pub async fn reconcile(obj: Arc<WorkspaceRequirements>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&obj, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::reason));
    result
}

async fn reconcile_inner(obj: &WorkspaceRequirements, ctx: &Context) -> Result<Action> {
    // Status is computed from the workload and pod caches: until their first listing is in,
    // it would flap (workloads missing, counts unknown) — a spurious write after every restart.
    if !ctx.caches_ready() {
        return Ok(Action::requeue(Duration::from_millis(300)));
    }
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let oref = ObjectRef::from_obj(obj);
    let old_status = obj.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    let mut conditions = Conditions::new(
        std::mem::take(&mut status.conditions),
        obj.metadata.generation,
    );
    let payload = Payload::new(obj.spec.content.clone());
    status.observed_generation = obj.metadata.generation;
    status.content_hash = Some(payload.hash.clone());
    status.short_hash = Some(payload.hash[..12].to_string());
    let mut requeue = REFRESH_INTERVAL;

    // Synced: what the database mirror last saw (it never writes status itself).
    if obj
        .spec
        .source
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .is_some()
    {
        let state = ctx.sync.lock().expect("lock").get(&oref).cloned();
        match state {
            Some(SyncState::Synced { at }) => {
                status.last_synced_from_database = Some(at);
                conditions.set(
                    "Synced",
                    true,
                    "DatabaseRowMirrored",
                    "spec.content mirrors the database row",
                );
                ctx.clear_warning(obj, "DatabaseUnavailable");
            }
            Some(SyncState::Failed { reason, message }) => {
                conditions.set(
                    "Synced",
                    false,
                    &reason,
                    &format!("{message}; keeping the last known content"),
                );
                ctx.warn_once(obj, "DatabaseUnavailable", message, "SyncFromDatabase")
                    .await;
                requeue = requeue.min(RETRY);
            }
            None => {
                conditions.set_unknown(
                    "Synced",
                    "Pending",
                    "waiting for the first read of the database row",
                );
                requeue = requeue.min(RETRY);
            }
        }
    } else {
        conditions.set(
            "Synced",
            true,
            "SpecIsSource",
            "spec.content is the source (no database configured)",
        );
    }

    // A mirrored resource whose row was never read yet has no content of its own: writing its
    // empty spec to Redis would wipe Bifrost's cache, so wait for the first sync.
    let mirrored = obj
        .spec
        .source
        .as_ref()
        .and_then(|s| s.database.as_ref())
        .is_some();
    if mirrored && status.last_synced_from_database.is_none() {
        let why = "waiting for the first read of the database row";
        conditions.set_unknown("Valid", "WaitingForDatabase", why);
        conditions.set_unknown("CacheWarmed", "WaitingForDatabase", why);
        conditions.set_unknown("RolledOut", "WaitingForDatabase", why);
        let message = conditions.first_problem(&["Synced"]);
        conditions.set("Ready", false, "WaitingForDatabase", &message);
        status.package_count = None;
        status.conditions = conditions.into_vec();
        patch_status(ctx, obj, &old_status, &status).await?;
        return Ok(Action::requeue(RETRY));
    }

    // Valid: invalid content stops here — no Redis write, no snapshot, no rollout.
    match obj.policy().check_content(&obj.spec.content) {
        Err(violations) => {
            let message = violations.to_string();
            status.package_count = None;
            conditions.set("Valid", false, "InvalidRequirements", &message);
            conditions.set_unknown(
                "CacheWarmed",
                "InvalidRequirements",
                "not written: content is invalid",
            );
            conditions.set_unknown(
                "RolledOut",
                "InvalidRequirements",
                "no rollout: content is invalid",
            );
            conditions.set("Ready", false, "InvalidRequirements", &message);
            ctx.warn_once(obj, "InvalidRequirements", message, "Validate")
                .await;
            status.conditions = conditions.into_vec();
            patch_status(ctx, obj, &old_status, &status).await?;
            return Ok(Action::await_change());
        }
        Ok(accepted) => {
            status.package_count = Some(accepted.package_count as i64);
            conditions.set(
                "Valid",
                true,
                "RequirementsValid",
                &format!("{} package(s)", accepted.package_count),
            );
            ctx.clear_warning(obj, "InvalidRequirements");
        }
    }

    // CacheWarmed: a failure is reported and retried, but does not stop the rollout — the
    // installer falls back to the ConfigMap snapshot.
    match obj.spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        Some(redis) => {
            match ctx.warm(&ns, redis, &payload).await {
                Ok(w) => {
                    if matches!(w, Warmed::Written) {
                        status.cache_warmed_at = Some(now_rfc3339());
                        ctx.metrics.redis_warm(true);
                        info!(key = %redis.key, hash = %payload.hash, "Redis warmed");
                        ctx.publish(
                            obj,
                            EventType::Normal,
                            "CacheWarmed",
                            format!(
                                "Redis key {} holds sha256 {}",
                                redis.key,
                                &payload.hash[..12]
                            ),
                            "WarmCache",
                        )
                        .await;
                    }
                    ctx.clear_warning(obj, "RedisUnavailable");
                    let ttl = redis.ttl_seconds;
                    conditions.set(
                        "CacheWarmed",
                        true,
                        "RedisWarmed",
                        &format!("Redis key {} holds the content (TTL {ttl} s, refreshed before half of it)", redis.key),
                    );
                    requeue = requeue.min(Duration::from_secs((ttl / 4).max(30)));
                }
                Err(e) => {
                    ctx.metrics.redis_warm(false);
                    let message = e.to_string();
                    warn!(error = %message, "Redis warm failed");
                    conditions.set("CacheWarmed", false, e.reason(), &message);
                    ctx.warn_once(obj, "RedisUnavailable", message, "WarmCache")
                        .await;
                    requeue = requeue.min(RETRY);
                }
            }
        }
        None => conditions.set(
            "CacheWarmed",
            true,
            "NotConfigured",
            "no Redis cache configured",
        ),
    }

    apply_snapshot(ctx, obj, &payload).await?;

    // RolledOut.
    let outcome = rollout::roll(ctx, obj, &payload.hash).await?;
    if let Some(after) = outcome.requeue_after {
        requeue = requeue.min(after);
    }
    status.workloads = outcome.workloads;
    status.rolled_out_hash = outcome
        .all_up_to_date
        .then(|| payload.hash.clone())
        .or(old_status.rolled_out_hash.clone());
    conditions.set(
        "RolledOut",
        outcome.all_up_to_date,
        outcome.reason,
        &outcome.message,
    );

    let ready = conditions.all_true(&["Valid", "Synced", "CacheWarmed", "RolledOut"]);
    let (reason, message) = if ready {
        ("Ready", "content valid, cached and rolled out".to_string())
    } else {
        (
            "NotReady",
            conditions.first_problem(&["Synced", "CacheWarmed", "RolledOut"]),
        )
    };
    conditions.set("Ready", ready, reason, &message);
    status.conditions = conditions.into_vec();
    patch_status(ctx, obj, &old_status, &status).await?;
    info!(hash = %&payload.hash[..12], ready, requeue_s = requeue.as_secs(), "reconciled {ns}/{name}");
    Ok(Action::requeue(requeue))
}

async fn patch_status(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    old: &crate::crd::WorkspaceRequirementsStatus,
    new: &crate::crd::WorkspaceRequirementsStatus,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let ns = obj.namespace().unwrap_or_default();
    let api = Api::<WorkspaceRequirements>::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &obj.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": new })),
    )
    .await
    .map_err(|e| Error::kube("patching status", e))?;
    Ok(())
}

/// On error: log, count, and retry with a short delay.
pub fn error_policy(obj: Arc<WorkspaceRequirements>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(name = %obj.name_any(), error = %error, "reconcile failed");
    Action::requeue(RETRY)
}

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

/// Map a labelled workload to the resource its pod template names.
fn template_owner<K>(
    obj: &K,
    labels: Option<&BTreeMap<String, String>>,
) -> Option<ObjectRef<WorkspaceRequirements>>
where
    K: ResourceExt,
{
    let name = labels?.get(OPT_IN_LABEL)?;
    Some(ObjectRef::new(name).within(&obj.namespace()?))
}

/// A reflector cache of `K` and the stream that feeds it (the controller polls the stream).
/// Only template labels and annotations are read, so managedFields are dropped to keep it small.
fn cached<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
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
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default()).modify(|o: &mut K| o.managed_fields_mut().clear()),
    )
    .applied_objects();
    (store, stream)
}

/// Run the controller (and the database mirror) until `shutdown` resolves.
pub async fn run(
    client: Client,
    scope: Scope,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let resources = scope.api::<WorkspaceRequirements>(&client);
    // Only template labels/annotations are read: drop managedFields to keep the caches small.
    let (deployments, deploy_stream) = cached(scope.api::<Deployment>(&client));
    let (statefulsets, sts_stream) = cached(scope.api::<StatefulSet>(&client));
    let (pods, pod_stream) = rollout::pod_cache(&client, &scope);
    let sync: Arc<SyncStates> = Arc::default();
    let (trigger_tx, trigger_rx) =
        futures::channel::mpsc::unbounded::<ObjectRef<WorkspaceRequirements>>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        sync: sync.clone(),
        deployments: deployments.clone(),
        statefulsets: statefulsets.clone(),
        pods,
        caches: Default::default(),
        pending: Default::default(),
        warned: Default::default(),
    });

    // The resource cache drops managedFields too (a third of each object's size).
    let (store, writer) = reflector::store();
    let resource_stream = reflector::reflector(
        writer,
        watcher(resources, watcher::Config::default().any_semantic())
            .default_backoff()
            .modify(|r: &mut WorkspaceRequirements| r.managed_fields_mut().clear()),
    )
    .applied_objects();
    let controller = Controller::for_stream(resource_stream, store.clone())
        .owns(
            scope.api::<ConfigMap>(&client),
            watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}")),
        )
        .watches_stream(deploy_stream, |d: Deployment| {
            template_owner(
                &d,
                d.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            )
        })
        .watches_stream(sts_stream, |s: StatefulSet| {
            template_owner(
                &s,
                s.spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.labels.as_ref()),
            )
        })
        .watches_stream(pod_stream, rollout::pod_owner)
        .reconcile_on(trigger_rx);
    let mirror = tokio::spawn(
        mirror::run(client.clone(), store, sync, metrics.clone(), trigger_tx)
            .instrument(tracing::info_span!("mirror")),
    );
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
    mirror.abort();
    info!("controller stopped");
}
