//! Helpers for tests that run the operator against the real control plane: the CRD, namespaces,
//! Secrets, the `operator` process itself, and polling.
//!
//! The operator as a host process serves the tests of one function of it on a control plane
//! without a node (no kubelet: pods never run, so nothing could run its image): its
//! reconcile, mirror, webhook answers, flags and metrics, with its log at hand. Everything that
//! runs pods runs the operator as users do, installed by the chart on the node
//! (`super::release`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::k8s_compat::Present;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::OnceCell;

use super::k8s::control_plane;
use super::proc::{free_port, spawn_guarded};

/// Apply the committed CRD (server-side apply) once per test binary and wait until Established.
pub async fn ensure_crd(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("crds/workspacerequirements.bifrost.io.yaml");
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        api.patch(
            "workspacerequirements.bifrost.io",
            &PatchParams::apply("bifrost-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the API server accepts the CRD (structural schema)");
        wait_crd_served(client).await;
    })
    .await;
}

/// Wait until the CRD is Established and its resources are served (discovery may lag).
pub async fn wait_crd_served(client: &Client) {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    wait_for("CRD Established", Duration::from_secs(30), || async {
        let crd = api
            .get_opt("workspacerequirements.bifrost.io")
            .await
            .ok()??;
        crd.status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
            .then_some(())
    })
    .await;
    let wsreq = Api::<WorkspaceRequirements>::all(client.clone());
    wait_for("CRD served", Duration::from_secs(30), || async {
        wsreq.list(&Default::default()).await.ok().map(|_| ())
    })
    .await;
}

/// Create a `WorkspaceRequirements` with this spec.
pub async fn create_wsreq(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> WorkspaceRequirements {
    let obj: WorkspaceRequirements = serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1",
        "kind": "WorkspaceRequirements",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    Api::<WorkspaceRequirements>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap()
}

/// A one-replica Deployment `name` whose pod template opts in to the resource `wsreq`.
pub async fn labelled_deployment(
    client: &Client,
    ns: &str,
    name: &str,
    wsreq: &str,
) -> k8s_openapi::api::apps::v1::Deployment {
    labelled_deployment_with(client, ns, name, wsreq, 1).await
}

/// [`labelled_deployment`] with `replicas` (0: rolled out as soon as its template carries the
/// hash, without a node to run pods).
pub async fn labelled_deployment_with(
    client: &Client,
    ns: &str,
    name: &str,
    wsreq: &str,
    replicas: i32,
) -> k8s_openapi::api::apps::v1::Deployment {
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "bifrost.io/requirements": wsreq}},
                "spec": {"containers": [{"name": "worker", "image": "python:3.11-slim"}]}
            }
        }
    }))
    .unwrap();
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap()
}

/// The `bifrost.io/requirements-hash` annotation of a Deployment's pod template.
pub fn template_hash(d: &k8s_openapi::api::apps::v1::Deployment) -> Option<String> {
    d.spec
        .present()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(bifrost_requirements::crd::HASH_ANNOTATION)
        .cloned()
}

/// A fresh namespace (and the shared client), with the CRD in place.
pub async fn namespace(prefix: &str) -> (Client, String) {
    let client = control_plane().client().await;
    ensure_crd(&client).await;
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    // Pods need the default ServiceAccount (and, on 1.20, its token) before admission accepts them.
    let sa = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &name);
    wait_for(
        "default ServiceAccount",
        Duration::from_secs(30),
        || async {
            let sa = sa.get_opt("default").await.ok()??;
            (!sa.secrets.unwrap_or_default().is_empty()).then_some(())
        },
    )
    .await;
    (client, name)
}

pub async fn secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": name},
        "stringData": {key: value},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("bifrost-tests").force(),
            &Patch::Apply(&s),
        )
        .await
        .unwrap();
}

/// Poll until `check` returns `Some`, or panic after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An `operator` process watching one namespace. Stopped (SIGTERM) on drop.
pub struct Operator {
    child: Option<Child>,
    pub metrics_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Start with leader election on a Lease in `ns`, identity `id`.
    pub fn start(ns: &str, id: &str, extra: &[&str]) -> Operator {
        Self::start_in(ns, id, extra, &[])
    }

