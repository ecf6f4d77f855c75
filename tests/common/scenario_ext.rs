//! More one-line steps for [`Ns`] and [`Scenario`] (tests of the lock, the probe, the S3
//! mirror): the snapshot ConfigMap, a resource touched so it reconciles again, waits on what a
//! condition alone cannot say, a rollout to a content, an operator that resolves against an index.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::k8s_compat::Present;
use bifrost_requirements::requirements::content_hash;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::index::Index;
use super::operator::{Operator, condition, template_hash, wait_for};
use super::scenario::{Ns, Scenario};

impl Ns {
    /// The data of resource `name`'s snapshot ConfigMap (`{name}-requirements`; empty until it
    /// exists).
    pub async fn snapshot(&self, name: &str) -> BTreeMap<String, String> {
        self.api::<ConfigMap>()
            .get_opt(&format!("{name}-requirements"))
            .await
            .unwrap()
            .and_then(|cm| cm.data)
            .unwrap_or_default()
    }

    /// Merge `data` into resource `name`'s snapshot ConfigMap (someone editing it by hand).
    pub async fn patch_snapshot(&self, name: &str, data: serde_json::Value) {
        self.api::<ConfigMap>()
            .patch(
                &format!("{name}-requirements"),
                &PatchParams::default(),
                &Patch::Merge(json!({ "data": data })),
            )
            .await
            .unwrap();
    }

    /// Label resource `name` (its spec unchanged), so the operator reconciles it again.
    pub async fn touch(&self, name: &str) {
        self.api::<WorkspaceRequirements>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})),
            )
            .await
            .unwrap();
    }

    /// Wait up to `timeout` until resource `name` passes `check` (`what` names it when it does
    /// not); returns the resource.
    pub async fn wait_until(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&WorkspaceRequirements) -> bool,
    ) -> WorkspaceRequirements {
        wait_for(what, timeout, || async {
            let obj = self.get(name).await;
            check(&obj).then_some(obj)
        })
        .await
    }

    /// Wait up to `timeout` until condition `type_` of resource `name` has `reason`, whatever its
    /// status; returns the resource.
    pub async fn wait_reason(
        &self,
        name: &str,
        type_: &str,
        reason: &str,
        timeout: Duration,
    ) -> WorkspaceRequirements {
        let what = format!("{type_} {reason}");
        self.wait_until(name, &what, timeout, |obj| {
            condition(obj, type_).is_some_and(|c| c.1 == reason)
        })
        .await
    }

    /// Deployment `name` as the API server has it now.
    pub async fn get_deployment(&self, name: &str) -> Deployment {
        self.api::<Deployment>().get(name).await.unwrap()
    }

    /// Wait up to `timeout` until Deployment `name`'s pod template carries the hash of `content`.
    pub async fn wait_rolled_to(&self, name: &str, content: &str, timeout: Duration) {
        self.wait_rolled_to_hash(name, &content_hash(content), timeout)
            .await;
    }

    /// Wait up to `timeout` until Deployment `name`'s pod template carries `hash` (an API error
    /// on the way is one more poll).
    pub async fn wait_rolled_to_hash(&self, name: &str, hash: &str, timeout: Duration) {
        let deployments = self.api::<Deployment>();
        wait_for(
            &format!("{name}'s template carries {hash}"),
            timeout,
            || async { (template_hash(&deployments.get(name).await.ok()?)? == hash).then_some(()) },
        )
        .await;
    }
}

impl Scenario {
    /// A scenario (see [`Scenario::start`]) whose operator may resolve against `index` only.
    pub async fn resolving(prefix: &str, index: &Index) -> Scenario {
        Scenario::start(prefix, &["--resolver-index-url", &index.url()]).await
    }

    /// Stop this scenario's operator (if it still runs) and start another, with lease identity
    /// `id`, that may resolve against `index` only.
    pub fn restart_resolving(&mut self, id: &str, index: &Index) {
        self.op.stop();
        self.op = Operator::start(&self.ns.name, id, &["--resolver-index-url", &index.url()]);
    }
}

/// An annotation of Deployment `d`'s pod template.
pub fn template_annotation(d: &Deployment, key: &str) -> Option<String> {
    let template = d.spec.present()?.template.metadata.as_ref()?;
    template.annotations.as_ref()?.get(key).cloned()
}
