use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;

use super::containers::{install_resources, quantities};
use super::*;
use crate::crd::{CacheVolume, INJECTED_MODE_ANNOTATION, InstallMode, Installer, OnFailure};
use crate::telemetry::LogFormat;
use crate::webhook::fixtures::{CONTENT, pod};

mod modes;
mod wheelhouse;

fn resource() -> WorkspaceRequirements {
    crate::webhook::fixtures::resource("bifrost", "default")
}

fn python_path_mode() -> WorkspaceRequirements {
    let mut r = resource();
    r.spec.install.mode = InstallMode::PythonPath;
    r
}

fn worker() -> serde_json::Value {
    crate::webhook::fixtures::worker(Some("default"))
}

fn settings() -> Settings {
    Settings {
        operator_image: "ghcr.io/example/bifrost-requirements:0.1.0".into(),
        operator_image_pull_policy: Some("IfNotPresent".into()),
        log_format: LogFormat::Json,
        scope: Scope::default(),
    }
}

/// Plan, apply the patch as the API server would, return the mutated pod.
fn apply(p: &Pod, r: &WorkspaceRequirements) -> (Pod, Plan) {
    let plan = plan(p, r, &settings()).expect("plan");
    let mut doc = serde_json::to_value(p).unwrap();
    json_patch::patch(&mut doc, &plan.patch.0).expect("the patch applies");
    (serde_json::from_value(doc).expect("still a pod"), plan)
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|e| e.name == name)
}

fn init<'a>(p: &'a Pod, name: &str) -> &'a Container {
    p.spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no init container {name}"))
}

fn volume_names(spec: &PodSpec) -> Vec<&str> {
    let volumes = spec.volumes.as_deref().expect("volumes");
    volumes.iter().map(|v| v.name.as_str()).collect()
}

