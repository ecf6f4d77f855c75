//! The workers' interpreter learned from their image, on a real control plane with real Redis
//! and a real PEP 503 index: a resource without `spec.install.python` does its whole job at
//! once (Redis, snapshot, rollout; pods resolve), while a locked-down probe pod runs the
//! workers' image's Python; once it answers, the lock is resolved for it and the workloads roll
//! once more. There is no kubelet here: the test acts as one by writing the probe pod's status
//! (a termination message, or a failure), as the kubelet would.

mod common;

use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::controller::probe::{COMPONENT, DEADLINE_SECONDS, IMAGE_ANNOTATION};
use bifrost_requirements::crd::{
    HASH_ANNOTATION, InterpreterStatus, LOCK_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements,
};
use bifrost_requirements::lock::{LOCK_FILE, Lock};
use bifrost_requirements::requirements::content_hash;
use common::index::Index;
use common::operator::{condition, redis_cache, wait_for};
use common::scenario::{Scenario, says};
use common::scenario_ext::template_annotation as annotation;
use common::services::fresh_key;
use common::wheels::Wheel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
/// The image of `labelled_deployment_with`'s worker.
const IMAGE: &str = "python:3.11-slim";
/// What Debian bookworm's python3 answers.
const BOOKWORM: &str = "3.11.2\nx86_64\n2.36\n";

/// A resource named `name` without `install.python`, resolving against `index`, cached under
/// Redis key `key`.
async fn resource(op: &Scenario, name: &str, content: &str, index: &Index, key: &str) {
    op.wsreq(
        name,
        json!({
            "content": content,
            "cache": redis_cache(key),
            "install": {"indexUrls": [index.url()], "onlyBinary": true},
            "rollout": {"debounceSeconds": 0},
        }),
    )
    .await;
}

/// The scenario's probe pods.
async fn probes(op: &Scenario) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/component={COMPONENT}");
    op.api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

/// The one probe pod of `image`, once it exists.
async fn probe_of(op: &Scenario, image: &str) -> Pod {
    wait_for(&format!("the probe pod of {image}"), T, || async {
        probes(op).await.into_iter().find(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IMAGE_ANNOTATION))
                .is_some_and(|i| i == image)
        })
    })
    .await
}

async fn probes_gone(op: &Scenario) {
    wait_for("the probe pod deleted", T, || async {
        probes(op).await.is_empty().then_some(())
    })
    .await;
}

fn ended(name: &str, code: i32, message: &str) -> Value {
    json!({"name": name, "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
           "state": {"terminated": {"exitCode": code, "message": message,
                                    "reason": if code == 0 { "Completed" } else { "StartError" }}}})
}

/// Write the probe pod's status as the kubelet would once its two containers ended: `python3`
/// and `python` with these exit codes and termination messages (the pod Failed if either did).
async fn answer(op: &Scenario, pod: &Pod, python3: (i32, &str), python: (i32, &str)) {
    let phase = if python3.0 == 0 && python.0 == 0 {
        "Succeeded"
    } else {
        "Failed"
    };
    let statuses = json!([
        ended("python3", python3.0, python3.1),
        ended("python", python.0, python.1)
    ]);
    op.api::<Pod>()
        .patch_status(
            pod.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "containerStatuses": statuses}})),
        )
        .await
        .unwrap();
}

/// The lock in resource `name`'s snapshot.
async fn snapshot_lock(op: &Scenario, name: &str) -> Option<String> {
    op.snapshot(name).await.remove(LOCK_FILE)
}

