//! Controller benchmark (not a test): run with `cargo bench --bench controller`.
//!
//! 1. Latency from a database row update (plain SQL, as Bifrost writes it) until Redis holds the
//!    new payload AND the labelled Deployment's pod template carries the new hash: median and p95
//!    over 20 changes (target ≤ 1 s).
//! 2. Operator RSS with 1,000 `WorkspaceRequirements` reconciled (target ≤ 40 MiB).
//!
//! Everything is real and local: control plane, PostgreSQL, Redis, the release `operator` binary.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::requirements::content_hash;
use common::bench::{print_latencies, rolled_out_worker, until_redis_and_template};
use common::operator::{Operator, wait_for};
use common::scenario::Scenario;
use common::services::{PgServer, write_bifrost_row};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The operator's own pid (the watchdog shell's child).
fn operator_pid(op: &Operator) -> u32 {
    let out = std::process::Command::new("pgrep")
        .args([
            "-f",
            "--",
            &format!("--metrics-addr 127.0.0.1:{}", op.metrics_port),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim().starts_with("bifrost-req"))
                .unwrap_or(false)
        })
        .expect("operator pid")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("controller benchmark: run it with `cargo bench --bench controller`");
        return;
    }
    common::init_crypto();
    let pg = PgServer::start();
    let out = common::cli(&["migrate"], &[("DATABASE_URL", &pg.url("postgres"))]);
    common::assert_ok(&out);
    let pool = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    write_bifrost_row(&pool, "bench-0==1.0\n").await;
    let op = Scenario::start("bench", &["--no-leader-election"]).await;
    op.secret("db", "url", &pg.url("postgres")).await;
    let spec = json!({
        "source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 30}},
        "cache": op.cache(),
        "rollout": {"debounceSeconds": 0}
    });
    op.wsreq("default", spec).await;
    latency_over_changes(&op, &pool).await;
    rss_with_a_thousand_resources(&op).await;
}

/// Phase 1: latency over 20 changes of the database row, until Redis and the template have them.
async fn latency_over_changes(op: &Scenario, pool: &sqlx::PgPool) {
    let (deployments, mut conn) = rolled_out_worker(&op.client, &op.name, "bench-0==1.0\n").await;
    let mut latencies = Vec::new();
    for i in 1..=20 {
        let content = format!("bench-0==1.0\nbench-{i}==1.{i}\n");
        let hash = content_hash(&content);
        let expected = Payload::new(content.clone()).to_json();
        let t0 = Instant::now();
        write_bifrost_row(pool, &content).await;
        latencies.push(
            until_redis_and_template(
                t0,
                &mut conn,
                &op.key,
                &expected,
                &deployments,
                "worker",
                &hash,
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    print_latencies(
        "db row update -> Redis + template annotation",
        &mut latencies,
        1000,
    );
}

/// Phase 2: the operator's RSS with 1,000 more resources, all reconciled.
async fn rss_with_a_thousand_resources(op: &Scenario) {
    let pid = operator_pid(&op.op);
    let before = rss_kib(pid).unwrap();
    let started = Instant::now();
    create_resources(op.api::<WorkspaceRequirements>(), 1000).await;
    let ready = all_reconciled(op, 1000).await;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid).unwrap();
    println!(
        "operator RSS: {:.1} MiB before, {:.1} MiB with {ready} resources reconciled (target <= 40 MiB); all reconciled in {:.1} s",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        elapsed.as_secs_f64()
    );
}

/// `ws-0000`… `ws-{n-1}`, created by ten tasks at once.
async fn create_resources(api: Api<WorkspaceRequirements>, n: usize) {
    let mut tasks = Vec::new();
    for chunk in 0..10 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk * n / 10)..((chunk + 1) * n / 10) {
                let obj: WorkspaceRequirements = serde_json::from_value(json!({
                    "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
                    "metadata": {"name": format!("ws-{i:04}")},
                    "spec": {"content": format!("requests==2.32.3\npackage-{i}==1.0\n")}
                }))
                .unwrap();
                api.create(&PostParams::default(), &obj).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Wait until all `n` new resources and `default` are reconciled: the new ones Ready except that
/// no workload opts in (NoWorkloads, the only condition not True), `default` rolling (no kubelet
/// runs the pods of its Deployment, so it is honestly not rolled out). Returns how many.
async fn all_reconciled(op: &Scenario, n: usize) -> usize {
    let wsreqs = op.api::<WorkspaceRequirements>();
    let ready_is = |o: &WorkspaceRequirements, status: &str, reason: Option<&str>| {
        o.status.as_ref().is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Ready" && c.status == status && reason.is_none_or(|r| c.reason == r)
            })
        })
    };
    wait_for(
        "1,000 resources reconciled",
        Duration::from_secs(600),
        || async {
            let list = wsreqs.list(&ListParams::default()).await.ok()?;
            let no_workloads = |o| ready_is(o, "False", Some("NoWorkloads"));
            let ready = list
                .items
                .iter()
                .filter(|o| ready_is(o, "True", None) || no_workloads(o))
                .count();
            let rolling = list
                .items
                .iter()
                .filter(|o| ready_is(o, "False", None) && !no_workloads(o))
                .count();
            (ready == n && rolling == 1).then_some(ready + rolling)
        },
    )
    .await
}
