//! The two init containers: bootstrap (copies the binary and uv out of the operator's image) and
//! install (runs `bifrost-requirements install` in the worker's image).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PodSpec, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::volumes::mount;
use super::{
    BIN_DIR, BIN_VOLUME, BOOTSTRAP_CONTAINER, CACHE_DIR, CACHE_VOLUME, INSTALL_CONTAINER,
    NON_ROOT_UID, OPERATOR_BINARY, SITE_PACKAGES_VOLUME, SNAPSHOT_DIR, SNAPSHOT_PAYLOAD_KEY,
    SNAPSHOT_VOLUME, Settings, WORK_DIR, WORK_VOLUME,
};
use crate::crd::{
    InstallMode, InstallSpec, Installer, WheelhouseTarget, WorkspaceRequirements, wheelhouse_target,
};
use crate::installer::{WHEELHOUSE_ACCESS_KEY_ENV, WHEELHOUSE_SECRET_KEY_ENV};

/// Environment variables copied from the worker container into the install container, so it
/// reaches the package index the same way the worker would.
const PASSED_ENV: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The user and group a container asks to run as (either may be unset).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct RunAs {
    uid: Option<i64>,
    gid: Option<i64>,
}

impl RunAs {
    /// What the pod asks for (bootstrap runs so) and what the worker container asks for, its own
    /// settings over the pod's (install runs so: installed files belong to the worker's user).
    pub(super) fn of(spec: &PodSpec, worker: &Container) -> (RunAs, RunAs) {
        let pod_sc = spec.security_context.as_ref();
        let pod = RunAs {
            uid: pod_sc.and_then(|s| s.run_as_user),
            gid: pod_sc.and_then(|s| s.run_as_group),
        };
        let worker_sc = worker.security_context.as_ref();
        let worker = RunAs {
            uid: worker_sc.and_then(|s| s.run_as_user).or(pod.uid),
            gid: worker_sc.and_then(|s| s.run_as_group).or(pod.gid),
        };
        (pod, worker)
    }
}

pub(super) fn bootstrap(settings: &Settings, user: RunAs) -> Container {
    Container {
        name: BOOTSTRAP_CONTAINER.into(),
        image: Some(settings.operator_image.clone()),
        image_pull_policy: settings.operator_image_pull_policy.clone(),
        command: Some(vec![OPERATOR_BINARY.into()]),
        args: Some(vec!["bootstrap".into(), "--to".into(), BIN_DIR.into()]),
        env: Some(vec![log_format(settings)]),
        volume_mounts: Some(vec![mount(BIN_VOLUME, BIN_DIR, false)]),
        resources: Some(bootstrap_resources()),
        security_context: Some(restricted(user)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// Where the install container installs to and what it caches.
pub(super) struct InstallTarget<'a> {
    pub mount_path: &'a str,
    pub hash: &'a str,
    /// Whether the download cache volume is mounted.
    pub cache: bool,
}

pub(super) fn install(
    resource: &WorkspaceRequirements,
    worker: &Container,
    target: &InstallTarget<'_>,
    (settings, user): (&Settings, RunAs),
    warnings: &mut Vec<String>,
) -> Container {
    let install = &resource.spec.install;
    let (image, image_pull_policy) = install_image(install, worker);
    let mut mounts = vec![
        mount(BIN_VOLUME, BIN_DIR, true),
        mount(SITE_PACKAGES_VOLUME, target.mount_path, false),
        mount(SNAPSHOT_VOLUME, SNAPSHOT_DIR, true),
        mount(WORK_VOLUME, WORK_DIR, false),
    ];
    if target.cache {
        mounts.push(mount(CACHE_VOLUME, CACHE_DIR, false));
    }
    Container {
        name: INSTALL_CONTAINER.into(),
        image,
        image_pull_policy,
        command: Some(vec![format!("{BIN_DIR}/bifrost-requirements")]),
        args: Some(install_args(resource, target)),
        env: Some(install_env(resource, worker, target, settings)),
        volume_mounts: Some(mounts),
        resources: Some(resources_or_default(install, warnings)),
        security_context: Some(restricted(user)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    }
}

/// The image `spec.install.image` names, else the worker's own with its pull policy (the same
/// pull behaviour as the worker when it is the worker's image).
fn install_image(install: &InstallSpec, worker: &Container) -> (Option<String>, Option<String>) {
    match install.image.as_deref().map(str::trim) {
        Some(image) if !image.is_empty() => (Some(image.to_string()), None),
        _ => (worker.image.clone(), worker.image_pull_policy.clone()),
    }
}

/// `spec.install.resources` when the API server would accept them, else the defaults (with a
/// warning).
fn resources_or_default(install: &InstallSpec, warnings: &mut Vec<String>) -> ResourceRequirements {
    let Some(r) = &install.resources else {
        return install_resources();
    };
    match crate::spec::resource_problems(r, &[]).first() {
        None => r.clone(),
        Some((field, why)) => {
            warnings.push(format!(
                "spec.install.resources{field}: {why}; using the default resources"
            ));
            install_resources()
        }
    }
}

/// `install` arguments; flag names are the installer's contract (see `cli::InstallArgs`). Every
/// value is joined to its flag (`--flag=value`), so no value can be read as a flag.
fn install_args(resource: &WorkspaceRequirements, target: &InstallTarget<'_>) -> Vec<String> {
    let install = &resource.spec.install;
    let flag = |name: &str, value: &str| format!("--{name}={value}");
    let into = match install.mode {
        // The install container asks the worker's interpreter for its user site under the base.
        InstallMode::UserBase => "user-base",
        InstallMode::PythonPath => "target",
    };
    let mut args: Vec<String> = vec![
        "install".into(),
        flag(into, target.mount_path),
        flag("installer", install.installer.name()),
    ];
    if install.installer == Installer::Uv {
        args.push(flag("uv", &format!("{BIN_DIR}/uv")));
    }
    args.extend([flag("expected-hash", target.hash)]);
    if let Some(digest) = recorded_lock(resource, target.hash) {
        args.push(flag("lock-sha256", digest));
    }
    args.extend([
        flag("on-failure", install.on_failure.name()),
        flag(
            "fallback-file",
            &format!("{SNAPSHOT_DIR}/{SNAPSHOT_PAYLOAD_KEY}"),
        ),
    ]);
    if let Some(redis) = resource.spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        args.push(flag("redis-key", &redis.key));
    }
    let mut urls = install
        .index_urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty());
    if let Some(first) = urls.next() {
        args.push(flag("index-url", first));
    }
    for extra in urls {
        args.push(flag("extra-index-url", extra));
    }
    if install.only_binary {
        args.push("--only-binary".into());
    }
    if target.cache {
        args.push(flag("cache-dir", CACHE_DIR));
    }
    if let Some(w) = wheelhouse(resource, target.hash) {
        args.push(flag(
            "wheelhouse",
            &format!("s3://{}/{}", w.bucket, w.prefix),
        ));
        args.push(flag("wheelhouse-region", &w.region));
        if let Some(endpoint) = &w.endpoint {
            args.push(flag("wheelhouse-endpoint", endpoint));
        }
        if w.path_style {
            args.push("--wheelhouse-path-style".into());
        }
    }
    args
}

/// The wheelhouse the pod installs from: only with a lock of the content it is admitted for
/// (a wheelhouse holds one lock's files) and a spec the webhook can read (validation reports
/// a bad one; the pod then installs from the index).
fn wheelhouse(resource: &WorkspaceRequirements, hash: &str) -> Option<WheelhouseTarget> {
    recorded_lock(resource, hash)?;
    wheelhouse_target(&resource.spec).ok().flatten()
}

/// The digest of the lock the controller recorded for the content the pod is admitted for
/// (`status.lock.sha256`): `install` refuses a lock of that content that hashes otherwise. None
/// while the status records no lock of this content (pods resolve, or it is not resolved yet).
fn recorded_lock<'a>(resource: &'a WorkspaceRequirements, hash: &str) -> Option<&'a str> {
    let lock = resource.status.as_ref()?.lock.as_ref()?;
    let digest = lock.sha256.trim();
    (crate::requirements::hashes_equal(&lock.content_hash, hash) && !digest.is_empty())
        .then_some(digest)
}

