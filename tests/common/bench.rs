//! What the benchmarks (`benches/`) share: percentiles, counts from the environment, the load
//! average, and the wait for a change to have arrived both in Redis and in a labelled
//! Deployment's pod template.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use super::operator::{labelled_deployment, template_hash, wait_for};
use super::services::redis_url;

/// The value at fraction `p` of an ascending slice (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Median and p95 of `samples` (sorted in place).
pub fn median_p95(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(samples, 0.5), percentile(samples, 0.95))
}

/// Median, p95 and max of `samples` (seconds), printed in milliseconds against a target.
pub fn print_latencies(what: &str, samples: &mut [f64], target_ms: u32) {
    let (median, p95) = median_p95(samples);
    println!("{what}, {} changes:", samples.len());
    println!(
        "  median {:.0} ms, p95 {:.0} ms, max {:.0} ms (target p95 <= {target_ms} ms)",
        median * 1e3,
        p95 * 1e3,
        samples[samples.len() - 1] * 1e3
    );
}

/// A positive count from the environment variable `name` (e.g. `BENCH_RUNS`), else `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("{name}={v:?}: expected a positive whole number")),
        Err(_) => default,
    }
}

/// The 1, 5 and 15 minute load averages, printed beside figures (2 cores shared with builds
/// make them move).
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Seconds from `t0` until Redis `key` holds `payload` and Deployment `name`'s template carries
/// `hash`, polled every 5 ms (a change that takes over 30 s fails the benchmark).
pub async fn until_redis_and_template(
    t0: Instant,
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    payload: &str,
    deployments: &Api<Deployment>,
    name: &str,
    hash: &str,
) -> f64 {
    let (mut redis_done, mut deploy_done) = (false, false);
    while !(redis_done && deploy_done) {
        if !redis_done {
            let v: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.unwrap();
            redis_done = v.as_deref() == Some(payload);
        }
        if !deploy_done {
            let d = deployments.get(name).await.ok();
            deploy_done = d.as_ref().and_then(template_hash).as_deref() == Some(hash);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the change to {hash} did not arrive (Redis: {redis_done}, template: {deploy_done})"
        );
        if !(redis_done && deploy_done) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    t0.elapsed().as_secs_f64()
}

/// The labelled Deployment `worker` of resource `default` in `ns`, once its template carries
/// the hash of `content` (the first rollout), and a connection to the test Redis.
pub async fn rolled_out_worker(
    client: &kube::Client,
    ns: &str,
    content: &str,
) -> (Api<Deployment>, redis::aio::MultiplexedConnection) {
    labelled_deployment(client, ns, "worker", "default").await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let redis = redis::Client::open(redis_url()).unwrap();
    let conn = redis.get_multiplexed_async_connection().await.unwrap();
    let hash = bifrost_requirements::requirements::content_hash(content);
    wait_for("initial rollout", Duration::from_secs(60), || async {
        (template_hash(&deployments.get("worker").await.ok()?)? == hash).then_some(())
    })
    .await;
    (deployments, conn)
}
