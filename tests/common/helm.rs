//! The chart's test harness: Helm 3 and Helm 4 with private homes, rendering and reading the
//! chart, the shared release on the control plane, and acting as a ServiceAccount. Used by the
//! `tests/helm_*.rs` binaries (render, values, schema, RBAC, lifecycle, image).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::k8s::{ControlPlane, control_plane};
use super::operator::{wait_crd_served, wait_for};

pub const T: Duration = Duration::from_secs(60);
pub const CRD_NAME: &str = "workspacerequirements.bifrost.io";
/// The release every cluster test shares (installed once, first, onto a cluster without the CRD).
pub const RELEASE: &str = "bifrost-requirements";
pub const RELEASE_NS: &str = "bifrost-system";

// ---------------------------------------------------------------------------------------------
// Tools.

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn chart() -> PathBuf {
    root().join("charts/bifrost-requirements")
}

pub fn chart_arg() -> String {
    chart().to_str().unwrap().to_string()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a tool, panicking with a set-up hint when it is not installed.
pub fn tool(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}); run scripts/setup.sh"))
}

/// A Helm major version the chart is tested with: users run Helm 4, older pipelines Helm 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helm {
    /// `helm` on PATH (or `$HELM`): Helm 3, as scripts/setup.sh pins it.
    Three,
    /// `$HELM4`, else the Helm 4 that scripts/setup.sh unpacks into the cache folder.
    Four,
}

impl Helm {
    pub const ALL: [Helm; 2] = [Helm::Three, Helm::Four];

    pub fn program(self) -> String {
        match self {
            Helm::Three => std::env::var("HELM").unwrap_or_else(|_| "helm".into()),
            Helm::Four => std::env::var("HELM4").unwrap_or_else(|_| {
                let cache = std::env::var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .unwrap_or_else(|_| {
                        PathBuf::from(std::env::var("HOME").unwrap()).join(".cache")
                    });
                let path = cache.join("bifrost-requirements/helm4/helm");
                path.to_str().unwrap().to_string()
            }),
        }
    }

    /// Run this Helm with its cache/config/data folders in a private folder under cargo's
    /// target (a temporary folder in a static would never be removed: statics are not dropped).
    pub fn run(self, args: &[&str]) -> Output {
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("helm-home-{self:?}"));
        let dirs: Vec<(String, String)> = ["CACHE", "CONFIG", "DATA"]
            .iter()
            .map(|d| {
                (
                    format!("HELM_{d}_HOME"),
                    home.join(d.to_lowercase()).to_str().unwrap().to_string(),
                )
            })
            .collect();
        let envs: Vec<(&str, &str)> = dirs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        tool(&self.program(), args, &envs)
    }

    /// `helm template RELEASE chart --namespace NS --set …` → rendered YAML, for the Kubernetes
    /// the cluster tests run (each Helm's default differs: 1.20 for Helm 3.6, newer for Helm 4).
    pub fn render(self, release: &str, ns: &str, sets: &[&str]) -> String {
        let chart = chart_arg();
        let mut args = vec!["template", release, chart.as_str(), "--namespace", ns];
        args.extend_from_slice(&["--kube-version", KUBE_VERSION]);
        for s in sets {
            args.extend_from_slice(&["--set", s]);
        }
        ok(self.run(&args))
    }
}

impl Helm {
    /// This Helm against the test control plane.
    pub fn cluster(self, args: &[&str]) -> Output {
        let kubeconfig = control_plane().kubeconfig.to_str().unwrap().to_string();
        let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
        all.extend_from_slice(args);
        self.run(&all)
    }
}

/// Helm 3 (the cluster tests' Helm; chart-only tests loop over [`Helm::ALL`]).
pub fn helm(args: &[&str]) -> Output {
    Helm::Three.run(args)
}

/// Helm against the test control plane.
pub fn helm_cluster(args: &[&str]) -> Output {
    Helm::Three.cluster(args)
}

#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\n{}",
        o.status,
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `helm template RELEASE chart --namespace NS --set …` → rendered YAML.
pub fn render(release: &str, ns: &str, sets: &[&str]) -> String {
    let three = Helm::Three.render(release, ns, sets);
    let four = Helm::Four.render(release, ns, sets);
    same_objects(&three, &four, &format!("{sets:?}"));
    three
}

