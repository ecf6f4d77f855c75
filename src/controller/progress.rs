//! How far a labelled workload is in running the current hash: pure decisions on plain objects.
//!
//! A patched template annotation only starts a rollout. It is done when the workload's own
//! controller says so (read the way `kubectl rollout status` reads it) *and* the workload's pods
//! say so: `replicas` pods created from the template with the hash, injected with it, and ready
//! (ready means the install init container succeeded — it runs before the main container).
//! When the new pods' install containers fail, the rollout halts (readiness gates it) and the
//! verdict names the pod, the init container and its termination message.

use crate::k8s_compat::Present;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use kube::ResourceExt;

use crate::crd::{ConditionType, HASH_ANNOTATION, INJECTED_ANNOTATION, INJECTED_MODE_ANNOTATION};
use crate::webhook::inject::{BOOTSTRAP_CONTAINER, INSTALL_CONTAINER};

/// The shortest time between two re-rollouts of one workload for uninjected pods (`reinject`
/// acts on it; the messages here name it).
pub(crate) const REINJECT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a workload whose template carries the current hash stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every desired replica runs the current hash and is ready; no old pod is left.
    UpToDate,
    /// Still rolling; the text says what it waits for.
    RollingOut(String),
    /// A new pod's injected init container fails: the rollout is halted.
    InstallFailing {
        pod: String,
        container: String,
        message: String,
    },
    /// The workload's controller is done, but some of its pods started without the packages
    /// (the webhook was unreachable when they were created); nothing re-creates them by itself.
    PodsUninjected(String),
}

impl Verdict {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Verdict::UpToDate => "UpToDate",
            Verdict::RollingOut(_) => "RollingOut",
            Verdict::InstallFailing { .. } => "InstallFailing",
            Verdict::PodsUninjected(_) => "PodsUninjected",
        }
    }

    /// Stable text (no times, no restart counts): the status is written only when it changes.
    pub(crate) fn message(&self) -> String {
        match self {
            Verdict::UpToDate => "rolled out".into(),
            Verdict::RollingOut(why) | Verdict::PodsUninjected(why) => why.clone(),
            Verdict::InstallFailing {
                pod,
                container,
                message,
            } => format!("pod {pod}: init container {container} {message}"),
        }
    }
}

/// Replica counts of one workload and its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    pub replicas: i32,
    /// Pods that run the current hash (template hash and injected hash both current).
    pub updated: i32,
    /// Of those, the ready ones.
    pub ready_updated: i32,
    pub verdict: Verdict,
    /// Packages the install containers of those pods could not install (`name (why)`, sorted,
    /// each once): under `onFailure: Continue` the workers run without them.
    pub failed_packages: Vec<String>,
}

/// What the workload's own controller reports: `None` when its rollout is complete, else what
/// it is waiting for. The checks are `kubectl rollout status`'s.
pub(crate) fn deployment_rollout(d: &Deployment) -> Option<String> {
    let want = desired(d.spec.present().and_then(|s| s.replicas));
    let s = d.status.clone().unwrap_or_default();
    if s.observed_generation.unwrap_or(0) < d.metadata.generation.unwrap_or(0) {
        return Some("the Deployment controller has not seen the new template yet".into());
    }
    let updated = s.updated_replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if updated < want {
        return Some(format!("{updated} of {want} replica(s) updated"));
    }
    if s.replicas.unwrap_or(0) > updated {
        let old = s.replicas.unwrap_or(0) - updated;
        return Some(format!("{old} old replica(s) pending termination"));
    }
    if available < updated {
        return Some(format!(
            "{available} of {updated} updated replica(s) available"
        ));
    }
    None
}

