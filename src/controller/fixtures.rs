//! Builders shared by the controller's unit tests.

use crate::crd::WorkloadStatus;

/// A workload's status entry, up to date, with nothing else known.
pub(crate) fn workload(kind: &str, name: &str) -> WorkloadStatus {
    WorkloadStatus {
        kind: kind.into(),
        name: name.into(),
        hash: None,
        up_to_date: true,
        replicas: None,
        updated_replicas: None,
        ready_updated_replicas: None,
        uninjected_pods: None,
        mode: None,
        failed_packages: None,
        message: None,
    }
}
