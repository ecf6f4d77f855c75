//! Prometheus metrics of the operator (served on `/metrics`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Every metric the operator exports. Cheap to share behind an `Arc`.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_errors: Family<ReasonLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub rollouts: Counter,
    pub redis_warms: Family<ResultLabels, Counter>,
    pub db_syncs: Family<ResultLabels, Counter>,
    pub db_sync_lag: Histogram,
    pub leader: Gauge,
    pub admissions: Family<ResultLabels, Counter>,
    pub admission_duration: Histogram,
    /// Restarts of supervised tasks (see [`crate::supervise`]), by task kind.
    pub task_restarts: crate::supervise::RestartCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bifrost_requirements");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_errors = Family::<ReasonLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let rollouts = Counter::default();
        let redis_warms = Family::<ResultLabels, Counter>::default();
        let db_syncs = Family::<ResultLabels, Counter>::default();
        let db_sync_lag = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        let leader = Gauge::default();
        let admissions = Family::<ResultLabels, Counter>::default();
        let admission_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 14));
        let task_restarts = crate::supervise::RestartCounter::default();
        registry.register(
            "task_restarts",
            "Long-running tasks that ended unexpectedly (panic, error, return) and were restarted or stopped the process",
            task_restarts.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciliations by result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciliations by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciliations",
            reconcile_duration.clone(),
        );
        registry.register(
            "rollouts",
            "Workloads whose pod template hash annotation was patched",
            rollouts.clone(),
        );
        registry.register("redis_warms", "Redis writes by result", redis_warms.clone());
        registry.register(
            "db_syncs",
            "Database mirror reads by result",
            db_syncs.clone(),
        );
        registry.register(
            "db_sync_lag_seconds",
            "Time from a database row update to the resource carrying it",
            db_sync_lag.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the lease",
            leader.clone(),
        );
        registry.register(
            "admissions",
            "Admission reviews by result",
            admissions.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review",
            admission_duration.clone(),
        );
        // Pre-create the label sets so every series is exported from the start (at zero).
        for result in ["ok", "error"] {
            let labels = ResultLabels {
                result: result.into(),
            };
            let _ = reconciles.get_or_create(&labels);
            let _ = redis_warms.get_or_create(&labels);
            let _ = db_syncs.get_or_create(&labels);
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            rollouts,
            redis_warms,
            db_syncs,
            db_sync_lag,
            leader,
            admissions,
            admission_duration,
            task_restarts,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reconciled(&self, elapsed: Duration, error: Option<&'static str>) {
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

    pub fn redis_warm(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.redis_warms
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn db_sync(&self, ok: bool, lag: Option<Duration>) {
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

    pub fn admission(&self, result: &str, elapsed: Duration) {
        self.admission_duration.observe(elapsed.as_secs_f64());
        self.admissions
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
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
}
