//! Small reads of Kubernetes objects and command outputs that the cluster tests (webhook, node,
//! harness) share: a pod's init containers, a pod template's requirements hash, a merge patch,
//! a command's output once it succeeded.
#![allow(dead_code)]

use std::process::Output;

use bifrost_requirements::crd::HASH_ANNOTATION;
use bifrost_requirements::k8s_compat::Present;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The names of a pod's init containers, in order.
pub fn init_names(p: &Pod) -> Vec<String> {
    let spec = p.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    init.iter().map(|c| c.name.clone()).collect()
}

/// The requirements hash a ReplicaSet's pod template carries, if any.
pub fn replicaset_hash(rs: &ReplicaSet) -> Option<&String> {
    let template = rs.spec.present()?.template.as_ref()?;
    template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(HASH_ANNOTATION)
}

/// `kubectl patch --type merge` of object `name` with `patch`.
pub async fn merge_patch<K, P>(api: &Api<K>, name: &str, patch: P)
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
    P: Serialize + std::fmt::Debug,
{
    let params = PatchParams::default();
    api.patch(name, &params, &Patch::Merge(patch))
        .await
        .unwrap();
}

/// A command's stdout once it succeeded; panics with `what` and its stderr otherwise.
#[track_caller]
pub fn stdout_of(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
