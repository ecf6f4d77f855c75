//! Supervision on a real control plane: a reconcile that panics is that resource's failure, and
//! every other resource keeps being reconciled. The controller runs in this test process (the
//! real `controller::run`), with a reconcile that panics for one resource and is the real
//! one for the others — the mechanism, whatever makes a reconcile panic.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bifrost_requirements::controller;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::metrics::Metrics;
use bifrost_requirements::shutdown;
use bifrost_requirements::supervise::{Backoff, OnExit, Supervisor};
use bifrost_requirements::watch::{Resources, Scope};
use common::operator::{condition, create_wsreq, namespace, wait_for};
use k8s_openapi::api::core::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::Reporter;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

async fn wait_ready(client: &Client, ns: &str, name: &str, status: &str, reason: &str) {
    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), ns);
    wait_for(&format!("{name} Ready={status} ({reason})"), T, || async {
        let obj = api.get(name).await.ok()?;
        condition(&obj, "Ready")
            .filter(|c| c.0 == status && c.1 == reason)
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reconcile_fails_only_its_resource() {
    let (client, ns) = namespace("panic").await;
    let (root, stop) = shutdown::stop_pair();
    let root = Arc::new(root);
    let metrics = Arc::new(Metrics::new());
    let tasks = Supervisor::new(metrics.task_restarts.clone(), root.clone(), stop);
    let reporter = Reporter {
        controller: "bifrost-requirements-test".into(),
        instance: None,
    };
    let scope = Scope {
        namespace: Some(ns.clone()),
    };
    // The operator's shared WorkspaceRequirements watch, which the controller subscribes to.
    let resources = Resources::default();
    let watch = {
        let (r, api, stop) = (
            resources.clone(),
            scope.api(&client),
            tasks.stop().receiver(),
        );
        tokio::spawn(async move { r.feed(api, stop).await })
    };
    let (c, m, sub) = (client.clone(), metrics.clone(), tasks.clone());
    let handle = tasks.spawn(
        "controller",
        OnExit::Restart(Backoff::default()),
        move || {
            let reconcile = |obj: Arc<WorkspaceRequirements>, ctx: Arc<controller::Context>| async move {
                if obj.spec.content.contains("explode") {
                    panic!("hostile content made a library panic: {}", "x".repeat(2000));
                }
                controller::reconcile(obj, ctx).await
            };
            let run = controller::run(
                c.clone(),
                scope.clone(),
                resources.clone(),
                m.clone(),
                controller::Settings {
                    reporter: reporter.clone(),
                    // Resources here name no interpreter: their pods resolve.
                    resolver: None,
                },
                sub.clone(),
                reconcile,
            );
            async move {
                run.await;
                Ok::<(), String>(())
            }
        },
    );

    // `bad` first: with the panic uncaught, the controller's stream would end here.
    create_wsreq(&client, &ns, "bad", json!({"content": "explode==1\n"})).await;
    wait_ready(&client, &ns, "bad", "False", "ReconcilePanicked").await;
    create_wsreq(
        &client,
        &ns,
        "good",
        json!({"content": "requests==2.32.3\n"}),
    )
    .await;
    // Reconciled through to the end: no workload is labelled, which is not Ready (issue 15).
    wait_ready(&client, &ns, "good", "False", "NoWorkloads").await;

    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns);
    let bad = api.get("bad").await.unwrap();
    let (_, _, message) = condition(&bad, "Ready").unwrap();
    assert!(
        message.contains("hostile content made a library panic"),
        "{message}"
    );
    assert!(
        message.chars().count() < 1100,
        "not truncated: {} chars",
        message.len()
    );

    // A Warning Event on `bad`.
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    wait_for("ReconcilePanicked event", T, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("ReconcilePanicked")
                    && e.type_.as_deref() == Some("Warning")
                    && e.involved_object.name.as_deref() == Some("bad")
            })
            .map(|_| ())
    })
    .await;

    // Still reconciling after the panic: a change to `good` is picked up, and fixing `bad`
    // clears its failure.
    api.patch(
        "good",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"content": "flask==3.0.3\n"}})),
    )
    .await
    .unwrap();
    let hash = bifrost_requirements::requirements::content_hash("flask==3.0.3\n");
    wait_for("good reconciled again", T, || async {
        let obj = api.get("good").await.ok()?;
        (obj.status?.content_hash? == hash).then_some(())
    })
    .await;
    api.patch(
        "bad",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"content": "requests==2.32.3\n"}})),
    )
    .await
    .unwrap();
    wait_ready(&client, &ns, "bad", "False", "NoWorkloads").await;

    let text = metrics.encode();
    assert!(
        text.contains("bifrost_requirements_reconcile_errors_total{reason=\"ReconcilePanicked\"}"),
        "{text}"
    );
    // The panic was the resource's, not the controller task's.
    assert!(tasks.down().is_empty(), "{:?}", tasks.down());
    assert!(
        !text.contains("task_restarts_total{task=\"controller\"}"),
        "{text}"
    );
    root.stop();
    tokio::time::timeout(T, handle).await.unwrap().unwrap();
    tokio::time::timeout(T, watch)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
