use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::watcher::Event as WatchEvent;
use serde_json::{Value, json};

use super::admission::Reply;
use super::events::regarding;
use super::fixtures::{REVIEW_UID, resource, review, worker};
use super::inject::Settings;
use super::*;
use crate::crd::{OPT_IN_LABEL, WorkspaceRequirements};

pub(super) fn admission(resources: Vec<WorkspaceRequirements>) -> Admission {
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&WatchEvent::Init);
    for r in resources {
        writer.apply_watcher_event(&WatchEvent::InitApply(r));
    }
    writer.apply_watcher_event(&WatchEvent::InitDone);
    Admission {
        resources: store,
        listed: tokio::sync::watch::channel(true).1,
        settings: Settings::default(),
        metrics: Arc::new(Metrics::new()),
        events: None,
        namespace: None,
    }
}

pub(super) async fn answer(a: &Admission, body: &[u8]) -> (Reply, Value) {
    let reply = a.review(body).await;
    let v = if reply.json {
        serde_json::from_slice(&reply.body).expect("JSON reply")
    } else {
        Value::Null
    };
    (reply, v)
}

#[tokio::test]
async fn injects_labelled_pods() {
    let a = admission(vec![resource("bifrost", "default")]);
    let body = serde_json::to_vec(&review(worker(Some("default")))).unwrap();
    let (reply, v) = answer(&a, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.result, "injected");
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    let resp = &v["response"];
    assert_eq!(resp["uid"], REVIEW_UID);
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    // kube-core serializes the patch bytes as a JSON array of numbers, which the API
    // server's decoder accepts for a []byte field (proven by tests/webhook.rs).
    let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone()).expect("patch bytes");
    let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
    assert!(ops.0.iter().any(|op| op.path() == "/metadata/annotations"));
}

#[tokio::test]
async fn admits_unchanged_when_not_ours() {
    let a = admission(vec![resource("bifrost", "default")]);
    for (pod, result, warned) in [
        (worker(None), "not-labelled", false),
        (worker(Some("missing")), "unknown-resource", true),
        (worker(Some("Not A Name")), "unknown-resource", true),
    ] {
        let (reply, v) = answer(&a, &serde_json::to_vec(&review(pod)).unwrap()).await;
        assert_eq!((reply.status, reply.result), (StatusCode::OK, result));
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none(), "{v}");
        assert_eq!(v["response"].get("warnings").is_some(), warned, "{v}");
    }
    let mut system = review(worker(Some("default")));
    system["request"]["namespace"] = json!("kube-system");
    let (reply, v) = answer(&a, &serde_json::to_vec(&system).unwrap()).await;
    assert_eq!(reply.result, "excluded");
    assert!(v["response"].get("patch").is_none());
    let mut update = review(worker(Some("default")));
    update["request"]["operation"] = json!("UPDATE");
    assert_eq!(
        answer(&a, &serde_json::to_vec(&update).unwrap())
            .await
            .0
            .result,
        "ignored"
    );
    let mut deployment =
        review(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}));
    deployment["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let (reply, v) = answer(&a, &serde_json::to_vec(&deployment).unwrap()).await;
    assert_eq!((reply.status, reply.result), (StatusCode::OK, "ignored"));
    assert_eq!(v["response"]["allowed"], true);
}

#[tokio::test]
async fn an_invalid_spec_injects_nothing() {
    let mut bad = resource("bifrost", "default");
    bad.spec.install.size_limit = "-1Gi".into();
    let mut empty = resource("bifrost", "empty");
    empty.spec.content = String::new();
    let a = admission(vec![bad, empty]);
    for (name, needle) in [
        ("default", "spec.install.sizeLimit"),
        ("empty", "spec.content"),
    ] {
        let body = serde_json::to_vec(&review(worker(Some(name)))).unwrap();
        let (reply, v) = answer(&a, &body).await;
        assert_eq!(
            (reply.status, reply.result),
            (StatusCode::OK, "invalid-resource")
        );
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none(), "{v}");
        let w = v["response"]["warnings"][0].as_str().unwrap();
        assert!(
            w.contains(needle) && w.contains("without the requirements"),
            "{w}"
        );
    }
}

