//! Shipping: the Helm chart (`charts/bifrost-requirements`) and the Dockerfile, proven with the
//! real tools (helm, kubectl, hadolint) against the real control plane (kube-apiserver and
//! kube-controller-manager 1.20.2, RBAC on).
//!
//! - the chart lints clean, its CRD is byte-for-byte `crds/`, its appVersion is the crate's;
//! - every object it renders (defaults, each TLS mode, ServiceMonitor, example, namespaced) is
//!   accepted by the API server in a server-side dry run;
//! - `helm install` creates the CRD, RBAC, Deployment, Services and webhook configuration, and
//!   `helm uninstall` removes them (the CRD stays, as Helm does with `crds/`);
//! - `values.schema.json` rejects wrong types with a clear message;
//! - the operator, run with the Deployment's own environment and a token of the chart's
//!   ServiceAccount (not admin), does the whole job: the role is sufficient; other actions stay
//!   forbidden;
//! - the Dockerfile lints clean and agrees with `scripts/build-static.sh` and the webhook's paths.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::crd::{HASH_ANNOTATION, WorkspaceRequirements};
use bifrost_requirements::requirements::content_hash;
use common::index::Index;
use common::k8s::{ControlPlane, control_plane};
use common::operator::{
    Operator, create_wsreq, labelled_deployment, secret, template_hash, wait_crd_served, wait_for,
};
use common::proc::free_port;
use common::services::{fresh_database, fresh_key, redis_get, redis_url};
use common::wheels::Wheel;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const T: Duration = Duration::from_secs(60);
const CRD_NAME: &str = "workspacerequirements.bifrost.io";
/// The release every cluster test shares (installed once, first, onto a cluster without the CRD).
const RELEASE: &str = "bifrost-requirements";
const RELEASE_NS: &str = "bifrost-system";

// ---------------------------------------------------------------------------------------------
// Tools.

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart() -> PathBuf {
    root().join("charts/bifrost-requirements")
}

fn chart_arg() -> String {
    chart().to_str().unwrap().to_string()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run a tool, panicking with a set-up hint when it is not installed.
fn tool(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}); run scripts/setup.sh"))
}

/// Helm, with its cache/config/data folders in a private folder under cargo's target (a
/// temporary folder in a static would never be removed: statics are not dropped).
fn helm(args: &[&str]) -> Output {
    let home = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
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
    let program = std::env::var("HELM").unwrap_or_else(|_| "helm".into());
    tool(&program, args, &envs)
}

/// Helm against the test control plane.
fn helm_cluster(args: &[&str]) -> Output {
    let kubeconfig = control_plane().kubeconfig.to_str().unwrap().to_string();
    let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
    all.extend_from_slice(args);
    helm(&all)
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed ({}):\n{}",
        o.status,
        text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `helm template RELEASE chart --namespace NS --set …` → rendered YAML.
fn render(release: &str, ns: &str, sets: &[&str]) -> String {
    let chart = chart_arg();
    let mut args = vec!["template", release, chart.as_str(), "--namespace", ns];
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    ok(helm(&args))
}

/// The YAML documents of a stream, as JSON values (empty documents dropped).
fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde_yaml::Value::deserialize(d).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = find(objects, kind);
    assert_eq!(found.len(), 1, "expected one {kind}, got {}", found.len());
    found[0]
}

fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