/// Helm 3 and Helm 4 render the same objects (each Helm orders kinds of other projects its own
/// way, so the order is not compared); the differing objects are named.
#[track_caller]
pub fn same_objects(three: &str, four: &str, what: &str) {
    let sorted = |yaml: &str| {
        let mut v: Vec<String> = docs(yaml).iter().map(Value::to_string).collect();
        v.sort();
        v
    };
    let (a, b) = (sorted(three), sorted(four));
    let only = |x: &[String], y: &[String]| -> Vec<String> {
        x.iter()
            .filter(|o| !y.contains(o))
            .map(|o| o.chars().take(300).collect())
            .collect()
    };
    assert!(
        a == b,
        "Helm 3 and Helm 4 render {what} differently:\nonly Helm 3: {:#?}\nonly Helm 4: {:#?}",
        only(&a, &b),
        only(&b, &a)
    );
}

/// The Kubernetes version the control plane of the cluster tests runs.
pub const KUBE_VERSION: &str = "1.20.2";

/// `helm ARGS` (a render that must succeed) with Helm 3 and Helm 4: the same objects from both
/// (for [`KUBE_VERSION`] unless the arguments name one).
pub fn template_both(args: &[&str]) -> String {
    let mut args = args.to_vec();
    if !args.iter().any(|a| a.starts_with("--kube-version")) {
        args.extend_from_slice(&["--kube-version", KUBE_VERSION]);
    }
    let three = ok(Helm::Three.run(&args));
    let four = ok(Helm::Four.run(&args));
    same_objects(&three, &four, &format!("{args:?}"));
    three
}

/// `helm ARGS` that must fail with both Helms, each naming every one of `words`.
#[track_caller]
pub fn refused_by_both(args: &[&str], words: &[&str]) {
    for h in Helm::ALL {
        let out = h.run(args);
        assert!(!out.status.success(), "{h:?} accepted {args:?}");
        let all = text(&out);
        for word in words {
            assert!(all.contains(word), "{h:?} {args:?}: no {word:?} in:\n{all}");
        }
    }
}

/// The YAML documents of a stream, as JSON values (empty documents dropped).
pub fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

pub fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

pub fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

pub fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The operator container's environment: name → literal value (None for `valueFrom`).
pub fn env_of(objects: &[Value]) -> Vec<(String, Option<String>)> {
    container(objects)["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().map(String::from),
            )
        })
        .collect()
}

