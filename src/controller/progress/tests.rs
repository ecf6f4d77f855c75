use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;

const H: &str = "new";

fn pod(name: &str, hash: &str, injected: Option<&str>, ready: bool, install: Option<Value>) -> Pod {
    let mut annotations = json!({ HASH_ANNOTATION: hash });
    if let Some(i) = injected {
        annotations[INJECTED_ANNOTATION] = json!(i);
    }
    let mut statuses = vec![json!({
        "name": BOOTSTRAP_CONTAINER, "image": "op", "imageID": "", "ready": true, "restartCount": 0,
        "state": {"terminated": {"exitCode": 0}}
    })];
    if let Some(state) = install {
        let mut s = json!({
            "name": INSTALL_CONTAINER, "image": "w", "imageID": "", "ready": false, "restartCount": 2
        });
        for (k, v) in state.as_object().unwrap() {
            s[k] = v.clone();
        }
        statuses.push(s);
    }
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": "w"}},
        "spec": {"containers": [{"name": "worker", "image": "w"}]},
        "status": {
            "phase": if ready { "Running" } else { "Pending" },
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "initContainerStatuses": statuses,
        }
    }))
    .unwrap()
}

fn ok(name: &str) -> Pod {
    pod(
        name,
        H,
        Some(H),
        true,
        Some(json!({"state": {"terminated": {"exitCode": 0}}})),
    )
}

fn deployment(generation: i64, status: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "w", "generation": generation},
        "spec": {"replicas": 2, "selector": {}, "template": {}},
        "status": status,
    }))
    .unwrap()
}

#[test]
fn deployment_rollout_reads_status_like_kubectl() {
    let done = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2});
    assert_eq!(deployment_rollout(&deployment(3, done.clone())), None);
    assert!(
        deployment_rollout(&deployment(4, done))
            .unwrap()
            .contains("not seen the new template")
    );
    let some = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2});
    assert_eq!(
        deployment_rollout(&deployment(3, some)).unwrap(),
        "1 of 2 replica(s) updated"
    );
    let old = json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2});
    assert_eq!(
        deployment_rollout(&deployment(3, old)).unwrap(),
        "1 old replica(s) pending termination"
    );
    let unavailable = json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1});
    assert_eq!(
        deployment_rollout(&deployment(3, unavailable)).unwrap(),
        "1 of 2 updated replica(s) available"
    );
    let zero: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "w", "generation": 2},
        "spec": {"replicas": 0, "selector": {}, "template": {}},
        "status": {"observedGeneration": 2},
    }))
    .unwrap();
    assert_eq!(deployment_rollout(&zero), None);
}

fn statefulset(strategy: Value, status: Value) -> StatefulSet {
    serde_json::from_value(json!({
        "metadata": {"name": "s", "generation": 1},
        "spec": {"replicas": 2, "selector": {}, "serviceName": "s", "template": {}, "updateStrategy": strategy},
        "status": status,
    }))
    .unwrap()
}

