//! What is refused and who says so: a missing package, a tampered index, an edited lock.

use super::*;

/// Issue 11 end to end: with `onFailure: Continue`, one package the index lacks fails only itself.
/// The pod runs with the others, the resource names the missing one per workload, `Ready=False`
/// says so (reason `PackagesFailed`), and the Warning is published once for the hash, however
/// many pods report it.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_package_fails_only_itself_and_the_resource_names_it() {
    let _serial = serial().await;
    let content = "bifrost-extra==2.0\nbifrost-hello==1.0\nbifrost-missing==9.9\n";
    let (case, hash) = Case::ready("node-partial", content, json!({"onFailure": "Continue"})).await;
    case.worker("worker", true).await;
    let p = case.running("worker", 1, Some(&hash)).await.remove(0);
    let pod = p.name_any();
    let t = container_status(&p, INSTALL_CONTAINER)
        .state
        .and_then(|s| s.terminated)
        .expect("the install container ran to completion");
    let summary = t.message.clone().unwrap_or_default();
    assert_eq!(t.exit_code, 0, "{summary}");
    assert!(
        summary.starts_with("installed 2/3")
            && summary.contains("failed: bifrost-missing (not found on the index)"),
        "{summary}"
    );
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    assert_eq!(case.import(&pod, "bifrost_extra"), "2.0");
    case.cannot_import(&pod, "bifrost_missing", "bifrost_missing imports?");

    let obj = case.wait_reason("Ready", "PackagesFailed").await;
    let (ready, _, message) = condition(&obj, "Ready").unwrap();
    eprintln!("Ready={ready} PackagesFailed: {message}");
    assert_eq!(ready, "False");
    assert!(
        message.contains("Deployment/worker: bifrost-missing (not found on the index)"),
        "{message}"
    );
    // The pods do run the hash: rolled out, with a package short.
    assert_eq!(condition(&obj, "RolledOut").unwrap().0, "True");
    let status = obj.status.clone().unwrap();
    assert_eq!(status.rolled_out_hash.as_deref(), Some(hash.as_str()));
    let w = &status.workloads[0];
    assert_eq!(
        w.failed_packages.as_deref(),
        Some(&["bifrost-missing (not found on the index)".to_string()][..]),
        "{w:?}"
    );

    // A second pod of the same hash reports the same package: still one Warning.
    case.pods().delete(&pod, &Default::default()).await.unwrap();
    let again = case.running("worker", 1, Some(&hash)).await.remove(0);
    assert_ne!(again.name_any(), pod);
    assert_eq!(case.import(&again.name_any(), "bifrost_hello"), "1.0");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = case.wsreq().get("default").await.unwrap();
    assert_eq!(condition(&r, "Ready").unwrap().1, "PackagesFailed");
    case.one_warning("PackagesFailed", &["bifrost-missing"])
        .await;
}

/// Issue 26 on real pods: the index serves a file other than the one requirements.txt pins by
/// hash (the same name and version, other bytes): the controller refuses the lock
/// (`Resolved=False HashMismatch`, naming the line and the index's hash) and nothing rolls; the
/// running worker keeps the last good content.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_index_breaking_a_hash_pin_is_refused_and_nothing_rolls() {
    let _serial = serial().await;
    let (case, hash, pod) = Case::locked_worker("node-hashpin").await;
    let hello = Wheel::new("bifrost_hello", "1.0");
    case.rolled_out(&hash).await;

    // A release the operator never resolved (its resolver caches what it fetched): the index
    // now serves another file for it than the one the user pinned.
    let extra = Wheel::new("bifrost_extra", "2.0").requires("bifrost-hello");
    let real = case.index.sha256(&extra);
    let served = case.index.tamper(&extra);
    let pinned = format!(
        "bifrost-extra==2.0 --hash=sha256:{real}\nbifrost-hello==1.0 --hash=sha256:{}\n",
        case.index.sha256(&hello)
    );
    case.set_content(&pinned).await;
    let obj = case.wait_reason("Resolved", "HashMismatch").await;
    let (resolved, _, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(resolved, "False");
    assert!(
        message.contains(&format!(
            "line 1: `bifrost-extra==2.0 --hash=sha256:{real}`"
        )) && message.contains(&format!("sha256:{served}")),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pods = case.running("worker", 1, Some(&hash)).await;
    assert_eq!(
        pods[0].name_any(),
        pod,
        "the worker kept running, nothing rolled"
    );
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
}

/// Issue 26 on real pods: a snapshot lock edited to another pin (one that satisfies
/// requirements.txt just as well, with the right hash for its file) is refused by the pod's
/// install container, which names both digests; the worker never starts on it. The operator
/// that admits the pod serves only the webhook (its leader Lease is held elsewhere), so no
/// controller writes the snapshot back meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_lock_edited_to_another_pin_is_refused_by_the_pod() {
    let _serial = serial().await;
    let (case, hash, pod) = Case::locked_worker("node-editlock").await;
    case.installed_from_lock(&pod, &hash);
    let recorded = case
        .wsreq()
        .get("default")
        .await
        .unwrap()
        .status
        .unwrap()
        .lock
        .unwrap()
        .sha256;
    only_the_webhook_serves(&case).await;
    let edited = edit_the_snapshot_lock_to_1_1(&case, &recorded).await;
    the_next_pod_refuses_the_edited_lock(&case, &pod, &hash, &recorded, &edited).await;
}

