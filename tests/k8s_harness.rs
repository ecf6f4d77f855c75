//! Smoke test of the test control plane (tests/common/k8s.rs): the API server stores objects,
//! server-side apply works, and the controller-manager turns a Deployment into a ReplicaSet and
//! a Pod (which stays Pending: there is no scheduler).
mod common;

use common::k8s::control_plane;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use std::time::{Duration, Instant};

const NS: &str = "harness-smoke";

#[tokio::test]
async fn control_plane_runs_deployments_and_server_side_apply() {
    let cp = control_plane();
    assert!(cp.server.starts_with("https://127.0.0.1:"), "{}", cp.server);
    let client = cp.client().await;

    let version = client.apiserver_version().await.expect("GET /version");
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "20")
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}
    }))
    .unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");

    // Server-side apply of a ConfigMap, twice (create, then update by the same manager).
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let ssa = PatchParams::apply("bifrost-harness").force();
    for value in ["one", "two"] {
        let cm = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "applied", "namespace": NS},
            "data": {"key": value}
        });
        let applied = configmaps
            .patch("applied", &ssa, &Patch::Apply(&cm))
            .await
            .expect("server-side apply ConfigMap");
        assert_eq!(applied.data.unwrap()["key"], value);
        let managers: Vec<_> = applied
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.manager)
            .collect();
        assert!(
            managers.iter().any(|m| m == "bifrost-harness"),
            "{managers:?}"
        );
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "busybox", "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "busybox"}},
            "template": {
                "metadata": {"labels": {"app": "busybox"}},
                "spec": {"containers": [{
                    "name": "busybox", "image": "busybox",
                    "command": ["sleep", "3600"]
                }]}
            }
        }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create Deployment");

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = ListParams::default().labels("app=busybox");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (rs_names, pod) = loop {
        let rs = replicasets.list(&selector).await.expect("list ReplicaSets");
        let ps = pods.list(&selector).await.expect("list Pods");
        let rs_names: Vec<String> = rs
            .items
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        if !rs_names.is_empty() && !ps.items.is_empty() {
            break (rs_names, ps.items.into_iter().next().unwrap());
        }
        if Instant::now() > deadline {
            panic!(
                "no ReplicaSet+Pod within 60s (ReplicaSets: {rs_names:?}, pods: {})\n\
                 controller-manager log tail:\n{}",
                ps.items.len(),
                cp.log_tail("kube-controller-manager", 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let owner = &pod.metadata.owner_references.as_ref().expect("pod owner")[0];
    assert_eq!(owner.kind, "ReplicaSet");
    assert!(
        rs_names.contains(&owner.name),
        "{rs_names:?} vs {}",
        owner.name
    );
    let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
    assert_eq!(phase, "Pending", "no scheduler: pods stay Pending");

    // kubectl (built one, or the one on PATH) talks to the same server.
    let out = cp.kubectl(&["get", "deployment", "busybox", "-n", NS, "-o", "name"]);
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "deployment.apps/busybox"
    );
}
