//! The chart's RBAC, exactly what the code uses, and enough: the operator, run with the Deployment's
//! own environment and a token of the chart's ServiceAccount (not admin), does the whole job on the
//! real control plane; other actions stay forbidden; with `watchNamespace` everything namespaced is
//! a Role in that namespace only.

mod common;

use std::collections::BTreeSet;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::{HASH_ANNOTATION, WorkspaceRequirements};
use bifrost_requirements::requirements::content_hash;
use common::helm::*;
use common::index::Index;
use common::k8s::control_plane;
use common::operator::{
    Operator, create_wsreq, labelled_deployment, secret, template_hash, wait_for,
};
use common::proc::free_port;
use common::services::{fresh_database, fresh_key, redis_get, redis_url};
use common::wheels::Wheel;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// The RBAC the chart grants, exactly (README lists the same; the end-to-end test below proves
/// it is enough).
#[test]
fn rbac_is_exactly_what_the_code_uses() {
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    let objects = docs(&render("r", "ops", &[]));
    let cluster: Vec<_> = find(&objects, "ClusterRole");
    assert_eq!(cluster.len(), 2);
    assert_eq!(
        rules(cluster[0]),
        set(&[
            "bifrost.io/workspacerequirements list",
            "bifrost.io/workspacerequirements watch",
            "bifrost.io/workspacerequirements patch",
            "bifrost.io/workspacerequirements/status patch",
            "/configmaps get",
            "/configmaps list",
            "/configmaps watch",
            "/configmaps create",
            "/configmaps patch",
            "/secrets get",
            "apps/deployments list",
            "apps/deployments watch",
            "apps/deployments patch",
            "apps/statefulsets list",
            "apps/statefulsets watch",
            "apps/statefulsets patch",
            "/pods list",
            "/pods watch",
            "events.k8s.io/events create",
            "events.k8s.io/events patch",
        ])
    );
    assert_eq!(
        rules(cluster[1]),
        set(&[
            "admissionregistration.k8s.io/mutatingwebhookconfigurations get r-bifrost-requirements",
            "admissionregistration.k8s.io/mutatingwebhookconfigurations patch r-bifrost-requirements",
        ])
    );
    let role = one(&objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "ops");
    assert_eq!(
        rules(role),
        set(&[
            "coordination.k8s.io/leases create",
            "coordination.k8s.io/leases get r-bifrost-requirements-operator",
            "coordination.k8s.io/leases patch r-bifrost-requirements-operator",
            "/secrets create",
            "/secrets get r-bifrost-requirements-webhook-tls",
            "/secrets update r-bifrost-requirements-webhook-tls",
        ])
    );
    // Nothing anywhere grants delete, deletecollection, escalate, bind, impersonate or `*`.
    for r in find(&objects, "ClusterRole")
        .into_iter()
        .chain(find(&objects, "Role"))
    {
        for rule in rules(r) {
            for bad in [
                " delete",
                " deletecollection",
                " escalate",
                " bind",
                " impersonate",
                "*",
            ] {
                assert!(!rule.contains(bad), "{rule}");
            }
        }
    }
    // The names in resourceNames are the ones the operator is told to use.
    assert_eq!(
        env_value(&objects, "BIFROST_LEASE_NAME").as_deref(),
        Some("r-bifrost-requirements-operator")
    );
    assert_eq!(
        env_value(&objects, "BIFROST_TLS_SECRET_NAME").as_deref(),
        Some("r-bifrost-requirements-webhook-tls")
    );
    assert_eq!(
        env_value(&objects, "BIFROST_WEBHOOK_CONFIG_NAME").as_deref(),
        Some("r-bifrost-requirements")
    );
    // watchNamespace: the same rules, as a Role bound in that namespace only; nothing namespaced
    // stays cluster-wide (the one ClusterRole left is the caBundle patch of this release's
    // webhook configuration, cluster-scoped by nature).
    let watched_rules = rules(cluster[0]);
    let objects = docs(&render("r", "ops", &["watchNamespace=team"]));
    let cluster: Vec<_> = find(&objects, "ClusterRole");
    assert_eq!(cluster.len(), 1);
    assert_eq!(
        cluster[0]["metadata"]["name"],
        "r-bifrost-requirements-webhook"
    );
    assert!(
        find(&objects, "ClusterRoleBinding")
            .iter()
            .all(|b| b["roleRef"]["name"] == "r-bifrost-requirements-webhook")
    );
    let role = find(&objects, "Role")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == "team")
        .expect("a Role in the watched namespace");
    assert_eq!(rules(role), watched_rules);
    let binding = find(&objects, "RoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["namespace"] == "team")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r-bifrost-requirements-watch"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "r-bifrost-requirements", "namespace": "ops"}])
    );
    assert_eq!(
        env_value(&objects, "WATCH_NAMESPACE").as_deref(),
        Some("team")
    );
    // The release namespace's Role (Lease, certificate Secret) is the same in both modes.
    let release_role = |objects: &[Value]| {
        let role = find(objects, "Role")
            .into_iter()
            .find(|r| r["metadata"]["namespace"] == "ops")
            .expect("the release namespace's Role");
        rules(role)
    };
    assert_eq!(
        release_role(&objects),
        release_role(&docs(&render("r", "ops", &[])))
    );
    // certManager and a watched namespace: no ClusterRole at all.
    let objects = docs(&render(
        "r",
        "ops",
        &["watchNamespace=team", "webhook.tls.mode=certManager"],
    ));
    assert!(find(&objects, "ClusterRole").is_empty());
    assert!(find(&objects, "ClusterRoleBinding").is_empty());
}

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
    let args: Vec<String> = container(&manifest)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let pod_name = "bifrost-requirements-7d9c-rbac";
    let metrics_port = free_port();
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container(&manifest)["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.to_string(),
            Some("metadata.namespace") => RELEASE_NS.to_string(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => e["value"].as_str().unwrap().to_string(),
        };
        env.push((name, value));
    }
    // The chart's resolver, pointed at a local index (the chart's default is the public one),
    // with its cache in the operator's own temporary folder (the fixture's default).
    let index = Index::start(&[Wheel::new("rich", "13.7.1")]);
    for (k, v) in [
        ("BIFROST_RESOLVER_INDEX_URLS", index.url()),
        ("BIFROST_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
        ("BIFROST_WEBHOOK_ADDR", format!("127.0.0.1:{}", free_port())),
        ("BIFROST_LOG_FORMAT", "text".into()),
        ("RUST_LOG", "info,bifrost_requirements=debug".into()),
    ] {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v));
    }
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
                        .as_ref()
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
        (&["create", "pods"][..], Some(ns.as_str())),
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

