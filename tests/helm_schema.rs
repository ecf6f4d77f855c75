//! The supported Kubernetes range, proven by schema: `Chart.yaml`'s `kubeVersion` names the range,
//! and for every minor release in it, everything the project puts on a cluster validates against
//! that release's published OpenAPI schemas (strict: an unknown field is an error, a kind the
//! release does not serve has no schema): every object the chart renders with Helm 3 and Helm 4
//! (`--kube-version`, defaults and every optional object on), the CRD in `crds/`, and the pods the
//! webhook patches (the pure planner's patch applied to a worker pod). The schemas come from the
//! PyPI package kubernetes-validate, installed pinned by `scripts/setup.sh` (offline afterwards);
//! `tests/fixtures/k8s_schemas.py` looks a release's schemas up by its full version, never by the
//! package's own (string-compared) choice.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bifrost_requirements::crd::{WorkspaceRequirements, WorkspaceRequirementsSpec};
use bifrost_requirements::webhook::inject::{self, Settings};
use common::helm::*;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// Kinds of other projects the chart may render (their CRDs are not in Kubernetes' schemas), and
/// ours (its schema is the CRD's, checked by the API server in the dry-run test).
const FOREIGN: [&str; 3] = ["cert-manager.io/", "monitoring.coreos.com/", "bifrost.io/"];

/// The chart's `kubeVersion` range as (oldest, newest) minor of Kubernetes 1.
fn supported_minors() -> (u32, u32) {
    let chart_yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap())
            .unwrap();
    let range = chart_yaml["kubeVersion"].as_str().expect("kubeVersion");
    minors_of(range).unwrap_or_else(|| panic!("kubeVersion {range:?} is not >=1.A.0-0 <1.B.0-0"))
}

/// `>=1.20.0-0 <1.38.0-0` → (20, 37).
fn minors_of(range: &str) -> Option<(u32, u32)> {
    let (low, high) = range.split_once(' ')?;
    let minor = |s: &str, prefix: &str| -> Option<u32> {
        s.strip_prefix(prefix)?
            .strip_suffix(".0-0")?
            .strip_prefix("1.")?
            .parse()
            .ok()
    };
    Some((minor(low, ">=")?, minor(high, "<")?.checked_sub(1)?))
}

#[test]
fn kube_version_range_parses() {
    assert_eq!(minors_of(">=1.20.0-0 <1.38.0-0"), Some((20, 37)));
    assert_eq!(minors_of(">=1.20.0 <1.38.0"), None);
    assert_eq!(minors_of("<1.38.0-0"), None);
}

/// The kubernetes-validate venv's Python (scripts/setup.sh).
fn schema_python() -> PathBuf {
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    let python = cache.join("bifrost-requirements/kubernetes-validate/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    python
}

/// Validate `objects` (label, object) against Kubernetes `1.MINOR.0`'s schemas; returns the
/// problems, one line each (a kind without schema counts unless it is a foreign one).
fn problems(minor: u32, objects: &[(String, Value)]) -> Vec<String> {
    let request = json!({
        "version": format!("1.{minor}.0"),
        "objects": objects.iter().map(|(l, o)| json!({"label": l, "object": o})).collect::<Vec<_>>(),
    });
    let mut child = Command::new(schema_python())
        .arg(root().join("tests/fixtures/k8s_schemas.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "k8s_schemas.py: {}", text(&out));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), objects.len());
    let mut found = Vec::new();
    for (r, (_, o)) in results.iter().zip(objects) {
        let api = o["apiVersion"].as_str().unwrap_or_default();
        let what = format!("1.{minor}: {} ({api} {})", r["label"], r["kind"]);
        if r["missing"] == true && !FOREIGN.iter().any(|f| api.starts_with(f)) {
            found.push(format!("{what}: not served (no schema)"));
        }
        if let Some(e) = r["error"].as_str() {
            found.push(format!("{what}: {e}"));
        }
    }
    found
}

/// A worker pod as Bifrost's Deployment creates it, patched by the webhook's planner for `spec`.
fn patched_pod(spec: Value) -> Value {
    let spec: WorkspaceRequirementsSpec = serde_json::from_value(spec).unwrap();
    let mut resource = WorkspaceRequirements::new("default", spec);
    resource.metadata.namespace = Some("bifrost".into());
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "worker-7d9c-x2", "namespace": "bifrost",
                     "labels": {"app": "worker", "bifrost.io/requirements": "default"}},
        "spec": {
            "containers": [
                {"name": "worker", "image": "bifrost/worker:1.2",
                 "env": [{"name": "PYTHONPATH", "value": "/app"}]},
                {"name": "sidecar", "image": "bifrost/worker:1.2"}
            ],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    });
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let plan = inject::plan(&typed, &resource, &Settings::default()).expect("injected");
    let mut doc = pod;
    json_patch::patch(&mut doc, &plan.patch.0).expect("the patch applies");
    doc
}

/// What the webhook adds, in its shapes: the defaults, and every optional part set.
fn patched_pods() -> Vec<(String, Value)> {
    let redis = json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}, "key": "bifrost:requirements:content"}});
    vec![
        (
            "patched pod (defaults)".into(),
            patched_pod(json!({"content": "requests==2.32.3\n", "cache": redis})),
        ),
        (
            "patched pod (PythonPath, pip, cache claim, resources, image)".into(),
            patched_pod(json!({
                "content": "requests==2.32.3\n",
                "cache": redis,
                "install": {
                    "installer": "pip", "onFailure": "Continue", "mode": "PythonPath",
                    "pythonPath": ["/app"], "onlyBinary": true, "image": "python:3.11-slim",
                    "sizeLimit": "1Gi", "cacheVolume": {"claimName": "pip-cache"},
                    "resources": {"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"memory": "1Gi"}},
                    "resolve": "Pod"
                }
            })),
        ),
    ]
}