pub fn env_value(objects: &[Value], name: &str) -> Option<String> {
    env_of(objects)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

/// The literal value of each variable in the operator container, as expected (`None`: unset, or
/// from the Downward API).
#[track_caller]
pub fn assert_env(objects: &[Value], expected: &[(&str, Option<&str>)]) {
    for (name, want) in expected {
        assert_eq!(env_value(objects, name).as_deref(), *want, "{name}");
    }
}

/// A JSON array of strings, as `&str`s.
pub fn strs(array: &Value) -> Vec<&str> {
    array
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// kubectl of the control plane's version (built with it), else on PATH.
pub fn kubectl_program() -> PathBuf {
    let built = ControlPlane::bin_dir().join("kubectl");
    if built.is_file() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

/// kubectl as the admin user, with `yaml` on a file.
pub fn kubectl_file(args: &[&str], yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["-f", file.to_str().unwrap()]);
    control_plane().kubectl(&all)
}

pub async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    ensure_namespace(client, &name).await;
    name
}

/// Create `name` if missing and wait for its default ServiceAccount token (pods need it on 1.20).
pub async fn ensure_namespace(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    if api.get_opt(name).await.unwrap().is_none() {
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), name);
    wait_for("default ServiceAccount", T, || async {
        let sa = sa.get_opt("default").await.ok()??;
        (!sa.secrets.unwrap_or_default().is_empty()).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// The shared release.

pub struct Release {
    /// Whether the CRD was absent before `helm install` (so the install created it).
    pub crd_absent_before: bool,
}

/// `helm install bifrost-requirements` (default values) into `bifrost-system`, once per test
/// binary, before anything else in this binary touches the CRD.
pub async fn release() -> &'static Release {
    static RELEASE_DONE: OnceCell<Release> = OnceCell::const_new();
    RELEASE_DONE
        .get_or_init(|| async {
            let client = control_plane().client().await;
            let crds = Api::<CustomResourceDefinition>::all(client.clone());
            let crd_absent_before = crds.get_opt(CRD_NAME).await.unwrap().is_none();
            ensure_namespace(&client, RELEASE_NS).await;
            let chart = chart_arg();
            ok(helm_cluster(&[
                "install",
                RELEASE,
                &chart,
                "--namespace",
                RELEASE_NS,
            ]));
            wait_crd_served(&client).await;
            Release { crd_absent_before }
        })
        .await
}

/// The chart's variants every render, lint, dry-run and schema test goes through.
pub const VARIANTS: [(&str, &[&str]); 9] = [
    ("defaults", &[]),
    ("selfManaged", &["webhook.tls.mode=selfManaged"]),
    ("certManager", &["webhook.tls.mode=certManager"]),
    (
        "certManager with a ClusterIssuer",
        &[
            "webhook.tls.mode=certManager",
            "webhook.tls.certManager.issuerRef.name=corp-ca",
            "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
        ],
    ),
    ("serviceMonitor", &["serviceMonitor.enabled=true"]),
    (
        "example, watchNamespace and excluded namespaces",
        &[
            "example.enabled=true",
            "watchNamespace=team",
            "webhook.excludeNamespaces={infra,batch}",
        ],
    ),
    (
        "migrate hook",
        &[
            "migrate.enabled=true",
            "migrate.databaseUrlSecretRef.name=bifrost-secrets",
        ],
    ),
    (
        "one replica, no webhook, no leader election",
        &[
            "replicaCount=1",
            "webhook.enabled=false",
            "leaderElection.enabled=false",
        ],
    ),
    (
        "every optional object",
        &[
            "webhook.tls.mode=certManager",
            "serviceMonitor.enabled=true",
            "example.enabled=true",
            "watchNamespace=team",
            "webhook.excludeNamespaces={infra}",
            "migrate.enabled=true",
            "migrate.databaseUrlSecretRef.name=bifrost-secrets",
            "podDisruptionBudget.minAvailable=1",
        ],
    ),
];

// ---------------------------------------------------------------------------------------------
// Chart on the real API server.

/// Minimal CRDs for the kinds of other projects the chart may render (the test server has no
/// Prometheus Operator or cert-manager): enough for a server-side dry run to validate.
pub async fn foreign_crds() {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let mut yaml = String::new();
        for (group, kind, plural) in [
            ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
            ("cert-manager.io", "Certificate", "certificates"),
            ("cert-manager.io", "Issuer", "issuers"),
        ] {
            let crd = json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.{group}")},
                "spec": {
                    "group": group,
                    "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                    "versions": [{
                        "name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    }],
                },
            });
            yaml.push_str("---\n");
            yaml.push_str(&serde_yaml::to_string(&crd).unwrap());
        }
        ok(kubectl_file(&["apply"], &yaml));
        ok(control_plane().kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/certificates.cert-manager.io",
            "crd/issuers.cert-manager.io",
        ]));
        // Discovery (kubectl's cache) may lag a moment behind Established.
        let client = control_plane().client().await;
        let api: Api<kube::core::DynamicObject> = Api::all_with(
            client,
            &kube::discovery::ApiResource {
                group: "cert-manager.io".into(),
                version: "v1".into(),
                api_version: "cert-manager.io/v1".into(),
                kind: "Issuer".into(),
                plural: "issuers".into(),
            },
        );
        wait_for("cert-manager CRDs served", T, || async {
            api.list(&Default::default()).await.ok().map(|_| ())
        })
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// RBAC: the operator under the chart's ServiceAccount.

/// The objects of an installed release, as `helm get manifest` prints them.
pub fn installed_manifest(release: &str, ns: &str) -> Vec<Value> {
    docs(&ok(helm_cluster(&[
        "get",
        "manifest",
        release,
        "--namespace",
        ns,
    ])))
}

