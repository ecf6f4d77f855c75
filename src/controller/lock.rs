//! Resolved: each content is resolved once, for the workers' interpreter, into the lock every
//! pod installs (`requirements.lock` in the ConfigMap snapshot). Content that cannot be resolved
//! stops the reconcile before Redis and the rollout: the running workers keep the last good
//! content and lock.
//!
//! A lock is reused while its [`Key`] holds: from memory, else from the ConfigMap (after a
//! restart or a leader change), so a reconcile triggered by a pod event never runs uv again.

pub mod probe;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, warn};

use self::probe::Learned;
use super::context::Context;
use super::status::{Draft, Halt, now_rfc3339};
use crate::cache::Payload;
use crate::crd::{ConditionType, Interpreter, LockStatus, Resolve, WorkspaceRequirements};
use crate::lock::{Failure, Key, LOCK_FILE, Lock, Request, Resolver, effective_index_urls};
use crate::requirements::content_hash;

/// When unresolvable content is tried again (the index may have gained what was missing).
const UNRESOLVABLE_RETRY: Duration = Duration::from_secs(300);
/// When a resolver that could not run (index unreachable, deadline) is tried again.
const FAILED_RETRY: Duration = Duration::from_secs(30);

/// Who resolves this resource's content, decided from its spec and the operator's resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// The controller resolves for this key.
    Controller(Key),
    /// Each pod resolves; the reason says why (asked for, or the operator may not).
    Pods(String),
    /// The controller resolves, for the interpreter learned from the workers' image (the
    /// resource names none): see [`probe`].
    NoInterpreter,
}

/// The plan for `obj`'s content hashed `hash` (pure).
pub(super) fn plan(obj: &WorkspaceRequirements, hash: &str, resolver: Option<&Resolver>) -> Plan {
    let install = &obj.spec.install;
    if install.resolve == Resolve::Pod {
        return Plan::Pods("spec.install.resolve is Pod".into());
    }
    let Some(resolver) = resolver else {
        return Plan::Pods("this operator resolves nothing (started with --no-resolver)".into());
    };
    let index_urls = effective_index_urls(&install.index_urls);
    if let Some(url) = resolver.refused_index(&index_urls) {
        return Plan::Pods(format!(
            "the operator may not fetch from {url} (not among its --resolver-index-url)"
        ));
    }
    match &install.python {
        None => Plan::NoInterpreter,
        Some(interpreter) => Plan::Controller(key(obj, hash, interpreter.clone())),
    }
}

/// The lock's key for `obj`'s content hashed `hash`, resolved for `interpreter`.
fn key(obj: &WorkspaceRequirements, hash: &str, interpreter: Interpreter) -> Key {
    Key {
        content_hash: hash.to_string(),
        interpreter,
        index_urls: effective_index_urls(&obj.spec.install.index_urls),
        only_binary: obj.spec.install.only_binary,
    }
}

/// Resolve (or reuse) the lock of the content; `Break` when there is none to roll out.
pub(super) async fn check_lock(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    draft: &mut Draft,
) -> ControlFlow<Halt> {
    draft.status.interpreter = None;
    let key = match plan(obj, &payload.hash, ctx.resolver.as_ref()) {
        Plan::Pods(why) => {
            let message = format!("{why}: each pod resolves requirements.txt when it installs");
            return pods_resolve(ctx, obj, draft, "PodsResolve", &message);
        }
        Plan::NoInterpreter => match learned_key(ctx, obj, &payload.hash, draft).await {
            Ok(key) => key,
            Err(flow) => return flow,
        },
        Plan::Controller(key) => key,
    };
    match lock_for(ctx, obj, payload, &key).await {
        Ok((lock, resolved_at)) => {
            let pins = lock.pins().len();
            draft.conditions.set(
                ConditionType::Resolved,
                true,
                "Resolved",
                &format!(
                    "{pins} distribution(s) pinned for {}",
                    key.interpreter.describe()
                ),
            );
            draft.status.lock = Some(LockStatus {
                content_hash: payload.hash.clone(),
                packages: pins as i64,
                resolved_at,
                sha256: content_hash(&lock.render()),
            });
            draft.lock = Some(lock);
            clear_warnings(ctx, obj);
            ControlFlow::Continue(())
        }
        Err((failure, retry)) => {
            let (reason, what) = match &failure {
                Failure::Unresolvable(_) => ("ResolutionFailed", "cannot be resolved"),
                Failure::Failed(_) => ("ResolverFailed", "could not be resolved"),
                Failure::HashMismatch(_) => (
                    "HashMismatch",
                    "is refused (the index serves a file its --hash does not pin)",
                ),
            };
            let message = format!(
                "requirements.txt (sha256 {}) {what} for {}: {failure}",
                &payload.hash[..12],
                key.interpreter.describe()
            );
            ControlFlow::Break(blocked(payload, reason, message, retry))
        }
    }
}

