//! One reconcile: Synced → Valid → Resolved → CacheWarmed → Snapshotted → RolledOut → Ready, each step in
//! its own module adding its condition to one [`Draft`] that is written once at the end (or
//! where a step stops the reconcile).

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{info, instrument, warn};

use super::context::Context;
use super::observe;
use super::rollout;
use super::status::{Conditions, Draft, Halt, RETRY, STEPS};
use super::{lock, snapshot, synced, valid, warm, wheelhouse};
use crate::cache::Payload;
use crate::crd::{ConditionType, WorkloadStatus, WorkspaceRequirements};
use crate::error::{Error, Result};

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
pub(super) async fn guarded<R, Fut>(
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
    let mut draft = Draft::of(&obj);
    draft
        .conditions
        .set(ConditionType::Ready, false, "ReconcilePanicked", &message);
    ctx.warn_once(&obj, "ReconcilePanicked", message, "Reconcile")
        .await;
    if let Err(e) = write(&ctx, &obj, draft).await {
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
    let payload = Payload::new(obj.spec.content.clone());
    let mut draft = Draft::of(obj);
    draft.status.observed_generation = obj.metadata.generation;
    draft.status.content_hash = Some(payload.hash.clone());
    draft.status.short_hash = Some(payload.hash[..12].to_string());
    if let ControlFlow::Break(action) = prepare(ctx, obj, &payload, &mut draft).await {
        write(ctx, obj, draft).await?;
        return Ok(action);
    }
    roll_out(ctx, obj, &payload.hash, &mut draft).await?;
    wheelhouse::check_wheelhouse(ctx, obj, &mut draft).await;
    let ready = set_ready(ctx, obj, &payload.hash, &mut draft).await;
    let requeue = draft.requeue;
    write(ctx, obj, draft).await?;
    info!(hash = %&payload.hash[..12], ready, requeue_s = requeue.as_secs(), "reconciled {}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    Ok(Action::requeue(requeue))
}

/// Write the reconcile's status when it changed; the resource's gauges follow it either way
/// (after a restart or a leader change nothing differs, yet they must be set).
async fn write(ctx: &Context, obj: &WorkspaceRequirements, draft: Draft) -> Result<()> {
    let (status, patch) = draft.finish();
    let ns = obj.namespace().unwrap_or_default();
    ctx.metrics.resource_status(&ns, &obj.name_any(), &status);
    let Some(patch) = patch else {
        return Ok(());
    };
    Api::<WorkspaceRequirements>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|e| Error::kube("patching status", e))?;
    Ok(())
}

/// Everything before the rollout; `Break` when a step stops the reconcile (its conditions say
/// why and the action says when to come back).
async fn prepare(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    draft: &mut Draft,
) -> ControlFlow<Action> {
    synced::check_synced(ctx, obj, draft).await;
    synced::wait_for_first_sync(obj, draft)?;
    match checks(ctx, obj, payload, draft).await {
        ControlFlow::Continue(()) => ControlFlow::Continue(()),
        ControlFlow::Break(stop) => {
            ControlFlow::Break(halt(ctx, obj, &payload.hash, draft, stop).await)
        }
    }
}

/// The steps that may stop the reconcile, in order.
async fn checks(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    draft: &mut Draft,
) -> ControlFlow<Halt> {
    valid::check_spec(ctx, obj, draft)?;
    valid::check_content(ctx, obj, draft)?;
    lock::check_lock(ctx, obj, payload, draft).await?;
    // A failure is reported and retried, but does not stop the rollout: the installer falls
    // back to the ConfigMap snapshot.
    warm::check_cache(ctx, obj, payload, draft).await;
    snapshot::check_snapshot(ctx, obj, payload, draft).await
}

/// Stop here, the same way whichever step said so: its conditions, Redis no longer watched when
/// the content is not the one to keep there, the workloads reported as they are (nothing rolls),
/// the Warning once; returns when to come back.
async fn halt(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    hash: &str,
    draft: &mut Draft,
    halt: Halt,
) -> Action {
    draft.conditions.halted(&halt);
    if halt.unwatch {
        ctx.memory::<warm::Warmth>()
            .unwatch(&ObjectRef::from_obj(obj));
    }
    let observed = observe::observe(ctx, obj, hash).await;
    draft.set_workloads(observed.workloads, &observed.verdicts);
    let Halt {
        reason,
        message,
        action,
        once_per,
        then,
        ..
    } = halt;
    match once_per {
        Some(per) => ctx.warn_once_per(obj, reason, per, message, action).await,
        None => ctx.warn_once(obj, reason, message, action).await,
    }
    then
}

/// RolledOut: the templates carry the hash and the pods run it (or why not).
async fn roll_out(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    hash: &str,
    draft: &mut Draft,
) -> Result<()> {
    let lock = draft.status.lock.as_ref().and_then(|l| l.sha256.get(..12));
    let outcome = rollout::roll(ctx, obj, (hash, lock)).await?;
    for after in [outcome.requeue_after, outcome.recheck]
        .into_iter()
        .flatten()
    {
        draft.recheck_within(after);
    }
    draft.status.rolled_out_hash = outcome
        .all_up_to_date
        .then(|| hash.to_string())
        .or(draft.old.rolled_out_hash.clone());
    record_rollout(ctx, obj, hash, outcome, draft).await;
    Ok(())
}

/// Ready: every condition True and no package failed; a PackagesFailed Warning once per hash
/// (every new pod of the hash reports the same packages). Returns whether it is ready.
async fn set_ready(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    hash: &str,
    draft: &mut Draft,
) -> bool {
    let failed = packages_failed(&draft.status.workloads);
    if let Some(message) = &failed {
        ctx.warn_once_per(
            obj,
            "PackagesFailed",
            hash.to_string(),
            message.clone(),
            "Install",
        )
        .await;
    }
    let unreached = observe::no_workloads(ctx, obj);
    let (ready, reason, message) = readiness(&draft.conditions, failed, unreached);
    draft
        .conditions
        .set(ConditionType::Ready, ready, &reason, &message);
    ready
}

/// Ready's value, reason and message from the other conditions, the failed packages and, when
/// no workload opts in, why (see [`super::coverage::no_workloads`]): content that reaches no
/// pod is not ready, however well it is cached.
fn readiness(
    conditions: &Conditions,
    failed: Option<String>,
    no_workloads: Option<String>,
) -> (bool, String, String) {
    let rolled_out = conditions.all_true(&STEPS);
    // Valid's own failures stop the reconcile and set Ready themselves.
    let checked = &STEPS[1..];
    match (rolled_out, failed, no_workloads) {
        (true, _, Some(message)) => (false, "NoWorkloads".to_string(), message),
        (true, None, None) => (
            true,
            "Ready".to_string(),
            "content valid, cached and rolled out".to_string(),
        ),
        (true, Some(message), None) => (false, "PackagesFailed".to_string(), message),
        // The first problem's own reason (e.g. InstallFailing), so `kubectl get` and alerts
        // on Ready's reason say what is wrong without reading the other conditions.
        (false, _, _) => (
            false,
            conditions.first_problem_reason(checked),
            conditions.first_problem(checked),
        ),
    }
}

/// "the workers run without …" naming each workload's failed packages, when any failed.
fn packages_failed(workloads: &[WorkloadStatus]) -> Option<String> {
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
    outcome: rollout::RollReport,
    draft: &mut Draft,
) {
    draft.set_workloads(outcome.workloads, &outcome.verdicts);
    let conditions = &mut draft.conditions;
    if outcome.creation_failures.is_empty() {
        conditions.set(
            ConditionType::RolledOut,
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
        conditions.set(
            ConditionType::RolledOut,
            false,
            "PodCreationFailed",
            &message,
        );
        ctx.warn_once(obj, "PodCreationFailed", message, "Rollout")
            .await;
    }
}

/// On error: log, count, and retry with a short delay.
pub(crate) fn error_policy(
    obj: Arc<WorkspaceRequirements>,
    error: &Error,
    _ctx: Arc<Context>,
) -> Action {
    warn!(name = %obj.name_any(), error = %error, "reconcile failed");
    Action::requeue(RETRY)
}

#[cfg(test)]
mod tests;
