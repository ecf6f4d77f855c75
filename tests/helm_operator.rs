//! The operator under the chart's RBAC: run with the Deployment's own environment and a token of
//! the chart's ServiceAccount (not admin), it does the whole job on the real control plane
//! (warm, snapshot, rollout, the database mirror, the lock, leader election, Events, self-managed
//! TLS); other actions stay forbidden; `helm upgrade` keeps the caBundle it patched in.

mod common;

use bifrost_requirements::k8s_compat::Present;
use std::collections::BTreeSet;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::{HASH_ANNOTATION, WorkspaceRequirements};
use bifrost_requirements::requirements::content_hash;
use common::helm::*;
use common::index::Index;
use common::k8s::control_plane;
use common::operator::{
    Operator, create_wsreq, labelled_deployment, labelled_deployment_with, secret, template_hash,
    wait_for,
};
use common::proc::free_port;
use common::services::{fresh_database, fresh_key, redis_get, redis_url};
use common::wheels::Wheel;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_does_its_job_with_the_chart_service_account_only() {
    common::init_crypto();
    release().await;
    let client = control_plane().client().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&client, RELEASE_NS, RELEASE, dir.path()).await;

    // The operator exactly as the chart's Deployment configures it (its args and environment,
    // from the installed manifest), but as a local process on loopback ports.
    let manifest = docs(&ok(helm_cluster(&[
        "get",
        "manifest",
        RELEASE,
        "--namespace",
        RELEASE_NS,
    ])));
    let pod_name = "bifrost-requirements-7d9c-rbac";
    let metrics_port = free_port();
    // The chart's resolver, pointed at a local index (the chart's default is the public one),
    // with its cache in the operator's own temporary folder (the fixture's default).
    let index = Index::start(&[Wheel::new("rich", "13.7.1")]);
    let (args, mut env) = operator_command(
        &manifest,
        pod_name,
        RELEASE_NS,
        &[
            ("BIFROST_RESOLVER_INDEX_URLS", index.url()),
            ("BIFROST_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
            ("BIFROST_WEBHOOK_ADDR", format!("127.0.0.1:{}", free_port())),
            ("BIFROST_LOG_FORMAT", "text".into()),
            ("RUST_LOG", "info,bifrost_requirements=debug".into()),
        ],
    );
    env.retain(|(n, _)| n != "BIFROST_RESOLVER_CACHE_DIR");
    assert!(
        !env.iter().any(|(k, _)| k == "WATCH_NAMESPACE"),
        "cluster-wide by default"
    );
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let op = Operator::start_with("rbac", &kubeconfig, &arg_refs, &env_refs, metrics_port);

    // The core scenario: inline content → Redis warmed, ConfigMap, labelled Deployment rolled.
    let ns = create_namespace(&client, "rbac").await;
    secret(&client, &ns, "redis", "url", &redis_url()).await;
    let key = fresh_key();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    labelled_deployment(&client, &ns, "worker", "default").await;
    let content = "requests==2.32.3\nflask>=3\n";
    let redis = json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}, "key": key}});
    create_wsreq(
        &client,
        &ns,
        "default",
        // No index here: the pods resolve (the operator's own resolution under the chart's
        // RBAC is the lock's test).
        json!({"content": content, "cache": redis, "rollout": {"debounceSeconds": 0},
               "install": {"resolve": "Pod"}}),
    )
    .await;
    // Valid, cached, snapshotted, and rolling: no kubelet runs the pods here, so RolledOut
    // (and with it Ready) stays False with the reason.
    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns);
    let obj = wait_for("default rolling out", T, || async {
        let obj = api.get("default").await.ok()?;
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
    .await;
    let hash = content_hash(content);
    assert_eq!(
        obj.status.as_ref().unwrap().content_hash.as_deref(),
        Some(hash.as_str())
    );
    assert_eq!(
        redis_get(&redis_url(), &key).await,
        Some(Payload::new(content).to_json())
    );
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("default-requirements")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["hash"], hash);
    assert_eq!(cm.metadata.owner_references.unwrap()[0].name, "default");
    wait_for("the Deployment's template carries the hash", T, || async {
        (template_hash(&deployments.get("worker").await.ok()?)? == hash).then_some(())
    })
    .await;
    // A change rolls again (a second patch of the Deployment, a second Redis write).
    let changed = "requests==2.32.3\nflask>=3\nnumpy\n";
    Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"content": changed}})),
        )
        .await
        .unwrap();
    let changed_hash = content_hash(changed);
    wait_for("the rollout of the change", T, || async {
        (template_hash(&deployments.get("worker").await.ok()?)? == changed_hash).then_some(())
    })
    .await;
    wait_for(
        "kube-controller-manager rolls a new ReplicaSet",
        T,
        || async {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels("app=worker"))
                .await
                .ok()?;
            rs.items
                .iter()
                .any(|r| {
                    r.spec
                        .present()
                        .and_then(|s| s.template.as_ref())
                        .and_then(|t| t.metadata.as_ref())
                        .and_then(|m| m.annotations.as_ref())
                        .and_then(|a| a.get(HASH_ANNOTATION))
                        == Some(&changed_hash)
                })
                .then_some(())
        },
    )
    .await;
    wait_for("Redis holds the change", T, || async {
        (redis_get(&redis_url(), &key).await? == Payload::new(changed).to_json()).then_some(())
    })
    .await;

    // The database mirror: reads the URL Secret, writes spec.content (server-side apply).
    let db = fresh_database().await;
    common::assert_ok(&common::cli(&["migrate"], &[("DATABASE_URL", &db)]));
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    common::services::write_bifrost_row(&pool, "rich==13.7.1\n").await;
    pool.close().await;
    secret(&client, &ns, "db", "url", &db).await;
    let mirror_key = fresh_key();
    create_wsreq(
        &client,
        &ns,
        "mirrored",
        json!({
            "source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 5}},
            "cache": {"redis": {"urlSecretRef": {"name": "redis", "key": "url"}, "key": mirror_key}},
            // Resolved by the operator under the chart's RBAC (reads its snapshot's lock).
            "install": {"python": {"version": "3.11", "platform": "x86_64-manylinux_2_28"},
                        "indexUrls": [index.url()]},
        }),
    )
    .await;
    wait_reconciled(&client, &ns, "mirrored").await;
    // Ready=False NoWorkloads may still be the status of the content before the mirror's write
    // (resolving the new one takes a moment): wait for the status of the mirrored content.
    let mirrored_hash = content_hash("rich==13.7.1\n");
    let mirrored = wait_for("the mirrored content reconciled", T, || async {
        let obj = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
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
    // Resolved with the chart's permissions: the lock in status and snapshot, and the snapshot's
    // lock readable (`get`), which is how a restarted operator reuses it.
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
    let snapshot = Api::<ConfigMap>::namespaced(client.clone(), &ns)
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

    // The interpreter probe with the chart's permissions: a resource without install.python
    // gets its workers' image probed (pods create, get), the answer recorded, the pod deleted.
    // No kubelet here: the test writes the probe's termination message as one would.
    labelled_deployment_with(&client, &ns, "learner", "learned", 0).await;
    let learned_cache =
        json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}, "key": fresh_key()}});
    create_wsreq(
        &client,
        &ns,
        "learned",
        json!({"content": "rich==13.7.1\n", "cache": learned_cache,
               "install": {"indexUrls": [index.url()]}}),
    )
    .await;
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
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
    let resources = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns);
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

    // Leader election: the Lease in the release namespace, held by this "pod".
    let lease = Api::<Lease>::namespaced(client.clone(), RELEASE_NS)
        .get("bifrost-requirements-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some(pod_name)
    );
    assert_eq!(op.metric("bifrost_requirements_leader"), Some(1.0));

    // Events (events.k8s.io) on the resource.
    wait_for("Events of the warm and the rollout", T, || async {
        let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &ns)
            .list(&Default::default())
            .await
            .ok()?;
        let reasons: BTreeSet<String> = events
            .items
            .iter()
            .filter_map(|e| e.reason.clone())
            .collect();
        (reasons.contains("CacheWarmed") && reasons.contains("RollingOut")).then_some(())
    })
    .await;

    // Self-managed TLS: the certificate Secret is written and the caBundle patched in.
    wait_for("the webhook certificate Secret", T, || async {
        let s = Api::<Secret>::namespaced(client.clone(), RELEASE_NS)
            .get_opt("bifrost-requirements-webhook-tls")
            .await
            .ok()??;
        s.data?.contains_key("tls.crt").then_some(())
    })
    .await;
    wait_for("the caBundle in the webhook configuration", T, || async {
        let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get(RELEASE)
            .await
            .ok()?;
        let bundle = mwc.webhooks?[0].client_config.ca_bundle.clone()?;
        (!bundle.0.is_empty()).then_some(())
    })
    .await;

    // Nothing it tried was refused.
    let log = op.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator met a permission error:\n{log}"
    );

    // Least privilege: what it needs is allowed, the rest stays forbidden.
    for (check, ns_) in [
        (&["patch", "deployments.apps"][..], Some(ns.as_str())),
        (&["get", "secrets"][..], Some(ns.as_str())),
        // The interpreter probe pod.
        (&["create", "pods"][..], Some(ns.as_str())),
        (&["delete", "pods"][..], Some(ns.as_str())),
        (
            &[
                "patch",
                "leases.coordination.k8s.io/bifrost-requirements-operator",
            ][..],
            Some(RELEASE_NS),
        ),
        (
            &["update", "secrets/bifrost-requirements-webhook-tls"][..],
            Some(RELEASE_NS),
        ),
        (
            &[
                "patch",
                "mutatingwebhookconfigurations.admissionregistration.k8s.io/bifrost-requirements",
            ][..],
            None,
        ),
    ] {
        assert!(can_i(check, ns_), "{check:?} should be allowed");
    }
    for (check, ns_) in [
        (&["delete", "deployments.apps"][..], Some(ns.as_str())),
        (&["create", "deployments.apps"][..], Some(ns.as_str())),
        (&["list", "secrets"][..], Some(ns.as_str())),
        (&["create", "secrets"][..], Some(ns.as_str())),
        (
            &["delete", "workspacerequirements.bifrost.io"][..],
            Some(ns.as_str()),
        ),
        (&["update", "pods"][..], Some(ns.as_str())),
        (&["patch", "pods"][..], Some(ns.as_str())),
        (&["deletecollection", "pods"][..], Some(ns.as_str())),
        (&["delete", "configmaps"][..], Some(ns.as_str())),
        (
            &[
                "patch",
                "leases.coordination.k8s.io/kube-controller-manager",
            ][..],
            Some("kube-system"),
        ),
        (
            &["patch", "leases.coordination.k8s.io/other"][..],
            Some(RELEASE_NS),
        ),
        (&["update", "secrets/other"][..], Some(RELEASE_NS)),
        (
            &[
                "patch",
                "mutatingwebhookconfigurations.admissionregistration.k8s.io/other",
            ][..],
            None,
        ),
        (
            &["create", "clusterrolebindings.rbac.authorization.k8s.io"][..],
            None,
        ),
    ] {
        assert!(!can_i(check, ns_), "{check:?} should be forbidden");
    }
    // And for real, with the operator's own token.
    let out = kubectl_as(&kubeconfig, &["delete", "deployment", "worker", "-n", &ns]);
    assert!(!out.status.success());
    assert!(text(&out).contains("forbidden"), "{}", text(&out));
    assert!(deployments.get_opt("worker").await.unwrap().is_some());

    // `helm upgrade` changes the chart's fields and keeps the caBundle the operator patched in.
    let mwcs = Api::<MutatingWebhookConfiguration>::all(client.clone());
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