/// A namespaced install (`watchNamespace`, the README's quick path): its ServiceAccount may do
/// everything the operator needs in the watched namespace, and nothing of it in another
/// namespace or cluster-wide; proven with `kubectl auth can-i` for every rule of the Role, and
/// for real with the ServiceAccount's token patching a Deployment in each namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_install_is_confined_to_its_namespace() {
    release().await; // the CRD, installed by the shared release
    let client = control_plane().client().await;
    let ns = create_namespace(&client, "nsrel").await;
    let watched = create_namespace(&client, "bifrost").await;
    let other = create_namespace(&client, "other").await;
    // A release name of its own: its cluster-scoped names must not meet another release's.
    let release = format!("ns-{}", &ns[ns.len() - 8..]);
    let chart = chart_arg();
    ok(helm_cluster(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &ns,
        "--set",
        &format!("watchNamespace={watched}"),
    ]));
    let sa = format!("{release}-bifrost-requirements");
    let manifest = docs(&ok(helm_cluster(&[
        "get",
        "manifest",
        &release,
        "--namespace",
        &ns,
    ])));
    let role = find(&manifest, "Role")
        .into_iter()
        .find(|r| r["metadata"]["namespace"] == watched.as_str())
        .expect("the watched namespace's Role");
    let needed = rules(role);
    assert!(needed.len() >= 15, "{needed:?}");
    for rule in &needed {
        // "group/resource[/subresource] verb"
        let (gr, verb) = rule.split_once(' ').unwrap();
        let (group, resource) = gr.split_once('/').unwrap();
        let (resource, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        let target = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let mut check = vec![verb, target.as_str()];
        let sub_flag = sub.map(|s| format!("--subresource={s}"));
        if let Some(f) = &sub_flag {
            check.push(f);
        }
        assert!(
            can_i_as(&ns, &sa, &check, Some(&watched)),
            "{rule}: forbidden in the watched namespace"
        );
        assert!(
            !can_i_as(&ns, &sa, &check, Some(&other)),
            "{rule}: allowed in another namespace"
        );
        let mut everywhere = check.clone();
        everywhere.push("--all-namespaces");
        assert!(
            !can_i_as(&ns, &sa, &everywhere, None),
            "{rule}: allowed cluster-wide"
        );
    }
    // The webhook configuration's caBundle: this release's only, cluster-scoped by nature.
    let mwc = format!("mutatingwebhookconfigurations.admissionregistration.k8s.io/{sa}");
    assert!(can_i_as(&ns, &sa, &["patch", &mwc], None));
    assert!(!can_i_as(
        &ns,
        &sa,
        &[
            "patch",
            "mutatingwebhookconfigurations.admissionregistration.k8s.io/other"
        ],
        None
    ));

    // For real, with the ServiceAccount's own token: the rollout's patch of a labelled
    // Deployment (a merge patch, as the operator sends it: no read first, which the Role does
    // not grant) works in the watched namespace and is refused in another.
    common::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&client, &ns, &sa, dir.path()).await;
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let as_operator = kube::Client::try_from(config).unwrap();
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {"bifrost.io/probe": "1"}}}}});
    for (namespace, allowed) in [(&watched, true), (&other, false)] {
        labelled_deployment(&client, namespace, "worker", "default").await;
        let result = Api::<Deployment>::namespaced(as_operator.clone(), namespace)
            .patch("worker", &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        match (&result, allowed) {
            (Ok(_), true) => {}
            (Err(kube::Error::Api(e)), false) => assert_eq!(e.code, 403, "{namespace}: {e:?}"),
            _ => panic!("{namespace}: allowed {allowed}, got {result:?}"),
        }
        let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
            .get("worker")
            .await
            .unwrap();
        let annotated = deployment
            .spec
            .and_then(|s| s.template.metadata)
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key("bifrost.io/probe"));
        assert_eq!(annotated, allowed, "{namespace}");
    }
    ok(helm_cluster(&["uninstall", &release, "--namespace", &ns]));
}

