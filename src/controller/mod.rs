//! The controller: `WorkspaceRequirements` → validated content → Redis → ConfigMap → rollout.
//!
//! Each reconcile is idempotent and cheap when nothing changed: it validates `spec.content` with
//! the policy (invalid content never reaches Redis and never rolls anything), makes sure Redis
//! holds Bifrost's payload (rewriting it only when missing, different, or past half its TTL),
//! server-side-applies the ConfigMap snapshot the installer falls back to, and patches the
//! pod-template hash annotation of labelled Deployments/StatefulSets whose hash differs — which
//! is what makes Kubernetes roll them. A workload already carrying the hash is never touched, so
//! operator restarts and leader changes cause no rollouts.

pub mod coverage;
pub mod mirror;
pub mod progress;
pub mod rollout;
pub mod status;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
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
use crate::supervise::{Backoff, OnExit, Supervisor};
use status::{Conditions, now_rfc3339, truncate};

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
    /// Redis keys the cache watchdog checks between reconciles (see [`watch_caches`]).
    watched: Mutex<HashMap<ObjectRef<WorkspaceRequirements>, Watched>>,
    /// Since when each (namespace, name) StatefulSet has been missing pods (see `rollout`).
    stalled: Mutex<HashMap<(String, String), Instant>>,
}

/// A warmed Redis key: its connection and configured TTL.
struct Watched {
    cache: Cache,
    ttl: u64,
}

/// How often Redis is checked (and refreshed when needed) at the latest.
const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconcile step.
const RETRY: Duration = Duration::from_secs(5);
/// How often the watchdog checks that each warmed Redis key still exists (one `TTL` command:
/// a flushed or restarted Redis is re-warmed within this period, not at the next refresh).
const CACHE_CHECK_INTERVAL: Duration = Duration::from_secs(10);

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
        self.warn_once_per(obj, reason, note.clone(), note, action)
            .await;
    }

    /// Publish a Warning once per distinct `key` (e.g. a content hash, when the note names
    /// things that change while the cause does not).
    async fn warn_once_per(
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
            self.publish(obj, EventType::Warning, reason, note, action)
                .await;
        }
    }

    fn clear_warning(&self, obj: &WorkspaceRequirements, reason: &'static str) -> bool {
        let key = (ObjectRef::from_obj(obj), reason);
        self.warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key)
            .is_some()
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

    /// Make this resource's Redis hold `payload`; returns the connection for the watchdog.
    /// Connections are reused across reconciles; one that fails is dropped and replaced at once
    /// (a multiplexed connection does not reconnect by itself) — other resources' connections
    /// are left alone.
    async fn warm(
        &self,
        ns: &str,
        redis: &RedisCache,
        payload: &Payload,
    ) -> Result<(Warmed, Cache)> {
        let url = secret_value(
            &self.client,
            ns,
            &redis.url_secret_ref.name,
            &redis.url_secret_ref.key,
        )
        .await?;
        let id = format!("{url}\u{0}{}\u{0}{}", redis.key, redis.ttl_seconds);
        let cached = self.caches.lock().await.get(&id).cloned();
        if let Some(cache) = cached {
            match warm(&cache, payload).await {
                Ok(w) => return Ok((w, cache)),
                // A restarted Redis leaves the multiplexed connection dead: reconnect once
                // before reporting a failure.
                Err(e) => {
                    self.caches.lock().await.remove(&id);
                    tracing::debug!(error = %e, "cached Redis connection failed; reconnecting");
                }
            }
        }
        let cache = Cache::connect(CacheConfig {
            key: redis.key.clone(),
            ttl: Duration::from_secs(redis.ttl_seconds),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(2),
            attempts: 1,
            ..CacheConfig::new(url)
        })
        .await?;
        let warmed = warm(&cache, payload).await?;
        self.caches.lock().await.insert(id, cache.clone());
        Ok((warmed, cache))
    }

    /// Stop watching this resource's Redis key (it is no longer warmed from this resource).
    fn unwatch(&self, oref: &ObjectRef<WorkspaceRequirements>) {
        self.watched.lock().expect("lock").remove(oref);
    }
}