/// The key for the interpreter learned from the workers' image (recorded in the status), or,
/// while it is not known, Resolved=True without a lock saying why and what to set instead.
async fn learned_key(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    hash: &str,
    draft: &mut Draft,
) -> Result<Key, ControlFlow<Halt>> {
    match probe::learn(ctx, obj).await {
        Learned::Known(learned) => {
            let interpreter = Interpreter {
                version: learned.version.clone(),
                platform: learned.platform.clone(),
            };
            draft.status.interpreter = Some(learned);
            Ok(key(obj, hash, interpreter))
        }
        Learned::Unknown {
            reason,
            message,
            recheck,
        } => {
            if let Some(after) = recheck {
                draft.recheck_within(after);
            }
            let message = format!(
                "no lock yet, each pod resolves requirements.txt when it installs: the workers' \
                 interpreter is not known ({message}); set spec.install.python (e.g. {{version: \
                 \"3.11\", platform: \"x86_64-manylinux_2_28\"}}) to skip the probe"
            );
            Err(pods_resolve(ctx, obj, draft, reason, &message))
        }
    }
}

/// Resolved=True without a lock (`reason` and `message` say why): the content goes on to Redis,
/// the snapshot (without a lock) and the rollout, and each pod resolves it.
fn pods_resolve(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    draft: &mut Draft,
    reason: &str,
    message: &str,
) -> ControlFlow<Halt> {
    draft
        .conditions
        .set(ConditionType::Resolved, true, reason, message);
    draft.status.lock = None;
    clear_warnings(ctx, obj);
    ControlFlow::Continue(())
}

/// The reasons of a content without a lock (each its own Warning).
const BLOCKED: [&str; 3] = ["ResolutionFailed", "ResolverFailed", "HashMismatch"];

/// Nothing downstream happens for this content: the conditions say why (the running workers
/// keep the last resolved content, so Redis stays watched), a Warning is sent once per content,
/// and the reconcile stops until `retry` is over (or the content changes).
fn blocked(payload: &Payload, reason: &'static str, message: String, retry: Duration) -> Halt {
    let not_written = format!("not written: {reason} (see Resolved)");
    Halt {
        at: ConditionType::Resolved,
        reason,
        message,
        later: vec![
            (ConditionType::CacheWarmed, None, not_written.clone()),
            (ConditionType::Snapshotted, None, not_written),
            (
                ConditionType::RolledOut,
                None,
                "no rollout: the running workers keep the last resolved content".into(),
            ),
        ],
        action: "Resolve",
        once_per: Some(payload.hash.clone()),
        unwatch: false,
        then: Action::requeue(retry),
    }
}

/// Forget the Warnings of a content without a lock: the next one is news again.
fn clear_warnings(ctx: &Context, obj: &WorkspaceRequirements) {
    for reason in BLOCKED {
        ctx.clear_warning(obj, reason);
    }
}

