//! The operator as its users run it: `helm install` of the chart on the node (tests/common/node.rs),
//! from the operator image built for it (scripts/node-images.sh: the Dockerfile's final stage),
//! with the README's command plus `charts/bifrost-requirements/ci/node-values.yaml`.
//!
//! Each release lives in a namespace of its own (`<watched>-system`) and watches one namespace,
//! as the README's quick path installs it. Dropping it uninstalls it and deletes its namespace.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bifrost_requirements::k8s_compat::Present;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::node::node;
use super::operator::wait_for;

const READY: Duration = Duration::from_secs(180);

pub struct Release {
    /// The Helm release; also the chart's fullname (it contains no chart name: `-bifrost-requirements`
    /// is appended).
    pub name: String,
    /// Where the operator's pods run.
    pub namespace: String,
    /// The one namespace it watches (`watchNamespace`).
    pub watch: String,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    manifest_dir().join("charts/bifrost-requirements")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `helm ARGS` against the node's cluster.
pub fn helm(args: &[&str]) -> Output {
    Command::new("helm")
        .arg("--kubeconfig")
        .arg(&node().cp.kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run helm")
}

impl Release {
    /// `helm install` watching `watch` (which must exist), with `sets` (`key=value`, passed with
    /// `--set-string` when the key ends in `!`), then wait until the operator is Ready and has
    /// put its CA into the webhook configuration.
    pub async fn install(client: &Client, watch: &str, sets: &[&str]) -> Release {
        let r = Release {
            name: format!("{watch}-op"),
            namespace: format!("{watch}-system"),
            watch: watch.to_string(),
        };
        let values = chart().join("ci/node-values.yaml");
        let watch_set = format!("watchNamespace={watch}");
        let install = [
            "--create-namespace",
            "--set",
            &watch_set,
            "-f",
            values.to_str().unwrap(),
        ];
        r.helm("install", &install, sets);
        r.ready(client).await;
        r
    }

    /// The chart's fullname: the Deployment, Services, webhook configuration and Lease are named
    /// after it.
    pub fn fullname(&self) -> String {
        format!("{}-bifrost-requirements", self.name)
    }

    /// `helm upgrade --reuse-values` with `sets`; waits until the new pods are Ready.
    pub async fn upgrade(&self, client: &Client, sets: &[&str]) {
        self.helm("upgrade", &["--reuse-values"], sets);
        self.ready(client).await;
    }

    /// `helm VERB` of this release and the chart, with `extra` arguments and `sets` as flags
    /// ([`set_flag`]); panics with Helm's output unless it succeeded.
    fn helm(&self, verb: &str, extra: &[&str], sets: &[&str]) {
        let chart = chart();
        let mut args = vec![
            verb,
            &self.name,
            chart.to_str().unwrap(),
            "--namespace",
            &self.namespace,
        ];
        args.extend_from_slice(extra);
        let flags: Vec<(String, String)> = sets.iter().map(|s| set_flag(s)).collect();
        for (flag, value) in &flags {
            args.push(flag);
            args.push(value);
        }
        let out = helm(&args);
        assert!(out.status.success(), "helm {verb}: {}", text(&out));
    }

    fn deployments(&self, client: &Client) -> Api<Deployment> {
        Api::namespaced(client.clone(), &self.namespace)
    }

    /// The operator's pods (Running or not).
    pub async fn pods(&self, client: &Client) -> Vec<Pod> {
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/component=operator",
            self.name
        ));
        Api::<Pod>::namespaced(client.clone(), &self.namespace)
            .list(&lp)
            .await
            .expect("list operator pods")
            .items
    }

    /// Until every wanted replica of the current template is ready and the caBundle is in.
    pub async fn ready(&self, client: &Client) {
        let deployments = self.deployments(client);
        let name = self.fullname();
        wait_for("the operator's Deployment ready", READY, || async {
            let d = deployments.get(&name).await.ok()?;
            let want = d.spec.present()?.replicas.unwrap_or(1);
            let s = d.status?;
            let generation = d.metadata.generation?;
            (s.observed_generation == Some(generation)
                && s.updated_replicas.unwrap_or(0) == want
                && s.ready_replicas.unwrap_or(0) == want
                && s.replicas.unwrap_or(0) == want)
                .then_some(())
        })
        .await;
        if want_replicas(&deployments, &name).await > 0 {
            let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
            wait_for("caBundle patched by the operator", READY, || async {
                let c = configs.get(&name).await.ok()?;
                let b = c.webhooks?.first()?.client_config.ca_bundle.clone()?;
                (!b.0.is_empty()).then_some(())
            })
            .await;
        }
    }

    /// Scale the operator to `replicas` and wait until exactly that many pods remain, Ready.
    pub async fn scale(&self, client: &Client, replicas: i32) {
        let out = node().kubectl(&[
            "scale",
            "-n",
            &self.namespace,
            &format!("deployment/{}", self.fullname()),
            &format!("--replicas={replicas}"),
        ]);
        assert!(out.status.success(), "kubectl scale: {}", text(&out));
        self.ready(client).await;
        wait_for("no operator pod beyond the wanted ones", READY, || async {
            (self.pods(client).await.len() == replicas as usize).then_some(())
        })
        .await;
    }

    /// The name of the pod holding the leader Lease.
    pub async fn leader(&self, client: &Client) -> String {
        let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
            client.clone(),
            &self.namespace,
        );
        let name = format!("{}-operator", self.fullname());
        wait_for("a leader", READY, || async {
            leases.get(&name).await.ok()?.spec?.holder_identity
        })
        .await
    }

    /// The logs of every operator pod (current runs).
    pub async fn logs(&self, client: &Client) -> String {
        let mut all = String::new();
        for p in self.pods(client).await {
            let out = node().kubectl(&["logs", "-n", &self.namespace, &p.name_any()]);
            all.push_str(&format!("--- {} ---\n{}", p.name_any(), text(&out)));
        }
        all
    }
}

async fn want_replicas(deployments: &Api<Deployment>, name: &str) -> i32 {
    deployments
        .get(name)
        .await
        .ok()
        .and_then(|d| d.spec.present()?.replicas)
        .unwrap_or(1)
}

/// `key=value` → `--set`, `key!=value` → `--set-string` (URLs and numbers kept as text).
fn set_flag(s: &str) -> (String, String) {
    match s.split_once("!=") {
        Some((k, v)) => ("--set-string".into(), format!("{k}={v}")),
        None => ("--set".into(), s.to_string()),
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&["uninstall", &self.name, "--namespace", &self.namespace]);
        let _ = node().kubectl(&["delete", "namespace", &self.namespace, "--wait=false"]);
    }
}
