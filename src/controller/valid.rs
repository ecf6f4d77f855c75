//! Valid: a spec the API server, the installer or Redis would refuse, or content the policy
//! refuses, stops the reconcile — nothing is written, nothing rolled, and the webhook injects
//! nothing from it (so labelled pods still start).

use std::ops::ControlFlow;

use kube::runtime::controller::Action;

use super::context::Context;
use super::status::{Draft, Halt};
use crate::crd::{ConditionType, WorkspaceRequirements};

/// The spec's fields: no content at all, content too large for the ConfigMap, or a field
/// another party would refuse.
pub(super) fn check_spec(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    draft: &mut Draft,
) -> ControlFlow<Halt> {
    let Err(problems) = crate::spec::validate(obj) else {
        for reason in ["NoContent", "TooLarge", "InvalidSpec"] {
            ctx.clear_warning(obj, reason);
        }
        return ControlFlow::Continue(());
    };
    draft.status.package_count = None;
    ControlFlow::Break(spec_invalid(
        problems.reason().as_str(),
        problems.to_string(),
    ))
}

/// The stop of an invalid spec: nothing downstream of Valid happened.
fn spec_invalid(reason: &'static str, message: String) -> Halt {
    let not_written = format!("not written: {reason} (see Valid)");
    Halt {
        at: ConditionType::Valid,
        reason,
        message,
        later: vec![
            (
                ConditionType::Resolved,
                None,
                "not resolved: the spec is invalid".into(),
            ),
            (ConditionType::CacheWarmed, None, not_written.clone()),
            (ConditionType::Snapshotted, None, not_written),
            (
                ConditionType::RolledOut,
                None,
                "no rollout: the spec is invalid".into(),
            ),
        ],
        action: "Validate",
        once_per: None,
        unwatch: true,
        then: Action::await_change(),
    }
}

/// The content, checked by the resource's policy; sets `packageCount` when it is accepted.
pub(super) fn check_content(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    draft: &mut Draft,
) -> ControlFlow<Halt> {
    match obj.policy().check_content(&obj.spec.content) {
        Err(violations) => {
            draft.status.package_count = None;
            ControlFlow::Break(content_invalid(violations.to_string()))
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

/// The stop of content the policy refuses.
fn content_invalid(message: String) -> Halt {
    let why = "content is invalid";
    Halt {
        at: ConditionType::Valid,
        reason: "InvalidRequirements",
        message,
        later: vec![
            (
                ConditionType::Resolved,
                None,
                format!("not resolved: {why}"),
            ),
            (
                ConditionType::CacheWarmed,
                None,
                format!("not written: {why}"),
            ),
            (ConditionType::RolledOut, None, format!("no rollout: {why}")),
        ],
        action: "Validate",
        once_per: None,
        unwatch: true,
        then: Action::await_change(),
    }
}
