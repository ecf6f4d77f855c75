//! The status a reconcile writes: conditions (Valid, Synced, Resolved, CacheWarmed,
//! Snapshotted, RolledOut, Ready) and the [`Draft`] each step of a reconcile adds to. Pure: the
//! reconcile writes the finished draft.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::progress::Verdict;
use crate::crd::{
    ConditionType, WorkloadStatus, WorkspaceRequirements, WorkspaceRequirementsStatus,
};

/// How often Redis is checked (and refreshed when needed) at the latest.
pub(super) const REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconcile step.
pub(super) const RETRY: Duration = Duration::from_secs(5);

/// The conditions Ready sums up, in the order they are listed (Ready after them).
pub(super) const STEPS: [ConditionType; 6] = ConditionType::STEPS;

/// Now, to the second (Kubernetes serializes times with second precision; a finer value would
/// differ from what is read back and make an unchanged status look changed).
fn now() -> Timestamp {
    let t = Timestamp::now();
    t.round(k8s_openapi::jiff::Unit::Second).unwrap_or(t)
}

pub(crate) fn now_rfc3339() -> String {
    now().to_string()
}

use crate::text::truncate;

/// Conditions being rebuilt; `lastTransitionTime` only moves when the status value changes.
pub(crate) struct Conditions {
    list: Vec<Condition>,
    generation: Option<i64>,
}

impl Conditions {
    pub(crate) fn new(list: Vec<Condition>, generation: Option<i64>) -> Self {
        Self { list, generation }
    }

    pub(crate) fn set(&mut self, type_: ConditionType, value: bool, reason: &str, message: &str) {
        self.put(type_, if value { "True" } else { "False" }, reason, message);
    }

    pub(crate) fn set_unknown(&mut self, type_: ConditionType, reason: &str, message: &str) {
        self.put(type_, "Unknown", reason, message);
    }

    /// Drop the condition of `type_` (a condition about something no longer asked for).
    pub(crate) fn remove(&mut self, type_: ConditionType) {
        self.list.retain(|c| c.type_ != type_.as_str());
    }

    fn put(&mut self, type_: ConditionType, status: &str, reason: &str, message: &str) {
        let type_ = type_.as_str();
        let transition = match self.list.iter().find(|c| c.type_ == type_) {
            Some(c) if c.status == status => c.last_transition_time.clone(),
            _ => Time(now()),
        };
        self.list.retain(|c| c.type_ != type_);
        self.list.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            // Last line of defence: no connection string reaches a status, whatever built it.
            message: truncate(&crate::redact::text(message), 4000),
            last_transition_time: transition,
            observed_generation: self.generation,
        });
    }

    fn is_true(&self, type_: ConditionType) -> bool {
        self.list
            .iter()
            .any(|c| c.type_ == type_.as_str() && c.status == "True")
    }

    pub(crate) fn all_true(&self, types: &[ConditionType]) -> bool {
        types.iter().all(|t| self.is_true(*t))
    }

    /// The condition of `type_`, if set.
    fn get(&self, type_: ConditionType) -> Option<&Condition> {
        self.list.iter().find(|c| c.type_ == type_.as_str())
    }

    /// "Type: message" of the first condition (in `types` order) that is not True.
    pub(crate) fn first_problem(&self, types: &[ConditionType]) -> String {
        types
            .iter()
            .filter_map(|t| self.get(*t))
            .find(|c| c.status != "True")
            .map(|c| format!("{}: {}", c.type_, c.message))
            .unwrap_or_default()
    }

    /// The reason of the first condition (in `types` order) that is not True.
    pub(crate) fn first_problem_reason(&self, types: &[ConditionType]) -> String {
        types
            .iter()
            .filter_map(|t| self.get(*t))
            .find(|c| c.status != "True")
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "NotReady".into())
    }

    pub(crate) fn into_vec(mut self) -> Vec<Condition> {
        self.list.sort_by_key(|c| {
            STEPS
                .iter()
                .position(|o| o.as_str() == c.type_)
                .unwrap_or(STEPS.len() + usize::from(c.type_ != ConditionType::Ready.as_str()))
        });
        self.list
    }
}

/// Why a step stops the reconcile, and what the stop leaves in the status. The reconcile does
/// the rest the same way for every step ([`Conditions::halted`], then the workloads observed as
/// they are, the Warning, the action): no step writes its own "stop here".
pub(super) struct Halt {
    /// The step's condition, set False with `reason` and `message` (Ready says it too).
    pub(super) at: ConditionType,
    pub(super) reason: &'static str,
    pub(super) message: String,
    /// What each later condition says meanwhile: its status (`None`: Unknown) and message.
    pub(super) later: Vec<(ConditionType, Option<bool>, String)>,
    /// The Warning's action; it is published once per reason, or once per `once_per` value.
    pub(super) action: &'static str,
    pub(super) once_per: Option<String>,
    /// Whether the watchdog stops re-warming Redis (the content is not the one to keep there).
    pub(super) unwatch: bool,
    /// When to come back.
    pub(super) then: kube::runtime::controller::Action,
}

