//! The chart's RBAC is exactly what the code uses (`helm_operator.rs` proves it is enough), the
//! README's Permissions table says the same, and with `watchNamespace` everything namespaced is a
//! Role in that namespace only: a namespaced install cannot act in another namespace.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use bifrost_requirements::k8s_compat::Present;
use common::helm::*;
use common::helm_scenario::chart_operator;
use common::operator::{labelled_deployment, redis_cache};
use common::scenario::Ns;
use common::services::{fresh_key, redis_url};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// The RBAC the chart grants, exactly (README lists the same; tests/helm_operator.rs proves
/// it is enough).
#[test]
fn rbac_is_exactly_what_the_code_uses() {
    let objects = docs(&render("r", "ops", &[]));
    let watched_rules = cluster_wide_rules_are_the_operators(&objects);
    nothing_grants_more_than_that(&objects);
    // The names in resourceNames are the ones the operator is told to use.
    assert_env(
        &objects,
        &[
            (
                "BIFROST_LEASE_NAME",
                Some("r-bifrost-requirements-operator"),
            ),
            (
                "BIFROST_TLS_SECRET_NAME",
                Some("r-bifrost-requirements-webhook-tls"),
            ),
            (
                "BIFROST_WEBHOOK_CONFIG_NAME",
                Some("r-bifrost-requirements"),
            ),
        ],
    );
    watch_namespace_binds_the_same_rules_there_only(&watched_rules);
    // certManager and a watched namespace: no ClusterRole at all.
    let objects = docs(&render(
        "r",
        "ops",
        &["watchNamespace=team", "webhook.tls.mode=certManager"],
    ));
    assert!(find(&objects, "ClusterRole").is_empty());
    assert!(find(&objects, "ClusterRoleBinding").is_empty());
}

fn lines(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Cluster-wide (the defaults): the operator's ClusterRole, the caBundle patch of this
/// release's webhook configuration, and the release namespace's Role; returns the first's rules.
fn cluster_wide_rules_are_the_operators(objects: &[Value]) -> BTreeSet<String> {
    let cluster: Vec<_> = find(objects, "ClusterRole");
    assert_eq!(cluster.len(), 2);
    assert_eq!(
        rules(cluster[0]),
        lines(&[
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
            "/pods get",
            "/pods create",
            "/pods delete",
            "events.k8s.io/events create",
            "events.k8s.io/events patch",
        ])
    );
    assert_eq!(
        rules(cluster[1]),
        lines(&[
            "admissionregistration.k8s.io/mutatingwebhookconfigurations get r-bifrost-requirements",
            "admissionregistration.k8s.io/mutatingwebhookconfigurations patch r-bifrost-requirements",
        ])
    );
    let role = one(objects, "Role");
    assert_eq!(role["metadata"]["namespace"], "ops");
    assert_eq!(
        rules(role),
        lines(&[
            "coordination.k8s.io/leases create",
            "coordination.k8s.io/leases get r-bifrost-requirements-operator",
            "coordination.k8s.io/leases patch r-bifrost-requirements-operator",
            "/secrets create",
            "/secrets get r-bifrost-requirements-webhook-tls",
            "/secrets update r-bifrost-requirements-webhook-tls",
        ])
    );
    rules(cluster[0])
}

/// Nothing anywhere grants delete (but of pods: the interpreter probe, once it answered),
/// deletecollection, escalate, bind, impersonate or `*`.
fn nothing_grants_more_than_that(objects: &[Value]) {
    for r in find(objects, "ClusterRole")
        .into_iter()
        .chain(find(objects, "Role"))
    {
        for rule in rules(r).into_iter().filter(|r| r != "/pods delete") {
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
}

/// watchNamespace: the same rules, as a Role bound in that namespace only; nothing namespaced
/// stays cluster-wide (the one ClusterRole left is the caBundle patch of this release's webhook
/// configuration, cluster-scoped by nature).
fn watch_namespace_binds_the_same_rules_there_only(watched_rules: &BTreeSet<String>) {
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
    let role = in_namespace(&objects, "Role", "team").expect("a Role in the watched namespace");
    assert_eq!(&rules(role), watched_rules);
    let binding = in_namespace(&objects, "RoleBinding", "team")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r-bifrost-requirements-watch"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "r-bifrost-requirements", "namespace": "ops"}])
    );
    assert_env(&objects, &[("WATCH_NAMESPACE", Some("team"))]);
    // The release namespace's Role (Lease, certificate Secret) is the same in both modes.
    let release_role = |objects: &[Value]| {
        rules(in_namespace(objects, "Role", "ops").expect("the release namespace's Role"))
    };
    assert_eq!(
        release_role(&objects),
        release_role(&docs(&render("r", "ops", &[])))
    );
}

/// The object of `kind` in namespace `ns`, if any.
fn in_namespace<'a>(objects: &'a [Value], kind: &str, ns: &str) -> Option<&'a Value> {
    find(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["namespace"] == ns)
}

