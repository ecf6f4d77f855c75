//! The operator as its users run it, on the real node: `helm install` of the chart (the README's
//! command plus `ci/node-values.yaml`), from the operator image built as the Dockerfile's final
//! stage, two replicas electing a leader, the API server calling the webhook at the Service's
//! endpoints, then the lifecycle a platform engineer puts it through: a leader lost, an upgrade
//! under load, every replica down, and `helm uninstall`.

mod common;

use std::time::{Duration, Instant};

use bifrost_requirements::crd::{INJECTED_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements};
use bifrost_requirements::requirements::content_hash;
use common::index::Index;
use common::node::{assert_routed_via_bridge, node, pod_servers, worker_pod_spec};
use common::objects::{merge_patch, replicaset_hash};
use common::operator::{namespace, wait_for};
use common::release::{Release, helm};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(180);

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn injected(p: &Pod) -> bool {
    p.annotations().contains_key(INJECTED_ANNOTATION)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && p.metadata.deletion_timestamp.is_none()
}

/// The one Running, ready pod of the worker, once it is the only one and satisfies `want`.
async fn worker_pod(client: &Client, ns: &str, what: &str, want: impl Fn(&Pod) -> bool) -> Pod {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app=worker");
    wait_for(what, T, || async {
        let list = pods.list(&lp).await.ok()?.items;
        (list.len() == 1 && ready(&list[0]) && want(&list[0])).then(|| list[0].clone())
    })
    .await
}

/// `kubectl exec` in the worker: import `module`, print its VERSION.
fn import(ns: &str, pod: &str, module: &str) -> String {
    let code = format!("import {module}; print({module}.VERSION)");
    let out = node().exec(ns, pod, "worker", &["python3", "-c", &code]);
    assert!(
        out.status.success(),
        "import {module} in {pod}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the operator's ServiceAccount may `verb` `resource` in `ns`.
fn can(release: &Release, verb: &str, resource: &str, ns: &str) -> bool {
    let sa = format!(
        "system:serviceaccount:{}:{}",
        release.namespace,
        release.fullname()
    );
    let out = node().kubectl(&["auth", "can-i", verb, resource, "-n", ns, "--as", &sa]);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl auth can-i: {other} {}", text(&out)),
    }
}

/// The ReplicaSets of the worker whose template carries `hash`.
async fn replicasets_with(client: &Client, ns: &str, hash: &str) -> usize {
    Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("app=worker"))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|rs| replicaset_hash(rs).is_some_and(|h| h == hash))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_runs_the_operator_through_its_whole_lifecycle() {
    node();
    let (client, ns) = namespace("lifecycle").await;
    let (redis, index) = pod_servers(&client, &ns).await;
    let started = Instant::now();
    let release = install_two_replicas(&client, &ns).await;
    let installed = started.elapsed();
    it_may_patch_workloads_in_its_namespace_only(&release, &ns);
    let wsreq = a_labelled_worker_gets_its_packages(&client, &ns, &index, started, installed).await;
    let (second, hash2) =
        the_leader_goes_and_the_next_change_rolls_once(&client, &ns, &release, &wsreq).await;
    pods_created_during_an_upgrade_are_all_injected(&client, &ns, &release).await;
    every_replica_down_then_back_reinjects_the_worker(&client, &ns, &release, &second, &hash2)
        .await;
    the_leader_counts_its_reinjections(&client, &release).await;
    helm_uninstall_keeps_only_the_crd_and_the_resources(&client, &ns, release, &wsreq).await;
    drop(redis);
}

/// Install: two replicas (the chart's default), watching the workers' namespace only.
async fn install_two_replicas(client: &Client, ns: &str) -> Release {
    let release = Release::install(client, ns, &["resolver.enabled=false"]).await;
    assert_eq!(release.pods(client).await.len(), 2);
    for p in release.pods(client).await {
        let ip = p.status.and_then(|s| s.pod_ip).expect("an operator pod IP");
        assert!(ip.starts_with("10.244.0."), "{ip}");
    }
    release
}

/// Least privilege: a namespaced install patches workloads in its namespace only.
fn it_may_patch_workloads_in_its_namespace_only(release: &Release, ns: &str) {
    assert!(can(release, "patch", "deployments", ns));
    assert!(!can(release, "patch", "deployments", "default"));
    assert!(!can(release, "patch", "deployments", "kube-system"));
}

