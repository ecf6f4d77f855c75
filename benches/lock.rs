//! Lock benchmark (not a test): run with `cargo bench --bench lock`.
//!
//! On a 12-distribution set served over HTTP by a local PEP 503 index (three requirements a user
//! writes, nine more pulled in by them, older releases beside the newest):
//!
//! 1. Cold `install` from the controller's lock (`requirements.lock` beside the fallback file:
//!    `--no-deps --require-hashes`, nothing resolved) vs from requirements.txt (the pod
//!    resolves): `BENCH_RUNS` (default 10) runs of each, interleaved, every one into a fresh
//!    target with a fresh `--cache-dir`; median, p95 and the ratio, with uv and with pip, with
//!    the index on loopback and answering `BENCH_INDEX_LATENCY_MS` (default 20) late, as one
//!    across a network does: a resolution walks the dependency graph a level at a time, the
//!    lock's fetches need no such order.
//! 2. Edit → `Resolved=False`: the resource at good content is patched to an unresolvable one
//!    (`BENCH_EDITS` times, default 5, each a different failure so nothing is remembered) and
//!    the time until the status says so is measured; before each, a good edit's time until
//!    `Resolved=True` (the controller resolving the set anew) is measured too.
//!
//! Everything is real and local: control plane, Redis, the index, the release binary, the
//! operator resolving with the real uv. Wall-clock figures are printed, never asserted; what is
//! asserted is that each run took the path it measures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::lock::LOCK_FILE;
use bifrost_requirements::requirements::content_hash;
use common::bench::{env_count, load_average, median_p95};
use common::index::{Index, path_with_real_uv, real_uv};
use common::operator::{
    Operator, condition, create_wsreq, labelled_deployment, namespace, redis_cache, secret,
    wait_for,
};
use common::services::{fresh_key, redis_url};
use common::wheels::Wheel;
use common::{assert_ok, stdout};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const PLATFORM: &str = "x86_64-manylinux_2_28";
/// What the user writes; the other nine distributions come with these.
const CONTENT: &str = "bench-web>=2.9\nbench-frame>=2.0\nbench-charset>=3\n";
const DISTRIBUTIONS: usize = 12;
/// Any single wait of the benchmark (a resolution, a status) longer than this fails it.
const T: Duration = Duration::from_secs(120);

/// The index: the 12 distributions' releases, and one wheel no Linux worker can use.
fn wheels() -> Vec<Wheel> {
    let w = Wheel::new;
    let web = |v| {
        w("bench_web", v)
            .requires("bench-http>=2")
            .requires("bench-templates>=1.1")
            .requires("bench-json")
    };
    let http = |v| {
        w("bench_http", v)
            .requires("bench-urls>=1.5,<3")
            .requires("bench-certs")
            .requires("bench-charset>=2")
    };
    vec![
        web("2.9"),
        web("3.0"),
        http("2.0"),
        http("2.1"),
        w("bench_urls", "1.5"),
        w("bench_urls", "2.2"),
        w("bench_urls", "3.0"),
        w("bench_certs", "2025.1"),
        w("bench_charset", "2.0"),
        w("bench_charset", "3.4"),
        w("bench_templates", "1.1").requires("bench-markup>=2"),
        w("bench_markup", "2.1"),
        w("bench_json", "1.0"),
        w("bench_frame", "2.2")
            .requires("bench-numbers>=1.2")
            .requires("bench-json>=1")
            .requires("bench-dates>=2.8"),
        w("bench_numbers", "1.0"),
        w("bench_numbers", "1.2"),
        w("bench_numbers", "1.3"),
        w("bench_dates", "2.9").requires("bench-tz"),
        w("bench_tz", "2025.2"),
        w("bench_winonly", "1.0").tag("py3-none-win_amd64"),
    ]
}

/// The `i`-th unresolvable edit of [`CONTENT`]: an unknown name, a version that does not
/// exist, a conflict with a dependency's range, a package without a wheel for the workers.
fn unresolvable(i: usize) -> String {
    let bad = match i % 4 {
        0 => format!("bench-nowhere-{i}"),
        1 => format!("bench-numbers=={}.0", 9 + i),
        2 => "bench-numbers<1.1".to_string(),
        _ => "bench-winonly".to_string(),
    };
    format!("{CONTENT}{bad}\n# edit {i}\n")
}

/// The real interpreter (a pyenv shim would add its own start-up to every run) and its
/// `major.minor`.
fn real_python() -> (String, String) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .expect("run python3");
    assert_ok(&out);
    let text = stdout(&out);
    let mut lines = text.lines();
    let (path, version) = (lines.next().unwrap(), lines.next().unwrap());
    (path.to_string(), version.to_string())
}