/// README's Permissions table, as rule lines (`group/resource verb names`) per scope, with
/// `<fullname>` replaced by `fullname`.
fn readme_permissions(fullname: &str) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = readme
        .split_once("#### Permissions")
        .expect("README has a Permissions section")
        .1;
    let mut scopes = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    let rows = table
        .lines()
        .skip_while(|l| !l.starts_with("| scope"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [scope, group, resources, verbs, names, _why] = cells[..] else {
            panic!("README Permissions row with {} cells: {row}", cells.len());
        };
        let group = match group.trim_matches('`') {
            "core" => "",
            g => g,
        };
        let names = names.trim_matches('`').replace("<fullname>", fullname);
        for resource in resources.split(", ") {
            for verb in verbs.split(", ") {
                scopes
                    .entry(scope.to_string())
                    .or_default()
                    .insert(format!("{group}/{resource} {verb} {names}").trim_end().to_string());
            }
        }
    }
    scopes
}

/// The README's Permissions table is the chart's RBAC, rule for rule, in both modes and both
/// TLS modes.
#[test]
fn readme_permissions_table_is_the_chart_rbac() {
    let readme = readme_permissions("r-bifrost-requirements");
    let scope = |s: &str| readme.get(s).cloned().unwrap_or_default();
    let union = |a: &str, b: &str| -> BTreeSet<String> { scope(a).union(&scope(b)).cloned().collect() };
    let named = |objects: &[Value], kind: &str, name: &str| -> BTreeSet<String> {
        let found: Vec<_> = find(objects, kind)
            .into_iter()
            .filter(|o| o["metadata"]["name"] == name)
            .collect();
        assert_eq!(found.len(), 1, "{kind} {name}");
        rules(found[0])
    };
    // Cluster-wide, self-managed TLS (the chart's defaults).
    let objects = docs(&render("r", "ops", &[]));
    assert_eq!(named(&objects, "ClusterRole", "r-bifrost-requirements"), scope("watched"));
    assert_eq!(
        named(&objects, "Role", "r-bifrost-requirements"),
        union("release namespace", "release namespace, selfManaged TLS")
    );
    assert_eq!(
        named(&objects, "ClusterRole", "r-bifrost-requirements-webhook"),
        scope("cluster, selfManaged TLS")
    );
    assert_eq!(readme.len(), 4, "scopes: {:?}", readme.keys());
    // The quick path: watchNamespace; and cert-manager drops the selfManaged rows.
    let objects = docs(&render(
        "r",
        "ops",
        &["watchNamespace=bifrost", "webhook.tls.mode=certManager"],
    ));
    assert_eq!(named(&objects, "Role", "r-bifrost-requirements-watch"), scope("watched"));
    assert_eq!(named(&objects, "Role", "r-bifrost-requirements"), scope("release namespace"));
    assert!(find(&objects, "ClusterRole").is_empty());
}
