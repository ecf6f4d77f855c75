//! The chart renders what the operator needs (no cluster): its CRD is byte-for-byte `crds/`, its
//! appVersion is the crate's, it lints clean with Helm 3 and Helm 4 in every variant, and each
//! object (Deployment, webhook configuration and Service, cert-manager objects, ServiceMonitor,
//! migrate Job, example resource) says what the operator and the webhook expect.

mod common;

use std::process::{Command, Stdio};

use common::helm::*;
use common::services::fresh_database;
use serde_json::{Value, json};

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

#[test]
fn helm_lint_is_clean_for_every_variant() {
    let chart = chart_arg();
    // Every variant, and every values file of the chart's ci/ folder (Helm's convention: the
    // one-node cluster's node-values.yaml).
    let mut runs: Vec<(String, Vec<String>)> = VARIANTS
        .iter()
        .map(|(name, sets)| {
            let flags = sets
                .iter()
                .flat_map(|s| ["--set".to_string(), s.to_string()]);
            (name.to_string(), flags.collect())
        })
        .collect();
    for entry in std::fs::read_dir(self::chart().join("ci")).unwrap() {
        let path = entry.unwrap().path();
        let file = path.to_str().unwrap().to_string();
        runs.push((file.clone(), vec!["-f".into(), file]));
    }
    assert!(runs.len() > VARIANTS.len(), "no values file in ci/");
    for (name, flags) in &runs {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        args.extend(flags.iter().map(String::as_str));
        for h in Helm::ALL {
            let out = h.run(&args);
            let all = text(&out);
            assert!(out.status.success(), "{h:?} lint ({name}) failed:\n{all}");
            assert!(
                !all.contains("[WARNING]") && !all.contains("[ERROR]"),
                "{h:?} lint ({name}):\n{all}"
            );
        }
    }
}

#[test]
fn deployment_runs_two_locked_down_replicas_of_its_own_image() {
    let objects = docs(&render("r", "ops", &[]));
    let deploy = one(&objects, "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    pod_is_locked_down(deploy);
    container_is_locked_down_and_probed(&objects);
    let image = format!("bifrost-requirements:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container(&objects)["image"], image.as_str());
    assert_eq!(env_value(&objects, "OPERATOR_IMAGE"), Some(image));
    only_the_pod_name_and_namespace_come_from_the_downward_api(&objects);
    assert_env(
        &objects,
        &[
            ("BIFROST_NO_LEADER_ELECTION", None),
            ("BIFROST_TLS_MODE", Some("self-managed")),
        ],
    );
    let objects = image_tag_and_pull_policy_follow_the_values();
    disruption_budget_uses_the_api_the_cluster_has(&objects);
    // Leader election off needs exactly one replica.
    refused_by_both(
        &[
            "template",
            "r",
            &chart_arg(),
            "--set",
            "leaderElection.enabled=false",
        ],
        &["needs replicaCount: 1"],
    );
}

fn pod_is_locked_down(deploy: &Value) {
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
}

fn container_is_locked_down_and_probed(objects: &[Value]) {
    let c = container(objects);
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
}

fn only_the_pod_name_and_namespace_come_from_the_downward_api(objects: &[Value]) {
    let fields: Vec<_> = container(objects)["env"]
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
}

/// The image tag and pull policy follow the values, for the operator and the bootstrap; returns
/// the objects rendered with them.
fn image_tag_and_pull_policy_follow_the_values() -> Vec<Value> {
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
    assert_env(
        &objects,
        &[
            ("OPERATOR_IMAGE", Some("registry.example/bifrost:1.2.3")),
            ("BIFROST_OPERATOR_IMAGE_PULL_POLICY", Some("Always")),
        ],
    );
    objects
}

/// PodDisruptionBudget (of `objects`, rendered for 1.20): policy/v1 where the cluster has it,
/// v1beta1 before.
fn disruption_budget_uses_the_api_the_cluster_has(objects: &[Value]) {
    let pdb = one(objects, "PodDisruptionBudget");
    assert_eq!(pdb["apiVersion"], "policy/v1beta1");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let chart = chart_arg();
    let v1 = docs(&template_both(&[
        "template",
        "r",
        &chart,
        "--api-versions",
        "policy/v1/PodDisruptionBudget",
    ]));
    assert_eq!(one(&v1, "PodDisruptionBudget")["apiVersion"], "policy/v1");
    // Offline (no cluster, no --api-versions) the Kubernetes version decides: a chart rendered
    // for 1.25, where policy/v1beta1 is gone, must not carry it.
    for (kube, want) in [
        ("1.20.2", "policy/v1beta1"),
        ("1.21.0", "policy/v1"),
        ("1.25.0", "policy/v1"),
    ] {
        let out = docs(&template_both(&[
            "template",
            "r",
            &chart,
            "--kube-version",
            kube,
        ]));
        assert_eq!(
            one(&out, "PodDisruptionBudget")["apiVersion"],
            want,
            "Kubernetes {kube}"
        );
    }
}

/// The chart's MutatingWebhookConfiguration is deploy/webhook.yaml (the webhook engineer's
/// object, embedded in the binary), with the release's Service and namespaces filled in.
#[test]
fn webhook_configuration_is_the_shipped_one() {
    let objects = docs(&render(RELEASE, "bifrost-requirements", &[]));
    let rendered = one(&objects, "MutatingWebhookConfiguration");
    is_deploy_webhook_yaml_but_for_the_release_namespace(rendered);
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
    let svc = its_service_reaches_the_operators_webhook_port(&objects, w);
    // The operator is told the names the chart uses.
    assert_env(
        &objects,
        &[
            (
                "BIFROST_WEBHOOK_SERVICE_NAME",
                svc["metadata"]["name"].as_str(),
            ),
            (
                "BIFROST_WEBHOOK_CONFIG_NAME",
                rendered["metadata"]["name"].as_str(),
            ),
        ],
    );
    policy_timeout_and_excluded_namespaces_follow_the_values();
}

fn is_deploy_webhook_yaml_but_for_the_release_namespace(rendered: &Value) {
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
}

/// The Service the webhook `w` calls: 443 → the container's webhook port, selecting the
/// operator's pods.
fn its_service_reaches_the_operators_webhook_port<'a>(
    objects: &'a [Value],
    w: &Value,
) -> &'a Value {
    let svc = find(objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["name"] == w["clientConfig"]["service"]["name"])
        .expect("the webhook Service");
    assert_eq!(
        svc["metadata"]["namespace"],
        w["clientConfig"]["service"]["namespace"]
    );
    assert_eq!(svc["spec"]["ports"][0]["port"], 443);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], "webhook");
    let deploy = one(objects, "Deployment");
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&deploy["spec"]["template"]["metadata"]["labels"][k], v);
    }
    let ports = container(objects)["ports"].as_array().unwrap().clone();
    assert!(
        ports
            .iter()
            .any(|p| p["name"] == "webhook" && p["containerPort"] == 8443)
    );
    svc
}

