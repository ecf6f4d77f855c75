//! `bifrost-requirements operator`: wires the controller, leader election, HTTP endpoints and
//! signal handling. Starts with nothing but a kubeconfig; a missing piece (API server not yet
//! reachable, Lease namespace not ready) is logged and retried, never fatal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::OperatorArgs;
use crate::controller::{self, Scope};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::server::{self, Health};

/// Resolves when the shutdown flag is raised.
async fn until(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Raise the shutdown flag on SIGTERM or SIGINT.
fn watch_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot watch SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    let _ = tx.send(true);
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
        let _ = tx.send(true);
    });
    rx
}

fn identity(args: &OperatorArgs) -> String {
    args.identity
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "bifrost-requirements".into());
            format!("{host}-{}", std::process::id())
        })
}

pub async fn run(args: OperatorArgs) -> Result<()> {
    let shutdown = watch_signals();
    let metrics = Arc::new(Metrics::new());
    let webhook_config = crate::webhook::WebhookConfig::from_args(&args);
    let webhook_tls = webhook_config
        .as_ref()
        .map(|_| crate::webhook::tls::CertResolver::new());
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
        webhook_tls: webhook_tls.clone(),
    });
    let http = server::serve(args.metrics_addr, health.clone(), until(shutdown.clone())).await?;

    let client = Client::try_default()
        .await
        .map_err(|e| Error::kube("loading the kubeconfig (in-cluster or KUBECONFIG)", e))?;
    // Wait for the API server; never fatal.
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                info!(version = %v.git_version, "connected to the Kubernetes API server");
                break;
            }
            Err(e) => {
                warn!(error = %e, "Kubernetes API server not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = until(shutdown.clone()) => return Ok(()),
                }
            }
        }
    }
    health.ready.store(true, Ordering::Relaxed);

    let scope = Scope {
        namespace: args.namespace.clone(),
    };
    let id = identity(&args);
    let reporter = Reporter {
        controller: "bifrost-requirements".into(),
        instance: Some(id.clone()),
    };

    // The admission webhook runs on every replica (the API server may call any of them); its
    // certificate Secret converges through optimistic concurrency, so no leadership is needed.
    let webhook = match (webhook_config, webhook_tls) {
        (Some(config), Some(resolver)) => Some(tokio::spawn(crate::webhook::run(
            client.clone(),
            config,
            metrics.clone(),
            reporter.clone(),
            resolver,
            until(shutdown.clone()),
        ))),
        _ => {
            warn!("admission webhook disabled (--no-webhook): labelled pods are not injected");
            None
        }
    };

    if args.no_leader_election {
        warn!("leader election disabled: run exactly one replica");
        metrics.leader.set(1);
        controller::run(client, scope, metrics, reporter, until(shutdown.clone())).await;
    } else {
        lead(
            &args,
            client,
            scope,
            metrics,
            reporter,
            id,
            shutdown.clone(),
        )
        .await;
    }
    if let Some(webhook) = webhook {
        match webhook.await {
            Ok(Err(e)) => warn!(error = %e, "admission webhook failed"),
            Err(e) => warn!(error = %e, "admission webhook task panicked"),
            Ok(Ok(())) => {}
        }
    }
    let _ = http.await;
    info!("operator stopped");
    Ok(())
}

/// Run the controller only while holding the Lease; hand it over on shutdown.
async fn lead(
    args: &OperatorArgs,
    client: Client,
    scope: Scope,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    id: String,
    shutdown: watch::Receiver<bool>,
) {
    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let duration = args.lease_duration_seconds;
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &args.lease_name)
            .with_namespace(&lease_ns)
            .with_identity(&id)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager("bifrost-requirements-lease")
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                warn!(error = %e, lease = %args.lease_name, namespace = %lease_ns, "cannot set up the Lease; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = until(shutdown.clone()) => return,
                }
            }
        }
    };
    info!(identity = %id, lease = %args.lease_name, namespace = %lease_ns, "waiting for leadership");
    let (mut leader, lease_task) = manager.watch().await;
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() { break },
            _ = until(shutdown.clone()) => break,
        }
        info!(identity = %id, "became leader");
        metrics.leader.set(1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let handle = tokio::spawn(controller::run(
            client.clone(),
            scope.clone(),
            metrics.clone(),
            reporter.clone(),
            until(stop_rx),
        ));
        let lost = tokio::select! {
            _ = leader.wait_for(|l| !*l) => true,
            _ = until(shutdown.clone()) => false,
        };
        let _ = stop_tx.send(true);
        let _ = handle.await;
        metrics.leader.set(0);
        if lost {
            warn!(identity = %id, "lost leadership; controller stopped");
        } else {
            break;
        }
    }
    // Closing the channel stops the lease task; releasing lets a standby take over at once.
    drop(leader);
    match lease_task.await {
        Ok(Ok(manager)) => {
            if let Err(e) = manager.release().await {
                warn!(error = %e, "cannot release the Lease");
            } else {
                info!("Lease released");
            }
        }
        Ok(Err(e)) => warn!(error = %e, "lease manager failed"),
        Err(e) => warn!(error = %e, "lease task panicked"),
    }
}
