//! Valid: a spec the API server, the installer or Redis would refuse, or content the policy
//! refuses, stops the reconcile — nothing is written, nothing rolled, and the webhook injects
//! nothing from it (so labelled pods still start).

use std::ops::ControlFlow;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::context::Context;
use super::rollout;
use super::status::{Conditions, Draft};
use crate::crd::{ConditionType, WorkspaceRequirements};

/// The spec's fields: no content at all, content too large for the ConfigMap, or a field
/// another party would refuse.
pub(super) async fn check_spec(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    hash: &str,
    draft: &mut Draft,
) -> ControlFlow<Action> {
    let Err(problems) = crate::spec::validate(obj) else {
        for reason in ["NoContent", "TooLarge", "InvalidSpec"] {
            ctx.clear_warning(obj, reason);
        }
        return ControlFlow::Continue(());
    };
    let reason = problems.reason().as_str();
    let message = problems.to_string();
    draft.status.package_count = None;
    spec_invalid(&mut draft.conditions, reason, &message);
    ctx.unwatch(&ObjectRef::from_obj(obj));
    let observed = rollout::observe(ctx, obj, hash).await;
    draft.set_workloads(observed.workloads, &observed.verdicts);
    ctx.warn_once(obj, reason, message, "Validate").await;
    ControlFlow::Break(Action::await_change())
}

/// The conditions of an invalid spec: nothing downstream of Valid happened.
fn spec_invalid(conditions: &mut Conditions, reason: &str, message: &str) {
    conditions.set(ConditionType::Valid, false, reason, message);
    let not_written = format!("not written: {reason} (see Valid)");
    conditions.set_unknown(
        ConditionType::Resolved,
        reason,
        "not resolved: the spec is invalid",
    );
    conditions.set_unknown(ConditionType::CacheWarmed, reason, &not_written);
    conditions.set_unknown(ConditionType::Snapshotted, reason, &not_written);
    conditions.set_unknown(
        ConditionType::RolledOut,
        reason,
        "no rollout: the spec is invalid",
    );
    conditions.set(
        ConditionType::Ready,
        false,
        reason,
        &format!("Valid: {message}"),
    );
}

/// The content, checked by the resource's policy; sets `packageCount` when it is accepted.
pub(super) async fn check_content(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    draft: &mut Draft,
) -> ControlFlow<Action> {
    match obj.policy().check_content(&obj.spec.content) {
        Err(violations) => {
            let message = violations.to_string();
            draft.status.package_count = None;
            content_invalid(&mut draft.conditions, &message);
            ctx.unwatch(&ObjectRef::from_obj(obj));
            ctx.warn_once(obj, "InvalidRequirements", message, "Validate")
                .await;
            ControlFlow::Break(Action::await_change())
        }
        Ok(accepted) => {
            draft.status.package_count = Some(accepted.package_count as i64);
            draft.conditions.set(
                ConditionType::Valid,
                true,
                "RequirementsValid",
                &format!("{} package(s)", accepted.package_count),
            );
            ctx.clear_warning(obj, "InvalidRequirements");
            ControlFlow::Continue(())
        }
    }
}

/// The conditions of content the policy refuses.
fn content_invalid(conditions: &mut Conditions, message: &str) {
    conditions.set(ConditionType::Valid, false, "InvalidRequirements", message);
    conditions.set_unknown(
        ConditionType::Resolved,
        "InvalidRequirements",
        "not resolved: content is invalid",
    );
    conditions.set_unknown(
        ConditionType::CacheWarmed,
        "InvalidRequirements",
        "not written: content is invalid",
    );
    conditions.set_unknown(
        ConditionType::RolledOut,
        "InvalidRequirements",
        "no rollout: content is invalid",
    );
    conditions.set(ConditionType::Ready, false, "InvalidRequirements", message);
}
