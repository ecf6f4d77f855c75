//! Rollout: patch the pod-template hash annotation of labelled workloads.
//!
//! Changing `spec.template.metadata.annotations["bifrost.io/requirements-hash"]` is what makes
//! Kubernetes roll a Deployment or StatefulSet (new pods, which the webhook injects with the new
//! content). Workloads whose template already carries the hash are never touched. Under
//! `Automatic`, a change is applied once it has been stable for `debounceSeconds` (trailing
//! debounce: a burst of edits produces one rollout); under `Manual`, stale workloads are only
//! reported. Whether the pods then run the hash is [`super::progress`]'s to say.

pub(super) mod reinject;

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use tracing::info;

use super::context::Context;
use super::observe::{self, Observed, template_annotation};
use super::progress::{self, Verdict};
use crate::crd::{
    HASH_ANNOTATION, LOCK_ANNOTATION, OPT_IN_LABEL, RolloutStrategy, WorkloadStatus,
    WorkspaceRequirements,
};
use crate::error::Result;

/// What [`roll`] found and did.
pub(crate) struct RollReport {
    pub workloads: Vec<WorkloadStatus>,
    /// Whether the pods of each workload run the hash (parallel to `workloads`).
    pub verdicts: Vec<Verdict>,
    /// "Kind/name: the API server's message" for each workload whose pods cannot be created.
    pub creation_failures: Vec<String>,
    /// When to look at the workloads again even if nothing changes.
    pub recheck: Option<Duration>,
    pub all_up_to_date: bool,
    pub reason: &'static str,
    pub message: String,
    pub requeue_after: Option<Duration>,
}

/// Whether a workload's template was rolled for another lock than `lock` (see
/// [`LOCK_ANNOTATION`]).
fn lock_stale(ctx: &Context, ns: &str, w: &WorkloadStatus, lock: Option<&str>) -> bool {
    let rolled = template_annotation(ctx, ns, &w.kind, &w.name, LOCK_ANNOTATION);
    rolls_for_lock(rolled.as_deref(), lock)
}

/// Whether a template rolled for the lock `rolled` (its annotation; `None`: rolled by an older
/// operator) rolls again for `lock` (pure). No lock (pods resolve) never rolls: those pods would
/// resolve requirements.txt, which the pods rolled for a lock of the same content satisfy.
fn rolls_for_lock(rolled: Option<&str>, lock: Option<&str>) -> bool {
    matches!((rolled, lock), (Some(rolled), Some(lock)) if rolled != lock)
}

/// [`LOCK_ANNOTATION`]'s value while the pods resolve for themselves.
const NO_LOCK: &str = "none";

/// Bring labelled workloads to `hash` and its `lock` (the first 12 hex digits of its SHA-256,
/// `None` when pods resolve), or report them, honouring strategy and debounce.
pub(crate) async fn roll(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    (hash, lock): (&str, Option<&str>),
) -> Result<RollReport> {
    let oref = ObjectRef::from_obj(obj);
    let ns = obj.namespace().unwrap_or_default();
    let mut observed = observe::observe(ctx, obj, hash).await;
    let stale: Vec<usize> = (0..observed.workloads.len())
        .filter(|i| {
            let w = &observed.workloads[*i];
            !w.up_to_date || lock_stale(ctx, &ns, w, lock)
        })
        .collect();
    if stale.is_empty() {
        ctx.memory::<Debounce>().forget(&oref);
        let again =
            reinject::replace_uninjected(ctx, obj, &observed.workloads, &observed.verdicts).await;
        let mut said = settled(&observed, &obj.name_any());
        said.requeue_after = said.requeue_after.into_iter().chain(again).min();
        return Ok(RollReport::new(observed, said));
    }
    if obj.spec.rollout.strategy == RolloutStrategy::Manual {
        let said = manual(&observed.workloads, &stale, hash);
        return Ok(RollReport::new(observed, said));
    }
    let debounce = Duration::from_secs(obj.spec.rollout.debounce_seconds.into());
    if let Some(said) = debouncing(debounce, pending_for(ctx, &oref, hash), stale.len()) {
        return Ok(RollReport::new(observed, said));
    }
    let failed = patch_stale(ctx, obj, (hash, lock), &mut observed, &stale).await;
    if failed.is_empty() {
        ctx.memory::<Debounce>().forget(&oref);
        let said = pods_verdict(&observed.workloads, &observed.verdicts);
        return Ok(RollReport::new(observed, said));
    }
    let message = format!("cannot patch {}", failed.join("; "));
    ctx.warn_once(obj, "RolloutFailed", message.clone(), "Rollout")
        .await;
    let said = Said {
        requeue_after: Some(super::status::RETRY),
        ..Said::waiting("PatchFailed", message)
    };
    Ok(RollReport::new(observed, said))
}

/// What the rollout says in RolledOut, and when it wants to look again.
struct Said {
    all_up_to_date: bool,
    reason: &'static str,
    message: String,
    requeue_after: Option<Duration>,
}

impl Said {
    fn waiting(reason: &'static str, message: String) -> Self {
        Self {
            all_up_to_date: false,
            reason,
            message,
            requeue_after: None,
        }
    }
}

