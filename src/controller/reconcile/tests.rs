//! The pure decisions of a reconcile: Ready from the other conditions and failed packages.

use super::{packages_failed, readiness};
use crate::controller::fixtures;
use crate::controller::status::{Conditions, STEPS};
use crate::crd::{ConditionType, WorkloadStatus};

fn workload(name: &str, failed: Option<Vec<&str>>) -> WorkloadStatus {
    WorkloadStatus {
        failed_packages: failed.map(|f| f.into_iter().map(String::from).collect()),
        ..fixtures::workload("Deployment", name)
    }
}

#[test]
fn failed_packages_name_each_workload() {
    assert_eq!(packages_failed(&[workload("a", None)]), None);
    assert_eq!(
        packages_failed(&[
            workload("a", Some(vec!["x (no wheel)", "y (not found)"])),
            workload("b", None),
            workload("c", Some(vec!["x (no wheel)"])),
        ])
        .unwrap(),
        "rolled out, but packages failed to install and the workers run without them: \
         Deployment/a: x (no wheel), y (not found); Deployment/c: x (no wheel)"
    );
}

#[test]
fn ready_names_the_first_problem_or_the_failed_packages() {
    let mut conditions = Conditions::new(Vec::new(), Some(1));
    for type_ in STEPS {
        conditions.set(type_, true, "Fine", "fine");
    }
    assert_eq!(
        readiness(&conditions, None, None),
        (
            true,
            "Ready".into(),
            "content valid, cached and rolled out".into()
        )
    );
    assert_eq!(
        readiness(&conditions, Some("x failed".into()), None),
        (false, "PackagesFailed".into(), "x failed".into())
    );
    conditions.set(
        ConditionType::Snapshotted,
        false,
        "SnapshotFailed",
        "refused",
    );
    conditions.set(
        ConditionType::RolledOut,
        false,
        "InstallFailing",
        "crashing",
    );
    assert_eq!(
        readiness(&conditions, Some("x failed".into()), None),
        (
            false,
            "SnapshotFailed".into(),
            "Snapshotted: refused".into()
        )
    );
}

#[test]
fn no_workloads_is_not_ready_once_everything_else_is() {
    let mut conditions = Conditions::new(Vec::new(), Some(1));
    for type_ in STEPS {
        conditions.set(type_, true, "Fine", "fine");
    }
    let none = || Some("no Deployment or StatefulSet … Deployment/worker …".to_string());
    assert_eq!(
        readiness(&conditions, None, none()),
        (false, "NoWorkloads".into(), none().unwrap())
    );
    // An earlier problem is still the one Ready names.
    conditions.set(
        ConditionType::CacheWarmed,
        false,
        "RedisUnreachable",
        "down",
    );
    assert_eq!(
        readiness(&conditions, None, none()).1,
        "RedisUnreachable".to_string()
    );
}