/// One line: median and p95 of `samples` (seconds); returns the median.
fn print_runs(what: &str, samples: &mut [f64]) -> f64 {
    let (median, p95) = median_p95(samples);
    println!(
        "  {what:<44} median {:>6.0} ms  p95 {:>6.0} ms  ({} runs)",
        median * 1e3,
        p95 * 1e3,
        samples.len()
    );
    median
}

/// How part 1 runs `install`: the release binary, the real interpreter and uv, the index.
struct Installs<'a> {
    bin: &'a str,
    python: &'a str,
    uv: String,
    index_url: String,
    scratch: &'a Path,
}

impl Installs<'_> {
    /// Seconds for a cold `install` of the snapshot whose fallback file is `payload` (a fresh
    /// target and cache under `scratch`, removed afterwards); checks that the lock was used
    /// exactly when `locked` and that the whole set arrived.
    fn run(&self, installer: &str, payload: &Path, locked: bool, run: usize) -> f64 {
        let dir = self.scratch.join(format!(
            "{installer}-{}-{run}",
            if locked { "lock" } else { "txt" }
        ));
        let (target, cache) = (dir.join("target"), dir.join("cache"));
        std::fs::create_dir_all(&cache).unwrap();
        let mut cmd = Command::new(self.bin);
        cmd.args([
            "install",
            "--json",
            "--installer",
            installer,
            "--only-binary",
        ])
        .arg("--target")
        .arg(&target)
        .arg("--fallback-file")
        .arg(payload)
        .args(["--index-url", &self.index_url, "--python", self.python])
        .arg("--cache-dir")
        .arg(&cache)
        .env_remove("RUST_LOG");
        // The machine's own pip/uv settings (e.g. PIP_FIND_LINKS) are not a worker's.
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if name.starts_with("PIP_") || name.starts_with("UV_") {
                cmd.env_remove(&var);
            }
        }
        if installer == "uv" {
            cmd.args(["--uv", &self.uv]);
        }
        let t0 = Instant::now();
        let out = cmd.output().expect("run install");
        let took = t0.elapsed().as_secs_f64();
        assert_ok(&out);
        if run == 0 && std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!(
                "--- {} ({installer}, lock: {locked}):\n{}",
                dir.display(),
                common::stderr(&out)
            );
        }
        let report: Value = serde_json::from_str(stdout(&out).trim()).expect("--json report");
        assert_eq!(report["lock"]["used"], locked, "{report}");
        let installed = std::fs::read_dir(&target)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".dist-info"))
            })
            .count();
        assert_eq!(installed, DISTRIBUTIONS, "{report}");
        std::fs::remove_dir_all(&dir).unwrap();
        took
    }
}

/// A snapshot folder as the webhook mounts the ConfigMap: payload.json, and the lock if kept.
fn snapshot_folder(parent: &Path, name: &str, data: &[(&str, &str)]) -> PathBuf {
    let dir = parent.join(name);
    std::fs::create_dir(&dir).unwrap();
    for (file, text) in data {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir.join("payload.json")
}

/// Part 1, with `installer`: interleaved runs (the order alternating) so that load swings hit
/// both sides alike.
fn cold_installs(
    installs: &Installs,
    installer: &str,
    latency: &str,
    with_lock: &Path,
    without: &Path,
    n: usize,
) {
    let (mut locked, mut resolved) = (Vec::new(), Vec::new());
    for run in 0..n {
        if run % 2 == 0 {
            locked.push(installs.run(installer, with_lock, true, run));
            resolved.push(installs.run(installer, without, false, run));
        } else {
            resolved.push(installs.run(installer, without, false, run));
            locked.push(installs.run(installer, with_lock, true, run));
        }
    }
    println!(
        "cold install of the set with {installer}, index {latency} (load average {}):",
        load_average()
    );
    let from_lock = print_runs("from requirements.lock (--no-deps, hashes)", &mut locked);
    let from_txt = print_runs("from requirements.txt (the pod resolves)", &mut resolved);
    println!(
        "  ratio txt/lock {:.2} (median): {:.0} ms of resolution saved per pod",
        from_txt / from_lock,
        (from_txt - from_lock) * 1e3
    );
}

async fn set_content(client: &Client, ns: &str, content: &str) -> Instant {
    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    api.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"content": content}})),
    )
    .await
    .unwrap();
    t0
}

