//! Replacing pods that started without the packages.
//!
//! With `failurePolicy: Ignore`, a labelled pod created while no operator replica could answer
//! (all down, an upgrade gone wrong) starts uninjected: it runs, without the packages, and its
//! workload's controller has nothing left to do. Once the operator is back, such a workload
//! (`Verdict::PodsUninjected`, its template already carrying the current hash) is rolled out
//! again, the way `kubectl rollout restart` does it: a pod-template annotation with the time,
//! so its pods are re-created, now injected.
//!
//! Not before [`REINJECT_GRACE`] after the controller started: a replica that has just come back
//! leads before the API server sees its webhook endpoint ready, and pods rolled then would start
//! uninjected again. Then at most once per workload per [`REINJECT_INTERVAL`], so a webhook that
//! still cannot be reached does not turn into a restart loop; meanwhile
//! `status.workloads[].uninjectedPods` and the `uninjected_pods` metric count them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::info;

use crate::controller::context::Context;
use crate::controller::progress::Verdict;
use crate::crd::{REINJECTED_ANNOTATION, RolloutStrategy, WorkloadStatus, WorkspaceRequirements};

pub(crate) use crate::controller::progress::REINJECT_INTERVAL;

/// How long after the controller started it first rolls a workload again: the readiness probe
/// of its replica and the Endpoints the API server calls the webhook at must catch up first.
const REINJECT_GRACE: Duration = Duration::from_secs(20);

/// When each (namespace, kind, name) workload was last rolled out again for uninjected pods,
/// and when the controller holding this memory started.
pub(crate) struct Reinjected {
    started: Instant,
    last: Mutex<HashMap<(String, String, String), Instant>>,
}

impl Default for Reinjected {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last: Default::default(),
        }
    }
}

impl Reinjected {
    /// `None`: the workload may be rolled again now (and `now` is remembered as its last time);
    /// `Some(wait)`: not before `wait`.
    fn take(&self, key: (String, String, String), now: Instant) -> Option<Duration> {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(wait) = wait(self.started, last.get(&key).copied(), now) {
            return Some(wait);
        }
        last.insert(key, now);
        None
    }
}

/// How long a workload last rolled for uninjected pods at `last`, by a controller that started
/// at `started`, must still wait at `now`; `None` when it may be rolled now.
pub(crate) fn wait(started: Instant, last: Option<Instant>, now: Instant) -> Option<Duration> {
    let since_start = now.saturating_duration_since(started);
    let since_last = last.map_or(REINJECT_INTERVAL, |t| now.saturating_duration_since(t));
    let left = REINJECT_GRACE
        .saturating_sub(since_start)
        .max(REINJECT_INTERVAL.saturating_sub(since_last));
    (!left.is_zero()).then_some(left)
}

/// The workloads to roll again: up to date, their pods uninjected, under `Automatic`.
fn candidates<'a>(
    strategy: &RolloutStrategy,
    workloads: &'a [WorkloadStatus],
    verdicts: &[Verdict],
) -> Vec<&'a WorkloadStatus> {
    if *strategy != RolloutStrategy::Automatic {
        return Vec::new();
    }
    workloads
        .iter()
        .zip(verdicts)
        .filter(|(w, v)| w.up_to_date && matches!(v, Verdict::PodsUninjected(_)))
        .map(|(w, _)| w)
        .collect()
}

/// Roll out again each workload whose pods started uninjected (see the module doc). Returns
/// when to look again for those that must still wait.
pub(crate) async fn replace_uninjected(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    workloads: &[WorkloadStatus],
    verdicts: &[Verdict],
) -> Option<Duration> {
    let ns = obj.namespace().unwrap_or_default();
    let mut rolled = Vec::new();
    let mut again: Option<Duration> = None;
    for w in candidates(&obj.spec.rollout.strategy, workloads, verdicts) {
        let key = (ns.clone(), w.kind.clone(), w.name.clone());
        if let Some(wait) = ctx.memory::<Reinjected>().take(key, Instant::now()) {
            again = Some(again.map_or(wait, |a| a.min(wait)));
            continue;
        }
        let name = format!("{}/{}", w.kind, w.name);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let annotation = (REINJECTED_ANNOTATION, now.as_str());
        match ctx
            .annotate_template(&ns, &w.kind, &w.name, &[annotation])
            .await
        {
            Ok(()) => {
                ctx.metrics.reinjections.inc();
                info!(workload = %name, uninjected = ?w.uninjected_pods, "rolling out again: pods started without the packages");
                rolled.push(name);
            }
            Err(e) => info!(workload = %name, error = %e, "cannot roll out again"),
        }
    }
    if !rolled.is_empty() {
        let note = format!(
            "{} had pods started without the packages (the webhook was unreachable when they were \
             created): rolled out again so its pods are re-created injected (at most once per {} s)",
            rolled.join(", "),
            REINJECT_INTERVAL.as_secs()
        );
        ctx.publish(
            obj,
            EventType::Normal,
            "ReplacingUninjected",
            note,
            "Reinject",
        )
        .await;
    }
    again
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, up_to_date: bool) -> WorkloadStatus {
        WorkloadStatus {
            up_to_date,
            uninjected_pods: Some(1),
            ..crate::controller::fixtures::workload("Deployment", name)
        }
    }

    #[test]
    fn a_workload_is_rolled_again_after_the_grace_then_at_most_once_per_interval() {
        let t0 = Instant::now();
        let s = |secs: u64| Duration::from_secs(secs);
        assert_eq!(
            wait(t0, None, t0),
            Some(REINJECT_GRACE),
            "not right after the start"
        );
        assert_eq!(wait(t0, None, t0 + s(5)), Some(REINJECT_GRACE - s(5)));
        assert_eq!(wait(t0, None, t0 + REINJECT_GRACE), None);
        let at = t0 + s(100);
        assert_eq!(
            wait(t0, Some(at), at + s(1)),
            Some(REINJECT_INTERVAL - s(1))
        );
        assert_eq!(wait(t0, Some(at), at + REINJECT_INTERVAL), None);
        let memory = Reinjected {
            started: t0,
            last: Default::default(),
        };
        let key = || ("ns".to_string(), "Deployment".to_string(), "w".to_string());
        assert_eq!(memory.take(key(), t0 + s(1)), Some(REINJECT_GRACE - s(1)));
        assert_eq!(memory.take(key(), at), None);
        assert_eq!(
            memory.take(key(), at + s(10)),
            Some(REINJECT_INTERVAL - s(10))
        );
        let other = ("ns".to_string(), "Deployment".to_string(), "x".to_string());
        assert_eq!(memory.take(other, at + s(10)), None);
        assert_eq!(memory.take(key(), at + REINJECT_INTERVAL), None);
    }

    #[test]
    fn only_settled_workloads_with_uninjected_pods_under_automatic_are_rolled_again() {
        let workloads = [
            workload("uninjected", true),
            workload("rolling", false),
            workload("fine", true),
            workload("still-rolling", true),
        ];
        let verdicts = [
            Verdict::PodsUninjected("1 pod(s) started without the packages".into()),
            Verdict::PodsUninjected("stale template".into()),
            Verdict::UpToDate,
            Verdict::RollingOut("1 of 2".into()),
        ];
        let names = |s: &RolloutStrategy| -> Vec<String> {
            candidates(s, &workloads, &verdicts)
                .iter()
                .map(|w| w.name.clone())
                .collect()
        };
        assert_eq!(names(&RolloutStrategy::Automatic), ["uninjected"]);
        assert!(names(&RolloutStrategy::Manual).is_empty());
    }
}
