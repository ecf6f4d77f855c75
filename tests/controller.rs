//! The controller on a real control plane (etcd + kube-apiserver + kube-controller-manager), with
//! real PostgreSQL and Redis. Each test has its own namespace and its own `operator` process
//! watching only that namespace.

mod common;
#[path = "controller/lease.rs"]
mod lease;
#[path = "controller/mirror.rs"]
mod mirror;

use std::collections::BTreeMap;
use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::requirements::content_hash;
use common::objects::replicaset_hash;
use common::operator::{Operator, condition, wait_for};
use common::scenario::{Ns, Scenario, T, says};
use common::services::{PgServer, RedisServer, redis_get, redis_set, redis_url};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// ReplicaSets of a deployment, as (template hash annotation) in creation order.
async fn replicaset_hashes(ns: &Ns, app: &str) -> Vec<Option<String>> {
    let mut rs = ns
        .api::<ReplicaSet>()
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items;
    rs.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    rs.iter().map(|r| replicaset_hash(r).cloned()).collect()
}

/// Wait until a ReplicaSet of Deployment `app` has `hash` on its pod template.
async fn a_replicaset_has(ns: &Ns, app: &str, hash: &str) {
    wait_for(&format!("a ReplicaSet of {app} with {hash}"), T, || async {
        let hashes = replicaset_hashes(ns, app).await;
        hashes.contains(&Some(hash.to_string())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_content_is_cached_snapshotted_and_ready() {
    let op = Scenario::start("ready", &[]).await;
    let content = "requests==2.32.3\nflask[async]>=3 ; python_version >= \"3.9\"\n";
    let spec = json!({"content": content, "cache": op.cache(), "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    // A labelled workload (scaled to zero: no node runs pods here), without which Ready would
    // say NoWorkloads.
    op.deployment("worker", "default", 0).await;

    let obj = op.wait("default", "Ready", "True", None).await;
    let status = obj.status.unwrap();
    assert_eq!(status.workloads_up_to_date.as_deref(), Some("1/1"));
    let hash = content_hash(content);
    assert_eq!(status.content_hash.as_deref(), Some(hash.as_str()));
    assert_eq!(status.short_hash.as_deref(), Some(&hash[..12]));
    assert_eq!(status.package_count, Some(2));
    assert!(status.cache_warmed_at.is_some());
    assert_eq!(status.observed_generation, obj.metadata.generation);
    for t in ["Valid", "Synced", "CacheWarmed", "RolledOut", "Ready"] {
        assert_eq!(
            condition_of(&status.conditions, t),
            "True",
            "{t}: {:#?}",
            status.conditions
        );
    }
    // Redis holds exactly Bifrost's payload.
    let raw = op.cached().await.expect("Redis key");
    assert_eq!(raw, Payload::new(content).to_json());
    // The owned snapshot ConfigMap.
    let cm = op
        .api::<ConfigMap>()
        .get("default-requirements")
        .await
        .unwrap();
    let data = cm.data.clone().unwrap();
    assert_eq!(data["requirements.txt"], content);
    assert_eq!(data["hash"], hash);
    assert_eq!(data["payload.json"], raw);
    assert_eq!(cm.owner_references()[0].name, "default");
    assert_eq!(cm.owner_references()[0].controller, Some(true));
    kubectl_shows_the_printer_columns(&op.name, &hash);

    // The gauges an operator alerts on, scraped from the leader.
    let ns = &op.name;
    let ready =
        format!("bifrost_requirements_resource_ready{{namespace=\"{ns}\",name=\"default\"}}");
    let uninjected = format!(
        "bifrost_requirements_uninjected_pods{{namespace=\"{ns}\",name=\"default\",workload=\"Deployment/worker\"}}"
    );
    assert_eq!(op.metric(&ready), Some(1.0));
    assert_eq!(op.metric(&uninjected), Some(0.0));
    // Deleted, its series go.
    op.api::<WorkspaceRequirements>()
        .delete("default", &Default::default())
        .await
        .unwrap();
    wait_for("the deleted resource's series removed", T, || async {
        let (_, body) = op.http_get("/metrics");
        (!body.contains(&format!("namespace=\"{ns}\""))).then_some(())
    })
    .await;
}

/// kubectl shows the printer columns, also under the category.
fn kubectl_shows_the_printer_columns(ns: &str, hash: &str) {
    for kind in ["wsreq", "bifrost"] {
        let out = common::k8s::control_plane().kubectl(&["get", kind, "-n", ns]);
        let table = common::stdout(&out);
        let line = |i: usize| -> Vec<&str> {
            table
                .lines()
                .nth(i)
                .unwrap_or("")
                .split_whitespace()
                .collect()
        };
        assert_eq!(
            line(0),
            [
                "NAME",
                "HASH",
                "PACKAGES",
                "WORKLOADS",
                "READY",
                "REASON",
                "AGE"
            ],
            "{table}"
        );
        assert_eq!(
            line(1)[..6],
            ["default", &hash[..12], "2", "1/1", "True", "Ready"],
            "{table}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_labelled_workload_is_not_ready_and_the_misplaced_label_is_named() {
    let op = Scenario::start("noworkloads", &[]).await;
    let spec = json!({"content": "requests==2.32.3\n", "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    // What Reloader users do: the label on the Deployment's own metadata, not its pod template.
    let deployments = op.api::<Deployment>();
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "worker", "labels": {"bifrost.io/requirements": "default"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "worker"}},
            "template": {
                "metadata": {"labels": {"app": "worker"}},
                "spec": {"containers": [{"name": "worker", "image": "python:3.11-slim"}]}
            }
        }
    }))
    .unwrap();
    deployments.create(&Default::default(), &d).await.unwrap();
    let obj = wait_for(
        "Ready=False NoWorkloads naming Deployment/worker",
        T,
        || async {
            let obj = op.get("default").await;
            let (status, reason, message) = condition(&obj, "Ready")?;
            (status == "False" && reason == "NoWorkloads" && message.contains("Deployment/worker"))
                .then_some(obj)
        },
    )
    .await;
    says(
        &obj,
        "Ready",
        "False",
        &[
            "pod template labelled bifrost.io/requirements=default",
            "carries the label on its own metadata only",
        ],
    );
    // Everything else is fine, and says so.
    for t in ["Valid", "Synced", "Snapshotted", "RolledOut"] {
        assert_eq!(condition(&obj, t).unwrap().0, "True", "{t}");
    }
    let status = obj.status.clone().unwrap();
    assert_eq!(status.workloads_up_to_date.as_deref(), Some("0/0"));
    let ready = format!(
        "bifrost_requirements_resource_ready{{namespace=\"{}\",name=\"default\"}}",
        op.name
    );
    assert_eq!(op.metric(&ready), Some(0.0));
    // It does not flap: periodic reconciles and the Deployment's own status updates leave the
    // resource untouched.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = op.get("default").await;
    assert_eq!(later.resource_version(), obj.resource_version());

    // Labelling the pod template fixes it: rolled out (no replicas to wait for) and Ready.
    deployments
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"bifrost.io/requirements": "default"}}}}})),
        )
        .await
        .unwrap();
    let obj = op.wait("default", "Ready", "True", None).await;
    assert_eq!(
        obj.status.unwrap().workloads_up_to_date.as_deref(),
        Some("1/1")
    );
    wait_for("resource_ready 1", T, || async {
        (op.metric(&ready) == Some(1.0)).then_some(())
    })
    .await;
}

