//! A real one-node cluster (control plane + kube-scheduler + containerd + bridge CNI + kubelet)
//! for tests that need pods to run, started once per test binary by `scripts/node.sh start`.
//!
//! The node outlives nothing: a detached watcher runs `scripts/node.sh stop` (workloads deleted
//! while the kubelet runs, then processes, mounts, cgroups, bridge, host paths, sysctls) once the
//! test process is gone, since statics are never dropped. One node per machine (fixed bridge).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::Client;

use super::index::Index;
use super::k8s::{ControlPlane, attach_control_plane};
use super::objects::stdout_of;
use super::operator::secret;
use super::proc::run_script;
use super::services::RedisServer;
use super::wheels::Wheel;

/// The bridge's host address: the only address of this machine that pods can reach. A package
/// index or Redis meant for pods listens here.
pub const HOST_IP: &str = "10.244.0.1";
pub const BRIDGE: &str = "bifrost0";

pub struct Node {
    pub dir: PathBuf,
    pub cp: &'static ControlPlane,
    /// `localhost/bifrost-requirements:<version>` (the Dockerfile's final stage).
    pub operator_image: String,
    /// `localhost/bifrost-worker:bookworm` (Debian's python3).
    pub worker_image: String,
    /// `localhost/bifrost-worker:app`: the worker plus Bifrost's image's own set-up
    /// (`ENV PYTHONPATH=/app`, a package `bifrost_app` in /app, `python`, no PEP 668 marker).
    pub worker_app_image: String,
    /// containerd's socket, for `ctr`.
    pub socket: PathBuf,
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The node of this test binary, started on first use (~30 s, plus image builds the first time
/// on a machine). Panics with the script's output if it does not come up.
pub fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(Node::start)
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("bifrost-node-")
            .tempdir()
            .expect("create node dir")
            .keep();
        let script = manifest_dir().join("scripts/node.sh");
        // The watcher first: even a start that fails half-way is torn down.
        let watcher = r#"
            owner=$1; script=$2; dir=$3
            while kill -0 "$owner" 2>/dev/null; do sleep 1; done
            bash "$script" stop "$dir" >"$dir.stop.log" 2>&1 && rm -f "$dir.stop.log"
        "#;
        // setsid -f: the watcher is in its own session (a Ctrl-C of the tests does not reach
        // it) and setsid itself returns at once.
        Command::new("setsid")
            .args(["-f", "sh", "-c", watcher, "node-watcher"])
            .arg(std::process::id().to_string())
            .arg(&script)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("start the node's teardown watcher");
        let started = Instant::now();
        let mut start = Command::new("bash");
        // node.sh may run cargo (the operator image's static build): without the variables
        // `cargo test` sets for test binaries, so it finds that build up to date.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if (k.starts_with("CARGO") && k != "CARGO_HOME")
                || (k.starts_with("RUST") && !k.starts_with("RUSTUP"))
                || k == "LD_LIBRARY_PATH"
                || k == "OUT_DIR"
            {
                start.env_remove(&*k);
            }
        }
        start.arg(&script).arg("start").arg(&dir);
        run_script(start);
        eprintln!(
            "node ready in {:.1}s (dir {})",
            started.elapsed().as_secs_f64(),
            dir.display()
        );
        let bin = PathBuf::from(
            std::fs::read_to_string(dir.join("bin"))
                .expect("node dir names its binaries")
                .trim(),
        );
        let cp = attach_control_plane(&dir.join("cp"), bin);
        let images = std::fs::read_to_string(dir.join("images.env")).expect("images.env");
        let image = |key: &str| -> String {
            images
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} in images.env"))
                .to_string()
        };
        Node {
            operator_image: image("OPERATOR_IMAGE"),
            worker_image: image("WORKER_IMAGE"),
            worker_app_image: image("WORKER_APP_IMAGE"),
            socket: dir.join("containerd/containerd.sock"),
            cp,
            dir,
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.cp.kubectl(args)
    }

    /// `kubectl exec -n NS POD -c CONTAINER -- ARGS`.
    pub fn exec(&self, ns: &str, pod: &str, container: &str, args: &[&str]) -> Output {
        let mut all = vec!["exec", "-n", ns, pod, "-c", container, "--"];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    /// `kubectl logs` of one container (of its last run, or the previous one).
    pub fn logs(&self, ns: &str, pod: &str, container: &str) -> String {
        let out = self.kubectl(&["logs", "-n", ns, pod, "-c", container]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL the process of a container (`containerd://ID` from the pod's status) from the
    /// host, as a crash would.
    pub fn kill_container(&self, container_id: &str) {
        let id = container_id
            .strip_prefix("containerd://")
            .unwrap_or(container_id);
        let out = Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id])
            .output()
            .expect("run ctr");
        stdout_of(&out, &format!("ctr tasks kill {id}"));
    }

    /// The last lines of a node component's log (`kubelet`, `containerd`, `kube-scheduler`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("logs/{component}.log")))
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// Traffic to a pod address must stay on the bridge: panic unless `ip route get` names it.
/// Call before the first connection to a pod.
pub fn assert_routed_via_bridge(pod_ip: &str) {
    let out = Command::new("ip")
        .args(["-o", "route", "get", pod_ip])
        .output()
        .expect("run ip route get");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .any(|w| w == ["dev", BRIDGE]),
        "route to {pod_ip} does not go through {BRIDGE}: {text}"
    );
}

/// Poll `check` every 250 ms until it returns `Some`, or panic after `timeout` with `why()`.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    why: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            why()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A Redis for the operator and the pods: on the bridge's host address (pods reach nothing
/// else), stoppable. Its watchdog stops it with the test binary.
pub fn pod_redis() -> RedisServer {
    RedisServer::start_on(HOST_IP)
}

/// What a namespace's operator and pods need, on the bridge's host address: a [`pod_redis`], named
/// by the Secret `bifrost-redis` (key `url`), and a package index of `bifrost_hello` 1.0 and
/// `bifrost_extra` 2.0 (which requires it).
pub async fn pod_servers(client: &Client, ns: &str) -> (RedisServer, Index) {
    let redis = pod_redis();
    let index = Index::start_on(
        HOST_IP,
        &[
            Wheel::new("bifrost_hello", "1.0"),
            Wheel::new("bifrost_extra", "2.0").requires("bifrost-hello"),
        ],
    );
    secret(client, ns, "bifrost-redis", "url", &redis.url()).await;
    (redis, index)
}

/// A worker shaped like Bifrost's own k8s/worker/deployment.yaml: uid/gid/fsGroup 1000, a
/// read-only root filesystem, emptyDirs at /home/bifrost and /tmp, no service-account token.
pub fn worker_pod_spec(image: &str) -> serde_json::Value {
    serde_json::json!({
        "automountServiceAccountToken": false,
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000, "runAsNonRoot": true},
        "volumes": [{"name": "home", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
        "containers": [{
            "name": "worker", "image": image, "imagePullPolicy": "Never",
            "command": ["python3", "-c", "import time\nwhile True: time.sleep(3600)"],
            "env": [{"name": "HOME", "value": "/home/bifrost"}, {"name": "PYTHONPATH", "value": "/app"}],
            "securityContext": {"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
            "volumeMounts": [
                {"name": "home", "mountPath": "/home/bifrost"},
                {"name": "tmp", "mountPath": "/tmp"}
            ]
        }]
    })
}