/// The operator container's environment: name → literal value (None for `valueFrom`).
fn env_of(objects: &[Value]) -> Vec<(String, Option<String>)> {
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

fn env_value(objects: &[Value], name: &str) -> Option<String> {
    env_of(objects)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

/// kubectl of the control plane's version (built with it), else on PATH.
fn kubectl_program() -> PathBuf {
    let built = ControlPlane::bin_dir().join("kubectl");
    if built.is_file() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

/// kubectl as the admin user, with `yaml` on a file.
fn kubectl_file(args: &[&str], yaml: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    all.extend_from_slice(&["-f", file.to_str().unwrap()]);
    control_plane().kubectl(&all)
}

async fn create_namespace(client: &Client, prefix: &str) -> String {
    let name = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    ensure_namespace(client, &name).await;
    name
}

/// Create `name` if missing and wait for its default ServiceAccount token (pods need it on 1.20).
async fn ensure_namespace(client: &Client, name: &str) {
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

struct Release {
    /// Whether the CRD was absent before `helm install` (so the install created it).
    crd_absent_before: bool,
}

/// `helm install bifrost-requirements` (default values) into `bifrost-system`, once per test
/// binary, before anything else in this binary touches the CRD.
async fn release() -> &'static Release {
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

// ---------------------------------------------------------------------------------------------
// Chart: static checks (no cluster).

#[test]
fn chart_crd_is_the_committed_crd_byte_for_byte() {
    let committed = std::fs::read(root().join("crds/workspacerequirements.bifrost.io.yaml"))
        .expect("crds/workspacerequirements.bifrost.io.yaml");
    let shipped = std::fs::read(chart().join("crds/workspacerequirements.bifrost.io.yaml"))
        .expect("charts/bifrost-requirements/crds/workspacerequirements.bifrost.io.yaml");
    assert!(
        committed == shipped,
        "the chart's CRD differs from crds/: copy it with \
         `cp crds/workspacerequirements.bifrost.io.yaml charts/bifrost-requirements/crds/`"
    );
    let names: Vec<_> = std::fs::read_dir(chart().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["workspacerequirements.bifrost.io.yaml"]);
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart_yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    assert_eq!(chart_yaml["apiVersion"], "v2");
    assert_eq!(chart_yaml["name"], "bifrost-requirements");
    assert_eq!(
        chart_yaml["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION"))
    );
}

const VARIANTS: [(&str, &[&str]); 8] = [
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
];

#[test]
fn helm_lint_is_clean_for_every_variant() {
    let chart = chart_arg();
    for (name, sets) in VARIANTS {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        for s in sets {
            args.extend_from_slice(&["--set", s]);
        }
        let out = helm(&args);
        let all = text(&out);
        assert!(out.status.success(), "helm lint ({name}) failed:\n{all}");
        assert!(
            !all.contains("[WARNING]") && !all.contains("[ERROR]"),
            "helm lint ({name}):\n{all}"
        );
    }
}

#[test]
fn values_schema_rejects_wrong_types_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let chart = chart_arg();
    // Each wrong value, and what the message must name (Helm 3.6's wording, e.g.
    // `- replicaCount: Invalid type. Expected: integer, given: string`; newer Helm words it
    // differently but names the same things).
    let cases: [(&str, &[&str]); 5] = [
        (
            "replicaCount: \"two\"\n",
            &["replicaCount", "integer", "string"],
        ),
        (
            "webhook:\n  tls:\n    mode: selfSigned\n",
            &["mode", "selfManaged", "certManager"],
        ),
        (
            "webhook:\n  timeoutSeconds: 30\n",
            &["timeoutSeconds", "10"],
        ),
        (
            "serviceMonitor:\n  enabled: \"yes\"\n",
            &["enabled", "boolean", "string"],
        ),
        ("replicas: 3\n", &["replicas", "not allowed"]),
    ];
    for (i, (values, words)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("values-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        for verb in ["template", "lint"] {
            let mut args = vec![verb];
            if verb == "template" {
                args.push("x");
            }
            args.extend_from_slice(&[chart.as_str(), "-f", file.to_str().unwrap()]);
            let out = helm(&args);
            assert!(
                !out.status.success(),
                "helm {verb} accepted {values:?}:\n{}",
                text(&out)
            );
            let all = text(&out);
            assert!(
                all.contains("values don't meet the specifications of the schema"),
                "helm {verb} with {values:?}: not a schema error:\n{all}"
            );
            for word in *words {
                assert!(
                    all.contains(word),
                    "helm {verb} with {values:?}: the message does not name {word:?}:\n{all}"
                );
            }
        }
    }
    // Helm 3.6 (scripts/setup.sh pins it) says exactly where and what.
    let out = helm(&["template", "x", &chart, "--set", "replicaCount=two"]);
    if String::from_utf8_lossy(&helm(&["version", "--short"]).stdout).starts_with("v3.6.") {
        assert!(
            text(&out).contains("- replicaCount: Invalid type. Expected: integer, given: string"),
            "{}",
            text(&out)
        );
    }
    // The shipped defaults pass, and so does the right type.
    render("x", "x", &["replicaCount=3"]);

    // The schema documents every value (helm lint checks values.yaml against it, and unknown
    // keys are rejected, so values.yaml holds nothing the schema does not describe).
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(self::chart().join("values.schema.json")).unwrap(),
    )
    .unwrap();
    fn described(path: &str, node: &Value) {
        for (key, sub) in node["properties"].as_object().into_iter().flatten() {
            let path = format!("{path}.{key}");
            assert!(
                sub["description"].as_str().is_some_and(|d| !d.is_empty()),
                "values.schema.json: {path} has no description"
            );
            described(&path, sub);
        }
    }
    described("", &schema);
}

#[test]
fn deployment_runs_two_locked_down_replicas_of_its_own_image() {
    let objects = docs(&render("r", "ops", &[]));
    let deploy = one(&objects, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["runAsUser"],
        bifrost_requirements::webhook::inject::NON_ROOT_UID
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["serviceAccountName"], "r-bifrost-requirements");
    // The webhook never mutates the operator's own pods: they carry this label.
    assert_eq!(
        deploy["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
        bifrost_requirements::webhook::inject::OPERATOR_NAME
    );
    let c = container(&objects);
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "metrics"})
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    let image = format!("bifrost-requirements:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(c["image"], image.as_str());
    assert_eq!(env_value(&objects, "OPERATOR_IMAGE"), Some(image));
    let fields: Vec<_> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        fields,
        [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace")
        ]
    );
    assert_eq!(env_value(&objects, "BIFROST_NO_LEADER_ELECTION"), None);
    assert_eq!(
        env_value(&objects, "BIFROST_TLS_MODE").as_deref(),
        Some("self-managed")
    );
    // The image tag and pull policy follow the values, for the operator and the bootstrap.
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "image.repository=registry.example/bifrost",
            "image.tag=1.2.3",
            "image.pullPolicy=Always",
        ],
    ));
    assert_eq!(
        container(&objects)["image"],
        "registry.example/bifrost:1.2.3"
    );
    assert_eq!(
        env_value(&objects, "OPERATOR_IMAGE").as_deref(),
        Some("registry.example/bifrost:1.2.3")
    );
    assert_eq!(
        env_value(&objects, "BIFROST_OPERATOR_IMAGE_PULL_POLICY").as_deref(),
        Some("Always")
    );
    // PodDisruptionBudget: policy/v1 where the cluster has it, v1beta1 before (1.20).
    let pdb = one(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let chart = chart_arg();
    let v1 = docs(&ok(helm(&[
        "template",
        "r",
        &chart,
        "--api-versions",
        "policy/v1/PodDisruptionBudget",
    ])));
    assert_eq!(one(&v1, "PodDisruptionBudget")["apiVersion"], "policy/v1");
    // Offline (no cluster, no --api-versions) the Kubernetes version decides: a chart rendered
    // for 1.25, where policy/v1beta1 is gone, must not carry it.
    for (kube, want) in [
        ("1.20.2", "policy/v1beta1"),
        ("1.21.0", "policy/v1"),
        ("1.25.0", "policy/v1"),
    ] {
        let out = docs(&ok(helm(&[
            "template",
            "r",
            &chart,
            "--kube-version",
            kube,
        ])));
        assert_eq!(
            one(&out, "PodDisruptionBudget")["apiVersion"],
            want,
            "Kubernetes {kube}"
        );
    }
    // Leader election off needs exactly one replica.
    let out = helm(&[
        "template",
        "r",
        &chart,
        "--set",
        "leaderElection.enabled=false",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs replicaCount: 1"),
        "{}",
        text(&out)
    );
}

/// The chart's MutatingWebhookConfiguration is deploy/webhook.yaml (the webhook engineer's
/// object, embedded in the binary), with the release's Service and namespaces filled in.
#[test]
fn webhook_configuration_is_the_shipped_one() {
    let objects = docs(&render(RELEASE, "bifrost-requirements", &[]));
    let rendered = one(&objects, "MutatingWebhookConfiguration");
    let shipped =
        serde_json::to_value(bifrost_requirements::webhook::webhook_configuration().unwrap())
            .unwrap();
    assert_eq!(rendered["metadata"]["name"], shipped["metadata"]["name"]);
    let mut ours = rendered["webhooks"].clone();
    // The one intended difference: the release namespace is excluded too.
    let values = &mut ours[0]["namespaceSelector"]["matchExpressions"][0]["values"];
    assert_eq!(*values, json!(["kube-system", "bifrost-requirements"]));
    *values = json!(["kube-system"]);
    assert_eq!(ours, shipped["webhooks"]);
    let w = &rendered["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Ignore");
    assert!(w["timeoutSeconds"].as_i64().unwrap() <= 10);
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(w["reinvocationPolicy"], "IfNeeded");
    assert_eq!(w["rules"][0]["operations"], json!(["CREATE"]));
    assert_eq!(w["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(
        w["objectSelector"]["matchExpressions"][0],
        json!({"key": "bifrost.io/requirements", "operator": "Exists"})
    );
    assert!(
        rendered["metadata"]["annotations"].is_null(),
        "no CA injection in selfManaged mode"
    );

    // The Service it calls: 443 → the container's webhook port, selecting the operator's pods.
    let svc = find(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == w["clientConfig"]["service"]["name"])
        .expect("the webhook Service");
    assert_eq!(
        svc["metadata"]["namespace"],
        w["clientConfig"]["service"]["namespace"]
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    let deploy = one(&objects, "Deployment");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&deploy["spec"]["template"]["metadata"]["labels"][k], v);
    }
    let ports = container(&objects)["ports"].as_array().unwrap().clone();
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "webhook" && p["containerPort"] == 8443)
    );
    // The operator is told the names the chart uses.
    assert_eq!(
        env_value(&objects, "BIFROST_WEBHOOK_SERVICE_NAME").as_deref(),
        svc["metadata"]["name"].as_str()
    );
    assert_eq!(
        env_value(&objects, "BIFROST_WEBHOOK_CONFIG_NAME").as_deref(),
        rendered["metadata"]["name"].as_str()
    );

    // failurePolicy/timeout come from the values; more namespaces can be excluded.
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "webhook.failurePolicy=Fail",
            "webhook.timeoutSeconds=3",
            "webhook.excludeNamespaces={infra}",
        ],
    ));
    let w = &one(&objects, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Fail");
    assert_eq!(w["timeoutSeconds"], 3);
    assert_eq!(
        w["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "ops", "infra"])
    );
    // The selector works from Kubernetes 1.21 only: the operator is told the namespaces too and
    // skips them itself (its own namespace comes from POD_NAMESPACE).
    assert_eq!(
        env_value(&objects, "BIFROST_WEBHOOK_EXCLUDE_NAMESPACES").as_deref(),
        Some("infra")
    );
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "webhook.excludeNamespaces={infra,batch}",
            "watchNamespace=team",
        ],
    ));
    assert_eq!(
        env_value(&objects, "BIFROST_WEBHOOK_EXCLUDE_NAMESPACES").as_deref(),
        Some("infra,batch")
    );
    assert_eq!(
        env_value(&objects, "WATCH_NAMESPACE").as_deref(),
        Some("team")
    );
    assert!(
        env_of(&objects)
            .iter()
            .any(|(k, v)| k == "POD_NAMESPACE" && v.is_none()),
        "POD_NAMESPACE from the Downward API"
    );
    // Nothing to exclude: no variable.
    let objects = docs(&render("r", "ops", &[]));
    assert_eq!(
        env_value(&objects, "BIFROST_WEBHOOK_EXCLUDE_NAMESPACES"),
        None
    );
}

