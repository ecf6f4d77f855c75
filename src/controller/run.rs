//! The controller's run: its watches, the reconcile loop, the Redis watchdog and the source
//! mirror, until the supervisor's stop signal.

use crate::k8s_compat::Present;
use std::sync::Arc;

use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodTemplateSpec};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;
use tracing::{Instrument, info};

use super::context::{Context, SyncStates};
use super::observe;
use super::reconcile::{error_policy, guarded};
use super::{mirror, warm};
use crate::crd::{MANAGER, OPT_IN_LABEL, WorkspaceRequirements};
use crate::error::Result;
use crate::lock::Resolver;
use crate::metrics::Metrics;
use crate::supervise::{Backoff, OnExit, Supervisor};
use crate::watch::{Resources, Scope, cached, without_managed_fields};

/// Reconciles asked for outside the watches (the mirror's writes, the watchdog's findings).
type Trigger = UnboundedSender<ObjectRef<WorkspaceRequirements>>;

/// How the controller presents itself and resolves locks.
#[derive(Clone)]
pub struct Settings {
    /// Who its Events come from.
    pub reporter: Reporter,
    /// `None`: it resolves nothing (pods do).
    pub resolver: Option<Resolver>,
}

/// Run the controller (and the source mirror) on the shared `resources` watch until the
/// supervisor's stop signal. `reconcile` is [`super::reconcile()`], or a wrapper of it (tests inject
/// failures that way).
pub async fn run<R, Fut>(
    client: Client,
    scope: Scope,
    resources: Resources,
    metrics: Arc<Metrics>,
    settings: Settings,
    tasks: Supervisor,
    reconcile: R,
) where
    R: Fn(Arc<WorkspaceRequirements>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    let ((deployments, deploy_stream), (statefulsets, sts_stream)) = workloads(&client, &scope);
    let (pods, pod_stream) = observe::pod_cache(&client, &scope);
    let sync: Arc<SyncStates> = Arc::default();
    let (trigger, triggered) = futures::channel::mpsc::unbounded();
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            metrics.clone(),
            Recorder::new(client.clone(), settings.reporter),
            sync.clone(),
            deployments,
            statefulsets,
            pods,
        )
        .resolving_with(settings.resolver, tasks.stop().clone()),
    );
    // The re-injection grace counts from the controller's start, not from its first rollout.
    ctx.memory::<super::rollout::reinject::Reinjected>();

    let store = resources.store();
    let controller = controller(
        &client,
        &scope,
        (store.clone(), resources.subscribe()),
        deploy_stream.applied_objects(),
        sts_stream.applied_objects(),
        pod_stream,
        triggered,
    );
    let watchdog = spawn_watchdog(&tasks, ctx.clone(), store.clone(), trigger.clone());
    let mirror = spawn_mirror(
        &tasks,
        client,
        store,
        resources.changed(),
        sync,
        metrics.clone(),
        trigger,
    );
    // kube's runner waits for the store to be ready, and wakes only if it is the sole waiter
    // (see `Resources`): start it once the listing is in.
    let ctx_of_deleted = ctx.clone();
    let run = async {
        tokio::select! {
            _ = resources.listed() => drive(controller, &tasks, reconcile, ctx).await,
            _ = tasks.stop().stopped() => {}
        }
    };
    tokio::select! {
        _ = run => {}
        _ = forget_deleted(resources.deleted(), &metrics, &ctx_of_deleted) => {}
    }
    mirror.abort();
    watchdog.abort();
    // Another replica reconciles now and exports the resources' gauges; ours would be stale.
    metrics.retain_resources(|_, _| false);
    info!("controller stopped");
}

/// The Deployment and StatefulSet caches and the streams that fill them. Only template
/// labels/annotations, selectors and rollout status are read: managedFields are dropped to keep
/// the caches small.
#[allow(clippy::type_complexity)]
fn workloads(
    client: &Client,
    scope: &Scope,
) -> (
    (
        Store<Deployment>,
        impl Stream<Item = Result<watcher::Event<Deployment>, watcher::Error>> + Send + 'static,
    ),
    (
        Store<StatefulSet>,
        impl Stream<Item = Result<watcher::Event<StatefulSet>, watcher::Error>> + Send + 'static,
    ),
) {
    let config = watcher::Config::default;
    (
        cached(
            scope.api::<Deployment>(client),
            config(),
            without_managed_fields,
        ),
        cached(
            scope.api::<StatefulSet>(client),
            config(),
            without_managed_fields,
        ),
    )
}

