//! S3 mirror benchmark (not a test): run with `cargo bench --bench s3_mirror`.
//!
//! Latency from Bifrost's plain `PutObject` of `_repo/requirements.txt` until Redis holds the new
//! payload AND the labelled Deployment's pod template carries the new hash, with
//! `pollIntervalSeconds: 1`: median and p95 over 20 changes (target p95 ≤ 1.5 s). Also what an
//! unchanged object costs: the conditional GETs per second and their statuses.
//!
//! Everything is real and local: control plane, moto (credentials enforced), Redis, the
//! `operator` binary.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::requirements::content_hash;
use common::bench::{print_latencies, rolled_out_worker, until_redis_and_template};
use common::operator::{Operator, create_wsreq, namespace, redis_cache, secret};
use common::s3::{BUCKET, S3Server, bifrost_put, bifrost_secrets, fresh_key};
use common::services::redis_url;
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("S3 mirror benchmark: run it with `cargo bench --bench s3_mirror`");
        return;
    }
    common::init_crypto();
    let server = S3Server::start();
    let (client, ns) = namespace("bench-s3").await;
    let key = fresh_key();
    let config = server.config(&key);
    let redis_key = common::services::fresh_key();
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let writer = &server.writer;
    bifrost_secrets(
        &client,
        &ns,
        &writer.access_key_id,
        &writer.secret_access_key,
    )
    .await;
    bifrost_put(&config, b"bench-0==1.0\n").await;
    let _op = Operator::start(&ns, "bench", &["--no-leader-election"]);
    create_wsreq(
        &client,
        &ns,
        "default",
        json!({
            "source": {"s3": {
                "bucket": BUCKET,
                "key": key,
                "endpoint": server.endpoint(),
                "credentialsSecretRef": {"name": "bifrost-secrets"},
                "pollIntervalSeconds": 1,
            }},
            "cache": redis_cache(&redis_key),
            "rollout": {"debounceSeconds": 0}
        }),
    )
    .await;
    let (deployments, mut conn) = rolled_out_worker(&client, &ns, "bench-0==1.0\n").await;

    // An unchanged object: the polls over 10 s.
    let before = server.requests_for(&key).len();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let polls = server.requests_for(&key)[before..].to_vec();
    let not_modified = polls.iter().filter(|p| p.1 == 304).count();
    println!(
        "unchanged object: {} GETs in 10 s, {not_modified} of them 304 Not Modified",
        polls.len()
    );

    let mut latencies = Vec::new();
    for i in 1..=20 {
        let content = format!("bench-0==1.0\nbench-{i}==1.{i}\n");
        let hash = content_hash(&content);
        let expected = Payload::new(content.clone()).to_json();
        // Changes land at every phase of the poll period, as edits in Bifrost do.
        tokio::time::sleep(Duration::from_millis(150 + 37 * i)).await;
        let t0 = Instant::now();
        bifrost_put(&config, content.as_bytes()).await;
        latencies.push(
            until_redis_and_template(
                t0,
                &mut conn,
                &redis_key,
                &expected,
                &deployments,
                "worker",
                &hash,
            )
            .await,
        );
    }
    print_latencies(
        "S3 PutObject -> Redis + template annotation (pollIntervalSeconds 1)",
        &mut latencies,
        1500,
    );
}