#[test]
fn cert_manager_mode_issues_mounts_and_injects_the_certificate() {
    let objects = docs(&render("r", "ops", &["webhook.tls.mode=certManager"]));
    let cert = one(&objects, "Certificate");
    let issuer = one(&objects, "Issuer");
    assert_eq!(issuer["spec"], json!({"selfSigned": {}}));
    assert_eq!(
        cert["spec"]["issuerRef"]["name"],
        issuer["metadata"]["name"]
    );
    let secret_name = cert["spec"]["secretName"].as_str().unwrap();
    let svc = find(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook")
        .unwrap();
    let svc_name = svc["metadata"]["name"].as_str().unwrap();
    let dns: Vec<&str> = cert["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        dns.contains(&format!("{svc_name}.ops.svc").as_str()),
        "{dns:?}"
    );
    let mwc = one(&objects, "MutatingWebhookConfiguration");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("ops/{}", cert["metadata"]["name"].as_str().unwrap()).as_str()
    );
    // The operator serves the mounted Secret's files.
    let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == secret_name)
        .expect("the certificate Secret is mounted");
    let mount = container(&objects)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap()
        .clone();
    let dir = mount["mountPath"].as_str().unwrap();
    assert_eq!(
        env_value(&objects, "BIFROST_TLS_MODE").as_deref(),
        Some("cert-manager")
    );
    assert_eq!(
        env_value(&objects, "BIFROST_TLS_CERT_FILE"),
        Some(format!("{dir}/tls.crt"))
    );
    assert_eq!(
        env_value(&objects, "BIFROST_TLS_KEY_FILE"),
        Some(format!("{dir}/tls.key"))
    );
    // No self-managed permissions in this mode: no Secret writes, no webhook configuration patch.
    let role = one(&objects, "Role");
    assert!(
        !role["rules"].to_string().contains("secrets"),
        "{}",
        role["rules"]
    );
    assert!(find(&objects, "ClusterRole").iter().all(|r| {
        !r["rules"]
            .to_string()
            .contains("mutatingwebhookconfigurations")
    }));

    // A given issuer replaces the self-signed one.
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "webhook.tls.mode=certManager",
            "webhook.tls.certManager.issuerRef.name=corp-ca",
            "webhook.tls.certManager.issuerRef.kind=ClusterIssuer",
        ],
    ));
    assert!(find(&objects, "Issuer").is_empty());
    assert_eq!(
        one(&objects, "Certificate")["spec"]["issuerRef"],
        json!({"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
    );
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    let objects = docs(&render("r", "ops", &[]));
    assert!(
        find(&objects, "ServiceMonitor").is_empty(),
        "off by default"
    );
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "serviceMonitor.enabled=true",
            "serviceMonitor.labels.release=prom",
        ],
    ));
    let sm = one(&objects, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["labels"]["release"], "prom");
    let selected: Vec<_> = find(&objects, "Service")
        .into_iter()
        .filter(|s| {
            sm["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(k, v)| &s["metadata"]["labels"][k] == v)
        })
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "the ServiceMonitor selects exactly the metrics Service"
    );
    let port = &sm["spec"]["endpoints"][0];
    assert_eq!(port["path"], "/metrics");
    assert!(
        selected[0]["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port["port"] && p["targetPort"] == "metrics")
    );
}