    /// [`Operator::start`] with the extra environment `env` (e.g. a `PATH` on which the
    /// resolver finds the real uv rather than a shim).
    pub fn start_in(ns: &str, id: &str, extra: &[&str], env: &[(&str, &str)]) -> Operator {
        let metrics_port = free_port();
        let addr = format!("127.0.0.1:{metrics_port}");
        let mut args = vec![
            "operator",
            "--namespace",
            ns,
            "--metrics-addr",
            &addr,
            "--lease-namespace",
            ns,
            "--identity",
            id,
            "--lease-duration-seconds",
            "4",
        ];
        args.extend_from_slice(extra);
        // The flows tested elsewhere install as before the lock (each pod resolves); tests of the
        // lock give the resolver its index.
        if !extra.iter().any(|a| a.starts_with("--resolver")) {
            args.push("--no-resolver");
        }
        // Never the default 0.0.0.0:8443: tests run in parallel and must not assume a port.
        let webhook_addr = format!("127.0.0.1:{}", free_port());
        if !extra
            .iter()
            .any(|a| a.starts_with("--webhook-addr") || *a == "--no-webhook")
        {
            args.extend_from_slice(&["--webhook-addr", &webhook_addr]);
        }
        Self::start_with(id, &control_plane().kubeconfig, &args, env, metrics_port)
    }

    /// Start `bifrost-requirements ARGS` with `kubeconfig` (e.g. a ServiceAccount's token instead
    /// of the admin one) and the extra environment `env`; `metrics_port` is where `args`/`env`
    /// put /metrics (waited for). Logs at debug level in text unless `env` says otherwise.
    pub fn start_with(
        id: &str,
        kubeconfig: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
        metrics_port: u16,
    ) -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("operator-{id}.log"));
        let kubeconfig = kubeconfig.to_str().unwrap().to_string();
        // The resolver's cache goes with the operator's folder, not to the shared /tmp.
        let cache = dir.path().join("resolver-cache");
        let mut envs = vec![
            ("KUBECONFIG", kubeconfig.as_str()),
            ("RUST_LOG", "info,bifrost_requirements=debug"),
            ("BIFROST_LOG_FORMAT", "text"),
            ("BIFROST_RESOLVER_CACHE_DIR", cache.to_str().unwrap()),
        ];
        for (k, v) in env {
            envs.retain(|(name, _)| name != k);
            envs.push((k, v));
        }
        let child = spawn_guarded(super::bin(), args, &envs, &log);
        let op = Operator {
            child: Some(child),
            metrics_port,
            log,
            _dir: dir,
        };
        super::proc::wait_for_port(
            metrics_port,
            "operator metrics",
            &op.log,
            Duration::from_secs(30),
        );
        op
    }

    /// The operator process's own pid (the watchdog's child running the binary), e.g. to sample
    /// its memory in `/proc`.
    pub fn pid(&self) -> Option<u32> {
        let sh = self.child.as_ref()?.id();
        let children = std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).ok()?;
        children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
            .find(|c| {
                std::fs::read(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|cmd| cmd.split(|b| *b == 0).any(|a| a == b"operator"))
            })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path on the metrics port; returns (status code, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_port, path)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// SIGTERM and wait for exit; returns whether it exited by itself within 20 s.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- operator log ({}), last lines ----\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

/// Minimal HTTP/1.0 GET on loopback (no client library needed).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The resource as the API server has it now.
pub async fn get_wsreq(client: &Client, ns: &str, name: &str) -> WorkspaceRequirements {
    Api::<WorkspaceRequirements>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// (status, reason, message) of a condition.
pub fn condition(obj: &WorkspaceRequirements, type_: &str) -> Option<(String, String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// `spec.cache` naming Redis through the Secret `redis` (key `url`), as the tests create it.
pub fn redis_cache(key: &str) -> serde_json::Value {
    json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}, "key": key}})
}