/// A labelled worker gets its packages; returns the resources' API. Prints how long it took
/// from the install `started` (which took `installed`).
async fn a_labelled_worker_gets_its_packages(
    client: &Client,
    ns: &str,
    index: &Index,
    started: Instant,
    installed: Duration,
) -> Api<WorkspaceRequirements> {
    let n = node();
    let content = "bifrost-hello==1.0\n";
    let hash = content_hash(content);
    let obj: WorkspaceRequirements = serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
        "metadata": {"name": "default"},
        "spec": {
            "content": content,
            "cache": {"redis": {"urlSecretRef": {"name": "bifrost-redis", "key": "url"}}},
            "install": {"indexUrls": [index.url()]},
            "rollout": {"debounceSeconds": 1}
        }
    }))
    .unwrap();
    let wsreq = Api::<WorkspaceRequirements>::namespaced(client.clone(), ns);
    wsreq.create(&PostParams::default(), &obj).await.unwrap();
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "worker"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "worker"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "worker", OPT_IN_LABEL: "default"}},
                "spec": worker_pod_spec(&n.worker_image)
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let first = worker_pod(client, ns, "an injected worker of the content", |p| {
        p.annotations().get(INJECTED_ANNOTATION) == Some(&hash)
    })
    .await;
    eprintln!(
        "helm install → operator Ready: {:.1} s; → first injected worker Running: {:.1} s",
        installed.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(import(ns, &first.name_any(), "bifrost_hello"), "1.0");
    wsreq
}

/// The leader goes: the other replica takes the Lease, and the next change rolls once.
/// Returns the worker pod of the new content and its hash.
async fn the_leader_goes_and_the_next_change_rolls_once(
    client: &Client,
    ns: &str,
    release: &Release,
    wsreq: &Api<WorkspaceRequirements>,
) -> (Pod, String) {
    let leader = release.leader(client).await;
    Api::<Pod>::namespaced(client.clone(), &release.namespace)
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let took_over = wait_for("another replica holding the Lease", T, || async {
        let holder = release.leader(client).await;
        (holder != leader).then_some(holder)
    })
    .await;
    let running: Vec<String> = release
        .pods(client)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        running.contains(&took_over),
        "{took_over} is not one of {running:?}"
    );
    let content2 = "bifrost-extra==2.0\nbifrost-hello==1.0\n";
    let hash2 = content_hash(content2);
    merge_patch(wsreq, "default", json!({"spec": {"content": content2}})).await;
    let second = worker_pod(client, ns, "the worker rolled to the new content", |p| {
        p.annotations().get(INJECTED_ANNOTATION) == Some(&hash2)
    })
    .await;
    assert_eq!(import(ns, &second.name_any(), "bifrost_extra"), "2.0");
    assert_eq!(
        replicasets_with(client, ns, &hash2).await,
        1,
        "rolled exactly once"
    );
    release.ready(client).await;
    (second, hash2)
}

/// An upgrade to a changed operator pod template while labelled pods keep being created:
/// every one of them is injected (maxUnavailable 0, and a stopping replica keeps answering
/// until the API server has dropped its endpoint).
async fn pods_created_during_an_upgrade_are_all_injected(
    client: &Client,
    ns: &str,
    release: &Release,
) {
    let n = node();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let creator = {
        let (pods, image) = (pods.clone(), n.worker_image.clone());
        tokio::spawn(async move {
            let mut created = Vec::new();
            for i in 0.. {
                if *done_rx.borrow_and_update() {
                    break;
                }
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("probe-{i}"), "labels": {OPT_IN_LABEL: "default", "app": "probe"}},
                    // Admitted (and injected) like any pod, never scheduled: nothing runs.
                    "spec": {
                        "automountServiceAccountToken": false,
                        "nodeSelector": {"bifrost.io/no-such-node": "true"},
                        "containers": [{"name": "worker", "image": image, "imagePullPolicy": "Never"}]
                    }
                }))
                .unwrap();
                let made = pods.create(&PostParams::default(), &p).await.unwrap();
                created.push(made);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            created
        })
    };
    release
        .upgrade(client, &["podAnnotations.upgraded=yes"])
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    done_tx.send_replace(true);
    let created = creator.await.unwrap();
    let uninjected: Vec<String> = created
        .iter()
        .filter(|p| !injected(p))
        .map(|p| p.name_any())
        .collect();
    eprintln!(
        "{} labelled pods created during the upgrade, {} uninjected",
        created.len(),
        uninjected.len()
    );
    assert!(created.len() >= 10, "only {} pods created", created.len());
    assert!(
        uninjected.is_empty(),
        "admitted without injection: {uninjected:?}"
    );
    let _ = n.kubectl(&[
        "delete",
        "pods",
        "-n",
        ns,
        "-l",
        "app=probe",
        "--wait=false",
    ]);
}

