//! Snapshotted: the owned ConfigMap the installer falls back to when Redis is unreachable.
//! Nothing rolls until it holds the content.

use std::ops::ControlFlow;

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
    let conditions = &mut draft.conditions;
    match apply_snapshot(ctx, obj, payload, draft.lock.as_ref()).await {
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

/// The owned ConfigMap snapshot: the installer's fallback when Redis is unreachable. The error
/// is what the status says: the ConfigMap and the API server's own message.
async fn apply_snapshot(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    payload: &Payload,
    lock: Option<&Lock>,
) -> Result<(), String> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.snapshot_name();
    let owner = obj
        .controller_owner_ref(&())
        .ok_or_else(|| "the resource has no uid yet; cannot own its ConfigMap".to_string())?;
    let mut data = json!({
        "requirements.txt": payload.content,
        "hash": payload.hash,
        "payload.json": payload.to_json(),
    });
    // Applied without the key when the pods resolve: the apply removes a lock it wrote before.
    if let Some(lock) = lock {
        data[LOCK_FILE] = lock.render().into();
    }
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