impl From<(bool, &'static str, String)> for Said {
    fn from((all_up_to_date, reason, message): (bool, &'static str, String)) -> Self {
        Self {
            all_up_to_date,
            reason,
            message,
            requeue_after: None,
        }
    }
}

impl RollReport {
    fn new(observed: Observed, said: Said) -> Self {
        Self {
            workloads: observed.workloads,
            verdicts: observed.verdicts,
            creation_failures: observed.creation_failures,
            recheck: observed.recheck,
            all_up_to_date: said.all_up_to_date,
            reason: said.reason,
            message: said.message,
            requeue_after: said.requeue_after,
        }
    }
}

/// Every template carries the hash: whether the pods run it (or that nothing is labelled).
fn settled(observed: &Observed, name: &str) -> Said {
    if observed.workloads.is_empty() {
        let none = format!(
            "no Deployment or StatefulSet has a pod template labelled {OPT_IN_LABEL}={name}"
        );
        return (true, "UpToDate", none).into();
    }
    pods_verdict(&observed.workloads, &observed.verdicts)
}

/// Strategy Manual: the stale workloads are reported, never patched.
fn manual(workloads: &[WorkloadStatus], stale: &[usize], hash: &str) -> Said {
    let message = format!(
        "strategy Manual: {} workload(s) carry an older hash ({}); set their pod-template annotation {HASH_ANNOTATION}={hash} to roll them",
        stale.len(),
        names(stale, workloads)
    );
    Said::waiting("ManualRolloutPending", message)
}

/// Within the debounce window of a change (`waited` since it was first seen): wait out the
/// rest, unless the content changes again.
fn debouncing(debounce: Duration, waited: Duration, stale: usize) -> Option<Said> {
    let left = debounce.checked_sub(waited).filter(|l| !l.is_zero())?;
    let message = format!(
        "rolling {stale} workload(s) in {:.1} s unless the content changes again (debounce {} s)",
        left.as_secs_f64(),
        debounce.as_secs()
    );
    Some(Said {
        requeue_after: Some(left),
        ..Said::waiting("Debouncing", message)
    })
}

/// The rollout's memory: each resource's content change waiting out its debounce window.
#[derive(Default)]
struct Debounce(Mutex<HashMap<ObjectRef<WorkspaceRequirements>, Pending>>);

/// A content change waiting out its debounce window.
#[derive(Debug, Clone)]
struct Pending {
    hash: String,
    since: Instant,
}

impl Debounce {
    fn forget(&self, oref: &ObjectRef<WorkspaceRequirements>) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(oref);
    }
}

/// How long `hash` has been this resource's content (the debounce clock restarts on a change).
fn pending_for(ctx: &Context, oref: &ObjectRef<WorkspaceRequirements>, hash: &str) -> Duration {
    let debounce = ctx.memory::<Debounce>();
    let mut pending = debounce.0.lock().unwrap_or_else(PoisonError::into_inner);
    let p = pending.entry(oref.clone()).or_insert_with(|| Pending {
        hash: hash.to_string(),
        since: Instant::now(),
    });
    if p.hash != hash {
        *p = Pending {
            hash: hash.to_string(),
            since: Instant::now(),
        };
    }
    p.since.elapsed()
}

/// Patch the stale workloads' templates; the patched ones now wait for their new pods, with one
/// RollingOut Event naming them. Returns "Kind/name: error" for each refused patch.
async fn patch_stale(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    (hash, lock): (&str, Option<&str>),
    observed: &mut Observed,
    stale: &[usize],
) -> Vec<String> {
    let ns = obj.namespace().unwrap_or_default();
    let mut failed = Vec::new();
    let mut rolled = Vec::new();
    for &i in stale {
        let w = &mut observed.workloads[i];
        let annotations = [
            (HASH_ANNOTATION, hash),
            (LOCK_ANNOTATION, lock.unwrap_or(NO_LOCK)),
        ];
        match ctx
            .annotate_template(&ns, &w.kind, &w.name, &annotations)
            .await
        {
            Ok(()) => {
                ctx.metrics.rollouts.inc();
                info!(kind = %w.kind, workload = %w.name, hash = %&hash[..12], "rolling out");
                w.hash = Some(hash.to_string());
                w.up_to_date = true;
                observed.verdicts[i] =
                    Verdict::RollingOut("pod template patched; waiting for its new pods".into());
                rolled.push(i);
            }
            Err(e) => failed.push(format!("{}/{}: {e}", w.kind, w.name)),
        }
    }
    if !rolled.is_empty() {
        let note = format!(
            "patched {HASH_ANNOTATION}={} on {}",
            &hash[..12],
            names(&rolled, &observed.workloads)
        );
        ctx.publish(obj, EventType::Normal, "RollingOut", note, "Rollout")
            .await;
    }
    failed
}

/// "Kind/name, …" of the workloads at `idx`.
fn names(idx: &[usize], workloads: &[WorkloadStatus]) -> String {
    idx.iter()
        .map(|i| format!("{}/{}", workloads[*i].kind, workloads[*i].name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether the pods of every workload (all carrying the hash in their template) run it.
fn pods_verdict(workloads: &[WorkloadStatus], verdicts: &[Verdict]) -> Said {
    let named: Vec<(String, &Verdict)> = workloads
        .iter()
        .zip(verdicts)
        .map(|(w, v)| (format!("{}/{}", w.kind, w.name), v))
        .collect();
    progress::summarize(&named).into()
}

#[cfg(test)]
mod tests;
