//! Builders shared by the webhook's unit tests: a labelled worker pod, the AdmissionReview the
//! API server sends for it, and the `WorkspaceRequirements` it names.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::crd::{
    CacheSpec, OPT_IN_LABEL, RedisCache, SecretKeyRef, WorkspaceRequirements,
    WorkspaceRequirementsSpec,
};

/// The requirements of [`resource`].
pub(crate) const CONTENT: &str = "requests==2.32.3\n";
/// The uid of every [`review`].
pub(crate) const REVIEW_UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

/// A valid resource `ns/name` with [`CONTENT`] and a Redis cache.
pub(crate) fn resource(ns: &str, name: &str) -> WorkspaceRequirements {
    let mut r = WorkspaceRequirements::new(
        name,
        WorkspaceRequirementsSpec {
            content: CONTENT.into(),
            cache: Some(CacheSpec {
                redis: Some(RedisCache {
                    url_secret_ref: SecretKeyRef {
                        name: "bifrost-redis".into(),
                        key: "url".into(),
                    },
                    key: "bifrost:requirements:content".into(),
                    ttl_seconds: 86400,
                }),
            }),
            ..WorkspaceRequirementsSpec::default()
        },
    );
    r.metadata.namespace = Some(ns.into());
    r
}

/// A ReplicaSet-style worker pod in `bifrost` (one container, `generateName`), with the opt-in
/// label naming `label` when given; JSON so tests can bend it into any shape.
pub(crate) fn worker(label: Option<&str>) -> Value {
    let mut labels = json!({"app": "worker"});
    if let Some(l) = label {
        labels[OPT_IN_LABEL] = json!(l);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "worker-", "namespace": "bifrost", "labels": labels},
        "spec": {"containers": [{"name": "worker", "image": "bifrost/worker:1.2", "imagePullPolicy": "Always"}]}
    })
}

pub(crate) fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("a pod")
}

/// The AdmissionReview of a pod CREATE in `bifrost`, as the API server sends it.
pub(crate) fn review(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": REVIEW_UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bifrost", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod, "dryRun": false
        }
    })
}