/// [`deployment_rollout`] for a StatefulSet. `OnDelete` StatefulSets roll only when their pods
/// are deleted: their controller has nothing to report, the pods decide.
pub(crate) fn statefulset_rollout(s: &StatefulSet) -> Option<String> {
    let spec = s.spec.present().cloned().unwrap_or_default();
    let want = desired(spec.replicas);
    let st = s.status.clone().unwrap_or_default();
    if st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0) {
        return Some("the StatefulSet controller has not seen the new template yet".into());
    }
    let strategy = spec.update_strategy.unwrap_or_default();
    if strategy.type_.as_deref() == Some("OnDelete") {
        return None;
    }
    let ready = st.ready_replicas.unwrap_or(0);
    if ready < want {
        return Some(format!("{ready} of {want} replica(s) ready"));
    }
    let partition = strategy
        .rolling_update
        .and_then(|r| r.partition)
        .unwrap_or(0);
    if partition > 0 {
        let updated = st.updated_replicas.unwrap_or(0);
        let expected = want - partition;
        return (updated < expected).then(|| {
            format!("{updated} of {expected} replica(s) updated (partition {partition})")
        });
    }
    if st.update_revision != st.current_revision {
        let updated = st.updated_replicas.unwrap_or(0);
        return Some(format!("{updated} of {want} replica(s) updated"));
    }
    None
}

fn desired(replicas: Option<i32>) -> i32 {
    replicas.unwrap_or(1).max(0)
}

/// Counts and verdict of a workload whose template carries `hash`. `controller` is what
/// [`deployment_rollout`] or [`statefulset_rollout`] said; `pods` are the workload's pods
/// (matching its selector), terminating ones included.
pub(crate) fn progress(
    replicas: Option<i32>,
    controller: Option<String>,
    pods: &[&Pod],
    hash: &str,
) -> Progress {
    let replicas = desired(replicas);
    let pods = PodsByHash::of(pods, hash);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let ready_updated = count(pods.updated.iter().filter(|p| is_ready(p)).count());
    let failed_packages: Vec<String> = pods
        .updated
        .iter()
        .flat_map(|p| install_report(p).map(failed_packages).unwrap_or_default())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    Progress {
        replicas,
        updated: count(pods.updated.len()),
        ready_updated,
        verdict: verdict(&pods, controller, replicas, ready_updated),
        failed_packages,
    }
}

/// A workload's pods by what they run.
struct PodsByHash<'a> {
    /// Not terminating, sorted by name.
    live: Vec<&'a Pod>,
    /// Of those, the ones whose template carries the hash.
    new: Vec<&'a Pod>,
    /// Of those, the ones injected with the hash.
    updated: Vec<&'a Pod>,
}

impl<'a> PodsByHash<'a> {
    fn of(pods: &[&'a Pod], hash: &str) -> Self {
        let mut live: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        live.sort_by_key(|p| p.name_any());
        let new: Vec<&Pod> = live
            .iter()
            .copied()
            .filter(|p| annotation(p, HASH_ANNOTATION) == Some(hash))
            .collect();
        let updated = new
            .iter()
            .copied()
            .filter(|p| annotation(p, INJECTED_ANNOTATION) == Some(hash))
            .collect();
        Self { live, new, updated }
    }
}

/// Where the workload stands, `ready_n` of its `replicas` running the hash and ready.
fn verdict(pods: &PodsByHash, controller: Option<String>, replicas: i32, ready_n: i32) -> Verdict {
    // A failing install container halts the rollout whatever else is going on.
    if let Some(v) = pods
        .new
        .iter()
        .filter(|p| !is_ready(p))
        .find_map(|p| init_failure(p))
    {
        return v;
    }
    if let Some(why) = controller {
        return Verdict::RollingOut(format!(
            "{why}; {ready_n} of {replicas} replica(s) run the current hash and are ready"
        ));
    }
    let uninjected = pods
        .new
        .iter()
        .filter(|p| annotation(p, INJECTED_ANNOTATION).is_none())
        .count();
    if ready_n >= replicas {
        // Old pods still running beside enough new ones: the controller is scaling them down.
        let old = pods.live.len() - pods.new.len();
        if old == 0 {
            return Verdict::UpToDate;
        }
        return Verdict::RollingOut(format!("{old} pod(s) with an older hash still running"));
    }
    if uninjected > 0 {
        return Verdict::PodsUninjected(format!(
            "{uninjected} pod(s) started without the packages (the webhook was unreachable when \
             they were created); the operator rolls the workload out again so they are \
             re-created injected (at most once per {} s); {ready_n} of {replicas} replica(s) run \
             the current hash and are ready",
            REINJECT_INTERVAL.as_secs()
        ));
    }
    Verdict::RollingOut(format!(
        "{ready_n} of {replicas} replica(s) run the current hash and are ready"
    ))
}

fn annotation<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == ConditionType::Ready.as_str() && c.status == "True")
        })
}