/// Every replica down: a labelled pod starts uninjected (failurePolicy Ignore); once the
/// operator is back, it rolls the worker again so its pod is injected, and says so.
async fn every_replica_down_then_back_reinjects_the_worker(
    client: &Client,
    ns: &str,
    release: &Release,
    second: &Pod,
    hash2: &str,
) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    release.scale(client, 0).await;
    pods.delete(&second.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let bare = worker_pod(client, ns, "an uninjected worker", |p| !injected(p)).await;
    assert!(
        !node()
            .exec(
                ns,
                &bare.name_any(),
                "worker",
                &["python3", "-c", "import bifrost_extra"]
            )
            .status
            .success(),
        "an uninjected pod has no packages"
    );
    release.scale(client, 2).await;
    let replaced = worker_pod(client, ns, "the worker replaced, injected", |p| {
        p.annotations()
            .get(INJECTED_ANNOTATION)
            .is_some_and(|h| h == hash2)
    })
    .await;
    assert_ne!(replaced.name_any(), bare.name_any());
    assert_eq!(import(ns, &replaced.name_any(), "bifrost_extra"), "2.0");
    let notes: Vec<String> = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ReplacingUninjected"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes.iter().any(|n| n.contains("Deployment/worker")),
        "{notes:?}"
    );
}

/// The leader counts what it did: its metrics over the bridge.
async fn the_leader_counts_its_reinjections(client: &Client, release: &Release) {
    let leader = release.leader(client).await;
    let leader_ip = Api::<Pod>::namespaced(client.clone(), &release.namespace)
        .get(&leader)
        .await
        .unwrap()
        .status
        .and_then(|s| s.pod_ip)
        .unwrap();
    assert_routed_via_bridge(&leader_ip);
    let metrics = std::process::Command::new("curl")
        .args([
            "-sf",
            "--max-time",
            "5",
            &format!("http://{leader_ip}:8080/metrics"),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    let reinjections: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bifrost_requirements_reinjections_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0);
    assert!(
        reinjections >= 1.0,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("reinjections") || l.contains("uninjected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// helm uninstall: nothing of the release is left but what Helm keeps by convention.
async fn helm_uninstall_keeps_only_the_crd_and_the_resources(
    client: &Client,
    ns: &str,
    release: Release,
    wsreq: &Api<WorkspaceRequirements>,
) {
    let n = node();
    let fullname = release.fullname();
    let (name, release_ns) = (release.name.clone(), release.namespace.clone());
    std::mem::forget(release);
    let out = helm(&["uninstall", &name, "--namespace", &release_ns]);
    assert!(out.status.success(), "helm uninstall: {}", text(&out));
    for (kind, scope) in [
        ("mutatingwebhookconfiguration", None),
        ("clusterrole", None),
        ("clusterrolebinding", None),
        ("service", Some(release_ns.as_str())),
        ("deployment", Some(release_ns.as_str())),
        ("serviceaccount", Some(release_ns.as_str())),
        ("role", Some(ns)),
        ("rolebinding", Some(ns)),
    ] {
        let mut args = vec!["get", kind, "-o", "name"];
        if let Some(scope) = scope {
            args.extend(["-n", scope]);
        }
        let out = n.kubectl(&args);
        assert!(out.status.success(), "kubectl get {kind}: {}", text(&out));
        let left: Vec<&str> = std::str::from_utf8(&out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&fullname))
            .collect();
        assert!(left.is_empty(), "left after helm uninstall: {left:?}");
    }
    wait_for("the operator's pods gone", T, || async {
        let pods = Api::<Pod>::namespaced(client.clone(), &release_ns)
            .list(&ListParams::default())
            .await
            .ok()?;
        pods.items.is_empty().then_some(())
    })
    .await;
    // Kept: the CRD and the resources (Helm never deletes what crds/ installed).
    let out = n.kubectl(&[
        "get",
        "crd",
        "workspacerequirements.bifrost.io",
        "-o",
        "name",
    ]);
    assert!(out.status.success(), "the CRD is kept: {}", text(&out));
    assert!(wsreq.get_opt("default").await.unwrap().is_some());
    let _ = n.kubectl(&["delete", "namespace", &release_ns, "--wait=false"]);
}
