//! Replacing pods that started without the packages.
//!
//! With `failurePolicy: Ignore`, a labelled pod created while no operator replica could answer
//! (all down, an upgrade gone wrong) starts uninjected: it runs, without the packages, and its
//! workload's controller has nothing left to do. Once the operator is back, such a workload
//! (`Verdict::PodsUninjected`, its template already carrying the current hash) is rolled out
//! again, the way `kubectl rollout restart` does it: a pod-template annotation with the time,
//! so its pods are re-created, now injected. At most once per workload per
//! [`REINJECT_INTERVAL`], so a webhook that still cannot be reached does not turn into a restart
//! loop; meanwhile `status.workloads[].uninjectedPods` and the `uninjected_pods` metric count them.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::info;

use super::context::Context;
use super::progress::Verdict;
use crate::crd::{REINJECTED_ANNOTATION, RolloutStrategy, WorkloadStatus, WorkspaceRequirements};

/// The shortest time between two re-rollouts of one workload for uninjected pods.
pub const REINJECT_INTERVAL: Duration = Duration::from_secs(300);

/// When each (namespace, kind, name) workload was last rolled out for uninjected pods.
#[derive(Default)]
pub struct Reinjected(Mutex<HashMap<(String, String, String), Instant>>);

impl Reinjected {
    /// Whether the workload may be rolled again now; if so, remember `now` as its last time.
    fn take(&self, key: (String, String, String), now: Instant) -> bool {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !due(last.get(&key).copied(), now) {
            return false;
        }
        last.insert(key, now);
        true
    }
}

/// Whether a workload last rolled for uninjected pods at `last` may be rolled again at `now`.
pub fn due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= REINJECT_INTERVAL)
}

/// The workloads to roll again: up to date, their pods uninjected, under `Automatic`.
pub fn candidates<'a>(
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

/// Roll out again each workload whose pods started uninjected (see the module doc). Returns the
/// "Kind/name" of those patched now.
pub async fn replace_uninjected(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    workloads: &[WorkloadStatus],
    verdicts: &[Verdict],
) -> Vec<String> {
    let ns = obj.namespace().unwrap_or_default();
    let mut rolled = Vec::new();
    for w in candidates(&obj.spec.rollout.strategy, workloads, verdicts) {
        let key = (ns.clone(), w.kind.clone(), w.name.clone());
        if !ctx.reinjected.take(key, Instant::now()) {
            continue;
        }
        let name = format!("{}/{}", w.kind, w.name);
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let annotation = (REINJECTED_ANNOTATION, now.as_str());
        match super::rollout::annotate_template(ctx, &ns, &w.kind, &w.name, &[annotation]).await {
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
    rolled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(name: &str, up_to_date: bool) -> WorkloadStatus {
        WorkloadStatus {
            up_to_date,
            uninjected_pods: Some(1),
            ..super::super::fixtures::workload("Deployment", name)
        }
    }

    #[test]
    fn a_workload_is_rolled_again_at_most_once_per_interval() {
        let t0 = Instant::now();
        assert!(due(None, t0));
        assert!(!due(Some(t0), t0 + Duration::from_secs(1)));
        assert!(!due(
            Some(t0),
            t0 + REINJECT_INTERVAL - Duration::from_millis(1)
        ));
        assert!(due(Some(t0), t0 + REINJECT_INTERVAL));
        let memory = Reinjected::default();
        let key = || ("ns".to_string(), "Deployment".to_string(), "w".to_string());
        assert!(memory.take(key(), t0));
        assert!(!memory.take(key(), t0 + Duration::from_secs(10)));
        let other = ("ns".to_string(), "Deployment".to_string(), "x".to_string());
        assert!(memory.take(other, t0 + Duration::from_secs(10)));
        assert!(memory.take(key(), t0 + REINJECT_INTERVAL));
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
