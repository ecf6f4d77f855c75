//! Wheelhouse benchmark (not a test): run with `cargo bench --bench wheelhouse`.
//!
//! For the real package sets of issue 23 (`BENCH_SETS`, default `automation,data-science`;
//! downloaded once by `scripts/real-packages.sh`, served by a local index on loopback), the
//! cold install a pod does at start, `BENCH_RUNS` (default 3) runs of each, interleaved, every
//! one into a fresh target with fresh caches:
//!
//! - **wheelhouse**: `install` of the controller's lock with `--wheelhouse` (the lock's files
//!   in the S3 test server, copied there by the library's own fill): what a pod does with
//!   `spec.install.wheelhouse`;
//! - **index**: `install` of the same lock from the index;
//! - **pip**: Bifrost's worker start-up, `python3 -m pip install --user -r requirements.txt`
//!   (pip also compiles bytecode, which the others skip: see issue 24 for that cost);
//! - **bare uv**: `uv pip install --target … -r requirements.txt` from the index.
//!
//! Also: the lock's size, the snapshot's (content, payload and lock together), the wheelhouse's
//! files and bytes and the time the copy took. Wall-clock figures are printed, never asserted;
//! what is asserted is that each run took the path it measures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::egress;
use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::shutdown::stop_pair;
use bifrost_requirements::wheelhouse::{Fetcher, Wheelhouse};
use common::bench::{env_count, load_average, median_p95};
use common::index::{Index, real_uv};
use common::lock_world::{VERSION, World, report};
use common::real_packages::set;
use common::s3::BUCKET;
use common::{assert_ok, cli};

/// One set's figures.
struct Figures {
    name: String,
    lock_bytes: usize,
    snapshot_bytes: usize,
    files: usize,
    bytes: u64,
    fill: Duration,
    samples: [Vec<f64>; 4],
}

const WAYS: [&str; 4] = ["wheelhouse", "index (lock)", "pip (Bifrost)", "bare uv"];

fn seconds(started: Instant, out: &Output, what: &str) -> f64 {
    let s = started.elapsed().as_secs_f64();
    assert_ok(out);
    eprintln!("   {what}: {s:.2} s");
    s
}

/// `install --json` of the snapshot `payload` into `target`, with `extra` flags and `env`.
fn install(
    w: &World,
    payload: &Path,
    target: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let cache = w.fresh("install-cache-");
    let mut args = vec!["install", "--json", "--target", target.to_str().unwrap()];
    args.extend(["--fallback-file", payload.to_str().unwrap()]);
    args.extend(["--cache-dir", cache.to_str().unwrap(), "--timeout", "900s"]);
    args.extend(extra);
    cli(&args, env)
}