/// failurePolicy/timeout come from the values; more namespaces can be excluded.
fn policy_timeout_and_excluded_namespaces_follow_the_values() {
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
    assert_env(
        &objects,
        &[("BIFROST_WEBHOOK_EXCLUDE_NAMESPACES", Some("infra"))],
    );
    let objects = docs(&render(
        "r",
        "ops",
        &[
            "webhook.excludeNamespaces={infra,batch}",
            "watchNamespace=team",
        ],
    ));
    assert_env(
        &objects,
        &[
            ("BIFROST_WEBHOOK_EXCLUDE_NAMESPACES", Some("infra,batch")),
            ("WATCH_NAMESPACE", Some("team")),
        ],
    );
    assert!(
        env_of(&objects)
            .iter()
            .any(|(k, v)| k == "POD_NAMESPACE" && v.is_none()),
        "POD_NAMESPACE from the Downward API"
    );
    // Nothing to exclude: no variable.
    let objects = docs(&render("r", "ops", &[]));
    assert_env(&objects, &[("BIFROST_WEBHOOK_EXCLUDE_NAMESPACES", None)]);
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
    let svc = find(&objects, "Service")
        .into_iter()
        .find(|s| s["metadata"]["labels"]["app.kubernetes.io/component"] == "webhook")
        .unwrap();
    let svc_name = svc["metadata"]["name"].as_str().unwrap();
    let dns = strs(&cert["spec"]["dnsNames"]);
    assert!(
        dns.contains(&format!("{svc_name}.ops.svc").as_str()),
        "{dns:?}"
    );
    let mwc = one(&objects, "MutatingWebhookConfiguration");
    assert_eq!(
        mwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("ops/{}", cert["metadata"]["name"].as_str().unwrap()).as_str()
    );
    the_operator_serves_the_mounted_secret(&objects, cert["spec"]["secretName"].as_str().unwrap());
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
    a_given_issuer_replaces_the_self_signed_one();
}

/// The operator serves the files of the mounted certificate Secret `secret_name`.
fn the_operator_serves_the_mounted_secret(objects: &[Value], secret_name: &str) {
    let pod = &one(objects, "Deployment")["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == secret_name)
        .expect("the certificate Secret is mounted");
    let mount = container(objects)["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap()
        .clone();
    let dir = mount["mountPath"].as_str().unwrap();
    assert_env(
        objects,
        &[
            ("BIFROST_TLS_MODE", Some("cert-manager")),
            ("BIFROST_TLS_CERT_FILE", Some(&format!("{dir}/tls.crt"))),
            ("BIFROST_TLS_KEY_FILE", Some(&format!("{dir}/tls.key"))),
        ],
    );
}

fn a_given_issuer_replaces_the_self_signed_one() {
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
    let args = strs(&c["args"]);
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
    refused_by_both(
        &["template", "r", &chart, "--set", "migrate.enabled=true"],
        &["migrate.enabled needs migrate.databaseUrlSecretRef.name"],
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
        refused_by_both(&args, &["is never injected", "example.namespace"]);
    }
}
