//! The controller's lock on a real control plane, with real Redis and a real PEP 503 index served
//! over HTTP: each content is resolved once, for the workers' interpreter, into the
//! `requirements.lock` of its ConfigMap snapshot; unresolvable content is reported before Redis
//! or any workload is touched; the operator never fetches from an index it does not allow.

mod common;

use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::lock::{LOCK_FILE, Lock};
use bifrost_requirements::requirements::content_hash;
use common::fixtures::events;
use common::index::Index;
use common::operator::{
    Operator, condition, create_wsreq, get_wsreq, labelled_deployment, namespace, redis_cache,
    secret, template_hash, wait_condition, wait_for,
};
use common::services::{fresh_key, redis_get, redis_url};
use common::wheels::Wheel;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn python() -> Value {
    json!({"version": "3.11", "platform": "x86_64-manylinux_2_28"})
}

/// An operator in `ns` that may resolve against `index` only.
fn operator(ns: &str, id: &str, index: &Index) -> Operator {
    Operator::start(ns, id, &["--resolver-index-url", &index.url()])
}

/// A resource resolving against `index` for [`python`], cached in Redis under `key`.
async fn resource(client: &Client, ns: &str, content: &str, index: &Index, key: &str) {
    create_wsreq(
        client,
        ns,
        "default",
        json!({
            "content": content,
            "cache": redis_cache(key),
            "install": {"python": python(), "indexUrls": [index.url()], "onlyBinary": true},
            "rollout": {"debounceSeconds": 0},
        }),
    )
    .await;
}

