//! `bifrost-requirements install` end to end: real python3, uv, pip and Redis; the wheels are
//! built here and installed with `--no-index --find-links`, so no package index is needed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::requirements::content_hash;
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

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// The single JSON object `--json` prints.
fn json(o: &Output) -> serde_json::Value {
    let out = stdout(o);
    assert_eq!(out.trim().lines().count(), 1, "one line on stdout:\n{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// A stand-in installer that never finishes: writes "<its pid> <child pid>" to the returned file.
fn slow_installer(dir: &Path) -> (PathBuf, PathBuf) {
    let pids = dir.join("fake-uv.pids");
    let script = dir.join("slow-uv");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho 'fake uv: resolving forever' >&2\nsleep 120 &\necho \"$$ $!\" > '{}.tmp'\nmv '{0}.tmp' '{0}'\nwait\n",
            pids.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, pids)
}

fn wait_for_pids(file: &Path) -> (i32, i32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            let v: Vec<i32> = s
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if v.len() == 2 {
                return (v[0], v[1]);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the fake installer never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

// ---------------------------------------------------------------------------------------------
// Installing
// ---------------------------------------------------------------------------------------------

#[test]
fn uv_installs_from_redis_with_dependencies_and_writes_the_marker() {
    let w = World::new();
    let content = format!("# workspace packages\n{ALPHA}==1.0\n{GAMMA}>=2\n");
    let hash = w.put(&content);
    let out = w.install(&["--json"]);
    assert_ok(&out);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
    assert_eq!(w.import(BETA).unwrap(), "1.0", "dependency installed");
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");

    let m = w.marker();
    assert_eq!(m["hash"], hash.as_str());
    assert_eq!(m["installer"], "uv");
    assert_eq!(m["package_count"], 2);
    assert_eq!(m["distribution_count"], 3);
    assert_eq!(m["source"], "redis");
    assert!(m["duration_ms"].as_u64().is_some());
    assert!(m["installed_at"].as_str().unwrap().ends_with('Z'));
    assert!(m["python"].as_str().unwrap().contains("python3"));
    assert!(m["python_version"].as_str().unwrap().starts_with("3."));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    let entries: Vec<&str> = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        entries.contains(&ALPHA) && !entries.contains(&".lock"),
        "{entries:?}"
    );
    assert!(
        !w.target().join(".lock").exists(),
        "uv's lock file is not an install entry"
    );
    // Bytecode is not compiled by default.
    assert!(!w.target().join(GAMMA).join("__pycache__").exists());

    let err = stderr(&out);
    for needle in [
        "Redis key",
        &hash[..],
        "2 package(s)",
        "with uv",
        "installed: 2 package(s) (3 distribution(s))",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    let r = json(&out);
    assert_eq!(r["status"], "installed");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["hash"], hash.as_str());
    assert_eq!(r["source"], "redis");
    assert_eq!(r["package_count"], 2);
    assert_eq!(r["installer"], "uv");
    assert_eq!(r["installer_run"], true);
}

#[test]
fn pip_installs_from_redis() {
    let w = World::new();
    let hash = w.put(&format!("{ALPHA}\n"));
    let out = w.install(&["--installer", "pip", "--json"]);
    assert_ok(&out);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
    assert_eq!(w.import(BETA).unwrap(), "1.0");
    let m = w.marker();
    assert_eq!(m["hash"], hash.as_str());
    assert_eq!(m["installer"], "pip");
    assert_eq!(m["distribution_count"], 2);
    assert_eq!(json(&out)["installer"], "pip");
    assert!(stderr(&out).contains("with pip"), "{}", stderr(&out));
    // --no-compile is passed unless --compile-bytecode.
    assert!(!w.target().join(ALPHA).join("__pycache__").exists());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn compile_bytecode_writes_pyc_files() {
    let w = World::new();
    w.put(&format!("{GAMMA}==1.0\n"));
    assert_ok(&w.install(&["--compile-bytecode"]));
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    let pycache = w.target().join(GAMMA).join("__pycache__");
    assert!(pycache.is_dir(), "no {}", pycache.display());
    assert_eq!(w.marker()["compile_bytecode"], true);
}

#[test]
fn second_run_with_the_same_hash_skips_without_running_the_installer() {
    let w = World::new();
    let before = w.good_install();
    // /bin/false as "uv": if the installer ran, the install would fail.
    let out = w.install(&["--uv", "/bin/false", "--json"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("already installed") && err.contains("installer not run"),
        "{err}"
    );
    assert_eq!(
        w.marker_bytes().unwrap(),
        before,
        "marker (and its timestamp) unchanged"
    );
    let r = json(&out);
    assert_eq!(r["status"], "unchanged");
    assert_eq!(r["installer_run"], false);
    assert_eq!(r["source"], "redis");
    w.assert_untouched(&before);

    // With the admitted hash, a restart needs no source at all: Redis may be down.
    let hash = w.marker()["hash"].as_str().unwrap().to_string();
    let out = w.install_via(
        Some(&services::dead_url("redis")),
        &[
            "--uv",
            "/bin/false",
            "--expected-hash",
            &format!("sha256:{hash}"),
            "--json",
        ],
        &[],
    );
    assert_ok(&out);
    assert!(stderr(&out).contains("no source read"), "{}", stderr(&out));
    assert_eq!(json(&out)["source"], "marker");
    w.assert_untouched(&before);
}

#[test]
fn changed_requirements_replace_the_previous_install() {
    let w = World::new();
    w.good_install();
    let hash = w.put(&format!("{GAMMA}==1.0\n"));
    let out = w.install(&[]);
    assert_ok(&out);
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    assert!(
        w.import(ALPHA).is_err(),
        "alpha was removed from requirements"
    );
    assert!(w.import(BETA).is_err(), "so was its dependency");
    assert_eq!(w.marker()["hash"], hash.as_str());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_different_interpreter_reinstalls() {
    let w = World::new();
    w.good_install();
    // Another interpreter path (a wrapper): same hash, but packages are redone for its ABI.
    let wrapper = w.file("python-wrapper");
    std::fs::write(&wrapper, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.install(&["--python", wrapper.to_str().unwrap()]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("interpreter changed") && err.contains("installed:"),
        "{err}"
    );
    assert_eq!(w.marker()["python"], wrapper.to_str().unwrap());
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
}

#[test]
fn concurrent_installs_into_one_target_serialize() {
    let w = World::new();
    w.put(&format!("{ALPHA}\n{GAMMA}\n"));
    let a = w.spawn(&[]);
    let b = w.spawn(&[]);
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outs {
        assert_ok(o);
    }
    let installed = outs
        .iter()
        .filter(|o| stderr(o).lines().any(|l| l.starts_with("installed: ")))
        .count();
    let skipped = outs
        .iter()
        .filter(|o| stderr(o).contains("already installed"))
        .count();
    assert_eq!(
        (installed, skipped),
        (1, 1),
        "one installs, the other finds it done"
    );
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn environment_variables_replace_flags() {
    let w = World::new();
    let hash = w.put(&format!("{GAMMA}==1.0\n"));
    let target = w.target().display().to_string();
    let out = common::cli(
        &["install"],
        &[
            ("BIFROST_INSTALL_TARGET", &target),
            ("BIFROST_INSTALL_INSTALLER", "uv"),
            ("BIFROST_INSTALL_FIND_LINKS", w.wheels.path_str()),
            ("BIFROST_INSTALL_NO_INDEX", "true"),
            ("BIFROST_INSTALL_ON_FAILURE", "fail"),
            ("BIFROST_INSTALL_TIMEOUT", "2m"),
            ("BIFROST_INSTALL_EXPECTED_HASH", &hash),
            ("BIFROST_INSTALL_JSON", "1"),
            ("REDIS_URL", &w.redis_url),
            ("BIFROST_REQUIREMENTS_REDIS_KEY", &w.key),
        ],
    );
    assert_ok(&out);
    assert_eq!(json(&out)["status"], "installed");
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

#[test]
fn redis_down_uses_the_fallback_file_plain_or_json() {
    let w = World::new();
    let dead = services::dead_url("redis");

    // Plain requirements.txt, as a ConfigMap key, with its sibling `hash` key.
    let cm = w.file("configmap");
    std::fs::create_dir(&cm).unwrap();
    let content = format!("{GAMMA}==1.0\n");
    std::fs::write(cm.join("requirements.txt"), &content).unwrap();
    std::fs::write(cm.join("hash"), content_hash(&content)).unwrap();
    let fallback = cm.join("requirements.txt");
    let out = w.install_via(
        Some(&dead),
        &["--fallback-file", fallback.to_str().unwrap(), "--json"],
        &[],
    );
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("Redis unusable") && err.contains("using the fallback file"),
        "{err}"
    );
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    assert_eq!(w.marker()["source"], "fallback-file");
    assert_eq!(json(&out)["source"], "fallback-file");

    // Bifrost's JSON payload as the snapshot.
    let snapshot = w.file("payload.json");
    std::fs::write(&snapshot, Payload::new(format!("{GAMMA}==2.0\n")).to_json()).unwrap();
    let out = w.install_via(
        Some(&dead),
        &["--fallback-file", snapshot.to_str().unwrap()],
        &[],
    );
    assert_ok(&out);
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");

    // Without any Redis URL at all, the fallback file is the source.
    std::fs::write(&snapshot, Payload::new(format!("{GAMMA}==1.0\n")).to_json()).unwrap();
    let out = w.install_via(None, &["--fallback-file", snapshot.to_str().unwrap()], &[]);
    assert_ok(&out);
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
}

#[test]
fn missing_redis_key_falls_back_to_the_file_and_without_one_installs_nothing() {
    let w = World::new();
    let out = w.install(&["--json"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("nothing to install") && err.contains("does not exist"),
        "{err}"
    );
    assert_eq!(json(&out)["status"], "absent");
    assert!(w.marker_bytes().is_none(), "no marker for nothing");

    let fallback = w.file("requirements.txt");
    std::fs::write(&fallback, format!("{GAMMA}==2.0\n")).unwrap();
    assert_ok(&w.install(&["--fallback-file", fallback.to_str().unwrap()]));
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
}

#[test]
fn redis_down_without_fallback_continue_warns_and_fail_exits_4() {
    let w = World::new();
    let before = w.good_install();
    let dead = services::dead_url("redis");
    let missing = w.file("not-mounted/requirements.txt");

    let out = w.install_via(
        Some(&dead),
        &[
            "--on-failure",
            "continue",
            "--fallback-file",
            missing.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("warning: install failed; continuing"), "{err}");
    assert!(err.contains("cannot connect to Redis"), "{err}");
    assert!(err.contains("still holds the previous install"), "{err}");
    let r = json(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["error"]["reason"], "RedisUnreachable");
    w.assert_untouched(&before);

    let out = w.install_via(Some(&dead), &[], &[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error: cannot connect to Redis"),
        "{}",
        stderr(&out)
    );
    w.assert_untouched(&before);
}

// ---------------------------------------------------------------------------------------------
// Bad input: target untouched
// ---------------------------------------------------------------------------------------------

#[test]
fn corrupted_redis_json_is_refused_or_replaced_by_the_fallback() {
    let w = World::new();
    let before = w.good_install();
    w.put_raw("{\"content\": \"bifrost_t_gamma\\n\", \"hash\": ");
    let out = w.install(&[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("unusable value") && err.contains("not the JSON object"),
        "{err}"
    );
    w.assert_untouched(&before);

    // With a good snapshot, the worker still gets its packages (and is told why).
    let fallback = w.file("requirements.txt");
    std::fs::write(&fallback, format!("{GAMMA}==1.0\n")).unwrap();
    let out = w.install(&["--fallback-file", fallback.to_str().unwrap()]);
    assert_ok(&out);
    assert!(stderr(&out).contains("Redis unusable"), "{}", stderr(&out));
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
}

#[test]
fn hash_mismatches_are_refused() {
    let w = World::new();
    let before = w.good_install();
    // Redis: content and hash disagree.
    w.put_raw(&format!(
        "{{\"content\": \"{GAMMA}\\n\", \"hash\": \"{}\"}}",
        content_hash("something else\n")
    ));
    let out = w.install(&[]);
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert!(stderr(&out).contains("hash mismatch"), "{}", stderr(&out));
    w.assert_untouched(&before);

    // Fallback file: its sibling `hash` disagrees with it.
    let cm = w.file("cm");
    std::fs::create_dir(&cm).unwrap();
    std::fs::write(cm.join("requirements.txt"), format!("{GAMMA}\n")).unwrap();
    std::fs::write(cm.join("hash"), content_hash("other\n")).unwrap();
    let fallback = cm.join("requirements.txt");
    let out = w.install_via(
        Some(&services::dead_url("redis")),
        &["--fallback-file", fallback.to_str().unwrap()],
        &[],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("fallback file") && err.contains("hash mismatch"),
        "{err}"
    );
    w.assert_untouched(&before);
}

#[test]
fn policy_violations_name_the_line_and_install_nothing() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!(
        "{GAMMA}\n--extra-index-url https://evil.example/simple\n-e ./local\n"
    ));
    // /bin/false as uv: had anything run, the message would be uv's failure.
    let out = w.install(&["--uv", "/bin/false", "--json"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("line 2") && err.contains("--extra-index-url"),
        "{err}"
    );
    assert!(err.contains("line 3") && err.contains("editable"), "{err}");
    assert_eq!(json(&out)["error"]["reason"], "InvalidRequirements");
    w.assert_untouched(&before);

    // --on-failure continue: the worker starts, with the previous install, and is told why.
    let out = w.install(&["--uv", "/bin/false", "--on-failure", "continue"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: install failed") && stderr(&out).contains("line 2"));
    w.assert_untouched(&before);

    // An index the administrator configured is allowed in the file.
    w.put(&format!(
        "--extra-index-url {}\n{GAMMA}==1.0\n",
        "https://pypi.internal/simple"
    ));
    let out = w.install(&[
        "--extra-index-url",
        "https://pypi.internal/simple",
        "--uv",
        "/bin/false",
    ]);
    assert_eq!(
        code(&out),
        5,
        "policy passed, so /bin/false ran: {}",
        stderr(&out)
    );
}

#[test]
fn a_package_that_does_not_exist_fails_with_the_installers_reason() {
    for installer in ["uv", "pip"] {
        let w = World::new();
        let before = w.good_install();
        w.put("bifrost_t_nonexistent==9.9\n");
        let out = w.install(&["--installer", installer]);
        assert_eq!(code(&out), 5, "{installer}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "error: installation failed: {installer} failed (exit status"
            )),
            "{err}"
        );
        assert!(
            err.contains("bifrost_t_nonexistent") || err.contains("bifrost-t-nonexistent"),
            "{err}"
        );
        w.assert_untouched(&before);
    }
}

#[test]
fn the_timeout_stops_the_installers_whole_process_group() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!("{GAMMA}==2.0\n"));
    let (script, pids) = slow_installer(w.dir.path());
    let started = Instant::now();
    let out = w.install(&[
        "--uv",
        script.to_str().unwrap(),
        "--timeout",
        "2s",
        "--json",
    ]);
    let took = started.elapsed();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("did not finish within 2 s (--timeout)"),
        "{err}"
    );
    assert!(
        err.contains("fake uv: resolving forever"),
        "installer output forwarded: {err}"
    );
    let (shell, sleeper) = wait_for_pids(&pids);
    assert!(wait_gone(shell), "installer {shell} still running");
    assert!(
        wait_gone(sleeper),
        "its child {sleeper} still running: the group was not stopped"
    );
    assert_eq!(json(&out)["error"]["reason"], "InstallFailed");
    w.assert_untouched(&before);
    assert!(w.import(GAMMA).is_err());
}

#[test]
fn sigterm_stops_the_installer_and_exits_143() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!("{GAMMA}==2.0\n"));
    let (script, pids) = slow_installer(w.dir.path());
    let child = w.spawn(&["--uv", script.to_str().unwrap()]);
    let (shell, sleeper) = wait_for_pids(&pids);
    signal(child.id() as i32, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 143, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("interrupted by SIGTERM"),
        "{}",
        stderr(&out)
    );
    assert!(
        wait_gone(shell) && wait_gone(sleeper),
        "installer group survived"
    );
    w.assert_untouched(&before);
}

#[test]
fn a_killed_install_leaves_the_previous_marker_and_the_next_run_cleans_up() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!("{GAMMA}==2.0\n"));
    let (script, pids) = slow_installer(w.dir.path());
    let mut child = w.spawn(&["--uv", script.to_str().unwrap()]);
    let (shell, sleeper) = wait_for_pids(&pids);
    signal(child.id() as i32, "-KILL");
    child.wait().unwrap();
    // The installer guard takes the installer and its child with it (it used to outlive us).
    assert!(wait_gone(shell) && wait_gone(sleeper));

    // Whatever was staged, the marker still names the previous install, which still imports.
    assert_eq!(w.marker_bytes().unwrap(), before);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
    assert!(
        !w.leftovers().is_empty(),
        "the killed run's staging folder is there"
    );

    let out = w.install(&[]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(err.contains("left behind by an interrupted run"), "{err}");
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn sigkill_of_install_takes_the_installer_and_all_its_descendants_with_it() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!("{GAMMA}==2.0\n"));
    // An installer with a grandchild in its process group and one that left it (setsid), as a
    // build backend's daemon might.
    let pids = w.dir.path().join("tree.pids");
    let script = w.dir.path().join("tree-uv");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nsleep 300 &\nA=$!\nsetsid sleep 301 &\nB=$!\n\
             echo \"$$ $A $B\" > '{0}.tmp'\nmv '{0}.tmp' '{0}'\nwait\n",
            pids.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut child = w.spawn(&["--uv", script.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let tree: Vec<i32> = loop {
        let v: Vec<i32> = std::fs::read_to_string(&pids)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if v.len() == 3 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the fake installer never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(tree.iter().all(|p| alive(*p)), "{tree:?}");
    let killed = Instant::now();
    signal(child.id() as i32, "-KILL");
    child.wait().unwrap();
    let gone_within = |pid: i32| {
        while alive(pid) {
            if killed.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    for (pid, what) in tree
        .iter()
        .zip(["installer", "its child", "its setsid child"])
    {
        assert!(
            gone_within(*pid),
            "{what} {pid} outlived the killed install"
        );
    }
    eprintln!(
        "installer tree gone {} ms after SIGKILL of install",
        killed.elapsed().as_millis()
    );
    // The next run removes the killed run's staging folder (its pid is dead) and nothing comes
    // back afterwards: no orphan is left writing into it.
    assert!(!w.leftovers().is_empty(), "the killed run staged nothing");
    let out = w.install(&[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("left behind by an interrupted run"),
        "{}",
        stderr(&out)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    assert_ne!(w.marker_bytes().unwrap(), before);
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
}

// ---------------------------------------------------------------------------------------------
// --expected-hash
// ---------------------------------------------------------------------------------------------

#[test]
fn expected_hash_prefers_the_source_that_holds_it() {
    let w = World::new();
    let old = format!("{GAMMA}==1.0\n");
    let new = format!("{GAMMA}==2.0\n");
    let old_hash = content_hash(&old);
    let new_hash = w.put(&new);
    let fallback = w.file("requirements.txt");
    std::fs::write(&fallback, &old).unwrap();
    let fb = fallback.to_str().unwrap();

    // The pod was admitted for the old hash; Redis already has the new one: install the old.
    let upper = format!("sha256:{}", old_hash.to_uppercase());
    let out = w.install(&["--fallback-file", fb, "--expected-hash", &upper, "--json"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "Redis holds sha256 {new_hash}, not the expected {old_hash}"
        )),
        "{err}"
    );
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    let r = json(&out);
    assert_eq!(r["source"], "fallback-file");
    assert_eq!(r["expected_hash"], old_hash.as_str());

    // Expected matches Redis: Redis, no warning.
    let out = w.install(&["--fallback-file", fb, "--expected-hash", &new_hash]);
    assert_ok(&out);
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    assert_eq!(w.marker()["source"], "redis");

    // Neither source holds it: install the newest (Redis) and say so.
    let other = content_hash("something else entirely\n");
    std::fs::write(&fallback, format!("{ALPHA}\n")).unwrap();
    let out = w.install(&["--fallback-file", fb, "--expected-hash", &other]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no source holds the expected sha256 {other}")),
        "{err}"
    );
    assert!(
        err.contains("installing the newest, from the Redis key"),
        "{err}"
    );
    assert_eq!(w.marker()["hash"], new_hash.as_str());

    // Redis down and the file does not hold it either: the file is all there is.
    let out = w.install_via(
        Some(&services::dead_url("redis")),
        &["--fallback-file", fb, "--expected-hash", &other],
        &[],
    );
    assert_ok(&out);
    assert!(
        stderr(&out).contains("installing the newest, from the fallback file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
}

// ---------------------------------------------------------------------------------------------
// Empty content, CLI errors
// ---------------------------------------------------------------------------------------------

#[test]
fn empty_requirements_succeed_and_clear_the_previous_install() {
    let w = World::new();
    w.good_install();
    let hash = w.put("# no packages yet\n\n");
    let out = w.install(&["--uv", "/bin/false", "--json"]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains("nothing to install") && err.contains("lists no packages"),
        "{err}"
    );
    assert!(err.contains("removed the previous install"), "{err}");
    assert!(w.import(ALPHA).is_err(), "requirements are empty now");
    let m = w.marker();
    assert_eq!(m["hash"], hash.as_str());
    assert_eq!(m["package_count"], 0);
    assert_eq!(json(&out)["status"], "empty");

    // Marked, so the next start is free.
    let out = w.install(&["--uv", "/bin/false"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("already installed"),
        "{}",
        stderr(&out)
    );

    // Truly empty content (Bifrost's "no row" payload) on a fresh target.
    let fresh = World::new();
    fresh.put("");
    let out = fresh.install(&[]);
    assert_ok(&out);
    assert_eq!(fresh.marker()["hash"], content_hash("").as_str());
}

#[test]
fn malformed_arguments_exit_2_and_touch_nothing() {
    let w = World::new();
    let target = w.target().display().to_string();
    let url = w.redis_url.clone();
    let base = [
        "install",
        "--target",
        target.as_str(),
        "--redis-url",
        url.as_str(),
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--installer", "conda"], "conda"),
        (&["--timeout", "-3"], "-3"),
        (&["--timeout", "0"], "greater than zero"),
        (&["--timeout", "3 fortnights"], "unknown unit"),
        (&["--on-failure", "maybe"], "maybe"),
        (&["--expected-hash", "abc123"], "not a SHA-256"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let out = common::cli(&args, &[]);
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
    let out = common::cli(&["install", "--redis-url", &url], &[]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("--target"), "{}", stderr(&out));
    // No source configured is a configuration error even under --on-failure continue.
    let out = common::cli(
        &["install", "--target", &target, "--on-failure", "continue"],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to install from")
            && stderr(&out).contains("(REDIS_URL or BIFROST_REDIS_URL)"),
        "{}",
        stderr(&out)
    );
    assert!(!w.target().exists(), "no flag error may create the target");
}

#[test]
fn help_documents_the_exit_codes_and_environment() {
    let out = common::cli(&["install", "--help"], &[]);
    assert_ok(&out);
    let help = stdout(&out);
    for needle in [
        "Exit codes",
        "143",
        "--on-failure",
        "BIFROST_INSTALL_TARGET",
        "BIFROST_INSTALL_EXPECTED_HASH",
        "--compile-bytecode",
        "--fallback-file",
        "--allow-index-url",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn an_own_redis_that_stops_mid_life_falls_back() {
    let redis = RedisServer::start();
    let w = World::new();
    let key_url = redis.url();
    let hash = {
        let p = Payload::new(format!("{GAMMA}==1.0\n"));
        let client = redis::Client::open(key_url.as_str()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("SET")
            .arg(&w.key)
            .arg(p.to_json())
            .query::<()>(&mut con)
            .unwrap();
        p.hash
    };
    let fallback = w.file("requirements.txt");
    std::fs::write(&fallback, format!("{GAMMA}==2.0\n")).unwrap();
    let fb = fallback.to_str().unwrap();
    assert_ok(&w.install_via(Some(&key_url), &["--fallback-file", fb], &[]));
    assert_eq!(w.marker()["hash"], hash.as_str());
    redis.stop();
    let out = w.install_via(Some(&key_url), &["--fallback-file", fb], &[]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("using the fallback file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
}

#[test]
fn relative_paths_are_resolved_against_the_callers_directory() {
    let w = World::new();
    let hash = w.put(&format!("{GAMMA}==2.0\n"));
    std::fs::create_dir(w.file("wh")).unwrap();
    Wheel::new(GAMMA, "2.0").build(&w.file("wh"));
    let out = Command::new(common::bin())
        .current_dir(w.dir.path())
        .env_remove("REDIS_URL")
        .args([
            "install",
            "--target",
            "site-packages",
            "--redis-url",
            &w.redis_url,
        ])
        .args(["--redis-key", &w.key, "--no-index", "--find-links", "wh"])
        .args(["--cache-dir", "uv-cache"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(w.marker()["hash"], hash.as_str());
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    let cache = std::fs::read_dir(w.file("uv-cache")).unwrap().count();
    assert!(
        cache > 0,
        "uv used ./uv-cache, not a folder relative to its own working directory"
    );
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn waiting_for_another_install_stays_interruptible() {
    let w = World::new();
    w.put(&format!("{GAMMA}\n"));
    std::fs::create_dir_all(w.target()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(w.target().join(".bifrost-requirements.lock"))
        .unwrap();
    lock.lock().unwrap(); // "another install" holds the target
    let mut child = w.spawn(&[]);
    // Signal once it says it is waiting (its handlers are installed by then).
    let (tx, rx) = std::sync::mpsc::channel();
    let stream = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waiting for it to finish") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("install never said it was waiting for the lock");
    signal(child.id() as i32, "-TERM");
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("another install into"), "{err}");
    assert!(
        err.contains("interrupted by SIGTERM while waiting"),
        "{err}"
    );
    assert!(w.marker_bytes().is_none());
    drop(lock);
}

/// `install` as a pod runs it: stderr a pipe, the given log format (none: the default), no
/// colour or format settings inherited from the test's environment.
fn install_piped(w: &World, format: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(common::bin());
    for var in ["NO_COLOR", "BIFROST_LOG_FORMAT", "RUST_LOG", "REDIS_URL"] {
        cmd.env_remove(var);
    }
    if let Some(f) = format {
        cmd.args(["--log-format", f]);
    }
    cmd.args(w.args(Some(&w.redis_url), extra))
        // Debug: every kind of line there is, including the installer's command line.
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every stderr line as a JSON object (panics naming the line that is not one).
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    let err = stderr(o);
    err.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}\n{err}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{l}"
            );
            v
        })
        .collect()
}

#[test]
fn logs_carry_no_colour_codes_on_a_pipe_and_json_is_json_throughout() {
    let w = World::new();
    w.put(&format!("{ALPHA}==1.0\n"));
    let text = install_piped(&w, None, &[]);
    assert_ok(&text);
    let err = stderr(&text);
    assert!(!err.contains("\x1b["), "colour codes on a pipe:\n{err}");
    assert!(err.contains("  uv | "), "uv's lines are relayed:\n{err}");

    // A new world: the second run would only find the marker.
    let w = World::new();
    w.put(&format!("{ALPHA}==1.0\n"));
    let json = install_piped(&w, Some("json"), &["--json"]);
    assert_ok(&json);
    let lines = json_lines(&json);
    assert!(!stderr(&json).contains("\x1b["));
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap().to_string();
    assert!(
        lines.iter().any(|v| v["fields"]["program"] == "uv"),
        "uv's lines are JSON objects too:\n{}",
        stderr(&json)
    );
    assert!(
        lines
            .iter()
            .any(|v| message(v).starts_with("installed: 1 package(s)") && v["level"] == "INFO"),
        "the summary is a JSON object:\n{}",
        stderr(&json)
    );
    // stdout keeps the one --json report.
    assert_eq!(self::json(&json)["status"], "installed");
}

#[test]
fn installer_output_is_redacted_and_uncoloured_in_both_formats() {
    let w = World::new();
    w.put(&format!("{ALPHA}==1.0\n"));
    // A stand-in uv that says what it was told and fails with a credentialled index URL in
    // colour, as uv does when an index refuses it.
    let fake = w.file("fake-uv");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         echo \"args: $*\" >&2\n\
         echo \"NO_COLOR=$NO_COLOR\" >&2\n\
         printf '\\033[1;31merror\\033[0m: Failed to fetch: https://alice:hunter2@pkgs.example.com/simple/x/\\n' >&2\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.display().to_string();
    for format in ["text", "json"] {
        let out = install_piped(&w, Some(format), &["--uv", &fake]);
        assert_eq!(code(&out), 5, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            !err.contains("hunter2"),
            "{format}: the password leaked:\n{err}"
        );
        assert!(
            err.contains("alice:***@pkgs.example.com"),
            "{format}:\n{err}"
        );
        assert!(
            !err.contains("\x1b[") && !err.contains("\\u001b"),
            "{format}:\n{err}"
        );
        assert!(
            err.contains("--color never"),
            "{format}: uv told no colour:\n{err}"
        );
        assert!(err.contains("NO_COLOR=1"), "{format}:\n{err}");
        if format == "json" {
            let lines = json_lines(&out);
            let last = lines.last().unwrap();
            assert_eq!(last["level"], "ERROR", "{err}");
            let msg = last["fields"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("error: installation failed: uv failed"),
                "{msg}"
            );
            assert!(
                msg.contains("alice:***@"),
                "the tail is redacted too: {msg}"
            );
        }
    }
}

/// `--user-base BASE` installs into the user site the real python3 reports for
/// `PYTHONUSERBASE=BASE`, so a worker with that variable imports the packages while its own
/// `PYTHONPATH` (here an `/app`-like folder) keeps working, and its own `pip install -r` finds
/// them already satisfied without an index.
#[test]
fn user_base_installs_into_the_interpreters_user_site_and_leaves_pythonpath_alone() {
    let w = World::new();
    let base = w.file("userbase");
    let content = format!("{ALPHA}==1.0\n{GAMMA}>=2\n");
    let hash = w.put(&content);
    let mut args = w.args(Some(&w.redis_url), &["--json"]);
    args[1] = "--user-base".into();
    args[2] = base.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::cli(&args, &[]);
    assert_ok(&out);

    let python = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .env("PYTHONUSERBASE", &base)
            .env("PYTHONPATH", w.file("app"))
            .env_remove("PYTHONNOUSERSITE")
            .env("PIP_NO_INDEX", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .output()
            .unwrap()
    };
    let site = stdout(&python(&[
        "-c",
        "import site; print(site.getusersitepackages())",
    ]));
    let site = PathBuf::from(site.trim());
    assert!(
        site.starts_with(&base) && site != base,
        "{}",
        site.display()
    );
    let report = json(&out);
    assert_eq!(report["target"], site.display().to_string());
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join(MARKER)).expect("marker in the user site"))
            .unwrap();
    assert_eq!(marker["hash"], hash.as_str());

    std::fs::create_dir_all(w.file("app/appmod")).unwrap();
    std::fs::write(w.file("app/appmod/__init__.py"), "WHERE = 'app'\n").unwrap();
    std::fs::write(
        w.file("app/appmod/__main__.py"),
        format!("import {ALPHA}, {GAMMA}\nprint('main', {ALPHA}.VERSION, {GAMMA}.VERSION)\n"),
    )
    .unwrap();
    let both = python(&[
        "-c",
        &format!("import appmod, {ALPHA}, {BETA}; print(appmod.WHERE, {ALPHA}.VERSION)"),
    ]);
    assert_eq!(stdout(&both).trim(), "app 1.0", "{}", stderr(&both));
    let main = python(&["-m", "appmod"]);
    assert_eq!(stdout(&main).trim(), "main 1.0 2.0", "{}", stderr(&main));
    std::fs::write(w.file("requirements.txt"), &content).unwrap();
    let pip = python(&[
        "-m",
        "pip",
        "install",
        "-r",
        &w.file("requirements.txt").display().to_string(),
    ]);
    assert!(pip.status.success(), "{}", stderr(&pip));
    let said = stdout(&pip);
    for name in [ALPHA, GAMMA] {
        assert!(
            said.contains(&format!("Requirement already satisfied: {name}")),
            "{said}"
        );
    }

    // A restart with the same base resolves the same folder and finds its marker.
    let again = common::cli(&args, &[]);
    assert_ok(&again);
    assert_eq!(json(&again)["status"], "unchanged");
    assert_eq!(json(&again)["target"], site.display().to_string());
    assert!(
        std::fs::read_dir(&base).unwrap().count() == 1,
        "only lib/ under the base"
    );

    // One destination only.
    let both_flags = common::cli(
        &[
            "install",
            "--target",
            "/tmp/x",
            "--user-base",
            "/tmp/y",
            "--fallback-file",
            "/tmp/z",
        ],
        &[],
    );
    assert_eq!(code(&both_flags), 2, "{}", stderr(&both_flags));
}

// ---------------------------------------------------------------------------------------------
// One bad package fails only itself
// ---------------------------------------------------------------------------------------------

/// A requirement no index holds.
const MISSING: &str = "bifrost_t_missing";
/// A requirement published only as a source distribution.
const SOURCE_ONLY: &str = "bifrost_t_src";

/// Publish `name` 1.0 as a source distribution only (a tar.gz with PKG-INFO and pyproject.toml).
fn publish_sdist(wheels: &Path, name: &str) {
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join(format!("{name}-1.0"));
    std::fs::create_dir(&root).unwrap();
    std::fs::write(
        root.join("PKG-INFO"),
        format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("pyproject.toml"),
        "[build-system]\nrequires = []\nbuild-backend = \"setuptools.build_meta\"\n",
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("-C")
        .arg(src.path())
        .arg("-czf")
        .arg(wheels.join(format!("{name}-1.0.tar.gz")))
        .arg(format!("{name}-1.0"))
        .status()
        .unwrap();
    assert!(st.success(), "tar");
}

/// Normalized names and reasons of the report's `failed_packages`.
fn failed_packages(report: &serde_json::Value) -> Vec<(String, String)> {
    report["failed_packages"]
        .as_array()
        .unwrap_or_else(|| panic!("no failed_packages: {report}"))
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn one_bad_package_under_continue_installs_the_rest_and_the_next_run_retries_only_it() {
    for installer in ["uv", "pip"] {
        let w = World::new();
        publish_sdist(w.wheels.path(), SOURCE_ONLY);
        let log = w.file("termination-log");
        let log_arg = log.display().to_string();
        let args = [
            "--installer",
            installer,
            "--only-binary",
            "--on-failure",
            "continue",
            "--json",
            "--termination-log",
            &log_arg,
        ];
        let hash = w.put(&format!(
            "{ALPHA}==1.0\n{MISSING}==1.0\n{GAMMA}==1.0\n{SOURCE_ONLY}==1.0\n"
        ));
        let out = w.install(&args);
        assert_eq!(code(&out), 0, "{installer}: {}", stderr(&out));
        let report = json(&out);
        assert_eq!(report["status"], "partial", "{installer}: {report}");
        assert_eq!(report["package_count"], 4);
        assert_eq!(report["installed_count"], 2);
        let source_only_reason = match installer {
            "uv" => "no wheel, source only",
            _ => "no matching distribution",
        };
        let missing_reason = match installer {
            "uv" => "not found on the index",
            _ => "no matching distribution",
        };
        assert_eq!(
            failed_packages(&report),
            [
                ("bifrost-t-missing".into(), missing_reason.into()),
                ("bifrost-t-src".into(), source_only_reason.into()),
            ],
            "{installer}: {report}"
        );
        for f in report["failed_packages"].as_array().unwrap() {
            let error = f["error"].as_str().unwrap();
            let first = error.lines().next().unwrap();
            assert!(
                first.starts_with("error: No solution found") || first.starts_with("ERROR: "),
                "{installer}: the error starts at the installer's verdict: {error}"
            );
            let name = f["name"].as_str().unwrap();
            assert!(
                error.contains(name) || error.contains(&name.replace('-', "_")),
                "{installer}: {error}"
            );
        }
        // The good ones import with the worker's python.
        assert_eq!(w.import(ALPHA).as_deref(), Ok("1.0"), "{installer}");
        assert_eq!(w.import(BETA).as_deref(), Ok("1.0"), "{installer}");
        assert_eq!(w.import(GAMMA).as_deref(), Ok("1.0"), "{installer}");
        assert!(w.import(MISSING).is_err());
        let marker = w.marker();
        assert_eq!(marker["hash"], hash.as_str());
        let names: Vec<&str> = marker["failed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["bifrost-t-missing", "bifrost-t-src"], "{marker}");
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!(
                "installed 2/4; failed: bifrost-t-missing ({missing_reason}), \
                 bifrost-t-src ({source_only_reason})"
            )
        );
        assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());

        // Between runs the missing package is published and the good ones' wheels disappear:
        // a run that tried anything but the failed ones again would fail on those.
        Wheel::new(MISSING, "1.0").build(w.wheels.path());
        for f in std::fs::read_dir(w.wheels.path()).unwrap().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if [ALPHA, BETA, GAMMA].iter().any(|p| n.starts_with(p)) {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        let out = w.install(&args);
        assert_eq!(code(&out), 0, "{installer}: {}", stderr(&out));
        let report = json(&out);
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "retrying with {installer} the 2 package(s) that failed last time"
            )),
            "{err}"
        );
        assert!(!err.contains("installing 4 package(s)"), "{err}");
        assert_eq!(report["status"], "partial", "{report}");
        assert_eq!(report["installed_count"], 3);
        assert_eq!(
            failed_packages(&report),
            [("bifrost-t-src".into(), source_only_reason.into())]
        );
        assert_eq!(w.import(MISSING).as_deref(), Ok("1.0"), "{installer}");
        assert_eq!(w.import(ALPHA).as_deref(), Ok("1.0"), "{installer}: kept");
        assert_eq!(w.import(GAMMA).as_deref(), Ok("1.0"), "{installer}: kept");
        assert_eq!(w.marker()["failed"].as_array().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            format!("installed 3/4; failed: bifrost-t-src ({source_only_reason})")
        );

        // Published as a wheel, the source-only package installs on the next retry, and the
        // marker is complete: the run after that is "unchanged".
        Wheel::new(SOURCE_ONLY, "1.0").build(w.wheels.path());
        let out = w.install(&args);
        assert_eq!(code(&out), 0, "{installer}: {}", stderr(&out));
        let report = json(&out);
        assert_eq!(report["status"], "installed", "{report}");
        assert_eq!(report["failed_packages"], serde_json::json!([]));
        assert!(w.marker().get("failed").is_none(), "{}", w.marker());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "installed 4/4");
        let out = w.install(&args);
        assert_eq!(json(&out)["status"], "unchanged");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "installed 4/4");
    }
}

#[test]
fn one_bad_package_under_fail_exits_non_zero_and_leaves_the_target_as_it_was() {
    for installer in ["uv", "pip"] {
        let w = World::new();
        let before = w.good_install();
        let log = w.file("termination-log");
        let content = format!("{ALPHA}==1.0\n{MISSING}==1.0\n{GAMMA}==1.0\n");
        w.put(&content);
        // The file through the environment variable this time.
        let out = w.install_via(
            Some(&w.redis_url),
            &["--installer", installer, "--json"],
            &[("BIFROST_INSTALL_TERMINATION_LOG", log.to_str().unwrap())],
        );
        assert_eq!(code(&out), 5, "{installer}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("1 of 3 package(s) did not install: bifrost-t-missing")
                && err.contains("the 2 that did are not applied (--on-failure fail)"),
            "{installer}: {err}"
        );
        let report = json(&out);
        assert_eq!(report["status"], "failed");
        assert_eq!(report["failed_packages"][0]["name"], "bifrost-t-missing");
        let message = std::fs::read_to_string(&log).unwrap();
        assert!(
            message.starts_with(
                "installed 0/3; kept the previous install; failed: bifrost-t-missing ("
            ),
            "{message}"
        );
        w.assert_untouched(&before);
        assert!(
            w.import(GAMMA).is_err(),
            "{installer}: nothing was swapped in"
        );
    }
}

#[test]
fn per_package_attempts_share_the_one_timeout() {
    let w = World::new();
    let real_uv = Command::new("sh")
        .args(["-c", "command -v uv"])
        .output()
        .unwrap();
    let real_uv = stdout(&real_uv).trim().to_string();
    assert!(!real_uv.is_empty(), "uv on PATH");
    // uv, except that a file asking for one `bifrost_t_hang*` package alone hangs.
    let script = w.file("hanging-uv");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nreq=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = -r ] && req=$a; prev=$a; done\n\
             if [ \"$(grep -c . \"$req\")\" = 1 ] && grep -q '^bifrost_t_hang' \"$req\"; then exec sleep 60; fi\n\
             exec '{real_uv}' \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = w.file("termination-log");
    w.put(&format!(
        "{GAMMA}==1.0\nbifrost_t_hang_a==1.0\nbifrost_t_hang_b==1.0\n"
    ));
    let started = Instant::now();
    let out = w.install(&[
        "--uv",
        script.to_str().unwrap(),
        "--timeout",
        "8s",
        "--on-failure",
        "continue",
        "--json",
        "--termination-log",
        log.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Two hanging attempts with 8 s each would take 16 s; sharing the deadline, ~8 s.
    assert!(
        took < Duration::from_secs(14),
        "took {took:?}: {}",
        stderr(&out)
    );
    let report = json(&out);
    assert_eq!(
        failed_packages(&report),
        [
            ("bifrost-t-hang-a".into(), "timed out".into()),
            (
                "bifrost-t-hang-b".into(),
                "not attempted, --timeout spent".into()
            ),
        ],
        "{report}"
    );
    assert_eq!(w.import(GAMMA).as_deref(), Ok("1.0"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "installed 1/3; failed: bifrost-t-hang-a (timed out), \
         bifrost-t-hang-b (not attempted, --timeout spent)"
    );
}

#[test]
fn the_termination_message_says_installed_or_the_error() {
    let w = World::new();
    let log = w.file("termination-log");
    let log_arg = log.to_str().unwrap();
    w.put(&format!("{ALPHA}==1.0\n{GAMMA}==2.0\n"));
    assert_ok(&w.install(&["--termination-log", log_arg]));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "installed 2/2");
    // Redis down, no fallback: the error's first line, the password masked.
    let out = w.install_via(
        Some("redis://:hunter22@127.0.0.1:1/0"),
        &["--termination-log", log_arg],
        &[],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        !message.contains("hunter22") && !message.contains('\n'),
        "{message}"
    );
    assert!(message.contains("127.0.0.1:1"), "{message}");
}