/// Webhook only from here on: the operator moves to a Lease someone else holds for an hour,
/// and the old leader is gone before the snapshot is edited.
async fn only_the_webhook_serves(case: &Case) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let held: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
        "metadata": {"name": "held-elsewhere"},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                 "acquireTime": now, "renewTime": now}
    }))
    .unwrap();
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        case.client.clone(),
        &case.op.namespace,
    )
    .create(&PostParams::default(), &held)
    .await
    .unwrap();
    case.op
        .upgrade(&case.client, &["leaderElection.leaseName=held-elsewhere"])
        .await;
    wait_for("the old leader gone", T, || async {
        (case.op.pods(&case.client).await.len() == 1).then_some(())
    })
    .await;
}

/// The lock edited to 1.1, with 1.1's hash: a lock of requirements.txt all the same. Returns
/// the edited lock.
async fn edit_the_snapshot_lock_to_1_1(case: &Case, recorded: &str) -> String {
    let newer = Wheel::new("bifrost_hello", "1.1");
    case.index.publish(&newer);
    let configmaps = Api::<ConfigMap>::namespaced(case.client.clone(), &case.ns);
    let cm = configmaps.get("default-requirements").await.unwrap();
    let lock = cm.data.unwrap()[LOCK_FILE].clone();
    assert_eq!(content_hash(&lock), recorded);
    let old_hash = case.index.sha256(&Wheel::new("bifrost_hello", "1.0"));
    let edited = lock
        .replace("bifrost-hello==1.0", "bifrost-hello==1.1")
        .replace(&old_hash, &case.index.sha256(&newer));
    assert_ne!(edited, lock);
    let patch = json!({"data": {LOCK_FILE: &edited}});
    merge_patch(&configmaps, "default-requirements", patch).await;
    edited
}

/// The pod replacing `pod` refuses the edited lock (exit 4, naming both digests, in its
/// termination message and its log) and never becomes ready.
async fn the_next_pod_refuses_the_edited_lock(
    case: &Case,
    pod: &str,
    hash: &str,
    recorded: &str,
    edited: &str,
) {
    case.pods().delete(pod, &Default::default()).await.unwrap();
    let api = case.pods();
    let lp = ListParams::default().labels("app=worker");
    let (failed, code, message) =
        wait_for("the new pod's install to refuse the lock", T, || async {
            let list = api.list(&lp).await.ok()?.items;
            list.iter()
                .filter(|p| p.name_any() != pod && pod_hash(p).as_deref() == Some(hash))
                .find_map(|p| install_failure(p).map(|(c, m)| (p.name_any(), c, m)))
        })
        .await;
    eprintln!("install container of {failed} exited {code}: {message}");
    assert_eq!(code, 4, "{message}");
    let log = node().logs(&case.ns, &failed, INSTALL_CONTAINER);
    for text in [&message, &log] {
        assert!(
            text.contains(&format!("its sha256 is {}", content_hash(edited)))
                && text.contains(&format!("not the sha256 {recorded}")),
            "{text}"
        );
    }
    let p = api.get(&failed).await.unwrap();
    assert!(!is_ready(&p), "the worker started on an edited lock");
}
