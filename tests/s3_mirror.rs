//! The mirror's S3 source on a real control plane, a real S3 server (moto, credentials
//! enforced) and real Redis: Bifrost writes `_repo/requirements.txt` with a plain PutObject and
//! the resource, Redis and labelled workloads follow; every way the object can fail to be read
//! keeps the last content and names the reason.

mod common;

use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::limit::exceeded;
use common::fixtures::events;
use common::operator::{condition, wait_for};
use common::s3::{BUCKET, S3Server, bifrost_put, bifrost_secrets, delete, fresh_key};
use common::scenario::{Ns, Scenario};
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::json;

const T: Duration = Duration::from_secs(30);

fn s3_source(server: &S3Server, key: &str) -> serde_json::Value {
    json!({"s3": {
        "bucket": BUCKET,
        "key": key,
        "endpoint": server.endpoint(),
        "credentialsSecretRef": {"name": "bifrost-secrets"},
        "pollIntervalSeconds": 1,
    }})
}

/// Whether a Warning Event named `reason` was published in `ns`.
fn warned(ns: &str, reason: &str) -> bool {
    let list: serde_json::Value = serde_json::from_str(&events(ns)).unwrap_or_default();
    list["items"].as_array().is_some_and(|items| {
        items
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == reason)
    })
}

async fn wait_warned(ns: &str, reason: &str) {
    wait_for(&format!("a Warning named {reason}"), T, || async {
        warned(ns, reason).then_some(())
    })
    .await;
}

/// The resource's generation now.
async fn generation(op: &Scenario) -> i64 {
    op.get("default").await.metadata.generation.unwrap()
}

