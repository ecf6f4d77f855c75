use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::crd::WorkspaceRequirementsSpec;

fn resource(install: Value) -> WorkspaceRequirements {
    let spec: WorkspaceRequirementsSpec =
        serde_json::from_value(json!({"content": "alpha\n", "install": install})).unwrap();
    WorkspaceRequirements::new("default", spec)
}

fn template(spec: Value) -> PodTemplateSpec {
    serde_json::from_value(json!({"metadata": {"labels": {OPT_IN_LABEL: "default"}}, "spec": spec}))
        .unwrap()
}

fn worker_template() -> PodTemplateSpec {
    template(json!({
        "imagePullSecrets": [{"name": "registry"}],
        "securityContext": {"runAsUser": 1000},
        "containers": [
            {"name": "worker", "image": "bifrost:1", "imagePullPolicy": "Never"},
            {"name": "sidecar", "image": "envoy:1"},
        ],
    }))
}

#[test]
fn the_target_is_the_first_app_containers_image_run_as_the_workloads_uid() {
    let t = target(&resource(json!({})), &[worker_template()]).unwrap();
    assert_eq!(
        t,
        Target {
            image: "bifrost:1".into(),
            uid: 1000,
            pull_policy: Some("Never".into()),
            pull_secrets: Some(vec![LocalObjectReference {
                name: "registry".into()
            }]),
        }
    );
    // The container's own uid wins over the pod's; root or none becomes 65532.
    let own = template(json!({
        "securityContext": {"runAsUser": 1000},
        "containers": [{"name": "w", "image": "a", "securityContext": {"runAsUser": 2000}}],
    }));
    assert_eq!(target(&resource(json!({})), &[own]).unwrap().uid, 2000);
    let root = template(json!({
        "securityContext": {"runAsUser": 0}, "containers": [{"name": "w", "image": "a"}],
    }));
    assert_eq!(target(&resource(json!({})), &[root]).unwrap().uid, 65532);
    let none = template(json!({"containers": [{"name": "w", "image": "a"}]}));
    assert_eq!(target(&resource(json!({})), &[none]).unwrap().uid, 65532);
}

#[test]
fn install_image_is_probed_when_set_even_without_a_workload() {
    let obj = resource(json!({"image": "python:3.12-slim"}));
    let t = target(&obj, &[worker_template()]).unwrap();
    assert_eq!(t.image, "python:3.12-slim");
    assert_eq!(
        t.pull_policy, None,
        "another image keeps its own pull policy"
    );
    assert_eq!(t.uid, 1000);
    assert_eq!(target(&obj, &[]).unwrap().image, "python:3.12-slim");
    assert_eq!(target(&resource(json!({})), &[]), None, "nothing to probe");
    let empty = resource(json!({"image": ""}));
    assert_eq!(
        target(&empty, &[worker_template()]).unwrap().image,
        "bifrost:1"
    );
}

#[test]
fn the_probe_pod_is_locked_down_and_never_injected() {
    let t = target(&resource(json!({})), &[worker_template()]).unwrap();
    let owner = OwnerReference {
        api_version: "bifrost.io/v1alpha1".into(),
        kind: "WorkspaceRequirements".into(),
        name: "default".into(),
        uid: "u".into(),
        ..Default::default()
    };
    let pod = serde_json::to_value(probe_pod("bifrost", &t, Some(owner))).unwrap();
    assert_eq!(pod["metadata"]["ownerReferences"][0]["name"], "default");
    assert!(
        pod["metadata"]["ownerReferences"][0]
            .get("controller")
            .is_none()
    );
    let spec = &pod["spec"];
    assert_eq!(pod["metadata"]["name"], pod_name("bifrost:1"));
    assert_eq!(pod["metadata"]["namespace"], "bifrost");
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    assert!(
        !labels.contains_key(OPT_IN_LABEL),
        "the webhook must not see it"
    );
    assert_eq!(labels["app.kubernetes.io/managed-by"], MANAGER);
    assert_eq!(labels["app.kubernetes.io/component"], COMPONENT);
    assert_eq!(
        pod["metadata"]["annotations"][IMAGE_ANNOTATION],
        "bifrost:1"
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], DEADLINE_SECONDS);
    assert_eq!(spec["imagePullSecrets"], json!([{"name": "registry"}]));
    assert_eq!(
        spec["securityContext"],
        json!({"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
               "seccompProfile": {"type": "RuntimeDefault"}})
    );
    let containers = spec["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    for (c, python) in containers.iter().zip(PYTHONS) {
        assert_eq!(c["name"], python);
        assert_eq!(c["image"], "bifrost:1");
        assert_eq!(c["imagePullPolicy"], "Never");
        assert_eq!(c["command"][0], python);
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"],
            json!({"drop": ["ALL"]})
        );
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "200m", "memory": "64Mi"})
        );
    }
    assert_ne!(
        pod_name("bifrost:1"),
        pod_name("bifrost:2"),
        "one pod per image"
    );
}

