//! The mirror's S3 source on a real control plane, a real S3 server (moto, credentials
//! enforced) and real Redis: Bifrost writes `_repo/requirements.txt` with a plain PutObject and
//! the resource, Redis and labelled workloads follow; every way the object can fail to be read
//! keeps the last content and names the reason.

mod common;

use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::requirements::content_hash;
use common::fixtures::events;
use common::operator::{
    Operator, condition, create_wsreq, get_wsreq, labelled_deployment, namespace, redis_cache,
    secret, template_hash, wait_condition, wait_for,
};
use common::s3::{BUCKET, S3Server, bifrost_put, bifrost_secrets, delete, fresh_key};
use common::services::{redis_get, redis_url};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
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

fn generation(obj: &WorkspaceRequirements) -> i64 {
    obj.metadata.generation.unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_mirror_follows_the_object_and_keeps_it_through_every_failure() {
    // Our own server: this test stops it.
    let server = S3Server::start();
    let (client, ns) = namespace("s3mirror").await;
    let key = fresh_key();
    let config = server.config(&key);
    let redis_key = common::services::fresh_key();
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    bifrost_secrets(
        &client,
        &ns,
        &server.writer.access_key_id,
        &server.writer.secret_access_key,
    )
    .await;
    // CRLF and no trailing newline: byte-exact.
    let first = "requests==2.32.3\r\nflask==3.0.3";
    bifrost_put(&config, first.as_bytes()).await;
    labelled_deployment(&client, &ns, "worker", "default").await;
    let _op = Operator::start(&ns, "a", &[]);
    create_wsreq(
        &client,
        &ns,
        "default",
        json!({"source": s3_source(&server, &key), "cache": redis_cache(&redis_key)}),
    )
    .await;
    let obj = wait_condition(&client, &ns, "default", "Synced", "True", None, T).await;
    assert_eq!(obj.spec.content, first);
    let (_, reason, _) = condition(&obj, "Synced").unwrap();
    assert_eq!(reason, "S3ObjectMirrored");
    assert!(obj.status.as_ref().unwrap().last_synced.is_some());
    wait_for("Redis warmed from S3", T, || async {
        (redis_get(&redis_url(), &redis_key).await? == Payload::new(first).to_json()).then_some(())
    })
    .await;

    // Unchanged object: no write (the generation stays), and the polls are 304s.
    let before = generation(&get_wsreq(&client, &ns, "default").await);
    let gets_before = server.requests_for(&key).len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        generation(&get_wsreq(&client, &ns, "default").await),
        before
    );
    let polls: Vec<(String, u16)> = server.requests_for(&key)[gets_before..].to_vec();
    assert!(polls.len() >= 2, "no polls: {polls:?}");
    assert!(polls.iter().all(|p| *p == ("GET".into(), 304)), "{polls:?}");

    // A change: one SSA write, Redis and the workload's template follow.
    let second = "requests==2.32.3\r\nflask==3.0.3\r\nnumpy\r\n";
    bifrost_put(&config, second.as_bytes()).await;
    wait_for("spec follows the object", T, || async {
        (get_wsreq(&client, &ns, "default").await.spec.content == second).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        generation(&get_wsreq(&client, &ns, "default").await),
        before + 1,
        "not exactly one write for one change"
    );
    wait_for("Redis follows the object", T, || async {
        (redis_get(&redis_url(), &redis_key).await? == Payload::new(second).to_json()).then_some(())
    })
    .await;
    let hash = content_hash(second);
    wait_for("the template hash follows", T, || async {
        let d = Api::<Deployment>::namespaced(client.clone(), &ns)
            .get("worker")
            .await
            .ok()?;
        (template_hash(&d)? == hash).then_some(())
    })
    .await;

    // Each failure keeps the content and names its reason; a good object recovers.
    // Over the one content limit (256 KiB) but under the 1 MiB read cap: refused as every other
    // door refuses it, in the same words.
    let over_limit = format!("# {}\n", "x".repeat(300 * 1024));
    let failures: [(&str, &[u8]); 3] = [
        ("InvalidContent", b"requests\xff\xfe\n"),
        ("InvalidContent", &[b'a'; 1024 * 1024 + 1]),
        ("TooLarge", over_limit.as_bytes()),
    ];
    for (expected, bytes) in failures {
        bifrost_put(&config, bytes).await;
        let obj = wait_condition(&client, &ns, "default", "Synced", "False", None, T).await;
        assert_eq!(obj.spec.content, second, "content was not kept");
        assert_eq!(condition(&obj, "Synced").unwrap().1, expected);
        if expected == "TooLarge" {
            let message = condition(&obj, "Synced").unwrap().2;
            assert!(
                message.contains(&bifrost_requirements::limit::exceeded(over_limit.len())),
                "{message}"
            );
        }
        // The Warning is named like the reason (issue 11).
        wait_warned(&ns, expected).await;
        bifrost_put(&config, second.as_bytes()).await;
        wait_condition(&client, &ns, "default", "Synced", "True", None, T).await;
    }
    delete(&config).await;
    let obj = wait_condition(&client, &ns, "default", "Synced", "False", None, T).await;
    assert_eq!(obj.spec.content, second);
    assert_eq!(condition(&obj, "Synced").unwrap().1, "NotFound");
    wait_warned(&ns, "NotFound").await;
    bifrost_put(&config, first.as_bytes()).await;
    wait_for("recovered after the delete", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        (obj.spec.content == first && condition(&obj, "Synced")?.0 == "True").then_some(())
    })
    .await;

    server.stop();
    let obj = wait_condition(&client, &ns, "default", "Synced", "False", None, T).await;
    assert_eq!(obj.spec.content, first);
    assert_eq!(condition(&obj, "Synced").unwrap().1, "S3Unreachable");
    wait_warned(&ns, "S3Unreachable").await;
    assert!(
        !warned(&ns, "AccessDenied"),
        "no failure here was a denial: {}",
        events(&ns)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_s3_secret_is_access_denied_and_never_shown() {
    let server = common::s3::shared();
    let (client, ns) = namespace("s3denied").await;
    let key = fresh_key();
    bifrost_put(&server.config(&key), b"requests\n").await;
    let wrong = "wrong-secret-5c1e7a9d0b";
    bifrost_secrets(&client, &ns, &server.writer.access_key_id, wrong).await;
    let op = Operator::start(&ns, "a", &[]);
    create_wsreq(
        &client,
        &ns,
        "default",
        json!({"source": s3_source(server, &key)}),
    )
    .await;
    let obj = wait_condition(&client, &ns, "default", "Synced", "False", None, T).await;
    assert_eq!(condition(&obj, "Synced").unwrap().1, "AccessDenied");
    // Nothing was written before a successful read.
    assert_eq!(obj.spec.content, "");
    assert_eq!(condition(&obj, "Ready").unwrap().0, "False");
    // Named for what it is: the server answered, and said no.
    wait_warned(&ns, "AccessDenied").await;
    assert!(!warned(&ns, "S3Unreachable"), "{}", events(&ns));
    let status = serde_json::to_string(&obj.status).unwrap();
    for (what, text) in [
        ("status", status),
        ("events", events(&ns)),
        ("operator log", op.log_text()),
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
    let (client, ns) = namespace("s3both").await;
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
    let err = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect_err("both sources were accepted");
    assert!(err.to_string().contains("spec.source"), "{err}");
    // Either alone is fine.
    let mut one = obj.clone();
    one.spec.source.as_mut().unwrap().database = None;
    let made = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &one)
        .await
        .unwrap();
    assert_eq!(made.name_any(), "both");
}
