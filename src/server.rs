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
use crate::supervise::{OnExit, Supervisor};

/// Shared with the handlers.
pub(crate) struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the Kubernetes API answered and the components started.
    pub ready: AtomicBool,
    /// The webhook's certificate, when this replica serves the webhook: not ready until one is
    /// loaded, so the webhook Service only routes to replicas that can answer.
    pub webhook_tls: Option<Arc<crate::tls::CertResolver>>,
    /// Long-running tasks: `/healthz` fails while one of them is down, so the kubelet restarts a
    /// replica whose controller or webhook died instead of trusting a live HTTP listener.
    pub tasks: Supervisor,
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

async fn healthz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    let down = h.tasks.down();
    if down.is_empty() {
        return (StatusCode::OK, "ok".into());
    }
    let lines: Vec<String> = down
        .iter()
        .map(|(task, why)| format!("task {task} is down: {why}"))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, lines.join("\n"))
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

/// Bind now (so a taken port fails at start-up with a clear error) and serve until the
/// supervisor's stop signal. The server is a fatal task: if it dies nothing can report it (it
/// is the health endpoint), so the process exits non-zero instead.
pub(crate) async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    tasks: &Supervisor,
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
    let mut listener = Some(listener);
    let stop = tasks.stop().clone();
    Ok(tasks.spawn("metrics-server", OnExit::Exit, move || {
        let listener = listener.take();
        let (app, stop) = (app.clone(), stop.stopped());
        async move {
            let listener = listener.ok_or("cannot serve again: the listener was consumed")?;
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
                .map_err(|e| format!("serving {addr}: {e}"))
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls;

    fn tasks() -> Supervisor {
        let (root, stop) = crate::shutdown::stop_pair();
        Supervisor::new(Default::default(), Arc::new(root), stop)
    }

    /// On tokio's paused clock (the supervisor's backoff is tokio time): the sleeps below pass
    /// in virtual time, in order, however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn liveness_fails_while_a_task_is_down_and_names_it() {
        use crate::supervise::{Backoff, OnExit};
        let tasks = tasks();
        let health = Arc::new(Health {
            metrics: Arc::new(Metrics::new()),
            ready: true.into(),
            webhook_tls: None,
            tasks: tasks.clone(),
        });
        assert_eq!(healthz(State(health.clone())).await.0, StatusCode::OK);
        let backoff = Backoff {
            initial: std::time::Duration::from_millis(300),
            ..Backoff::default()
        };
        let mut first = true;
        tasks.spawn("webhook-cache", OnExit::Restart(backoff), move || {
            let fail = std::mem::replace(&mut first, false);
            async move {
                if fail {
                    panic!("watch stream exploded");
                }
                std::future::pending::<Result<()>>().await
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (code, body) = healthz(State(health.clone())).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            "task webhook-cache is down: panicked: watch stream exploded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(healthz(State(health)).await, (StatusCode::OK, "ok".into()));
    }

    #[tokio::test]
    async fn readiness_waits_for_the_api_and_the_webhook_certificate() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resolver = tls::CertResolver::new();
        let health = Arc::new(Health {
            metrics: Arc::new(Metrics::new()),
            ready: false.into(),
            webhook_tls: Some(resolver.clone()),
            tasks: tasks(),
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
