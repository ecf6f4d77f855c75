//! A whole pod checked with the spec's rules (tests use it on injected pods).

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::{config_key, dns_label, dns_subdomain, parse_quantity, resource_problems};

/// What the API server would refuse in `pod` (a subset of its validation: names, volumes,
/// mounts, resources, env, Secret references, emptyDir limits). Empty when fine.
pub fn pod_problems(pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return vec!["spec: missing".into()];
    };
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("spec.volumes[{i}]");
        if let Err(m) = dns_label(&v.name) {
            out.push(format!("{f}.name: {m}"));
        }
        if !volumes.insert(v.name.as_str()) {
            out.push(format!("{f}.name: duplicate {:?}", v.name));
        }
        if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            match parse_quantity(&limit.0) {
                Ok(q) if q.nano < 0 => out.push(format!("{f}.emptyDir.sizeLimit: negative")),
                Ok(_) => {}
                Err(m) => out.push(format!("{f}.emptyDir.sizeLimit: {m}")),
            }
        }
        if let Some(cm) = &v.config_map
            && let Err(m) = dns_subdomain(&cm.name)
        {
            out.push(format!("{f}.configMap.name: {m}"));
        }
        if let Some(pvc) = &v.persistent_volume_claim
            && let Err(m) = dns_subdomain(&pvc.claim_name)
        {
            out.push(format!("{f}.persistentVolumeClaim.claimName: {m}"));
        }
    }
    let mut names = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (list, c) in all {
        let i = index.entry(list).or_default();
        let f = format!("spec.{list}[{i}]");
        *i += 1;
        if !names.insert(c.name.as_str()) {
            out.push(format!("{f}.name: duplicate {:?}", c.name));
        }
        container_problems(c, &f, &volumes, &mut out);
    }
    out
}

fn container_problems(c: &Container, f: &str, volumes: &HashSet<&str>, out: &mut Vec<String>) {
    if let Err(m) = dns_label(&c.name) {
        out.push(format!("{f}.name: {m}"));
    }
    match c.image.as_deref() {
        Some(image) if image.trim() == image && !image.is_empty() => {}
        other => out.push(format!(
            "{f}.image: {other:?} is empty or has surrounding spaces"
        )),
    }
    let mut paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            out.push(format!(
                "{f}.volumeMounts[{j}].name: no volume {:?}",
                m.name
            ));
        }
        if m.mount_path.is_empty() || !paths.insert(m.mount_path.as_str()) {
            out.push(format!(
                "{f}.volumeMounts[{j}].mountPath: {:?} empty or not unique",
                m.mount_path
            ));
        }
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        let name_ok = !e.name.is_empty()
            && !e.name.starts_with(|c: char| c.is_ascii_digit())
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            out.push(format!("{f}.env[{j}].name: {:?} is not valid", e.name));
        }
        if let Some(s) = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            if let Err(m) = dns_subdomain(&s.name) {
                out.push(format!("{f}.env[{j}].valueFrom.secretKeyRef.name: {m}"));
            }
            if let Err(m) = config_key(&s.key) {
                out.push(format!("{f}.env[{j}].valueFrom.secretKeyRef.key: {m}"));
            }
        }
    }
    if let Some(r) = &c.resources {
        for (field, m) in resource_problems(r, &[]) {
            out.push(format!("{f}.resources{field}: {m}"));
        }
    }
}
