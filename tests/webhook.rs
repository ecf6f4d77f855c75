//! The admission webhook on a real control plane (etcd + kube-apiserver + kube-controller-manager
//! 1.20.2), with real Redis, python3 and uv.
//!
//! Each test runs its own `operator` process (webhook on a free loopback port, watching only the
//! test's namespace) and registers its own MutatingWebhookConfiguration — the shipped
//! `deploy/webhook.yaml` with `clientConfig.url: https://127.0.0.1:<port>/mutate` and a
//! namespaceSelector narrowed to the test's namespace — whose `caBundle` the operator fills in.
//! There is no kubelet: the end-to-end test plays its part and runs the injected init containers'
//! commands on this machine.

#[path = "webhook/cases.rs"]
mod cases;
#[path = "webhook/certificates.rs"]
mod certificates;
mod common;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bifrost_requirements::crd::{INJECTED_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements};
use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::webhook::inject::{
    BIN_VOLUME, BOOTSTRAP_CONTAINER, INSTALL_CONTAINER, OPERATOR_BINARY, SITE_PACKAGES_VOLUME,
    SNAPSHOT_VOLUME, WORK_VOLUME,
};
use common::admission::{Webhook, ca_bundle, webhook_namespace};
use common::fixtures::{pods_of, uninjected};
use common::objects::{init_names, stdout_of};
use common::operator::{Operator, get_wsreq, secret, wait_for};
use common::proc::{free_port, spawn_guarded_in, wait_for_port};
use common::services::{fresh_key, redis_url};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const MOUNT: &str = "/opt/bifrost/site-packages";
const CONTENT: &str = "bifrost-extra==2.0\nbifrost-hello==1.0\n";

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A PEP 503 "simple" index of wheels built here (python3 -m http.server's folder listings are
/// valid index pages): what an administrator would point `spec.install.indexUrls` at.
fn package_index() -> &'static str {
    // The server process is kept here; its watchdog stops it when the test binary exits.
    static INDEX: OnceLock<(String, std::sync::Mutex<std::process::Child>)> = OnceLock::new();
    &INDEX.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("bifrost-index-")
            .tempdir()
            .unwrap()
            .keep();
        let script = r#"
import sys, zipfile, hashlib, base64, os
def wheel(out, name, version, files, requires=()):
    dist = name.replace('-', '_')
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    entries = dict(files)
    entries[f"{info}/METADATA"] = meta
    entries[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: bifrost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in entries.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    entries[f"{info}/RECORD"] = "\n".join(record) + "\n"
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    with zipfile.ZipFile(os.path.join(d, f"{dist}-{version}-py3-none-any.whl"), "w") as z:
        for path, text in entries.items():
            z.writestr(path, text)
out = sys.argv[1]
wheel(out, "bifrost-hello", "1.0", {"bifrost_hello/__init__.py": "GREETING = 'hello from bifrost-hello'\n"})
wheel(out, "bifrost-extra", "2.0",
      {"bifrost_extra/__init__.py": "from bifrost_hello import GREETING\nVALUE = GREETING + ' and bifrost-extra'\n"},
      ["bifrost-hello"])
"#;
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(&dir)
            .output()
            .expect("python3");
        assert!(out.status.success(), "building wheels: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let port_s = port.to_string();
        let log = dir.join("http.log");
        // The watchdog removes the folder once the test binary is gone (statics never drop).
        let server = spawn_guarded_in(
            "python3",
            &["-m", "http.server", "--bind", "127.0.0.1", &port_s, "--directory", dir.to_str().unwrap()],
            &[],
            &log,
            Some(&dir),
        );
        wait_for_port(port, "package index", &log, Duration::from_secs(30));
        (
            format!("http://127.0.0.1:{port}/"),
            std::sync::Mutex::new(server),
        )
    })
    .0
}

fn pod_json(name: &str, label: Option<&str>, containers: Value) -> Pod {
    let mut labels = json!({"app": name});
    if let Some(l) = label {
        labels[OPT_IN_LABEL] = json!(l);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": containers}
    }))
    .unwrap()
}

fn worker_container() -> Value {
    json!([{"name": "worker", "image": "python:3.11-slim", "env": [{"name": "PYTHONPATH", "value": "/app"}]}])
}

