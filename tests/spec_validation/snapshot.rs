//! The snapshot ConfigMap: content too large for it is refused up front, and a refused write is
//! reported, not retried silently.

use super::*;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{Patch, PatchParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_too_large_for_the_snapshot_is_refused_before_anything_is_written() {
    let op = Scenario::start("spec-large", &[]).await;
    let spec = json!({"content": "a==1\n", "cache": op.cache(), "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    // Reconciled through to the end (no workload is labelled: issue 15 says that is not Ready).
    op.wait_within("default", "Ready", "False", Some("NoWorkloads"), T)
        .await;
    let cached = op.cached().await;
    assert_eq!(cached, Some(Payload::new("a==1\n").to_json()));
    let cms = op.api::<ConfigMap>();
    let cm_version = cms
        .get("default-requirements")
        .await
        .unwrap()
        .resource_version();

    // 100,000 lines, ~1.2 MB: the resource is accepted by the API server, its snapshot would not.
    let big: String = (0..100_000).map(|i| format!("p{i:05}==1.0\n")).collect();
    assert!(big.len() >= 1_200_000);
    op.set_content("default", &big).await;
    let obj = op
        .wait_within("default", "Valid", "False", Some("TooLarge"), T)
        .await;
    says(&obj, "Valid", "False", &["spec.content", "262144 bytes"]);
    let status = obj.status.clone().unwrap();
    assert_eq!(status.observed_generation, obj.metadata.generation);
    assert_eq!(
        status.content_hash.as_deref(),
        Some(content_hash(&big).as_str())
    );
    says(&obj, "Ready", "False", &[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(op.cached().await, cached, "Redis changed");
    assert_eq!(
        cms.get("default-requirements")
            .await
            .unwrap()
            .resource_version(),
        cm_version,
        "the ConfigMap changed"
    );
    wait_for("the TooLarge Event", T, || async {
        op.events().contains("TooLarge").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_snapshot_write_is_reported_not_retried_silently() {
    let op = Scenario::start("spec-snapshot", &[]).await;
    let quotas = no_configmaps_allowed(&op).await;
    let content = "a==1\n";
    let spec = json!({"content": content, "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    op.deployment("worker", "default", 1).await;
    let obj = op
        .wait_within("default", "Snapshotted", "False", Some("SnapshotFailed"), T)
        .await;
    // The API server's message, passed on.
    let named = ["default-requirements", "quota"];
    let (_, message) = says(&obj, "Snapshotted", "False", &named);
    eprintln!("Snapshotted=False: {message}");
    says(&obj, "Ready", "False", &["quota"]);
    let status = obj.status.clone().unwrap();
    assert_eq!(status.observed_generation, obj.metadata.generation);
    assert_eq!(
        status.content_hash.as_deref(),
        Some(content_hash(content).as_str())
    );
    wait_for("the SnapshotFailed Event", T, || async {
        op.events().contains("SnapshotFailed").then_some(())
    })
    .await;
    // Nothing rolled while the fallback is missing.
    assert_eq!(op.deployment_hash("worker").await, None);

    quotas
        .delete("no-configmaps", &Default::default())
        .await
        .unwrap();
    let obj = op
        .wait_within("default", "Snapshotted", "True", Some("SnapshotApplied"), T)
        .await;
    // Then it rolls (no kubelet here: the pods never run).
    assert_eq!(condition(&obj, "RolledOut").unwrap().1, "RollingOut");
    let cms = op.api::<ConfigMap>();
    assert!(cms.get_opt("default-requirements").await.unwrap().is_some());
}

/// The namespace allows no ConfigMap: the API server refuses the snapshot.
async fn no_configmaps_allowed(ns: &Ns) -> kube::Api<ResourceQuota> {
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-configmaps"},
        "spec": {"hard": {"configmaps": "0"}}
    }))
    .unwrap();
    let quotas = ns.api::<ResourceQuota>();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // No quota controller runs here: write the status it would (admission reads status.hard).
    quotas
        .patch_status(
            "no-configmaps",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"hard": {"configmaps": "0"}, "used": {"configmaps": "0"}}}),
            ),
        )
        .await
        .unwrap();
    quotas
}
