//! Snapshotted: the owned ConfigMap the installer falls back to when Redis is unreachable.
//! Nothing rolls until it holds the content.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::context::Context;
use super::status::{Draft, Halt, RETRY};
use crate::cache::Payload;
use crate::crd::{ConditionType, MANAGER, OPT_IN_LABEL, WorkspaceRequirements};
use crate::lock::{LOCK_FILE, Lock};

/// Write the snapshot; a refused write is reported (with the API server's message) and
/// retried, and stops the reconcile before the rollout.
pub(super) async fn check_snapshot(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    draft: &mut Draft,
) -> ControlFlow<Halt> {
    let data = snapshot_data(payload, draft.lock.as_ref());
    if let Err(message) = fits(&data) {
        warn!(error = %message, "snapshot too large");
        return ControlFlow::Break(too_large(payload, message));
    }
    let conditions = &mut draft.conditions;
    match apply_snapshot(ctx, obj, data).await {
        Ok(()) => {
            conditions.set(
                ConditionType::Snapshotted,
                true,
                "SnapshotApplied",
                &format!(
                    "ConfigMap {} holds sha256 {}{}",
                    obj.snapshot_name(),
                    &payload.hash[..12],
                    if draft.lock.is_some() {
                        " and its lock"
                    } else {
                        ""
                    }
                ),
            );
            ctx.clear_warning(obj, "SnapshotFailed");
            ctx.clear_warning(obj, "TooLarge");
            ControlFlow::Continue(())
        }
        Err(message) => {
            warn!(error = %message, "snapshot write failed");
            ControlFlow::Break(Halt {
                at: ConditionType::Snapshotted,
                reason: "SnapshotFailed",
                message,
                later: vec![(
                    ConditionType::RolledOut,
                    Some(false),
                    "no rollout until the ConfigMap snapshot (the installer's fallback) is written"
                        .into(),
                )],
                action: "Snapshot",
                once_per: None,
                unwatch: false,
                then: Action::requeue(RETRY),
            })
        }
    }
}

/// Snapshotted=False, TooLarge: nothing is written and nothing rolls; a Warning once per
/// content; looked at again later (a content change comes sooner, by its own event).
fn too_large(payload: &Payload, message: String) -> Halt {
    Halt {
        at: ConditionType::Snapshotted,
        reason: "TooLarge",
        message,
        later: vec![(
            ConditionType::RolledOut,
            Some(false),
            "no rollout: the ConfigMap snapshot (the installer's fallback) cannot hold this \
             content and its lock"
                .into(),
        )],
        action: "Snapshot",
        once_per: Some(payload.hash.clone()),
        unwatch: false,
        then: Action::requeue(TOO_LARGE_RETRY),
    }
}

/// When content too large for its snapshot is looked at again.
const TOO_LARGE_RETRY: Duration = Duration::from_secs(300);

/// The most data one snapshot holds: the API server refuses a ConfigMap whose data exceeds
/// 1 MiB; 16 KiB of it are left to the keys, the object's metadata and the apply's overhead.
pub(super) const SNAPSHOT_BUDGET: usize = 1024 * 1024 - 16 * 1024;

/// The snapshot's data: the content, its hash, its JSON payload and, when the controller
/// resolved it, the lock. Without a lock the apply removes one it wrote before.
fn snapshot_data(payload: &Payload, lock: Option<&Lock>) -> BTreeMap<&'static str, String> {
    let mut data = BTreeMap::from([
        ("requirements.txt", payload.content.clone()),
        ("hash", payload.hash.clone()),
        ("payload.json", payload.to_json()),
    ]);
    if let Some(lock) = lock {
        data.insert(LOCK_FILE, lock.render());
    }
    data
}

/// Whether `data` fits one ConfigMap ([`SNAPSHOT_BUDGET`]); the error is the status's message:
/// the sizes of the content (with its payload) and of the lock, the limit, and what to do.
pub(super) fn fits(data: &BTreeMap<&'static str, String>) -> Result<(), String> {
    let total: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total <= SNAPSHOT_BUDGET {
        return Ok(());
    }
    let lock = data.get(LOCK_FILE).map_or(0, String::len);
    let content = total - lock - data.get(LOCK_FILE).map_or(0, |_| LOCK_FILE.len());
    Err(format!(
        "the ConfigMap snapshot would hold {total} bytes (requirements.txt, its hash and JSON \
         payload {content} bytes; {LOCK_FILE} {lock} bytes), over the {SNAPSHOT_BUDGET} bytes \
         one ConfigMap can hold: nothing was written and nothing rolls; remove packages from \
         requirements.txt{}",
        if lock > 0 {
            ", or let each pod resolve it (spec.install.resolve: Pod, no lock in the snapshot)"
        } else {
            ""
        }
    ))
}

/// The owned ConfigMap snapshot: the installer's fallback when Redis is unreachable. The error
/// is what the status says: the ConfigMap and the API server's own message.
async fn apply_snapshot(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    data: BTreeMap<&'static str, String>,
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
        "data": data,
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

#[cfg(test)]
mod tests;
