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
use common::operator::{condition, wait_for};
use common::scenario::{Scenario, says};
use common::wheels::Wheel;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn python() -> Value {
    json!({"version": "3.11", "platform": "x86_64-manylinux_2_28"})
}

/// The resource `default` resolving against `index` for [`python`], cached in the scenario's key.
async fn resource(op: &Scenario, content: &str, index: &Index) {
    op.wsreq(
        "default",
        json!({
            "content": content,
            "cache": op.cache(),
            "install": {"python": python(), "indexUrls": [index.url()], "onlyBinary": true},
            "rollout": {"debounceSeconds": 0},
        }),
    )
    .await;
}

/// The snapshot's lock once it is the one of `content`.
async fn lock_of(op: &Scenario, content: &str) -> Lock {
    let hash = content_hash(content);
    wait_for(&format!("the lock of {content:?}"), T, || async {
        let text = op.snapshot("default").await.remove(LOCK_FILE)?;
        Lock::parse(&text).ok().filter(|l| l.resolves(&hash))
    })
    .await
}

/// Requests for `project`'s index page the server has logged.
fn fetches(index: &Index, project: &str) -> usize {
    index
        .log()
        .lines()
        .filter(|l| l.contains(&format!("GET /{project}/")))
        .count()
}

/// Whether the resource's `Resolved` condition has this status and reason.
fn resolved(obj: &WorkspaceRequirements, status: &str, reason: &str) -> bool {
    condition(obj, "Resolved").is_some_and(|c| c.0 == status && c.1 == reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_is_resolved_once_and_its_lock_holds_while_the_index_moves_on() {
    let alpha = Wheel::new("alpha", "1.0");
    let index = Index::start(std::slice::from_ref(&alpha));
    let mut op = Scenario::resolving("lock", &index).await;
    op.deployment("worker", "default", 1).await;
    let content = "alpha>=1.0\n";
    resource(&op, content, &index).await;

    let (lock, resolved_at) = it_is_locked_and_rolled(&op, &index, &alpha, content).await;
    let asked = a_newer_release_changes_nothing(&mut op, &index, content, &resolved_at).await;
    a_forged_lock_is_not_reused(&mut op, &index, &lock, asked).await;

    // New content: resolved anew, against what the index serves now.
    let changed = "alpha>=1.0\n# pinned anew\n";
    op.set_content("default", changed).await;
    assert_eq!(lock_of(&op, changed).await.pins(), ["alpha==1.1"]);
    op.wait_rolled_to("worker", changed, T).await;
}

/// The content is resolved (its lock pinned and hashed in the snapshot, status.lock, the
/// condition), Redis keeps Bifrost's payload and the worker rolls. Returns the lock and when it
/// was resolved.
async fn it_is_locked_and_rolled(
    op: &Scenario,
    index: &Index,
    alpha: &Wheel,
    content: &str,
) -> (Lock, String) {
    let obj = op
        .wait_within("default", "Resolved", "True", Some("Resolved"), T)
        .await;
    let lock = lock_of(op, content).await;
    assert_eq!(lock.pins(), ["alpha==1.0"]);
    assert!(
        lock.body
            .contains(&format!("--hash=sha256:{}", index.sha256(alpha))),
        "{}",
        lock.body
    );
    // Filtered for the workers' platform, and saying so where every version of the parser
    // reads it as a comment.
    assert!(
        lock.body.starts_with(
            "# Hashes kept for Python 3.11 on x86_64-manylinux_2_28 only (1 of 1 files;"
        ),
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
    assert_eq!(op.cached().await, Some(Payload::new(content).to_json()));
    op.wait_rolled_to("worker", content, T).await;
    (lock, status.resolved_at)
}

/// A newer release on the index changes nothing for this content: reconciles (here forced by a
/// label) and a restarted operator reuse the lock without asking the index again. Returns how
/// often the index was asked.
async fn a_newer_release_changes_nothing(
    op: &mut Scenario,
    index: &Index,
    content: &str,
    resolved_at: &str,
) -> usize {
    index.publish(&Wheel::new("alpha", "1.1"));
    let asked = fetches(index, "alpha");
    assert!(asked >= 1, "the resolver asked the index: {}", index.log());
    op.touch("default").await;
    op.restart_resolving("b", index);
    wait_for("the new operator's reconcile", T, || async {
        op.op.log_text().contains("reconciled").then_some(())
    })
    .await;
    assert_eq!(lock_of(op, content).await.pins(), ["alpha==1.0"]);
    assert_eq!(fetches(index, "alpha"), asked, "{}", index.log());
    let again = op.get("default").await;
    assert_eq!(
        again.status.unwrap().lock.unwrap().resolved_at,
        resolved_at,
        "the lock was reused, not resolved again"
    );
    asked
}

/// A lock edited in the ConfigMap while no operator runs is not the one status.lock records: the
/// next operator does not reuse it, it resolves again and writes its own.
async fn a_forged_lock_is_not_reused(op: &mut Scenario, index: &Index, lock: &Lock, asked: usize) {
    op.op.stop();
    let forged = lock.render().replace(
        "alpha==1.0",
        &format!("evil==6.6.6 --hash=sha256:{}\nalpha==1.0", "0".repeat(64)),
    );
    op.patch_snapshot("default", json!({LOCK_FILE: forged}))
        .await;
    op.restart_resolving("c", index);
    wait_for("the forged lock replaced", T, || async {
        let text = op.snapshot("default").await.remove(LOCK_FILE)?;
        (!text.contains("evil")).then_some(())
    })
    .await;
    assert!(
        op.op.log_text().contains("not the one status.lock records"),
        "{}",
        op.op.log_text()
    );
    assert!(fetches(index, "alpha") > asked, "resolved again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_content_is_reported_and_neither_cached_snapshotted_nor_rolled() {
    let index = Index::start(&[
        Wheel::new("alpha", "1.0"),
        Wheel::new("beta", "1.0").tag("py3-none-win_amd64"),
    ]);
    let op = Scenario::resolving("unresolvable", &index).await;
    op.deployment("worker", "default", 1).await;
    let good = "alpha>=1.0\n";
    resource(&op, good, &index).await;
    op.wait_rolled_to("worker", good, T).await;
    let good_lock = lock_of(&op, good).await;

    for (content, named) in [
        (
            "alpha>=1.0\nbifrost-no-such-package\n",
            "bifrost-no-such-package",
        ),
        ("alpha==9.9\n", "alpha==9.9"),
        ("beta\n", "beta"),
    ] {
        op.set_content("default", content).await;
        let obj = it_is_reported_naming(&op, content, named).await;
        nothing_downstream_moved(&op, &obj, good, &good_lock).await;
        a_warning_names(&op, named).await;
    }

    // Fixed content resolves, and rolls.
    let fixed = "alpha>=1.0\n# fixed\n";
    op.set_content("default", fixed).await;
    op.wait_rolled_to("worker", fixed, T).await;
    // The status is written after the template is patched: the worker may roll a moment before
    // the condition says so.
    op.wait_until("default", "Resolved=True for the fixed content", T, |obj| {
        condition(obj, "Resolved").is_some_and(|c| c.0 == "True")
    })
    .await;
}

/// `Resolved=False` (ResolutionFailed) for `content`, the message naming `named` and the
/// interpreter; Ready says the same, CacheWarmed is Unknown. Returns the resource.
async fn it_is_reported_naming(op: &Scenario, content: &str, named: &str) -> WorkspaceRequirements {
    let hash = content_hash(content);
    let obj = op
        .wait_until("default", &format!("{content:?} unresolvable"), T, |obj| {
            resolved(obj, "False", "ResolutionFailed")
                && obj.status.as_ref().and_then(|s| s.content_hash.as_deref()) == Some(&hash)
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
    obj
}

/// Redis, the snapshot (content and lock), the worker and status.lock keep the last resolved
/// content, `good`.
async fn nothing_downstream_moved(
    op: &Scenario,
    obj: &WorkspaceRequirements,
    good: &str,
    good_lock: &Lock,
) {
    assert_eq!(op.cached().await, Some(Payload::new(good).to_json()));
    let data = op.snapshot("default").await;
    assert_eq!(data["requirements.txt"], good);
    assert_eq!(&Lock::parse(&data[LOCK_FILE]).unwrap(), good_lock);
    assert_eq!(op.deployment_hash("worker").await, Some(content_hash(good)));
    assert_eq!(
        obj.status
            .as_ref()
            .unwrap()
            .lock
            .as_ref()
            .unwrap()
            .content_hash,
        content_hash(good),
        "status.lock still names the lock the workers install"
    );
}

/// A ResolutionFailed Warning of its own (not folded into the first content's series), with its
/// own note naming `named`.
async fn a_warning_names(op: &Scenario, named: &str) {
    wait_for(
        &format!("a ResolutionFailed Warning naming {named}"),
        T,
        || async {
            let events: Value = serde_json::from_str(&events(&op.name)).ok()?;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_when_asked_or_when_the_operator_may_not_fetch_the_index() {
    let allowed = Index::start(&[Wheel::new("alpha", "1.0")]);
    let foreign = Index::start(&[Wheel::new("alpha", "1.0")]);
    let op = Scenario::resolving("podresolve", &allowed).await;
    let content = "alpha\n";
    resource(&op, content, &allowed).await;
    lock_of(&op, content).await;

    pods_resolve_when_asked(&op).await;
    an_index_the_operator_may_not_fetch_is_left_to_the_pods(&op, &foreign).await;
    an_unknown_interpreter_is_left_to_the_pods(&op, &allowed).await;
}

/// resolve: Pod — the snapshot loses its lock, the status says who resolves.
async fn pods_resolve_when_asked(op: &Scenario) {
    op.patch_spec("default", json!({"install": {"resolve": "Pod"}}))
        .await;
    let obj = wait_for("the lock gone from the snapshot", T, || async {
        let obj = op.get("default").await;
        let gone = !op.snapshot("default").await.contains_key(LOCK_FILE);
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
}

/// An index only the resource names: never fetched by the operator, the pods resolve.
async fn an_index_the_operator_may_not_fetch_is_left_to_the_pods(op: &Scenario, foreign: &Index) {
    op.patch_spec(
        "default",
        json!({"content": "alpha\n# foreign\n", "install": {"resolve": "Controller", "indexUrls": [foreign.url()]}}),
    )
    .await;
    let obj = op
        .wait_until("default", "the foreign index left to the pods", T, |obj| {
            resolved(obj, "True", "PodsResolve")
                && condition(obj, "Resolved")
                    .unwrap()
                    .2
                    .contains(&foreign.url())
        })
        .await;
    assert!(
        condition(&obj, "Resolved")
            .unwrap()
            .2
            .contains("--resolver-index-url"),
        "{obj:?}"
    );
    assert_eq!(fetches(foreign, "alpha"), 0, "{}", foreign.log());
    assert_eq!(condition(&obj, "CacheWarmed").unwrap().0, "True");
}

/// The controller resolves, but for which interpreter? No workload to learn it from: nothing
/// waits, the content is cached and snapshotted without a lock (pods resolve), and the status
/// says why and what to set.
async fn an_unknown_interpreter_is_left_to_the_pods(op: &Scenario, allowed: &Index) {
    let unnamed = "alpha\n# no interpreter\n";
    // (A merge patch's null removes the field.)
    op.patch_spec(
        "default",
        json!({"content": unnamed, "install": {"python": null, "indexUrls": [allowed.url()]}}),
    )
    .await;
    let obj = op
        .wait_until("default", "InterpreterUnknown", T, |obj| {
            resolved(obj, "True", "InterpreterUnknown")
                && condition(obj, "CacheWarmed").is_some_and(|c| c.0 == "True")
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
    assert_eq!(op.cached().await, Some(Payload::new(unnamed).to_json()));
    let data = op.snapshot("default").await;
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
    let op = Scenario::resolving("hashpin", &index).await;
    // Continuations as pip joins them: the resolver reads what the policy checked.
    let continued = "evil \\\n>=1.0\n";
    resource(&op, continued, &index).await;
    let obj = op
        .wait_within("default", "Resolved", "True", Some("Resolved"), T)
        .await;
    assert_eq!(
        obj.status.unwrap().lock.unwrap().content_hash,
        content_hash(continued)
    );
    assert_eq!(lock_of(&op, continued).await.pins(), ["evil==1.0"]);

    let real = authors_hash(&good);
    let served = index.sha256(&impostor);
    let pinned = format!("goodpkg==1.0 --hash=sha256:{real}\n");
    op.set_content("default", &pinned).await;
    let obj = op
        .wait_within("default", "Resolved", "False", Some("HashMismatch"), T)
        .await;
    let (_, _, message) = condition(&obj, "Resolved").unwrap();
    assert!(
        message.contains(&format!("line 1: `goodpkg==1.0 --hash=sha256:{real}`")),
        "{message}"
    );
    assert!(message.contains(&format!("sha256:{served}")), "{message}");
    // Nothing downstream: the snapshot keeps the last lock.
    assert_eq!(op.snapshot("default").await["requirements.txt"], continued);
}

/// One release published as `count` wheels, every one installable by the workers' CPython 3.11
/// (distinct compound tags over `py3`, `py30` … `py311`), its page listing their hashes: a lock
/// that keeps only the workers' files still holds all of them.
fn bulky(count: usize) -> Vec<Wheel> {
    let pythons: Vec<String> = std::iter::once("py3".to_string())
        .chain((0..=11).map(|m| format!("py3{m}")))
        .collect();
    (1..=count)
        .map(|i| {
            let tags: Vec<&str> = (0..pythons.len())
                .filter(|bit| i & (1 << bit) != 0)
                .map(|bit| pythons[bit].as_str())
                .collect();
            Wheel::new("bulky", "1.0").tag(&format!("{}-none-any", tags.join(".")))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_and_lock_too_large_for_the_snapshot_are_reported_and_nothing_rolls() {
    let alpha = Wheel::new("alpha", "1.0");
    let mut wheels = bulky(5_500);
    wheels.push(alpha.clone());
    let index = Index::start(&wheels);
    index.list_hashes("bulky");
    let op = Scenario::resolving("toolarge", &index).await;
    op.deployment("worker", "default", 1).await;
    let good = "alpha>=1.0\n";
    resource(&op, good, &index).await;
    let good_lock = lock_of(&op, good).await;
    op.wait_rolled_to("worker", good, T).await;

    // Content near its own limit (non-ASCII comments: the JSON payload escapes each to six
    // bytes), whose lock of one release's 5,500 files tips the snapshot over 1 MiB. Resolving
    // 5,500 files takes uv a while on a loaded machine: a longer deadline.
    let content = format!("bulky==1.0\n# {}\n", "é".repeat(75_000));
    op.set_content("default", &content).await;
    let obj = op
        .wait_within("default", "Snapshotted", "False", Some("TooLarge"), 3 * T)
        .await;
    let named = [
        "requirements.lock",
        "bytes",
        "spec.install.resolve: Pod",
        "nothing rolls",
    ];
    says(&obj, "Snapshotted", "False", &named);
    assert!(resolved(&obj, "True", "Resolved"), "{:?}", obj.status);
    let (_, reason, _) = condition(&obj, "Ready").unwrap();
    assert_eq!(reason, "TooLarge");
    wait_for("a TooLarge Warning", T, || async {
        let events: Value = serde_json::from_str(&events(&op.name)).ok()?;
        events["items"]
            .as_array()?
            .iter()
            .any(|e| e["reason"] == "TooLarge" && e["type"] == "Warning")
            .then_some(())
    })
    .await;
    // The workers and the snapshot keep the last content that fit.
    let data = op.snapshot("default").await;
    assert_eq!(data["requirements.txt"], good);
    assert_eq!(&Lock::parse(&data[LOCK_FILE]).unwrap(), &good_lock);
    assert_eq!(op.deployment_hash("worker").await, Some(content_hash(good)));
}