/// Waiting reasons of a container that will not start by itself (image or configuration
/// problems). `CrashLoopBackOff` is not among them: its message holds a changing back-off time,
/// and the last termination says more.
const STUCK: [&str; 6] = [
    "ErrImageNeverPull",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// The first injected init container of the pod that failed (exited non-zero now or in its
/// previous run, unless it has since succeeded) or cannot start.
fn init_failure(p: &Pod) -> Option<Verdict> {
    let statuses = p.status.as_ref()?.init_container_statuses.as_ref()?;
    [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]
        .iter()
        .filter_map(|name| statuses.iter().find(|c| c.name == *name))
        .find_map(|c| {
            let message = container_failure(c)?;
            Some(Verdict::InstallFailing {
                pod: p.name_any(),
                container: c.name.clone(),
                message,
            })
        })
}

fn container_failure(c: &ContainerStatus) -> Option<String> {
    let state = c.state.clone().unwrap_or_default();
    if state.terminated.as_ref().is_some_and(|t| t.exit_code == 0) {
        return None;
    }
    let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    if let Some(t) = state
        .terminated
        .as_ref()
        .or(last)
        .filter(|t| t.exit_code != 0)
    {
        let text = t
            .message
            .as_deref()
            .map(termination_text)
            .filter(|m| !m.is_empty())
            .or_else(|| t.reason.clone())
            .unwrap_or_else(|| "(no termination message)".into());
        return Some(format!("exited {}: {text}", t.exit_code));
    }
    let waiting = state.waiting?;
    let reason = waiting.reason.filter(|r| STUCK.contains(&r.as_str()))?;
    Some(format!(
        "cannot start: {reason}: {}",
        waiting.message.unwrap_or_default()
    ))
}

/// The termination message of the pod's install container when it succeeded: its summary line
/// (`installed 12/13; failed: …`).
fn install_report(p: &Pod) -> Option<&str> {
    let c = p
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == INSTALL_CONTAINER)?;
    let t = c.state.as_ref()?.terminated.as_ref()?;
    (t.exit_code == 0).then_some(t.message.as_deref()?)
}

/// The packages an install container reports as failed in its termination message
/// (`installed 12/13; failed: xhtml2pdf (needs a C compiler), foo (not on the index)`, written by
/// `installer::failures::summary`), each as `name (why)`. Empty for any other message.
pub(crate) fn failed_packages(message: &str) -> Vec<String> {
    let Some(line) = message.lines().find(|l| l.starts_with("installed ")) else {
        return Vec::new();
    };
    let Some((_, list)) = line.split_once("; failed: ") else {
        return Vec::new();
    };
    // Split on ", " outside parentheses: a reason may hold commas.
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    let bytes = list.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.saturating_sub(1),
            b',' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                items.push(&list[start..i]);
                start = i + 2;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.starts_with("… and "))
        .map(String::from)
        .collect()
}

/// The part of a termination message that says why. The injected containers' policy is
/// `FallbackToLogsOnError`, so the message is usually the log's tail: progress records with
/// timestamps (and colour codes) before the installer's `error:` report. Those records differ on
/// every attempt; the report does not, and it is what a reader needs.
fn termination_text(raw: &str) -> String {
    let plain = strip_ansi(raw);
    let lines: Vec<&str> = plain.lines().collect();
    let kept: Vec<&str> = match lines.iter().position(|l| l.starts_with("error:")) {
        Some(first) => lines[first..].to_vec(),
        None => lines.into_iter().filter(|l| !is_log_record(l)).collect(),
    };
    fit(kept.join("\n").trim(), 1000)
}

/// At most about `max` bytes: the first line (what failed) and the end (why: uv's or pip's
/// last words), with `…` where the middle was cut.
fn fit(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let first = text.lines().next().unwrap_or_default();
    let first = crate::text::truncate(first, max / 2);
    const CUT: &str = "\n…\n";
    let mut start = text.len() - (max - first.len() - CUT.len()).min(text.len());
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{first}{CUT}{}", &text[start..])
}

/// A log record starts with its RFC 3339 timestamp (`2026-01-02T…`).
fn is_log_record(line: &str) -> bool {
    let b = line.trim_start().as_bytes();
    b.len() > 11
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
}