/// A namespaced install (`watchNamespace`, the README's quick path): its ServiceAccount may do
/// everything the operator needs in the watched namespace, and nothing of it in another
/// namespace or cluster-wide; proven with `kubectl auth can-i` for every rule of the Role, and
/// for real with the ServiceAccount's token patching a Deployment in each namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaced_install_is_confined_to_its_namespace() {
    let watched = Ns::beside_release("bifrost").await;
    let client = watched.client.clone();
    let other = create_namespace(&client, "other").await;
    let install = NamespacedInstall::new(&client, &watched.name).await;
    install.may_use_every_rule_only_where_it_watches(&watched.name, &other);
    install.may_patch_only_its_own_webhook_configuration();

    common::init_crypto();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig =
        service_account_kubeconfig(&client, &install.ns, &install.sa, dir.path()).await;
    let as_operator = client_from(&kubeconfig).await;
    for (namespace, allowed) in [(&watched.name, true), (&other, false)] {
        rollout_patch_works_only_where_watched(&client, &as_operator, namespace, allowed).await;
    }
    install
        .does_the_whole_job_in_the_watched_namespace(&watched, &kubeconfig)
        .await;
    ok(helm_cluster(&[
        "uninstall",
        &install.release,
        "--namespace",
        &install.ns,
    ]));
}

/// A release of its own watching one namespace: its cluster-scoped names must not meet another
/// release's.
struct NamespacedInstall {
    release: String,
    /// The release namespace.
    ns: String,
    /// The ServiceAccount (the chart's fullname).
    sa: String,
    manifest: Vec<Value>,
}

impl NamespacedInstall {
    async fn new(client: &kube::Client, watched: &str) -> NamespacedInstall {
        let ns = create_namespace(client, "nsrel").await;
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
        NamespacedInstall {
            sa: format!("{release}-bifrost-requirements"),
            manifest: installed_manifest(&release, &ns),
            release,
            ns,
        }
    }

    fn can_i(&self, check: &[&str], ns: Option<&str>) -> bool {
        can_i_as(&self.ns, &self.sa, check, ns)
    }

