//! The committed CRD YAML is exactly what `bifrost-requirements crd` prints.

mod common;

use bifrost_requirements::crd::crd_yaml;

#[test]
fn committed_crd_matches_the_generator() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crds/workspacerequirements.bifrost.io.yaml");
    let committed =
        std::fs::read_to_string(&path).expect("crds/workspacerequirements.bifrost.io.yaml");
    assert!(
        committed == crd_yaml(),
        "{} is stale: regenerate it with `cargo run -- crd > {}`",
        path.display(),
        path.display()
    );
    let out = common::cli(&["crd"], &[]);
    common::assert_ok(&out);
    assert_eq!(common::stdout(&out), committed);
}

#[test]
fn crd_names_follow_the_contract() {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    assert_eq!(yaml["metadata"]["name"], "workspacerequirements.bifrost.io");
    assert_eq!(yaml["spec"]["names"]["plural"], "workspacerequirements");
    assert_eq!(yaml["spec"]["names"]["kind"], "WorkspaceRequirements");
    assert_eq!(yaml["spec"]["names"]["shortNames"][0], "wsreq");
    assert_eq!(yaml["spec"]["scope"], "Namespaced");
    let version = &yaml["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(columns, ["Hash", "Packages", "Ready", "Age"]);
}
