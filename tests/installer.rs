//! `bifrost-requirements install` end to end: real python3, uv, pip and Redis; the wheels are
//! built here and installed with `--no-index --find-links`, so no package index is needed.

#[path = "installer/bad_input.rs"]
mod bad_input;
#[path = "installer/cli.rs"]
mod cli;
mod common;
#[path = "installer/failures.rs"]
mod failures;
#[path = "installer/installing.rs"]
mod installing;
#[path = "installer/sources.rs"]
mod sources;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::requirements::content_hash;
use common::checks::{assert_exit, assert_ok_says, assert_says};
use common::services::{self, RedisServer};
use common::wheels::{Wheel, Wheelhouse};
use common::{assert_ok, stderr, stdout};

const MARKER: &str = ".bifrost-requirements.json";
const ALPHA: &str = "bifrost_t_alpha";
const BETA: &str = "bifrost_t_beta";
const GAMMA: &str = "bifrost_t_gamma";

/// One test's world: its own wheelhouse, Redis key and target folder.
struct World {
    wheels: Wheelhouse,
    redis_url: String,
    key: String,
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            wheels: Wheelhouse::new(&[
                Wheel::new(ALPHA, "1.0").requires("bifrost_t_beta>=1"),
                Wheel::new(BETA, "1.0"),
                Wheel::new(GAMMA, "1.0"),
                Wheel::new(GAMMA, "2.0"),
            ]),
            redis_url: services::redis_url(),
            key: services::fresh_key(),
            dir: tempfile::Builder::new()
                .prefix("bifrost-install-")
                .tempdir()
                .unwrap(),
        }
    }

    fn target(&self) -> PathBuf {
        self.dir.path().join("site-packages")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Store `content` the way Bifrost does; returns its hash.
    fn put(&self, content: &str) -> String {
        let p = Payload::new(content);
        self.put_raw(&p.to_json());
        p.hash
    }

    fn put_raw(&self, raw: &str) {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("SET")
            .arg(&self.key)
            .arg(raw)
            .query::<()>(&mut con)
            .unwrap();
    }

    /// A fallback file (`requirements.txt` in this world's folder) holding `content`: its path.
    fn fallback_file(&self, content: &str) -> String {
        let path = self.file("requirements.txt");
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    /// `install` against this world's Redis, key, target and wheelhouse, plus `extra`.
    fn install(&self, extra: &[&str]) -> Output {
        self.install_via(Some(&self.redis_url), extra, &[])
    }

    fn install_via(
        &self,
        redis_url: Option<&str>,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Output {
        let args = self.args(redis_url, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::cli(&args, envs)
    }

    fn args(&self, redis_url: Option<&str>, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "install".into(),
            "--target".into(),
            self.target().display().to_string(),
            "--redis-key".into(),
            self.key.clone(),
            "--no-index".into(),
            "--find-links".into(),
            self.wheels.path_str().into(),
            // Keep "Redis down" tests quick.
            "--redis-timeout".into(),
            "1s".into(),
        ];
        if let Some(url) = redis_url {
            args.extend(["--redis-url".to_string(), url.to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Start `install` without waiting (for signal tests).
    fn spawn(&self, extra: &[&str]) -> Child {
        Command::new(common::bin())
            .args(self.args(Some(&self.redis_url), extra))
            .env_remove("REDIS_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn marker(&self) -> serde_json::Value {
        let raw = std::fs::read_to_string(self.target().join(MARKER)).expect("marker written");
        serde_json::from_str(&raw).expect("marker is JSON")
    }

    fn marker_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.target().join(MARKER)).ok()
    }

    /// `import module; print(module.VERSION)` with PYTHONPATH=target, as a worker would.
    fn import(&self, module: &str) -> Result<String, String> {
        common::wheels::import(&self.target(), module)
    }

    /// Names in the target that belong to install's own machinery (staging, trash, journal).
    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.target())
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n.starts_with(".bifrost-")
                            && n != MARKER
                            && n != ".bifrost-requirements.lock"
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A good install of alpha (+ its dependency beta) to start from; returns the marker bytes.
    fn good_install(&self) -> Vec<u8> {
        self.put(&format!("{ALPHA}==1.0\n"));
        assert_ok(&self.install(&[]));
        assert_eq!(self.import(ALPHA).unwrap(), "1.0");
        self.marker_bytes().unwrap()
    }

    /// The previous good install is intact: importable, marker byte-identical, no leftovers.
    #[track_caller]
    fn assert_untouched(&self, marker_before: &[u8]) {
        assert_eq!(
            self.import(ALPHA).as_deref(),
            Ok("1.0"),
            "previous install not importable"
        );
        assert_eq!(
            self.marker_bytes().as_deref(),
            Some(marker_before),
            "marker changed"
        );
        assert!(
            self.leftovers().is_empty(),
            "left behind: {:?}",
            self.leftovers()
        );
    }
}

/// A world with a good install of alpha, then gamma 2.0 stored, and an installer that never
/// finishes.
struct Stuck {
    w: World,
    /// The good install's marker bytes.
    before: Vec<u8>,
    installer: PathBuf,
    pids: PathBuf,
}

impl Stuck {
    fn new() -> Stuck {
        let w = World::new();
        let before = w.good_install();
        w.put(&format!("{GAMMA}==2.0\n"));
        let (installer, pids) = slow_installer(w.dir.path());
        Stuck {
            w,
            before,
            installer,
            pids,
        }
    }

    /// `--uv` for the installer that never finishes.
    fn uv(&self) -> &str {
        self.installer.to_str().unwrap()
    }

    /// `install` started with that installer, once it runs: the child and the installer's pid
    /// and its child's.
    fn spawn(&self) -> (Child, (i32, i32)) {
        let child = self.w.spawn(&["--uv", self.uv()]);
        (child, wait_for_pids(&self.pids))
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The single JSON object `--json` prints.
fn json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    assert_eq!(out.trim().lines().count(), 1, "one line on stdout:\n{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// Write an executable shell script at `path`.
fn script(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stand-in installer that never finishes: writes "<its pid> <child pid>" to the returned file.
fn slow_installer(dir: &Path) -> (PathBuf, PathBuf) {
    let pids = dir.join("fake-uv.pids");
    let path = dir.join("slow-uv");
    script(
        &path,
        &format!(
            "#!/bin/sh\necho 'fake uv: resolving forever' >&2\nsleep 120 &\necho \"$$ $!\" > '{}.tmp'\nmv '{0}.tmp' '{0}'\nwait\n",
            pids.display()
        ),
    );
    (path, pids)
}

/// The `n` pids a fake installer writes to `file` once it runs.
fn wait_for_pid_list(file: &Path, n: usize) -> Vec<i32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v: Vec<i32> = std::fs::read_to_string(file)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if v.len() == n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the fake installer never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_pids(file: &Path) -> (i32, i32) {
    let v = wait_for_pid_list(file, 2);
    (v[0], v[1])
}

/// Running (zombies count as gone).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn signal(pid: i32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, "--", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}
