//! The operator's admission webhook registered with the test control plane: a namespace only
//! this test's MutatingWebhookConfiguration selects, the operator serving on a free loopback
//! port, and a wait until the API server actually injects.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use bifrost_requirements::crd::{INJECTED_ANNOTATION, OPT_IN_LABEL};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::k8s::control_plane;
use super::operator::{Operator, namespace, wait_for};
use super::proc::{free_port, wait_for_port};

const T: Duration = Duration::from_secs(60);

/// A fresh namespace labelled so that only this test's webhook configuration selects it.
pub async fn webhook_namespace(prefix: &str) -> (Client, String) {
    let (client, ns) = namespace(prefix).await;
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"bifrost-webhook-test": ns}}})),
        )
        .await
        .unwrap();
    (client, ns)
}

/// The operator (controller and webhook) for `ns`, its webhook on a free loopback port.
/// Dropping it stops the operator and deletes the webhook configuration named `config`.
pub struct Webhook {
    pub op: Operator,
    pub port: u16,
    pub config: String,
}

impl Webhook {
    /// The operator serving its webhook, registered with the API server.
    pub async fn start(client: &Client, ns: &str) -> Webhook {
        Self::start_with(client, ns, &[]).await
    }

    /// [`Webhook::start`] with more `operator` flags.
    pub async fn start_with(client: &Client, ns: &str, extra: &[&str]) -> Webhook {
        let webhook = Self::serve(ns, extra);
        webhook.register(client, ns).await;
        ca_bundle(client, &webhook.config).await;
        webhook
    }

    /// The operator serving its webhook, which the API server does not call (nothing
    /// registered).
    pub fn serve(ns: &str, extra: &[&str]) -> Webhook {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!("bifrost-test-{ns}");
        let mut args = vec![
            "--webhook-addr",
            &addr,
            "--webhook-config-name",
            &config,
            "--webhook-extra-san",
            "127.0.0.1",
            "--operator-image",
            "registry.example/bifrost-requirements:test",
            "--tls-check-interval",
            "1s",
        ];
        args.extend_from_slice(extra);
        let op = Operator::start(ns, "webhook", &args);
        wait_for_port(
            port,
            "the admission webhook",
            &op.log,
            Duration::from_secs(30),
        );
        Webhook { op, port, config }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/mutate", self.port)
    }

    /// Register the shipped webhook configuration for `ns`, pointing at this webhook; the
    /// operator fills in the caBundle.
    async fn register(&self, client: &Client, ns: &str) {
        let mut hook_config =
            bifrost_requirements::webhook::webhook_configuration().expect("deploy/webhook.yaml");
        hook_config.metadata.name = Some(self.config.clone());
        let hook = &mut hook_config.webhooks.as_mut().unwrap()[0];
        hook.client_config.service = None;
        hook.client_config.url = Some(self.url());
        hook.namespace_selector
            .get_or_insert_with(Default::default)
            .match_labels = Some(BTreeMap::from([(
            "bifrost-webhook-test".to_string(),
            ns.to_string(),
        )]));
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &hook_config)
            .await
            .expect("the API server accepts the shipped webhook configuration");
    }

    /// Wait until the API server calls the webhook and injects a dry-run pod labelled for the
    /// (valid) resource `resource`.
    pub async fn wait_until_injecting(&self, client: &Client, ns: &str, resource: &str) {
        let pods = Api::<Pod>::namespaced(client.clone(), ns);
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "canary", "labels": {OPT_IN_LABEL: resource}},
            "spec": {"containers": [{"name": "worker", "image": "python:3.11-slim"}]}
        }))
        .unwrap();
        wait_for("the API server to call the webhook", T, || async {
            let p = pods.create(&dry, &pod).await.ok()?;
            p.metadata
                .annotations?
                .contains_key(INJECTED_ANNOTATION)
                .then_some(())
        })
        .await;
    }
}

/// The caBundle the operator patched into the configuration `name`, once it is there.
pub async fn ca_bundle(client: &Client, name: &str) -> Vec<u8> {
    let api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    wait_for("caBundle patched by the operator", T, || async {
        let c = api.get(name).await.ok()?;
        let b = c.webhooks?.first()?.client_config.ca_bundle.clone()?;
        (!b.0.is_empty()).then_some(b.0)
    })
    .await
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = control_plane().kubectl(&[
            "delete",
            "mutatingwebhookconfiguration",
            &self.config,
            "--ignore-not-found",
        ]);
    }
}