async fn set_spec(client: &Client, ns: &str, spec: Value) {
    Api::<WorkspaceRequirements>::namespaced(client.clone(), ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

/// The snapshot's data (empty until it exists).
async fn snapshot(client: &Client, ns: &str) -> std::collections::BTreeMap<String, String> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("default-requirements")
        .await
        .unwrap()
        .and_then(|cm| cm.data)
        .unwrap_or_default()
}

/// The snapshot's lock once it is the one of `content`.
async fn lock_of(client: &Client, ns: &str, content: &str) -> Lock {
    let hash = content_hash(content);
    wait_for(&format!("the lock of {content:?}"), T, || async {
        let text = snapshot(client, ns).await.remove(LOCK_FILE)?;
        Lock::parse(&text).ok().filter(|l| l.resolves(&hash))
    })
    .await
}

async fn worker_hash(client: &Client, ns: &str) -> Option<String> {
    template_hash(
        &Api::<Deployment>::namespaced(client.clone(), ns)
            .get("worker")
            .await
            .unwrap(),
    )
}

/// Requests for `project`'s index page the server has logged.
fn fetches(index: &Index, project: &str) -> usize {
    index
        .log()
        .lines()
        .filter(|l| l.contains(&format!("GET /{project}/")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_is_resolved_once_and_its_lock_holds_while_the_index_moves_on() {
    let alpha = Wheel::new("alpha", "1.0");
    let index = Index::start(std::slice::from_ref(&alpha));
    let (client, ns) = namespace("lock").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    labelled_deployment(&client, &ns, "worker", "default").await;
    let mut op = operator(&ns, "a", &index);
    let content = "alpha>=1.0\n";
    resource(&client, &ns, content, &index, &key).await;

    let obj = wait_condition(
        &client,
        &ns,
        "default",
        "Resolved",
        "True",
        Some("Resolved"),
        T,
    )
    .await;
    let lock = lock_of(&client, &ns, content).await;
    assert_eq!(lock.pins(), ["alpha==1.0"]);
    assert!(
        lock.body
            .contains(&format!("--hash=sha256:{}", index.sha256(&alpha))),
        "{}",
        lock.body
    );
    let status = obj.status.clone().unwrap().lock.expect("status.lock");
    assert_eq!(status.content_hash, content_hash(content));
    assert_eq!(status.packages, 1);
    let (_, reason, message) = condition(&obj, "Resolved").unwrap();
    assert_eq!(reason, "Resolved");
    assert!(
        message.contains("1 distribution(s) pinned for Python 3.11 x86_64-manylinux_2_28"),
        "{message}"
    );
    // Redis keeps Bifrost's payload, untouched by the lock.
    assert_eq!(
        redis_get(&redis_url(), &key).await,
        Some(Payload::new(content).to_json())
    );
    wait_for("the worker rolled to the content", T, || async {
        (worker_hash(&client, &ns).await? == content_hash(content)).then_some(())
    })
    .await;

    // A newer release on the index changes nothing for this content: reconciles (here forced
    // by a label) and a restarted operator reuse the lock without asking the index again.
    index.publish(&Wheel::new("alpha", "1.1"));
    let asked = fetches(&index, "alpha");
    assert!(asked >= 1, "the resolver asked the index: {}", index.log());
    Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "1"}}})),
        )
        .await
        .unwrap();
    op.stop();
    let op = operator(&ns, "b", &index);
    wait_for("the new operator's reconcile", T, || async {
        op.log_text().contains("reconciled").then_some(())
    })
    .await;
    assert_eq!(lock_of(&client, &ns, content).await.pins(), ["alpha==1.0"]);
    assert_eq!(fetches(&index, "alpha"), asked, "{}", index.log());
    let again = get_wsreq(&client, &ns, "default").await;
    assert_eq!(
        again.status.unwrap().lock.unwrap().resolved_at,
        status.resolved_at,
        "the lock was reused, not resolved again"
    );

    // A lock edited in the ConfigMap while no operator runs is not the one status.lock records:
    // the next operator does not reuse it, it resolves again and writes its own.
    let mut op = op;
    op.stop();
    let forged = lock.render().replace(
        "alpha==1.0",
        &format!("evil==6.6.6 --hash=sha256:{}\nalpha==1.0", "0".repeat(64)),
    );
    Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .patch(
            "default-requirements",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {LOCK_FILE: forged}})),
        )
        .await
        .unwrap();
    let op = operator(&ns, "c", &index);
    wait_for("the forged lock replaced", T, || async {
        let text = snapshot(&client, &ns).await.remove(LOCK_FILE)?;
        (!text.contains("evil")).then_some(())
    })
    .await;
    assert!(
        op.log_text().contains("not the one status.lock records"),
        "{}",
        op.log_text()
    );
    assert!(fetches(&index, "alpha") > asked, "resolved again");

    // New content: resolved anew, against what the index serves now.
    let changed = "alpha>=1.0\n# pinned anew\n";
    set_spec(&client, &ns, json!({"content": changed})).await;
    assert_eq!(lock_of(&client, &ns, changed).await.pins(), ["alpha==1.1"]);
    wait_for("the worker rolled to the new content", T, || async {
        (worker_hash(&client, &ns).await? == content_hash(changed)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_content_is_reported_and_neither_cached_snapshotted_nor_rolled() {
    let index = Index::start(&[
        Wheel::new("alpha", "1.0"),
        Wheel::new("beta", "1.0").tag("py3-none-win_amd64"),
    ]);
    let (client, ns) = namespace("unresolvable").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    labelled_deployment(&client, &ns, "worker", "default").await;
    let _op = operator(&ns, "a", &index);
    let good = "alpha>=1.0\n";
    resource(&client, &ns, good, &index, &key).await;
    wait_for("the worker rolled to the good content", T, || async {
        (worker_hash(&client, &ns).await? == content_hash(good)).then_some(())
    })
    .await;
    let good_lock = lock_of(&client, &ns, good).await;

    for (content, named) in [
        (
            "alpha>=1.0\nbifrost-no-such-package\n",
            "bifrost-no-such-package",
        ),
        ("alpha==9.9\n", "alpha==9.9"),
        ("beta\n", "beta"),
    ] {
        set_spec(&client, &ns, json!({"content": content})).await;
        let obj = wait_for(&format!("{content:?} unresolvable"), T, || async {
            let obj = get_wsreq(&client, &ns, "default").await;
            let (status, reason, _) = condition(&obj, "Resolved")?;
            (status == "False"
                && reason == "ResolutionFailed"
                && obj.status.as_ref()?.content_hash.as_deref() == Some(&content_hash(content)))
            .then_some(obj)
        })
        .await;
        let (_, _, message) = condition(&obj, "Resolved").unwrap();
        assert!(
            message.contains(named) && message.contains("Python 3.11 x86_64-manylinux_2_28"),
            "{content:?}: {message}"
        );
        let (status, reason, _) = condition(&obj, "Ready").unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "ResolutionFailed")
        );
        assert_eq!(condition(&obj, "CacheWarmed").unwrap().0, "Unknown");
        // Nothing downstream moved: Redis, the snapshot (content and lock) and the worker keep
        // the last resolved content.
        assert_eq!(
            redis_get(&redis_url(), &key).await,
            Some(Payload::new(good).to_json())
        );
        let data = snapshot(&client, &ns).await;
        assert_eq!(data["requirements.txt"], good);
        assert_eq!(Lock::parse(&data[LOCK_FILE]).unwrap(), good_lock);
        assert_eq!(worker_hash(&client, &ns).await, Some(content_hash(good)));
        assert_eq!(
            obj.status.unwrap().lock.unwrap().content_hash,
            content_hash(good),
            "status.lock still names the lock the workers install"
        );
        wait_for(
            &format!("a ResolutionFailed Warning naming {named}"),
            T,
            || async {
                // Its own Event (not folded into the first content's series), with its own note.
                let events: Value = serde_json::from_str(&events(&ns)).ok()?;
                events["items"]
                    .as_array()?
                    .iter()
                    .any(|e| {
                        e["reason"] == "ResolutionFailed"
                            && e["type"] == "Warning"
                            && e["action"]
                                .as_str()
                                .is_some_and(|a| a.starts_with("Resolve-"))
                            && e["note"].as_str().is_some_and(|n| n.contains(named))
                    })
                    .then_some(())
            },
        )
        .await;
    }

    // Fixed content resolves, and rolls.
    let fixed = "alpha>=1.0\n# fixed\n";
    set_spec(&client, &ns, json!({"content": fixed})).await;
    wait_for("the worker rolled to the fixed content", T, || async {
        (worker_hash(&client, &ns).await? == content_hash(fixed)).then_some(())
    })
    .await;
    // The status is written after the template is patched: the worker may roll a moment before
    // the condition says so.
    wait_for("Resolved=True for the fixed content", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        (condition(&obj, "Resolved")?.0 == "True").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_when_asked_or_when_the_operator_may_not_fetch_the_index() {
    let allowed = Index::start(&[Wheel::new("alpha", "1.0")]);
    let foreign = Index::start(&[Wheel::new("alpha", "1.0")]);
    let (client, ns) = namespace("podresolve").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    let _op = operator(&ns, "a", &allowed);
    let content = "alpha\n";
    resource(&client, &ns, content, &allowed, &key).await;
    lock_of(&client, &ns, content).await;

    // resolve: Pod — the snapshot loses its lock, the status says who resolves.
    set_spec(&client, &ns, json!({"install": {"resolve": "Pod"}})).await;
    let obj = wait_for("the lock gone from the snapshot", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        let gone = !snapshot(&client, &ns).await.contains_key(LOCK_FILE);
        (gone && condition(&obj, "Resolved")?.1 == "PodsResolve").then_some(obj)
    })
    .await;
    assert!(obj.status.as_ref().unwrap().lock.is_none());
    assert!(
        condition(&obj, "Resolved")
            .unwrap()
            .2
            .contains("spec.install.resolve is Pod"),
        "{obj:?}"
    );
    assert_eq!(condition(&obj, "Ready").unwrap().1, "NoWorkloads");

    // An index only the resource names: never fetched by the operator, the pods resolve.
    set_spec(
        &client,
        &ns,
        json!({"content": "alpha\n# foreign\n", "install": {"resolve": "Controller", "indexUrls": [foreign.url()]}}),
    )
    .await;
    let obj = wait_for("the foreign index left to the pods", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        let (status, reason, message) = condition(&obj, "Resolved")?;
        (status == "True" && reason == "PodsResolve" && message.contains(&foreign.url()))
            .then_some(obj)
    })
    .await;
    assert!(
        condition(&obj, "Resolved")
            .unwrap()
            .2
            .contains("--resolver-index-url"),
        "{obj:?}"
    );
    assert_eq!(fetches(&foreign, "alpha"), 0, "{}", foreign.log());
    assert_eq!(condition(&obj, "CacheWarmed").unwrap().0, "True");

    // The controller resolves, but for which interpreter? No workload to learn it from: nothing
    // waits, the content is cached and snapshotted without a lock (pods resolve), and the
    // status says why and what to set.
    let unnamed = "alpha\n# no interpreter\n";
    // (A merge patch's null removes the field.)
    set_spec(
        &client,
        &ns,
        json!({"content": unnamed, "install": {"python": null, "indexUrls": [allowed.url()]}}),
    )
    .await;
    let obj = wait_for("InterpreterUnknown", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        let (status, reason, _) = condition(&obj, "Resolved")?;
        let warmed = condition(&obj, "CacheWarmed")?.0 == "True";
        (status == "True" && reason == "InterpreterUnknown" && warmed).then_some(obj)
    })
    .await;
    let message = condition(&obj, "Resolved").unwrap().2;
    assert!(message.contains("set spec.install.python"), "{message}");
    assert!(
        message.contains("no labelled Deployment or StatefulSet"),
        "{message}"
    );
    assert!(obj.status.as_ref().unwrap().lock.is_none());
    assert!(obj.status.as_ref().unwrap().interpreter.is_none());
    assert_eq!(
        redis_get(&redis_url(), &key).await,
        Some(Payload::new(unnamed).to_json())
    );
    let data = snapshot(&client, &ns).await;
    assert_eq!(data["requirements.txt"], unnamed);
    assert!(
        !data.contains_key(LOCK_FILE),
        "no lock for an unknown interpreter"
    );
}

