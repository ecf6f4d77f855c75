//! Smoke test of the test control plane (tests/common/k8s.rs): the API server stores objects,
//! server-side apply works, and the controller-manager turns a Deployment into a ReplicaSet and
//! a Pod (which stays Pending: there is no scheduler).
mod common;

use common::k8s::{ControlPlane, control_plane};
use common::objects::{merge_patch, stdout_of};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
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
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}});
    create(
        &Api::<Namespace>::all(client.clone()),
        namespace,
        "create namespace",
    )
    .await;
    server_side_apply_creates_then_updates(&client).await;
    a_deployment_gets_a_replicaset_and_a_pending_pod(cp, &client).await;
    kubectl_talks_to_the_same_server(cp);
}

/// Server-side apply of a ConfigMap, twice (create, then update by the same manager).
async fn server_side_apply_creates_then_updates(client: &Client) {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let ssa = PatchParams::apply("bifrost-harness").force();
    for value in ["one", "two"] {
        let cm = json!({
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
}

/// The controller-manager turns a Deployment into a ReplicaSet and a Pod it owns, which stays
/// Pending: there is no scheduler.
async fn a_deployment_gets_a_replicaset_and_a_pending_pod(cp: &ControlPlane, client: &Client) {
    let deployment = json!({
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
    });
    let deployments = Api::<Deployment>::namespaced(client.clone(), NS);
    create(&deployments, deployment, "create Deployment").await;

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
}

/// kubectl (built one, or the one on PATH) talks to the same server.
fn kubectl_talks_to_the_same_server(cp: &ControlPlane) {
    let out = cp.kubectl(&["get", "deployment", "busybox", "-n", NS, "-o", "name"]);
    assert_eq!(stdout_of(&out, "kubectl").trim(), "deployment.apps/busybox");
}

/// No packet for a cluster address leaves the machine. While a control plane runs, the Service
/// range routes nowhere (without it, a ClusterIP follows the default route off the machine), and
/// the API server calls a Service-based webhook at the Service's endpoints: with none, the call
/// fails at once, locally, and the pod is admitted (`failurePolicy: Ignore`). `ip route get`
/// sends nothing, so this test sends no packet to a cluster address either.
#[tokio::test]
async fn cluster_addresses_stay_on_the_machine() {
    let cp = control_plane();
    the_service_range_routes_nowhere();
    let args = std::fs::read_to_string(cp.dir.join("kube-apiserver.args")).expect("args");
    for flag in [
        "--service-cluster-ip-range=10.0.0.0/24",
        "--enable-aggregator-routing=true",
    ] {
        assert!(args.lines().any(|l| l == flag), "{flag} missing: {args}");
    }

    // A namespace whose default ServiceAccount has its token: before that, 1.20 refuses pods.
    let (client, ns) = common::operator::namespace("cluster-addresses").await;
    let ns = ns.as_str();
    let hook = "cluster-address.bifrost.io";
    let cluster_ip = a_webhook_service_without_endpoints(&client, ns, hook).await;
    let pod = json!({
        "metadata": {"name": "worker", "namespace": ns, "labels": {"bifrost.io/requirements": "default"}},
        "spec": {"containers": [{"name": "worker", "image": "worker"}]}
    });
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    create(&pods, pod, "the pod is admitted (failurePolicy Ignore)").await;
    the_api_server_failed_open_without_dialling(cp, hook, &cluster_ip).await;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .delete("cluster-address-test", &Default::default())
        .await
        .expect("delete webhook configuration");
}

/// `ip route get` of addresses in the Service range fails: no route to host.
fn the_service_range_routes_nowhere() {
    for ip in ["10.0.0.1", "10.0.0.111", "10.0.0.254"] {
        let out = std::process::Command::new("ip")
            .args(["-o", "route", "get", ip])
            .output()
            .expect("run ip route get");
        assert!(
            !out.status.success(),
            "the Service address {ip} routes: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(why.contains("No route to host"), "ip route get {ip}: {why}");
    }
}

/// The chart's shape: a Service selecting the operator's pods (here: none), and a webhook
/// configuration `hook` calling it by `clientConfig.service`, for labelled pods of `ns`. Returns
/// the Service's ClusterIP.
async fn a_webhook_service_without_endpoints(client: &Client, ns: &str, hook: &str) -> String {
    let service = json!({
        "metadata": {"name": "hook", "namespace": ns},
        "spec": {"selector": {"app": "no-such-pod"}, "ports": [{"port": 443, "targetPort": 8443}]}
    });
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let service = create(&services, service, "create Service").await;
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert!(cluster_ip.starts_with("10.0.0."), "{cluster_ip}");
    let config = json!({
        "metadata": {"name": "cluster-address-test"},
        "webhooks": [{
            "name": hook,
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 5,
            "clientConfig": {"service": {"name": "hook", "namespace": ns, "path": "/mutate", "port": 443}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "objectSelector": {"matchLabels": {"bifrost.io/requirements": "default"}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]
        }]
    });
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    create(&configs, config, "create webhook configuration").await;
    // Namespaces of 1.20 carry no automatic name label: give this one the label the selector reads.
    let label = json!({"metadata": {"labels": {"kubernetes.io/metadata.name": ns}}});
    merge_patch(&Api::<Namespace>::all(client.clone()), ns, label).await;
    cluster_ip
}

/// The API server says why it failed open: no endpoints, never a dial of the ClusterIP.
async fn the_api_server_failed_open_without_dialling(
    cp: &ControlPlane,
    hook: &str,
    cluster_ip: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log =
            std::fs::read_to_string(cp.dir.join("logs/kube-apiserver.log")).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(hook) && l.contains("failing open"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no 'failing open' line for {hook}:\n{}",
            cp.log_tail("kube-apiserver", 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        line.contains("no endpoints available for service"),
        "{line}"
    );
    assert!(
        !line.contains(cluster_ip),
        "the ClusterIP was dialled: {line}"
    );
}

/// Create the object `obj` through `api` (`what` if it fails); returns it as stored.
async fn create<K>(api: &Api<K>, obj: Value, what: &str) -> K
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(obj).expect("object");
    api.create(&PostParams::default(), &obj).await.expect(what)
}
