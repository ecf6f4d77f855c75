//! The workers' interpreter learned from their image, on a real control plane with real Redis
//! and a real PEP 503 index: a resource without `spec.install.python` does its whole job at
//! once (Redis, snapshot, rollout; pods resolve), while a locked-down probe pod runs the
//! workers' image's Python; once it answers, the lock is resolved for it and the workloads roll
//! once more. There is no kubelet here: the test acts as one by writing the probe pod's status
//! (a termination message, or a failure), as the kubelet would.

mod common;

use bifrost_requirements::k8s_compat::Present;
use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::controller::probe::{COMPONENT, DEADLINE_SECONDS, IMAGE_ANNOTATION};
use bifrost_requirements::crd::{HASH_ANNOTATION, LOCK_ANNOTATION, OPT_IN_LABEL};
use bifrost_requirements::lock::{LOCK_FILE, Lock};
use bifrost_requirements::requirements::content_hash;
use common::index::Index;
use common::operator::{
    Operator, condition, create_wsreq, get_wsreq, labelled_deployment_with, namespace, redis_cache,
    secret, wait_for,
};
use common::services::{fresh_key, redis_get, redis_url};
use common::wheels::Wheel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
/// The image of `labelled_deployment_with`'s worker.
const IMAGE: &str = "python:3.11-slim";
/// What Debian bookworm's python3 answers.
const BOOKWORM: &str = "3.11.2\nx86_64\n2.36\n";

/// A resource named `name` without `install.python`, resolving against `index`.
async fn resource(client: &Client, ns: &str, name: &str, content: &str, index: &Index, key: &str) {
    create_wsreq(
        client,
        ns,
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

/// The probe pods in `ns`.
async fn probes(client: &Client, ns: &str) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/component={COMPONENT}");
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

/// The one probe pod of `image` in `ns`, once it exists.
async fn probe_of(client: &Client, ns: &str, image: &str) -> Pod {
    wait_for(&format!("the probe pod of {image}"), T, || async {
        probes(client, ns).await.into_iter().find(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(IMAGE_ANNOTATION))
                .is_some_and(|i| i == image)
        })
    })
    .await
}

fn ended(name: &str, code: i32, message: &str) -> Value {
    json!({"name": name, "image": IMAGE, "imageID": "", "ready": false, "restartCount": 0,
           "state": {"terminated": {"exitCode": code, "message": message,
                                    "reason": if code == 0 { "Completed" } else { "StartError" }}}})
}

/// Write the probe pod's status as the kubelet would once its containers ended.
async fn answer(client: &Client, pod: &Pod, phase: &str, statuses: Value) {
    Api::<Pod>::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap())
        .patch_status(
            pod.metadata.name.as_deref().unwrap(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": phase, "containerStatuses": statuses}})),
        )
        .await
        .unwrap();
}

