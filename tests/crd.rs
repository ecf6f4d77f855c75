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
    assert_eq!(
        columns,
        ["Hash", "Packages", "Workloads", "Ready", "Reason", "Age"]
    );
    assert_eq!(yaml["spec"]["names"]["categories"][0], "bifrost");
}

/// Every field `kubectl explain` can show has a description written for it (none empty, none
/// of the derive's boilerplate), including the fields' items.
#[test]
fn every_field_is_described_for_kubectl_explain() {
    fn walk(node: &serde_yaml::Value, path: &str, missing: &mut Vec<String>) {
        let text = node["description"].as_str().unwrap_or("");
        if text.trim().is_empty() || text.contains("Auto-generated") {
            missing.push(path.to_string());
        }
        if let Some(props) = node["properties"].as_mapping() {
            for (name, child) in props {
                walk(
                    child,
                    &format!("{path}.{}", name.as_str().unwrap()),
                    missing,
                );
            }
        }
        if node["items"]["properties"].is_mapping() {
            walk(&node["items"], &format!("{path}[]"), missing);
        }
    }
    let yaml: serde_yaml::Value = serde_yaml::from_str(&crd_yaml()).unwrap();
    let schema = &yaml["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut missing = Vec::new();
    walk(schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
    let spec = &schema["properties"]["spec"]["properties"];
    // It sets the install container's resources; the bootstrap container keeps its own.
    let resources = spec["install"]["properties"]["resources"]["description"]
        .as_str()
        .unwrap();
    assert!(
        resources.contains("of the install container") && !resources.contains("init containers"),
        "{resources}"
    );
    let status = &schema["properties"]["status"]["properties"];
    assert!(status["workloadsUpToDate"]["type"] == "string");
    assert!(status["workloads"]["items"]["properties"]["mode"]["description"].is_string());
}