fn init_names(spec: &PodSpec) -> Vec<&str> {
    let inits = spec.init_containers.as_deref().expect("init containers");
    inits.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn opt_in_rules() {
    let mut unlabelled = worker();
    unlabelled["metadata"]["labels"] = json!({"app": "worker"});
    assert_eq!(
        opt_in(&pod(unlabelled), "bifrost", &Scope::default()),
        OptIn::NotLabelled
    );
    let labelled = pod(worker());
    assert_eq!(
        opt_in(&labelled, "bifrost", &Scope::default()),
        OptIn::Requested("default")
    );
    assert!(matches!(
        opt_in(&labelled, "kube-system", &Scope::default()),
        OptIn::Excluded(_)
    ));
    let mut operator = worker();
    operator["metadata"]["labels"][NAME_LABEL] = json!(OPERATOR_NAME);
    assert!(matches!(
        opt_in(&pod(operator), "bifrost", &Scope::default()),
        OptIn::Excluded(_)
    ));
    let mut marked = worker();
    marked["metadata"]["annotations"] = json!({INJECTED_ANNOTATION: "abc"});
    assert_eq!(
        opt_in(&pod(marked), "bifrost", &Scope::default()),
        OptIn::AlreadyInjected { warning: None }
    );
    let mut with_init = worker();
    with_init["spec"]["initContainers"] = json!([{"name": INSTALL_CONTAINER, "image": "x"}]);
    assert_eq!(
        opt_in(&pod(with_init), "bifrost", &Scope::default()),
        OptIn::AlreadyInjected { warning: None }
    );
    let mut with_volume = worker();
    with_volume["spec"]["volumes"] = json!([{"name": SITE_PACKAGES_VOLUME, "emptyDir": {}}]);
    match opt_in(&pod(with_volume), "bifrost", &Scope::default()) {
        OptIn::AlreadyInjected { warning: Some(w) } => {
            assert!(w.contains(SITE_PACKAGES_VOLUME), "{w}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn injects_everything_into_a_bare_pod() {
    let r = resource();
    let (p, plan) = apply(&pod(worker()), &r);
    let hash = crate::requirements::content_hash(CONTENT);
    assert_eq!(plan.hash, hash);
    assert_eq!(plan.containers, ["worker"]);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let annotations = p.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[INJECTED_ANNOTATION], hash);
    assert_eq!(annotations[INJECTED_MODE_ANNOTATION], "UserBase");
    // The patch escapes the annotation key only when the map exists; here it was absent.
    let spec = p.spec.as_ref().unwrap();
    let names = volume_names(spec);
    assert_eq!(
        names,
        [
            BIN_VOLUME,
            SITE_PACKAGES_VOLUME,
            SNAPSHOT_VOLUME,
            WORK_VOLUME
        ]
    );
    let site = &spec.volumes.as_ref().unwrap()[1];
    assert_eq!(
        site.empty_dir.as_ref().unwrap().size_limit,
        Some(Quantity("2Gi".into()))
    );
    let snap = spec.volumes.as_ref().unwrap()[2]
        .config_map
        .as_ref()
        .unwrap();
    assert_eq!(snap.name, "default-requirements");
    assert_eq!(snap.optional, Some(true));

    let inits = init_names(spec);
    assert_eq!(inits, [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]);
    let boot = init(&p, BOOTSTRAP_CONTAINER);
    assert_eq!(
        boot.image.as_deref(),
        Some("ghcr.io/example/bifrost-requirements:0.1.0")
    );
    assert_eq!(boot.command.as_ref().unwrap(), &[OPERATOR_BINARY]);
    assert_eq!(boot.args.as_ref().unwrap(), &["bootstrap", "--to", BIN_DIR]);
    let inst = init(&p, INSTALL_CONTAINER);
    assert_install_container(inst, &hash);
    for c in [boot, inst] {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(NON_ROOT_UID));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &["ALL"]
        );
        let res = c.resources.as_ref().unwrap();
        assert!(res.requests.is_some() && res.limits.is_some(), "{}", c.name);
    }

    let app = &spec.containers[0];
    assert_eq!(
        env(app, "PYTHONUSERBASE").unwrap().value.as_deref(),
        Some("/opt/bifrost/site-packages")
    );
    assert!(env(app, "PYTHONPATH").is_none(), "PYTHONPATH is left alone");
    let m = &app.volume_mounts.as_ref().unwrap()[0];
    assert_eq!(
        (m.name.as_str(), m.mount_path.as_str()),
        (SITE_PACKAGES_VOLUME, "/opt/bifrost/site-packages")
    );
}

/// The install container of a bare pod: the worker's image, our binary from the shared folder,
/// the arguments of UserBase mode, Redis from its Secret, a writable home and uv cache.
fn assert_install_container(inst: &Container, hash: &str) {
    assert_eq!(
        inst.image.as_deref(),
        Some("bifrost/worker:1.2"),
        "the worker's image"
    );
    assert_eq!(inst.image_pull_policy.as_deref(), Some("Always"));
    assert_eq!(
        inst.command.as_ref().unwrap(),
        &[format!("{BIN_DIR}/bifrost-requirements")]
    );
    let args = inst.args.as_ref().unwrap().join(" ");
    assert_eq!(
        args,
        format!(
            "install --user-base=/opt/bifrost/site-packages --installer=uv --uv={BIN_DIR}/uv \
             --expected-hash={hash} --on-failure=fail --fallback-file={SNAPSHOT_DIR}/payload.json \
             --redis-key=bifrost:requirements:content"
        )
    );
    let redis = env(inst, "REDIS_URL").unwrap().value_from.as_ref().unwrap();
    let sel = redis.secret_key_ref.as_ref().unwrap();
    assert_eq!(
        (sel.name.as_str(), sel.key.as_str(), sel.optional),
        ("bifrost-redis", "url", Some(true))
    );
    assert_eq!(env(inst, "HOME").unwrap().value.as_deref(), Some(WORK_DIR));
    assert!(env(inst, "UV_CACHE_DIR").is_some());
}

#[test]
fn patch_paths_append_and_escape_when_things_exist() {
    let mut v = worker();
    v["metadata"]["annotations"] = json!({"team": "data"});
    v["spec"]["volumes"] = json!([{"name": "config", "emptyDir": {}}]);
    v["spec"]["initContainers"] = json!([{"name": "migrate", "image": "bifrost/worker:1.2"}]);
    v["spec"]["containers"][0]["env"] = json!([{"name": "A", "value": "1"}]);
    v["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "config", "mountPath": "/etc/config"}]);
    let p = pod(v);
    let plan = plan(&p, &resource(), &settings()).unwrap();
    let paths: Vec<String> = plan
        .patch
        .0
        .iter()
        .map(|op| op.path().to_string())
        .collect();
    for key in ["injected-hash", "injected-mode"] {
        assert!(
            paths.contains(&format!("/metadata/annotations/bifrost.io~1{key}")),
            "{paths:?}"
        );
    }
    assert!(paths.contains(&"/spec/volumes/-".to_string()), "{paths:?}");
    assert!(
        paths.contains(&"/spec/initContainers/-".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/spec/containers/0/env/-".to_string()),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"/spec/containers/0/volumeMounts/-".to_string()),
        "{paths:?}"
    );
    let (p, _) = apply(&p, &resource());
    let spec = p.spec.as_ref().unwrap();
    let inits = init_names(spec);
    assert_eq!(
        inits,
        ["migrate", BOOTSTRAP_CONTAINER, INSTALL_CONTAINER],
        "ours run after the pod's own"
    );
    assert_eq!(spec.volumes.as_ref().unwrap().len(), 5);
    assert_eq!(p.metadata.annotations.as_ref().unwrap()["team"], "data");
    let app = &spec.containers[0];
    assert_eq!(app.env.as_ref().unwrap().len(), 2);
    assert_eq!(app.volume_mounts.as_ref().unwrap().len(), 2);
}

#[test]
fn idempotent_on_resubmission() {
    let r = resource();
    let (once, _) = apply(&pod(worker()), &r);
    assert_eq!(
        opt_in(&once, "bifrost", &Scope::default()),
        OptIn::AlreadyInjected { warning: None }
    );
    // Even without the annotation (stripped by someone), the init containers are recognized.
    let mut stripped = once.clone();
    stripped.metadata.annotations = None;
    assert_eq!(
        opt_in(&stripped, "bifrost", &Scope::default()),
        OptIn::AlreadyInjected { warning: None }
    );
}

#[test]
fn conflicting_mount_path_skips_the_container() {
    let mut v = worker();
    v["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "mine", "mountPath": "/opt/bifrost/site-packages/"}]);
    let (p, plan) = apply(&pod(v), &resource());
    assert!(plan.containers.is_empty());
    assert!(
        plan.warnings[0].contains("already mounts"),
        "{:?}",
        plan.warnings
    );
    assert!(env(&p.spec.as_ref().unwrap().containers[0], "PYTHONUSERBASE").is_none());
}

#[test]
fn user_ids() {
    let r = resource();
    // The worker's non-root uid is kept for the install container; the pod's for bootstrap.
    let mut v = worker();
    v["spec"]["securityContext"] = json!({"runAsUser": 1000});
    v["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 2000});
    let (p, _) = apply(&pod(v), &r);
    let uid = |c: &Container| c.security_context.as_ref().unwrap().run_as_user;
    assert_eq!(uid(init(&p, INSTALL_CONTAINER)), Some(2000));
    assert_eq!(uid(init(&p, BOOTSTRAP_CONTAINER)), Some(1000));
    // Root is never inherited.
    let mut v = worker();
    v["spec"]["securityContext"] = json!({"runAsUser": 0, "runAsGroup": 0});
    let (p, _) = apply(&pod(v), &r);
    let sc = init(&p, INSTALL_CONTAINER)
        .security_context
        .clone()
        .unwrap();
    assert_eq!(
        (sc.run_as_user, sc.run_as_group, sc.run_as_non_root),
        (Some(NON_ROOT_UID), None, Some(true))
    );
}

#[test]
fn spec_settings_reach_the_install_container() {
    let mut r = python_path_mode();
    r.spec.cache = None;
    r.spec.install.installer = Installer::Pip;
    r.spec.install.on_failure = OnFailure::Continue;
    r.spec.install.index_urls = vec![
        "https://pypi.example/simple".into(),
        " ".into(),
        "https://extra.example/simple".into(),
    ];
    r.spec.install.only_binary = true;
    r.spec.install.image = Some("python:3.11-slim".into());
    r.spec.install.mount_path = "/home/bifrost/.local/lib/python3.11/site-packages/".into();
    r.spec.install.size_limit = "500Mi".into();
    r.spec.install.cache_volume = Some(CacheVolume {
        claim_name: "pip-cache".into(),
    });
    r.spec.install.resources = Some(ResourceRequirements {
        limits: Some(quantities(&[("memory", "4Gi")])),
        ..ResourceRequirements::default()
    });
    let mut v = worker();
    v["spec"]["containers"][0]["env"] =
        json!([{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]);
    let (p, plan) = apply(&pod(v), &r);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let inst = init(&p, INSTALL_CONTAINER);
    assert_eq!(inst.image.as_deref(), Some("python:3.11-slim"));
    assert_eq!(inst.image_pull_policy, None);
    let args = inst.args.as_ref().unwrap().join(" ");
    assert!(args.contains("--target=/home/bifrost/.local/lib/python3.11/site-packages --installer=pip --expected-hash="), "{args}");
    assert!(!args.contains("--uv"), "{args}");
    assert!(args.contains("--on-failure=continue"), "{args}");
    assert!(!args.contains("--redis-key"), "{args}");
    assert!(
        args.contains(
            "--index-url=https://pypi.example/simple --extra-index-url=https://extra.example/simple"
        ),
        "{args}"
    );
    assert!(args.contains("--only-binary"), "{args}");
    assert!(
        args.ends_with(&format!("--cache-dir={CACHE_DIR}")),
        "{args}"
    );
    assert!(env(inst, "REDIS_URL").is_none());
    assert!(env(inst, "UV_CACHE_DIR").is_none());
    assert_eq!(
        env(inst, "HTTPS_PROXY").unwrap().value.as_deref(),
        Some("http://proxy:3128")
    );
    assert_eq!(
        inst.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"],
        Quantity("4Gi".into())
    );
    let vols = p.spec.as_ref().unwrap().volumes.as_ref().unwrap();
    let cache = vols.iter().find(|v| v.name == CACHE_VOLUME).unwrap();
    assert_eq!(
        cache.persistent_volume_claim.as_ref().unwrap().claim_name,
        "pip-cache"
    );
    let site = vols
        .iter()
        .find(|v| v.name == SITE_PACKAGES_VOLUME)
        .unwrap();
    assert_eq!(
        site.empty_dir.as_ref().unwrap().size_limit,
        Some(Quantity("500Mi".into()))
    );
    let app = &p.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        env(app, "PYTHONPATH").unwrap().value.as_deref(),
        Some("/home/bifrost/.local/lib/python3.11/site-packages")
    );
}

#[test]
fn bad_settings_degrade_or_refuse() {
    let mut r = resource();
    r.spec.install.size_limit = "2 GB".into();
    r.spec.install.resources = Some(ResourceRequirements {
        limits: Some(quantities(&[("memory", "lots")])),
        ..ResourceRequirements::default()
    });
    let (p, plan) = apply(&pod(worker()), &r);
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    let inst = init(&p, INSTALL_CONTAINER);
    assert_eq!(inst.resources.as_ref().unwrap(), &install_resources());

    for bad in ["relative/path", "/", "/a:b", "/bifrost-requirements/x", ""] {
        let mut r = resource();
        r.spec.install.mount_path = bad.into();
        assert!(plan_err(&pod(worker()), &r).contains("mountPath"), "{bad}");
    }
    let mut empty = worker();
    empty["spec"]["containers"] = json!([]);
    assert!(plan_err(&pod(empty), &resource()).contains("no containers"));
}

fn plan_err(p: &Pod, r: &WorkspaceRequirements) -> String {
    plan(p, r, &settings()).expect_err("refused").0
}

#[test]
fn a_container_using_our_name_is_not_injected() {
    for name in [INSTALL_CONTAINER, BOOTSTRAP_CONTAINER] {
        let mut v = worker();
        v["spec"]["containers"] = json!([{"name": name, "image": "w"}]);
        let err = plan_err(&pod(v), &resource());
        assert!(
            err.contains(name) && err.contains("already has a container"),
            "{err}"
        );
    }
}

#[test]
fn scope_excludes_system_own_configured_and_unwatched_namespaces() {
    let labelled = pod(worker());
    let all = Scope::default();
    assert!(matches!(
        opt_in(&labelled, "kube-system", &all),
        OptIn::Excluded(_)
    ));
    assert_eq!(
        opt_in(&labelled, "anything", &all),
        OptIn::Requested("default")
    );
    let scope = Scope {
        own: Some("ops".into()),
        excluded: vec![" infra ".into()],
        watched: None,
    };
    for ns in ["kube-system", "ops", "infra"] {
        assert!(
            matches!(opt_in(&labelled, ns, &scope), OptIn::Excluded(_)),
            "{ns}"
        );
    }
    assert_eq!(
        opt_in(&labelled, "team", &scope),
        OptIn::Requested("default")
    );
    let watched = Scope {
        watched: Some("team".into()),
        ..scope
    };
    assert_eq!(
        opt_in(&labelled, "team", &watched),
        OptIn::Requested("default")
    );
    assert_eq!(
        opt_in(&labelled, "other", &watched),
        OptIn::Excluded("the operator watches another namespace only (--namespace)")
    );
    // Empty names (an empty environment variable) exclude nothing.
    let empty = Scope {
        own: Some(String::new()),
        excluded: vec![String::new()],
        watched: Some(String::new()),
    };
    assert_eq!(
        opt_in(&labelled, "team", &empty),
        OptIn::Requested("default")
    );
    // Unlabelled pods stay "not labelled" wherever they are.
    assert_eq!(
        opt_in(
            &pod(crate::webhook::fixtures::worker(None)),
            "ops",
            &watched
        ),
        OptIn::NotLabelled
    );
}

/// Both init containers log in the operator's own format: one pipeline parses the operator
/// and the pods it injected.
#[test]
fn init_containers_log_in_the_operators_format() {
    for format in [LogFormat::Json, LogFormat::Text] {
        let settings = Settings {
            log_format: format,
            ..settings()
        };
        let plan = plan(&pod(worker()), &resource(), &settings).expect("plan");
        let mut doc = serde_json::to_value(pod(worker())).unwrap();
        json_patch::patch(&mut doc, &plan.patch.0).unwrap();
        let p: Pod = serde_json::from_value(doc).unwrap();
        for name in [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER] {
            let c = init(&p, name);
            assert_eq!(
                env(c, "BIFROST_LOG_FORMAT").and_then(|e| e.value.as_deref()),
                Some(format.name()),
                "{name} with {format:?}"
            );
        }
    }
}

#[test]
fn values_that_look_like_flags_stay_values() {
    let mut r = resource();
    r.spec.cache.as_mut().unwrap().redis.as_mut().unwrap().key = "--bifrost-requirements".into();
    r.spec.install.index_urls = vec!["https://-x.example/simple".into()];
    let (p, _) = apply(&pod(worker()), &r);
    let args = init(&p, INSTALL_CONTAINER).args.clone().unwrap();
    assert!(
        args.contains(&"--redis-key=--bifrost-requirements".to_string()),
        "{args:?}"
    );
    assert!(
        args.iter().skip(1).all(|a| a.starts_with("--")),
        "every argument is a flag or --flag=value: {args:?}"
    );
}

/// Whether `s` parses as a Kubernetes quantity (see [`crate::spec::parse_quantity`]).
fn valid_quantity(s: &str) -> bool {
    crate::spec::parse_quantity(s).is_ok()
}

#[test]
fn quantities_grammar() {
    for ok in [
        "1", "2Gi", "500Mi", "100m", "1.5", ".5", "1e3", "1E-2", "+1k", "0",
    ] {
        assert!(valid_quantity(ok), "{ok}");
    }
    for bad in [
        "", "Gi", "2 GB", "1..5", "1GiB", "e3", "1e", "lots", "1.2.3",
    ] {
        assert!(!valid_quantity(bad), "{bad}");
    }
}
