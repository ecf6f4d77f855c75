//! The operator under the chart's RBAC: run with the Deployment's own environment and a token of
//! the chart's ServiceAccount (not admin), it does the whole job on the real control plane
//! (warm, snapshot, rollout, the database mirror, the lock, leader election, Events, self-managed
//! TLS); other actions stay forbidden; `helm upgrade` keeps the caBundle it patched in.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::requirements::content_hash;
use common::helm::*;
use common::helm_scenario::chart_operator;
use common::index::Index;
use common::k8s::control_plane;
use common::objects::replicaset_hash;
use common::operator::{Operator, redis_cache, wait_for};
use common::scenario::Ns;
use common::services::{fresh_database, fresh_key, redis_get, redis_url};
use common::wheels::Wheel;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

/// The pod the local operator plays (its lease identity).
const POD_NAME: &str = "bifrost-requirements-7d9c-rbac";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_does_its_job_with_the_chart_service_account_only() {
    common::init_crypto();
    release().await;
    let client = control_plane().client().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&client, RELEASE_NS, RELEASE, dir.path()).await;
    let index = Index::start(&[Wheel::new("rich", "13.7.1")]);
    let op = start_as_the_release_runs_it(&kubeconfig, &index);
    let ns = Ns::beside_release("rbac").await;
    ns.secret("redis", "url", &redis_url()).await;

    warms_snapshots_and_rolls_out_each_change(&ns).await;
    mirrors_the_database_and_resolves_its_content(&ns, &index, &op).await;
    probes_the_workers_interpreter(&ns, &index).await;
    holds_the_lease(&op).await;
    records_events(&ns).await;
    manages_its_webhook_certificate().await;
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator met a permission error:\n{log}"
    );
    may_do_what_it_needs_and_nothing_else(&ns, &kubeconfig).await;
    helm_upgrade_keeps_the_ca_bundle().await;
}

/// The shared release's operator (args and environment from the installed manifest) with the
/// chart's resolver pointed at a local index (the chart's default is the public one).
fn start_as_the_release_runs_it(kubeconfig: &Path, index: &Index) -> Operator {
    let manifest = installed_manifest(RELEASE, RELEASE_NS);
    let (op, env) = chart_operator(
        "rbac",
        &manifest,
        POD_NAME,
        RELEASE_NS,
        kubeconfig,
        &[("BIFROST_RESOLVER_INDEX_URLS", index.url())],
    );
    assert!(
        !env.iter().any(|(k, _)| k == "WATCH_NAMESPACE"),
        "cluster-wide by default"
    );
    op
}

/// The core scenario: inline content → Redis warmed, ConfigMap, labelled Deployment rolled; a
/// change rolls again (a second patch of the Deployment, a second Redis write).
async fn warms_snapshots_and_rolls_out_each_change(ns: &Ns) {
    let key = fresh_key();
    ns.deployment("worker", "default", 1).await;
    let content = "requests==2.32.3\nflask>=3\n";
    // No index here: the pods resolve (the operator's own resolution under the chart's RBAC is
    // the lock's test).
    ns.wsreq(
        "default",
        json!({"content": content, "cache": redis_cache(&key), "rollout": {"debounceSeconds": 0},
               "install": {"resolve": "Pod"}}),
    )
    .await;
    let obj = rolling_out(ns, "default").await;
    let hash = content_hash(content);
    assert_eq!(
        obj.status.as_ref().unwrap().content_hash.as_deref(),
        Some(hash.as_str())
    );
    let cm = ns
        .assert_warmed_and_snapshotted("default", &key, content)
        .await;
    assert_eq!(cm.metadata.owner_references.unwrap()[0].name, "default");
    ns.wait_rolled_to_hash("worker", &hash, T).await;

    let changed = "requests==2.32.3\nflask>=3\nnumpy\n";
    ns.set_content("default", changed).await;
    let changed_hash = content_hash(changed);
    ns.wait_rolled_to_hash("worker", &changed_hash, T).await;
    let replica_sets = ns.api::<ReplicaSet>();
    let worker = ListParams::default().labels("app=worker");
    wait_for(
        "kube-controller-manager rolls a new ReplicaSet",
        T,
        || async {
            let rs = replica_sets.list(&worker).await.ok()?;
            rs.items
                .iter()
                .any(|r| replicaset_hash(r) == Some(&changed_hash))
                .then_some(())
        },
    )
    .await;
    wait_for("Redis holds the change", T, || async {
        (redis_get(&redis_url(), &key).await? == Payload::new(changed).to_json()).then_some(())
    })
    .await;
}

