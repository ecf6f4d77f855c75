//! JSON-patch (RFC 6902) building, written for the pod exactly as submitted: an absent array or
//! map is added whole, an existing one gets `/-` appends or keyed adds.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use serde_json::Value;

use super::SITE_PACKAGES_VOLUME;
use super::volumes::mount;
use crate::crd::INJECTED_ANNOTATION;

/// Serializing k8s-openapi values into JSON cannot fail (no maps with non-string keys); this
/// keeps the call sites free of `unwrap`.
pub(super) fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

/// Append `items` to the array at `tokens`, creating it when absent.
pub(super) fn append_all(
    ops: &mut Vec<PatchOperation>,
    tokens: &[&str],
    exists: bool,
    items: Vec<Value>,
) {
    if exists {
        for item in items {
            let mut path: Vec<&str> = tokens.to_vec();
            path.push("-");
            ops.push(add(&path, item));
        }
    } else {
        ops.push(add(tokens, Value::Array(items)));
    }
}

/// The `bifrost.io/injected-hash` annotation (the key's `/` is escaped by the pointer).
pub(super) fn marker(pod: &Pod, hash: &str) -> PatchOperation {
    match &pod.metadata.annotations {
        Some(_) => add(
            &["metadata", "annotations", INJECTED_ANNOTATION],
            Value::String(hash.to_string()),
        ),
        None => add(
            &["metadata", "annotations"],
            serde_json::json!({ INJECTED_ANNOTATION: hash }),
        ),
    }
}

/// Mount site-packages at `mount_path` in every app container and put it on `PYTHONPATH`.
/// A container whose `PYTHONPATH` comes from `valueFrom`, or that mounts something else at that
/// path, is left alone with a warning. Returns the names of the containers changed.
pub(super) fn app_containers(
    ops: &mut Vec<PatchOperation>,
    spec: &PodSpec,
    mount_path: &str,
    warnings: &mut Vec<String>,
) -> Vec<String> {
    let mut changed = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let env = c.env.as_deref().unwrap_or_default();
        // Kubernetes uses the last definition of a variable.
        let python_path = env.iter().rposition(|e| e.name == "PYTHONPATH");
        if let Some(j) = python_path
            && env[j].value_from.is_some()
        {
            warnings.push(format!(
                "container {:?} sets PYTHONPATH with valueFrom; the installed packages were not \
                 added to it (set PYTHONPATH literally, or add {mount_path} yourself)",
                c.name
            ));
            continue;
        }
        if python_path.is_none() && c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            warnings.push(format!(
                "container {:?} takes variables from envFrom, which may define PYTHONPATH; the \
                 injected PYTHONPATH={mount_path} replaces it (set PYTHONPATH in env to keep both)",
                c.name
            ));
        }
        if let Some(m) = c
            .volume_mounts
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|m| m.mount_path.trim_end_matches('/') == mount_path)
        {
            warnings.push(format!(
                "container {:?} already mounts volume {:?} at {mount_path} (spec.install.mountPath); \
                 the installed packages were not mounted into it",
                c.name, m.name
            ));
            continue;
        }
        let idx = i.to_string();
        append_all(
            ops,
            &["spec", "containers", &idx, "volumeMounts"],
            c.volume_mounts.is_some(),
            vec![to_value(&mount(SITE_PACKAGES_VOLUME, mount_path, false))],
        );
        python_path_op(ops, &idx, c, python_path, mount_path);
        changed.push(c.name.clone());
    }
    changed
}

/// Put `mount_path` first on the container's `PYTHONPATH` (entry `at` of its env, when it has
/// one), unless it is there already.
fn python_path_op(
    ops: &mut Vec<PatchOperation>,
    idx: &str,
    c: &Container,
    at: Option<usize>,
    mount_path: &str,
) {
    let Some(j) = at else {
        append_all(
            ops,
            &["spec", "containers", idx, "env"],
            c.env.is_some(),
            vec![to_value(&EnvVar {
                name: "PYTHONPATH".into(),
                value: Some(mount_path.to_string()),
                value_from: None,
            })],
        );
        return;
    };
    let old = c.env.as_deref().unwrap_or_default()[j]
        .value
        .as_deref()
        .unwrap_or("");
    if old
        .split(':')
        .any(|p| p.trim_end_matches('/') == mount_path)
    {
        return;
    }
    let new = if old.is_empty() {
        mount_path.to_string()
    } else {
        format!("{mount_path}:{old}")
    };
    ops.push(add(
        &["spec", "containers", idx, "env", &j.to_string(), "value"],
        Value::String(new),
    ));
}