/// Read one key of a Secret; errors name the Secret and key.
pub async fn secret_value(client: &Client, ns: &str, name: &str, key: &str) -> Result<String> {
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

/// What Redis ended up holding after [`warm`]; `Written` says what the key held before.
enum Warmed {
    Written(&'static str),
    AlreadyFresh,
}

/// Make Redis hold the payload: write when missing, different, corrupt, or past half its TTL.
async fn warm(cache: &Cache, payload: &Payload) -> Result<Warmed> {
    let ttl = cache.config().ttl.as_secs();
    let before = match cache.get().await {
        Ok(None) => "nothing (the key was missing)",
        Ok(Some(c)) if c.hash != payload.hash => "another hash",
        Ok(Some(_)) => {
            let remaining = cache.ttl().await?.unwrap_or(0);
            if remaining > ttl / 2 {
                return Ok(Warmed::AlreadyFresh);
            }
            "this content, with less than half its TTL left"
        }
        Err(Error::CachePayload { .. }) => "an unusable value", // overwrite with a good one
        Err(e) => return Err(e),
    };
    cache.put_payload(payload).await?;
    Ok(Warmed::Written(before))
}

/// The owned ConfigMap snapshot: the installer's fallback when Redis is unreachable. The error
/// is what the status says: the ConfigMap and the API server's own message.
async fn apply_snapshot(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
) -> Result<(), String> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.snapshot_name();
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| "the resource has no uid yet; cannot own its ConfigMap".to_string())?;
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
        .map_err(|e| {
            let why = match e {
                kube::Error::Api(status) => status.message.clone(),
                other => other.to_string(),
            };
            format!("cannot write ConfigMap {ns}/{name}: {why}")
        })?;
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

/// How long a resource whose reconcile panicked waits before the next attempt (a change to it
/// triggers one at once): a panic on its content is deterministic, retrying fast only spams.
const PANIC_RETRY: Duration = Duration::from_secs(60);

/// Run `reconcile`, turning a panic into that resource's failure: kube's controller polls every
/// reconcile inside its own stream, so an uncaught panic would end the stream — and with it the
/// reconciliation of every resource.
async fn guarded<R, Fut>(
    reconcile: R,
    obj: Arc<WorkspaceRequirements>,
    ctx: Arc<Context>,
) -> Result<Action>
where
    R: Fn(Arc<WorkspaceRequirements>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action>>,
{
    let started = Instant::now();
    let panic = match AssertUnwindSafe(reconcile(obj.clone(), ctx.clone()))
        .catch_unwind()
        .await
    {
        Ok(result) => {
            ctx.clear_warning(&obj, "ReconcilePanicked");
            return result;
        }
        Err(panic) => crate::supervise::panic_message(panic.as_ref()),
    };
    ctx.metrics
        .reconciled(started.elapsed(), Some("ReconcilePanicked"));
    tracing::error!(name = %obj.name_any(), panic = %panic, "reconcile panicked");
    let message = format!("the reconcile panicked (a bug; please report it): {panic}");
    let old = obj.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut conditions = Conditions::new(
        std::mem::take(&mut status.conditions),
        obj.metadata.generation,
    );
    conditions.set("Ready", false, "ReconcilePanicked", &message);
    status.conditions = conditions.into_vec();
    ctx.warn_once(&obj, "ReconcilePanicked", message, "Reconcile")
        .await;
    if let Err(e) = patch_status(&ctx, &obj, &old, &status).await {
        warn!(error = %e, "cannot record the panic in the status");
    }
    Ok(Action::requeue(PANIC_RETRY))
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

    // Synced: what the source mirror last saw (it never writes status itself).
    check_synced(ctx, obj, &oref, &mut conditions, &mut status, &mut requeue).await;
    // A mirrored resource whose source was never read yet has no content of its own: writing
    // its empty spec to Redis would wipe Bifrost's cache, so wait for the first sync. (A status
    // written before `lastSynced` existed has only the database's field.)
    let source = obj.spec.source.as_ref();
    let s3 = source.and_then(|s| s.s3.as_ref()).is_some();
    let mirrored = source.is_some_and(|s| s.database.is_some() || s.s3.is_some());
    let synced_once =
        status.last_synced.is_some() || (!s3 && status.last_synced_from_database.is_some());
    if mirrored && !synced_once {
        let SourceNames {
            waiting_reason,
            waiting: why,
            ..
        } = SourceNames::of(s3);
        conditions.set_unknown("Valid", waiting_reason, why);
        conditions.set_unknown("CacheWarmed", waiting_reason, why);
        conditions.set_unknown("RolledOut", waiting_reason, why);
        let message = conditions.first_problem(&["Synced"]);
        conditions.set("Ready", false, "WaitingForDatabase", &message);
        status.package_count = None;
        status.conditions = conditions.into_vec();
        patch_status(ctx, obj, &old_status, &status).await?;
        return Ok(Action::requeue(RETRY));
    }

    // Valid (spec): a field the API server, the installer or Redis would refuse, no content at
    // all, or content too large for the ConfigMap stops here — nothing is written, nothing
    // rolled, and the webhook injects nothing from this spec (so labelled pods still start).
    if let Err(problems) = crate::spec::validate(obj) {
        let reason = problems.reason().as_str();
        let message = problems.to_string();
        status.package_count = None;
        conditions.set("Valid", false, reason, &message);
        let not_written = format!("not written: {reason} (see Valid)");
        conditions.set_unknown("CacheWarmed", reason, &not_written);
        conditions.set_unknown("Snapshotted", reason, &not_written);
        conditions.set_unknown("RolledOut", reason, "no rollout: the spec is invalid");
        conditions.set("Ready", false, reason, &format!("Valid: {message}"));
        ctx.unwatch(&oref);
        status.workloads = rollout::observe(ctx, obj, &payload.hash).await.workloads;
        ctx.warn_once(obj, reason, message, "Validate").await;
        status.conditions = conditions.into_vec();
        patch_status(ctx, obj, &old_status, &status).await?;
        return Ok(Action::await_change());
    }
    for reason in ["NoContent", "TooLarge", "InvalidSpec"] {
        ctx.clear_warning(obj, reason);
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
            ctx.unwatch(&oref);
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
    check_cache(
        ctx,
        obj,
        &payload,
        &mut conditions,
        &mut status,
        &mut requeue,
    )
    .await;
    // Snapshotted: the installer's fallback. A refused write is reported (with the API server's
    // message) and retried, and nothing rolls until it is in place.
    match apply_snapshot(ctx, obj, &payload).await {
        Ok(()) => {
            conditions.set(
                "Snapshotted",
                true,
                "SnapshotApplied",
                &format!(
                    "ConfigMap {} holds sha256 {}",
                    obj.snapshot_name(),
                    &payload.hash[..12]
                ),
            );
            ctx.clear_warning(obj, "SnapshotFailed");
        }
        Err(message) => {
            warn!(error = %message, "snapshot write failed");
            conditions.set("Snapshotted", false, "SnapshotFailed", &message);
            conditions.set(
                "RolledOut",
                false,
                "SnapshotFailed",
                "no rollout until the ConfigMap snapshot (the installer's fallback) is written",
            );
            conditions.set(
                "Ready",
                false,
                "SnapshotFailed",
                &format!("Snapshotted: {message}"),
            );
            status.workloads = rollout::observe(ctx, obj, &payload.hash).await.workloads;
            ctx.warn_once(obj, "SnapshotFailed", message, "Snapshot")
                .await;
            status.conditions = conditions.into_vec();
            patch_status(ctx, obj, &old_status, &status).await?;
            return Ok(Action::requeue(RETRY));
        }
    }

    // RolledOut: the templates carry the hash and the pods run it (or why not).
    let outcome = rollout::roll(ctx, obj, &payload.hash).await?;
    for after in [outcome.requeue_after, outcome.recheck]
        .into_iter()
        .flatten()
    {
        requeue = requeue.min(after);
    }
    status.rolled_out_hash = outcome
        .all_up_to_date
        .then(|| payload.hash.clone())
        .or(old_status.rolled_out_hash.clone());
    record_rollout(
        ctx,
        obj,
        &payload.hash,
        outcome,
        &mut conditions,
        &mut status,
    )
    .await;

    let rolled_out =
        conditions.all_true(&["Valid", "Synced", "CacheWarmed", "Snapshotted", "RolledOut"]);
    let failed = packages_failed(&status.workloads);
    if let Some(message) = &failed {
        // Once per hash: every new pod of the hash reports the same packages.
        ctx.warn_once_per(
            obj,
            "PackagesFailed",
            payload.hash.clone(),
            message.clone(),
            "Install",
        )
        .await;
    }
    let ready = rolled_out && failed.is_none();
    let checked = ["Synced", "CacheWarmed", "Snapshotted", "RolledOut"];
    let (reason, message) = if ready {
        (
            "Ready".to_string(),
            "content valid, cached and rolled out".to_string(),
        )
    } else if let (true, Some(message)) = (rolled_out, failed) {
        ("PackagesFailed".to_string(), message)
    } else {
        // The first problem's own reason (e.g. InstallFailing), so `kubectl get` and alerts
        // on Ready's reason say what is wrong without reading the other conditions.
        (
            conditions.first_problem_reason(&checked),
            conditions.first_problem(&checked),
        )
    };
    conditions.set("Ready", ready, &reason, &message);
    status.conditions = conditions.into_vec();
    patch_status(ctx, obj, &old_status, &status).await?;
    info!(hash = %&payload.hash[..12], ready, requeue_s = requeue.as_secs(), "reconciled {ns}/{name}");
    Ok(Action::requeue(requeue))
}

/// "the workers run without …" naming each workload's failed packages, when any failed.
fn packages_failed(workloads: &[crate::crd::WorkloadStatus]) -> Option<String> {
    let each: Vec<String> = workloads
        .iter()
        .filter_map(|w| {
            let failed = w.failed_packages.as_ref()?;
            Some(format!("{}/{}: {}", w.kind, w.name, failed.join(", ")))
        })
        .collect();
    (!each.is_empty()).then(|| {
        format!(
            "rolled out, but packages failed to install and the workers run without them: {}",
            each.join("; ")
        )
    })
}

/// The RolledOut condition and its Warnings from what [`rollout::roll`] found.
async fn record_rollout(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    hash: &str,
    outcome: rollout::Outcome,
    conditions: &mut Conditions,
    status: &mut crate::crd::WorkspaceRequirementsStatus,
) {
    status.workloads = outcome.workloads;
    if outcome.creation_failures.is_empty() {
        conditions.set(
            "RolledOut",
            outcome.all_up_to_date,
            outcome.reason,
            &outcome.message,
        );
        ctx.clear_warning(obj, "PodCreationFailed");
        // Once per hash: the failing pod is re-created under new names while the cause stays.
        // Not cleared when the pods recover, so a flapping install does not repeat it.
        if outcome.reason == "InstallFailing" {
            ctx.warn_once_per(
                obj,
                "InstallFailing",
                hash.to_string(),
                outcome.message.clone(),
                "Rollout",
            )
            .await;
        }
    } else {
        // The API server refuses the pods of a labelled workload: nothing runs the packages.
        let message = format!(
            "pods cannot be created: {}",
            outcome.creation_failures.join("; ")
        );
        conditions.set("RolledOut", false, "PodCreationFailed", &message);
        ctx.warn_once(obj, "PodCreationFailed", message, "Rollout")
            .await;
    }
}

/// Synced: what the database mirror last saw (it never writes status itself).
async fn check_synced(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    oref: &ObjectRef<WorkspaceRequirements>,
    conditions: &mut Conditions,
    status: &mut crate::crd::WorkspaceRequirementsStatus,
    requeue: &mut Duration,
) {
    let source = obj.spec.source.as_ref();
    let s3 = source.and_then(|s| s.s3.as_ref()).is_some();
    if !source.is_some_and(|s| s.database.is_some() || s.s3.is_some()) {
        conditions.set(
            "Synced",
            true,
            "SpecIsSource",
            "spec.content is the source (no database or S3 source configured)",
        );
        return;
    }
    let names = SourceNames::of(s3);
    let state = ctx
        .sync
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(oref)
        .cloned();
    match state {
        Some(SyncState::Synced { at, note }) => {
            if !s3 {
                status.last_synced_from_database = Some(at.clone());
            }
            status.last_synced = Some(at);
            let message = match &note {
                Some(n) => format!("{}; {n}", names.mirrored_message),
                None => names.mirrored_message.to_string(),
            };
            conditions.set("Synced", true, names.mirrored_reason, &message);
            ctx.clear_warning(obj, names.unreachable);
            match note {
                Some(n) => {
                    ctx.warn_once(obj, "NotifyTriggerMissing", n, names.action)
                        .await
                }
                None => {
                    ctx.clear_warning(obj, "NotifyTriggerMissing");
                }
            }
        }
        Some(SyncState::Failed { reason, message }) => {
            conditions.set(
                "Synced",
                false,
                &reason,
                &format!("{message}; keeping the last known content"),
            );
            ctx.warn_once(obj, names.unreachable, message, names.action)
                .await;
            *requeue = (*requeue).min(RETRY);
        }
        None => {
            conditions.set_unknown("Synced", "Pending", names.waiting);
            *requeue = (*requeue).min(RETRY);
        }
    }
}

/// What the status says about each source: the reason of Synced=True, the Warning Event, what
/// is being waited for.
struct SourceNames {
    mirrored_reason: &'static str,
    mirrored_message: &'static str,
    unreachable: &'static str,
    action: &'static str,
    waiting_reason: &'static str,
    waiting: &'static str,
}

impl SourceNames {
    fn of(s3: bool) -> Self {
        if s3 {
            Self {
                mirrored_reason: "S3ObjectMirrored",
                mirrored_message: "spec.content mirrors the S3 object",
                unreachable: "S3Unreachable",
                action: "SyncFromS3",
                waiting_reason: "WaitingForS3",
                waiting: "waiting for the first read of the S3 object",
            }
        } else {
            Self {
                mirrored_reason: "DatabaseRowMirrored",
                mirrored_message: "spec.content mirrors the database row",
                unreachable: "DatabaseUnreachable",
                action: "SyncFromDatabase",
                waiting_reason: "WaitingForDatabase",
                waiting: "waiting for the first read of the database row",
            }
        }
    }
}

/// CacheWarmed: Redis holds the payload (or why not); the watchdog is told which key to check.
async fn check_cache(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    conditions: &mut Conditions,
    status: &mut crate::crd::WorkspaceRequirementsStatus,
    requeue: &mut Duration,
) {
    let ns = obj.namespace().unwrap_or_default();
    let oref = ObjectRef::from_obj(obj);
    match obj.spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        Some(redis) => {
            match ctx.warm(&ns, redis, payload).await {
                Ok((w, cache)) => {
                    if let Warmed::Written(before) = w {
                        status.cache_warmed_at = Some(now_rfc3339());
                        ctx.metrics.redis_warm(true);
                        info!(key = %redis.key, hash = %payload.hash, before, "Redis warmed");
                        ctx.publish(
                            obj,
                            EventType::Normal,
                            "CacheWarmed",
                            format!(
                                "Redis key {} holds sha256 {} (it held {before})",
                                redis.key,
                                &payload.hash[..12]
                            ),
                            "WarmCache",
                        )
                        .await;
                    }
                    ctx.watched.lock().expect("lock").insert(
                        oref.clone(),
                        Watched {
                            cache,
                            ttl: redis.ttl_seconds,
                        },
                    );
                    ctx.clear_warning(obj, "RedisUnreachable");
                    let ttl = redis.ttl_seconds;
                    conditions.set(
                        "CacheWarmed",
                        true,
                        "RedisWarmed",
                        &format!("Redis key {} holds the content (TTL {ttl} s, refreshed before half of it)", redis.key),
                    );
                    *requeue = (*requeue).min(Duration::from_secs((ttl / 4).max(30)));
                }
                Err(e) => {
                    ctx.unwatch(&oref);
                    ctx.metrics.redis_warm(false);
                    let message = e.to_string();
                    warn!(error = %message, "Redis warm failed");
                    conditions.set("CacheWarmed", false, e.reason(), &message);
                    ctx.warn_once(obj, "RedisUnreachable", message, "WarmCache")
                        .await;
                    *requeue = (*requeue).min(RETRY);
                }
            }
        }
        None => {
            ctx.unwatch(&oref);
            conditions.set(
                "CacheWarmed",
                true,
                "NotConfigured",
                "no Redis cache configured",
            )
        }
    }
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

fn without_managed_fields<K: Resource>(o: &mut K) {
    o.managed_fields_mut().clear();
}

/// Run the controller (and the database mirror) until the supervisor's stop signal.
pub async fn run(
    client: Client,
    scope: Scope,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    tasks: Supervisor,
) {
    run_with(client, scope, metrics, reporter, tasks, reconcile).await
}

/// [`run`] with another reconcile function (tests wrap [`reconcile`] to inject failures).
pub async fn run_with<R, Fut>(
    client: Client,
    scope: Scope,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    tasks: Supervisor,
    reconcile: R,
) where
    R: Fn(Arc<WorkspaceRequirements>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    let resources = scope.api::<WorkspaceRequirements>(&client);
    // Only template labels/annotations are read: drop managedFields to keep the caches small.
    // Only template labels/annotations, selectors and rollout status are read.
    let (deployments, deploy_stream) = cached(
        scope.api::<Deployment>(&client),
        watcher::Config::default(),
        without_managed_fields,
    );
    let (statefulsets, sts_stream) = cached(
        scope.api::<StatefulSet>(&client),
        watcher::Config::default(),
        without_managed_fields,
    );
    let (deploy_stream, sts_stream) = (
        deploy_stream.applied_objects(),
        sts_stream.applied_objects(),
    );
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
        watched: Default::default(),
        stalled: Default::default(),
    });

    // The resource cache drops managedFields too (a third of each object's size). Every event
    // (deletions and the end of a listing included) wakes the mirror, which starts and stops its
    // per-resource tasks from the store.
    let (store, resource_stream) = cached(
        resources,
        watcher::Config::default().any_semantic(),
        without_managed_fields,
    );
    let resources_changed = Arc::new(tokio::sync::Notify::new());
    let resource_stream = resource_stream
        .inspect({
            let changed = resources_changed.clone();
            move |_| changed.notify_one()
        })
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
    let watchdog = {
        let (ctx, store, trigger) = (ctx.clone(), store.clone(), trigger_tx.clone());
        tasks.spawn(
            "cache-watchdog",
            OnExit::Restart(Backoff::default()),
            move || {
                watch_caches(ctx.clone(), store.clone(), trigger.clone())
                    .instrument(tracing::info_span!("cache-watchdog"))
                    .map(Ok::<(), std::convert::Infallible>)
            },
        )
    };
    let mirror = {
        let (client, metrics, sub) = (client.clone(), metrics.clone(), tasks.clone());
        tasks.spawn("mirror", OnExit::Restart(Backoff::default()), move || {
            mirror::run(
                client.clone(),
                store.clone(),
                resources_changed.clone(),
                sync.clone(),
                metrics.clone(),
                trigger_tx.clone(),
                sub.clone(),
            )
            .instrument(tracing::info_span!("mirror"))
            .map(Ok::<(), std::convert::Infallible>)
        })
    };
    controller
        .graceful_shutdown_on(tasks.stop().stopped())
        .run(
            move |obj, ctx| guarded(reconcile.clone(), obj, ctx),
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
    mirror.abort();
    watchdog.abort();
    info!("controller stopped");
}

/// Between reconciles, check every warmed Redis key with one cheap `TTL` command: a key that is
/// gone (FLUSHALL, a restart without persistence, eviction), past half its TTL, or unreachable
/// triggers a reconcile at once, which rewrites it or reports `CacheWarmed=False`. The value is
/// not read here; reconciles do that at their own pace.
async fn watch_caches(
    ctx: Arc<Context>,
    resources: Store<WorkspaceRequirements>,
    trigger: futures::channel::mpsc::UnboundedSender<ObjectRef<WorkspaceRequirements>>,
) {
    let mut tick = tokio::time::interval(CACHE_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let entries: Vec<_> = ctx
            .watched
            .lock()
            .expect("lock")
            .iter()
            .map(|(oref, w)| (oref.clone(), w.cache.clone(), w.ttl))
            .collect();
        for (oref, cache, ttl) in entries {
            if resources.get(&oref).is_none() {
                ctx.unwatch(&oref);
                continue;
            }
            let left = cache.ttl().await;
            if matches!(left, Ok(Some(s)) if s > ttl / 2) {
                continue;
            }
            info!(resource = %oref, key = %cache.key(), ttl = ?left, "Redis key missing, expiring or unreachable; re-warming");
            ctx.unwatch(&oref);
            if trigger.unbounded_send(oref).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod ready_tests {
    use super::packages_failed;
    use crate::crd::WorkloadStatus;

    fn workload(name: &str, failed: Option<Vec<&str>>) -> WorkloadStatus {
        WorkloadStatus {
            kind: "Deployment".into(),
            name: name.into(),
            hash: None,
            up_to_date: true,
            replicas: None,
            updated_replicas: None,
            ready_updated_replicas: None,
            uninjected_pods: None,
            mode: None,
            failed_packages: failed.map(|f| f.into_iter().map(String::from).collect()),
            message: None,
        }
    }

    #[test]
    fn failed_packages_name_each_workload() {
        assert_eq!(packages_failed(&[workload("a", None)]), None);
        assert_eq!(
            packages_failed(&[
                workload("a", Some(vec!["x (no wheel)", "y (not found)"])),
                workload("b", None),
                workload("c", Some(vec!["x (no wheel)"])),
            ])
            .unwrap(),
            "rolled out, but packages failed to install and the workers run without them: \
             Deployment/a: x (no wheel), y (not found); Deployment/c: x (no wheel)"
        );
    }
}
