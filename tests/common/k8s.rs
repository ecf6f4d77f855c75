//! A real Kubernetes control plane (etcd + kube-apiserver + kube-controller-manager 1.20.2) for
//! tests, started once per test binary.
//!
//! Binaries come from `scripts/k8s-binaries.sh` (`KUBEBUILDER_ASSETS`, or a cached build from
//! Debian's source package). The flag lists come from `scripts/control-plane.sh prepare`, which
//! the demo shares; the processes themselves are started here under [`spawn_guarded`] so they die
//! with the test binary. There is no scheduler and no kubelet: pods stay Pending.
#![allow(dead_code)]

use super::proc::{free_port, run_script, spawn_guarded, wait_for_port};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running control plane. Everything lives in `dir`; logs are in `dir/logs`.
pub struct ControlPlane {
    /// Admin kubeconfig (token in group `system:masters`, the API server's CA embedded).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    /// Bearer token of the admin user.
    pub token: String,
    pub dir: PathBuf,
    config: kube::Config,
    bin: PathBuf,
}

const COMPONENTS: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// The control plane of this test binary, started on first use. Panics with the log tail if it
/// does not come up.
pub fn control_plane() -> &'static ControlPlane {
    CP.get_or_init(ControlPlane::start)
}

static CP: OnceLock<ControlPlane> = OnceLock::new();

/// Make the control plane that `scripts/node.sh` started in `dir` (its `cp/` folder) the one
/// [`control_plane`] returns, so every helper works against the node's cluster. Panics if this
/// test binary already started a control plane of its own.
pub fn attach_control_plane(dir: &Path, bin: PathBuf) -> &'static ControlPlane {
    let cp = CP.get_or_init(|| {
        let ports = std::fs::read_to_string(dir.join("ports.env")).expect("read ports.env");
        let value = |key: &str| {
            ports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} in ports.env"))
                .trim()
                .to_string()
        };
        let (address, port) = (value("APISERVER_ADDRESS"), value("APISERVER_PORT"));
        let kubeconfig = dir.join("kubeconfig");
        let config = futures::executor::block_on(load_config(&kubeconfig));
        ControlPlane {
            kubeconfig,
            server: format!("https://{address}:{port}"),
            token: std::fs::read_to_string(dir.join("token"))
                .expect("read token")
                .trim()
                .to_string(),
            dir: dir.to_path_buf(),
            config,
            bin,
        }
    });
    assert_eq!(
        cp.dir, dir,
        "this test binary already runs another control plane"
    );
    cp
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl ControlPlane {
    /// The folder holding `etcd`, `kube-apiserver`, `kube-controller-manager` (and maybe
    /// `kubectl`); builds them on first use (see `scripts/k8s-binaries.sh`).
    pub fn bin_dir() -> PathBuf {
        static BIN: OnceLock<PathBuf> = OnceLock::new();
        BIN.get_or_init(|| {
            let script = manifest_dir().join("scripts/k8s-binaries.sh");
            let mut cmd = Command::new("bash");
            cmd.arg(&script);
            let out = run_script(cmd);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let dir = PathBuf::from(stdout.lines().last().unwrap_or("").trim());
            assert!(
                dir.join("kube-apiserver").is_file(),
                "{} printed {dir:?}, which holds no kube-apiserver",
                script.display()
            );
            dir
        })
        .clone()
    }

    fn start() -> ControlPlane {
        let bin = Self::bin_dir();
        let keep = std::env::var_os("BIFROST_KEEP_K8S_DIR").is_some();
        let dir = tempfile::Builder::new()
            .prefix("bifrost-k8s-")
            .tempdir()
            .expect("create control-plane dir")
            .keep();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let script = manifest_dir().join("scripts/control-plane.sh");
        let ports = [
            ("ETCD_PORT", etcd_port.to_string()),
            ("ETCD_PEER_PORT", peer_port.to_string()),
            ("APISERVER_PORT", api_port.to_string()),
        ];
        control_plane_step(&script, "prepare", &dir, &[], &ports);
        // Before any API server: the Service range routes nowhere (it would leave the machine
        // through the default route), held while this test process lives.
        let owner = std::process::id().to_string();
        control_plane_step(&script, "hold-range", &dir, &[&owner], &[]);
        // The watcher first: even a start that fails half-way releases the route.
        clean_up_when_done(&dir, !keep);

        let (server, token) = run_components(&bin, &dir, &script, etcd_port, api_port);
        let kubeconfig = dir.join("kubeconfig");
        let config = futures::executor::block_on(load_config(&kubeconfig));
        eprintln!("control plane ready: {server} (dir {})", dir.display());
        ControlPlane {
            kubeconfig,
            server,
            token,
            dir,
            config,
            bin,
        }
    }

    /// A fresh client for the admin user. Works on any tokio runtime.
    pub async fn client(&self) -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        kube::Client::try_from(self.kube_config()).expect("build kube client")
    }

    /// The admin client configuration (from `kubeconfig`).
    pub fn kube_config(&self) -> kube::Config {
        self.config.clone()
    }

    /// Run kubectl (the one built with the binaries if present, else `kubectl` on PATH) against
    /// this control plane.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let built = self.bin.join("kubectl");
        let program = if built.is_file() {
            built
        } else {
            PathBuf::from("kubectl")
        };
        Command::new(&program)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        tail(&self.dir.join(format!("logs/{component}.log")), lines)
    }
}

