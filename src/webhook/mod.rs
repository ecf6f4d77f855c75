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

pub mod admission;
pub mod events;
pub mod inject;
pub mod serve;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Mutex, watch};
use tracing::{info, warn};

use crate::crd::WorkspaceRequirements;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::supervise::{Backoff, OnExit, Supervisor};
use crate::tls;
pub use admission::{Admission, Reply};
pub use events::Events;
pub use serve::{
    BODY_LIMIT, BODY_TIMEOUT, HEAD_TIMEOUT, MAX_CONNECTIONS, MUTATE_PATH, router, serve_tls,
};

/// The MutatingWebhookConfiguration the chart ships (`deploy/webhook.yaml`): CREATE on pods with
/// the opt-in label, `failurePolicy: Ignore`, `timeoutSeconds: 5`, `sideEffects: None`,
/// `reinvocationPolicy: IfNeeded`, never kube-system. `caBundle` is filled in by the operator
/// (self-managed TLS) or by cert-manager's CA injector.
pub const WEBHOOK_CONFIGURATION_YAML: &str = include_str!("../../deploy/webhook.yaml");

/// Everything the webhook needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub addr: SocketAddr,
    pub settings: inject::Settings,
    pub tls: tls::Config,
    /// Only resources in this namespace are visible (None: all namespaces).
    pub namespace: Option<String>,
}

/// Run the webhook (certificates, resource cache, HTTPS server) until the supervisor's stop
/// signal; each part is a supervised task (restarted when it dies, reported on `/healthz`).
pub async fn run(
    client: Client,
    config: Config,
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

    let api: Api<WorkspaceRequirements> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    // A restarted cache task resumes feeding the same store (its writer is shared), so requests
    // keep reading it meanwhile.
    let writer = Arc::new(Mutex::new(writer));
    let cache = {
        let stop = stop_rx.clone();
        tasks.spawn("webhook-cache", restart, move || {
            feed_cache(api.clone(), writer.clone(), stop.clone())
        })
    };

    let app = router(Arc::new(Admission {
        resources: store,
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
    let _ = cache.await;
    let _ = certs.await;
    info!("admission webhook stopped");
    Ok(())
}

/// Watch `WorkspaceRequirements` into the admission cache until `stop`; a watch error is
/// retried by the watcher's own backoff, an ended stream is this task's failure.
async fn feed_cache(
    api: Api<WorkspaceRequirements>,
    writer: Arc<Mutex<Writer<WorkspaceRequirements>>>,
    mut stop: watch::Receiver<bool>,
) -> std::result::Result<(), &'static str> {
    let mut writer = writer.lock().await;
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|r: &mut WorkspaceRequirements| r.managed_fields_mut().clear());
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev)) => writer.apply_watcher_event(&ev),
                Some(Err(e)) => warn!(error = %e, "webhook: watching WorkspaceRequirements failed; retrying"),
                None => return Err("the WorkspaceRequirements watch ended"),
            },
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// The shipped MutatingWebhookConfiguration, parsed (for tests and tools).
pub fn webhook_configuration()
-> Result<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> {
    serde_yaml::from_str(WEBHOOK_CONFIGURATION_YAML)
        .map_err(|e| Error::Serialization(format!("deploy/webhook.yaml: {e}")))
}