/// The SHA-256 of `wheel` as its author built it (not the index's copy).
fn authors_hash(wheel: &Wheel) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = wheel.build(dir.path());
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(path).unwrap(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_pin_the_index_breaks_is_hash_mismatch_and_continuations_resolve() {
    let good = Wheel::new("goodpkg", "1.0");
    let impostor = good.clone().requires("evil").extra("IMPOSTOR = True\n");
    let index = Index::start(&[impostor.clone(), Wheel::new("evil", "1.0")]);
    let (client, ns) = namespace("hashpin").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    let _op = operator(&ns, "a", &index);
    // Continuations as pip joins them: the resolver reads what the policy checked.
    let continued = "evil \\\n>=1.0\n";
    resource(&client, &ns, continued, &index, &key).await;
    let obj = wait_condition(
        &client,
        &ns,
        "default",
        "Resolved",
        "True",
        Some("Resolved"),
        T,
    )
    .await;
    assert_eq!(
        obj.status.unwrap().lock.unwrap().content_hash,
        content_hash(continued)
    );
    assert_eq!(lock_of(&client, &ns, continued).await.pins(), ["evil==1.0"]);

    let real = authors_hash(&good);
    let served = index.sha256(&impostor);
    let pinned = format!("goodpkg==1.0 --hash=sha256:{real}\n");
    set_spec(&client, &ns, json!({"content": pinned})).await;
    let obj = wait_for("HashMismatch", T, || async {
        let obj = get_wsreq(&client, &ns, "default").await;
        let (status, reason, _) = condition(&obj, "Resolved")?;
        (status == "False" && reason == "HashMismatch").then_some(obj)
    })
    .await;
    let (_, _, message) = condition(&obj, "Resolved").unwrap();
    assert!(
        message.contains(&format!("line 1: `goodpkg==1.0 --hash=sha256:{real}`")),
        "{message}"
    );
    assert!(message.contains(&format!("sha256:{served}")), "{message}");
    // Nothing downstream: the snapshot keeps the last lock.
    assert_eq!(snapshot(&client, &ns).await["requirements.txt"], continued);
}