async fn deployment(client: &Client, ns: &str, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

fn annotation(d: &Deployment, key: &str) -> Option<String> {
    d.spec
        .present()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

async fn snapshot_lock(client: &Client, ns: &str, name: &str) -> Option<String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(&format!("{name}-requirements"))
        .await
        .unwrap()?
        .data?
        .remove(LOCK_FILE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_python_the_content_rolls_at_once_and_the_learned_interpreter_brings_the_lock() {
    let alpha = Wheel::new("alpha", "1.0");
    let index = Index::start(std::slice::from_ref(&alpha));
    let (client, ns) = namespace("probe").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    // No replicas: rolled out once its template carries the hash (no node runs pods here).
    labelled_deployment_with(&client, &ns, "worker", "default", 0).await;
    let _op = Operator::start(&ns, "a", &["--resolver-index-url", &index.url()]);
    let content = "alpha>=1.0\n";
    resource(&client, &ns, "default", content, &index, &key).await;

    // Nothing waits on the interpreter: cached, snapshotted (without a lock), rolled, Ready.
    let obj = wait_for("Ready while the probe runs", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        (condition(&obj, "Ready")?.0 == "True").then_some(obj)
    })
    .await;
    let (status, reason, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ProbingInterpreter"),
        "{message}"
    );
    assert!(message.contains("set spec.install.python"), "{message}");
    assert!(message.contains(IMAGE), "{message}");
    assert!(obj.status.as_ref().unwrap().lock.is_none());
    assert_eq!(
        redis_get(&redis_url(), &key).await,
        Some(Payload::new(content).to_json())
    );
    assert_eq!(snapshot_lock(&client, &ns, "default").await, None);
    let worker = deployment(&client, &ns, "worker").await;
    assert_eq!(
        annotation(&worker, HASH_ANNOTATION),
        Some(content_hash(content))
    );
    assert_eq!(
        annotation(&worker, LOCK_ANNOTATION).as_deref(),
        Some("none")
    );
    let rolled_once = worker.metadata.generation.unwrap();

    // The probe pod, locked down as the README says.
    let pod = probe_of(&client, &ns, IMAGE).await;
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

    // The kubelet's part: python3 answered (python is not in the image).
    let missing = "exec: \"python\": executable file not found in $PATH";
    answer(
        &client,
        &pod,
        "Failed",
        json!([ended("python3", 0, BOOKWORM), ended("python", 128, missing)]),
    )
    .await;
    let obj = wait_for("the lock for the learned interpreter", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        obj.status.as_ref()?.lock.as_ref()?;
        Some(obj)
    })
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
    let text = snapshot_lock(&client, &ns, "default")
        .await
        .expect("the snapshot's lock");
    let lock = Lock::parse(&text).unwrap();
    assert_eq!(lock.pins(), ["alpha==1.0"]);
    assert_eq!(lock.interpreter.version, "3.11.2");
    wait_for("the probe pod deleted", T, || async {
        probes(&client, &ns).await.is_empty().then_some(())
    })
    .await;

    // One more rollout, to the lock; then none.
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
        let d = deployment(&client, &ns, "worker").await;
        (annotation(&d, LOCK_ANNOTATION)? == sha[..12]).then_some(d)
    })
    .await;
    assert_eq!(
        annotation(&worker, HASH_ANNOTATION),
        Some(content_hash(content))
    );
    assert_eq!(worker.metadata.generation, Some(rolled_once + 1));
    Api::<bifrost_requirements::crd::WorkspaceRequirements>::namespaced(client.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})),
        )
        .await
        .unwrap();
    wait_for("Ready with the lock", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        let ready = condition(&obj, "Ready")?.0 == "True";
        (ready && obj.metadata.generation == obj.status?.observed_generation).then_some(())
    })
    .await;
    let worker = deployment(&client, &ns, "worker").await;
    assert_eq!(
        worker.metadata.generation,
        Some(rolled_once + 1),
        "rolled once more, not again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_probe_keeps_pods_resolving_and_says_why() {
    let index = Index::start(&[Wheel::new("alpha", "1.0")]);
    let (client, ns) = namespace("probefail").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    labelled_deployment_with(&client, &ns, "worker", "default", 0).await;
    let _op = Operator::start(&ns, "a", &["--resolver-index-url", &index.url()]);
    let content = "alpha\n";
    resource(&client, &ns, "default", content, &index, &key).await;
    let pod = probe_of(&client, &ns, IMAGE).await;
    let missing = "executable file not found in $PATH";
    answer(
        &client,
        &pod,
        "Failed",
        json!([
            ended("python3", 128, missing),
            ended("python", 128, missing)
        ]),
    )
    .await;

    let obj = wait_for("ProbeFailed", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        (condition(&obj, "Resolved")?.1 == "ProbeFailed").then_some(obj)
    })
    .await;
    let (status, _, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(status, "True", "pods resolve meanwhile: {message}");
    assert!(
        message.contains("no python3 or python answered"),
        "{message}"
    );
    assert!(
        message.contains("python3 exited 128 (StartError): executable file not found"),
        "{message}"
    );
    assert!(
        message.contains("probed again 30 s after it failed"),
        "{message}"
    );
    assert!(message.contains("set spec.install.python"), "{message}");
    assert!(obj.status.as_ref().unwrap().lock.is_none());
    assert!(obj.status.as_ref().unwrap().interpreter.is_none());
    assert_eq!(
        redis_get(&redis_url(), &key).await,
        Some(Payload::new(content).to_json())
    );
    wait_for(
        "rolled as with resolve: Pod, the probe pod gone",
        T,
        || async {
            let d = deployment(&client, &ns, "worker").await;
            let rolled = annotation(&d, HASH_ANNOTATION)? == content_hash(content);
            (rolled && probes(&client, &ns).await.is_empty()).then_some(())
        },
    )
    .await;
    assert_eq!(snapshot_lock(&client, &ns, "default").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_probed_once_for_every_resource_and_a_new_image_again() {
    let index = Index::start(&[Wheel::new("alpha", "1.0")]);
    let (client, ns) = namespace("probeonce").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    labelled_deployment_with(&client, &ns, "first", "first", 0).await;
    let _op = Operator::start(&ns, "a", &["--resolver-index-url", &index.url()]);
    resource(&client, &ns, "first", "alpha\n", &index, &fresh_key()).await;
    let pod = probe_of(&client, &ns, IMAGE).await;
    answer(
        &client,
        &pod,
        "Succeeded",
        json!([ended("python3", 0, BOOKWORM), ended("python", 0, BOOKWORM)]),
    )
    .await;
    let learned = wait_for("the first resource's interpreter", T, || async {
        get_wsreq(&client, &ns, "first").await.status?.interpreter
    })
    .await;
    wait_for("the probe pod deleted", T, || async {
        probes(&client, &ns).await.is_empty().then_some(())
    })
    .await;

    // A second resource whose workers run the same image: known at once. No kubelet answers
    // here any more, so a second probe could never have produced it.
    labelled_deployment_with(&client, &ns, "second", "second", 0).await;
    resource(
        &client,
        &ns,
        "second",
        "alpha\n# second\n",
        &index,
        &fresh_key(),
    )
    .await;
    let again = wait_for("the second resource's interpreter", T, || async {
        get_wsreq(&client, &ns, "second").await.status?.interpreter
    })
    .await;
    assert_eq!(again, learned, "the same probe's answer, probedAt included");
    assert!(probes(&client, &ns).await.is_empty());

    // A new worker image is probed again; meanwhile its pods resolve: the old interpreter's lock
    // leaves the snapshot (no pod of the new image gets it), and nothing more rolls.
    wait_for("the first resource's lock", T, || async {
        snapshot_lock(&client, &ns, "first").await
    })
    .await;
    let newer = "python:3.12-slim";
    let patched = Api::<Deployment>::namespaced(client.clone(), &ns)
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "worker", "image": newer}
            ]}}}})),
        )
        .await
        .unwrap();
    let pod = probe_of(&client, &ns, newer).await;
    assert_eq!(
        pod.spec.unwrap().containers[0].image.as_deref(),
        Some(newer)
    );
    let obj = wait_for("probing the new image", T, || async {
        let obj = get_wsreq(&client, &ns, "first").await;
        (condition(&obj, "Resolved")?.1 == "ProbingInterpreter").then_some(obj)
    })
    .await;
    assert!(
        obj.status.unwrap().interpreter.is_none(),
        "the old image's interpreter is not this one's"
    );
    wait_for(
        "the old interpreter's lock gone (status.lock is written after the rollout step)",
        T,
        || async {
            let unlocked = get_wsreq(&client, &ns, "first")
                .await
                .status?
                .lock
                .is_none();
            let gone = snapshot_lock(&client, &ns, "first").await.is_none();
            (unlocked && gone).then_some(())
        },
    )
    .await;
    let first = deployment(&client, &ns, "first").await;
    assert_eq!(
        first.metadata.generation, patched.metadata.generation,
        "losing the lock rolls nothing"
    );
}