/// The RBAC the chart grants, exactly (README lists the same; the end-to-end test below proves
/// it is enough).
#[test]
fn rbac_is_exactly_what_the_code_uses() {
    fn rules(o: &Value) -> BTreeSet<String> {
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
                            let names: Vec<&str> =
                                names.iter().map(|n| n.as_str().unwrap()).collect();
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
    // watchNamespace: the same ClusterRole, bound in that namespace only.
    let objects = docs(&render("r", "ops", &["watchNamespace=team"]));
    assert!(
        find(&objects, "ClusterRoleBinding")
            .iter()
            .all(|b| b["roleRef"]["name"] != "r-bifrost-requirements")
    );
    let binding = find(&objects, "RoleBinding")
        .into_iter()
        .find(|b| b["metadata"]["namespace"] == "team")
        .expect("a RoleBinding in the watched namespace");
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r-bifrost-requirements"})
    );
    assert_eq!(
        env_value(&objects, "WATCH_NAMESPACE").as_deref(),
        Some("team")
    );
}

/// Every variable the chart sets is one the operator reads, with a value it accepts.
#[test]
fn chart_environment_is_accepted_by_the_operator() {
    let help = common::cli(&["operator", "--help"], &[]);
    common::assert_ok(&help);
    let help = common::stdout(&help);
    for (name, sets) in VARIANTS {
        let objects = docs(&render("r", "ops", sets));
        let env = env_of(&objects);
        for (var, _) in &env {
            assert!(
                help.contains(&format!("[env: {var}="))
                    || ["RUST_LOG", "BIFROST_LOG_FORMAT"].contains(&var.as_str()),
                "{name}: the chart sets {var}, which `operator` does not read:\n{help}"
            );
        }
        assert_eq!(container(&objects)["args"], json!(["operator"]));
        // Parse them for real: no kubeconfig, so it stops right after parsing (exit 1), never
        // with clap's exit 2 for a bad value.
        let port = free_port().to_string();
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_else(|| "from-field-ref".into())))
            .collect();
        vars.push(("BIFROST_METRICS_ADDR".into(), format!("127.0.0.1:{port}")));
        vars.push(("KUBECONFIG".into(), "/nonexistent/kubeconfig".into()));
        vars.push(("KUBERNETES_SERVICE_HOST".into(), String::new()));
        let out = Command::new(common::bin())
            .arg("operator")
            .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(2), "{name}: {}", text(&out));
        assert!(
            !text(&out).contains("invalid value"),
            "{name}: {}",
            text(&out)
        );
        assert!(text(&out).contains("kubeconfig"), "{name}: {}", text(&out));
    }
}

