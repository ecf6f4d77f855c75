//! End to end on a real node (kubelet + containerd + runc, scripts/node.sh): the images built
//! here, real pods, real init containers, real restarts and rolling updates.
//!
//! One node per test binary; tests run one at a time (the machine is small and some tests stop
//! shared servers). Pods reach only the bridge's host address (10.244.0.1), where the package
//! index and Redis for them listen.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bifrost_requirements::crd::{
    HASH_ANNOTATION, INJECTED_MODE_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements,
};
use bifrost_requirements::lock::{LOCK_FILE, Lock};
use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::webhook::inject::{BOOTSTRAP_CONTAINER, INSTALL_CONTAINER};
use common::index::Index;
use common::node::{HOST_IP, PodRedis, assert_routed_via_bridge, node, worker_pod_spec};
use common::operator::{namespace, secret, wait_for};
use common::release::Release;
use common::wheels::Wheel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
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
    let out = n.kubectl(&[
        "get",
        "node",
        "127.0.0.1",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(text(&out).trim(), "True", "node Ready");

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
    let api = Api::<Pod>::namespaced(client.clone(), &ns);
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

    // Both init containers ran, in order, as uid 1000 on a volume the pod's fsGroup owns.
    let out = n.exec(&ns, "smoke", "main", &["python3", "-c", "import os; print(open('/shared/order').read().split()); print(os.getuid(), os.getgid(), os.stat('/shared').st_gid)"]);
    assert!(out.status.success(), "exec: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        vec!["['first', 'second']", "1000 1000 1000"],
    );
    // The pod has no default route: nothing it sends can leave the machine.
    let out = n.exec(
        &ns,
        "smoke",
        "main",
        &["python3", "-c", "print(open('/proc/net/route').read())"],
    );
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        !routes
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "pod has a default route:\n{routes}"
    );
    wait_for("namespace deleted", T, || async {
        let out = n.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
        out.status.success().then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The operator and its servers, as pods see them.

/// Everything one end-to-end case needs: a namespace, Redis and an index for its pods, the
/// operator installed by the chart (one replica, watching the namespace), and a
/// WorkspaceRequirements `default`.
struct Case {
    client: Client,
    ns: String,
    redis: PodRedis,
    index: Index,
    op: Release,
}

impl Case {
    /// Each pod resolves (the operator's resolver is off).
    async fn start(prefix: &str, content: &str, install: Value) -> Case {
        Case::start_with(prefix, content, install, false).await
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
        resource: impl FnOnce(&Index, &PodRedis) -> (Value, Vec<Value>),
    ) -> Case {
        node();
        let (client, ns) = namespace(prefix).await;
        let redis = PodRedis::start();
        let index = Index::start_on(
            HOST_IP,
            &[
                Wheel::new("bifrost_hello", "1.0"),
                Wheel::new("bifrost_extra", "2.0").requires("bifrost-hello"),
            ],
        );
        secret(&client, &ns, "bifrost-redis", "url", &redis.url()).await;
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
        self.wsreq()
            .patch(
                "default",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"content": content}})),
            )
            .await
            .unwrap();
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

    /// `kubectl exec` in the pod's worker container; its trimmed stdout, once it succeeded.
    fn run(&self, pod: &str, args: &[&str]) -> String {
        let out = node().exec(&self.ns, pod, "worker", args);
        assert!(out.status.success(), "{args:?} in {pod}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// (status, reason, message) of a condition.
fn condition(obj: &WorkspaceRequirements, type_: &str) -> Option<(String, String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
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

fn init_names(p: &Pod) -> Vec<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .map(|c| c.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default()
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

// ---------------------------------------------------------------------------------------------
// The cases.

/// A labelled worker shaped like Bifrost's: the init containers run before it, as uid 1000 with
/// a read-only root filesystem, and the worker imports the packages.
async fn labelled_worker_imports(case: &Case, installer: &str, hash: &str) -> Pod {
    let n = node();
    case.worker("worker", true).await;
    let pods = case.running("worker", 1, Some(hash)).await;
    let p = pods.into_iter().next().unwrap();
    let pod = p.name_any();
    assert_eq!(init_names(&p), [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]);
    for c in [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER] {
        let t = container_status(&p, c)
            .state
            .and_then(|s| s.terminated)
            .unwrap_or_else(|| panic!("{c} did not run to completion"));
        assert_eq!(t.exit_code, 0, "{c}: {t:?}");
    }
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    let out = n.exec(
        &case.ns,
        &pod,
        "worker",
        &["python3", "-c", "import os, bifrost_hello; print(os.getuid(), os.getgid(), os.access('/usr', os.W_OK), bifrost_hello.__file__)"],
    );
    let who = String::from_utf8_lossy(&out.stdout);
    assert!(
        who.starts_with("1000 1000 False /"),
        "worker identity: {}",
        text(&out)
    );
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert!(
        log.contains("installed: 1 package(s)")
            && log.contains(hash)
            && log.contains("from the Redis key")
            && log.contains(installer),
        "install log names the hash, the source and {installer}:\n{log}"
    );
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_pods_run_the_packages_survive_a_crash_and_roll_to_new_content() {
    let _serial = serial().await;
    let n = node();
    let content = "bifrost-hello==1.0\n";
    let case = Case::start("node-e2e", content, json!({})).await;
    let hash = case.ready_hash(content).await;
    let p = labelled_worker_imports(&case, "uv", &hash).await;
    let pod = p.name_any();
    case.rolled_out(&hash).await;

    // A crash of the main process: the kubelet restarts the container in the same pod; the
    // emptyDir keeps the packages and the init containers do not run again.
    let installed_at = container_status(&p, INSTALL_CONTAINER)
        .state
        .unwrap()
        .terminated
        .unwrap()
        .finished_at;
    let id = container_status(&p, "worker")
        .container_id
        .expect("container id");
    n.kill_container(&id);
    let api = case.pods();
    let restarted = wait_for("the worker container restarted", T, || async {
        let p = api.get(&pod).await.ok()?;
        (container_status(&p, "worker").restart_count >= 1 && is_ready(&p)).then_some(p)
    })
    .await;
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    let install = container_status(&restarted, INSTALL_CONTAINER);
    assert_eq!(install.restart_count, 0);
    assert_eq!(
        install.state.unwrap().terminated.unwrap().finished_at,
        installed_at
    );
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert_eq!(
        log.matches("installed:").count(),
        1,
        "installed once:\n{log}"
    );

    // New content: a rolling update to pods with the new package; the old pod goes.
    let content2 = "bifrost-extra==2.0\nbifrost-hello==1.0\n";
    case.set_content(content2).await;
    let hash2 = case.ready_hash(content2).await;
    let pods = case.running("worker", 1, Some(&hash2)).await;
    let pod2 = pods[0].name_any();
    assert_ne!(pod2, pod);
    assert_eq!(case.import(&pod2, "bifrost_extra"), "2.0");
    assert!(
        api.get_opt(&pod).await.unwrap().is_none(),
        "the old pod is gone"
    );
    case.rolled_out(&hash2).await;

    // A requirement that cannot install: the new pod's install container fails, the rollout
    // halts, the old pod keeps serving.
    let content3 = "bifrost-extra==2.0\nbifrost-hello==1.0\nbifrost-missing==9.9\n";
    case.set_content(content3).await;
    let hash3 = case.ready_hash(content3).await;
    let lp = ListParams::default().labels("app=worker");
    let (failed, code, message) =
        wait_for("the new pod's install container to fail", T, || async {
            let list = api.list(&lp).await.ok()?.items;
            list.iter()
                .filter(|p| pod_hash(p).as_deref() == Some(hash3.as_str()))
                .find_map(|p| install_failure(p).map(|(c, m)| (p.name_any(), c, m)))
        })
        .await;
    assert!(
        message.contains("bifrost-missing"),
        "termination message names the package: {message}"
    );
    eprintln!("install container of {failed} exited {code}: {message}");
    // The resource says so: the pod, the init container and its termination message.
    let obj = case.wait_reason("RolledOut", "InstallFailing").await;
    let (rolled, _, why) = condition(&obj, "RolledOut").unwrap();
    eprintln!("RolledOut={rolled} InstallFailing: {why}");
    assert_eq!(rolled, "False");
    assert!(
        why.contains(&format!(
            "Deployment/worker: pod {failed}: init container {INSTALL_CONTAINER} exited {code}"
        )) && why.contains("bifrost-missing"),
        "{why}"
    );
    // The installer's report (its summary line: what installed, what failed and why), not the
    // log records before it (their timestamps change on every attempt, which would rewrite the
    // status each time).
    assert!(
        why.contains("failed: bifrost-missing (not found on the index)") && !why.contains(" INFO "),
        "{why}"
    );
    let (ready, reason, _) = condition(&obj, "Ready").unwrap();
    assert_eq!(
        (ready.as_str(), reason.as_str()),
        ("False", "InstallFailing")
    );
    let status = obj.status.clone().unwrap();
    assert_eq!(status.rolled_out_hash.as_deref(), Some(hash2.as_str()));
    let w = &status.workloads[0];
    assert_eq!(
        (
            w.up_to_date,
            w.replicas,
            w.updated_replicas,
            w.ready_updated_replicas
        ),
        (true, Some(1), Some(1), Some(0)),
        "{w:?}"
    );
    assert!(
        w.message.as_deref().is_some_and(|m| m.contains(&failed)),
        "{w:?}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let old = api.get(&pod2).await.unwrap();
    assert!(
        is_ready(&old) && old.metadata.deletion_timestamp.is_none(),
        "the old pod keeps serving"
    );
    assert_eq!(case.import(&pod2, "bifrost_extra"), "2.0");
    let newer = api.get(&failed).await.unwrap();
    assert!(!is_ready(&newer), "the failing pod never became ready");
    // One Warning for this hash, although the install container kept failing meanwhile.
    let restarts = container_status(&newer, INSTALL_CONTAINER).restart_count;
    case.one_warning("InstallFailing", &[&failed, "bifrost-missing"])
        .await;
    eprintln!(
        "one InstallFailing Warning while the install container restarted {restarts} time(s)"
    );
    drop(case);
}

/// Issue 12 on real pods: the controller resolves `bifrost-hello>=1.0` once for the workers'
/// interpreter (the worker image's python3 is Debian bookworm's 3.11, x86_64, glibc 2.36); every
/// pod of that content installs the lock, hash-checked, even after the index publishes a newer
/// release; a new content is resolved anew and its pods get the new release.
#[tokio::test(flavor = "multi_thread")]
async fn pods_install_the_controllers_lock_which_holds_until_the_content_changes() {
    let _serial = serial().await;
    let (case, hash, pod) = Case::locked_worker("node-lock").await;
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    case.installed_from_lock(&pod, &hash);
    case.rolled_out(&hash).await;

    // A newer release on the index: a new pod of the same content still installs the locked 1.0.
    case.index.publish(&Wheel::new("bifrost_hello", "1.1"));
    case.pods().delete(&pod, &Default::default()).await.unwrap();
    let again = case
        .running("worker", 1, Some(&hash))
        .await
        .remove(0)
        .name_any();
    assert_ne!(again, pod);
    assert_eq!(case.import(&again, "bifrost_hello"), "1.0");
    case.installed_from_lock(&again, &hash);

    // A new content (the same requirement and a comment): resolved anew, the rolled pod gets 1.1.
    let changed = "bifrost-hello>=1.0\n# resolved anew\n";
    case.set_content(changed).await;
    let hash2 = case.ready_hash(changed).await;
    assert_ne!(hash2, hash);
    case.resolved(&hash2, &Wheel::new("bifrost_hello", "1.1"))
        .await;
    let rolled = case
        .running("worker", 1, Some(&hash2))
        .await
        .remove(0)
        .name_any();
    assert_eq!(case.import(&rolled, "bifrost_hello"), "1.1");
    case.installed_from_lock(&rolled, &hash2);
    case.rolled_out(&hash2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_install_from_the_snapshot_without_redis_and_start_uninjected_without_the_operator() {
    let _serial = serial().await;
    let n = node();
    let content = "bifrost-hello==1.0\n";
    let case = Case::start("node-fallback", content, json!({})).await;
    let hash = case.ready_hash(content).await;
    let p = labelled_worker_imports(&case, "uv", &hash).await;
    let api = case.pods();

    // Redis down: a new pod installs from the ConfigMap snapshot the controller wrote.
    case.redis.stop();
    api.delete(&p.name_any(), &Default::default())
        .await
        .unwrap();
    let pods = case.running("worker", 1, Some(&hash)).await;
    let pod = pods[0].name_any();
    assert_ne!(pod, p.name_any());
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert!(
        log.contains("from the fallback file") && log.contains(&hash),
        "{log}"
    );

    // Operator down: the webhook has no endpoint (failurePolicy Ignore), the pod starts without
    // the packages; once the operator is back it rolls the worker again, and the new pod is
    // injected.
    case.op.scale(&case.client, 0).await;
    api.delete(&pod, &Default::default()).await.unwrap();
    let pods = case.running("worker", 1, None).await;
    let bare = &pods[0];
    assert_ne!(bare.name_any(), pod);
    assert!(
        init_names(bare).is_empty(),
        "uninjected: {:?}",
        init_names(bare)
    );
    let out = n.exec(
        &case.ns,
        &bare.name_any(),
        "worker",
        &["python3", "-c", "import bifrost_hello"],
    );
    assert!(!out.status.success(), "an uninjected pod has no packages");
    case.redis.start_again();
    case.op.scale(&case.client, 1).await;
    let replaced = wait_for(
        "the uninjected worker replaced by an injected one",
        T,
        || async {
            let list = api
                .list(&ListParams::default().labels("app=worker"))
                .await
                .ok()?
                .items;
            (list.len() == 1 && is_ready(&list[0]) && !init_names(&list[0]).is_empty())
                .then(|| list[0].name_any())
        },
    )
    .await;
    assert_ne!(replaced, bare.name_any());
    assert_eq!(case.import(&replaced, "bifrost_hello"), "1.0");
    let notes: Vec<String> = events(&case.client, &case.ns, "ReplacingUninjected")
        .await
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("Deployment/worker") && n.contains("without the packages")),
        "{notes:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_pods_run_the_packages_installed_with_pip() {
    let _serial = serial().await;
    let content = "bifrost-hello==1.0\n";
    let case = Case::start("node-pip", content, json!({"installer": "pip"})).await;
    let hash = case.ready_hash(content).await;
    labelled_worker_imports(&case, "pip", &hash).await;
    case.rolled_out(&hash).await;
}

/// Issue 15 item 1 on real pods: the default mode (UserBase) leaves the image's own
/// `ENV PYTHONPATH=/app` alone, so Bifrost's /app package and the installed packages both import,
/// `python -m` of the /app package sees them, and Bifrost's own start-up
/// `pip install -r requirements.txt` finds them already satisfied in the user site (and a package
/// it installs itself lands in the same volume).
#[tokio::test(flavor = "multi_thread")]
async fn bifrost_image_keeps_its_pythonpath_and_sees_the_packages_in_its_user_site() {
    let _serial = serial().await;
    let n = node();
    let content = "bifrost-extra==2.0\nbifrost-hello==1.0\n";
    let case = Case::start("node-app", content, json!({})).await;
    let hash = case.ready_hash(content).await;
    case.deploy("worker", true, bifrost_worker_pod_spec(&n.worker_app_image))
        .await;
    let p = case.running("worker", 1, Some(&hash)).await.remove(0);
    let pod = p.name_any();
    assert_eq!(
        p.annotations()
            .get(INJECTED_MODE_ANNOTATION)
            .map(String::as_str),
        Some("UserBase")
    );
    let worker = &p.spec.as_ref().unwrap().containers[0];
    let env: BTreeMap<&str, Option<&str>> = worker
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        env.get("PYTHONUSERBASE"),
        Some(&Some("/opt/bifrost/site-packages"))
    );
    assert!(!env.contains_key("PYTHONPATH"), "{env:?}");
    let log = n.logs(&case.ns, &pod, INSTALL_CONTAINER);
    assert!(log.contains("installed: 2 package(s)"), "{log}");

    // The image's PYTHONPATH and the user site, side by side in one interpreter.
    let seen = case.run(
        &pod,
        &[
            "python",
            "-c",
            "import os, site, bifrost_app, bifrost_hello, bifrost_extra\n\
             print(os.environ['PYTHONPATH']); print(site.getusersitepackages())\n\
             print(bifrost_app.__file__); print(bifrost_hello.__file__)",
        ],
    );
    let lines: Vec<&str> = seen.lines().collect();
    let [path, user_site, app, hello] = lines[..] else {
        panic!("{seen}");
    };
    assert_eq!(path, "/app");
    assert!(
        user_site.starts_with("/opt/bifrost/site-packages/lib/python3"),
        "{user_site}"
    );
    assert_eq!(app, "/app/bifrost_app/__init__.py");
    assert!(hello.starts_with(&format!("{user_site}/")), "{hello}");
    assert_eq!(
        case.run(
            &pod,
            &[
                "python",
                "-m",
                "bifrost_app",
                "bifrost_hello",
                "bifrost_extra"
            ]
        ),
        "bifrost_app bifrost_hello=1.0 bifrost_extra=2.0"
    );

    // Bifrost's start-up install (python -m pip install -r <the requirements>, no --user: pip
    // falls back to the user site, the root filesystem being read-only): nothing to do, no
    // index asked (the pod could reach none but ours, and pip is not pointed at it).
    case.run(
        &pod,
        &[
            "python",
            "-c",
            &format!("open('/tmp/requirements.txt', 'w').write({content:?})"),
        ],
    );
    let pip = case.run(
        &pod,
        &[
            "python",
            "-m",
            "pip",
            "install",
            "-r",
            "/tmp/requirements.txt",
        ],
    );
    for req in ["bifrost-extra==2.0", "bifrost-hello==1.0"] {
        assert!(
            pip.contains(&format!(
                "Requirement already satisfied: {req} in {user_site}"
            )),
            "{pip}"
        );
    }
    assert!(!pip.contains("Successfully installed"), "{pip}");

    // A package Bifrost installs itself (its packages API) lands in the same volume.
    case.index.publish(&Wheel::new("bifrost_late", "3.0"));
    let index = format!("--index-url={}", case.index.url());
    let trusted = format!("--trusted-host={HOST_IP}");
    case.run(
        &pod,
        &[
            "python",
            "-m",
            "pip",
            "install",
            "--quiet",
            &index,
            &trusted,
            "bifrost-late==3.0",
        ],
    );
    let late = case.run(
        &pod,
        &[
            "python",
            "-c",
            "import bifrost_late; print(bifrost_late.__file__)",
        ],
    );
    assert!(late.starts_with(&format!("{user_site}/")), "{late}");
}

/// Issue 11 end to end: with `onFailure: Continue`, one package the index lacks fails only itself.
/// The pod runs with the others, the resource names the missing one per workload, `Ready=False`
/// says so (reason `PackagesFailed`), and the Warning is published once for the hash, however
/// many pods report it.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_package_fails_only_itself_and_the_resource_names_it() {
    let _serial = serial().await;
    let n = node();
    let content = "bifrost-extra==2.0\nbifrost-hello==1.0\nbifrost-missing==9.9\n";
    let case = Case::start("node-partial", content, json!({"onFailure": "Continue"})).await;
    let hash = case.ready_hash(content).await;
    case.worker("worker", true).await;
    let p = case.running("worker", 1, Some(&hash)).await.remove(0);
    let pod = p.name_any();
    let t = container_status(&p, INSTALL_CONTAINER)
        .state
        .and_then(|s| s.terminated)
        .expect("the install container ran to completion");
    let summary = t.message.clone().unwrap_or_default();
    assert_eq!(t.exit_code, 0, "{summary}");
    assert!(
        summary.starts_with("installed 2/3")
            && summary.contains("failed: bifrost-missing (not found on the index)"),
        "{summary}"
    );
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
    assert_eq!(case.import(&pod, "bifrost_extra"), "2.0");
    let out = n.exec(
        &case.ns,
        &pod,
        "worker",
        &["python3", "-c", "import bifrost_missing"],
    );
    assert!(!out.status.success(), "bifrost_missing imports?");

    let obj = case.wait_reason("Ready", "PackagesFailed").await;
    let (ready, _, message) = condition(&obj, "Ready").unwrap();
    eprintln!("Ready={ready} PackagesFailed: {message}");
    assert_eq!(ready, "False");
    assert!(
        message.contains("Deployment/worker: bifrost-missing (not found on the index)"),
        "{message}"
    );
    // The pods do run the hash: rolled out, with a package short.
    assert_eq!(condition(&obj, "RolledOut").unwrap().0, "True");
    let status = obj.status.clone().unwrap();
    assert_eq!(status.rolled_out_hash.as_deref(), Some(hash.as_str()));
    let w = &status.workloads[0];
    assert_eq!(
        w.failed_packages.as_deref(),
        Some(&["bifrost-missing (not found on the index)".to_string()][..]),
        "{w:?}"
    );

    // A second pod of the same hash reports the same package: still one Warning.
    case.pods().delete(&pod, &Default::default()).await.unwrap();
    let again = case.running("worker", 1, Some(&hash)).await.remove(0);
    assert_ne!(again.name_any(), pod);
    assert_eq!(case.import(&again.name_any(), "bifrost_hello"), "1.0");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = case.wsreq().get("default").await.unwrap();
    assert_eq!(condition(&r, "Ready").unwrap().1, "PackagesFailed");
    case.one_warning("PackagesFailed", &["bifrost-missing"])
        .await;
}

/// The README's "With Bifrost today (S3)" resource, as printed there.
fn readme_s3_resource() -> Value {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("## With Bifrost today (S3)")
        .expect("the README's S3 section")..];
    let start = section.find("```yaml\n").expect("its resource") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    serde_yaml::from_str(yaml).expect("the README's S3 resource is YAML")
}

/// The README's S3 quick path, pasted as it stands (no `install.python`): only the values a user
/// fills in change (bucket, endpoint, namespace; the node's index, as the node has no other).
/// The resource reaches Ready and the worker imports its package at once, its pods resolving;
/// the probe pod learns the worker image's Python (Debian bookworm: 3.11.2, glibc 2.36), the lock
/// appears and the worker rolls once more, installing it.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_s3_quick_path_works_without_python_and_learns_it_for_the_lock() {
    use bifrost_requirements::crd::LOCK_ANNOTATION;
    use common::s3::{BUCKET, S3Server, bifrost_put};
    let _serial = serial().await;
    // The node first: its bridge owns the address the S3 server listens on.
    node();
    let s3 = S3Server::start_on(HOST_IP);
    let key = format!("_repo/requirements-{}.txt", std::process::id());
    let config = s3.config(&key);
    let content = "bifrost-hello>=1.0\n";
    bifrost_put(&config, content.as_bytes()).await;
    let endpoint = s3.endpoint();
    let writer = s3.writer.clone();
    let case = Case::start_resource("node-quick", true, |index, redis| {
        let mut obj = readme_s3_resource();
        assert!(obj["spec"]["install"].get("python").is_none(), "{obj}");
        obj["metadata"].as_object_mut().unwrap().remove("namespace");
        let s3 = &mut obj["spec"]["source"]["s3"];
        s3["bucket"] = json!(BUCKET);
        s3["key"] = json!(key);
        s3["endpoint"] = json!(endpoint);
        obj["spec"]["install"]["indexUrls"] = json!([index.url()]);
        // Bifrost's Secret, with its own key names.
        let secret = json!({
            "metadata": {"name": "bifrost-secrets"},
            "stringData": {
                "BIFROST_S3_ACCESS_KEY": writer.access_key_id,
                "BIFROST_S3_SECRET_KEY": writer.secret_access_key,
                "BIFROST_REDIS_URL": redis.url(),
            },
        });
        (obj, vec![secret])
    })
    .await;
    let hash = case.ready_hash(content).await;
    case.worker("worker", true).await;
    let first = case.running("worker", 1, Some(&hash)).await.remove(0);
    assert_eq!(case.import(&first.name_any(), "bifrost_hello"), "1.0");

    // The probe learned the worker image's interpreter; the lock follows, then one more rollout.
    let api = case.wsreq();
    let obj = wait_for("status.interpreter and status.lock", T, || async {
        let r = api.get("default").await.ok()?;
        let s = r.status.as_ref()?;
        (s.interpreter.is_some() && s.lock.as_ref()?.content_hash == hash).then_some(r)
    })
    .await;
    let status = obj.status.clone().unwrap();
    let learned = status.interpreter.unwrap();
    assert_eq!(learned.image, node().worker_image);
    assert_eq!(
        (learned.version.as_str(), learned.platform.as_str()),
        ("3.11.2", "x86_64-manylinux_2_36")
    );
    let sha = status.lock.unwrap().sha256[..12].to_string();
    let probes = format!(
        "app.kubernetes.io/component={}",
        bifrost_requirements::controller::probe::COMPONENT
    );
    wait_for("the probe pod deleted", T, || async {
        let left = case
            .pods()
            .list(&ListParams::default().labels(&probes))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    let locked = wait_for("a worker pod rolled for the lock", T, || async {
        let pods = case.running("worker", 1, Some(&hash)).await;
        let p = pods.into_iter().next()?;
        (p.annotations().get(LOCK_ANNOTATION)? == &sha).then_some(p)
    })
    .await;
    case.installed_from_lock(&locked.name_any(), &hash);
    assert_eq!(case.import(&locked.name_any(), "bifrost_hello"), "1.0");
    let obj = case.rolled_out(&hash).await;
    assert_eq!(condition(&obj, "Resolved").unwrap().1, "Resolved");
}

/// Issue 26 on real pods: the index serves a file other than the one requirements.txt pins by
/// hash (the same name and version, other bytes): the controller refuses the lock
/// (`Resolved=False HashMismatch`, naming the line and the index's hash) and nothing rolls; the
/// running worker keeps the last good content.
#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_index_breaking_a_hash_pin_is_refused_and_nothing_rolls() {
    let _serial = serial().await;
    let (case, hash, pod) = Case::locked_worker("node-hashpin").await;
    let hello = Wheel::new("bifrost_hello", "1.0");
    case.rolled_out(&hash).await;

    // A release the operator never resolved (its resolver caches what it fetched): the index
    // now serves another file for it than the one the user pinned.
    let extra = Wheel::new("bifrost_extra", "2.0").requires("bifrost-hello");
    let real = case.index.sha256(&extra);
    let served = case.index.tamper(&extra);
    let pinned = format!(
        "bifrost-extra==2.0 --hash=sha256:{real}\nbifrost-hello==1.0 --hash=sha256:{}\n",
        case.index.sha256(&hello)
    );
    case.set_content(&pinned).await;
    let obj = case.wait_reason("Resolved", "HashMismatch").await;
    let (resolved, _, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(resolved, "False");
    assert!(
        message.contains(&format!(
            "line 1: `bifrost-extra==2.0 --hash=sha256:{real}`"
        )) && message.contains(&format!("sha256:{served}")),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let pods = case.running("worker", 1, Some(&hash)).await;
    assert_eq!(
        pods[0].name_any(),
        pod,
        "the worker kept running, nothing rolled"
    );
    assert_eq!(case.import(&pod, "bifrost_hello"), "1.0");
}

/// Issue 26 on real pods: a snapshot lock edited to another pin (one that satisfies
/// requirements.txt just as well, with the right hash for its file) is refused by the pod's
/// install container, which names both digests; the worker never starts on it. The operator
/// that admits the pod serves only the webhook (its leader Lease is held elsewhere), so no
/// controller writes the snapshot back meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_lock_edited_to_another_pin_is_refused_by_the_pod() {
    let _serial = serial().await;
    let (case, hash, pod) = Case::locked_worker("node-editlock").await;
    case.installed_from_lock(&pod, &hash);
    let recorded = case
        .wsreq()
        .get("default")
        .await
        .unwrap()
        .status
        .unwrap()
        .lock
        .unwrap()
        .sha256;

    // Webhook only from here on: the operator moves to a Lease someone else holds for an hour,
    // and the old leader is gone before the snapshot is edited.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let held: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(json!({
        "metadata": {"name": "held-elsewhere"},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                 "acquireTime": now, "renewTime": now}
    }))
    .unwrap();
    Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        case.client.clone(),
        &case.op.namespace,
    )
    .create(&PostParams::default(), &held)
    .await
    .unwrap();
    case.op
        .upgrade(&case.client, &["leaderElection.leaseName=held-elsewhere"])
        .await;
    wait_for("the old leader gone", T, || async {
        (case.op.pods(&case.client).await.len() == 1).then_some(())
    })
    .await;

    // The lock edited to 1.1, with 1.1's hash: a lock of requirements.txt all the same.
    let newer = Wheel::new("bifrost_hello", "1.1");
    case.index.publish(&newer);
    let configmaps = Api::<ConfigMap>::namespaced(case.client.clone(), &case.ns);
    let cm = configmaps.get("default-requirements").await.unwrap();
    let lock = cm.data.unwrap()[LOCK_FILE].clone();
    assert_eq!(content_hash(&lock), recorded);
    let old_hash = case.index.sha256(&Wheel::new("bifrost_hello", "1.0"));
    let edited = lock
        .replace("bifrost-hello==1.0", "bifrost-hello==1.1")
        .replace(&old_hash, &case.index.sha256(&newer));
    assert_ne!(edited, lock);
    configmaps
        .patch(
            "default-requirements",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {LOCK_FILE: edited}})),
        )
        .await
        .unwrap();

    case.pods().delete(&pod, &Default::default()).await.unwrap();
    let api = case.pods();
    let lp = ListParams::default().labels("app=worker");
    let (failed, code, message) =
        wait_for("the new pod's install to refuse the lock", T, || async {
            let list = api.list(&lp).await.ok()?.items;
            list.iter()
                .filter(|p| p.name_any() != pod && pod_hash(p).as_deref() == Some(hash.as_str()))
                .find_map(|p| install_failure(p).map(|(c, m)| (p.name_any(), c, m)))
        })
        .await;
    eprintln!("install container of {failed} exited {code}: {message}");
    assert_eq!(code, 4, "{message}");
    let log = node().logs(&case.ns, &failed, INSTALL_CONTAINER);
    for text in [&message, &log] {
        assert!(
            text.contains(&format!("its sha256 is {}", content_hash(&edited)))
                && text.contains(&format!("not the sha256 {recorded}")),
            "{text}"
        );
    }
    let p = api.get(&failed).await.unwrap();
    assert!(!is_ready(&p), "the worker started on an edited lock");
}