#[tokio::test]
async fn a_copied_marker_is_called_out() {
    let a = admission(vec![resource("bifrost", "default")]);
    let mut pod = worker(Some("default"));
    pod["metadata"]["annotations"] = json!({crate::crd::INJECTED_ANNOTATION: "abc"});
    let (reply, v) = answer(&a, &serde_json::to_vec(&review(pod)).unwrap()).await;
    assert_eq!(reply.result, "already-injected");
    assert!(v["response"].get("patch").is_none(), "{v}");
    let w = v["response"]["warnings"][0].as_str().unwrap();
    assert!(w.contains("copied"), "{w}");
}

#[tokio::test]
async fn malformed_bodies_get_400() {
    let a = admission(vec![]);
    let (reply, _) = answer(&a, b"{not json").await;
    assert_eq!((reply.status, reply.json), (StatusCode::BAD_REQUEST, false));
    let (reply, _) = answer(&a, b"[1,2]").await;
    assert_eq!((reply.status, reply.json), (StatusCode::BAD_REQUEST, false));
    // A uid can be recovered: AdmissionReview-shaped `invalid` answer.
    let mut broken = review(worker(Some("default")));
    broken["request"]["object"]["spec"]["containers"] = json!("not a list");
    let (reply, v) = answer(&a, &serde_json::to_vec(&broken).unwrap()).await;
    assert_eq!(
        (reply.status, reply.result),
        (StatusCode::BAD_REQUEST, "invalid")
    );
    assert_eq!(v["response"]["uid"], REVIEW_UID);
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["status"]["reason"], "InvalidRequest");
    let (reply, _) = answer(
        &a,
        br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

/// The webhook decides the namespaces itself: the chart's selector works only from Kubernetes
/// 1.21 (the `kubernetes.io/metadata.name` label), so the API server may send anything.
#[tokio::test]
async fn excluded_and_unwatched_namespaces_are_admitted_unchanged() {
    let in_ns = |ns: &str| {
        let mut r = review(worker(Some("default")));
        r["request"]["namespace"] = json!(ns);
        r["request"]["object"]["metadata"]["namespace"] = json!(ns);
        serde_json::to_vec(&r).unwrap()
    };
    let scope = inject::Scope {
        own: Some("bifrost-system".into()),
        excluded: vec!["infra".into(), "batch".into()],
        watched: None,
    };
    // Every namespace has the resource: only the scope decides.
    let everywhere = |scope: inject::Scope| {
        let mut a = admission(
            [
                "bifrost",
                "bifrost-system",
                "infra",
                "batch",
                "team",
                "kube-system",
            ]
            .into_iter()
            .map(|ns| resource(ns, "default"))
            .collect(),
        );
        a.settings.scope = scope;
        a
    };
    let a = everywhere(scope.clone());
    for (ns, result) in [
        ("kube-system", "excluded"),
        ("bifrost-system", "excluded"),
        ("infra", "excluded"),
        ("batch", "excluded"),
        ("bifrost", "injected"),
        ("team", "injected"),
    ] {
        let (reply, v) = answer(&a, &in_ns(ns)).await;
        assert_eq!(
            (reply.status, reply.result),
            (StatusCode::OK, result),
            "{ns}"
        );
        assert_eq!(v["response"]["allowed"], true, "{ns}");
        assert_eq!(
            v["response"].get("patch").is_some(),
            result == "injected",
            "{ns}: {v}"
        );
        // Excluded is quiet: no warning for the pod's creator (and no Event).
        assert!(v["response"].get("warnings").is_none(), "{ns}: {v}");
    }
    // Watching one namespace: every other one is excluded, even with the resource there.
    let a = everywhere(inject::Scope {
        watched: Some("team".into()),
        ..scope
    });
    for (ns, result) in [
        ("team", "injected"),
        ("bifrost", "excluded"),
        ("infra", "excluded"),
        ("bifrost-system", "excluded"),
    ] {
        let (reply, _) = answer(&a, &in_ns(ns)).await;
        assert_eq!(reply.result, result, "{ns}");
    }
}

/// An admission handler whose cache has not listed yet, with the cache's writer and the
/// `listed` signal to complete it.
fn before_the_first_listing() -> (
    Admission,
    reflector::store::Writer<WorkspaceRequirements>,
    tokio::sync::watch::Sender<bool>,
) {
    let (store, writer) = reflector::store::<WorkspaceRequirements>();
    let (listing, listed) = tokio::sync::watch::channel(false);
    let a = Admission {
        resources: store,
        listed,
        settings: Settings::default(),
        metrics: Arc::new(Metrics::new()),
        events: None,
        namespace: None,
    };
    (a, writer, listing)
}

/// On tokio's paused clock: the cache wait passes in virtual time, so the bound holds however
/// loaded the machine is.
#[tokio::test(start_paused = true)]
async fn cache_not_ready_admits_with_a_warning() {
    let (a, _writer, _listing) = before_the_first_listing();
    let started = tokio::time::Instant::now();
    let (reply, v) = answer(
        &a,
        &serde_json::to_vec(&review(worker(Some("default")))).unwrap(),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!((reply.status, reply.result), (StatusCode::OK, "error"));
    assert_eq!(v["response"]["allowed"], true);
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("not ready")
    );
}

/// Requests that arrive before the first listing all wait for it and are all answered as soon as
/// it is in — none is left waiting for its deadline (kube's `Store::wait_until_ready` wakes only
/// the last waiter; the others were answered only when their timeout polled them again). Paused
/// time makes that deterministic: a request left waiting shows up as CACHE_WAIT elapsed.
#[tokio::test(start_paused = true)]
async fn concurrent_requests_before_the_first_listing_are_all_injected() {
    let (a, mut writer, listing) = before_the_first_listing();
    let a = Arc::new(a);
    let body = serde_json::to_vec(&review(worker(Some("default")))).unwrap();
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let (a, body) = (a.clone(), body.clone());
            tokio::spawn(async move { answer(&a, &body).await.0.result })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.apply_watcher_event(&WatchEvent::Init);
    writer.apply_watcher_event(&WatchEvent::InitApply(resource("bifrost", "default")));
    writer.apply_watcher_event(&WatchEvent::InitDone);
    let listed_at = tokio::time::Instant::now();
    listing.send_replace(true);
    for w in waiting {
        assert_eq!(w.await.unwrap(), "injected");
    }
    assert!(
        listed_at.elapsed() < Duration::from_millis(100),
        "a request waited {:?} after the listing was in",
        listed_at.elapsed()
    );
}

#[test]
fn events_regard_the_controller() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "worker-5d9c7-", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "worker-5d9c7", "uid": "u1", "controller": true}
        ]}
    }))
    .unwrap();
    let r = regarding(&pod, "bifrost");
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
        (Some("ReplicaSet"), Some("worker-5d9c7"), Some("u1"))
    );
    let bare: Pod = serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
    assert_eq!(regarding(&bare, "bifrost").name.as_deref(), Some("job"));
}

#[test]
fn shipped_configuration_has_the_required_settings() {
    let c = webhook_configuration().expect("deploy/webhook.yaml parses");
    let hooks = c.webhooks.expect("webhooks");
    assert_eq!(hooks.len(), 1);
    let w = &hooks[0];
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert!(w.timeout_seconds.is_some_and(|t| t <= 10));
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.admission_review_versions, ["v1"]);
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
    let rule = &w.rules.as_ref().unwrap()[0];
    assert_eq!(
        rule.operations.as_deref(),
        Some(&["CREATE".to_string()][..])
    );
    assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
    let sel = w
        .object_selector
        .as_ref()
        .unwrap()
        .match_expressions
        .as_ref()
        .unwrap();
    assert_eq!(
        (sel[0].key.as_str(), sel[0].operator.as_str()),
        (OPT_IN_LABEL, "Exists")
    );
    assert_eq!(
        w.client_config.service.as_ref().unwrap().path.as_deref(),
        Some(MUTATE_PATH)
    );
}

mod generated;