/// The lock for `key` and when it was resolved: remembered, else the snapshot's, else a new
/// resolution (also remembered, failures too, until their retry time).
async fn lock_for(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    key: &Key,
) -> LockResult {
    let at = ObjectRef::from_obj(obj);
    let resolutions = ctx.memory::<Resolutions>();
    if let Some(known) = resolutions.answer(&at, key) {
        return known;
    }
    let recorded = obj.status.as_ref().and_then(|s| s.lock.as_ref());
    if let Some((lock, resolved_at)) = snapshot_lock(ctx, obj, key, recorded).await {
        let found = Ok((lock, resolved_at));
        resolutions.remember(at, key.clone(), found.clone());
        return found;
    }
    let (Some(resolver), Some(stop)) = (ctx.resolver.as_ref(), ctx.stop.as_ref()) else {
        return Err((Failure::Failed("no resolver".into()), FAILED_RETRY));
    };
    let started = Instant::now();
    let request = Request {
        content: &payload.content,
        key,
    };
    let outcome = match resolver.resolve(&request, stop).await {
        Ok(lock) => Ok((lock, now_rfc3339())),
        Err(f @ (Failure::Unresolvable(_) | Failure::HashMismatch(_))) => {
            Err((f, UNRESOLVABLE_RETRY))
        }
        Err(f @ Failure::Failed(_)) => Err((f, FAILED_RETRY)),
    };
    info!(
        hash = %&payload.hash[..12],
        ok = outcome.is_ok(),
        seconds = started.elapsed().as_secs_f64(),
        "resolved {}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    );
    resolutions.remember(at, key.clone(), outcome.clone());
    outcome
}

/// The lock in the resource's ConfigMap snapshot and when it was resolved, when it is the one
/// `status.lock` records (`recorded`: same SHA-256, so the ConfigMap was not edited since) and
/// was resolved for `key` (index URLs compared as the lock records them: without credentials).
async fn snapshot_lock(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    key: &Key,
    recorded: Option<&LockStatus>,
) -> Option<(Lock, String)> {
    let recorded = recorded.filter(|r| !r.sha256.is_empty())?;
    let ns = obj.namespace().unwrap_or_default();
    let cm = Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&obj.snapshot_name())
        .await
        .inspect_err(|e| warn!(error = %e, "cannot read the snapshot's lock"))
        .ok()??;
    let text = cm.data?.remove(LOCK_FILE)?;
    if content_hash(&text) != recorded.sha256 {
        warn!("the snapshot's lock is not the one status.lock records; resolving again");
        return None;
    }
    let lock = Lock::parse(&text)
        .inspect_err(|e| warn!("the snapshot's lock is unusable ({e}); resolving again"))
        .ok()?;
    let redacted = Key {
        index_urls: key
            .index_urls
            .iter()
            .map(|u| crate::redact::url(u))
            .collect(),
        ..key.clone()
    };
    let lock = (lock.key() == redacted).then(|| Lock {
        index_urls: key.index_urls.clone(),
        ..lock
    })?;
    Some((lock, recorded.resolved_at.clone()))
}

/// What a lock lookup gives: the lock and when it was resolved, or why none and when to retry.
pub(super) type LockResult = Result<(Lock, String), (Failure, Duration)>;

/// The lock step's memory: the last resolution of each resource.
#[derive(Default)]
pub(super) struct Resolutions(Mutex<HashMap<ObjectRef<WorkspaceRequirements>, Resolution>>);

impl Resolutions {
    /// The remembered resolution of `at` when it answers for `key`.
    fn answer(&self, at: &ObjectRef<WorkspaceRequirements>, key: &Key) -> Option<LockResult> {
        let known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(at)?.answer(key)
    }

    /// Remember `at`'s resolution for `key` (replacing the one for its previous content).
    fn remember(&self, at: ObjectRef<WorkspaceRequirements>, key: Key, outcome: LockResult) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(at, Resolution::new(key, outcome));
    }

    /// Forget what was resolved for a deleted resource.
    pub(super) fn forget(&self, gone: &ObjectRef<WorkspaceRequirements>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(gone);
    }
}

/// A remembered resolution, valid for its key until its retry time (failures) or for good.
#[derive(Debug, Clone)]
pub(super) struct Resolution {
    key: Key,
    outcome: LockResult,
    at: Instant,
}

impl Resolution {
    pub(super) fn new(key: Key, outcome: LockResult) -> Self {
        Resolution {
            key,
            outcome,
            at: Instant::now(),
        }
    }

    /// The outcome when it still answers for `key`.
    pub(super) fn answer(&self, key: &Key) -> Option<LockResult> {
        if &self.key != key {
            return None;
        }
        match &self.outcome {
            Err((_, retry)) if self.at.elapsed() >= *retry => None,
            Err((f, retry)) => Some(Err((f.clone(), retry.saturating_sub(self.at.elapsed())))),
            Ok(found) => Some(Ok(found.clone())),
        }
    }
}

#[cfg(test)]
mod tests;