    /// Every rule of the watched namespace's Role (`group/resource[/subresource] verb`): allowed
    /// there, refused in another namespace and cluster-wide.
    fn may_use_every_rule_only_where_it_watches(&self, watched: &str, other: &str) {
        let role =
            in_namespace(&self.manifest, "Role", watched).expect("the watched namespace's Role");
        let needed = rules(role);
        assert!(needed.len() >= 15, "{needed:?}");
        for rule in &needed {
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
                self.can_i(&check, Some(watched)),
                "{rule}: forbidden in the watched namespace"
            );
            assert!(
                !self.can_i(&check, Some(other)),
                "{rule}: allowed in another namespace"
            );
            let mut everywhere = check.clone();
            everywhere.push("--all-namespaces");
            assert!(
                !self.can_i(&everywhere, None),
                "{rule}: allowed cluster-wide"
            );
        }
    }

    /// The webhook configuration's caBundle: this release's only, cluster-scoped by nature.
    fn may_patch_only_its_own_webhook_configuration(&self) {
        let mwcs = "mutatingwebhookconfigurations.admissionregistration.k8s.io";
        assert!(self.can_i(&["patch", &format!("{mwcs}/{}", self.sa)], None));
        assert!(!self.can_i(&["patch", &format!("{mwcs}/other")], None));
    }

    /// The operator as this install's Deployment runs it (its env, this ServiceAccount's token)
    /// warms Redis, snapshots and rolls the labelled Deployment in the watched namespace, without
    /// one refusal.
    async fn does_the_whole_job_in_the_watched_namespace(&self, watched: &Ns, kubeconfig: &Path) {
        let (op, env) = chart_operator(
            "namespaced",
            &self.manifest,
            "bifrost-requirements-7d9c-ns",
            &self.ns,
            kubeconfig,
            &[],
        );
        assert!(env.contains(&("WATCH_NAMESPACE".into(), watched.name.clone())));
        watched.secret("redis", "url", &redis_url()).await;
        let key = fresh_key();
        let content = "requests==2.32.3\n";
        watched
            .wsreq(
                "default",
                json!({"content": content, "rollout": {"debounceSeconds": 0}, "install": {"resolve": "Pod"},
                       "cache": redis_cache(&key)}),
            )
            .await;
        watched.wait_rolled_to("worker", content, T).await;
        watched
            .assert_warmed_and_snapshotted("default", &key, content)
            .await;
        let log = op.log_text();
        assert!(
            !log.to_lowercase().contains("forbidden"),
            "the namespaced operator met a permission error:\n{log}"
        );
    }
}

/// A client with `kubeconfig`'s credentials.
async fn client_from(kubeconfig: &Path) -> kube::Client {
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The rollout's patch of a labelled Deployment (a merge patch, as the operator sends it: no
/// read first, which the Role does not grant), with the ServiceAccount's own token: it works in
/// the watched namespace and is refused in another.
async fn rollout_patch_works_only_where_watched(
    admin: &kube::Client,
    as_operator: &kube::Client,
    namespace: &str,
    allowed: bool,
) {
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {"bifrost.io/probe": "1"}}}}});
    labelled_deployment(admin, namespace, "worker", "default").await;
    let result = Api::<Deployment>::namespaced(as_operator.clone(), namespace)
        .patch("worker", &PatchParams::default(), &Patch::Merge(&patch))
        .await;
    match (&result, allowed) {
        (Ok(_), true) => {}
        (Err(kube::Error::Api(e)), false) => assert_eq!(e.code, 403, "{namespace}: {e:?}"),
        _ => panic!("{namespace}: allowed {allowed}, got {result:?}"),
    }
    let deployment = Api::<Deployment>::namespaced(admin.clone(), namespace)
        .get("worker")
        .await
        .unwrap();
    let annotated = deployment
        .spec
        .present()
        .and_then(|s| s.template.metadata.clone())
        .and_then(|m| m.annotations)
        .is_some_and(|a| a.contains_key("bifrost.io/probe"));
    assert_eq!(annotated, allowed, "{namespace}");
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
                scopes.entry(scope.to_string()).or_default().insert(
                    format!("{group}/{resource} {verb} {names}")
                        .trim_end()
                        .to_string(),
                );
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
    let union =
        |a: &str, b: &str| -> BTreeSet<String> { scope(a).union(&scope(b)).cloned().collect() };
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
    assert_eq!(
        named(&objects, "ClusterRole", "r-bifrost-requirements"),
        scope("watched")
    );
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
    assert_eq!(
        named(&objects, "Role", "r-bifrost-requirements-watch"),
        scope("watched")
    );
    assert_eq!(
        named(&objects, "Role", "r-bifrost-requirements"),
        scope("release namespace")
    );
    assert!(find(&objects, "ClusterRole").is_empty());
}