/// A kubeconfig for the chart's ServiceAccount (its token Secret, created by the
/// controller-manager's token controller on 1.20), trusting the API server's CA.
pub async fn service_account_kubeconfig(
    client: &Client,
    sa_ns: &str,
    sa_name: &str,
    dir: &Path,
) -> PathBuf {
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), sa_ns);
    let secret_name = wait_for("the ServiceAccount's token Secret", T, || async {
        let sa = sas.get_opt(sa_name).await.ok()??;
        sa.secrets?.into_iter().find_map(|s| s.name)
    })
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), sa_ns)
        .get(&secret_name)
        .await
        .unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let admin: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&control_plane().kubeconfig).unwrap())
            .unwrap();
    let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap()
        .to_string();
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": control_plane().server, "certificate-authority-data": ca}}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "local", "user": "operator"}}],
        "current-context": "operator",
    });
    let path = dir.join(format!("{sa_ns}-{sa_name}.kubeconfig"));
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

pub fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    Command::new(kubectl_program())
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// An RBAC object's rules, one `group/resource verb names` line per combination.
pub fn rules(o: &Value) -> BTreeSet<String> {
    o["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let groups = r["apiGroups"].as_array().unwrap().clone();
            let resources = r["resources"].as_array().unwrap().clone();
            let names = r["resourceNames"].as_array().cloned().unwrap_or_default();
            let verbs = r["verbs"].as_array().unwrap().clone();
            let mut out = Vec::new();
            for g in &groups {
                for res in &resources {
                    for v in &verbs {
                        let names: Vec<&str> = names.iter().map(|n| n.as_str().unwrap()).collect();
                        out.push(format!(
                            "{}/{} {} {}",
                            g.as_str().unwrap(),
                            res.as_str().unwrap(),
                            v.as_str().unwrap(),
                            names.join(",")
                        ));
                    }
                }
            }
            out
        })
        .map(|s| s.trim_end().to_string())
        .collect()
}

/// `kubectl auth can-i` as the shared release's ServiceAccount.
pub fn can_i(verb_resource: &[&str], ns: Option<&str>) -> bool {
    can_i_as(RELEASE_NS, RELEASE, verb_resource, ns)
}

/// `kubectl auth can-i VERB RESOURCE --as system:serviceaccount:SA_NS:SA [-n NS]`.
pub fn can_i_as(sa_ns: &str, sa_name: &str, verb_resource: &[&str], ns: Option<&str>) -> bool {
    let sa = format!("system:serviceaccount:{sa_ns}:{sa_name}");
    let mut args = vec!["auth", "can-i"];
    args.extend_from_slice(verb_resource);
    args.extend_from_slice(&["--as", &sa]);
    if let Some(ns) = ns {
        args.extend_from_slice(&["-n", ns]);
    }
    let out = control_plane().kubectl(&args);
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb_resource:?}: {other}\n{}",
            text(&out)
        ),
    }
}

/// Reconciled through to the end for a resource no workload opts in to: `Ready=False`
/// `NoWorkloads` (issue 15: it is not Ready) after every other condition came out True.
pub async fn wait_reconciled(client: &Client, ns: &str, name: &str) -> WorkspaceRequirements {
    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), ns);
    wait_for(
        &format!("{ns}/{name} Ready=False NoWorkloads"),
        T,
        || async {
            let obj = api.get(name).await.ok()?;
            obj.status
                .as_ref()?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "NoWorkloads")
                .then_some(obj)
        },
    )
    .await
}

/// The operator container's args and environment from a rendered or installed manifest, as the
/// pod would get them (the Downward API filled in with `pod_name` and `pod_namespace`), with
/// `overrides` replacing or adding variables (loopback ports, a local index, text logs).
pub fn operator_command(
    manifest: &[Value],
    pod_name: &str,
    pod_namespace: &str,
    overrides: &[(&str, String)],
) -> (Vec<String>, Vec<(String, String)>) {
    let args = container(manifest)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let mut env: Vec<(String, String)> = Vec::new();
    for e in container(manifest)["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.to_string(),
            Some("metadata.namespace") => pod_namespace.to_string(),
            Some(other) => panic!("unexpected fieldRef {other}"),
            None => e["value"].as_str().unwrap().to_string(),
        };
        env.push((name, value));
    }
    for (k, v) in overrides {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.clone()));
    }
    (args, env)
}
