//! The rollout's pure decisions: Manual reports, the debounce window, a new lock.

use std::time::Duration;

use super::{debouncing, manual, rolls_for_lock};
use crate::controller::fixtures::workload;

#[test]
fn debounce_waits_out_the_rest_of_the_window() {
    let said = debouncing(Duration::from_secs(10), Duration::from_millis(2500), 2).unwrap();
    assert_eq!(said.reason, "Debouncing");
    assert!(!said.all_up_to_date);
    assert_eq!(said.requeue_after, Some(Duration::from_millis(7500)));
    assert_eq!(
        said.message,
        "rolling 2 workload(s) in 7.5 s unless the content changes again (debounce 10 s)"
    );
    assert!(debouncing(Duration::from_secs(10), Duration::from_secs(10), 2).is_none());
    assert!(debouncing(Duration::ZERO, Duration::ZERO, 1).is_none());
}

#[test]
fn manual_names_the_stale_workloads_and_the_annotation() {
    let workloads = [
        workload("Deployment", "a"),
        workload("StatefulSet", "b"),
        workload("Deployment", "c"),
    ];
    let said = manual(&workloads, &[0, 2], "abc");
    assert_eq!(said.reason, "ManualRolloutPending");
    assert_eq!(said.requeue_after, None);
    assert_eq!(
        said.message,
        "strategy Manual: 2 workload(s) carry an older hash (Deployment/a, Deployment/c); \
         set their pod-template annotation bifrost.io/requirements-hash=abc to roll them"
    );
}

#[test]
fn a_new_lock_rolls_a_template_rolled_for_another_or_none() {
    assert!(
        rolls_for_lock(Some("none"), Some("abc")),
        "the learned interpreter's lock"
    );
    assert!(
        rolls_for_lock(Some("abc"), Some("def")),
        "another lock of the same content"
    );
    assert!(
        !rolls_for_lock(Some("abc"), Some("abc")),
        "a restart rolls nothing"
    );
    assert!(
        !rolls_for_lock(None, Some("abc")),
        "rolled by an older operator"
    );
    assert!(
        !rolls_for_lock(Some("abc"), None),
        "losing the lock rolls nothing"
    );
    assert!(!rolls_for_lock(Some("none"), None));
}
