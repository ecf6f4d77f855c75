//! What the labelled workloads look like now, changing nothing: each one's pods, whether they
//! run the content's hash, which were admitted uninjected, and why a workload cannot create its
//! pods. Every step reads it (a stopped reconcile still reports its workloads); [`super::rollout`]
//! acts on it.

use crate::k8s_compat::{Present, Text};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use futures::{FutureExt, Stream};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::core::{Selector, SelectorExt};
use kube::runtime::{WatchStreamExt, watcher};

use super::context::Context;
use super::coverage;
use super::progress::{self, Progress, Verdict};
use crate::crd::INJECTED_ANNOTATION;
use crate::crd::{HASH_ANNOTATION, OPT_IN_LABEL, WorkloadStatus, WorkspaceRequirements};
use crate::error::Result;
use crate::watch::Scope;
use crate::webhook::inject::INSTALL_CONTAINER;

fn template_hash(t: &PodTemplateSpec, name: &str) -> Option<String> {
    let meta = t.metadata.as_ref()?;
    if meta.labels.as_ref()?.get(OPT_IN_LABEL)? != name {
        return None;
    }
    Some(
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(HASH_ANNOTATION))
            .cloned()
            .unwrap_or_default(),
    )
}

pub(crate) use super::context::PodCache;

/// The pod cache and the stream that fills it. Only labelled pods are watched, each is cut down
/// to what the status reads as it arrives, and a pod reaches the controller only when that
/// changes ([`progress::digest`]: hash, injection, deletion, readiness, an init container's
/// failure) — not on every status heartbeat.
pub(crate) fn pod_cache(
    client: &Client,
    scope: &Scope,
) -> (
    PodCache,
    impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
) {
    let (store, stream) = crate::watch::cached(
        scope.api::<Pod>(client),
        watcher::Config::default().labels(OPT_IN_LABEL),
        progress::slim,
    );
    let stream = stream
        .applied_objects()
        .predicate_filter(progress::digest, Default::default());
    (store, stream)
}

/// The resource a labelled pod names.
pub(crate) fn pod_owner(p: Pod) -> Option<ObjectRef<WorkspaceRequirements>> {
    let name = p.labels().get(OPT_IN_LABEL)?;
    Some(ObjectRef::new(name).within(&p.namespace()?))
}

/// A cached workload's pod selector; `None` when the workload is not cached, its selector is
/// unusable, or it selects everything (counting every pod in the namespace would be wrong).
fn workload_selector(ctx: &Context, ns: &str, kind: &str, name: &str) -> Option<Selector> {
    let selector = match kind {
        "Deployment" => ctx
            .deployments
            .get(&ObjectRef::new(name).within(ns))?
            .spec
            .present()?
            .selector
            .clone(),
        _ => ctx
            .statefulsets
            .get(&ObjectRef::new(name).within(ns))?
            .spec
            .present()?
            .selector
            .clone(),
    };
    Selector::try_from(selector)
        .ok()
        .filter(|s| !s.selects_all())
}

/// A workload's pods (matching its selector, terminating ones included), from the pod cache.
/// `None` until the pod cache has its first listing, or when the selector selects everything.
fn selected_pods(
    ctx: &Context,
    ns: &str,
    kind: &str,
    name: &str,
) -> Option<Vec<std::sync::Arc<Pod>>> {
    ctx.pods.wait_until_ready().now_or_never()?.ok()?;
    let selector = workload_selector(ctx, ns, kind, name)?;
    Some(
        ctx.pods
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(ns) && selector.matches(p.labels()))
            .collect(),
    )
}

fn live(pods: &[std::sync::Arc<Pod>]) -> impl Iterator<Item = &Pod> {
    pods.iter()
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
}

