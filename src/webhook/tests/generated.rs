//! Generated inputs on the admission entry point: whatever the body, `review` answers (no
//! panic), with 400 or an allowed review; a patch only for a pod that really names an
//! existing resource, and every patch applies to the pod it was computed for.

use kube::core::admission::{AdmissionRequest, AdmissionReview, Operation};
use proptest::prelude::*;

use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// Strings that break naive code: quotes, JSON-pointer and patch syntax, control and
/// non-ASCII characters, shell metacharacters, very long runs.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9.-]{1,70}",
        Just("default".to_string()),
        Just("default ".to_string()),
        Just("Default".to_string()),
        Just("default\u{0}".to_string()),
        Just("~1spec~0/../\"\\".to_string()),
        Just("$(rm -rf /); `id`".to_string()),
        Just("\u{202e}default".to_string()),
        (1usize..200_000).prop_map(|n| "a".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(hostile_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `depth` levels of arrays or objects around a value, as text (a `Value` that deep
/// would overflow the test's own stack when dropped; serde_json stops parsing at 128).
fn nested(depth: usize, object: bool) -> String {
    let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
    format!("{}\"bottom\"{}", open.repeat(depth), close.repeat(depth))
}

const POINTERS: &[&str] = &[
    "",
    "/apiVersion",
    "/kind",
    "/request",
    "/request/uid",
    "/request/kind",
    "/request/kind/kind",
    "/request/kind/group",
    "/request/namespace",
    "/request/operation",
    "/request/dryRun",
    "/request/object",
    "/request/object/metadata",
    "/request/object/metadata/name",
    "/request/object/metadata/labels",
    "/request/object/metadata/labels/bifrost.io~1requirements",
    "/request/object/metadata/annotations",
    "/request/object/metadata/ownerReferences",
    "/request/object/spec",
    "/request/object/spec/containers",
    "/request/object/spec/containers/0",
    "/request/object/spec/containers/0/name",
    "/request/object/spec/containers/0/env",
    "/request/object/spec/containers/0/volumeMounts",
    "/request/object/spec/initContainers",
    "/request/object/spec/volumes",
];

fn set(root: &mut Value, pointer: &str, v: Value) {
    if pointer.is_empty() {
        *root = v;
        return;
    }
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let key = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(key, v);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < a.len()
            {
                a[i] = v;
            }
        }
        _ => {}
    }
}

/// Check one answer against the contract; returns a failure description.
fn check(body: &[u8], reply: &Reply) -> std::result::Result<(), String> {
    match reply.status {
        StatusCode::BAD_REQUEST => return Ok(()),
        StatusCode::OK => {}
        other => return Err(format!("status {other}")),
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    let resp = &v["response"];
    if resp["allowed"] != json!(true) {
        return Err(format!("200 without allowed=true: {v}"));
    }
    let Some(patch) = resp.get("patch") else {
        return Ok(());
    };
    // A patch: the request, read as the server reads it, must be a CREATE of a pod in
    // bifrost labelled `default`.
    let sent: AdmissionReview<Pod> =
        serde_json::from_slice(body).map_err(|e| format!("patched an unparsable body: {e}"))?;
    let req: AdmissionRequest<Pod> = sent.try_into().map_err(|e| format!("{e:?}"))?;
    let pod = req
        .object
        .clone()
        .ok_or("patched a request without an object")?;
    let namespace = req.namespace.clone().or(pod.metadata.namespace.clone());
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OPT_IN_LABEL));
    if label.map(String::as_str) != Some("default")
        || req.operation != Operation::Create
        || namespace.as_deref() != Some("bifrost")
        || reply.result != "injected"
    {
        return Err(format!(
            "patched a request that names no resource: {}",
            reply.result
        ));
    }
    let bytes: Vec<u8> = serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
    let ops: json_patch::Patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("patch is not a JSON patch: {e}"))?;
    // The API server applies the patch to the object it sent (here: as the typed Pod
    // serializes it); it must apply cleanly.
    let mut doc = serde_json::to_value(&pod).unwrap();
    json_patch::patch(&mut doc, &ops).map_err(|e| format!("patch does not apply: {e}"))?;
    Ok(())
}

fn base() -> Value {
    review(worker(Some("default")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2500, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let a = admission(vec![resource("bifrost", "default")]);
        let reply = runtime().block_on(a.review(&body));
        prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
    }

    #[test]
    fn mutated_reviews(
        edits in prop::collection::vec((prop::sample::select(POINTERS), json_value()), 1..4),
    ) {
        let a = admission(vec![resource("bifrost", "default")]);
        let mut v = base();
        for (pointer, value) in edits {
            set(&mut v, pointer, value);
        }
        let body = serde_json::to_vec(&v).unwrap();
        let reply = runtime().block_on(a.review(&body));
        prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
    }

    #[test]
    fn deep_nesting(pointer in prop::sample::select(POINTERS), depth in 100usize..3000, object: bool) {
        let a = admission(vec![resource("bifrost", "default")]);
        let mut v = base();
        set(&mut v, pointer, json!("__deep__"));
        let body = serde_json::to_string(&v)
            .unwrap()
            .replacen("\"__deep__\"", &nested(depth, object), 1)
            .into_bytes();
        let reply = runtime().block_on(a.review(&body));
        prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
    }

    #[test]
    fn mutated_bytes(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
    ) {
        let a = admission(vec![resource("bifrost", "default")]);
        let mut body = serde_json::to_vec(&base()).unwrap();
        for (at, byte, op) in edits {
            let i = at.index(body.len());
            match op {
                0 => body[i] = byte,
                1 => body.insert(i, byte),
                _ => { body.remove(i); }
            }
        }
        let reply = runtime().block_on(a.review(&body));
        prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
    }

    #[test]
    fn hostile_labels_and_names(label in hostile_string(), name in hostile_string(), ns in hostile_string()) {
        let a = admission(vec![resource("bifrost", "default")]);
        let mut v = base();
        set(&mut v, "/request/object/metadata/labels/bifrost.io~1requirements", json!(label));
        set(&mut v, "/request/object/metadata/name", json!(name));
        set(&mut v, "/request/namespace", json!(ns));
        let body = serde_json::to_vec(&v).unwrap();
        let reply = runtime().block_on(a.review(&body));
        prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
        if label != "default" || ns != "bifrost" {
            prop_assert_ne!(reply.result, "injected");
        }
    }
}

/// The unmutated base case really is injected (else the properties above prove little).
#[test]
fn the_base_review_is_injected() {
    let a = admission(vec![resource("bifrost", "default")]);
    let body = serde_json::to_vec(&base()).unwrap();
    let reply = runtime().block_on(a.review(&body));
    assert_eq!(reply.result, "injected");
    check(&body, &reply).unwrap();
}