/// Valid, cached, snapshotted, and rolling: no kubelet runs the pods here, so RolledOut (and
/// with it Ready) stays False with the reason.
async fn rolling_out(ns: &Ns, name: &str) -> WorkspaceRequirements {
    let api = ns.api::<WorkspaceRequirements>();
    wait_for(&format!("{name} rolling out"), T, || async {
        let obj = api.get(name).await.ok()?;
        let conditions = &obj.status.as_ref()?.conditions;
        let is = |t: &str, s: &str, r: Option<&str>| {
            conditions
                .iter()
                .any(|c| c.type_ == t && c.status == s && r.is_none_or(|r| c.reason == r))
        };
        (["Valid", "Synced", "CacheWarmed", "Snapshotted"]
            .iter()
            .all(|t| is(t, "True", None))
            && is("RolledOut", "False", Some("RollingOut"))
            && is("Ready", "False", Some("RollingOut")))
        .then_some(obj)
    })
    .await
}

/// The database mirror reads the URL Secret and writes spec.content (server-side apply); the
/// operator resolves the mirrored content with the chart's permissions: the lock in status and
/// snapshot, and the snapshot's lock readable (`get`), which is how a restarted operator reuses it.
async fn mirrors_the_database_and_resolves_its_content(ns: &Ns, index: &Index, op: &Operator) {
    let db = fresh_database().await;
    common::assert_ok(&common::cli(&["migrate"], &[("DATABASE_URL", &db)]));
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    common::services::write_bifrost_row(&pool, "rich==13.7.1\n").await;
    pool.close().await;
    ns.secret("db", "url", &db).await;
    let mirror_key = fresh_key();
    ns.wsreq(
        "mirrored",
        json!({
            "source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 5}},
            "cache": redis_cache(&mirror_key),
            // Resolved by the operator under the chart's RBAC (reads its snapshot's lock).
            "install": {"python": {"version": "3.11", "platform": "x86_64-manylinux_2_28"},
                        "indexUrls": [index.url()]},
        }),
    )
    .await;
    wait_reconciled(&ns.client, &ns.name, "mirrored").await;
    // Ready=False NoWorkloads may still be the status of the content before the mirror's write
    // (resolving the new one takes a moment): wait for the status of the mirrored content.
    let mirrored_hash = content_hash("rich==13.7.1\n");
    let mirrored = wait_for("the mirrored content reconciled", T, || async {
        let obj = ns
            .api::<WorkspaceRequirements>()
            .get("mirrored")
            .await
            .ok()?;
        let status = obj.status.as_ref()?;
        let locked = status.lock.as_ref()?.content_hash == mirrored_hash;
        let warmed = redis_get(&redis_url(), &mirror_key).await
            == Some(Payload::new("rich==13.7.1\n").to_json());
        (locked && warmed).then_some(obj)
    })
    .await;
    assert_eq!(mirrored.spec.content, "rich==13.7.1\n");
    assert!(
        mirrored
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("bifrost-requirements-mirror"))
    );
    assert_eq!(
        redis_get(&redis_url(), &mirror_key).await,
        Some(Payload::new("rich==13.7.1\n").to_json())
    );
    let lock = mirrored
        .status
        .as_ref()
        .unwrap()
        .lock
        .clone()
        .expect("status.lock");
    assert_eq!(
        (lock.packages, lock.content_hash.as_str()),
        (1, content_hash("rich==13.7.1\n").as_str())
    );
    let snapshot = ns
        .api::<ConfigMap>()
        .get("mirrored-requirements")
        .await
        .unwrap();
    assert!(
        snapshot.data.unwrap()["requirements.lock"].contains("rich==13.7.1"),
        "the snapshot holds the lock"
    );
    assert!(
        !op.log_text().contains("cannot read the snapshot's lock"),
        "{}",
        op.log_text()
    );
}

/// The interpreter probe with the chart's permissions: a resource without install.python gets
/// its workers' image probed (pods create, get), the answer recorded, the pod deleted. No
/// kubelet here: the test writes the probe's termination message as one would.
async fn probes_the_workers_interpreter(ns: &Ns, index: &Index) {
    ns.deployment("learner", "learned", 0).await;
    ns.wsreq(
        "learned",
        json!({"content": "rich==13.7.1\n", "cache": redis_cache(&fresh_key()),
               "install": {"indexUrls": [index.url()]}}),
    )
    .await;
    let pods = ns.api::<Pod>();
    let probes = ListParams::default().labels("app.kubernetes.io/component=interpreter-probe");
    let probe = wait_for("the probe pod", T, || async {
        pods.list(&probes).await.ok()?.items.into_iter().next()
    })
    .await;
    let answered = json!({"name": "python3", "image": "i", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"terminated": {"exitCode": 0, "message": "3.11.2\nx86_64\n2.36\n"}}});
    pods.patch_status(
        &probe.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running", "containerStatuses": [answered]}})),
    )
    .await
    .unwrap();
    let resources = ns.api::<WorkspaceRequirements>();
    wait_for(
        "the interpreter learned, the probe pod deleted",
        T,
        || async {
            resources.get("learned").await.ok()?.status?.interpreter?;
            pods.list(&probes)
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        },
    )
    .await;
}

/// Leader election: the Lease in the release namespace, held by this "pod".
async fn holds_the_lease(op: &Operator) {
    let client = control_plane().client().await;
    let lease = Api::<Lease>::namespaced(client, RELEASE_NS)
        .get("bifrost-requirements-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(POD_NAME)
    );
    assert_eq!(op.metric("bifrost_requirements_leader"), Some(1.0));
}

