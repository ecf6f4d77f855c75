//! `bifrost-requirements operator`: wires the controller, leader election, HTTP endpoints and
//! signal handling. Starts with nothing but a kubeconfig; a missing piece (API server not yet
//! reachable, Lease namespace not ready) is logged and retried, never fatal.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;
use tracing::{error, info, warn};

use crate::cli::OperatorArgs;
use crate::controller::{self, Scope};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::server::{self, Health};
use crate::supervise::{self, Backoff, OnExit, Supervisor};

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

/// Run until SIGTERM/SIGINT; `Ok(code)` is the exit code (non-zero when a task that cannot be
/// restarted died, see [`crate::supervise`]).
pub async fn run(args: OperatorArgs) -> Result<u8> {
    let (root, stop) = supervise::on_signals();
    let metrics = Arc::new(Metrics::new());
    let tasks = Supervisor::new(metrics.task_restarts.clone(), root, stop.clone());
    let webhook_config = crate::webhook::WebhookConfig::from_args(&args);
    let webhook_tls = webhook_config
        .as_ref()
        .map(|_| crate::webhook::tls::CertResolver::new());
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
        webhook_tls: webhook_tls.clone(),
        tasks: tasks.clone(),
    });
    let http = server::serve(args.metrics_addr, health.clone(), &tasks).await?;

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
                    _ = stop.stopped() => return finish(&tasks, vec![http]).await,
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
    let mut handles = vec![http];

    // The admission webhook runs on every replica (the API server may call any of them); its
    // certificate Secret converges through optimistic concurrency, so no leadership is needed.
    match (webhook_config, webhook_tls) {
        (Some(config), Some(resolver)) => {
            let (client, metrics, reporter, sub) = (
                client.clone(),
                metrics.clone(),
                reporter.clone(),
                tasks.clone(),
            );
            // Setting up (the TLS configuration) fails only on a bug; its parts are supervised.
            handles.push(tasks.spawn("webhook", OnExit::Exit, move || {
                crate::webhook::run(
                    client.clone(),
                    config.clone(),
                    metrics.clone(),
                    reporter.clone(),
                    resolver.clone(),
                    sub.clone(),
                )
            }));
        }
        _ => warn!("admission webhook disabled (--no-webhook): labelled pods are not injected"),
    }

    let restart = OnExit::Restart(Backoff::default());
    if args.no_leader_election {
        warn!("leader election disabled: run exactly one replica");
        metrics.leader.set(1);
        let sub = tasks.clone();
        handles.push(tasks.spawn("controller", restart, move || {
            controller::run(
                client.clone(),
                scope.clone(),
                metrics.clone(),
                reporter.clone(),
                sub.clone(),
            )
            .map(Ok::<(), Infallible>)
        }));
    } else {
        let lease = Lease {
            name: args.lease_name.clone(),
            namespace: args
                .lease_namespace
                .clone()
                .or_else(|| args.namespace.clone())
                .unwrap_or_else(|| "default".into()),
            duration: args.lease_duration_seconds,
            id,
        };
        let sub = tasks.clone();
        handles.push(tasks.spawn("lease", restart, move || {
            lead(
                lease.clone(),
                client.clone(),
                scope.clone(),
                metrics.clone(),
                reporter.clone(),
                sub.clone(),
            )
        }));
    }
    finish(&tasks, handles).await
}

/// Wait for the stop signal and every task; the exit code says whether a fatal task ended it.
async fn finish(tasks: &Supervisor, handles: Vec<tokio::task::JoinHandle<()>>) -> Result<u8> {
    tasks.stop().stopped().await;
    for handle in handles {
        let _ = handle.await;
    }
    match tasks.fatal() {
        Some(why) => {
            error!("operator stopped: {why}");
            eprintln!("error: operator stopped: {why}");
            Ok(1)
        }
        None => {
            info!("operator stopped");
            Ok(0)
        }
    }
}

#[derive(Debug, Clone)]
struct Lease {
    name: String,
    namespace: String,
    duration: u64,
    id: String,
}

/// Run the controller only while holding the Lease; hand it over on shutdown. Returns an error
/// when the lease manager dies (the supervisor restarts this whole task).
async fn lead(
    lease: Lease,
    client: Client,
    scope: Scope,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    tasks: Supervisor,
) -> std::result::Result<(), String> {
    let Lease {
        name,
        namespace,
        duration,
        id,
    } = lease;
    let stop = tasks.stop().clone();
    let manager = loop {
        let built = LeaseManagerBuilder::new(client.clone(), &name)
            .with_namespace(&namespace)
            .with_identity(&id)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager("bifrost-requirements-lease")
            .build()
            .await;
        match built {
            Ok(m) => break m,
            Err(e) => {
                warn!(error = %e, lease = %name, %namespace, "cannot set up the Lease; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.stopped() => return Ok(()),
                }
            }
        }
    };
    info!(identity = %id, lease = %name, %namespace, "waiting for leadership");
    let (mut leader, lease_task) = manager.watch().await;
    let mut died = None;
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() {
                died = Some("the lease manager stopped watching the Lease".to_string());
                break;
            },
            _ = stop.stopped() => break,
        }
        info!(identity = %id, "became leader");
        metrics.leader.set(1);
        let (term, term_stop) = stop.child();
        let sub = tasks.scoped(term_stop);
        let (c, sc, m, r, s) = (
            client.clone(),
            scope.clone(),
            metrics.clone(),
            reporter.clone(),
            sub.clone(),
        );
        let handle = sub.spawn(
            "controller",
            OnExit::Restart(Backoff::default()),
            move || {
                controller::run(c.clone(), sc.clone(), m.clone(), r.clone(), s.clone())
                    .map(Ok::<(), Infallible>)
            },
        );
        let lost = tokio::select! {
            r = leader.wait_for(|l| !*l) => match r {
                Ok(_) => true,
                Err(_) => {
                    died = Some("the lease manager stopped watching the Lease".to_string());
                    false
                }
            },
            _ = stop.stopped() => false,
        };
        term.stop();
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
        Ok(Err(e)) => died = Some(format!("lease manager failed: {e}")),
        Err(e) => died = Some(format!("lease task panicked: {e}")),
    }
    match died {
        Some(why) if !stop.is_stopped() => Err(why),
        Some(why) => {
            warn!("{why}");
            Ok(())
        }
        None => Ok(()),
    }
}