/// The probe script, run by this machine's python3, answers what `Worker::parse` reads and
/// writes it where the termination message is read from (here a temporary file).
#[test]
fn the_probe_script_answers_as_the_installer_asks() {
    let dir = tempfile::tempdir().unwrap();
    let message = dir.path().join("termination-log");
    let script = script().replace(TERMINATION, message.to_str().unwrap());
    let out = std::process::Command::new("python3")
        .args(["-I", "-B", "-c", &script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read_to_string(&message).unwrap();
    assert_eq!(written, String::from_utf8(out.stdout).unwrap());
    let worker = Worker::parse(&written).unwrap();
    assert!(worker.version.starts_with("3."), "{worker:?}");
    assert_eq!(worker.machine, std::env::consts::ARCH);
    assert!(worker.interpreter().is_ok(), "{worker:?}");
}

fn pod(status: Value, age_seconds: i64) -> Pod {
    let created = Timestamp::now().as_second() - age_seconds;
    let created = Timestamp::from_second(created).unwrap();
    serde_json::from_value(json!({
        "metadata": {"name": "p", "creationTimestamp": created.to_string()},
        "status": status,
    }))
    .unwrap()
}

fn terminated(name: &str, code: i32, message: &str) -> Value {
    json!({"name": name, "image": "i", "imageID": "", "ready": false, "restartCount": 0,
           "state": {"terminated": {"exitCode": code, "message": message, "reason": "Completed"}}})
}

#[test]
fn a_pod_answers_with_the_first_python_that_did() {
    let answer = "3.11.2\nx86_64\n2.36\n";
    let both = pod(
        json!({"phase": "Failed", "containerStatuses": [
            terminated("python", 0, "2.7.18\nx86_64\n2.36\n"),
            terminated("python3", 0, answer),
        ]}),
        5,
    );
    let Seen::Answered(worker) = seen(&both, Timestamp::now()) else {
        panic!("python3 answered");
    };
    assert_eq!(worker.version, "3.11.2");
    let only_python = pod(
        json!({"phase": "Failed", "containerStatuses": [
            terminated("python3", 128, "exec: \"python3\": executable file not found in $PATH"),
            terminated("python", 0, "3.9.2\naarch64\n2.31\n"),
        ]}),
        5,
    );
    assert!(
        matches!(seen(&only_python, Timestamp::now()), Seen::Answered(w) if w.version == "3.9.2")
    );
    let half = pod(
        json!({"phase": "Running", "containerStatuses": [
            terminated("python3", 127, "not found"),
            {"name": "python", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
             "state": {"running": {}}},
        ]}),
        5,
    );
    assert_eq!(
        seen(&half, Timestamp::now()),
        Seen::Running("phase Running".into())
    );
}

#[test]
fn a_pod_fails_when_no_python_answers_an_image_cannot_be_pulled_or_time_runs_out() {
    let none = pod(
        json!({"phase": "Failed", "containerStatuses": [
            terminated("python3", 128, "executable file not found"),
            terminated("python", 128, "executable file not found"),
        ]}),
        5,
    );
    let Seen::Failed(why) = seen(&none, Timestamp::now()) else {
        panic!("no python");
    };
    assert!(why.starts_with("no python3 or python answered"), "{why}");
    assert!(
        why.contains("python3 exited 128 (Completed): executable file not found"),
        "{why}"
    );
    let pull = pod(
        json!({"phase": "Pending", "containerStatuses": [
            {"name": "python3", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ErrImagePull", "message": "not found: bifrost:9"}}},
        ]}),
        5,
    );
    assert_eq!(
        seen(&pull, Timestamp::now()),
        Seen::Failed("python3: ErrImagePull: not found: bifrost:9".into())
    );
    let deadline = pod(
        json!({"phase": "Failed", "reason": "DeadlineExceeded",
               "message": "Pod was active on the node longer than the specified deadline"}),
        5,
    );
    let Seen::Failed(why) = seen(&deadline, Timestamp::now()) else {
        panic!("past its deadline");
    };
    assert!(why.contains("DeadlineExceeded: Pod was active"), "{why}");
    assert_eq!(
        seen(&pod(json!({"phase": "Pending"}), 5), Timestamp::now()),
        Seen::Running("phase Pending".into())
    );
    let Seen::Failed(why) = seen(&pod(json!({"phase": "Pending"}), 1000), Timestamp::now()) else {
        panic!("never scheduled");
    };
    assert!(
        why.contains("did not finish within 180 s (phase Pending"),
        "{why}"
    );
    let garbled = pod(
        json!({"containerStatuses": [terminated("python3", 0, "hello")]}),
        5,
    );
    let Seen::Failed(why) = seen(&garbled, Timestamp::now()) else {
        panic!("an answer that is not one");
    };
    assert!(why.contains("python3 answered, but not as asked"), "{why}");
}

#[test]
fn failed_probes_back_off_up_to_ten_minutes() {
    let steps: Vec<u64> = (1..=7).map(|f| backoff(f).as_secs()).collect();
    assert_eq!(steps, [30, 60, 120, 240, 480, 600, 600]);
    assert_eq!(backoff(u32::MAX).as_secs(), 600);
}

proptest! {
    /// Any pod status: `seen` answers without panicking, and an answer is the first python's
    /// success.
    #[test]
    fn any_status_is_read(
        codes in proptest::collection::vec(proptest::option::of(0i32..3), 2),
        message in "[0-9a-z.\n]{0,30}",
        phase in proptest::sample::select(vec!["Pending", "Running", "Failed", "Succeeded"]),
        age in 0i64..400,
    ) {
        let statuses: Vec<Value> = PYTHONS.iter().zip(&codes).filter_map(|(p, c)| {
            c.map(|c| terminated(p, c, &message))
        }).collect();
        let p = pod(json!({"phase": phase, "containerStatuses": statuses}), age);
        match seen(&p, Timestamp::now()) {
            Seen::Answered(w) => {
                prop_assert!(codes.contains(&Some(0)));
                prop_assert_eq!(Worker::parse(&message), Ok(w));
            }
            Seen::Running(_) => prop_assert!(
                !codes.contains(&Some(0)) && !matches!(phase, "Failed" | "Succeeded")
            ),
            Seen::Failed(why) => prop_assert!(!why.is_empty()),
        }
    }
}
