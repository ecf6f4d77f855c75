//! TLS of the admission server: a certificate resolver that swaps certificates without a restart,
//! and the two ways certificates arrive.
//!
//! **Self-managed** (default). Every replica runs [`SelfManaged::run`]; they converge on one
//! Secret through optimistic concurrency (create-if-absent, update with `resourceVersion`), so no
//! leadership is needed and a replica serves as soon as the Secret exists. The Secret
//! (`kubernetes.io/tls`) holds the serving certificate (`tls.crt`, `tls.key`), the CA that signed
//! it (`ca.crt`; its private key is discarded after signing) and `ca-bundle.crt`, the CAs the
//! API server must trust, which is patched into every webhook of the
//! MutatingWebhookConfiguration as `caBundle`. Rotation happens in two steps so that no request
//! ever meets a certificate the API server does not trust yet:
//! 1. **stage** (a third of the validity before expiry, or when the DNS names changed): a new CA
//!    and serving certificate are stored under `next-*`, the new CA is added to the bundle and
//!    the bundle is patched into the webhook configuration; everyone keeps serving the current
//!    certificate;
//! 2. **promote** (after a short grace, once the webhook configuration's `caBundle` holds the new
//!    CA): `next-*` becomes current. Each replica picks it up on its next check and swaps it in
//!    (new connections get it; nothing restarts). The old CA stays in the bundle until it
//!    expires, so replicas still serving the old certificate stay trusted meanwhile.
//!
//! **cert-manager**: the chart asks cert-manager for the certificate and for CA injection
//! (`cert-manager.io/inject-ca-from`); [`watch_files`] serves the mounted files and swaps them in
//! when the kubelet updates the Secret volume.
//!
//! The parts: [`resolver`] (what the server presents), [`issue`] (making and reading
//! certificates), [`rotation`] (the pure state machine), [`self_managed`] (the Secret and the
//! webhook configuration), [`files`] (mounted files).

pub(crate) mod files;
pub mod issue;
pub(crate) mod resolver;
mod rotation;
mod self_managed;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::info;

pub(crate) use files::watch_files;
pub use issue::{Issued, inspect, issue};
pub use resolver::{CertResolver, certified_key, server_config};
pub use rotation::{CertSpec, Step, Stored, step};
pub(crate) use self_managed::SelfManaged;

/// Where the admission webhook's serving certificate comes from (the `--tls-mode` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// The operator issues a CA and certificate, keeps them in a Secret, patches `caBundle` into
    /// the MutatingWebhookConfiguration and rotates them before expiry.
    SelfManaged,
    /// Serve the mounted certificate files (issued by cert-manager, which also injects the CA);
    /// they are reloaded when they change.
    CertManager,
}

/// How the serving certificate is obtained and kept current.
#[derive(Debug, Clone)]
pub(crate) enum Config {
    SelfManaged(SelfManaged),
    /// cert-manager (or any mounted certificate): files reloaded when they change.
    Files(Files),
}

/// Mounted certificate files and how often to look at them.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub interval: Duration,
}

/// The names a certificate for the Service `service` in `namespace` must cover (the forms the
/// API server may use to reach it), then `extra` (blank and repeated entries skipped).
pub(crate) fn service_names(service: &str, namespace: &str, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ];
    for extra in extra.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    names
}

impl Config {
    /// Keep `resolver` serving a current certificate until `shutdown`; never fails (problems are
    /// logged and retried, the previous certificate keeps serving).
    pub(crate) async fn run(
        self,
        client: Client,
        resolver: Arc<CertResolver>,
        shutdown: watch::Receiver<bool>,
    ) {
        match self {
            Config::SelfManaged(sm) => {
                info!(secret = %sm.secret_name, namespace = %sm.namespace, names = ?sm.cert.names,
                      webhook_config = %sm.webhook_config, "webhook TLS: self-managed");
                sm.run(client, resolver, shutdown).await
            }
            Config::Files(f) => {
                info!(cert = %f.cert.display(), key = %f.key.display(), "webhook TLS: mounted files (cert-manager)");
                watch_files(f.cert, f.key, f.interval, resolver, shutdown).await
            }
        }
    }
}