/// Whether condition `type_` of `obj` has `status`.
fn is(obj: &WorkspaceRequirements, type_: &str, status: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c.0 == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_python_the_content_rolls_at_once_and_the_learned_interpreter_brings_the_lock() {
    let alpha = Wheel::new("alpha", "1.0");
    let index = Index::start(std::slice::from_ref(&alpha));
    let op = Scenario::resolving("probe", &index).await;
    // No replicas: rolled out once its template carries the hash (no node runs pods here).
    op.deployment("worker", "default", 0).await;
    let content = "alpha>=1.0\n";
    resource(&op, "default", content, &index, &op.key).await;

    let rolled_once = nothing_waits_on_the_interpreter(&op, content).await;
    let pod = probe_of(&op, IMAGE).await;
    the_probe_pod_is_locked_down(&pod);
    // The kubelet's part: python3 answered (python is not in the image).
    let missing = "exec: \"python\": executable file not found in $PATH";
    answer(&op, &pod, (0, BOOKWORM), (128, missing)).await;
    let obj = the_answer_brings_the_lock(&op).await;
    one_more_rollout_to_the_lock_then_none(&op, &obj, content, rolled_once).await;
}

/// Nothing waits on the interpreter: cached, snapshotted (without a lock), rolled, Ready. Returns
/// the worker's generation once rolled.
async fn nothing_waits_on_the_interpreter(op: &Scenario, content: &str) -> i64 {
    let obj = op.wait_within("default", "Ready", "True", None, T).await;
    let (status, reason, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ProbingInterpreter"),
        "{message}"
    );
    assert!(message.contains("set spec.install.python"), "{message}");
    assert!(message.contains(IMAGE), "{message}");
    assert!(obj.status.as_ref().unwrap().lock.is_none());
    assert_eq!(op.cached().await, Some(Payload::new(content).to_json()));
    assert_eq!(snapshot_lock(op, "default").await, None);
    let worker = op.get_deployment("worker").await;
    assert_eq!(
        annotation(&worker, HASH_ANNOTATION),
        Some(content_hash(content))
    );
    assert_eq!(
        annotation(&worker, LOCK_ANNOTATION).as_deref(),
        Some("none")
    );
    worker.metadata.generation.unwrap()
}

/// The probe pod, locked down as the README says.
fn the_probe_pod_is_locked_down(pod: &Pod) {
    assert!(
        !pod.metadata
            .labels
            .as_ref()
            .unwrap()
            .contains_key(OPT_IN_LABEL)
    );
    let owners = pod.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "collected with its resource: {owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("WorkspaceRequirements", "default")
    );
    let spec = serde_json::to_value(pod.spec.as_ref().unwrap()).unwrap();
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], DEADLINE_SECONDS);
    assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(
        spec.get("initContainers").is_none(),
        "never injected: {spec}"
    );
    let volumes = spec["volumes"].as_array().map_or(0, Vec::len);
    assert_eq!(volumes, 0, "no service-account token volume: {spec}");
    let containers = spec["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["python3", "python"]);
    for c in containers {
        assert_eq!(c["image"], IMAGE);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
        assert_eq!(c["resources"]["limits"]["memory"], "64Mi");
        assert!(c.get("volumeMounts").is_none(), "{c}");
    }
}

