//! Tests as scenarios. A test says what happens to whom; the fixture holds the set-up every test
//! on the control plane repeats:
//!
//! - [`Ns`]: a fresh namespace on the shared control plane, with the CRD in place, and the few
//!   things a test does there (create or edit a `WorkspaceRequirements`, wait for a condition, make
//!   a labelled Deployment, read its hash, read Events) in one line each.
//! - [`Scenario`]: an [`Ns`], a Redis key of its own with the Secret that names Redis, and an
//!   operator watching only that namespace: `let op = Scenario::start("name", &[]).await;`.
//!
//! Cleanup is `Drop`, as everywhere in Rust: the operator process stops when the scenario goes
//! out of scope, also when an assertion panics (a closure-style `with_operator(|op| …)` would need
//! `catch_unwind` for the same). Namespaces stay: the control plane is one per test binary and
//! goes with it.
#![allow(dead_code)]

use std::ops::Deref;
use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

use super::operator::{
    Operator, condition, create_wsreq, get_wsreq, labelled_deployment_with, namespace, redis_cache,
    secret, template_hash, wait_for,
};
use super::services::{fresh_key, redis_get, redis_url};

/// How long a scenario waits for the operator to reach a state, unless it says otherwise.
pub const T: Duration = Duration::from_secs(30);

/// A fresh namespace on the shared control plane, and the client.
pub struct Ns {
    pub client: Client,
    pub name: String,
}

impl Ns {
    /// A namespace named `{prefix}-{random}`, with the CRD served and the default ServiceAccount
    /// ready for pods.
    pub async fn new(prefix: &str) -> Ns {
        let (client, name) = namespace(prefix).await;
        Ns { client, name }
    }

    /// The namespaced API of `K` here.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Create the `WorkspaceRequirements` `name` with this spec.
    pub async fn wsreq(&self, name: &str, spec: serde_json::Value) -> WorkspaceRequirements {
        create_wsreq(&self.client, &self.name, name, spec).await
    }

    /// The resource as the API server has it now.
    pub async fn get(&self, name: &str) -> WorkspaceRequirements {
        get_wsreq(&self.client, &self.name, name).await
    }

    /// Merge `spec` into the resource's spec (a user's `kubectl patch --type merge`).
    pub async fn patch_spec(&self, name: &str, spec: serde_json::Value) {
        self.api::<WorkspaceRequirements>()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .unwrap();
    }

    /// Replace the resource's `spec.content`.
    pub async fn set_content(&self, name: &str, content: &str) {
        self.patch_spec(name, json!({ "content": content })).await;
    }

    /// Wait up to [`T`] until condition `type_` of `name` has `status` (and `reason`, when given).
    pub async fn wait(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
    ) -> WorkspaceRequirements {
        self.wait_within(name, type_, status, reason, T).await
    }

    /// [`Ns::wait`] with its own deadline; panics with the last status seen.
    pub async fn wait_within(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: Option<&str>,
        timeout: Duration,
    ) -> WorkspaceRequirements {
        let mut last = None;
        let found = tokio::time::timeout(timeout, async {
            loop {
                let obj = self.get(name).await;
                if condition(&obj, type_)
                    .is_some_and(|c| c.0 == status && reason.is_none_or(|r| r == c.1))
                {
                    return obj;
                }
                last = obj.status.clone();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            let ns = &self.name;
            panic!(
                "timed out waiting for {ns}/{name} {type_}={status} {reason:?}; last status: {last:#?}"
            )
        })
    }

    /// A Deployment `name` of `replicas` whose pod template opts in to the resource `wsreq`
    /// (0 replicas: rolled out as soon as its template carries the hash, with no node to run pods).
    pub async fn deployment(&self, name: &str, wsreq: &str, replicas: i32) -> Deployment {
        labelled_deployment_with(&self.client, &self.name, name, wsreq, replicas).await
    }

    /// The requirements hash on Deployment `name`'s pod template, if it has one.
    pub async fn deployment_hash(&self, name: &str) -> Option<String> {
        template_hash(&self.api::<Deployment>().get(name).await.unwrap())
    }

    /// Wait up to [`T`] until Deployment `name`'s pod template carries a hash; returns it.
    pub async fn rolled_hash(&self, name: &str) -> String {
        wait_for("the pod template's hash", T, || self.deployment_hash(name)).await
    }

    /// Create or replace Secret `name` with one key.
    pub async fn secret(&self, name: &str, key: &str, value: &str) {
        secret(&self.client, &self.name, name, key, value).await;
    }

    /// A test webhook (the operator serving admission only) registered for this namespace, once
    /// it injects pods labelled for `wsreq`. The namespace must come from
    /// `admission::webhook_namespace`.
    pub async fn webhook_injecting(&self, wsreq: &str) -> super::admission::Webhook {
        let webhook = super::admission::Webhook::start(&self.client, &self.name).await;
        webhook
            .wait_until_injecting(&self.client, &self.name, wsreq)
            .await;
        webhook
    }

    /// The namespace's Events (`events.k8s.io`), as JSON text.
    pub fn events(&self) -> String {
        super::fixtures::events(&self.name)
    }
}

/// Asserts that condition `type_` of `obj` has `status` and a message naming each of `words`;
/// returns its (reason, message).
#[track_caller]
pub fn says(
    obj: &WorkspaceRequirements,
    type_: &str,
    status: &str,
    words: &[&str],
) -> (String, String) {
    let Some((actual, reason, message)) = condition(obj, type_) else {
        panic!("no {type_} condition: {:#?}", obj.status)
    };
    assert_eq!(actual, status, "{type_}: {reason}: {message}");
    for word in words {
        assert!(
            message.contains(word),
            "{type_} does not name {word:?}: {message}"
        );
    }
    (reason, message)
}

/// A namespace made some other way (e.g. `admission::webhook_namespace`, labelled for a test
/// webhook).
impl From<(Client, String)> for Ns {
    fn from((client, name): (Client, String)) -> Ns {
        Ns { client, name }
    }
}

/// A namespace with an operator watching only it, and a Redis key of its own.
pub struct Scenario {
    pub ns: Ns,
    /// The Redis key this scenario's resources cache under ([`Scenario::cache`]).
    pub key: String,
    pub op: Operator,
}

impl Scenario {
    /// A fresh namespace `{prefix}-…`, the Secret `redis` (key `url`) naming the shared Redis,
    /// and an operator (lease identity `a`) started with these extra flags.
    pub async fn start(prefix: &str, flags: &[&str]) -> Scenario {
        let ns = Ns::new(prefix).await;
        ns.secret("redis", "url", &redis_url()).await;
        let op = Operator::start(&ns.name, "a", flags);
        Scenario {
            ns,
            key: fresh_key(),
            op,
        }
    }

    /// `spec.cache` naming this scenario's Redis key through the Secret `redis`.
    pub fn cache(&self) -> serde_json::Value {
        redis_cache(&self.key)
    }

    /// The operator's sample of metric `name` (with its labels), if it exports one.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.op.metric(name)
    }

    /// GET `path` on the operator's metrics and health port: (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.op.http_get(path)
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        self.op.log_text()
    }

    /// What Redis holds under this scenario's key.
    pub async fn cached(&self) -> Option<String> {
        redis_get(&redis_url(), &self.key).await
    }
}

impl Deref for Scenario {
    type Target = Ns;

    fn deref(&self) -> &Ns {
        &self.ns
    }
}
