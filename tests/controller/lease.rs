//! Two replicas: only the lease holder writes, and a standby takes over.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_standby_takes_over() {
    // Two replicas of the operator, lease identities op-a and op-b.
    let ns = Ns::new("lease").await;
    let a = Operator::start(&ns.name, "op-a", &[]);
    let b = Operator::start(&ns.name, "op-b", &[]);
    let spec = json!({"content": "a==1\n", "rollout": {"debounceSeconds": 0}});
    ns.wsreq("default", spec).await;
    ns.wait("default", "Ready", "False", Some("NoWorkloads"))
        .await;
    let leaders: BTreeMap<&str, f64> = [("op-a", &a), ("op-b", &b)]
        .into_iter()
        .map(|(n, o)| (n, o.metric("bifrost_requirements_leader").unwrap_or(-1.0)))
        .collect();
    assert_eq!(
        leaders.values().filter(|v| **v == 1.0).count(),
        1,
        "{leaders:?}"
    );
    let ((leader_name, mut leader), (standby_name, standby)) = if leaders["op-a"] == 1.0 {
        (("op-a", a), ("op-b", b))
    } else {
        (("op-b", b), ("op-a", a))
    };
    assert!(leader.log_text().contains("reconciled"));
    assert!(
        !standby.log_text().contains("reconciled"),
        "the standby reconciled:\n{}",
        standby.log_text()
    );
    // Both series are exported from the start: a missing one is a failure, not a zero.
    for result in ["ok", "error"] {
        assert_eq!(
            standby.metric(&format!(
                "bifrost_requirements_reconciles_total{{result=\"{result}\"}}"
            )),
            Some(0.0),
            "{result}"
        );
    }
    let lease = common::k8s::control_plane().kubectl(&[
        "get",
        "lease",
        "-n",
        &ns.name,
        "bifrost-requirements-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let holder = common::stdout(&lease);
    assert_eq!(holder, leader_name);

    // Stop the leader, whichever it is: the standby takes over and handles a change.
    assert!(leader.stop());
    ns.set_content("default", "a==2\n").await;
    wait_for(&format!("{standby_name} handles the change"), T, || async {
        let obj = ns.get("default").await;
        (obj.status?.content_hash? == content_hash("a==2\n")).then_some(())
    })
    .await;
    assert_eq!(standby.metric("bifrost_requirements_leader"), Some(1.0));
    assert!(
        standby.log_text().contains("became leader"),
        "{}",
        standby.log_text()
    );
}