/// Wait until the API server calls the webhook and gets an injection back (a dry-run pod
/// labelled for `resource`): the configuration is picked up, the CA trusted, the cache filled.
async fn wait_until_injecting(client: &Client, ns: &str, resource: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_for("the API server to call the webhook", T, || async {
        let p = pods
            .create(
                &dry,
                &pod_json("canary", Some(resource), worker_container()),
            )
            .await
            .ok()?;
        annotation(&p).map(|_| ())
    })
    .await;
}

fn annotation(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()?
        .get(INJECTED_ANNOTATION)
        .cloned()
}

fn env_value(c: &Container, name: &str) -> Option<String> {
    c.env
        .as_ref()?
        .iter()
        .rev()
        .find(|e| e.name == name)?
        .value
        .clone()
}

fn container<'a>(p: &'a Pod, name: &str) -> &'a Container {
    let spec = p.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no container {name} in {}",
                serde_json::to_string_pretty(p).unwrap()
            )
        })
}

async fn create_wsreq(client: &Client, ns: &str, name: &str, spec: Value) {
    let obj: WorkspaceRequirements = serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap();
    Api::<WorkspaceRequirements>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

async fn deployment(client: &Client, ns: &str, name: &str, replicas: i32, resource: &str) {
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, OPT_IN_LABEL: resource}},
                "spec": {"containers": worker_container()}
            }
        }
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Playing the kubelet.

/// Runs a pod's containers on this machine: every volume is a folder, ConfigMap volumes hold the
/// ConfigMap's keys, and paths under a container's mounts are mapped to those folders.
struct Kubelet {
    _root: tempfile::TempDir,
    volumes: HashMap<String, PathBuf>,
    /// The operator image's filesystem: /usr/local/bin/{bifrost-requirements,uv}.
    image_root: PathBuf,
}

