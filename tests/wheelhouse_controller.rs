//! The controller's wheelhouse on a real control plane, a real S3 server and a real index: the
//! lock's files are copied once per lock under the prefix, the status says when the copy is
//! complete, a new lock gets its own folder, folders nobody uses are pruned, and a bucket the
//! operator cannot write is reported without touching the rollout.

mod common;

use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use common::index::Index;
use common::operator::wait_for;
use common::s3::{BUCKET, raw};
use common::scenario::{Scenario, says};
use common::wheels::Wheel;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use object_store::ObjectStore;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

/// The Secret `s3` holding the shared S3 server's writer keys under `id` and `key`.
async fn keys_secret(op: &Scenario) {
    let s3 = common::s3::shared();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "s3"},
        "stringData": {"id": s3.writer.access_key_id, "key": s3.writer.secret_access_key},
    }))
    .unwrap();
    op.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret s3");
}

/// The resource `default` resolving against `index` for the node's worker Python, with its
/// wheelhouse under `prefix` of the shared S3 server's bucket, keys from the Secret `s3` (the
/// secret key under `secret_key`).
async fn resource(op: &Scenario, content: &str, index: &Index, prefix: &str, secret_key: &str) {
    let s3 = common::s3::shared();
    op.wsreq(
        "default",
        json!({
            "content": content,
            "cache": op.cache(),
            "install": {
                "python": {"version": "3.11", "platform": "x86_64-manylinux_2_28"},
                "indexUrls": [index.url()],
                "wheelhouse": {"s3": {
                    "bucket": BUCKET,
                    "prefix": prefix,
                    "endpoint": s3.endpoint(),
                    "credentialsSecretRef": {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": secret_key},
                }},
            },
            "rollout": {"debounceSeconds": 0},
        }),
    )
    .await;
}

/// The keys under `prefix` in the shared bucket.
async fn keys(prefix: &str) -> Vec<String> {
    let (store, _) = raw(&common::s3::shared().config("unused"));
    let prefix = object_store::path::Path::from(prefix);
    let mut keys: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list the bucket");
    keys.sort();
    keys
}

/// Once WheelhouseComplete is True for the current lock: the resource.
async fn complete(op: &Scenario) -> WorkspaceRequirements {
    wait_for(
        "WheelhouseComplete=True for the current lock",
        T,
        || async {
            let r = op.get("default").await;
            let s = r.status.as_ref()?;
            let w = s.wheelhouse.as_ref()?;
            (w.complete && Some(&w.lock_sha256) == s.lock.as_ref().map(|l| &l.sha256)).then_some(r)
        },
    )
    .await
}

fn operator_flags(index: &Index) -> Vec<String> {
    vec![
        "--resolver-index-url".into(),
        index.url(),
        "--wheelhouse-retention".into(),
        "0s".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_lock_is_copied_once_reported_and_old_ones_are_pruned() {
    let alpha = Wheel::new("alpha", "1.0");
    let beta = Wheel::new("beta", "2.0").requires("alpha");
    let index = Index::start(&[alpha.clone(), beta.clone()]);
    let flags = operator_flags(&index);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let op = Scenario::start("wheelhouse", &flags).await;
    let prefix = format!("wheelhouse-test-{}", op.name);
    keys_secret(&op).await;
    // The secret key named is the access key id at first: the copy fails, and says why.
    resource(&op, "beta==2.0\n", &index, &prefix, "id").await;
    let obj = op
        .wait(
            "default",
            "WheelhouseComplete",
            "False",
            Some("WheelhouseFailed"),
        )
        .await;
    says(&obj, "WheelhouseComplete", "False", &["s3"]);
    // Not a step of Ready: the rest of the reconcile went on.
    for step in ["Resolved", "CacheWarmed", "Snapshotted"] {
        says(&obj, step, "True", &[]);
    }
    assert!(
        keys(&prefix).await.is_empty(),
        "nothing written without keys"
    );

    op.patch_spec(
        "default",
        json!({"install": {"wheelhouse": {"s3": {"credentialsSecretRef":
            {"name": "s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "key"}}}}}),
    )
    .await;
    let first = complete(&op).await;
    let w = first.status.as_ref().unwrap().wheelhouse.clone().unwrap();
    let sha1 = w.lock_sha256.clone();
    assert_eq!(w.files, Some(2), "{w:?}");
    assert!(w.location.ends_with(&format!("{prefix}/{sha1}/")), "{w:?}");
    says(&first, "WheelhouseComplete", "True", &["2 file(s)"]);
    let stored = keys(&prefix).await;
    for name in [alpha.file_name(), beta.file_name()] {
        assert!(
            stored.contains(&format!("{prefix}/{sha1}/{name}")),
            "{name} in {stored:?}"
        );
    }
    assert!(stored.contains(&format!("{prefix}/{sha1}/manifest.json")));

    // A new content, a new lock: its own folder; the old one is used by nothing and pruned.
    op.set_content("default", "alpha==1.0\n").await;
    let second = wait_for("the new lock's wheelhouse", T, || async {
        let r = complete(&op).await;
        let sha = r.status.as_ref()?.wheelhouse.as_ref()?.lock_sha256.clone();
        (sha != sha1).then_some(sha)
    })
    .await;
    wait_for(
        "the old lock's folder pruned",
        Duration::from_secs(700),
        || async {
            let k = keys(&prefix).await;
            (!k.iter().any(|k| k.contains(&sha1)) && k.iter().any(|k| k.contains(&second)))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wheelhouse_specs_are_refused_naming_the_field() {
    let op = Scenario::start("wheelhouse-spec", &[]).await;
    let cases: [(Value, &str); 4] = [
        (json!({"s3": {}}), "spec.install.wheelhouse.s3.bucket"),
        (
            json!({"s3": {"bucket": "Not_A_Bucket"}}),
            "spec.install.wheelhouse.s3.bucket",
        ),
        (
            json!({"s3": {"bucket": "wheels", "prefix": "a/../b"}}),
            "spec.install.wheelhouse.s3.prefix",
        ),
        (
            json!({"s3": {"bucket": "wheels", "endpoint": "ftp://x"}}),
            "spec.install.wheelhouse.s3.endpoint",
        ),
    ];
    for (i, (wheelhouse, field)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        op.wsreq(
            &name,
            json!({"content": "alpha==1.0\n", "install": {"wheelhouse": wheelhouse}}),
        )
        .await;
        let obj = op.wait(&name, "Valid", "False", Some("InvalidSpec")).await;
        says(&obj, "Valid", "False", &[field]);
    }
}
