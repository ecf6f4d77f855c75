//! End to end on a real node (kubelet + containerd + runc, scripts/node.sh): the images built
//! here, real pods, real init containers, real restarts and rolling updates.
//!
//! One node per test binary; tests run one at a time (the machine is small and some tests stop
//! shared servers). Pods reach only the bridge's host address (10.244.0.1), where the package
//! index and Redis for them listen.

mod common;
#[path = "node/refusals.rs"]
mod refusals;
#[path = "node/wheelhouse.rs"]
mod wheelhouse;
#[path = "node/workers.rs"]
mod workers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bifrost_requirements::crd::{
    HASH_ANNOTATION, INJECTED_MODE_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements,
};
use bifrost_requirements::lock::{LOCK_FILE, Lock};
use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::webhook::inject::{BOOTSTRAP_CONTAINER, INSTALL_CONTAINER};
use common::index::Index;
use common::node::{HOST_IP, Node, assert_routed_via_bridge, node, pod_servers, worker_pod_spec};
use common::objects::{init_names, merge_patch};
use common::operator::{condition, namespace, wait_for};
use common::release::Release;
use common::scenario::Ns;
use common::services::RedisServer;
use common::wheels::Wheel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(120);

/// One test at a time on the node.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Wait until the pod is Running with every container ready; panics with its status otherwise.
async fn wait_running(api: &Api<Pod>, name: &str) -> Pod {
    let n = node();
    let deadline = Instant::now() + T;
    loop {
        let p = api.get(name).await.unwrap();
        let status = p.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if status.phase.as_deref() == Some("Running") && ready {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} not Running after {T:?}: {}\n--- kubelet ---\n{}",
            serde_json::to_string_pretty(&status).unwrap(),
            n.log_tail("kubelet", 30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn node_is_ready_and_runs_a_pod_with_two_init_containers() {
    let _serial = serial().await;
    let n = node();
    let (client, ns) = namespace("node-smoke").await;
    the_node_is_ready(n);
    a_pod_with_two_init_containers_runs_on_the_bridge(n, &client, &ns).await;
    its_init_containers_ran_in_order_as_uid_1000(n, &ns);
    the_pod_has_no_default_route(n, &ns);
    wait_for("namespace deleted", T, || async {
        let out = n.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
        out.status.success().then_some(())
    })
    .await;
}

fn the_node_is_ready(n: &Node) {
    let out = n.kubectl(&[
        "get",
        "node",
        "127.0.0.1",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(text(&out).trim(), "True", "node Ready");
}

/// The pod `smoke`: two init containers appending to a shared emptyDir, then a main container
/// with a read-only root filesystem; Running on the bridge's subnet, routed through the bridge.
async fn a_pod_with_two_init_containers_runs_on_the_bridge(n: &Node, client: &Client, ns: &str) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "smoke"},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "initContainers": [
                {"name": "first", "image": n.worker_image, "imagePullPolicy": "Never",
                 "command": ["python3", "-c", "open('/shared/order','a').write('first\\n')"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
                {"name": "second", "image": n.worker_image, "imagePullPolicy": "Never",
                 "command": ["python3", "-c", "open('/shared/order','a').write('second\\n')"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ],
            "containers": [
                {"name": "main", "image": n.worker_image, "imagePullPolicy": "Never",
                 "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
                 "securityContext": {"readOnlyRootFilesystem": true},
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ]
        }
    }))
    .unwrap();
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let started = Instant::now();
    api.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_running(&api, "smoke").await;
    eprintln!(
        "pod with two init containers Running in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ip = p.status.as_ref().unwrap().pod_ip.clone().expect("pod IP");
    assert!(
        ip.starts_with("10.244.0."),
        "pod IP {ip} on the bridge's subnet"
    );
    assert_routed_via_bridge(&ip);
}

/// Both init containers ran, in order, as uid 1000 on a volume the pod's fsGroup owns.
fn its_init_containers_ran_in_order_as_uid_1000(n: &Node, ns: &str) {
    let out = n.exec(ns, "smoke", "main", &["python3", "-c", "import os; print(open('/shared/order').read().split()); print(os.getuid(), os.getgid(), os.stat('/shared').st_gid)"]);
    assert!(out.status.success(), "exec: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["['first', 'second']", "1000 1000 1000"],
    );
}

/// The pod has no default route: nothing it sends can leave the machine.
fn the_pod_has_no_default_route(n: &Node, ns: &str) {
    let out = n.exec(
        ns,
        "smoke",
        "main",
        &["python3", "-c", "print(open('/proc/net/route').read())"],
    );
    // The exec ran: an empty answer would pass the check below.
    assert!(out.status.success(), "exec: {}", text(&out));
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(routes.starts_with("Iface"), "not a route table:\n{routes}");
    assert!(
        !routes
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "pod has a default route:\n{routes}"
    );
}

// ---------------------------------------------------------------------------------------------
// The operator and its servers, as pods see them.

/// Everything one end-to-end case needs: a namespace, Redis and an index for its pods, the
/// operator installed by the chart (one replica, watching the namespace), and a
/// WorkspaceRequirements `default`.
struct Case {
    client: Client,
    ns: String,
    redis: RedisServer,
    index: Index,
    op: Release,
}

impl Case {
    /// Each pod resolves (the operator's resolver is off).
    async fn start(prefix: &str, content: &str, install: Value) -> Case {
        Case::start_with(prefix, content, install, false).await
    }

    /// [`Case::start`], then once the resource is Ready: the case and the content's hash.
    async fn ready(prefix: &str, content: &str, install: Value) -> (Case, String) {
        let case = Case::start(prefix, content, install).await;
        let hash = case.ready_hash(content).await;
        (case, hash)
    }

    /// `resolving`: the operator may resolve against the case's index (and does, for an
    /// `install` naming `python`).
    async fn start_with(prefix: &str, content: &str, install: Value, resolving: bool) -> Case {
        Case::start_resource(prefix, resolving, |index, _| {
            let mut install = install;
            install["indexUrls"] = json!([index.url()]);
            let resource = json!({
                "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
                "metadata": {"name": "default"},
                "spec": {
                    "content": content,
                    "cache": {"redis": {"urlSecretRef": {"name": "bifrost-redis", "key": "url"}}},
                    "install": install,
                    "rollout": {"debounceSeconds": 1}
                }
            });
            (resource, Vec::new())
        })
        .await
    }

    /// [`Case::start_with`] creating the resource `default` that `resource` makes from the
    /// case's index and Redis, after the Secrets it returns with it.
    async fn start_resource(
        prefix: &str,
        resolving: bool,
        resource: impl FnOnce(&Index, &RedisServer) -> (Value, Vec<Value>),
    ) -> Case {
        Case::start_resource_on(prefix, resolving, None, resource).await
    }

    /// [`Case::start_resource`] with the pods' index `index` (default: the test wheels').
    async fn start_resource_on(
        prefix: &str,
        resolving: bool,
        index: Option<Index>,
        resource: impl FnOnce(&Index, &RedisServer) -> (Value, Vec<Value>),
    ) -> Case {
        node();
        let (client, ns) = namespace(prefix).await;
        let (redis, index) = match index {
            None => pod_servers(&client, &ns).await,
            Some(index) => {
                let redis = common::node::pod_redis();
                common::operator::secret(&client, &ns, "bifrost-redis", "url", &redis.url()).await;
                (redis, index)
            }
        };
        let resolver = if resolving {
            format!("resolver.indexUrls[0]!={}", index.url())
        } else {
            "resolver.enabled=false".to_string()
        };
        let op = Release::install(&client, &ns, &["replicaCount=1", &resolver]).await;
        let (obj, secrets) = resource(&index, &redis);
        for s in secrets {
            let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(s).unwrap();
            Api::namespaced(client.clone(), &ns)
                .create(&PostParams::default(), &s)
                .await
                .unwrap();
        }
        let obj: WorkspaceRequirements = serde_json::from_value(obj).unwrap();
        Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap();
        Case {
            client,
            ns,
            redis,
            index,
            op,
        }
    }

    /// A case whose operator resolves `bifrost-hello>=1.0` for the worker image's python3 (3.11,
    /// x86_64) into a lock pinning 1.0, and its labelled worker running that content: the case,
    /// the content hash and the worker pod's name.
    async fn locked_worker(prefix: &str) -> (Case, String, String) {
        let content = "bifrost-hello>=1.0\n";
        let python = json!({"version": "3.11", "platform": "x86_64-manylinux_2_28"});
        let case = Case::start_with(prefix, content, json!({"python": python}), true).await;
        let hash = case.ready_hash(content).await;
        case.resolved(&hash, &Wheel::new("bifrost_hello", "1.0"))
            .await;
        case.worker("worker", true).await;
        let pod = case
            .running("worker", 1, Some(&hash))
            .await
            .remove(0)
            .name_any();
        (case, hash, pod)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn wsreq(&self) -> Api<WorkspaceRequirements> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The hash the controller computed for the current content, once it is Ready.
    async fn ready_hash(&self, content: &str) -> String {
        let want = content_hash(content);
        let api = self.wsreq();
        wait_for("the resource Ready with the content's hash", T, || async {
            let r = api.get("default").await.ok()?;
            let s = r.status?;
            (s.content_hash.as_deref() == Some(want.as_str())
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "CacheWarmed" && c.status == "True"))
            .then_some(())
        })
        .await;
        want
    }

    /// The notes of the Events published on the resource with `reason`.
    async fn notes(&self, reason: &str) -> Vec<String> {
        let events = events(&self.client, &self.ns, reason).await;
        events.into_iter().filter_map(|e| e.note).collect()
    }

    /// A worker shaped like Bifrost's own k8s/worker/deployment.yaml: uid/gid/fsGroup 1000,
    /// read-only root filesystem, emptyDirs at /home/bifrost and /tmp, no service-account token;
    /// rolling updates that never take the serving pod down first.
    async fn worker(&self, name: &str, labelled: bool) {
        self.deploy(name, labelled, worker_pod_spec(&node().worker_image))
            .await;
    }

    /// A one-replica Deployment `name` of pods with `spec`, labelled for `default` or not.
    async fn deploy(&self, name: &str, labelled: bool, spec: Value) {
        let mut labels = json!({"app": name});
        if labelled {
            labels[OPT_IN_LABEL] = json!("default");
        }
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": spec
                }
            }
        }))
        .unwrap();
        Api::<Deployment>::namespaced(self.client.clone(), &self.ns)
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// The Running, ready, not-terminating pods of `app` once there are exactly `n` and every
    /// one carries `hash` (None: any). Panics with the pods' states otherwise.
    async fn running(&self, app: &str, n: usize, hash: Option<&str>) -> Vec<Pod> {
        let api = self.pods();
        let lp = ListParams::default().labels(&format!("app={app}"));
        let deadline = Instant::now() + T;
        loop {
            let list = api.list(&lp).await.unwrap().items;
            let ok = list.len() == n
                && list.iter().all(|p| {
                    is_ready(p)
                        && p.metadata.deletion_timestamp.is_none()
                        && hash.is_none_or(|h| pod_hash(p).as_deref() == Some(h))
                });
            if ok {
                for p in &list {
                    assert_routed_via_bridge(p.status.as_ref().unwrap().pod_ip.as_deref().unwrap());
                }
                return list;
            }
            assert!(
                Instant::now() < deadline,
                "pods of {app} not {n} Running with hash {hash:?}: {}\n--- kubelet ---\n{}",
                describe(&list),
                node().log_tail("kubelet", 20)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Once every replica of the worker runs `hash` and is ready: `RolledOut=True` and `Ready=True`
    /// only then, with the counts to show it.
    async fn rolled_out(&self, hash: &str) -> WorkspaceRequirements {
        let api = self.wsreq();
        let obj = wait_for("RolledOut=True with the hash", T, || async {
            let r = api.get("default").await.ok()?;
            let s = r.status.as_ref()?;
            (condition(&r, "RolledOut")?.0 == "True" && s.rolled_out_hash.as_deref() == Some(hash))
                .then_some(r)
        })
        .await;
        let (_, reason, message) = condition(&obj, "RolledOut").unwrap();
        assert_eq!(reason, "UpToDate", "{message}");
        assert_eq!(condition(&obj, "Ready").unwrap().0, "True");
        let w = &obj.status.as_ref().unwrap().workloads[0];
        assert_eq!(
            (w.replicas, w.updated_replicas, w.ready_updated_replicas),
            (Some(1), Some(1), Some(1)),
            "{w:?}"
        );
        obj
    }

    /// The resource once its condition `type_` has `reason`.
    async fn wait_reason(&self, type_: &str, reason: &str) -> WorkspaceRequirements {
        let api = self.wsreq();
        wait_for(&format!("{type_} with reason {reason}"), T, || async {
            let r = api.get("default").await.ok()?;
            (condition(&r, type_)?.1 == reason).then_some(r)
        })
        .await
    }

    /// The resource's one Warning `reason`, published once (no series), its note naming each of
    /// `names`.
    async fn one_warning(&self, reason: &str, names: &[&str]) {
        let warnings = events(&self.client, &self.ns, reason).await;
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        let w = &warnings[0];
        assert_eq!(w.type_.as_deref(), Some("Warning"));
        assert!(w.series.is_none(), "published more than once: {w:#?}");
        assert!(
            w.note
                .as_deref()
                .is_some_and(|n| names.iter().all(|name| n.contains(name))),
            "{w:#?}"
        );
    }

    /// Once the controller has resolved `hash`: `Resolved=True`, `status.lock` naming it, and
    /// the snapshot's `requirements.lock` pinning exactly `pin`, hash-checked against the bytes
    /// the index serves.
    async fn resolved(&self, hash: &str, pin: &Wheel) {
        let api = self.wsreq();
        let obj = wait_for("status.lock of the hash", T, || async {
            let r = api.get("default").await.ok()?;
            (r.status.as_ref()?.lock.as_ref()?.content_hash == hash).then_some(r)
        })
        .await;
        let (resolved, reason, message) = condition(&obj, "Resolved").unwrap();
        assert_eq!((resolved.as_str(), reason.as_str()), ("True", "Resolved"));
        assert!(
            message.contains("1 distribution(s) pinned for Python 3.11 x86_64-manylinux_2_28"),
            "{message}"
        );
        assert_eq!(obj.status.unwrap().lock.unwrap().packages, 1);
        let configmaps = Api::<ConfigMap>::namespaced(self.client.clone(), &self.ns);
        let lock = wait_for("the snapshot's lock of the hash", T, || async {
            let cm = configmaps.get("default-requirements").await.ok()?;
            let lock = Lock::parse(cm.data?.get(LOCK_FILE)?).ok()?;
            lock.resolves(hash).then_some(lock)
        })
        .await;
        assert_eq!(
            lock.pins(),
            [format!("{}=={}", "bifrost-hello", pin.version)]
        );
        assert!(
            lock.body
                .contains(&format!("--hash=sha256:{}", self.index.sha256(pin))),
            "{}",
            lock.body
        );
    }

    /// The pod's install container installed the snapshot's lock of `hash`, hash-checked,
    /// without resolving.
    fn installed_from_lock(&self, pod: &str, hash: &str) {
        let log = node().logs(&self.ns, pod, INSTALL_CONTAINER);
        assert!(
            log.contains("installing the lock")
                && log.contains("--no-deps --require-hashes")
                && log.contains("as locked (hash-checked)")
                && log.contains(hash)
                && !log.contains("not using a lock"),
            "{pod} installed {hash} from the lock:\n{log}"
        );
    }

    async fn set_content(&self, content: &str) {
        self.scene().set_content("default", content).await;
    }

    /// The case's namespace as the scenario fixture sees it.
    fn scene(&self) -> Ns {
        Ns {
            client: self.client.clone(),
            name: self.ns.clone(),
        }
    }

    fn import(&self, pod: &str, module: &str) -> String {
        self.run(
            pod,
            &[
                "python3",
                "-c",
                &format!("import {module}; print({module}.VERSION)"),
            ],
        )
    }

    /// `import module` fails in the pod's worker container (`why` otherwise), because the module
    /// is missing, not because the exec did.
    fn cannot_import(&self, pod: &str, module: &str, why: &str) {
        let import = format!("import {module}");
        let out = node().exec(&self.ns, pod, "worker", &["python3", "-c", &import]);
        assert!(!out.status.success(), "{why}");
        assert!(
            text(&out).contains("ModuleNotFoundError"),
            "{import} in {pod}: {}",
            text(&out)
        );
    }

    /// `kubectl exec` in the pod's worker container; its trimmed stdout, once it succeeded.
    fn run(&self, pod: &str, args: &[&str]) -> String {
        let out = node().exec(&self.ns, pod, "worker", args);
        assert!(out.status.success(), "{args:?} in {pod}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The Events published on the resource with `reason`.
async fn events(client: &Client, ns: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("default")
        })
        .collect()
}

/// A worker as Bifrost's own k8s/worker/deployment.yaml runs its image (here the worker-app
/// image: `ENV PYTHONPATH=/app`, a package in /app): no PYTHONPATH of its own, `HOME` on the
/// emptyDir, `PIP_NO_CACHE_DIR`, `python` (not python3), its container hardening.
fn bifrost_worker_pod_spec(image: &str) -> Value {
    let mut spec = worker_pod_spec(image);
    let c = &mut spec["containers"][0];
    c["command"] = json!(["python", "-c", "import time\nwhile True: time.sleep(3600)"]);
    c["env"] = json!([
        {"name": "PIP_NO_CACHE_DIR", "value": "1"},
        {"name": "HOME", "value": "/home/bifrost"}
    ]);
    c["securityContext"] = json!({
        "allowPrivilegeEscalation": false, "runAsNonRoot": true,
        "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        "readOnlyRootFilesystem": true
    });
    spec
}

fn is_ready(p: &Pod) -> bool {
    let Some(s) = p.status.as_ref() else {
        return false;
    };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_hash(p: &Pod) -> Option<String> {
    p.metadata
        .annotations
        .as_ref()?
        .get(HASH_ANNOTATION)
        .cloned()
}

fn describe(pods: &[Pod]) -> String {
    pods.iter()
        .map(|p| {
            format!(
                "{} hash={:?} deleting={} status={}",
                p.name_any(),
                pod_hash(p).map(|h| h[..12.min(h.len())].to_string()),
                p.metadata.deletion_timestamp.is_some(),
                serde_json::to_string(&p.status).unwrap()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn container_status(p: &Pod, name: &str) -> ContainerStatus {
    let s = p.status.as_ref().unwrap();
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status of {name}: {}", describe(std::slice::from_ref(p))))
        .clone()
}

/// The install container's exit, once it has failed (now or in an earlier run).
fn install_failure(p: &Pod) -> Option<(i32, String)> {
    let s = p
        .status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == INSTALL_CONTAINER)?
        .clone();
    [
        s.state.and_then(|s| s.terminated),
        s.last_state.and_then(|s| s.terminated),
    ]
    .into_iter()
    .flatten()
    .find(|t| t.exit_code != 0)
    .map(|t| (t.exit_code, t.message.unwrap_or_default()))
}
