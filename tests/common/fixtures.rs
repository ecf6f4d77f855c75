//! Small helpers several test files share: a workload's pods, a namespace's Events.

use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams};

use super::operator::wait_for;

const T: Duration = Duration::from_secs(60);

/// Wait until `app`'s pods (label `app=<app>`) number at least `n`; returns them.
pub async fn pods_of(client: &Client, ns: &str, app: &str, n: usize) -> Vec<Pod> {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    wait_for(&format!("{n} pod(s) of {app}"), T, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await
            .ok()?;
        (list.items.len() >= n).then_some(list.items)
    })
    .await
}

/// The Events of a namespace (both APIs' views, as JSON text).
pub fn events(ns: &str) -> String {
    super::stdout(&super::k8s::control_plane().kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        ns,
        "-o",
        "json",
    ]))
}

/// `uninjectedPods` the controller reports for `workload` of `resource`.
pub async fn uninjected(client: &Client, ns: &str, resource: &str, workload: &str) -> Option<i32> {
    let r = Api::<WorkspaceRequirements>::namespaced(client.clone(), ns)
        .get(resource)
        .await
        .ok()?;
    r.status?
        .workloads
        .iter()
        .find(|w| w.name == workload)?
        .uninjected_pods
}