/// The durations the chart passes to the operator: a value the chart accepts is one the binary
/// accepts and vice versa (one grammar, the same minimum and maximum), so a values mistake fails
/// `helm install` with the value's path instead of crash-looping the operator.
#[test]
fn chart_and_operator_accept_the_same_durations() {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap())
            .unwrap();
    let tls = &schema["properties"]["webhook"]["properties"]["tls"]["properties"];
    for pattern in [
        &tls["checkInterval"]["pattern"],
        &tls["selfManaged"]["properties"]["certValidity"]["pattern"],
    ] {
        assert_eq!(pattern, bifrost_requirements::duration::PATTERN);
    }
    let chart = chart_arg();
    let values = [
        ("webhook.tls.checkInterval", "BIFROST_TLS_CHECK_INTERVAL"),
        (
            "webhook.tls.selfManaged.certValidity",
            "BIFROST_CERT_VALIDITY",
        ),
    ];
    let samples = [
        "30s",
        "100ms",
        "99ms",
        "0.1",
        "0.05",
        "10s",
        "9s",
        "9.999s",
        "10",
        "1h30m",
        "8760h",
        "8760h1s",
        "525600m",
        "5",
        "1.5h",
        "2h45m30s500ms",
        "1s500000us",
        "1.s",
        ".5s",
        "1d",
        "1 s",
        "-10s",
        "1e3",
        "",
        "10S",
        "ten",
    ];
    let mut disagreements = Vec::new();
    for (path, var) in values {
        for sample in samples {
            let set = format!("{path}={sample}");
            let chart_ok = helm(&["template", "r", &chart, "--set-string", &set])
                .status
                .success();
            // No kubeconfig: the operator stops right after parsing its flags (exit 1); exit 2
            // is clap refusing a value.
            let out = Command::new(common::bin())
                .arg("operator")
                .env(var, sample)
                .env("KUBECONFIG", "/nonexistent/kubeconfig")
                .env("KUBERNETES_SERVICE_HOST", "")
                .env("BIFROST_METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let binary_ok = out.status.code() != Some(2);
            if chart_ok != binary_ok {
                disagreements.push(format!(
                    "{path}={sample:?}: chart {chart_ok}, operator {binary_ok} ({})",
                    text(&out).lines().next().unwrap_or_default()
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // The chart's refusal names the value and the limit.
    let out = helm(&[
        "template",
        "r",
        &chart,
        "--set-string",
        "webhook.tls.selfManaged.certValidity=5s",
    ]);
    assert!(
        text(&out)
            .contains(r#"webhook.tls.selfManaged.certValidity: "5s" is too short (at least 10s)"#),
        "{}",
        text(&out)
    );
}

/// The supported range in Chart.yaml (`kubeVersion`) and README: every object the chart renders,
/// in every variant, for the oldest and the newest version of the range, uses an API version
/// that Kubernetes serves in that version (the table: Kubernetes' API removal guide; the
/// operator's own client types are k8s-openapi's `v1_33`). The oldest is the one every other test
/// runs on.
#[test]
fn every_rendered_api_is_served_across_the_supported_range() {
    let chart_yaml = std::fs::read_to_string(chart().join("Chart.yaml")).unwrap();
    assert!(
        chart_yaml.contains(r#"kubeVersion: ">=1.20.0-0 <1.34.0-0""#),
        "Chart.yaml's kubeVersion changed: update this test's range and README"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("Kubernetes 1.20 to 1.33"),
        "README must state the supported range"
    );
    // (apiVersion, kind) → the minor versions that serve it; None: a CRD of another project.
    let served = |api: &str, kind: &str, minor: u32| -> Option<bool> {
        Some(match (api, kind) {
            ("v1", _) | ("apps/v1", _) | ("batch/v1", "Job") => true,
            ("rbac.authorization.k8s.io/v1", _) => true,
            ("admissionregistration.k8s.io/v1", _) => minor >= 16,
            ("policy/v1", "PodDisruptionBudget") => minor >= 21,
            ("policy/v1beta1", "PodDisruptionBudget") => minor <= 24,
            ("bifrost.io/v1alpha1", "WorkspaceRequirements") => true,
            ("cert-manager.io/v1", _) | ("monitoring.coreos.com/v1", _) => return None,
            _ => false,
        })
    };
    let chart = chart_arg();
    for (kube, minor) in [("1.20.2", 20), ("1.33.0", 33)] {
        for (name, sets) in VARIANTS {
            let mut args = vec!["template", "r", chart.as_str(), "--kube-version", kube];
            for s in sets.iter() {
                args.extend_from_slice(&["--set", s]);
            }
            for o in docs(&ok(helm(&args))) {
                let (api, kind) = (
                    o["apiVersion"].as_str().unwrap(),
                    o["kind"].as_str().unwrap(),
                );
                assert_ne!(
                    served(api, kind, minor),
                    Some(false),
                    "{name}: {api} {kind} is not served by Kubernetes {kube}"
                );
            }
        }
    }
    // Outside the range, Helm refuses the chart.
    let out = helm(&["template", "r", &chart, "--kube-version", "1.19.9"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("kubeVersion"), "{}", text(&out));
}

/// The opt-in migrate hook: a Job before install and upgrade whose container, run as rendered
/// (its args, its environment with the Secret's URL filled in) against a real PostgreSQL, creates
/// the NOTIFY trigger the database mirror listens to. Without the Secret's name the chart refuses.
#[tokio::test]
async fn migrate_hook_job_creates_the_notify_trigger() {
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "migrate.enabled=true",
            "migrate.databaseUrlSecretRef.name=bifrost-secrets",
            "migrate.databaseUrlSecretRef.key=BIFROST_DATABASE_URL",
        ],
    ));
    let job = one(&objects, "Job");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["automountServiceAccountToken"], false);
    // Its pods are not the operator's: the Deployment and the PDB must not select them.
    let selector = &one(&objects, "Deployment")["spec"]["selector"]["matchLabels"];
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert!(
        selector
            .as_object()
            .unwrap()
            .iter()
            .any(|(k, v)| &labels[k] != v),
        "the operator's selector {selector} matches the migrate pod's labels {labels}"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["image"], container(&objects)["image"]);
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let url = fresh_database().await;
    let mut cmd = Command::new(common::bin());
    cmd.args(&args).stdin(Stdio::null());
    for e in c["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        match e["value"].as_str() {
            Some(v) => cmd.env(name, v),
            None => {
                let r = &e["valueFrom"]["secretKeyRef"];
                assert_eq!(r["name"], "bifrost-secrets");
                assert_eq!(r["key"], "BIFROST_DATABASE_URL");
                cmd.env(name, &url)
            }
        };
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'workspace_files'::regclass AND NOT tgisinternal",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        triggers >= 1,
        "no trigger on workspace_files after the Job's command"
    );

    let chart = chart_arg();
    let out = helm(&["template", "r", &chart, "--set", "migrate.enabled=true"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("migrate.enabled needs migrate.databaseUrlSecretRef.name"),
        "{}",
        text(&out)
    );
}

/// The example resource lands where pods are injected: `example.namespace`, else
/// `watchNamespace`; in the release namespace (never injected) the chart refuses with a message.
#[test]
fn example_resource_goes_where_pods_are_injected() {
    let ns_of = |sets: &[&str]| {
        let objects = docs(&render("r", "ops", sets));
        one(&objects, "WorkspaceRequirements")["metadata"]["namespace"].clone()
    };
    assert_eq!(
        ns_of(&["example.enabled=true", "example.namespace=workers"]),
        "workers"
    );
    assert_eq!(
        ns_of(&["example.enabled=true", "watchNamespace=team"]),
        "team"
    );
    let chart = chart_arg();
    for sets in [
        vec!["example.enabled=true"],
        vec!["example.enabled=true", "example.namespace=kube-system"],
        vec![
            "example.enabled=true",
            "example.namespace=batch",
            "webhook.excludeNamespaces={batch}",
        ],
    ] {
        let mut args = vec!["template", "r", chart.as_str(), "--namespace", "ops"];
        for s in &sets {
            args.extend_from_slice(&["--set", s]);
        }
        let out = helm(&args);
        assert!(!out.status.success(), "{sets:?} rendered");
        assert!(
            text(&out).contains("is never injected") && text(&out).contains("example.namespace"),
            "{sets:?}: {}",
            text(&out)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Chart on the real API server.

/// Minimal CRDs for the kinds of other projects the chart may render (the test server has no
/// Prometheus Operator or cert-manager): enough for a server-side dry run to validate.
async fn foreign_crds() {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    release().await; // the CRD (the example renders a WorkspaceRequirements)
    foreign_crds().await;
    let client = control_plane().client().await;
    for (name, sets) in VARIANTS {
        let ns = create_namespace(&client, "dry").await;
        let watch = create_namespace(&client, "watched").await;
        let sets: Vec<String> = sets
            .iter()
            .map(|s| s.replace("=team", &format!("={watch}")))
            .collect();
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        // A release name of its own: cluster-scoped names must not meet the installed release's.
        let yaml = render("dry", &ns, &sets);
        let objects = docs(&yaml);
        assert!(!objects.is_empty());
        let out = kubectl_file(&["apply", "--dry-run=server"], &yaml);
        let stdout = ok(out);
        let accepted = stdout
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(
            accepted,
            objects.len(),
            "{name}: every rendered object is accepted:\n{stdout}"
        );
        let kinds: BTreeSet<&str> = objects
            .iter()
            .map(|o| o["kind"].as_str().unwrap())
            .collect();
        eprintln!(
            "{name}: {} objects accepted by the API server: {kinds:?}",
            objects.len()
        );
        match name {
            "certManager" => assert!(kinds.contains("Certificate") && kinds.contains("Issuer")),
            "serviceMonitor" => assert!(kinds.contains("ServiceMonitor")),
            "example, watchNamespace and excluded namespaces" => {
                assert!(kinds.contains("WorkspaceRequirements"))
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_creates_everything_and_uninstall_removes_it() {
    // The shared release went first, onto a cluster without the CRD: Helm created it.
    let first = release().await;
    assert!(
        first.crd_absent_before,
        "the CRD existed before the first helm install"
    );
    let client = control_plane().client().await;
    wait_crd_served(&client).await;

    // A release of its own, installed and uninstalled here.
    let ns = create_namespace(&client, "helm").await;
    let chart = chart_arg();
    let out = ok(helm_cluster(&[
        "install",
        "second",
        &chart,
        "--namespace",
        &ns,
    ]));
    eprintln!("{out}");
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("bifrost.io/requirements"),
        "NOTES explain the opt-in label:\n{out}"
    );
    assert!(
        out.contains("get wsreq"),
        "NOTES explain how to check status:\n{out}"
    );
    let fullname = "second-bifrost-requirements";
    let namespaced = [
        ("deployment", fullname.to_string()),
        ("serviceaccount", fullname.to_string()),
        ("service", format!("{fullname}-webhook")),
        ("service", format!("{fullname}-metrics")),
        ("role", fullname.to_string()),
        ("rolebinding", fullname.to_string()),
        ("poddisruptionbudget", fullname.to_string()),
    ];
    let cluster = [
        ("clusterrole", fullname.to_string()),
        ("clusterrolebinding", fullname.to_string()),
        ("clusterrole", format!("{fullname}-webhook")),
        ("clusterrolebinding", format!("{fullname}-webhook")),
        ("mutatingwebhookconfiguration", fullname.to_string()),
        ("crd", CRD_NAME.to_string()),
    ];
    let exists = |kind: &str, name: &str, ns: Option<&str>| {
        let mut args = vec!["get", kind, name, "-o", "name"];
        if let Some(ns) = ns {
            args.extend_from_slice(&["-n", ns]);
        }
        let out = control_plane().kubectl(&args);
        if out.status.success() {
            true
        } else {
            assert!(text(&out).contains("NotFound"), "{}", text(&out));
            false
        }
    };
    for (kind, name) in &namespaced {
        assert!(
            exists(kind, name, Some(&ns)),
            "{kind}/{name} was not created"
        );
    }
    for (kind, name) in &cluster {
        assert!(exists(kind, name, None), "{kind}/{name} was not created");
    }
    // The stored webhook configuration, as the API server keeps it.
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(fullname)
        .await
        .unwrap();
    let w = &mwc.webhooks.as_ref().unwrap()[0];
    let svc = w.client_config.service.as_ref().unwrap();
    assert_eq!(
        (
            svc.name.as_str(),
            svc.namespace.as_str(),
            svc.path.as_deref(),
            svc.port
        ),
        (
            format!("{fullname}-webhook").as_str(),
            ns.as_str(),
            Some("/mutate"),
            Some(443)
        )
    );
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
    // The controller-manager runs the Deployment (pods stay Pending: no scheduler here).
    wait_for("the operator's ReplicaSet", T, || async {
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), &ns)
            .list(&ListParams::default().labels("app.kubernetes.io/instance=second"))
            .await
            .ok()?;
        (!rs.items.is_empty()).then_some(())
    })
    .await;

    let out = ok(helm_cluster(&["uninstall", "second", "--namespace", &ns]));
    assert!(out.contains("uninstalled"), "{out}");
    for (kind, name) in &namespaced {
        wait_for(&format!("{kind}/{name} removed"), T, || async {
            (!exists(kind, name, Some(&ns))).then_some(())
        })
        .await;
    }
    for (kind, name) in &cluster {
        let should_remain = *kind == "crd";
        wait_for(&format!("{kind}/{name} removed"), T, || async {
            (exists(kind, name, None) == should_remain).then_some(())
        })
        .await;
    }
    let list = ok(helm_cluster(&["list", "--namespace", &ns, "-q"]));
    assert!(list.trim().is_empty(), "{list}");
}

// ---------------------------------------------------------------------------------------------
// RBAC: the operator under the chart's ServiceAccount.

/// A kubeconfig for the chart's ServiceAccount (its token Secret, created by the
/// controller-manager's token controller on 1.20), trusting the API server's CA.
async fn service_account_kubeconfig(client: &Client, dir: &Path) -> PathBuf {
    let sas = Api::<ServiceAccount>::namespaced(client.clone(), RELEASE_NS);
    let secret_name = wait_for("the ServiceAccount's token Secret", T, || async {
        let sa = sas.get_opt(RELEASE).await.ok()??;
        sa.secrets?.into_iter().find_map(|s| s.name)
    })
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), RELEASE_NS)
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
    let path = dir.join("operator.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

fn kubectl_as(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
    all.extend_from_slice(args);
    Command::new(kubectl_program())
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn can_i(verb_resource: &[&str], ns: Option<&str>) -> bool {
    let sa = format!("system:serviceaccount:{RELEASE_NS}:{RELEASE}");
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
async fn wait_reconciled(client: &Client, ns: &str, name: &str) -> WorkspaceRequirements {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_does_its_job_with_the_chart_service_account_only() {
    common::init_crypto();
    release().await;
    let client = control_plane().client().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&client, dir.path()).await;

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

// ---------------------------------------------------------------------------------------------
// The image.

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile")
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = tool("hadolint", &["Dockerfile"], &[]);
    assert!(out.status.success(), "hadolint Dockerfile:\n{}", text(&out));
}

/// The Dockerfile builds with scripts/build-static.sh (which CI runs), and lays the image out the
/// way the webhook's bootstrap container expects.
#[test]
fn dockerfile_builds_with_the_ci_script_and_matches_the_webhook() {
    let df = dockerfile();
    assert!(df.contains("RUN --mount=type=cache,target=/usr/local/cargo/registry"));
    assert!(
        df.contains("scripts/build-static.sh binary"),
        "the binary is built by the CI script"
    );
    assert!(
        df.contains("scripts/build-static.sh uv"),
        "uv is fetched by the CI script"
    );
    let binary = bifrost_requirements::webhook::inject::OPERATOR_BINARY;
    assert_eq!(binary, "/usr/local/bin/bifrost-requirements");
    assert!(df.contains(&format!(
        "COPY --from=build /out/bifrost-requirements {binary}"
    )));
    // `bootstrap` finds uv next to the binary.
    let uv = Path::new(binary).with_file_name("uv");
    assert!(df.contains(&format!("COPY --from=uv /out/uv {}", uv.display())));
    assert!(df.contains(&format!("ENTRYPOINT [\"{binary}\"]")));
    let uid = bifrost_requirements::webhook::inject::NON_ROOT_UID;
    assert!(df.contains(&format!("USER {uid}:{uid}")));
    // The final stage adds nothing but the two static files (no shell, no package manager) to
    // distroless's python3, which uv asks for its environment when the operator resolves.
    let last = df.rsplit("\nFROM ").next().unwrap();
    assert!(last.starts_with("gcr.io/distroless/python3"), "{last}");
    assert!(!last.contains("RUN "), "{last}");
    // The script builds what the Dockerfile copies.
    let script = std::fs::read_to_string(root().join("scripts/build-static.sh")).unwrap();
    for needle in [
        "TARGET=x86_64-unknown-linux-musl",
        "CC_x86_64_unknown_linux_musl=musl-gcc",
        "--release --target \"$TARGET\"",
        "OUT=target/static",
        "--platform \"$UV_PLATFORM\"",
    ] {
        assert!(
            script.contains(needle),
            "scripts/build-static.sh lacks {needle}"
        );
    }
    // The build context holds what the crate needs (include_str! of deploy/, migrations/).
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for dir in [
        "src/",
        "deploy/",
        "migrations/",
        "benches/",
        "Cargo.lock",
        "scripts/build-static.sh",
    ] {
        assert!(
            ignore.contains(&format!("!{dir}")),
            ".dockerignore drops {dir}"
        );
        assert!(
            df.contains(&format!("COPY {}", dir.trim_end_matches('/')))
                || dir.ends_with(".lock")
                || dir.ends_with(".sh"),
            "Dockerfile does not copy {dir}"
        );
    }
}
