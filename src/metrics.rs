//! Prometheus metrics of the operator (served on `/metrics`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::crd::{ConditionType, WorkspaceRequirementsStatus};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub name: String,
    /// `Deployment/<name>` or `StatefulSet/<name>`.
    pub workload: String,
}

/// Every metric the operator exports. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub rollouts: Counter,
    /// Workloads rolled out again because their pods started without the packages.
    pub reinjections: Counter,
    pub redis_warms: Family<ResultLabels, Counter>,
    pub db_syncs: Family<ResultLabels, Counter>,
    pub db_sync_lag: Histogram,
    pub leader: Gauge,
    pub admissions: Family<ResultLabels, Counter>,
    pub admission_duration: Histogram,
    /// Restarts of supervised tasks (see [`crate::supervise`]), by task kind.
    pub task_restarts: crate::supervise::RestartCounter,
    /// 1 while a resource's `Ready` condition is True, 0 otherwise.
    pub resource_ready: Family<ResourceLabels, Gauge>,
    /// `status.workloads[].uninjectedPods`, per resource and workload.
    pub uninjected_pods: Family<WorkloadLabels, Gauge>,
    /// `notAfter` of the certificate the admission webhook serves (unix seconds).
    pub webhook_certificate_expiry: Gauge,
    /// The workloads of each resource that have an `uninjected_pods` series, so the series of a
    /// workload or resource that goes away can be removed (a family cannot list its series).
    recorded: Mutex<BTreeMap<(String, String), Vec<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Register `metric` under `name` and hand it back for the struct that owns it.
fn add_with<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn add<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    add_with(registry, name, help, M::default())
}

