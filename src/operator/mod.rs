//! `bifrost-requirements operator`: wires the controller, leader election ([`leader`]), the
//! admission webhook and the HTTP endpoints under one [`Supervisor`] and one shutdown token.
//! Starts with nothing but a kubeconfig; a missing piece (API server not yet reachable, Lease
//! namespace not ready) is logged and retried, never fatal.

mod leader;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use kube::Client;
use kube::runtime::events::Reporter;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::controller;
use crate::error::{Error, Result};
use crate::lock::Resolver;
use crate::metrics::Metrics;
use crate::server::{self, Health};
use crate::shutdown::{self, Stop};
use crate::supervise::{Backoff, OnExit, Supervisor};
use crate::tls::CertResolver;
use crate::watch::{Resources, Scope};
use crate::webhook;

/// Everything the operator needs, built from the command line at the edge (`cli`).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Watch only this namespace (None: all namespaces).
    pub namespace: Option<String>,
    /// Plain-HTTP /metrics, /healthz and /readyz.
    pub metrics_addr: SocketAddr,
    /// This replica's name in the Lease and in Events.
    pub identity: String,
    /// `None`: leader election is off (exactly one replica must run).
    pub lease: Option<LeaseConfig>,
    /// `None`: the admission webhook is off.
    pub webhook: Option<webhook::Config>,
    /// How the controller resolves locks; `None`: it resolves nothing (pods do).
    pub resolver: Option<Resolver>,
    /// How long a replica told to stop keeps serving (not ready meanwhile), so that the API
    /// server stops calling its webhook endpoint before it goes.
    pub shutdown_delay: Duration,
}

/// The coordination.k8s.io/v1 Lease that elects the replica running the controller.
#[derive(Debug, Clone)]
pub(crate) struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// How long a Lease is valid without renewal.
    pub duration_seconds: u64,
}

/// A replica's identity when none is given: the hostname (the pod's name in a pod) and the
/// process id, unique even for two operators on one host.
pub(crate) fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "bifrost-requirements".into());
    format!("{host}-{}", std::process::id())
}

/// What every controller and webhook task is started with.
#[derive(Clone)]
struct Wiring {
    client: Client,
    scope: Scope,
    /// The one `WorkspaceRequirements` watch of this replica (webhook and controller share it).
    resources: Resources,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    resolver: Option<Resolver>,
}

impl Wiring {
    /// The shared `WorkspaceRequirements` watch as a supervised task of `tasks`; it runs on
    /// every replica, as the webhook does, and a restart resumes feeding the same store.
    fn spawn_resource_watch(&self, tasks: &Supervisor) -> JoinHandle<()> {
        let (w, stop) = (self.clone(), tasks.stop().receiver());
        let restart = OnExit::Restart(Backoff::default());
        tasks.spawn("resource-watch", restart, move || {
            let (w, stop) = (w.clone(), stop.clone());
            async move {
                let api = w.scope.api(&w.client);
                w.resources.feed(api, stop).await
            }
        })
    }

    /// The controller as a supervised task of `tasks` (ends with `tasks`' stop).
    fn spawn_controller(&self, tasks: &Supervisor) -> JoinHandle<()> {
        let (w, sub) = (self.clone(), tasks.clone());
        tasks.spawn(
            "controller",
            OnExit::Restart(Backoff::default()),
            move || {
                controller::run(
                    w.client.clone(),
                    w.scope.clone(),
                    w.resources.clone(),
                    w.metrics.clone(),
                    controller::Settings {
                        reporter: w.reporter.clone(),
                        resolver: w.resolver.clone(),
                    },
                    sub.clone(),
                    controller::reconcile,
                )
                .map(Ok::<(), Infallible>)
            },
        )
    }