/// `BIFROST_LOG_FORMAT`: the operator's own format (the container's stderr is not a terminal,
/// so it writes no colour codes either way).
fn log_format(settings: &Settings) -> EnvVar {
    EnvVar {
        name: "BIFROST_LOG_FORMAT".into(),
        value: Some(settings.log_format.name().into()),
        value_from: None,
    }
}

fn install_env(
    resource: &WorkspaceRequirements,
    worker: &Container,
    target: &InstallTarget<'_>,
    settings: &Settings,
) -> Vec<EnvVar> {
    let literal = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let mut env = Vec::new();
    if let Some(redis) = resource.spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        let r = &redis.url_secret_ref;
        env.push(secret_env("REDIS_URL", &r.name, &r.key));
    }
    if let Some(creds) = wheelhouse(resource, target.hash).and_then(|w| w.credentials) {
        for (name, key) in [
            (WHEELHOUSE_ACCESS_KEY_ENV, &creds.access_key_id_key),
            (WHEELHOUSE_SECRET_KEY_ENV, &creds.secret_access_key_key),
        ] {
            env.push(secret_env(name, &creds.name, key));
        }
    }
    // The root filesystem is read-only: everything the installer writes goes to volumes.
    env.push(log_format(settings));
    env.push(literal("HOME", WORK_DIR.into()));
    env.push(literal("TMPDIR", WORK_DIR.into()));
    env.push(literal("XDG_CACHE_HOME", format!("{WORK_DIR}/cache")));
    if !target.cache {
        env.push(literal("UV_CACHE_DIR", format!("{WORK_DIR}/cache/uv")));
    }
    for e in worker.env.as_deref().unwrap_or_default() {
        if PASSED_ENV.contains(&e.name.as_str()) && !env.iter().any(|x| x.name == e.name) {
            env.push(e.clone());
        }
    }
    env
}

/// `name` from the Secret's `key`. Optional: a missing Secret must not keep the pod from
/// starting (the snapshot serves without Redis, the index without the wheelhouse).
fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(true),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// The restricted security context of both init containers. A non-root uid asked for is kept,
/// so installed files belong to the worker's user and Python can write `__pycache__` next to
/// them; no uid (or root) becomes [`NON_ROOT_UID`]: the init containers never run as root.
fn restricted(user: RunAs) -> SecurityContext {
    let (run_as_user, run_as_group) = match user.uid {
        Some(u) if u != 0 => (Some(u), None),
        _ => (
            Some(NON_ROOT_UID),
            if user.gid.is_none() {
                Some(NON_ROOT_UID)
            } else {
                None
            },
        ),
    };
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            add: None,
            drop: Some(vec!["ALL".into()]),
        }),
        privileged: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user,
        run_as_group,
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

pub(super) fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// Default resources of the install container (`spec.install.resources` replaces them).
pub(crate) fn install_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "256Mi")])),
        limits: Some(quantities(&[("cpu", "2"), ("memory", "2Gi")])),
        ..ResourceRequirements::default()
    }
}

/// Resources of the bootstrap container (it copies two files).
fn bootstrap_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
        limits: Some(quantities(&[("cpu", "200m"), ("memory", "64Mi")])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests;
