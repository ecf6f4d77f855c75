//! Synced: what the source mirror last saw (it never writes status itself), and the wait for a
//! mirrored resource's first read.

use std::ops::ControlFlow;
use std::sync::PoisonError;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use super::context::{Context, SyncState};
use super::status::{Draft, RETRY};
use crate::crd::{ConditionType, WorkspaceRequirements};

/// Synced: what the source mirror last saw.
pub(super) async fn check_synced(ctx: &Context, obj: &WorkspaceRequirements, draft: &mut Draft) {
    let Draft {
        conditions, status, ..
    } = draft;
    let source = obj.spec.source.as_ref();
    let s3 = source.and_then(|s| s.s3.as_ref()).is_some();
    if !source.is_some_and(|s| s.database.is_some() || s.s3.is_some()) {
        conditions.set(
            ConditionType::Synced,
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
        .get(&ObjectRef::from_obj(obj))
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
            conditions.set(ConditionType::Synced, true, names.mirrored_reason, &message);
            for reason in FAILURE_WARNINGS {
                ctx.clear_warning(obj, reason);
            }
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
                ConditionType::Synced,
                false,
                &reason,
                &format!("{message}; keeping the last known content"),
            );
            let warning = failure_warning(&reason, names.unreachable);
            ctx.warn_once(obj, warning, message, names.action).await;
            draft.recheck_within(RETRY);
        }
        None => {
            conditions.set_unknown(ConditionType::Synced, "Pending", names.waiting);
            draft.recheck_within(RETRY);
        }
    }
}

/// The Warnings a source that cannot be read gets, named like `Synced`'s reason (what an
/// `Error` of the mirror reports: [`crate::error::Error::reason`]), so an alert or a reader of
/// Events tells a denial from an outage; each is published once per distinct problem and all
/// are cleared once the source reads again.
const FAILURE_WARNINGS: [&str; 12] = [
    "S3Unreachable",
    "AccessDenied",
    "NotFound",
    "InvalidContent",
    "TooLarge",
    "S3Error",
    "DatabaseUnreachable",
    "DatabaseError",
    "BadDatabaseRow",
    "SecretMissing",
    "InvalidConfiguration",
    "KubernetesError",
];

/// The Warning for a read that failed with `reason`: its own name, or the source's
/// `…Unreachable` for a reason the list does not know.
fn failure_warning(reason: &str, unreachable: &'static str) -> &'static str {
    FAILURE_WARNINGS
        .into_iter()
        .find(|w| *w == reason)
        .unwrap_or(unreachable)
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

/// A mirrored resource whose source was never read yet has no content of its own: writing its
/// empty spec to Redis would wipe Bifrost's cache, so it waits for the first sync. (A status
/// written before `lastSynced` existed has only the database's field.)
pub(super) fn wait_for_first_sync(
    obj: &WorkspaceRequirements,
    draft: &mut Draft,
) -> ControlFlow<Action> {
    let source = obj.spec.source.as_ref();
    let s3 = source.and_then(|s| s.s3.as_ref()).is_some();
    let mirrored = source.is_some_and(|s| s.database.is_some() || s.s3.is_some());
    let status = &mut draft.status;
    let synced_once =
        status.last_synced.is_some() || (!s3 && status.last_synced_from_database.is_some());
    if !mirrored || synced_once {
        return ControlFlow::Continue(());
    }
    let SourceNames {
        waiting_reason,
        waiting: why,
        ..
    } = SourceNames::of(s3);
    let conditions = &mut draft.conditions;
    conditions.set_unknown(ConditionType::Valid, waiting_reason, why);
    conditions.set_unknown(ConditionType::CacheWarmed, waiting_reason, why);
    conditions.set_unknown(ConditionType::RolledOut, waiting_reason, why);
    let message = conditions.first_problem(&[ConditionType::Synced]);
    conditions.set(ConditionType::Ready, false, "WaitingForDatabase", &message);
    status.package_count = None;
    ControlFlow::Break(Action::requeue(RETRY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_read_is_warned_about_under_its_own_reason() {
        for reason in [
            "S3Unreachable",
            "AccessDenied",
            "NotFound",
            "InvalidContent",
        ] {
            assert_eq!(failure_warning(reason, "S3Unreachable"), reason);
        }
        assert_eq!(
            failure_warning("DatabaseUnreachable", "DatabaseUnreachable"),
            "DatabaseUnreachable"
        );
        assert_eq!(
            failure_warning("SomethingNew", "DatabaseUnreachable"),
            "DatabaseUnreachable"
        );
    }
}