    /// The admission webhook runs on every replica (the API server may call any of them); its
    /// certificate Secret converges through optimistic concurrency, so no leadership is needed.
    fn spawn_webhook(
        &self,
        config: webhook::Config,
        resolver: Arc<CertResolver>,
        tasks: &Supervisor,
    ) -> JoinHandle<()> {
        let (w, sub) = (self.clone(), tasks.clone());
        // Setting up (the TLS configuration) fails only on a bug; its parts are supervised.
        tasks.spawn("webhook", OnExit::Exit, move || {
            crate::webhook::run(
                w.client.clone(),
                config.clone(),
                w.resources.clone(),
                w.metrics.clone(),
                w.reporter.clone(),
                resolver.clone(),
                sub.clone(),
            )
        })
    }
}

/// Run until SIGTERM/SIGINT; `Ok(code)` is the exit code (non-zero when a task that cannot be
/// restarted died, see [`crate::supervise`]).
pub(crate) async fn run(config: Config) -> Result<u8> {
    let (root, signalled) = shutdown::on_signals();
    let stop = signalled.delayed(config.shutdown_delay);
    let metrics = Arc::new(Metrics::new());
    let tasks = Supervisor::new(metrics.task_restarts.clone(), root, stop.clone());
    let webhook_tls = config
        .webhook
        .as_ref()
        .map(|_| CertResolver::reporting_expiry(metrics.webhook_certificate_expiry.clone()));
    let health = Arc::new(Health {
        metrics: metrics.clone(),
        ready: false.into(),
        webhook_tls: webhook_tls.clone(),
        tasks: tasks.clone(),
    });
    let mut handles = vec![server::serve(config.metrics_addr, health.clone(), &tasks).await?];
    // Told to stop: not ready at once, serving until `stop` (shutdown_delay later).
    let (unready, told) = (health.clone(), signalled.stopped());
    tokio::spawn(async move {
        told.await;
        unready.ready.store(false, Ordering::Relaxed);
        info!("not ready; still serving until the shutdown delay has passed");
    });
    let Some(client) = connect(&stop).await? else {
        return finish(&tasks, handles).await;
    };
    health.ready.store(true, Ordering::Relaxed);

    let wiring = Wiring {
        client,
        scope: Scope {
            namespace: config.namespace.clone(),
        },
        resources: Resources::default(),
        metrics: metrics.clone(),
        reporter: Reporter {
            controller: "bifrost-requirements".into(),
            instance: Some(config.identity.clone()),
        },
        resolver: config.resolver.clone(),
    };
    handles.push(wiring.spawn_resource_watch(&tasks));
    match (config.webhook, webhook_tls) {
        (Some(webhook), Some(resolver)) => {
            handles.push(wiring.spawn_webhook(webhook, resolver, &tasks));
        }
        _ => warn!("admission webhook disabled (--no-webhook): labelled pods are not injected"),
    }
    match config.lease {
        None => {
            warn!("leader election disabled: run exactly one replica");
            metrics.leader.set(1);
            handles.push(wiring.spawn_controller(&tasks));
        }
        Some(lease) => {
            let (identity, sub) = (config.identity, tasks.clone());
            let restart = OnExit::Restart(Backoff::default());
            handles.push(tasks.spawn("lease", restart, move || {
                leader::lead(lease.clone(), identity.clone(), wiring.clone(), sub.clone())
            }));
        }
    }
    finish(&tasks, handles).await
}

/// A client for the kubeconfig, once the API server answers; `None` when stopped first. An
/// unreachable API server is retried, never fatal.
async fn connect(stop: &Stop) -> Result<Option<Client>> {
    let client = Client::try_default()
        .await
        .map_err(|e| Error::kube("loading the kubeconfig (in-cluster or KUBECONFIG)", e))?;
    loop {
        match client.apiserver_version().await {
            Ok(v) => {
                info!(version = %v.git_version, "connected to the Kubernetes API server");
                return Ok(Some(client));
            }
            Err(e) => {
                warn!(error = %e, "Kubernetes API server not reachable yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.stopped() => return Ok(None),
                }
            }
        }
    }
}

/// Wait for the stop signal and every task; the exit code says whether a fatal task ended it.
async fn finish(tasks: &Supervisor, handles: Vec<JoinHandle<()>>) -> Result<u8> {
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