/// The chart's objects rendered by `helm` for `1.MINOR.0`, every variant, labelled.
fn rendered(helm: Helm, minor: u32) -> Vec<(String, Value)> {
    let chart = chart_arg();
    let kube = format!("1.{minor}.0");
    let mut all = Vec::new();
    for (name, sets) in VARIANTS {
        let mut args = vec![
            "template",
            "r",
            chart.as_str(),
            "--namespace",
            "ops",
            "--kube-version",
            kube.as_str(),
        ];
        for s in sets.iter() {
            args.extend_from_slice(&["--set", s]);
        }
        for o in docs(&ok(helm.run(&args))) {
            let label = format!("{helm:?} {name}: {} {}", o["kind"], o["metadata"]["name"]);
            all.push((label, o));
        }
    }
    all
}

/// Every minor release of the range, every object: valid against that release's schemas.
#[test]
fn every_object_validates_against_each_supported_release_schema() {
    let (oldest, newest) = supported_minors();
    assert_eq!(
        (oldest, newest),
        (20, 37),
        "Chart.yaml's kubeVersion changed: update README's range and this line"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("Kubernetes 1.{oldest} to 1.{newest}")),
        "README must state the supported range"
    );
    let crd: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("crds/workspacerequirements.bifrost.io.yaml"))
            .unwrap(),
    )
    .unwrap();
    let pods = patched_pods();
    let minors: Vec<u32> = (oldest..=newest).collect();
    // Two threads: the machine has two cores, and each release is independent.
    let found: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = minors
            .chunks(minors.len().div_ceil(2))
            .map(|chunk| {
                let (crd, pods) = (&crd, &pods);
                s.spawn(move || {
                    let mut found = Vec::new();
                    for &minor in chunk {
                        let mut objects = vec![("crds/ CRD".to_string(), crd.clone())];
                        objects.extend(pods.iter().cloned());
                        for helm in Helm::ALL {
                            let r = rendered(helm, minor);
                            assert!(r.len() > 10, "{helm:?} 1.{minor}: {} objects", r.len());
                            objects.extend(r);
                        }
                        found.extend(problems(minor, &objects));
                    }
                    found
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(found.is_empty(), "{found:#?}");
}

/// The validator is not a yes-machine: it refuses a field the release does not have, a wrong
/// type, a kind the release no longer (or not yet) serves, and says so.
#[test]
fn the_schema_check_refuses_what_a_release_refuses() {
    let pdb = |api: &str| {
        json!({"apiVersion": api, "kind": "PodDisruptionBudget",
               "metadata": {"name": "x"}, "spec": {"minAvailable": 1}})
    };
    let mut pod = patched_pods().remove(0).1;
    pod["spec"]["containers"][0]["bogus"] = json!(true);
    let mut typed = patched_pods().remove(0).1;
    typed["spec"]["initContainers"][0]["resources"] = json!("small");
    let found = problems(
        37,
        &[
            ("unknown field".into(), pod),
            ("wrong type".into(), typed),
            ("removed in 1.25".into(), pdb("policy/v1beta1")),
        ],
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("bogus"), "{}", found[0]);
    assert!(found[1].contains("resources"), "{}", found[1]);
    assert!(found[2].contains("not served"), "{}", found[2]);
    // policy/v1 appeared in 1.21: on 1.20 it has no schema, on 1.21 it validates.
    assert_eq!(problems(20, &[("pdb".into(), pdb("policy/v1"))]).len(), 1);
    assert!(problems(21, &[("pdb".into(), pdb("policy/v1"))]).is_empty());
}

/// Outside the range, both Helms refuse the chart and name kubeVersion.
#[test]
fn helm_refuses_the_chart_outside_the_range() {
    let (oldest, newest) = supported_minors();
    let chart = chart_arg();
    for helm in Helm::ALL {
        for kube in [format!("1.{}.9", oldest - 1), format!("1.{}.0", newest + 1)] {
            let out = helm.run(&["template", "r", &chart, "--kube-version", &kube]);
            assert!(!out.status.success(), "{helm:?} rendered for {kube}");
            assert!(text(&out).contains("kubeVersion"), "{}", text(&out));
        }
        for kube in [format!("1.{oldest}.2"), format!("1.{newest}.5")] {
            ok(helm.run(&["template", "r", &chart, "--kube-version", &kube]));
        }
    }
}

/// The Helms under test are the two majors (a missing Helm 4 must not pass as Helm 3).
#[test]
fn the_chart_is_tested_with_helm_3_and_helm_4() {
    for (helm, major) in [(Helm::Three, "v3."), (Helm::Four, "v4.")] {
        let version = ok(helm.run(&["version", "--short"]));
        assert!(version.starts_with(major), "{helm:?}: {version}");
    }
}
