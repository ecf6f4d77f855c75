//! Leader election: the controller runs only on the replica holding the Lease, and a stopping
//! leader releases it so a standby takes over at once instead of after the Lease expires.

use std::time::Duration;

use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::{LeaseConfig, Wiring};
use crate::shutdown::Stop;
use crate::supervise::Supervisor;

const MANAGER_GONE: &str = "the lease manager stopped watching the Lease";

/// Run the controller only while holding the Lease; hand it over on shutdown. Returns an error
/// when the lease manager dies (the supervisor restarts this whole task).
pub(super) async fn lead(
    lease: LeaseConfig,
    identity: String,
    wiring: Wiring,
    tasks: Supervisor,
) -> std::result::Result<(), String> {
    let stop = tasks.stop().clone();
    let Some(manager) = manager(&lease, &identity, &wiring, &stop).await else {
        return Ok(());
    };
    info!(identity = %identity, lease = %lease.name, namespace = %lease.namespace,
          "waiting for leadership");
    let (mut leader, lease_task) = manager.watch().await;
    let mut died = None;
    loop {
        tokio::select! {
            r = leader.wait_for(|l| *l) => if r.is_err() {
                died = Some(MANAGER_GONE.to_string());
                break;
            },
            _ = stop.stopped() => break,
        }
        info!(identity = %identity, "became leader");
        match term(&mut leader, &wiring, &tasks).await {
            Term::Lost => warn!(identity = %identity, "lost leadership; controller stopped"),
            Term::Stopped => break,
            Term::ManagerGone => {
                died = Some(MANAGER_GONE.to_string());
                break;
            }
        }
    }
    // Closing the channel stops the lease task; releasing lets a standby take over at once.
    drop(leader);
    if let Some(why) = release(lease_task).await {
        died = Some(why);
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

/// The lease manager, retried until it can be set up; `None` when stopped first.
async fn manager(
    lease: &LeaseConfig,
    identity: &str,
    wiring: &Wiring,
    stop: &Stop,
) -> Option<LeaseManager> {
    let duration = lease.duration_seconds;
    loop {
        let built = LeaseManagerBuilder::new(wiring.client.clone(), &lease.name)
            .with_namespace(&lease.namespace)
            .with_identity(identity)
            .with_duration(duration)
            .with_grace((duration / 3).max(1))
            .with_field_manager("bifrost-requirements-lease")
            .build()
            .await;
        match built {
            Ok(m) => return Some(m),
            Err(e) => {
                warn!(error = %e, lease = %lease.name, namespace = %lease.namespace,
                      "cannot set up the Lease; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = stop.stopped() => return None,
                }
            }
        }
    }
}

/// How a term as leader ended.
enum Term {
    Lost,
    Stopped,
    ManagerGone,
}

/// One term as leader: the controller runs under a stop of its own, ended by the loss of the
/// Lease or by the process' stop, and is awaited before the next term can start.
async fn term(leader: &mut watch::Receiver<bool>, wiring: &Wiring, tasks: &Supervisor) -> Term {
    let stop = tasks.stop();
    wiring.metrics.leader.set(1);
    let (term, term_stop) = stop.child();
    let handle = wiring.spawn_controller(&tasks.scoped(term_stop));
    let end = tokio::select! {
        r = leader.wait_for(|l| !*l) => if r.is_ok() { Term::Lost } else { Term::ManagerGone },
        _ = stop.stopped() => Term::Stopped,
    };
    term.stop();
    let _ = handle.await;
    wiring.metrics.leader.set(0);
    end
}

/// Release the Lease once the lease task has ended; the reason when it died instead.
async fn release(
    lease_task: JoinHandle<kube_lease_manager::Result<LeaseManager>>,
) -> Option<String> {
    match lease_task.await {
        Ok(Ok(manager)) => {
            match manager.release().await {
                Err(e) => warn!(error = %e, "cannot release the Lease"),
                Ok(()) => info!("Lease released"),
            }
            None
        }
        Ok(Err(e)) => Some(format!("lease manager failed: {e}")),
        Err(e) => Some(format!("lease task panicked: {e}")),
    }
}
