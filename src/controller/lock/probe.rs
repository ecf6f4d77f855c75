//! The workers' interpreter, learned from their image when `spec.install.python` is unset.
//!
//! The lock is resolved for one interpreter (version, platform); a user should not have to know
//! their worker image's Python to get started. So the operator runs the image's own `python3`
//! (else `python`) once, in a short-lived probe pod in the workers' namespace, locked down
//! (no service-account token, read-only root, non-root, no capabilities, RuntimeDefault seccomp,
//! a deadline, small limits) and never injected (it carries no `bifrost.io/requirements` label,
//! which the webhook's objectSelector requires). The answer comes back in the containers'
//! termination messages, so the operator needs no `pods/log` permission.
//!
//! One probe per image: the answer is kept in memory for every resource, and in each resource's
//! `status.interpreter` (a restarted operator or a new leader reuses it). A failed probe is
//! retried with backoff. Nothing waits on it: until the interpreter is known, pods resolve
//! for themselves (see [`super::lock`]).

use crate::k8s_compat::Present;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerStatus, LocalObjectReference, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::controller::context::Context;
use crate::controller::status::now_rfc3339;
use crate::crd::{InterpreterStatus, MANAGER, OPT_IN_LABEL, WorkspaceRequirements};
use crate::lock::{Interpreter, WORKER_SCRIPT, Worker};
use crate::requirements::content_hash;

/// `app.kubernetes.io/component` of probe pods.
pub const COMPONENT: &str = "interpreter-probe";
/// The probe pod's annotation naming the image it probes (in full: a label value cannot).
pub const IMAGE_ANNOTATION: &str = "bifrost.io/probe-image";
/// The interpreters each probe container runs, in order of preference.
const PYTHONS: [&str; 2] = ["python3", "python"];
/// The probe pod's `activeDeadlineSeconds` (pulling the image counts).
pub const DEADLINE_SECONDS: i64 = 120;
/// How long past its deadline a pod that never ran (unschedulable, no kubelet) is given up.
const GRACE_SECONDS: i64 = 60;
/// How often a running probe is looked at (probe pods are not watched).
pub(super) const POLL: Duration = Duration::from_secs(2);
/// The first retry after a failed probe; each further failure doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// uid the probe runs as when the workload names none (or root): distroless's `nonroot`.
const NONROOT: i64 = 65532;
const TERMINATION: &str = "/dev/termination-log";

/// What the operator knows about one image.
#[derive(Debug, Clone)]
pub(super) enum Known {
    /// A probe pod runs in `namespace`; `failures` earlier probes failed.
    Probing {
        namespace: String,
        failures: u32,
    },
    Learned(InterpreterStatus),
    /// The last probe failed at `at`, the `failures`th in a row (`message`: why, and when it is
    /// tried again).
    Failed {
        message: String,
        failures: u32,
        at: Instant,
    },
}

/// What is known per image, shared by every resource.
pub(super) type Probes = Mutex<HashMap<String, Known>>;

/// The outcome of [`learn`].
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Learned {
    Known(InterpreterStatus),
    /// Not known (yet): `reason` for `Resolved`, what is happening, and when to look again.
    Unknown {
        reason: &'static str,
        message: String,
        recheck: Option<Duration>,
    },
}

/// The image to probe and how to run it, taken from a labelled workload.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Target {
    pub(super) image: String,
    pub(super) uid: i64,
    pub(super) pull_policy: Option<String>,
    pub(super) pull_secrets: Option<Vec<LocalObjectReference>>,
}

