//! Which workloads a resource reaches, as the status says it: none (`Ready=False`, reason
//! `NoWorkloads`, with a hint for the usual labelling mistake), how many run the current hash
//! (`status.workloadsUpToDate`), and which mode each one's pods were injected with. Pure
//! decisions on plain objects.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;

use super::progress::Verdict;
use crate::crd::{INJECTED_MODE_ANNOTATION, OPT_IN_LABEL};

/// A Deployment or StatefulSet, as far as opting in goes.
pub(crate) struct Workload<'a> {
    /// `Deployment` or `StatefulSet`.
    pub kind: &'static str,
    pub name: &'a str,
    /// Its own `metadata.labels`.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Its pod template's labels (`spec.template.metadata.labels`).
    pub template_labels: Option<&'a BTreeMap<String, String>>,
}

fn names(labels: Option<&BTreeMap<String, String>>, resource: &str) -> bool {
    labels.and_then(|l| l.get(OPT_IN_LABEL)).map(String::as_str) == Some(resource)
}

/// Why nothing installs `resource`'s requirements, when no workload's pod template carries the
/// opt-in label: the message of `Ready=False` (reason `NoWorkloads`). It names the workloads
/// that carry the label on their own metadata only — what Reloader-style labelling does — since
/// the webhook sees pods, which get their labels from the template. `None` when a workload opts
/// in. Stable text (sorted names), so the status is not rewritten while nothing changes.
pub(crate) fn no_workloads(resource: &str, workloads: &[Workload<'_>]) -> Option<String> {
    if workloads.iter().any(|w| names(w.template_labels, resource)) {
        return None;
    }
    let none = format!(
        "no Deployment or StatefulSet in this namespace has a pod template labelled \
         {OPT_IN_LABEL}={resource}: no pod installs these requirements"
    );
    let misplaced: BTreeSet<String> = workloads
        .iter()
        .filter(|w| names(w.labels, resource))
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    Some(match misplaced.len() {
        0 => format!("{none} (label spec.template.metadata.labels of the workers)"),
        n => format!(
            "{none}; {} {} the label on {} own metadata only: move it to \
             spec.template.metadata.labels (the webhook sees pods, which take their labels from \
             the template)",
            misplaced.into_iter().collect::<Vec<_>>().join(", "),
            if n == 1 { "carries" } else { "carry" },
            if n == 1 { "its" } else { "their" },
        ),
    })
}

/// `status.workloadsUpToDate`: how many workloads have every replica running the current hash
/// and ready, of how many (`"1/2"`).
pub(crate) fn up_to_date(verdicts: &[Verdict]) -> String {
    let done = verdicts.iter().filter(|v| **v == Verdict::UpToDate).count();
    format!("{done}/{}", verdicts.len())
}

/// `status.workloads[].mode`: the modes the webhook injected a workload's live pods with (their
/// `bifrost.io/injected-mode` annotation), sorted and comma-separated; `None` when no pod
/// carries one (none injected yet, or injected by a version that did not record it).
pub(crate) fn injected_mode<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<String> {
    let modes: BTreeSet<&str> = pods
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            p.metadata
                .annotations
                .as_ref()?
                .get(INJECTED_MODE_ANNOTATION)
                .map(String::as_str)
        })
        .collect();
    (!modes.is_empty()).then(|| modes.into_iter().collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_labelled_pod_template_is_enough() {
        let opted = labels(&[(OPT_IN_LABEL, "default"), ("app", "w")]);
        let other = labels(&[(OPT_IN_LABEL, "other")]);
        let w = |template| Workload {
            kind: "Deployment",
            name: "w",
            labels: None,
            template_labels: template,
        };
        assert_eq!(no_workloads("default", &[w(Some(&opted))]), None);
        // A template naming another resource, or none at all, does not opt in.
        for template in [Some(&other), None] {
            let message = no_workloads("default", &[w(template)]).unwrap();
            assert!(
                message.contains("pod template labelled bifrost.io/requirements=default")
                    && message.contains("label spec.template.metadata.labels"),
                "{message}"
            );
        }
        assert!(no_workloads("default", &[]).is_some());
    }

    #[test]
    fn the_label_on_the_workloads_own_metadata_is_named() {
        let opted = labels(&[(OPT_IN_LABEL, "default")]);
        let plain = labels(&[("app", "w")]);
        let workloads = [
            Workload {
                kind: "StatefulSet",
                name: "db",
                labels: Some(&opted),
                template_labels: Some(&plain),
            },
            Workload {
                kind: "Deployment",
                name: "worker",
                labels: Some(&opted),
                template_labels: None,
            },
            Workload {
                kind: "Deployment",
                name: "api",
                labels: Some(&plain),
                template_labels: Some(&plain),
            },
        ];
        let message = no_workloads("default", &workloads).unwrap();
        assert!(
            message.ends_with(
                "; Deployment/worker, StatefulSet/db carry the label on their own metadata only: \
                 move it to spec.template.metadata.labels (the webhook sees pods, which take \
                 their labels from the template)"
            ),
            "{message}"
        );
        let message = no_workloads("default", &workloads[1..]).unwrap();
        assert!(
            message.contains("; Deployment/worker carries the label on its own metadata only"),
            "{message}"
        );
        // Once the template carries it too, nothing is wrong.
        let both = Workload {
            kind: "Deployment",
            name: "worker",
            labels: Some(&opted),
            template_labels: Some(&opted),
        };
        assert_eq!(no_workloads("default", &[both]), None);
    }

    #[test]
    fn up_to_date_counts_workloads_that_run_the_hash() {
        assert_eq!(up_to_date(&[]), "0/0");
        let rolling = Verdict::RollingOut("1 of 2 replica(s) updated".into());
        assert_eq!(
            up_to_date(&[Verdict::UpToDate, rolling, Verdict::UpToDate]),
            "2/3"
        );
    }

    fn pod(mode: Option<&str>, deleted: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.annotations = mode.map(|m| labels(&[(INJECTED_MODE_ANNOTATION, m)]));
        if deleted {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        p
    }

    #[test]
    fn mode_comes_from_the_live_pods_annotation() {
        assert_eq!(injected_mode(&[] as &[Pod]), None);
        assert_eq!(injected_mode(&[pod(None, false)]), None);
        let pods = [
            pod(Some("UserBase"), false),
            pod(None, false),
            pod(Some("PythonPath"), true),
        ];
        assert_eq!(injected_mode(&pods).as_deref(), Some("UserBase"));
        let pods = [
            pod(Some("UserBase"), false),
            pod(Some("PythonPath"), false),
            pod(Some("UserBase"), false),
        ];
        assert_eq!(
            injected_mode(&pods).as_deref(),
            Some("PythonPath, UserBase")
        );
    }
}
