//! The mutating admission webhook: injects the installer into worker pods.
//!
//! Every replica of `bifrost-requirements operator` serves `POST /mutate` over HTTPS (rustls with
//! the ring provider only). The API server sends an `AdmissionReview` (v1) for each pod CREATE
//! that carries the opt-in label `bifrost.io/requirements` (the MutatingWebhookConfiguration's
//! `objectSelector`); the answer is a JSON patch built by [`inject::plan`] from the
//! `WorkspaceRequirements` named by the label, read from a reflector cache (no API call per
//! request). Nothing here ever refuses a pod: whatever goes wrong — unknown resource, cache not
//! ready, a setting that cannot be honoured, an internal error — the pod is admitted unchanged
//! with a warning (and a Kubernetes Event), and with `failurePolicy: Ignore` an unreachable
//! webhook admits pods unchanged too. The controller's status counts pods that missed injection
//! (`status.workloads[].uninjectedPods`).
//!
//! TLS certificates come from [`crate::tls`]: self-managed (a CA and serving certificate in a Secret,
//! `caBundle` patched into the webhook configuration, rotated before expiry and hot-swapped) or
//! mounted files (cert-manager).

pub(crate) mod admission;
pub(crate) mod events;
pub mod inject;
pub(crate) mod serve;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use tracing::info;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::supervise::{Backoff, OnExit, Supervisor};
use crate::tls;
use crate::watch::Resources;
pub use admission::Admission;
pub(crate) use events::Events;
pub(crate) use serve::MUTATE_PATH;
pub use serve::{BODY_LIMIT, BODY_TIMEOUT, HEAD_TIMEOUT, MAX_CONNECTIONS, router, serve_tls};

/// The MutatingWebhookConfiguration the chart ships (`deploy/webhook.yaml`): CREATE on pods with
/// the opt-in label, `failurePolicy: Ignore`, `timeoutSeconds: 5`, `sideEffects: None`,
/// `reinvocationPolicy: IfNeeded`, never kube-system. `caBundle` is filled in by the operator
/// (self-managed TLS) or by cert-manager's CA injector.
const WEBHOOK_CONFIGURATION_YAML: &str = include_str!("../../deploy/webhook.yaml");

/// Everything the webhook needs to run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub addr: SocketAddr,
    pub settings: inject::Settings,
    pub tls: tls::Config,
    /// The namespace the operator watches (None: all), for messages: only its resources are
    /// in the shared cache.
    pub namespace: Option<String>,
}

/// Run the webhook (certificates, HTTPS server) until the supervisor's stop signal; each part
/// is a supervised task (restarted when it dies, reported on `/healthz`). `resources` is the
/// replica's shared `WorkspaceRequirements` cache ([`crate::watch::Resources`]).
pub(crate) async fn run(
    client: Client,
    config: Config,
    resources: Resources,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    resolver: Arc<tls::CertResolver>,
    tasks: Supervisor,
) -> Result<()> {
    let stop_rx = tasks.stop().receiver();
    let restart = OnExit::Restart(Backoff::default());
    let server_config = tls::server_config(resolver.clone())?;
    let certs = {
        let (client, stop, tls) = (client.clone(), stop_rx.clone(), config.tls.clone());
        tasks.spawn("webhook-certificates", restart, move || {
            tls.clone()
                .run(client.clone(), resolver.clone(), stop.clone())
                .map(Ok::<(), Infallible>)
        })
    };

    let app = router(Arc::new(Admission {
        resources: resources.store(),
        listed: resources.listed_signal(),
        settings: config.settings,
        metrics,
        events: Some(Events::new(client, reporter)),
        namespace: config.namespace,
    }));
    let addr = config.addr;
    let server = tasks.spawn("webhook-server", restart, move || {
        let (app, server_config, mut stop) = (app.clone(), server_config.clone(), stop_rx.clone());
        async move {
            if let Some(listener) = serve::bind(addr, &mut stop).await {
                info!(%addr, path = MUTATE_PATH, "serving the admission webhook (HTTPS)");
                serve_tls(listener, server_config, app, stop).await;
            }
            Ok::<(), Infallible>(())
        }
    });
    let _ = server.await;
    let _ = certs.await;
    info!("admission webhook stopped");
    Ok(())
}

/// The shipped MutatingWebhookConfiguration, parsed (for tests and tools).
pub fn webhook_configuration()
-> Result<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> {
    serde_yaml::from_str(WEBHOOK_CONFIGURATION_YAML)
        .map_err(|e| Error::Serialization(format!("deploy/webhook.yaml: {e}")))
}