impl Conditions {
    /// The conditions of a stop: the step's condition False, the later ones as it says, Ready
    /// False naming the step.
    pub(super) fn halted(&mut self, halt: &Halt) {
        self.set(halt.at, false, halt.reason, &halt.message);
        for (type_, status, message) in &halt.later {
            match status {
                Some(value) => self.set(*type_, *value, halt.reason, message),
                None => self.set_unknown(*type_, halt.reason, message),
            }
        }
        let ready = format!("{}: {}", halt.at, halt.message);
        self.set(ConditionType::Ready, false, halt.reason, &ready);
    }
}

/// The status one reconcile builds: what was read, what will be written, and when to look
/// again. Each step adds its condition; [`Draft::write`] patches it only when it changed.
pub(super) struct Draft {
    pub(super) old: WorkspaceRequirementsStatus,
    pub(super) status: WorkspaceRequirementsStatus,
    pub(super) conditions: Conditions,
    pub(super) requeue: Duration,
    /// The content's lock, when the controller resolved it (the snapshot carries it).
    pub(super) lock: Option<crate::lock::Lock>,
}

impl Draft {
    pub(super) fn of(obj: &WorkspaceRequirements) -> Self {
        let old = obj.status.clone().unwrap_or_default();
        let mut status = old.clone();
        let conditions = Conditions::new(
            std::mem::take(&mut status.conditions),
            obj.metadata.generation,
        );
        Self {
            old,
            status,
            conditions,
            requeue: REFRESH_INTERVAL,
            lock: None,
        }
    }

    /// Look again within `after` at the latest.
    pub(super) fn recheck_within(&mut self, after: Duration) {
        self.requeue = self.requeue.min(after);
    }

    /// The labelled workloads as found, and how many of them run the current hash.
    pub(super) fn set_workloads(&mut self, workloads: Vec<WorkloadStatus>, verdicts: &[Verdict]) {
        self.status.workloads_up_to_date = Some(super::coverage::up_to_date(verdicts));
        self.status.workloads = workloads;
    }

    /// The finished status, and the merge patch that writes it when it differs from what was
    /// read (`None`: nothing to write). The reconcile writes it, once, at its end.
    pub(super) fn finish(mut self) -> (WorkspaceRequirementsStatus, Option<serde_json::Value>) {
        self.status.conditions = self.conditions.into_vec();
        let patch = (self.old != self.status)
            .then(|| json!({ "status": merge_patch(&self.old, &self.status) }));
        (self.status, patch)
    }
}

/// `new` as a merge patch over `old`: a field `new` leaves out (e.g. `lock` once the pods
/// resolve) is sent as null, which removes it; otherwise the merge would keep the old value.
fn merge_patch(
    old: &WorkspaceRequirementsStatus,
    new: &WorkspaceRequirementsStatus,
) -> serde_json::Value {
    let mut patch = json!(new);
    if let (serde_json::Value::Object(old), Some(patch)) = (json!(old), patch.as_object_mut()) {
        for gone in old
            .keys()
            .filter(|k| !patch.contains_key(*k))
            .cloned()
            .collect::<Vec<_>>()
        {
            patch.insert(gone, serde_json::Value::Null);
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_left_out_are_removed_by_the_patch() {
        let old = WorkspaceRequirementsStatus {
            package_count: Some(2),
            lock: Some(Default::default()),
            short_hash: Some("abc".into()),
            ..Default::default()
        };
        let new = WorkspaceRequirementsStatus {
            short_hash: Some("def".into()),
            ..Default::default()
        };
        assert_eq!(
            merge_patch(&old, &new),
            json!({"shortHash": "def", "packageCount": null, "lock": null})
        );
        assert_eq!(merge_patch(&new, &new), json!({"shortHash": "def"}));
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut c = Conditions::new(vec![], Some(1));
        c.set(ConditionType::Ready, false, "NotReady", "x");
        let first = c.into_vec();
        let t0 = first[0].last_transition_time.clone();
        let mut c = Conditions::new(first, Some(2));
        c.set(ConditionType::Ready, false, "NotReady", "y");
        let second = c.into_vec();
        assert_eq!(second[0].last_transition_time, t0);
        assert_eq!(second[0].message, "y");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn order_and_problems() {
        let mut c = Conditions::new(vec![], None);
        c.set(ConditionType::Ready, false, "NotReady", "");
        c.set(ConditionType::RolledOut, false, "Debouncing", "waiting");
        c.set(
            ConditionType::Valid,
            true,
            "RequirementsValid",
            "1 package(s)",
        );
        assert!(!c.all_true(&[ConditionType::Valid, ConditionType::RolledOut]));
        assert_eq!(
            c.first_problem(&[ConditionType::Valid, ConditionType::RolledOut]),
            "RolledOut: waiting"
        );
        assert_eq!(
            c.first_problem_reason(&[ConditionType::Valid, ConditionType::RolledOut]),
            "Debouncing"
        );
        assert_eq!(c.first_problem_reason(&[ConditionType::Valid]), "NotReady");
        let types: Vec<_> = c.into_vec().into_iter().map(|c| c.type_).collect();
        assert_eq!(types, ["Valid", "RolledOut", "Ready"]);
    }
}