async fn load_config(kubeconfig: &Path) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("kube config from kubeconfig")
}

/// `bash control-plane.sh STEP DIR ARGS…` with these environment variables; panic unless it
/// succeeded.
fn control_plane_step(
    script: &Path,
    step: &str,
    dir: &Path,
    args: &[&str],
    envs: &[(&str, String)],
) {
    let status = Command::new("bash")
        .arg(script)
        .arg(step)
        .arg(dir)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "{} {step} failed", script.display());
}

/// Start etcd, the API server (then write the kubeconfigs) and kube-controller-manager from the
/// `NAME.args` files `prepare` wrote, each once the one before serves; returns the API server's
/// address and the admin token.
fn run_components(
    bin: &Path,
    dir: &Path,
    script: &Path,
    etcd_port: u16,
    api_port: u16,
) -> (String, String) {
    let mut children: Vec<(&str, Child)> = Vec::new();
    let logs = dir.join("logs");
    let spawn = |name: &str| -> Child {
        let args = std::fs::read_to_string(dir.join(format!("{name}.args")))
            .unwrap_or_else(|e| panic!("read {name}.args: {e}"));
        let args: Vec<&str> = args.lines().filter(|l| !l.is_empty()).collect();
        let program = bin.join(name);
        spawn_guarded(
            program.to_str().expect("utf-8 path"),
            &args,
            &[],
            &logs.join(format!("{name}.log")),
        )
    };

    children.push(("etcd", spawn("etcd")));
    wait_for_port(
        etcd_port,
        "etcd",
        &logs.join("etcd.log"),
        Duration::from_secs(30),
    );
    children.push(("kube-apiserver", spawn("kube-apiserver")));
    let ca = dir.join("certs/apiserver.crt");
    wait_until(
        &mut children,
        dir,
        "the API server's serving certificate",
        60,
        || std::fs::metadata(&ca).map(|m| m.len() > 0).unwrap_or(false),
    );
    // The certificate file is written in one go, but give a slow disk a moment.
    std::thread::sleep(Duration::from_millis(200));
    control_plane_step(script, "kubeconfigs", dir, &[], &[]);

    let token = std::fs::read_to_string(dir.join("token"))
        .expect("read token")
        .trim()
        .to_string();
    let server = format!("https://127.0.0.1:{api_port}");
    let curl = |path: &str| -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .arg("-H")
            .arg(format!("Authorization: Bearer {token}"))
            .arg(format!("{server}{path}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    wait_until(&mut children, dir, "/readyz", 120, || {
        curl("/readyz").as_deref() == Some("ok")
    });
    children.push(("kube-controller-manager", spawn("kube-controller-manager")));
    wait_until(
        &mut children,
        dir,
        "the default ServiceAccount",
        120,
        || curl("/api/v1/namespaces/default/serviceaccounts/default").is_some(),
    );
    (server, token)
}

/// Poll `ready` every 250 ms; panic with the log tails if a child exits or time runs out.
fn wait_until(
    children: &mut [(&str, Child)],
    dir: &Path,
    what: &str,
    timeout_secs: u64,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    loop {
        if ready() {
            return;
        }
        let exited = children
            .iter_mut()
            .find_map(|(name, c)| match c.try_wait() {
                Ok(Some(status)) => Some(format!("{name} exited ({status})")),
                _ => None,
            });
        if exited.is_some() || Instant::now() > deadline {
            let mut msg = format!(
                "control plane in {}: {} while waiting for {what}\n",
                dir.display(),
                exited.unwrap_or_else(|| format!("timed out after {timeout_secs}s"))
            );
            for name in COMPONENTS {
                let log = dir.join(format!("logs/{name}.log"));
                if log.exists() {
                    msg.push_str(&format!("--- {name} log tail ---\n{}\n", tail(&log, 30)));
                }
            }
            panic!("{msg}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Once this process and its servers (stopped by their watchdogs) are gone, release the Service
/// range's route and, if `remove`, delete `dir`. Statics are never dropped, so a `TempDir` kept
/// in one would leak etcd's data. The servers are found by `dir` on their command lines.
fn clean_up_when_done(dir: &Path, remove: bool) {
    let script = r#"
        owner=$1; dir=$2; cp=$3; remove=$4
        while kill -0 "$owner" 2>/dev/null; do sleep 1; done
        for _ in $(seq 1 60); do
          pgrep -f -- "$dir/" >/dev/null || break
          sleep 0.5
        done
        bash "$cp" release-range "$dir"
        if [ "$remove" = 1 ]; then rm -rf "$dir"; fi
    "#;
    let _ = Command::new("setsid")
        .args(["-f", "sh", "-c", script, "cleanup"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(manifest_dir().join("scripts/control-plane.sh"))
        .arg(if remove { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
