//! Two replicas: only the lease holder writes, and a standby takes over.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_writes_and_a_standby_takes_over() {
    let (client, ns) = namespace("lease").await;
    let mut a = Operator::start(&ns, "op-a", &[]);
    let b = Operator::start(&ns, "op-b", &[]);
    create_wsreq(
        &client,
        &ns,
        "default",
        json!({"content": "a==1\n", "rollout": {"debounceSeconds": 0}}),
    )
    .await;
    wait_condition(
        &client,
        &ns,
        "default",
        "Ready",
        "False",
        Some("NoWorkloads"),
        T,
    )
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
    let (leader, standby) = if leaders["op-a"] == 1.0 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(leader.log_text().contains("reconciled"));
    assert!(
        !standby.log_text().contains("reconciled"),
        "the standby reconciled:\n{}",
        standby.log_text()
    );
    assert_eq!(
        standby
            .metric("bifrost_requirements_reconciles_total")
            .unwrap_or(0.0),
        0.0
    );
    let lease = common::k8s::control_plane().kubectl(&[
        "get",
        "lease",
        "-n",
        &ns,
        "bifrost-requirements-operator",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    let holder = common::stdout(&lease);
    assert!(holder == "op-a" || holder == "op-b", "{holder}");

    // Stop op-a whichever it is; if it was the leader, op-b takes over and handles a change.
    let a_was_leader = leaders["op-a"] == 1.0;
    assert!(a.stop());
    set_content(&client, &ns, "default", "a==2\n").await;
    wait_for("op-b handles the change", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        (obj.status?.content_hash? == content_hash("a==2\n")).then_some(())
    })
    .await;
    assert_eq!(b.metric("bifrost_requirements_leader"), Some(1.0));
    if a_was_leader {
        assert!(b.log_text().contains("became leader"));
    }
}