/// Events (events.k8s.io) on the resource, of the warm and the rollout.
async fn records_events(ns: &Ns) {
    let events = ns.api::<k8s_openapi::api::events::v1::Event>();
    wait_for("Events of the warm and the rollout", T, || async {
        let events = events.list(&Default::default()).await.ok()?;
        let reasons: BTreeSet<String> = events
            .items
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect();
        (reasons.contains("CacheWarmed") && reasons.contains("RollingOut")).then_some(())
    })
    .await;
}

/// Self-managed TLS: the certificate Secret is written and the caBundle patched in.
async fn manages_its_webhook_certificate() {
    let client = control_plane().client().await;
    let secrets = Api::<Secret>::namespaced(client.clone(), RELEASE_NS);
    wait_for("the webhook certificate Secret", T, || async {
        let s = secrets
            .get_opt("bifrost-requirements-webhook-tls")
            .await
            .ok()??;
        s.data?.contains_key("tls.crt").then_some(())
    })
    .await;
    let configs = Api::<MutatingWebhookConfiguration>::all(client);
    wait_for("the caBundle in the webhook configuration", T, || async {
        let mwc = configs.get(RELEASE).await.ok()?;
        let bundle = mwc.webhooks?[0].client_config.ca_bundle.clone()?;
        (!bundle.0.is_empty()).then_some(())
    })
    .await;
}

/// What the shared release's ServiceAccount may (`yes`) and may not (`no`) do, as `kubectl auth
/// can-i VERB RESOURCE` asks it: in the test's namespace (`here`), the release namespace
/// (`release`), another namespace, or `cluster`-wide. (`create`/`delete pods`: the interpreter
/// probe pod.)
const PERMISSIONS: &str = "
yes patch deployments.apps here
yes get secrets here
yes create pods here
yes delete pods here
yes patch leases.coordination.k8s.io/bifrost-requirements-operator release
yes update secrets/bifrost-requirements-webhook-tls release
yes patch mutatingwebhookconfigurations.admissionregistration.k8s.io/bifrost-requirements cluster
no delete deployments.apps here
no create deployments.apps here
no list secrets here
no create secrets here
no delete workspacerequirements.bifrost.io here
no update pods here
no patch pods here
no deletecollection pods here
no delete configmaps here
no patch leases.coordination.k8s.io/kube-controller-manager kube-system
no patch leases.coordination.k8s.io/other release
no update secrets/other release
no patch mutatingwebhookconfigurations.admissionregistration.k8s.io/other cluster
no create clusterrolebindings.rbac.authorization.k8s.io cluster
";

/// Least privilege: what it needs is allowed, the rest stays forbidden ([`PERMISSIONS`]); and
/// for real, with the operator's own token.
async fn may_do_what_it_needs_and_nothing_else(ns: &Ns, kubeconfig: &Path) {
    let mut checked = 0;
    for line in PERMISSIONS.lines().filter(|l| !l.is_empty()) {
        let [answer, verb, resource, scope] = line.split(' ').collect::<Vec<_>>()[..] else {
            panic!("PERMISSIONS: {line}");
        };
        let allowed = match answer {
            "yes" => true,
            "no" => false,
            _ => panic!("PERMISSIONS: {line}"),
        };
        let namespace = match scope {
            "here" => Some(ns.name.as_str()),
            "release" => Some(RELEASE_NS),
            "cluster" => None,
            other => Some(other),
        };
        assert_eq!(
            can_i(&[verb, resource], namespace),
            allowed,
            "{verb} {resource} in {namespace:?} should be allowed: {allowed}"
        );
        checked += 1;
    }
    assert_eq!(checked, 21, "PERMISSIONS");
    let out = kubectl_as(
        kubeconfig,
        &["delete", "deployment", "worker", "-n", &ns.name],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("forbidden"), "{}", text(&out));
    assert!(
        ns.api::<Deployment>()
            .get_opt("worker")
            .await
            .unwrap()
            .is_some()
    );
}

/// `helm upgrade` changes the chart's fields and keeps the caBundle the operator patched in.
async fn helm_upgrade_keeps_the_ca_bundle() {
    let mwcs = Api::<MutatingWebhookConfiguration>::all(control_plane().client().await);
    let bundle = |m: &MutatingWebhookConfiguration| {
        m.webhooks.as_ref().unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
    };
    let before = bundle(&mwcs.get(RELEASE).await.unwrap()).expect("caBundle");
    let chart = chart_arg();
    ok(helm_cluster(&[
        "upgrade",
        RELEASE,
        &chart,
        "--namespace",
        RELEASE_NS,
        "--reuse-values",
        "--set",
        "webhook.timeoutSeconds=4",
    ]));
    let after = mwcs.get(RELEASE).await.unwrap();
    assert_eq!(after.webhooks.as_ref().unwrap()[0].timeout_seconds, Some(4));
    assert_eq!(
        bundle(&after),
        Some(before),
        "helm upgrade dropped the caBundle"
    );
}
