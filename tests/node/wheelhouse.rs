//! Real packages through the wheelhouse: numpy and pandas from the public index (downloaded once
//! by the fixture, served here from a local index), locked by the operator running as a pod,
//! copied into S3; with the index stopped, a new worker installs the exact lock from S3 and
//! imports them.

use super::*;
use common::real_packages;
use common::s3::{BUCKET, S3Server};

/// The resource of the case: `content` resolved for the worker image's Python against the
/// case's index, its wheelhouse in `s3`'s bucket under a prefix of this run, keys from the
/// Secret `bifrost-secrets` (Bifrost's own names).
fn resource(content: &str, index: &Index, s3: &S3Server) -> (Value, Vec<Value>) {
    let obj = json!({
        "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
        "metadata": {"name": "default"},
        "spec": {
            "content": content,
            "cache": {"redis": {"urlSecretRef": {"name": "bifrost-redis", "key": "url"}}},
            "install": {
                "python": {"version": "3.11", "platform": "x86_64-manylinux_2_28"},
                "indexUrls": [index.url()],
                "wheelhouse": {"s3": {
                    "bucket": BUCKET,
                    "prefix": format!("wheelhouse-{}", std::process::id()),
                    "endpoint": s3.endpoint(),
                    "credentialsSecretRef": {"name": "bifrost-secrets"},
                }},
            },
            "rollout": {"debounceSeconds": 1}
        }
    });
    let secret = json!({
        "metadata": {"name": "bifrost-secrets"},
        "stringData": {
            "BIFROST_S3_ACCESS_KEY": s3.writer.access_key_id,
            "BIFROST_S3_SECRET_KEY": s3.writer.secret_access_key,
        },
    });
    (obj, vec![secret])
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_index_down_a_new_worker_installs_real_packages_from_the_wheelhouse() {
    let _serial = serial().await;
    let small = real_packages::set("small");
    // The node first: its bridge owns the address the servers listen on.
    node();
    let s3 = S3Server::start_on(HOST_IP);
    let index = Index::serve_dir(HOST_IP, &small.dir);
    let content = small.requirements.clone();
    let mut case = Case::start_resource_on("node-wheelhouse", true, Some(index), |index, _| {
        resource(&content, index, &s3)
    })
    .await;
    let hash = case.ready_hash(&content).await;
    let api = case.wsreq();
    let obj = wait_for("WheelhouseComplete=True", T, || async {
        let r = api.get("default").await.ok()?;
        let w = r.status.as_ref()?.wheelhouse.as_ref()?;
        w.complete.then_some(r)
    })
    .await;
    let (status, reason, message) = condition(&obj, "WheelhouseComplete").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "Complete"),
        "{message}"
    );

    // The index goes down: nothing but the wheelhouse can serve the lock now.
    case.index.stop();
    case.worker("worker", true).await;
    let pod = case.running("worker", 1, Some(&hash)).await.remove(0);
    let name = pod.name_any();
    let log = node().logs(&case.ns, &name, INSTALL_CONTAINER);
    assert!(
        log.contains("installing the lock from the wheelhouse")
            && log.contains("no package index is asked"),
        "the install log says where the files came from:\n{log}"
    );
    case.installed_from_lock(&name, &hash);
    for (module, project) in [("pandas", "pandas"), ("numpy", "numpy")] {
        let want = small.pin(project).expect("the set pins it");
        let code = format!("import {module}; print({module}.__version__)");
        assert_eq!(case.run(&name, &["python3", "-c", &code]), want, "{module}");
    }
}