#[test]
fn statefulset_rollout_reads_revisions_readiness_and_partition() {
    let rolling = json!({"type": "RollingUpdate"});
    let done = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "b", "updateRevision": "b"});
    assert_eq!(
        statefulset_rollout(&statefulset(rolling.clone(), done)),
        None
    );
    let moving = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"});
    assert_eq!(
        statefulset_rollout(&statefulset(rolling.clone(), moving)).unwrap(),
        "1 of 2 replica(s) updated"
    );
    let unready = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 1, "currentRevision": "b", "updateRevision": "b"});
    assert_eq!(
        statefulset_rollout(&statefulset(rolling, unready.clone())).unwrap(),
        "1 of 2 replica(s) ready"
    );
    let partitioned = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 1}});
    let one = json!({"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "b"});
    assert_eq!(statefulset_rollout(&statefulset(partitioned, one)), None);
    // OnDelete: the controller does not roll; only the pods tell.
    assert_eq!(
        statefulset_rollout(&statefulset(json!({"type": "OnDelete"}), unready)),
        None
    );
}

#[test]
fn up_to_date_only_when_every_replica_runs_the_hash_and_is_ready() {
    let (a, b) = (ok("a"), ok("b"));
    let p = progress(Some(2), None, &[&a, &b], H);
    assert_eq!(
        p,
        Progress {
            replicas: 2,
            updated: 2,
            ready_updated: 2,
            verdict: Verdict::UpToDate,
            failed_packages: vec![],
        }
    );
    // The controller still waiting wins over ready pods.
    let p = progress(Some(2), Some("1 of 2 replica(s) updated".into()), &[&a], H);
    assert_eq!(p.updated, 1);
    assert_eq!(
        p.verdict,
        Verdict::RollingOut(
            "1 of 2 replica(s) updated; 1 of 2 replica(s) run the current hash and are ready"
                .into()
        )
    );
    // An old pod beside enough new ones is still being scaled down.
    let old = pod("c", "old", Some("old"), true, None);
    let p = progress(Some(2), None, &[&a, &b, &old], H);
    assert_eq!(p.ready_updated, 2);
    assert_eq!(p.verdict.reason(), "RollingOut");
    // ...but a terminating one no longer counts.
    let mut gone = old.clone();
    gone.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    assert_eq!(
        progress(Some(2), None, &[&a, &b, &gone], H).verdict,
        Verdict::UpToDate
    );
    // A pod injected with another hash than its template's does not run the current hash.
    let stale = pod("d", H, Some("old"), true, None);
    let p = progress(Some(1), None, &[&stale], H);
    assert_eq!((p.updated, p.ready_updated), (0, 0));
    assert_eq!(p.verdict.reason(), "RollingOut");
}

#[test]
fn zero_replicas_are_up_to_date_once_the_template_carries_the_hash() {
    let p = progress(Some(0), None, &[], H);
    assert_eq!(p.verdict, Verdict::UpToDate);
    assert_eq!((p.replicas, p.updated, p.ready_updated), (0, 0, 0));
}

#[test]
fn a_failing_install_container_names_the_pod_container_and_termination_message() {
    let failing = failing_on_w1();
    let serving = pod("w-0", "old", Some("old"), true, None);
    let want = install_failing_on_w1();
    let p = progress(
        Some(1),
        Some("1 old replica(s) pending termination".into()),
        &[&serving, &failing],
        H,
    );
    assert_eq!(p.verdict, want);
    assert_eq!((p.updated, p.ready_updated), (1, 0));
    assert_eq!(
        p.verdict.message(),
        format!(
            "pod w-1: init container {INSTALL_CONTAINER} exited 1: cannot install bifrost-missing==9.9"
        )
    );
}

/// A pod whose install container failed and now waits in back-off.
fn failing_on_w1() -> Pod {
    pod(
        "w-1",
        H,
        Some(H),
        false,
        Some(json!({
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "cannot install bifrost-missing==9.9\n"}},
        })),
    )
}

/// The verdict of the failing install of the tests below.
fn install_failing_on_w1() -> Verdict {
    Verdict::InstallFailing {
        pod: "w-1".into(),
        container: INSTALL_CONTAINER.into(),
        message: "exited 1: cannot install bifrost-missing==9.9".into(),
    }
}

#[test]
fn a_failing_install_keeps_its_verdict_until_it_succeeds() {
    let want = install_failing_on_w1();
    let failing = failing_on_w1();
    // Terminated now (before the back-off), and the message unchanged: no status flapping.
    let now = pod(
        "w-1",
        H,
        Some(H),
        false,
        Some(
            json!({"state": {"terminated": {"exitCode": 1, "message": "cannot install bifrost-missing==9.9"}}}),
        ),
    );
    assert_eq!(progress(Some(1), None, &[&now], H).verdict, want);
    assert_eq!(digest(&now), digest(&failing));
    // Running again after a failure: still failing until it succeeds.
    let retrying = pod(
        "w-1",
        H,
        Some(H),
        false,
        Some(
            json!({"state": {"running": {}}, "lastState": {"terminated": {"exitCode": 1, "message": "cannot install bifrost-missing==9.9"}}}),
        ),
    );
    assert_eq!(progress(Some(1), None, &[&retrying], H).verdict, want);
    let recovered = pod(
        "w-1",
        H,
        Some(H),
        false,
        Some(
            json!({"state": {"terminated": {"exitCode": 0}}, "lastState": {"terminated": {"exitCode": 1}}}),
        ),
    );
    assert_eq!(
        progress(Some(1), None, &[&recovered], H).verdict.reason(),
        "RollingOut"
    );
}