impl Kubelet {
    async fn new(client: &Client, ns: &str, pod: &Pod) -> Kubelet {
        let root = tempfile::tempdir().unwrap();
        let mut volumes = HashMap::new();
        for v in pod.spec.as_ref().unwrap().volumes.iter().flatten() {
            let dir = root.path().join("volumes").join(&v.name);
            std::fs::create_dir_all(&dir).unwrap();
            if let Some(cm) = &v.config_map {
                let found = Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .get_opt(&cm.name)
                    .await
                    .unwrap();
                match found {
                    Some(found) => {
                        for (k, val) in found.data.unwrap_or_default() {
                            std::fs::write(dir.join(k), val).unwrap();
                        }
                    }
                    None => assert_eq!(
                        cm.optional,
                        Some(true),
                        "a missing ConfigMap must be optional"
                    ),
                }
            }
            volumes.insert(v.name.clone(), dir);
        }
        // The operator image: the binary at /usr/local/bin with uv next to it.
        let image_root = root.path().join("operator-image");
        let bin_dir = image_root.join("usr/local/bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let me = bin_dir.join("bifrost-requirements");
        if std::fs::hard_link(common::bin(), &me).is_err() {
            std::fs::copy(common::bin(), &me).unwrap();
        }
        std::fs::copy(common::index::real_uv(), bin_dir.join("uv")).unwrap();
        Kubelet {
            _root: root,
            volumes,
            image_root,
        }
    }

    /// A path as the container sees it → the folder on this machine.
    fn host_path(&self, c: &Container, path: &str) -> String {
        let mut mounts: Vec<_> = c.volume_mounts.iter().flatten().collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.mount_path.len()));
        for m in mounts {
            let mp = m.mount_path.trim_end_matches('/');
            if path == mp || path.starts_with(&format!("{mp}/")) {
                let host = &self.volumes[&m.name];
                return format!("{}{}", host.display(), &path[mp.len()..]);
            }
        }
        path.to_string()
    }

    /// Map every path-looking part of a value (PYTHONPATH is `:`-separated).
    fn map_value(&self, c: &Container, v: &str) -> String {
        v.split(':')
            .map(|p| self.host_path(c, p))
            .collect::<Vec<_>>()
            .join(":")
    }

    async fn env(&self, client: &Client, ns: &str, c: &Container) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                out.push((e.name.clone(), self.map_value(c, v)));
            } else if let Some(sel) = e
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref())
            {
                let s = Api::<Secret>::namespaced(client.clone(), ns)
                    .get_opt(&sel.name)
                    .await
                    .unwrap();
                let v = s
                    .and_then(|s| s.data)
                    .and_then(|d| d.get(&sel.key).cloned());
                match v {
                    Some(v) => out.push((e.name.clone(), String::from_utf8(v.0).unwrap())),
                    None => assert_eq!(
                        sel.optional,
                        Some(true),
                        "{} is required but missing",
                        e.name
                    ),
                }
            } else {
                panic!("env {} has an unsupported source", e.name);
            }
        }
        out
    }

    /// Run a container's command and args (`program` replaces command[0] when it lives in the
    /// container's image rather than in a volume). The environment is the container's only,
    /// plus this machine's PATH (the worker image is this machine).
    async fn run(&self, client: &Client, ns: &str, c: &Container) -> Output {
        self.run_with(client, ns, c, &[]).await
    }

    /// [`Kubelet::run`] with some environment variables replaced (the node's view differs).
    async fn run_with(
        &self,
        client: &Client,
        ns: &str,
        c: &Container,
        overrides: &[(&str, &str)],
    ) -> Output {
        let command = c.command.as_ref().expect("explicit command");
        let program = if command[0] == OPERATOR_BINARY {
            self.image_root
                .join(OPERATOR_BINARY.trim_start_matches('/'))
                .display()
                .to_string()
        } else {
            self.host_path(c, &command[0])
        };
        let args: Vec<String> = command[1..]
            .iter()
            .chain(c.args.iter().flatten())
            .map(|a| match a.split_once('=') {
                // `--flag=value`: the value may be a path.
                Some((flag, value)) if flag.starts_with("--") => {
                    format!("{flag}={}", self.host_path(c, value))
                }
                _ => self.host_path(c, a),
            })
            .collect();
        let mut cmd = Command::new(&program);
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(self.env(client, ns, c).await)
            .envs(overrides.iter().copied())
            .stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        eprintln!(
            "kubelet: {} ({program} {}) exited {:?}\n{}",
            c.name,
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The main job: a labelled Deployment's pods are injected, and running the injected init
/// containers (as the kubelet would) installs the packages from Redis so that the worker's
/// Python imports them.
#[tokio::test]
async fn labelled_deployment_pods_are_injected_and_their_install_works() {
    let (client, ns) = webhook_namespace("wh-e2e").await;
    let redis = redis_url();
    let key = fresh_key();
    secret(&client, &ns, "bifrost-redis", "url", &redis).await;
    let index = package_index();
    let spec = json!({
        "content": CONTENT,
        "cache": {"redis": {"urlSecretRef": {"name": "bifrost-redis", "key": "url"}, "key": key}},
        // The PYTHONPATH route end to end; UserBase (the default) is proven by
        // inject's unit tests and tests/installer.rs.
        "install": {"indexUrls": [index], "sizeLimit": "1Gi", "mode": "PythonPath"},
    });
    create_wsreq(&client, &ns, "default", spec).await;
    let wh = Webhook::start(&client, &ns).await;
    wait_until_injecting(&client, &ns, "default").await;

    deployment(&client, &ns, "worker", 2, "default").await;
    let pods = pods_of(&client, &ns, "worker", 2).await;
    let hash = content_hash(CONTENT);
    for p in &pods {
        assert_injected(p, &hash);
    }

    // The controller warmed Redis and wrote the snapshot the install container falls back to.
    wait_for("Redis warmed by the controller", T, || async {
        common::services::redis_get(&redis, &key).await
    })
    .await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    wait_for("ConfigMap snapshot", T, || async {
        cms.get_opt("default-requirements").await.ok()?
    })
    .await;

    kubelet_installs_and_the_worker_imports(&client, &ns, &pods[0], &hash).await;
    without_redis_the_snapshot_serves(&client, &ns, &pods[1]).await;

    // The controller sees both pods injected, and says in which mode (from their annotation).
    wait_for("uninjectedPods = 0", T, || async {
        (uninjected(&client, &ns, "default", "worker").await == Some(0)).then_some(())
    })
    .await;
    let status = get_wsreq(&client, &ns, "default").await.status.unwrap();
    let worker = status
        .workloads
        .iter()
        .find(|w| w.name == "worker")
        .unwrap();
    assert_eq!(worker.mode.as_deref(), Some("PythonPath"), "{worker:?}");
    drop(wh);
}

/// What the webhook put into a labelled pod: the annotation, the init containers and their
/// security settings, the volumes, the worker's PYTHONPATH and mount.
fn assert_injected(p: &Pod, hash: &str) {
    assert_eq!(annotation(p).as_deref(), Some(hash), "{}", p.name_any());
    assert_eq!(init_names(p), [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]);
    let vols: Vec<_> = p
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .collect();
    for v in [
        BIN_VOLUME,
        SITE_PACKAGES_VOLUME,
        SNAPSHOT_VOLUME,
        WORK_VOLUME,
    ] {
        assert!(vols.iter().any(|x| x == v), "volume {v} missing: {vols:?}");
    }
    let worker = container(p, "worker");
    assert_eq!(
        env_value(worker, "PYTHONPATH").as_deref(),
        Some(&*format!("{MOUNT}:/app"))
    );
    assert!(
        worker
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == SITE_PACKAGES_VOLUME && m.mount_path == MOUNT),
        "site-packages mount"
    );
    for name in [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER] {
        let c = container(p, name);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{name}");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let r = c.resources.as_ref().unwrap();
        assert!(
            r.requests.is_some() && r.limits.is_some(),
            "{name} resources"
        );
    }
    assert_eq!(
        container(p, BOOTSTRAP_CONTAINER).image.as_deref(),
        Some("registry.example/bifrost-requirements:test")
    );
    assert_eq!(
        container(p, INSTALL_CONTAINER).image.as_deref(),
        Some("python:3.11-slim")
    );
}

/// Play the kubelet: bootstrap, then install, then the worker's Python; a restarted init
/// container then finds its work done.
async fn kubelet_installs_and_the_worker_imports(client: &Client, ns: &str, pod: &Pod, hash: &str) {
    let kubelet = Kubelet::new(client, ns, pod).await;
    let out = kubelet
        .run(client, ns, container(pod, BOOTSTRAP_CONTAINER))
        .await;
    assert!(out.status.success(), "bootstrap failed");
    for f in ["bifrost-requirements", "uv"] {
        assert!(kubelet.volumes[BIN_VOLUME].join(f).is_file(), "{f} copied");
    }
    let install = container(pod, INSTALL_CONTAINER);
    let out = kubelet.run(client, ns, install).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "install failed:\n{stderr}");
    assert!(stderr.contains("Redis"), "installed from Redis:\n{stderr}");
    let site = &kubelet.volumes[SITE_PACKAGES_VOLUME];
    let marker = std::fs::read_to_string(site.join(".bifrost-requirements.json")).expect("marker");
    assert!(marker.contains(hash), "{marker}");

    let worker = container(pod, "worker");
    let python_path = kubelet.map_value(worker, &env_value(worker, "PYTHONPATH").unwrap());
    let out = Command::new("python3")
        .args(["-c", "import bifrost_extra; print(bifrost_extra.VALUE)"])
        .env("PYTHONPATH", &python_path)
        .output()
        .unwrap();
    assert_eq!(
        stdout_of(&out, "import").trim(),
        "hello from bifrost-hello and bifrost-extra"
    );

    // A restarted init container finds its work done (the marker matches).
    let out = kubelet.run(client, ns, install).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already installed"));
}

/// Redis unreachable from the second pod's node: it installs from the mounted snapshot.
async fn without_redis_the_snapshot_serves(client: &Client, ns: &str, pod: &Pod) {
    let second = Kubelet::new(client, ns, pod).await;
    assert!(
        second
            .run(client, ns, container(pod, BOOTSTRAP_CONTAINER))
            .await
            .status
            .success()
    );
    let dead = common::services::dead_url("redis");
    let out = second
        .run_with(
            client,
            ns,
            container(pod, INSTALL_CONTAINER),
            &[("REDIS_URL", &dead)],
        )
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("fallback file"), "{stderr}");
    assert!(
        second.volumes[SITE_PACKAGES_VOLUME]
            .join("bifrost_extra/__init__.py")
            .is_file()
    );
}
