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
use common::operator::{condition, wait_for};
use common::scenario::Ns;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::runtime::events::Reporter;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

/// The controller running in this process (the real `controller::run` under the supervisor,
/// fed by the operator's shared watch), with a reconcile that panics for content containing
/// "explode" and is the real one otherwise.
struct Running {
    root: Arc<shutdown::StopHandle>,
    metrics: Arc<Metrics>,
    tasks: Supervisor,
    handle: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<Result<(), &'static str>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reconcile_fails_only_its_resource() {
    let s = Ns::new("panic").await;
    let running = Running::start(&s).await;

    // `bad` first: with the panic uncaught, the controller's stream would end here.
    s.wsreq("bad", json!({"content": "explode==1\n"})).await;
    s.wait("bad", "Ready", "False", Some("ReconcilePanicked"))
        .await;
    s.wsreq("good", json!({"content": "requests==2.32.3\n"}))
        .await;
    // Reconciled through to the end: no workload is labelled, which is not Ready (issue 15).
    s.wait("good", "Ready", "False", Some("NoWorkloads")).await;
    bad_says_it_panicked(&s).await;
    still_reconciling_after_the_panic(&s).await;
    running.counted_the_panic_against_the_resource();
    running.stop().await;
}

/// `bad`'s Ready condition names the panic, truncated, and a Warning Event says so.
async fn bad_says_it_panicked(s: &Ns) {
    let bad = s.get("bad").await;
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
    let events = s.api::<Event>();
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
}

/// Still reconciling after the panic: a change to `good` is picked up, and fixing `bad`
/// clears its failure.
async fn still_reconciling_after_the_panic(s: &Ns) {
    s.set_content("good", "flask==3.0.3\n").await;
    let hash = bifrost_requirements::requirements::content_hash("flask==3.0.3\n");
    let api = s.api::<WorkspaceRequirements>();
    wait_for("good reconciled again", T, || async {
        let obj = api.get("good").await.ok()?;
        (obj.status?.content_hash? == hash).then_some(())
    })
    .await;
    s.set_content("bad", "requests==2.32.3\n").await;
    s.wait("bad", "Ready", "False", Some("NoWorkloads")).await;
}

impl Running {
    async fn start(s: &Ns) -> Running {
        let (client, ns) = (&s.client, &s.name);
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
                scope.api(client),
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
        Running {
            root,
            metrics,
            tasks,
            handle,
            watch,
        }
    }

    /// The panic was the resource's, not the controller task's.
    fn counted_the_panic_against_the_resource(&self) {
        let text = self.metrics.encode();
        assert!(
            text.contains(
                "bifrost_requirements_reconcile_errors_total{reason=\"ReconcilePanicked\"}"
            ),
            "{text}"
        );
        assert!(self.tasks.down().is_empty(), "{:?}", self.tasks.down());
        assert!(
            !text.contains("task_restarts_total{task=\"controller\"}"),
            "{text}"
        );
    }

    /// Stop everything; the controller and the watch end in time.
    async fn stop(self) {
        self.root.stop();
        tokio::time::timeout(T, self.handle).await.unwrap().unwrap();
        tokio::time::timeout(T, self.watch)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
