//! The two install modes: PythonPath (`PYTHONPATH` prepended, kept or skipped) and UserBase
//! (`PYTHONUSERBASE`, and what would make Python skip the user site).

use super::*;

#[test]
fn pythonpath_is_prepended_kept_or_skipped() {
    let mut v = worker();
    v["spec"]["containers"] = json!([
        {"name": "literal", "image": "w", "env": [{"name": "PYTHONPATH", "value": "/app:/lib"}]},
        {"name": "from-secret", "image": "w", "env": [{"name": "PYTHONPATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
        {"name": "empty", "image": "w", "env": [{"name": "PYTHONPATH", "value": ""}]},
        {"name": "already", "image": "w", "env": [{"name": "PYTHONPATH", "value": "/opt/bifrost/site-packages:/app"}]},
        {"name": "plain", "image": "w"}
    ]);
    let (p, plan) = apply(&pod(v), &python_path_mode());
    assert_eq!(plan.containers, ["literal", "empty", "already", "plain"]);
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(plan.warnings[0].contains("from-secret") && plan.warnings[0].contains("valueFrom"));
    let cs = &p.spec.as_ref().unwrap().containers;
    let pp = |i: usize| env(&cs[i], "PYTHONPATH").unwrap().clone();
    assert_eq!(
        pp(0).value.as_deref(),
        Some("/opt/bifrost/site-packages:/app:/lib")
    );
    assert!(
        pp(1).value.is_none() && pp(1).value_from.is_some(),
        "untouched"
    );
    assert!(
        cs[1].volume_mounts.is_none(),
        "a skipped container gets no mount either"
    );
    assert_eq!(pp(2).value.as_deref(), Some("/opt/bifrost/site-packages"));
    assert_eq!(
        pp(3).value.as_deref(),
        Some("/opt/bifrost/site-packages:/app"),
        "not duplicated"
    );
    assert_eq!(pp(4).value.as_deref(), Some("/opt/bifrost/site-packages"));
    for i in [0, 2, 3, 4] {
        assert_eq!(
            cs[i].volume_mounts.as_ref().unwrap()[0].name,
            SITE_PACKAGES_VOLUME,
            "{i}"
        );
    }
    // The install container runs in the first container's image.
    assert_eq!(init(&p, INSTALL_CONTAINER).image.as_deref(), Some("w"));
}

#[test]
fn last_pythonpath_definition_wins() {
    let mut v = worker();
    v["spec"]["containers"][0]["env"] = json!([
        {"name": "PYTHONPATH", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        {"name": "PYTHONPATH", "value": "/app"}
    ]);
    let (p, plan) = apply(&pod(v), &python_path_mode());
    assert!(plan.warnings.is_empty());
    let e = &p.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap()[1];
    assert_eq!(e.value.as_deref(), Some("/opt/bifrost/site-packages:/app"));
}

#[test]
fn env_from_gets_the_pythonpath_warning() {
    let mut v = worker();
    v["spec"]["containers"] = json!([
        {"name": "from-config", "image": "w", "envFrom": [{"configMapRef": {"name": "bifrost-config"}}]},
        {"name": "explicit", "image": "w", "envFrom": [{"configMapRef": {"name": "c"}}],
         "env": [{"name": "PYTHONPATH", "value": "/app"}]}
    ]);
    let (p, plan) = apply(&pod(v), &python_path_mode());
    assert_eq!(plan.containers, ["from-config", "explicit"]);
    assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
    assert!(
        plan.warnings[0].contains("from-config") && plan.warnings[0].contains("envFrom"),
        "{:?}",
        plan.warnings
    );
    let cs = &p.spec.as_ref().unwrap().containers;
    assert_eq!(
        env(&cs[0], "PYTHONPATH").unwrap().value.as_deref(),
        Some("/opt/bifrost/site-packages")
    );
}

#[test]
fn python_path_mode_keeps_the_listed_entries_after_ours() {
    let mut r = python_path_mode();
    r.spec.install.python_path = vec!["/app".into(), "/lib".into()];
    let mut v = worker();
    v["spec"]["containers"] = json!([
        {"name": "plain", "image": "w"},
        {"name": "literal", "image": "w", "env": [{"name": "PYTHONPATH", "value": "/lib:/srv"}]}
    ]);
    let (p, plan) = apply(&pod(v), &r);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let cs = &p.spec.as_ref().unwrap().containers;
    let pp = |i: usize| env(&cs[i], "PYTHONPATH").unwrap().value.clone().unwrap();
    assert_eq!(pp(0), "/opt/bifrost/site-packages:/app:/lib");
    assert_eq!(
        pp(1),
        "/opt/bifrost/site-packages:/app:/lib:/srv",
        "no duplicate /lib"
    );
    assert!(env(&cs[0], "PYTHONUSERBASE").is_none());
    assert_eq!(
        p.metadata.annotations.as_ref().unwrap()[INJECTED_MODE_ANNOTATION],
        "PythonPath"
    );
    let args = init(&p, INSTALL_CONTAINER).args.as_ref().unwrap().join(" ");
    assert!(
        args.starts_with("install --target=/opt/bifrost/site-packages "),
        "{args}"
    );
    // Entries listed for PythonPath mode do not leak into UserBase mode.
    r.spec.install.mode = InstallMode::UserBase;
    let (p, _) = apply(&pod(worker()), &r);
    assert!(env(&p.spec.as_ref().unwrap().containers[0], "PYTHONPATH").is_none());
}

#[test]
fn user_base_keeps_the_containers_own_variables() {
    let mut v = worker();
    v["spec"]["containers"] = json!([
        {"name": "app-path", "image": "w", "env": [{"name": "PYTHONPATH", "value": "/app"}]},
        {"name": "own-base", "image": "w", "env": [{"name": "PYTHONUSERBASE", "value": "/home/u/.local"}]},
        {"name": "same-base", "image": "w", "env": [{"name": "PYTHONUSERBASE", "value": "/opt/bifrost/site-packages/"}]},
        {"name": "empty-base", "image": "w", "env": [{"name": "PYTHONUSERBASE", "value": ""}]},
        {"name": "from-secret", "image": "w", "env": [{"name": "PYTHONUSERBASE", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]},
        {"name": "from-config", "image": "w", "envFrom": [{"configMapRef": {"name": "c"}}]}
    ]);
    let (p, plan) = apply(&pod(v), &resource());
    assert_eq!(
        plan.containers,
        ["app-path", "same-base", "empty-base", "from-config"]
    );
    let said = |who: &str, what: &str| {
        plan.warnings
            .iter()
            .any(|w| w.contains(&format!("{who:?}")) && w.contains(what))
    };
    // envFrom (Bifrost's own workers use it for bifrost-secrets and bifrost-config) is no
    // warning in UserBase mode: the webhook cannot see into it, and PYTHONPATH is not touched.
    assert_eq!(plan.warnings.len(), 2, "{:?}", plan.warnings);
    assert!(
        said("own-base", "PYTHONUSERBASE=\"/home/u/.local\" itself; kept"),
        "{:?}",
        plan.warnings
    );
    assert!(said("from-secret", "valueFrom"), "{:?}", plan.warnings);
    assert!(!said("from-config", "envFrom"), "{:?}", plan.warnings);
    let cs = &p.spec.as_ref().unwrap().containers;
    let base = |i: usize| env(&cs[i], "PYTHONUSERBASE").and_then(|e| e.value.clone());
    assert_eq!(
        env(&cs[0], "PYTHONPATH").unwrap().value.as_deref(),
        Some("/app")
    );
    assert_eq!(base(0).as_deref(), Some("/opt/bifrost/site-packages"));
    assert_eq!(base(1).as_deref(), Some("/home/u/.local"), "theirs kept");
    assert!(
        cs[1].volume_mounts.is_none(),
        "a skipped container gets no mount"
    );
    assert_eq!(
        base(2).as_deref(),
        Some("/opt/bifrost/site-packages/"),
        "already ours"
    );
    assert_eq!(base(3).as_deref(), Some("/opt/bifrost/site-packages"));
    assert!(cs[4].volume_mounts.is_none());
    assert_eq!(base(5).as_deref(), Some("/opt/bifrost/site-packages"));
}

#[test]
fn user_base_warns_when_python_would_skip_the_user_site() {
    let mut v = worker();
    v["spec"]["containers"] = json!([
        {"name": "no-user-site", "image": "w", "env": [{"name": "PYTHONNOUSERSITE", "value": "1"}]},
        {"name": "dash-s", "image": "w", "command": ["/usr/local/bin/python3", "-u", "-s", "-m", "bifrost"]},
        {"name": "isolated", "image": "w", "command": ["python"], "args": ["-I", "main.py"]},
        {"name": "fine", "image": "w", "command": ["python3", "-u", "-m", "bifrost", "-s"],
         "env": [{"name": "PYTHONNOUSERSITE", "value": ""}]}
    ]);
    let (_, plan) = apply(&pod(v), &resource());
    assert_eq!(plan.containers.len(), 4, "warned, still injected");
    assert_eq!(plan.warnings.len(), 3, "{:?}", plan.warnings);
    for (who, what) in [
        ("no-user-site", "PYTHONNOUSERSITE"),
        ("dash-s", "with -s"),
        ("isolated", "with -I"),
    ] {
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.contains(&format!("{who:?}")) && w.contains(what)),
            "{who}: {:?}",
            plan.warnings
        );
    }
    // PythonPath mode does not depend on the user site.
    let mut v = worker();
    v["spec"]["containers"][0]["command"] = json!(["python3", "-s", "-m", "bifrost"]);
    let (_, plan) = apply(&pod(v), &python_path_mode());
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}
