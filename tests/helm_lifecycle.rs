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
    let ns = create_namespace(client, "helm").await;
    let notes = installs_with_notes(helm, release, &ns);
    if helm == Helm::Three {
        notes_paste_as_printed(client, &notes).await;
    }
    let objects = installed_objects(release);
    for (kind, name) in &objects {
        assert!(
            exists(kind, name, scope(kind, &ns)),
            "{kind}/{name} was not created"
        );
    }
    webhook_configuration_is_stored_as_rendered(client, release, &ns).await;
    // The controller-manager runs the Deployment (pods stay Pending: no scheduler here).
    let replica_sets = Api::<ReplicaSet>::namespaced(client.clone(), &ns);
    let operator = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    wait_for("the operator's ReplicaSet", T, || async {
        let rs = replica_sets.list(&operator).await.ok()?;
        (!rs.items.is_empty()).then_some(())
    })
    .await;
    uninstall_leaves_only_the_crd(helm, release, &ns, &objects).await;
}

/// `helm install`: deployed, with NOTES that explain the opt-in label and how to check status;
/// returns what it printed.
fn installs_with_notes(helm: Helm, release: &str, ns: &str) -> String {
    let chart = chart_arg();
    let out = ok(helm.cluster(&["install", release, &chart, "--namespace", ns]));
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
    out
}

/// What `helm install RELEASE` creates, as kubectl names them: (kind, name).
fn installed_objects(release: &str) -> Vec<(&'static str, String)> {
    let fullname = format!("{release}-bifrost-requirements");
    let mut objects: Vec<_> = [
        "deployment",
        "serviceaccount",
        "role",
        "rolebinding",
        "poddisruptionbudget",
        "clusterrole",
        "clusterrolebinding",
        "mutatingwebhookconfiguration",
    ]
    .map(|kind| (kind, fullname.clone()))
    .into();
    let webhook = format!("{fullname}-webhook");
    objects.extend([
        ("service", webhook.clone()),
        ("service", format!("{fullname}-metrics")),
        ("clusterrole", webhook.clone()),
        ("clusterrolebinding", webhook),
        ("crd", CRD_NAME.to_string()),
    ]);
    objects
}

/// The namespace objects of `kind` live in: `ns`, or none for the cluster-scoped kinds.
fn scope<'a>(kind: &str, ns: &'a str) -> Option<&'a str> {
    let cluster_scoped =
        kind.starts_with("cluster") || kind == "mutatingwebhookconfiguration" || kind == "crd";
    (!cluster_scoped).then_some(ns)
}

/// Whether `kind/name` exists (in `ns`, or cluster-scoped); any answer but NotFound fails.
fn exists(kind: &str, name: &str, ns: Option<&str>) -> bool {
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
}

/// The stored webhook configuration, as the API server keeps it, calls the release's Service
/// and fails open.
async fn webhook_configuration_is_stored_as_rendered(
    client: &kube::Client,
    release: &str,
    ns: &str,
) {
    let fullname = format!("{release}-bifrost-requirements");
    let mwc = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(&fullname)
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
            ns,
            Some("/mutate"),
            Some(443)
        )
    );
    assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
}

/// `helm uninstall` removes every object it created but the CRD (as Helm does with `crds/`),
/// and the release is gone from `helm list`.
async fn uninstall_leaves_only_the_crd(
    helm: Helm,
    release: &str,
    ns: &str,
    objects: &[(&str, String)],
) {
    let out = ok(helm.cluster(&["uninstall", release, "--namespace", ns]));
    assert!(out.contains("uninstalled"), "{out}");
    for (kind, name) in objects {
        let ns = scope(kind, ns);
        let should_remain = *kind == "crd";
        wait_for(&format!("{kind}/{name} removed"), T, || async {
            (exists(kind, name, ns) == should_remain).then_some(())
        })
        .await;
    }
    let list = ok(helm.cluster(&["list", "--namespace", ns, "-q"]));
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
