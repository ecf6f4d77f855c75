//! The chart on the real API server (kube-apiserver and kube-controller-manager 1.20.2, RBAC on):
//! every object it renders passes a server-side dry run; `helm install` (Helm 3 and Helm 4)
//! creates the CRD, RBAC, Deployment, Services and webhook configuration, its NOTES paste as
//! printed, and `helm uninstall` removes them (the CRD stays, as Helm does with `crds/`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use bifrost_requirements::crd::WorkspaceRequirements;

use common::helm::*;
use common::k8s::control_plane;
use common::operator::{wait_crd_served, wait_for};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::ReplicaSet;
use kube::api::{Api, ListParams};

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
    // Releases of their own, installed and uninstalled here, with each Helm.
    install_and_uninstall(&client, Helm::Three, "second").await;
    install_and_uninstall(&client, Helm::Four, "fourth").await;
}

/// `helm install RELEASE` creates every object (NOTES pasted as printed, once: they create a
/// resource of a fixed name), `helm uninstall` removes them all but the CRD.
async fn install_and_uninstall(client: &kube::Client, helm: Helm, release: &str) {
    let client = client.clone();
    let ns = create_namespace(&client, "helm").await;
    let chart = chart_arg();
    let out = ok(helm.cluster(&["install", release, &chart, "--namespace", &ns]));
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
    if helm == Helm::Three {
        notes_paste_as_printed(&client, &out).await;
    }
    let fullname = format!("{release}-bifrost-requirements");
    let fullname = fullname.as_str();
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
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={release}")))
            .await
            .ok()?;
        (!rs.items.is_empty()).then_some(())
    })
    .await;

    let out = ok(helm.cluster(&["uninstall", release, "--namespace", &ns]));
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
    let list = ok(helm.cluster(&["list", "--namespace", &ns, "-q"]));
    assert!(list.trim().is_empty(), "{list}");
}

/// NOTES.txt's commands, pasted as printed (every line at the left margin, prose left out):
/// they run in bash against the cluster, and the heredoc's resource and the Secret exist after.
async fn notes_paste_as_printed(client: &kube::Client, install_output: &str) {
    let notes = install_output
        .split_once("NOTES:\n")
        .expect("helm install prints NOTES")
        .1;
    let prose = |l: &str| {
        let numbered = l
            .split_once(". ")
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok());
        let indented =
            l.starts_with("   ") && l[3..].starts_with(|c: char| c.is_alphabetic() || c == '(');
        numbered || indented || l.starts_with("bifrost-requirements ")
    };
    let script: Vec<&str> = notes.lines().filter(|l| !prose(l)).collect();
    assert!(
        !script
            .iter()
            .any(|l| l.contains("<namespace>") || l.contains("<worker>")),
        "placeholders to edit before pasting:\n{notes}"
    );
    let kubectl_dir = kubectl_program()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let path = format!(
        "{}:{}",
        kubectl_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-c", &script.join("\n")])
        .env("PATH", path)
        .env("KUBECONFIG", &control_plane().kubeconfig)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let log = text(&out);
    assert!(!log.contains("syntax error"), "{log}");
    assert!(
        log.contains("secret/bifrost-redis created"),
        "NOTES' Secret:\n{log}"
    );
    assert!(
        log.contains("workspacerequirements.bifrost.io/default created"),
        "NOTES' resource:\n{log}"
    );
    let wsreq = Api::<WorkspaceRequirements>::namespaced(client.clone(), "default")
        .get("default")
        .await
        .unwrap();
    assert_eq!(wsreq.spec.content, "requests==2.32.3\n");
}