/// Seconds from `t0` until the resource's `Resolved` is `status` for `content` (polled every
/// 5 ms): `True` with the lock of that content, or `False` with `ResolutionFailed` for it.
async fn until_resolved(
    client: &Client,
    ns: &str,
    content: &str,
    status: &str,
    t0: Instant,
) -> f64 {
    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), ns);
    let hash = content_hash(content);
    loop {
        let obj = api.get("default").await.unwrap();
        let s = obj.status.as_ref();
        let seen = match condition(&obj, "Resolved") {
            Some((st, _, _)) if st == status && status == "True" => s
                .and_then(|s| s.lock.as_ref())
                .is_some_and(|l| l.content_hash == hash),
            Some((st, reason, _)) if st == status => {
                reason == "ResolutionFailed"
                    && s.and_then(|s| s.content_hash.as_deref()) == Some(hash.as_str())
            }
            _ => false,
        };
        if seen {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < T,
            "{content:?}: Resolved={status} not seen; status: {:#?}",
            obj.status
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("lock benchmark: run it with `cargo bench --bench lock`");
        return;
    }
    let runs = env_count("BENCH_RUNS", 10);
    let edits = env_count("BENCH_EDITS", 5);
    let latency_ms = env_count("BENCH_INDEX_LATENCY_MS", 20) as u64;
    common::init_crypto();
    let (python, version) = real_python();
    let index = Index::start(&wheels());
    let scratch = tempfile::Builder::new()
        .prefix("bifrost-bench-lock-")
        .tempdir()
        .unwrap();

    // The operator resolves the set for this machine's interpreter, as it would for workers.
    let (client, ns) = namespace("bench-lock").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    labelled_deployment(&client, &ns, "worker", "default").await;
    let path = path_with_real_uv();
    let _op = Operator::start_in(
        &ns,
        "bench",
        &["--no-leader-election", "--resolver-index-url", &index.url()],
        &[("PATH", &path)],
    );
    let t0 = Instant::now();
    create_wsreq(
        &client,
        &ns,
        "default",
        json!({
            "content": CONTENT,
            "cache": redis_cache(&fresh_key()),
            "install": {
                "python": {"version": version, "platform": PLATFORM},
                "indexUrls": [index.url()],
                "onlyBinary": true,
            },
            "rollout": {"debounceSeconds": 0},
        }),
    )
    .await;
    let first = until_resolved(&client, &ns, CONTENT, "True", t0).await;
    let data = wait_for("the snapshot's lock", T, || async {
        let data = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("default-requirements")
            .await
            .ok()??
            .data?;
        data.contains_key(LOCK_FILE).then_some(data)
    })
    .await;
    println!(
        "lock benchmark: {DISTRIBUTIONS} distributions from {} requirements on a local index over HTTP; \
         Python {version} {PLATFORM}; {} CPU(s)",
        CONTENT.lines().count(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "the operator resolved the set (resource created -> Resolved=True) in {:.0} ms",
        first * 1e3
    );

    cold_install_rounds(&index, &python, scratch.path(), &data, runs, latency_ms);
    edit_rounds(&client, &ns, edits).await;
}

/// Phase 1, cold installs from the snapshot: with and without its lock, with uv and pip, on loopback
/// and with the index answering `latency_ms` late.
fn cold_install_rounds(
    index: &Index,
    python: &str,
    scratch: &std::path::Path,
    data: &std::collections::BTreeMap<String, String>,
    runs: usize,
    latency_ms: u64,
) {
    let with_lock = snapshot_folder(
        scratch,
        "with-lock",
        &[
            ("payload.json", &data["payload.json"]),
            (LOCK_FILE, &data[LOCK_FILE]),
        ],
    );
    let without = snapshot_folder(
        scratch,
        "without",
        &[("payload.json", &data["payload.json"])],
    );
    let installs = Installs {
        bin: common::bin(),
        python,
        uv: real_uv().to_string_lossy().into_owned(),
        index_url: index.url(),
        scratch,
    };
    for latency in [0, latency_ms] {
        index.set_latency(Duration::from_millis(latency));
        let shown = match latency {
            0 => "on loopback".to_string(),
            ms => format!("answering {ms} ms late"),
        };
        for installer in ["uv", "pip"] {
            cold_installs(&installs, installer, &shown, &with_lock, &without, runs);
        }
    }
    index.set_latency(Duration::ZERO);
}

/// Phase 2, edits: `edits` good edits until Resolved=True, each followed by an unresolvable one until
/// Resolved=False.
async fn edit_rounds(client: &Client, ns: &str, edits: usize) {
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for i in 0..edits {
        let edited = format!("{CONTENT}# edit {i}\n");
        let t0 = set_content(client, ns, &edited).await;
        good.push(until_resolved(client, ns, &edited, "True", t0).await);
        let broken = unresolvable(i);
        let t0 = set_content(client, ns, &broken).await;
        bad.push(until_resolved(client, ns, &broken, "False", t0).await);
    }
    println!(
        "edits on a real control plane (load average {}):",
        load_average()
    );
    print_runs("good edit -> Resolved=True (set resolved)", &mut good);
    print_runs("unresolvable edit -> Resolved=False", &mut bad);
}
