//! The operator's plain-HTTP endpoints: `/metrics` (Prometheus), `/healthz`, `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Shared with the handlers.
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the Kubernetes API answered and the components started.
    pub ready: AtomicBool,
    /// The webhook's certificate, when this replica serves the webhook: not ready until one is
    /// loaded, so the webhook Service only routes to replicas that can answer.
    pub webhook_tls: Option<Arc<crate::webhook::tls::CertResolver>>,
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if !h.ready.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if h.webhook_tls.as_ref().is_some_and(|r| !r.is_loaded()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the webhook certificate",
        )
    } else {
        (StatusCode::OK, "ready")
    }
}

/// Bind now (so a taken port fails at start-up with a clear error) and serve until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr} for metrics/health: {e}")))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::tls;

    #[tokio::test]
    async fn readiness_waits_for_the_api_and_the_webhook_certificate() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = tls::CertResolver::new();
        let health = Arc::new(Health {
            metrics: Arc::new(Metrics::new()),
            ready: false.into(),
            webhook_tls: Some(resolver.clone()),
        });
        assert_eq!(
            readyz(State(health.clone())).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.ready.store(true, Ordering::Relaxed);
        let (code, why) = readyz(State(health.clone())).await;
        assert_eq!(
            (code, why),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "waiting for the webhook certificate"
            )
        );
        let issued = tls::issue(
            &["localhost".to_string()],
            std::time::Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        resolver
            .set_pem(issued.cert.as_bytes(), issued.key.as_bytes())
            .unwrap();
        assert_eq!(readyz(State(health)).await, (StatusCode::OK, "ready"));
    }
}