async fn measure(name: &str, runs: usize) -> Figures {
    let set = set(name);
    let w = World::on(Index::serve_dir("127.0.0.1", &set.dir)).await;
    let url = w.index.url();
    let out = w
        .show_lock(&set.requirements, VERSION, &["--resolver-timeout", "900s"])
        .await;
    assert_ok(&out);
    let lock = common::stdout(&out);
    let sha = content_hash(&lock);

    let s3 = common::s3::shared();
    let config = s3.config("unused");
    let prefix = format!("bench-wheelhouse-{}", std::process::id());
    let wheelhouse = Wheelhouse::new(&config, &prefix).expect("the wheelhouse");
    let origin = egress::origin(&url).expect("the index's origin");
    let fetcher = Fetcher::new(
        std::slice::from_ref(&url),
        vec![origin],
        Duration::from_secs(300),
    )
    .expect("the fetcher");
    let (_handle, stop) = stop_pair();
    let started = Instant::now();
    let filled = wheelhouse
        .fill(&lock, &sha, &fetcher, &stop)
        .await
        .expect("the fill");
    let fill = started.elapsed();
    let manifest = wheelhouse
        .manifest(&sha)
        .await
        .expect("the manifest")
        .expect("a complete wheelhouse");

    let payload = w.snapshot(&set.requirements, Some(&lock));
    let snapshot_bytes = set.requirements.len()
        + Payload::new(set.requirements.as_str()).to_json().len()
        + lock.len();
    let requirements = w.path("requirements.txt");
    std::fs::write(&requirements, &set.requirements).unwrap();
    let endpoint = s3.endpoint();
    let location = format!("s3://{BUCKET}/{prefix}");
    let keys = [
        (
            "BIFROST_WHEELHOUSE_ACCESS_KEY",
            s3.writer.access_key_id.as_str(),
        ),
        (
            "BIFROST_WHEELHOUSE_SECRET_KEY",
            s3.writer.secret_access_key.as_str(),
        ),
    ];
    let wheelhouse_flags = [
        "--wheelhouse",
        &location,
        "--wheelhouse-endpoint",
        &endpoint,
        "--wheelhouse-path-style",
    ];
    let mut samples: [Vec<f64>; 4] = Default::default();
    for run in 1..=runs {
        eprintln!("{name}, run {run}/{runs} (load {})", load_average());
        let target = w.fresh("wheelhouse-");
        let t = Instant::now();
        let out = install(&w, &payload, &target, &wheelhouse_flags, &keys);
        samples[0].push(seconds(t, &out, WAYS[0]));
        assert_eq!(
            report(&out)["wheelhouse"]["used"],
            true,
            "{}",
            common::stderr(&out)
        );

        let target = w.fresh("index-");
        let t = Instant::now();
        let out = install(&w, &payload, &target, &["--index-url", &url], &[]);
        samples[1].push(seconds(t, &out, WAYS[1]));
        assert_eq!(report(&out)["lock"]["used"], true);

        let base = w.fresh("pip-user-");
        let cache = w.fresh("pip-cache-");
        let t = Instant::now();
        let out = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--user",
                "--disable-pip-version-check",
            ])
            .args(["--index-url", &url, "-r", requirements.to_str().unwrap()])
            .env("PYTHONUSERBASE", &base)
            .env("PIP_CACHE_DIR", &cache)
            .output()
            .unwrap();
        samples[2].push(seconds(t, &out, WAYS[2]));

        let target = w.fresh("uv-");
        let cache = w.fresh("uv-cache-");
        let t = Instant::now();
        let out = Command::new(real_uv())
            .args(["pip", "install", "-q", "--python", "python3", "--target"])
            .arg(&target)
            .args(["--index-url", &url, "--cache-dir", cache.to_str().unwrap()])
            .args(["-r", requirements.to_str().unwrap()])
            .output()
            .unwrap();
        samples[3].push(seconds(t, &out, WAYS[3]));
    }
    Figures {
        name: name.into(),
        lock_bytes: lock.len(),
        snapshot_bytes,
        files: filled.files,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
        fill,
        samples,
    }
}

fn print(f: &mut Figures) {
    println!(
        "\n{}: lock {} B, snapshot {} B; wheelhouse {} files, {:.1} MB, copied in {:.1} s",
        f.name,
        f.lock_bytes,
        f.snapshot_bytes,
        f.files,
        f.bytes as f64 / 1e6,
        f.fill.as_secs_f64()
    );
    let medians: Vec<f64> = f.samples.iter_mut().map(|s| median_p95(s).0).collect();
    for (way, s) in WAYS.iter().zip(f.samples.iter_mut()) {
        let (median, p95) = median_p95(s);
        println!(
            "  {way:<14} median {median:6.2} s  p95 {p95:6.2} s  (n={})",
            s.len()
        );
    }
    println!(
        "  pip / wheelhouse {:.1}x (goal >= 10x); wheelhouse / bare uv {:.2} (goal <= 1.10); index / wheelhouse {:.2}",
        medians[2] / medians[0],
        medians[0] / medians[3],
        medians[1] / medians[0]
    );
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("wheelhouse benchmark: run it with `cargo bench --bench wheelhouse`");
        return;
    }
    common::init_crypto();
    let runs = env_count("BENCH_RUNS", 3);
    let sets = std::env::var("BENCH_SETS").unwrap_or_else(|_| "automation,data-science".into());
    let mut all = Vec::new();
    for name in sets.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        all.push(measure(name, runs).await);
    }
    println!("\n== wheelhouse benchmark (cold installs, this machine, {runs} runs each)");
    for f in &mut all {
        print(f);
    }
}