/// Once the probe answered: the interpreter learned, the lock resolved for it and in the
/// snapshot, the probe pod deleted. Returns the resource.
async fn the_answer_brings_the_lock(op: &Scenario) -> WorkspaceRequirements {
    let obj = op
        .wait_until(
            "default",
            "the lock for the learned interpreter",
            T,
            |obj| obj.status.as_ref().is_some_and(|s| s.lock.is_some()),
        )
        .await;
    let learned = obj
        .status
        .as_ref()
        .unwrap()
        .interpreter
        .clone()
        .expect("status.interpreter");
    assert_eq!(
        (
            learned.image.as_str(),
            learned.version.as_str(),
            learned.platform.as_str()
        ),
        (IMAGE, "3.11.2", "x86_64-manylinux_2_36")
    );
    let (_, reason, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(reason, "Resolved", "{message}");
    assert!(
        message.contains("Python 3.11.2 x86_64-manylinux_2_36"),
        "{message}"
    );
    let text = snapshot_lock(op, "default")
        .await
        .expect("the snapshot's lock");
    let lock = Lock::parse(&text).unwrap();
    assert_eq!(lock.pins(), ["alpha==1.0"]);
    assert_eq!(lock.interpreter.version, "3.11.2");
    probes_gone(op).await;
    obj
}

/// One more rollout, to the lock; then none.
async fn one_more_rollout_to_the_lock_then_none(
    op: &Scenario,
    obj: &WorkspaceRequirements,
    content: &str,
    rolled_once: i64,
) {
    let sha = obj
        .status
        .as_ref()
        .unwrap()
        .lock
        .as_ref()
        .unwrap()
        .sha256
        .clone();
    let worker = wait_for("the worker rolled to the lock", T, || async {
        let d = op.get_deployment("worker").await;
        (annotation(&d, LOCK_ANNOTATION)? == sha[..12]).then_some(d)
    })
    .await;
    assert_eq!(
        annotation(&worker, HASH_ANNOTATION),
        Some(content_hash(content))
    );
    assert_eq!(worker.metadata.generation, Some(rolled_once + 1));
    op.touch("default").await;
    op.wait_until("default", "Ready with the lock", T, |obj| {
        is(obj, "Ready", "True")
            && obj.metadata.generation == obj.status.as_ref().and_then(|s| s.observed_generation)
    })
    .await;
    let worker = op.get_deployment("worker").await;
    assert_eq!(
        worker.metadata.generation,
        Some(rolled_once + 1),
        "rolled once more, not again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_keeps_pods_resolving_and_says_why() {
    let index = Index::start(&[Wheel::new("alpha", "1.0")]);
    let op = Scenario::resolving("probefail", &index).await;
    op.deployment("worker", "default", 0).await;
    let content = "alpha\n";
    resource(&op, "default", content, &index, &op.key).await;
    let pod = probe_of(&op, IMAGE).await;
    let missing = "executable file not found in $PATH";
    answer(&op, &pod, (128, missing), (128, missing)).await;

    let obj = op
        .wait_reason("default", "Resolved", "ProbeFailed", T)
        .await;
    // Pods resolve meanwhile.
    let named = [
        "no python3 or python answered",
        "python3 exited 128 (StartError): executable file not found",
        "probed again 30 s after it failed",
        "set spec.install.python",
    ];
    says(&obj, "Resolved", "True", &named);
    assert!(obj.status.as_ref().unwrap().lock.is_none());
    assert!(obj.status.as_ref().unwrap().interpreter.is_none());
    assert_eq!(op.cached().await, Some(Payload::new(content).to_json()));
    wait_for(
        "rolled as with resolve: Pod, the probe pod gone",
        T,
        || async {
            let d = op.get_deployment("worker").await;
            let rolled = annotation(&d, HASH_ANNOTATION)? == content_hash(content);
            (rolled && probes(&op).await.is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(snapshot_lock(&op, "default").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_probed_once_for_every_resource_and_a_new_image_again() {
    let index = Index::start(&[Wheel::new("alpha", "1.0")]);
    let op = Scenario::resolving("probeonce", &index).await;
    op.deployment("first", "first", 0).await;
    resource(&op, "first", "alpha\n", &index, &fresh_key()).await;
    let pod = probe_of(&op, IMAGE).await;
    answer(&op, &pod, (0, BOOKWORM), (0, BOOKWORM)).await;
    let learned = wait_for("the first resource's interpreter", T, || async {
        op.get("first").await.status?.interpreter
    })
    .await;
    probes_gone(&op).await;

    a_second_resource_of_the_same_image_knows_it_at_once(&op, &index, &learned).await;
    a_new_image_is_probed_again_and_rolls_nothing(&op).await;
}

/// A second resource whose workers run the same image: known at once. No kubelet answers here
/// any more, so a second probe could never have produced it.
async fn a_second_resource_of_the_same_image_knows_it_at_once(
    op: &Scenario,
    index: &Index,
    learned: &InterpreterStatus,
) {
    op.deployment("second", "second", 0).await;
    resource(op, "second", "alpha\n# second\n", index, &fresh_key()).await;
    let again = wait_for("the second resource's interpreter", T, || async {
        op.get("second").await.status?.interpreter
    })
    .await;
    assert_eq!(
        &again, learned,
        "the same probe's answer, probedAt included"
    );
    assert!(probes(op).await.is_empty());
}

/// A new worker image is probed again; meanwhile its pods resolve: the old interpreter's lock
/// leaves the snapshot (no pod of the new image gets it), and nothing more rolls.
async fn a_new_image_is_probed_again_and_rolls_nothing(op: &Scenario) {
    wait_for("the first resource's lock", T, || async {
        snapshot_lock(op, "first").await
    })
    .await;
    let newer = "python:3.12-slim";
    let patched = op
        .api::<Deployment>()
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "worker", "image": newer}
            ]}}}})),
        )
        .await
        .unwrap();
    let pod = probe_of(op, newer).await;
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some(newer)
    );
    // Probing the new image.
    let obj = op
        .wait_reason("first", "Resolved", "ProbingInterpreter", T)
        .await;
    assert!(
        obj.status.unwrap().interpreter.is_none(),
        "the old image's interpreter is not this one's"
    );
    wait_for(
        "the old interpreter's lock gone (status.lock is written after the rollout step)",
        T,
        || async {
            let unlocked = op.get("first").await.status?.lock.is_none();
            let gone = snapshot_lock(op, "first").await.is_none();
            (unlocked && gone).then_some(())
        },
    )
    .await;
    let first = op.get_deployment("first").await;
    assert_eq!(
        first.metadata.generation, patched.metadata.generation,
        "losing the lock rolls nothing"
    );
}