fn histogram(start: f64) -> Histogram {
    Histogram::new(exponential_buckets(start, 2.0, 14))
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("bifrost_requirements");
        let metrics = Self {
            task_restarts: add(
                &mut r,
                "task_restarts",
                "Long-running tasks that ended unexpectedly (panic, error, return) and were restarted or stopped the process",
            ),
            reconciles: add(&mut r, "reconciles", "Reconciliations by result"),
            reconcile_errors: add(
                &mut r,
                "reconcile_errors",
                "Failed reconciliations by reason",
            ),
            reconcile_duration: add_with(
                &mut r,
                "reconcile_duration_seconds",
                "Duration of reconciliations",
                histogram(0.001),
            ),
            rollouts: add(
                &mut r,
                "rollouts",
                "Workloads whose pod template hash annotation was patched",
            ),
            reinjections: add(
                &mut r,
                "reinjections",
                "Workloads rolled out again because their pods started without the packages (the webhook was unreachable)",
            ),
            redis_warms: add(&mut r, "redis_warms", "Redis writes by result"),
            db_syncs: add(&mut r, "db_syncs", "Database mirror reads by result"),
            db_sync_lag: add_with(
                &mut r,
                "db_sync_lag_seconds",
                "Time from a database row update to the resource carrying it",
                histogram(0.005),
            ),
            leader: add(&mut r, "leader", "1 while this replica holds the lease"),
            admissions: add(&mut r, "admissions", "Admission reviews by result"),
            admission_duration: add_with(
                &mut r,
                "admission_duration_seconds",
                "Time to answer an admission review",
                histogram(0.0001),
            ),
            resource_ready: add(
                &mut r,
                "resource_ready",
                "1 while the WorkspaceRequirements' Ready condition is True, else 0",
            ),
            uninjected_pods: add(
                &mut r,
                "uninjected_pods",
                "Pods of a labelled workload running without the packages (status.workloads[].uninjectedPods)",
            ),
            webhook_certificate_expiry: add(
                &mut r,
                "webhook_certificate_expiry_timestamp_seconds",
                "When the certificate the admission webhook serves expires (unix seconds)",
            ),
            recorded: Mutex::default(),
            registry: r,
        };
        // Pre-create the label sets so every series is exported from the start (at zero).
        for result in ["ok", "error"] {
            let labels = ResultLabels {
                result: result.into(),
            };
            let _ = metrics.reconciles.get_or_create(&labels);
            let _ = metrics.redis_warms.get_or_create(&labels);
            let _ = metrics.db_syncs.get_or_create(&labels);
        }
        metrics
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub(crate) fn reconciled(&self, elapsed: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.into(),
                })
                .inc();
        }
    }

    pub(crate) fn redis_warm(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.redis_warms
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub(crate) fn db_sync(&self, ok: bool, lag: Option<Duration>) {
        let result = if ok { "ok" } else { "error" };
        self.db_syncs
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        if let Some(lag) = lag {
            self.db_sync_lag.observe(lag.as_secs_f64());
        }
    }

    pub(crate) fn admission(&self, result: &str, elapsed: Duration) {
        self.admission_duration.observe(elapsed.as_secs_f64());
        self.admissions
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    /// The gauges of one resource from the status just computed: `resource_ready` (1 when its
    /// `Ready` condition is True) and, per workload whose pods are known, `uninjected_pods`.
    /// Series of workloads no longer listed are removed.
    pub(crate) fn resource_status(
        &self,
        namespace: &str,
        name: &str,
        status: &WorkspaceRequirementsStatus,
    ) {
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == ConditionType::Ready.as_str() && c.status == "True");
        let resource = ResourceLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.resource_ready
            .get_or_create(&resource)
            .set(i64::from(ready));
        let counted: Vec<(String, i64)> = status
            .workloads
            .iter()
            .filter_map(|w| Some((format!("{}/{}", w.kind, w.name), w.uninjected_pods?.into())))
            .collect();
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        let before = recorded
            .insert(
                (resource.namespace.clone(), resource.name.clone()),
                counted.iter().map(|(w, _)| w.clone()).collect(),
            )
            .unwrap_or_default();
        let labels = |workload: &str| WorkloadLabels {
            namespace: namespace.into(),
            name: name.into(),
            workload: workload.into(),
        };
        for gone in before
            .iter()
            .filter(|w| !counted.iter().any(|(c, _)| c == *w))
        {
            self.uninjected_pods.remove(&labels(gone));
        }
        for (workload, n) in &counted {
            self.uninjected_pods
                .get_or_create(&labels(workload))
                .set(*n);
        }
    }

    /// Remove the series of every resource for which `keep(namespace, name)` is false: deleted
    /// resources, or all of them when this replica stops reconciling (the new leader reports
    /// them; a stale series would double them).
    pub(crate) fn retain_resources(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        recorded.retain(|(namespace, name), workloads| {
            if keep(namespace, name) {
                return true;
            }
            for workload in workloads.iter() {
                self.uninjected_pods.remove(&WorkloadLabels {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    workload: workload.clone(),
                });
            }
            self.resource_ready.remove(&ResourceLabels {
                namespace: namespace.clone(),
                name: name.clone(),
            });
            false
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_was_recorded() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(Duration::from_millis(3), Some("RedisUnreachable"));
        m.rollouts.inc();
        let text = m.encode();
        assert!(
            text.contains("bifrost_requirements_reconciles_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "bifrost_requirements_reconcile_errors_total{reason=\"RedisUnreachable\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("bifrost_requirements_rollouts_total 1"),
            "{text}"
        );
        assert!(
            text.contains("bifrost_requirements_reconcile_duration_seconds_count 2"),
            "{text}"
        );
    }

    fn status(ready: &str, workloads: &[(&str, Option<i32>)]) -> WorkspaceRequirementsStatus {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
        WorkspaceRequirementsStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: "R".into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            }],
            workloads: workloads
                .iter()
                .map(|(name, uninjected)| crate::crd::WorkloadStatus {
                    kind: "Deployment".into(),
                    name: (*name).into(),
                    uninjected_pods: *uninjected,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn resource_gauges_follow_the_status_and_go_with_the_resource() {
        let m = Metrics::new();
        let ready = |ns: &str, name: &str| {
            format!("bifrost_requirements_resource_ready{{namespace=\"{ns}\",name=\"{name}\"}}")
        };
        let pods = |w: &str| {
            format!(
                "bifrost_requirements_uninjected_pods{{namespace=\"ns\",name=\"a\",workload=\"Deployment/{w}\"}}"
            )
        };
        m.resource_status(
            "ns",
            "a",
            &status("False", &[("x", Some(2)), ("y", Some(0))]),
        );
        m.resource_status("ns", "b", &status("True", &[]));
        let text = m.encode();
        assert!(
            text.contains(&format!("{} 0\n", ready("ns", "a"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("{} 1\n", ready("ns", "b"))),
            "{text}"
        );
        assert!(text.contains(&format!("{} 2\n", pods("x"))), "{text}");
        assert!(text.contains(&format!("{} 0\n", pods("y"))), "{text}");

        // y is no longer labelled, x's pods are not known: neither keeps a series.
        m.resource_status("ns", "a", &status("True", &[("x", None)]));
        let text = m.encode();
        assert!(
            text.contains(&format!("{} 1\n", ready("ns", "a"))),
            "{text}"
        );
        assert!(!text.contains("uninjected_pods{"), "{text}");

        m.resource_status("ns", "a", &status("True", &[("x", Some(1))]));
        m.retain_resources(|_, name| name != "a");
        let text = m.encode();
        assert!(!text.contains(&ready("ns", "a")), "{text}");
        assert!(!text.contains("uninjected_pods{"), "{text}");
        assert!(text.contains(&ready("ns", "b")), "{text}");
        m.retain_resources(|_, _| false);
        assert!(!m.encode().contains("resource_ready{"));
    }
}
