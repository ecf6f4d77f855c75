//! The chart's scenarios on the control plane (`tests/helm_operator.rs`, `tests/helm_rbac.rs`):
//! a namespace beside the shared release ([`Ns::beside_release`]), the operator started exactly
//! as a release's Deployment runs it ([`chart_operator`]), and the few checks both make of its
//! work in one line each.
#![allow(dead_code)]

use std::path::Path;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::requirements::content_hash;
use k8s_openapi::api::core::v1::ConfigMap;

use super::helm::{create_namespace, operator_command, release};
use super::k8s::control_plane;
use super::operator::Operator;
use super::proc::free_port;
use super::scenario::Ns;
use super::services::{redis_get, redis_url};

impl Ns {
    /// A fresh namespace `{prefix}-…` on a control plane whose CRD the shared release installed
    /// (the release goes first; the committed CRD is not applied over the chart's).
    pub async fn beside_release(prefix: &str) -> Ns {
        release().await;
        let client = control_plane().client().await;
        let name = create_namespace(&client, prefix).await;
        Ns { client, name }
    }

    /// Redis holds `content`'s payload under `key`, and the snapshot ConfigMap of the resource
    /// `name` its hash; returns the snapshot.
    pub async fn assert_warmed_and_snapshotted(
        &self,
        name: &str,
        key: &str,
        content: &str,
    ) -> ConfigMap {
        assert_eq!(
            redis_get(&redis_url(), key).await,
            Some(Payload::new(content).to_json())
        );
        let snapshot = self
            .api::<ConfigMap>()
            .get(&format!("{name}-requirements"))
            .await
            .unwrap();
        assert_eq!(
            snapshot.data.as_ref().unwrap()["hash"],
            content_hash(content)
        );
        snapshot
    }
}

/// The operator exactly as a release's Deployment configures it (the args and environment of
/// its installed `manifest`, the Downward API filled in with `pod_name` and `pod_namespace`), but
/// as a local process with `kubeconfig` (the release's ServiceAccount token) on loopback ports,
/// logging text at debug level; `extra` variables replace the manifest's. The resolver's cache
/// stays the fixture's (the operator's own temporary folder). Returns the environment it got.
pub fn chart_operator(
    id: &str,
    manifest: &[serde_json::Value],
    pod_name: &str,
    pod_namespace: &str,
    kubeconfig: &Path,
    extra: &[(&str, String)],
) -> (Operator, Vec<(String, String)>) {
    let metrics_port = free_port();
    let mut overrides = extra.to_vec();
    overrides.extend([
        ("BIFROST_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("BIFROST_WEBHOOK_ADDR", format!("127.0.0.1:{}", free_port())),
        ("BIFROST_LOG_FORMAT", "text".into()),
        ("RUST_LOG", "info,bifrost_requirements=debug".into()),
    ]);
    let (args, mut env) = operator_command(manifest, pod_name, pod_namespace, &overrides);
    env.retain(|(n, _)| n != "BIFROST_RESOLVER_CACHE_DIR");
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let op = Operator::start_with(id, kubeconfig, &arg_refs, &env_refs, metrics_port);
    (op, env)
}