/// The image `spec.install.image` names, else the first app container's of the first labelled
/// workload's template (`templates`, in a stable order); the uid that template runs as (its
/// container's, else its pod's), unless root or none: [`NONROOT`]. `None`: nothing to probe.
pub(super) fn target(obj: &WorkspaceRequirements, templates: &[PodTemplateSpec]) -> Option<Target> {
    let spec: Option<&PodSpec> = templates.iter().find_map(|t| t.spec.as_ref());
    let first = spec.and_then(|s| s.containers.first());
    let image = obj
        .spec
        .install
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .or_else(|| first.and_then(|c| c.image.clone()))
        .filter(|i| !i.is_empty())?;
    let uid = first
        .and_then(|c| c.security_context.as_ref()?.run_as_user)
        .or_else(|| spec.and_then(|s| s.security_context.as_ref()?.run_as_user))
        .filter(|uid| *uid > 0)
        .unwrap_or(NONROOT);
    let same_image = first.filter(|c| c.image.as_deref() == Some(image.as_str()));
    Some(Target {
        uid,
        pull_policy: same_image.and_then(|c| c.image_pull_policy.clone()),
        pull_secrets: spec.and_then(|s| s.image_pull_secrets.clone()),
        image,
    })
}

/// The probe pod's name: one per image (a second resource finds the running one).
pub(super) fn pod_name(image: &str) -> String {
    format!("bifrost-probe-{}", &content_hash(image)[..16])
}

/// The script each probe container runs: [`WORKER_SCRIPT`]'s answer, written to the
/// termination message (and printed).
fn script() -> String {
    format!(
        "import contextlib, io\nout = io.StringIO()\nwith contextlib.redirect_stdout(out):\n    \
         exec({WORKER_SCRIPT:?})\nopen({TERMINATION:?}, 'w').write(out.getvalue())\n\
         print(out.getvalue(), end='')\n"
    )
}

/// The locked-down probe pod for `target` in `ns` (pure), owned by `owner` (the resource that
/// asked first: a pod left behind by a resource deleted meanwhile is garbage-collected).
pub(super) fn probe_pod(ns: &str, target: &Target, owner: Option<OwnerReference>) -> Pod {
    let containers: Vec<serde_json::Value> = PYTHONS
        .iter()
        .map(|python| {
            json!({
                "name": python,
                "image": target.image,
                "imagePullPolicy": target.pull_policy,
                "command": [python, "-I", "-B", "-c", script()],
                "terminationMessagePath": TERMINATION,
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "resources": {
                    "requests": {"cpu": "10m", "memory": "32Mi"},
                    "limits": {"cpu": "200m", "memory": "64Mi"},
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "runAsNonRoot": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(&target.image),
            "namespace": ns,
            // No `bifrost.io/requirements` label: the webhook never sees this pod.
            "labels": {
                "app.kubernetes.io/managed-by": MANAGER,
                "app.kubernetes.io/component": COMPONENT,
            },
            "annotations": {IMAGE_ANNOTATION: target.image},
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "activeDeadlineSeconds": DEADLINE_SECONDS,
            "terminationGracePeriodSeconds": 1,
            "imagePullSecrets": target.pull_secrets,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": target.uid,
                "runAsGroup": target.uid,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": containers,
        },
    }))
    .expect("the probe pod is a Pod")
}

/// What a probe pod says.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    /// Still going: its phase and what it waits for.
    Running(String),
    Answered(Worker),
    Failed(String),
}

/// Waiting reasons that do not go away by waiting.
const STUCK: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];

/// What `pod` says at `now` (pure): the first interpreter (in [`PYTHONS`] order) that answered,
/// else a failure once every container ended, an image cannot be pulled, the pod failed, or it
/// is past its deadline without having run.
pub(super) fn seen(pod: &Pod, now: Timestamp) -> Seen {
    let status = pod.status.clone().unwrap_or_default();
    let statuses = status.container_statuses.unwrap_or_default();
    let ended = |name: &str| {
        statuses
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.state.as_ref()?.terminated.clone())
    };
    for python in PYTHONS {
        if let Some(t) = ended(python).filter(|t| t.exit_code == 0) {
            let message = t.message.unwrap_or_default();
            return match Worker::parse(&message) {
                Ok(worker) => Seen::Answered(worker),
                Err(e) => Seen::Failed(format!("{python} answered, but not as asked: {e}")),
            };
        }
    }
    if let Some(stuck) = statuses.iter().find_map(stuck) {
        return Seen::Failed(stuck);
    }
    let phase = status.phase.unwrap_or_else(|| "Pending".into());
    if PYTHONS.iter().all(|p| ended(p).is_some()) || phase == "Failed" || phase == "Succeeded" {
        let each: Vec<String> = statuses.iter().filter_map(ended_with).collect();
        let pod_said = [status.reason, status.message]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        let mut why = format!("no {} answered", PYTHONS.join(" or "));
        for said in each.iter().chain(Some(&pod_said).filter(|s| !s.is_empty())) {
            why.push_str(&format!("; {said}"));
        }
        return Seen::Failed(why);
    }
    let age = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| now.as_second() - t.0.as_second());
    if age > DEADLINE_SECONDS + GRACE_SECONDS {
        return Seen::Failed(format!(
            "it did not finish within {} s (phase {phase}; is the image pullable, a node free?)",
            DEADLINE_SECONDS + GRACE_SECONDS
        ));
    }
    Seen::Running(format!("phase {phase}"))
}