/// Pods of a workload that lack the webhook's marker: created while the webhook was
/// unreachable, they run without the packages.
pub(crate) fn uninjected_pods(pods: &[std::sync::Arc<Pod>]) -> i32 {
    let count = live(pods)
        .filter(|p| !p.annotations().contains_key(INJECTED_ANNOTATION))
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// How long a StatefulSet may miss pods while all it has are ready before it counts as unable
/// to create them.
const STALL: Duration = Duration::from_secs(20);

/// Since when each (namespace, name) StatefulSet has been missing pods.
#[derive(Default)]
struct Stalls(Mutex<HashMap<(String, String), Instant>>);

/// A StatefulSet reports no pod-creation failure in its status (only `FailedCreate` Events),
/// so it counts as failing when it has fewer pods than replicas while every pod it has is ready
/// (its controller would be creating the next one), continuously for [`STALL`]. `Err(left)`:
/// stalled, but not for long enough yet.
fn statefulset_stalled(ctx: &Context, ns: &str, name: &str) -> Result<Option<String>, Duration> {
    let key = (ns.to_string(), name.to_string());
    let stalled = (|| {
        let sts = ctx.statefulsets.get(&ObjectRef::new(name).within(ns))?;
        let want = sts.spec.present()?.replicas.unwrap_or(1);
        let pods = selected_pods(ctx, ns, "StatefulSet", name)?;
        let have = i32::try_from(live(&pods).count()).ok()?;
        let ready = sts
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        (have < want && ready >= have).then_some((have, want))
    })();
    let stalls = ctx.memory::<Stalls>();
    let mut since = stalls.0.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((have, want)) = stalled else {
        since.remove(&key);
        return Ok(None);
    };
    let waited = since.entry(key).or_insert_with(Instant::now).elapsed();
    if waited < STALL {
        return Err(STALL - waited);
    }
    // Stable text (no running time): the status and the Warning are written only on change.
    Ok(Some(format!(
        "no pod created for over {} s, {have} of {want} exist (its FailedCreate Events hold the \
         API server's answer: kubectl describe statefulset {name})",
        STALL.as_secs()
    )))
}

/// Why a workload's controller cannot create its pods, as it reports it: the Deployment's
/// `ReplicaFailure` condition (copied from its ReplicaSet), which carries the API server's
/// answer to the pod creation (e.g. `pods "…" is invalid: …`).
fn deployment_failure(ctx: &Context, ns: &str, name: &str) -> Option<String> {
    let d = ctx.deployments.get(&ObjectRef::new(name).within(ns))?;
    let c = d
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.text() == "ReplicaFailure" && c.status.text() == "True")?
        .clone();
    Some(format!(
        "{}: {}",
        c.reason.unwrap_or_else(|| "ReplicaFailure".into()),
        c.message.unwrap_or_default()
    ))
}

/// Whether a workload's pod template carries the webhook's marker (copied from an injected pod,
/// typically by exporting a pod into a template). Its pods carry it too, so their metadata says
/// "injected" while the webhook, seeing the marker, left them alone.
fn template_marked(ctx: &Context, ns: &str, kind: &str, name: &str) -> bool {
    template_annotation(ctx, ns, kind, name, INJECTED_ANNOTATION).is_some()
}

/// One annotation of a cached workload's pod template.
pub(super) fn template_annotation(
    ctx: &Context,
    ns: &str,
    kind: &str,
    name: &str,
    key: &str,
) -> Option<String> {
    let template = match kind {
        "Deployment" => ctx
            .deployments
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|d| d.spec.present().map(|s| s.template.clone())),
        _ => ctx
            .statefulsets
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|s| s.spec.present().map(|s| s.template.clone())),
    };
    template?.metadata?.annotations?.remove(key)
}

/// Pods of a marked workload without the install init container (their marker was copied, not
/// set by the webhook).
fn uninjected_marked_pods(pods: &[std::sync::Arc<Pod>]) -> i32 {
    let count = live(pods)
        .filter(|p| {
            !p.spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.name == INSTALL_CONTAINER))
        })
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Counts and verdict of a workload whose template carries `hash`; `None` when the workload or
/// its pods are not known.
fn workload_progress(
    ctx: &Context,
    ns: &str,
    kind: &str,
    name: &str,
    pods: &[std::sync::Arc<Pod>],
    hash: &str,
) -> Option<Progress> {
    let (replicas, controller) = match kind {
        "Deployment" => {
            let d = ctx.deployments.get(&ObjectRef::new(name).within(ns))?;
            (d.spec.present()?.replicas, progress::deployment_rollout(&d))
        }
        _ => {
            let s = ctx.statefulsets.get(&ObjectRef::new(name).within(ns))?;
            (
                s.spec.present()?.replicas,
                progress::statefulset_rollout(&s),
            )
        }
    };
    let pods: Vec<&Pod> = pods.iter().map(|p| p.as_ref()).collect();
    Some(progress::progress(replicas, controller, &pods, hash))
}

/// What [`observe`] found.
pub(crate) struct Observed {
    pub workloads: Vec<WorkloadStatus>,
    /// Parallel to `workloads`; a workload whose template carries another hash is `RollingOut`
    /// until [`roll`] patches it.
    pub verdicts: Vec<Verdict>,
    /// "Kind/name: why" for each workload whose pods cannot be created.
    pub creation_failures: Vec<String>,
    /// When to look again (a StatefulSet may be stalling).
    pub recheck: Option<Duration>,
}