/// A deleted resource's gauges go at once (the Redis watchdog sweeps what a reconcile finishing
/// after the deletion may have set again), and so does its remembered lock.
async fn forget_deleted(
    mut deleted: broadcast::Receiver<ObjectRef<WorkspaceRequirements>>,
    metrics: &Metrics,
    ctx: &Context,
) {
    loop {
        match deleted.recv().await {
            Ok(gone) => {
                ctx.memory::<super::lock::Resolutions>().forget(&gone);
                let ns = gone.namespace.unwrap_or_default();
                metrics.retain_resources(|n, m| n != ns || m != gone.name);
            }
            // Missed deletions are the watchdog's to sweep.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

/// The controller, woken by: its resources, the ConfigMaps it owns, the labelled workloads and
/// pods (mapped to the resource they name), and explicit triggers.
fn controller(
    client: &Client,
    scope: &Scope,
    (store, resources): (
        Store<WorkspaceRequirements>,
        impl Stream<Item = Arc<WorkspaceRequirements>> + Send + 'static,
    ),
    deployments: impl Stream<Item = Result<Deployment, watcher::Error>> + Send + 'static,
    statefulsets: impl Stream<Item = Result<StatefulSet, watcher::Error>> + Send + 'static,
    pods: impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
    triggered: UnboundedReceiver<ObjectRef<WorkspaceRequirements>>,
) -> Controller<WorkspaceRequirements> {
    // kube's controller opens this watch when it runs.
    crate::watch::opening::<ConfigMap>();
    Controller::for_shared_stream(resources, store)
        .owns(
            scope.api::<ConfigMap>(client),
            watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}")),
        )
        .watches_stream(deployments, |d: Deployment| {
            owners(&d, d.spec.present().map(|s| &s.template))
        })
        .watches_stream(statefulsets, |s: StatefulSet| {
            owners(&s, s.spec.present().map(|s| &s.template))
        })
        .watches_stream(pods, observe::pod_owner)
        .reconcile_on(triggered)
}

/// Reconcile until the supervisor's stop signal; each reconcile is [`guarded`] against panics.
async fn drive<R, Fut>(
    controller: Controller<WorkspaceRequirements>,
    tasks: &Supervisor,
    reconcile: R,
    ctx: Arc<Context>,
) where
    R: Fn(Arc<WorkspaceRequirements>, Arc<Context>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Action>> + Send + 'static,
{
    controller
        .graceful_shutdown_on(tasks.stop().stopped())
        .run(
            move |obj, ctx| guarded(reconcile.clone(), obj, ctx),
            error_policy,
            ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}

/// Map a labelled workload to the resources its pod template and its own metadata name: the
/// label on its metadata opts nothing in, but `Ready`'s `NoWorkloads` message names it, so a
/// change to it must reach that resource too.
fn owners<K: ResourceExt>(
    obj: &K,
    template: Option<&PodTemplateSpec>,
) -> Vec<ObjectRef<WorkspaceRequirements>> {
    let template = template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref());
    let Some(ns) = obj.namespace() else {
        return Vec::new();
    };
    let mut names: Vec<&String> = [template, Some(obj.labels())]
        .into_iter()
        .flatten()
        .filter_map(|labels| labels.get(OPT_IN_LABEL))
        .collect();
    names.dedup();
    names
        .into_iter()
        .map(|name| ObjectRef::new(name).within(&ns))
        .collect()
}

/// The Redis watchdog ([`warm::watch_caches`]) as a supervised task.
fn spawn_watchdog(
    tasks: &Supervisor,
    ctx: Arc<Context>,
    store: Store<WorkspaceRequirements>,
    trigger: Trigger,
) -> JoinHandle<()> {
    tasks.spawn(
        "cache-watchdog",
        OnExit::Restart(Backoff::default()),
        move || {
            warm::watch_caches(ctx.clone(), store.clone(), trigger.clone())
                .instrument(tracing::info_span!("cache-watchdog"))
                .map(Ok::<(), std::convert::Infallible>)
        },
    )
}

/// The source mirror ([`mirror::run`]) as a supervised task, woken by every resource event.
fn spawn_mirror(
    tasks: &Supervisor,
    client: Client,
    store: Store<WorkspaceRequirements>,
    changed: Arc<Notify>,
    sync: Arc<SyncStates>,
    metrics: Arc<Metrics>,
    trigger: Trigger,
) -> JoinHandle<()> {
    let sub = tasks.clone();
    tasks.spawn("mirror", OnExit::Restart(Backoff::default()), move || {
        mirror::run(
            client.clone(),
            store.clone(),
            changed.clone(),
            sync.clone(),
            metrics.clone(),
            trigger.clone(),
            sub.clone(),
        )
        .instrument(tracing::info_span!("mirror"))
        .map(Ok::<(), std::convert::Infallible>)
    })
}