/// `Synced=False` with `reason`, the content kept as `kept`, and a Warning named like the reason
/// (issue 11). Returns the resource.
async fn refused_keeping(op: &Scenario, reason: &str, kept: &str) -> WorkspaceRequirements {
    let obj = op.wait("default", "Synced", "False", None).await;
    assert_eq!(obj.spec.content, kept, "content was not kept");
    assert_eq!(condition(&obj, "Synced").unwrap().1, reason);
    wait_warned(&op.name, reason).await;
    obj
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mirror_follows_the_object_and_keeps_it_through_every_failure() {
    // Our own server: this test stops it.
    let server = S3Server::start();
    let op = Scenario::start("s3mirror", &[]).await;
    let key = fresh_key();
    let config = server.config(&key);
    let writer = &server.writer;
    bifrost_secrets(
        &op.client,
        &op.name,
        &writer.access_key_id,
        &writer.secret_access_key,
    )
    .await;
    // CRLF and no trailing newline: byte-exact.
    let first = "requests==2.32.3\r\nflask==3.0.3";
    bifrost_put(&config, first.as_bytes()).await;
    op.deployment("worker", "default", 1).await;
    op.wsreq(
        "default",
        json!({"source": s3_source(&server, &key), "cache": op.cache()}),
    )
    .await;
    the_object_is_mirrored(&op, first).await;
    let before = an_unchanged_object_is_only_polled(&op, &server, &key).await;

    let second = "requests==2.32.3\r\nflask==3.0.3\r\nnumpy\r\n";
    bifrost_put(&config, second.as_bytes()).await;
    a_change_is_one_write_that_redis_and_workloads_follow(&op, second, before).await;
    each_bad_object_keeps_the_content(&op, &config, second).await;
    a_deleted_object_keeps_it_until_a_good_one(&op, &config, second, first).await;

    server.stop();
    refused_keeping(&op, "S3Unreachable", first).await;
    assert!(
        !warned(&op.name, "AccessDenied"),
        "no failure here was a denial: {}",
        events(&op.name)
    );
}

/// Synced (S3ObjectMirrored) with the object's bytes as they are, and Redis warmed from them.
async fn the_object_is_mirrored(op: &Scenario, first: &str) {
    let obj = op.wait("default", "Synced", "True", None).await;
    assert_eq!(obj.spec.content, first);
    let (_, reason, _) = condition(&obj, "Synced").unwrap();
    assert_eq!(reason, "S3ObjectMirrored");
    assert!(obj.status.as_ref().unwrap().last_synced.is_some());
    wait_for("Redis warmed from S3", T, || async {
        (op.cached().await? == Payload::new(first).to_json()).then_some(())
    })
    .await;
}

/// Unchanged object: no write (the generation stays), and the polls are 304s. Returns the
/// generation.
async fn an_unchanged_object_is_only_polled(op: &Scenario, server: &S3Server, key: &str) -> i64 {
    let before = generation(op).await;
    let gets_before = server.requests_for(key).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(generation(op).await, before);
    let polls: Vec<(String, u16)> = server.requests_for(key)[gets_before..].to_vec();
    assert!(polls.len() >= 2, "no polls: {polls:?}");
    assert!(polls.iter().all(|p| *p == ("GET".into(), 304)), "{polls:?}");
    before
}

/// A change: one SSA write, Redis and the workload's template follow.
async fn a_change_is_one_write_that_redis_and_workloads_follow(
    op: &Scenario,
    second: &str,
    before: i64,
) {
    wait_for("spec follows the object", T, || async {
        (op.get("default").await.spec.content == second).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        generation(op).await,
        before + 1,
        "not exactly one write for one change"
    );
    wait_for("Redis follows the object", T, || async {
        (op.cached().await? == Payload::new(second).to_json()).then_some(())
    })
    .await;
    op.wait_rolled_to("worker", second, T).await;
}

/// Each failure keeps the content and names its reason; a good object recovers. Over the one
/// content limit (256 KiB) but under the 1 MiB read cap: refused as every other door refuses it,
/// in the same words.
async fn each_bad_object_keeps_the_content(
    op: &Scenario,
    config: &bifrost_requirements::s3::S3Config,
    second: &str,
) {
    let over_limit = format!("# {}\n", "x".repeat(300 * 1024));
    let failures: [(&str, &[u8]); 3] = [
        ("InvalidContent", b"requests\xff\xfe\n"),
        ("InvalidContent", &[b'a'; 1024 * 1024 + 1]),
        ("TooLarge", over_limit.as_bytes()),
    ];
    for (expected, bytes) in failures {
        bifrost_put(config, bytes).await;
        let obj = refused_keeping(op, expected, second).await;
        if expected == "TooLarge" {
            let message = condition(&obj, "Synced").unwrap().2;
            assert!(message.contains(&exceeded(over_limit.len())), "{message}");
        }
        bifrost_put(config, second.as_bytes()).await;
        op.wait("default", "Synced", "True", None).await;
    }
}

/// A deleted object is NotFound, the content kept; a new object recovers.
async fn a_deleted_object_keeps_it_until_a_good_one(
    op: &Scenario,
    config: &bifrost_requirements::s3::S3Config,
    second: &str,
    first: &str,
) {
    delete(config).await;
    refused_keeping(op, "NotFound", second).await;
    bifrost_put(config, first.as_bytes()).await;
    wait_for("recovered after the delete", T, || async {
        let obj = op.get("default").await;
        (obj.spec.content == first && condition(&obj, "Synced")?.0 == "True").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_s3_secret_is_access_denied_and_never_shown() {
    let server = common::s3::shared();
    let op = Scenario::start("s3denied", &[]).await;
    let key = fresh_key();
    bifrost_put(&server.config(&key), b"requests\n").await;
    let wrong = "wrong-secret-5c1e7a9d0b";
    bifrost_secrets(&op.client, &op.name, &server.writer.access_key_id, wrong).await;
    op.wsreq("default", json!({"source": s3_source(server, &key)}))
        .await;
    let obj = op.wait("default", "Synced", "False", None).await;
    assert_eq!(condition(&obj, "Synced").unwrap().1, "AccessDenied");
    // Nothing was written before a successful read.
    assert_eq!(obj.spec.content, "");
    assert_eq!(condition(&obj, "Ready").unwrap().0, "False");
    // Named for what it is: the server answered, and said no.
    wait_warned(&op.name, "AccessDenied").await;
    assert!(!warned(&op.name, "S3Unreachable"), "{}", events(&op.name));
    let status = serde_json::to_string(&obj.status).unwrap();
    for (what, text) in [
        ("status", status),
        ("events", events(&op.name)),
        ("operator log", op.op.log_text()),
    ] {
        assert!(!text.contains(wrong), "the secret is in the {what}");
        assert!(
            !text.contains(&server.writer.secret_access_key),
            "a secret is in the {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_and_s3_together_are_refused_by_the_api_server() {
    let ns = Ns::new("s3both").await;
    let obj: WorkspaceRequirements = serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1",
        "kind": "WorkspaceRequirements",
        "metadata": {"name": "both"},
        "spec": {"source": {
            "database": {"urlSecretRef": {"name": "db", "key": "url"}},
            "s3": {"bucket": "bifrost"},
        }},
    }))
    .unwrap();
    let api = ns.api::<WorkspaceRequirements>();
    let err = api
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("both sources were accepted");
    assert!(err.to_string().contains("spec.source"), "{err}");
    // Either alone is fine.
    let mut one = obj.clone();
    one.spec.source.as_mut().unwrap().database = None;
    let made = api.create(&PostParams::default(), &one).await.unwrap();
    assert_eq!(made.name_any(), "both");
}