/// The leader opens one watch per kind (issue 10): the webhook's cache and the controller share
/// the `WorkspaceRequirements` watch. The operator logs `watching kind=…` for each watch it opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_watches_each_kind_once() {
    let op = Scenario::start("watches", &[]).await;
    op.wsreq("one", json!({"content": "requests==2.32.3\n"}))
        .await;
    // Reconciled: the controller's watches are open.
    op.wait("one", "Snapshotted", "True", None).await;
    let log = op.log_text();
    let mut watches = BTreeMap::<&str, usize>::new();
    for line in log.lines().filter(|l| l.contains("watching")) {
        if let Some(kind) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("kind="))
        {
            *watches.entry(kind).or_default() += 1;
        }
    }
    let once = |kinds: &[&'static str]| kinds.iter().map(|k| (*k, 1)).collect::<BTreeMap<_, _>>();
    assert_eq!(
        watches,
        once(&[
            "ConfigMap",
            "Deployment",
            "Pod",
            "StatefulSet",
            "WorkspaceRequirements"
        ]),
        "{log}"
    );
}

fn condition_of(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    t: &str,
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_change_rolls_labelled_deployments_once_per_burst() {
    let op = Scenario::start("rollout", &[]).await;
    let spec = json!({"content": "a==1\n", "rollout": {"debounceSeconds": 3}});
    op.wsreq("default", spec).await;
    op.deployment("worker", "default", 1).await;
    op.deployment("other", "someone-else", 1).await;

    // The labelled deployment gets the hash (after the debounce), the other one is left alone.
    let h1 = content_hash("a==1\n");
    wait_for("first annotation", T, || async {
        (op.deployment_hash("worker").await.as_deref() == Some(h1.as_str())).then_some(())
    })
    .await;
    assert_eq!(op.deployment_hash("other").await, None);
    a_replicaset_has(&op, "worker", &h1).await;
    let rollouts_before = op
        .metric("bifrost_requirements_rollouts_total")
        .expect("the rollouts counter is exported from the start");

    // Three changes inside the debounce window → exactly one more rollout, to the last hash.
    for c in ["a==2\n", "a==3\n", "a==4\n"] {
        op.set_content("default", c).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let h4 = content_hash("a==4\n");
    a_replicaset_has(&op, "worker", &h4).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // past another debounce window
    // The first ReplicaSet predates the annotation (the Deployment was created without it).
    let hashes = replicaset_hashes(&op, "worker").await;
    let after_h1: Vec<_> = hashes
        .iter()
        .skip_while(|h| **h != Some(h1.clone()))
        .skip(1)
        .collect();
    assert_eq!(
        after_h1,
        vec![&Some(h4.clone())],
        "one ReplicaSet per rollout: {hashes:?}"
    );
    assert_eq!(
        op.metric("bifrost_requirements_rollouts_total").unwrap(),
        rollouts_before + 1.0
    );

    still_rolling_out(&op, &h4).await;
}

/// No kubelet here: the new pods never run, so the rollout is honestly still in progress
/// (tests/node.rs sees RolledOut=True on real pods).
async fn still_rolling_out(ns: &Ns, hash: &str) {
    let obj = ns
        .wait("default", "RolledOut", "False", Some("RollingOut"))
        .await;
    says(
        &obj,
        "RolledOut",
        "False",
        &[
            "Deployment/worker",
            "0 of 1 replica(s) run the current hash and are ready",
        ],
    );
    assert_eq!(says(&obj, "Ready", "False", &[]).0, "RollingOut");
    let status = obj.status.unwrap();
    assert_eq!(status.rolled_out_hash, None, "no pod runs a hash yet");
    assert_eq!(status.workloads.len(), 1);
    let w = &status.workloads[0];
    assert_eq!(w.name, "worker");
    assert!(w.up_to_date);
    assert_eq!(w.hash.as_deref(), Some(hash));
    // No webhook here: the new pod is not injected, so it does not run the hash.
    assert_eq!(
        (w.replicas, w.updated_replicas, w.ready_updated_replicas),
        (Some(1), Some(0), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_with_nothing_changed_touches_nothing() {
    let mut op = Scenario::start("restart", &[]).await;
    let spec = json!({"content": "a==1\n", "cache": op.cache(), "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    op.deployment("worker", "default", 1).await;
    op.rolled_hash("worker").await;
    // No kubelet: the pods never run (status settled means RollingOut, not RolledOut).
    op.wait("default", "RolledOut", "False", Some("RollingOut"))
        .await;
    // Let the status settle: pods appear after the rollout (no webhook is registered here, so
    // every pod counts as uninjected), and the count must have caught up before the restart.
    let pods = op.api::<k8s_openapi::api::core::v1::Pod>();
    wait_for("uninjected pod count settled", T, || async {
        let n = pods
            .list(&ListParams::default().labels("app=worker"))
            .await
            .ok()?
            .items
            .len() as i32;
        let status = op.get("default").await.status?;
        (n > 0 && status.workloads.first()?.uninjected_pods == Some(n)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status_before = op.get("default").await.status;
    let before = versions(&op).await;
    assert!(op.op.stop(), "operator did not stop on SIGTERM");
    let op2 = Operator::start(&op.name, "b", &[]);
    // Wait until the new operator has reconciled (it logs each reconcile), then some more.
    wait_for("reconcile after restart", T, || async {
        op2.log_text().contains("reconciled").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = versions(&op).await;
    assert_eq!(
        before,
        after,
        "a restart with nothing changed wrote something; status before {status_before:#?} after {:#?}",
        op.get("default").await.status
    );
    assert_eq!(op2.metric("bifrost_requirements_rollouts_total"), Some(0.0));
}

/// The resourceVersions of what the operator writes: the Deployment `worker`, the snapshot
/// ConfigMap and the resource `default`.
async fn versions(ns: &Ns) -> [Option<String>; 3] {
    let cm = ns.api::<ConfigMap>().get("default-requirements").await;
    [
        ns.api::<Deployment>()
            .get("worker")
            .await
            .unwrap()
            .resource_version(),
        cm.unwrap().resource_version(),
        ns.get("default").await.resource_version(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_content_is_reported_and_neither_cached_nor_rolled() {
    let op = Scenario::start("invalid", &[]).await;
    let spec = json!({"content": "a==1\n", "cache": op.cache(), "rollout": {"debounceSeconds": 0}});
    op.wsreq("default", spec).await;
    op.deployment("worker", "default", 1).await;
    // Cached, snapshotted and rolling (no kubelet runs the pods here).
    let obj = op
        .wait("default", "RolledOut", "False", Some("RollingOut"))
        .await;
    assert_eq!(condition(&obj, "CacheWarmed").unwrap().0, "True");
    let good_hash = op.rolled_hash("worker").await;
    let cached = op.cached().await;

    op.set_content(
        "default",
        "a==1\n# fine\n--extra-index-url https://evil.example/simple\n",
    )
    .await;
    let obj = op.wait("default", "Valid", "False", None).await;
    let (reason, _) = says(&obj, "Valid", "False", &["line 3", "--extra-index-url"]);
    assert_eq!(reason, "InvalidRequirements");
    says(&obj, "Ready", "False", &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(op.cached().await, cached, "invalid content reached Redis");
    assert_eq!(
        op.deployment_hash("worker").await,
        Some(good_hash),
        "invalid content rolled out"
    );
    // A Warning Event names the line.
    let events = op.events();
    assert!(
        events.contains("InvalidRequirements") && events.contains("line 3"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_strategy_only_reports_stale_workloads() {
    let op = Scenario::start("manual", &[]).await;
    let spec = json!({"content": "a==1\n", "rollout": {"strategy": "Manual"}});
    op.wsreq("default", spec).await;
    op.deployment("worker", "default", 1).await;
    let obj = op.wait("default", "RolledOut", "False", None).await;
    let (reason, _) = says(&obj, "RolledOut", "False", &["Deployment/worker"]);
    assert_eq!(reason, "ManualRolloutPending");
    let status = obj.status.unwrap();
    assert!(!status.workloads[0].up_to_date);
    assert_eq!(op.deployment_hash("worker").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_reported_retried_and_recovered() {
    let op = Scenario::start("redis-down", &[]).await;
    // A Redis of its own, to stop: the Secret `redis` names it instead of the shared one.
    let redis = RedisServer::start();
    op.secret("redis", "url", &redis.url()).await;
    op.wsreq("default", json!({"content": "a==1\n", "cache": op.cache()}))
        .await;
    op.wait("default", "CacheWarmed", "True", None).await;

    redis.stop();
    op.set_content("default", "a==2\n").await;
    let obj = op.wait("default", "CacheWarmed", "False", None).await;
    let (reason, message) = says(&obj, "CacheWarmed", "False", &[&redis.port.to_string()]);
    assert!(reason.starts_with("Redis"), "{reason}: {message}");
    // The snapshot still follows, so installs fall back to it.
    let cm = op
        .api::<ConfigMap>()
        .get("default-requirements")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["requirements.txt"], "a==2\n");

    redis.start_again();
    op.wait("default", "CacheWarmed", "True", None).await;
    assert_eq!(
        redis_get(&redis.url(), &op.key).await.unwrap(),
        Payload::new("a==2\n").to_json()
    );
    let failed = op.metric("bifrost_requirements_redis_warms_total{result=\"error\"}");
    assert!(
        failed.is_some_and(|n| n >= 1.0),
        "the failed warms were not counted: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_endpoints() {
    let op = Scenario::start("health", &["--no-leader-election"]).await;
    wait_for("readyz", T, || async {
        (op.http_get("/readyz").0 == 200).then_some(())
    })
    .await;
    assert_eq!(op.http_get("/healthz"), (200, "ok".to_string()));
    // Ready means the webhook serves a certificate: its expiry is exported (self-managed,
    // valid for a year by default).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let expiry = op
        .metric("bifrost_requirements_webhook_certificate_expiry_timestamp_seconds")
        .expect("the certificate's expiry");
    assert!(
        expiry > now + 300.0 * 86400.0 && expiry < now + 400.0 * 86400.0,
        "{expiry} vs now {now}"
    );
    let (code, body) = op.http_get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "reconcile_duration_seconds",
        "rollouts",
        "redis_warms",
        "db_syncs",
        "db_sync_lag_seconds",
        "leader",
    ] {
        assert!(
            body.contains(&format!("bifrost_requirements_{name}")),
            "{name} missing:\n{body}"
        );
    }
    assert_eq!(op.http_get("/nope").0, 404);
}