/// The status of every labelled workload (nothing is changed), and the pod-creation failures.
pub(crate) async fn observe(ctx: &Context, obj: &WorkspaceRequirements, hash: &str) -> Observed {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let mut workloads = Vec::new();
    let mut verdicts = Vec::new();
    let mut failures = Vec::new();
    let mut recheck: Option<Duration> = None;
    for (kind, n, h) in labelled_workloads(ctx, &ns, &name) {
        let mut message = None;
        let pods = selected_pods(ctx, &ns, kind, &n);
        let mut uninjected = pods.as_deref().map(uninjected_pods);
        let progress = pods
            .as_deref()
            .and_then(|pods| workload_progress(ctx, &ns, kind, &n, pods, hash));
        if template_marked(ctx, &ns, kind, &n) {
            uninjected = pods.as_deref().map(uninjected_marked_pods);
            message = Some(format!(
                "the pod template carries the annotation {INJECTED_ANNOTATION} (copied from an \
                 injected pod?): the webhook takes its pods for injected and they run without \
                 the packages; remove the annotation from the template"
            ));
        }
        let failure = match kind {
            "Deployment" => deployment_failure(ctx, &ns, &n),
            _ => statefulset_stalled(ctx, &ns, &n).unwrap_or_else(|left| {
                recheck = Some(recheck.map_or(left, |r| r.min(left)));
                None
            }),
        };
        if let Some(f) = failure {
            failures.push(format!("{kind}/{n}: {f}"));
            message = Some(format!("cannot create pods: {f}"));
        }
        let verdict = match &progress {
            _ if h != hash => Verdict::RollingOut("its pod template carries an older hash".into()),
            Some(p) => p.verdict.clone(),
            None => Verdict::RollingOut("its pods are not known yet".into()),
        };
        if message.is_none() && matches!(verdict, Verdict::InstallFailing { .. }) {
            message = Some(verdict.message());
        }
        workloads.push(WorkloadStatus {
            kind: kind.to_string(),
            name: n.clone(),
            hash: (!h.is_empty()).then(|| h.clone()),
            up_to_date: h == hash,
            replicas: progress.as_ref().map(|p| p.replicas),
            updated_replicas: progress.as_ref().map(|p| p.updated),
            ready_updated_replicas: progress.as_ref().map(|p| p.ready_updated),
            uninjected_pods: uninjected,
            mode: pods
                .as_deref()
                .and_then(|pods| coverage::injected_mode(pods.iter().map(|p| p.as_ref()))),
            failed_packages: progress
                .as_ref()
                .map(|p| p.failed_packages.clone())
                .filter(|f| !f.is_empty() && h == hash),
            message: message.map(|m| crate::text::truncate(&m, 1000)),
        });
        verdicts.push(verdict);
    }
    Observed {
        workloads,
        verdicts,
        creation_failures: failures,
        recheck,
    }
}

/// Why no workload opts in to this resource, when none does: every Deployment and StatefulSet
/// of its namespace, from the reflector caches, judged by [`coverage::no_workloads`].
pub(crate) fn no_workloads(ctx: &Context, obj: &WorkspaceRequirements) -> Option<String> {
    let ns = obj.namespace();
    let deployments = ctx.deployments.state();
    let statefulsets = ctx.statefulsets.state();
    let deployed = deployments.iter().filter(|d| d.namespace() == ns).map(|d| {
        opt_in(
            "Deployment",
            &d.metadata,
            d.spec.present().map(|s| &s.template),
        )
    });
    let stateful = statefulsets
        .iter()
        .filter(|s| s.namespace() == ns)
        .map(|s| {
            opt_in(
                "StatefulSet",
                &s.metadata,
                s.spec.present().map(|s| &s.template),
            )
        });
    let workloads: Vec<coverage::Workload<'_>> = deployed.chain(stateful).collect();
    coverage::no_workloads(&obj.name_any(), &workloads)
}

fn opt_in<'a>(
    kind: &'static str,
    meta: &'a ObjectMeta,
    template: Option<&'a PodTemplateSpec>,
) -> coverage::Workload<'a> {
    coverage::Workload {
        kind,
        name: meta.name.as_deref().unwrap_or_default(),
        labels: meta.labels.as_ref(),
        template_labels: template
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref()),
    }
}

/// Labelled workloads of this resource, from the reflector caches: (kind, name, current hash).
fn labelled_workloads(ctx: &Context, ns: &str, name: &str) -> Vec<(&'static str, String, String)> {
    let mut found = Vec::new();
    for d in ctx.deployments.state() {
        if d.namespace().as_deref() == Some(ns)
            && let Some(h) = d
                .spec
                .present()
                .and_then(|s| template_hash(&s.template, name))
        {
            found.push(("Deployment", d.name_any(), h));
        }
    }
    for s in ctx.statefulsets.state() {
        if s.namespace().as_deref() == Some(ns)
            && let Some(h) = s
                .spec
                .present()
                .and_then(|s| template_hash(&s.template, name))
        {
            found.push(("StatefulSet", s.name_any(), h));
        }
    }
    found.sort();
    found
}