/// "container: reason: message" of a container waiting for what will not come.
fn stuck(c: &ContainerStatus) -> Option<String> {
    let waiting = c.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref().filter(|r| STUCK.contains(r))?;
    Some(format!(
        "{}: {reason}: {}",
        c.name,
        waiting.message.as_deref().unwrap_or_default()
    ))
}

/// "container exited N (reason): message" of an ended container.
fn ended_with(c: &ContainerStatus) -> Option<String> {
    let t = c.state.as_ref()?.terminated.as_ref()?;
    let message = t.message.as_deref().unwrap_or_default().trim();
    let tail: String = message
        .chars()
        .rev()
        .take(300)
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .collect();
    Some(format!(
        "{} exited {} ({}){}",
        c.name,
        t.exit_code,
        t.reason.as_deref().unwrap_or("Error"),
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// How long after its `failures`th failure in a row an image is probed again.
pub(super) fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// The labelled workloads' pod templates in `ns`, Deployments then StatefulSets, by name.
fn labelled_templates(ctx: &Context, ns: &str, name: &str) -> Vec<PodTemplateSpec> {
    let mine = |t: &PodTemplateSpec| {
        t.metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .and_then(|l| l.get(OPT_IN_LABEL))
            .is_some_and(|v| v == name)
    };
    let mut found: Vec<(u8, String, PodTemplateSpec)> = Vec::new();
    for d in ctx.deployments.state() {
        if let Some(t) = d.spec.present().map(|s| &s.template).filter(|t| mine(t))
            && d.namespace().as_deref() == Some(ns)
        {
            found.push((0, d.name_any(), t.clone()));
        }
    }
    for s in ctx.statefulsets.state() {
        if let Some(t) = s.spec.present().map(|s| &s.template).filter(|t| mine(t))
            && s.namespace().as_deref() == Some(ns)
        {
            found.push((1, s.name_any(), t.clone()));
        }
    }
    found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    found.into_iter().map(|(_, _, t)| t).collect()
}

/// The workers' interpreter of `obj`: recorded in its status for the same image, learned for
/// another resource, or probed now (a pod started, looked at, deleted once it answered).
pub(super) async fn learn(ctx: &Context, obj: &WorkspaceRequirements) -> Learned {
    let ns = obj.namespace().unwrap_or_default();
    let Some(target) = target(obj, &labelled_templates(ctx, &ns, &obj.name_any())) else {
        return unknown(
            "InterpreterUnknown",
            format!(
                "no labelled Deployment or StatefulSet yet (and no spec.install.image) to learn \
                 the workers' interpreter from (a pod labelled {OPT_IN_LABEL}={} starts one)",
                obj.name_any()
            ),
            None,
        );
    };
    let recorded = obj.status.as_ref().and_then(|s| s.interpreter.clone());
    if let Some(recorded) = recorded.filter(|r| r.image == target.image) {
        remember(ctx, &target.image, Known::Learned(recorded.clone()));
        return Learned::Known(recorded);
    }
    let known = ctx
        .memory::<Probes>()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&target.image)
        .cloned();
    match known {
        Some(Known::Learned(learned)) => Learned::Known(learned),
        Some(Known::Failed {
            message,
            failures,
            at,
        }) => match backoff(failures).checked_sub(at.elapsed()) {
            // The message as recorded: a countdown would rewrite the status every reconcile.
            Some(left) if !left.is_zero() => unknown("ProbeFailed", message, Some(left)),
            _ => probe(ctx, obj, (&ns, &target), failures).await,
        },
        Some(Known::Probing {
            namespace,
            failures,
        }) => probe(ctx, obj, (&namespace, &target), failures).await,
        None => probe(ctx, obj, (&ns, &target), 0).await,
    }
}

fn unknown(reason: &'static str, message: String, recheck: Option<Duration>) -> Learned {
    Learned::Unknown {
        reason,
        message,
        recheck,
    }
}

fn remember(ctx: &Context, image: &str, known: Known) {
    ctx.memory::<Probes>()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(image.to_string(), known);
}

/// Read what the probe pod of `target` in `ns` says (and delete it once it ended), or start it
/// (in `obj`'s namespace) when there is none.
async fn probe(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    (ns, target): (&str, &Target),
    failures: u32,
) -> Learned {
    let api = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let name = pod_name(&target.image);
    let at = format!("probe pod {ns}/{name} ({})", target.image);
    let pod = match api.get_opt(&name).await {
        Ok(pod) => pod,
        Err(e) => return failed(ctx, target, failures, format!("cannot read the {at}: {e}")),
    };
    let Some(pod) = pod else {
        return start(ctx, obj, target, failures).await;
    };
    let answer = match seen(&pod, Timestamp::now()) {
        Seen::Running(what) => {
            return unknown("ProbingInterpreter", format!("{at}: {what}"), Some(POLL));
        }
        Seen::Answered(worker) => worker.interpreter(),
        Seen::Failed(why) => Err(why),
    };
    if let Err(e) = api.delete(&name, &DeleteParams::background()).await {
        warn!(error = %e, pod = %name, "cannot delete the finished probe pod");
    }
    match answer {
        Ok(Interpreter { version, platform }) => {
            let learned = InterpreterStatus {
                image: target.image.clone(),
                version,
                platform,
                probed_at: now_rfc3339(),
            };
            info!(image = %target.image, version = %learned.version, platform = %learned.platform, "learned the workers' interpreter");
            remember(ctx, &target.image, Known::Learned(learned.clone()));
            Learned::Known(learned)
        }
        Err(why) => failed(ctx, target, failures, format!("the {at} failed: {why}")),
    }
}

/// Create the probe pod of `target` in `obj`'s namespace, owned by `obj` (not its controller).
async fn start(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    target: &Target,
    failures: u32,
) -> Learned {
    let ns = obj.namespace().unwrap_or_default();
    let at = format!(
        "probe pod {ns}/{} ({})",
        pod_name(&target.image),
        target.image
    );
    let owner = obj.controller_owner_ref(&()).map(|o| OwnerReference {
        controller: None,
        ..o
    });
    let pod = probe_pod(&ns, target, owner);
    let api = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
    match api.create(&PostParams::default(), &pod).await {
        Err(e) if !is_conflict(&e) => failed(
            ctx,
            target,
            failures,
            format!("cannot create the {at}: {e}"),
        ),
        // Created, or another reconcile created it first.
        _ => {
            info!(image = %target.image, namespace = ns, "probing the workers' interpreter");
            let namespace = ns.clone();
            remember(
                ctx,
                &target.image,
                Known::Probing {
                    namespace,
                    failures,
                },
            );
            unknown("ProbingInterpreter", format!("{at} started"), Some(POLL))
        }
    }
}

/// Whether a create was refused because the pod exists (another reconcile started it).
fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 409)
}

/// Record the `failures + 1`th failure of `target`'s probe and say when it is tried again.
fn failed(ctx: &Context, target: &Target, failures: u32, message: String) -> Learned {
    let failures = failures + 1;
    let retry = backoff(failures);
    warn!(image = %target.image, failures, "{message}");
    let message = format!(
        "{message}; probed again {} s after it failed",
        retry.as_secs()
    );
    remember(
        ctx,
        &target.image,
        Known::Failed {
            message: message.clone(),
            failures,
            at: Instant::now(),
        },
    );
    unknown("ProbeFailed", message, Some(retry))
}

#[cfg(test)]
mod tests;