/// Without ANSI escape sequences (`ESC [ … final byte`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// What the pod cache keeps of a labelled pod: what [`progress`], the selector match and the
/// uninjected count read — labels, the three annotations, deletion, the init containers' names,
/// the Ready condition and the injected init containers' states. Everything else (most of a
/// pod's size: its spec, managedFields, other containers' statuses) is dropped as it arrives.
pub(crate) fn slim(p: &mut Pod) {
    let m = &mut p.metadata;
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
    m.generate_name = None;
    m.creation_timestamp = None;
    m.annotations = m.annotations.take().map(|a| {
        a.into_iter()
            .filter(|(k, _)| {
                [
                    HASH_ANNOTATION,
                    INJECTED_ANNOTATION,
                    INJECTED_MODE_ANNOTATION,
                ]
                .contains(&k.as_str())
            })
            .collect::<BTreeMap<_, _>>()
    });
    p.spec = p.spec.take().map(|s| PodSpec {
        init_containers: s.init_containers.map(|cs| {
            cs.into_iter()
                .map(|c| Container {
                    name: c.name,
                    ..Container::default()
                })
                .collect()
        }),
        ..PodSpec::default()
    });
    p.status = p.status.take().map(|s| PodStatus {
        conditions: s.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| c.type_ == ConditionType::Ready.as_str())
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    ..PodCondition::default()
                })
                .collect()
        }),
        init_container_statuses: s.init_container_statuses.map(|cs| {
            cs.into_iter()
                .filter(|c| c.name == BOOTSTRAP_CONTAINER || c.name == INSTALL_CONTAINER)
                .map(|c| ContainerStatus {
                    name: c.name,
                    state: c.state.map(slim_state),
                    last_state: c.last_state.map(slim_state),
                    ..ContainerStatus::default()
                })
                .collect()
        }),
        ..PodStatus::default()
    });
}

fn slim_state(s: ContainerState) -> ContainerState {
    ContainerState {
        running: s.running.map(|_| Default::default()),
        terminated: s
            .terminated
            .map(|t| k8s_openapi::api::core::v1::ContainerStateTerminated {
                exit_code: t.exit_code,
                reason: t.reason,
                // The report, not the log before it: a cut made first would keep the log.
                message: t.message.map(|m| termination_text(&m)),
                ..Default::default()
            }),
        waiting: s.waiting,
    }
}

/// A digest of what the controller reads from a pod: a pod event whose digest did not change
/// (a resourceVersion bump, a probe result on another container) triggers no reconcile.
pub(crate) fn digest(p: &Pod) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    annotation(p, HASH_ANNOTATION).hash(&mut h);
    annotation(p, INJECTED_ANNOTATION).hash(&mut h);
    annotation(p, INJECTED_MODE_ANNOTATION).hash(&mut h);
    p.metadata.deletion_timestamp.is_some().hash(&mut h);
    is_ready(p).hash(&mut h);
    init_failure(p).map(|v| v.message()).hash(&mut h);
    install_report(p).hash(&mut h);
    Some(h.finish())
}

/// The rollout verdict of all labelled workloads: `(rolled out, reason, message)`. The worst
/// verdict wins (a failing install over anything still rolling); the message names each
/// workload that is not done.
pub(crate) fn summarize(verdicts: &[(String, &Verdict)]) -> (bool, &'static str, String) {
    let rank = |v: &Verdict| match v {
        Verdict::InstallFailing { .. } => 0,
        Verdict::PodsUninjected(_) => 1,
        Verdict::RollingOut(_) => 2,
        Verdict::UpToDate => 3,
    };
    let Some(worst) = verdicts.iter().map(|(_, v)| *v).min_by_key(|v| rank(v)) else {
        return (true, "UpToDate", String::new());
    };
    if *worst == Verdict::UpToDate {
        return (
            true,
            "UpToDate",
            format!(
                "{} workload(s) rolled out: every replica runs the current hash and is ready",
                verdicts.len()
            ),
        );
    }
    let message = verdicts
        .iter()
        .filter(|(_, v)| rank(v) == rank(worst))
        .map(|(name, v)| format!("{name}: {}", v.message()))
        .collect::<Vec<_>>()
        .join("; ");
    (false, worst.reason(), message)
}

#[cfg(test)]
mod tests;