#[test]
fn without_a_termination_message_the_reason_or_the_waiting_state_stands_in() {
    // No termination message: the reason stands in.
    let bare = pod(
        "w-1",
        H,
        Some(H),
        false,
        Some(json!({"state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}})),
    );
    assert_eq!(
        progress(Some(1), None, &[&bare], H).verdict.message(),
        format!("pod w-1: init container {INSTALL_CONTAINER} exited 137: OOMKilled")
    );
    // An image that cannot start is as final as a failing install.
    let mut unpullable = ok("w-2");
    unpullable.status.as_mut().unwrap().conditions = None;
    unpullable.status.as_mut().unwrap().init_container_statuses.as_mut().unwrap()[0].state =
        serde_json::from_value(json!({"waiting": {"reason": "ErrImageNeverPull", "message": "image \"op\" is not present"}})).unwrap();
    assert_eq!(
        progress(Some(1), None, &[&unpullable], H).verdict,
        Verdict::InstallFailing {
            pod: "w-2".into(),
            container: BOOTSTRAP_CONTAINER.into(),
            message: "cannot start: ErrImageNeverPull: image \"op\" is not present".into(),
        }
    );
}

#[test]
fn uninjected_pods_are_reported_when_the_controller_is_done() {
    let bare = pod("w-0", H, None, true, None);
    let p = progress(Some(1), None, &[&bare], H);
    assert_eq!((p.updated, p.ready_updated), (0, 0));
    assert_eq!(p.verdict.reason(), "PodsUninjected");
    assert!(
        p.verdict
            .message()
            .starts_with("1 pod(s) started without the packages")
    );
}

#[test]
fn slim_keeps_what_the_decisions_read() {
    let mut full = pod(
        "w-1",
        H,
        Some(H),
        false,
        Some(
            json!({"lastState": {"terminated": {"exitCode": 1, "message": "boom", "containerID": "containerd://x"}}}),
        ),
    );
    full.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("other".into(), "x".repeat(1000));
    let s = full.status.as_mut().unwrap();
    s.conditions
        .as_mut()
        .unwrap()
        .push(serde_json::from_value(json!({"type": "Initialized", "status": "False"})).unwrap());
    s.container_statuses =
        Some(vec![serde_json::from_value(json!({"name": "worker", "image": "w", "imageID": "", "ready": false, "restartCount": 0})).unwrap()]);
    let before = progress(Some(1), None, &[&full], H);
    let digest_before = digest(&full);
    let mut slimmed = full.clone();
    slim(&mut slimmed);
    assert_eq!(progress(Some(1), None, &[&slimmed], H), before);
    assert_eq!(digest(&slimmed), digest_before);
    assert_eq!(slimmed.metadata.labels, full.metadata.labels);
    assert_eq!(slimmed.annotations().len(), 2);
    let st = slimmed.status.unwrap();
    assert!(st.container_statuses.is_none());
    assert_eq!(st.conditions.unwrap().len(), 1);
    assert_eq!(st.init_container_statuses.unwrap()[0].image, "");
    let spec = slimmed.spec.unwrap();
    assert!(spec.containers.is_empty());
}

#[test]
fn summarize_reports_the_worst_verdict_and_names_the_workloads() {
    let up = Verdict::UpToDate;
    let rolling = Verdict::RollingOut("0 of 1 ready".into());
    let failing = Verdict::InstallFailing {
        pod: "p".into(),
        container: "c".into(),
        message: "exited 1: x".into(),
    };
    assert!(summarize(&[]).0);
    let (done, reason, message) = summarize(&[("Deployment/a".into(), &up)]);
    assert!(done);
    assert_eq!(reason, "UpToDate");
    assert!(message.starts_with("1 workload(s) rolled out"));
    let (done, reason, message) = summarize(&[
        ("Deployment/a".into(), &up),
        ("Deployment/b".into(), &rolling),
        ("StatefulSet/c".into(), &failing),
    ]);
    assert!(!done);
    assert_eq!(reason, "InstallFailing");
    assert_eq!(
        message,
        "StatefulSet/c: pod p: init container c exited 1: x"
    );
    let (done, reason, message) = summarize(&[
        ("Deployment/a".into(), &up),
        ("Deployment/b".into(), &rolling),
    ]);
    assert!(!done);
    assert_eq!(reason, "RollingOut");
    assert_eq!(message, "Deployment/b: 0 of 1 ready");
}

#[test]
fn a_termination_message_from_the_log_keeps_the_report_not_the_timestamps() {
    let log = "\u{1b}[2m2026-11-21T13:35:19.812261Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m reading requirements from Redis\n\
               \u{1b}[2m2026-11-21T13:35:19.831037Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m installing 3 package(s) with uv\n\
               \x20 uv | error: No solution found when resolving dependencies\n\
               error: installation failed: uv failed (exit status 1); its last output:\n\
               error: No solution found when resolving dependencies\n\
               \x20 cause: Because bifrost-missing was not found in the package registry\n\
               /opt/bifrost/site-packages holds no complete install\n";
    let want = "error: installation failed: uv failed (exit status 1); its last output:\n\
                error: No solution found when resolving dependencies\n\
                \x20 cause: Because bifrost-missing was not found in the package registry\n\
                /opt/bifrost/site-packages holds no complete install";
    assert_eq!(termination_text(log), want);
    // Another attempt, other timestamps: the same text, so the status is not rewritten.
    assert_eq!(termination_text(&log.replace("13:35:19", "13:36:02")), want);
    // A long report keeps its first line and its end (the cause), and the log never survives.
    let long = format!(
        "{}\n{log}{}\n  cause: bifrost-missing was not found\n",
        "2026-11-21T13:35:19Z INFO x\n".repeat(100),
        "uv | resolving\n".repeat(200)
    );
    let text = termination_text(&long);
    assert!(text.len() <= 1100, "{} bytes", text.len());
    assert!(
        text.starts_with("error: installation failed")
            && text.ends_with("cause: bifrost-missing was not found"),
        "{text}"
    );
    assert_eq!(
        termination_text(&text),
        text,
        "idempotent (the cache keeps it)"
    );
    // No report: the lines that are not log records.
    assert_eq!(
        termination_text("2026-11-21T13:35:19Z INFO x\nKilled\n"),
        "Killed"
    );
    // A message the container wrote itself is kept as it is.
    assert_eq!(
        termination_text("cannot install bifrost-missing==9.9\n"),
        "cannot install bifrost-missing==9.9"
    );
}

#[test]
fn failed_packages_come_from_the_install_containers_summary() {
    assert_eq!(
        failed_packages(
            "installed 11/13; failed: xhtml2pdf (needs a C compiler), nope (not on the index, checked twice)"
        ),
        [
            "xhtml2pdf (needs a C compiler)",
            "nope (not on the index, checked twice)"
        ]
    );
    assert_eq!(
        failed_packages("installed 1/40; failed: a (x), b (y), … and 37 more"),
        ["a (x)", "b (y)"]
    );
    for none in [
        "installed 13/13",
        "installed 0/0",
        "error: no usable source",
        "",
        "; failed: a (x)",
    ] {
        assert!(failed_packages(none).is_empty(), "{none:?}");
    }
    // Per pod of the current hash, each package once, sorted; pods of an older hash and failed
    // containers do not count.
    let with = |name: &str, hash: &str, message: &str| {
        pod(
            name,
            hash,
            Some(hash),
            true,
            Some(json!({"state": {"terminated": {"exitCode": 0, "message": message}}})),
        )
    };
    let pods = [
        with("a", H, "installed 2/3; failed: zed (no wheel)"),
        with(
            "b",
            H,
            "installed 1/3; failed: zed (no wheel), alpha (not found)",
        ),
        with("c", "old", "installed 0/1; failed: old (gone)"),
        ok("d"),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let p = progress(Some(4), None, &refs, H);
    assert_eq!(p.failed_packages, ["alpha (not found)", "zed (no wheel)"]);
    let mut slimmed = pods[1].clone();
    slim(&mut slimmed);
    assert_eq!(
        install_report(&slimmed),
        Some("installed 1/3; failed: zed (no wheel), alpha (not found)")
    );
    assert_ne!(
        digest(&slimmed),
        digest(&{
            let mut d = ok("b");
            slim(&mut d);
            d
        })
    );
}
