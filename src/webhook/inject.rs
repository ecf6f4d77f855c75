//! What the webhook does to a pod: pure functions from (pod, resource, settings) to a JSON patch.
//!
//! No Kubernetes I/O happens here, so every rule is unit-tested on plain values:
//! - [`opt_in`] decides whether a pod is ours at all (opt-in label, excluded namespaces and the
//!   operator's own pods, already-injected pods);
//! - [`plan`] builds the RFC 6902 patch that adds the volumes, the two init containers, the
//!   site-packages mount and `PYTHONPATH` in every app container, and the
//!   `bifrost.io/injected-hash` annotation.
//!
//! The patch is written for the pod exactly as submitted: arrays and maps that are absent are
//! added whole (`/spec/initContainers`, `/metadata/annotations`, …), existing ones get `/-`
//! appends, and keys containing `/` are escaped (`bifrost.io~1injected-hash`). Applying the patch
//! and submitting the result again yields [`OptIn::AlreadyInjected`], so reinvocation
//! (`reinvocationPolicy: IfNeeded`) and re-submission never duplicate anything.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    PersistentVolumeClaimVolumeSource, Pod, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use crate::crd::{INJECTED_ANNOTATION, Installer, OPT_IN_LABEL, WorkspaceRequirements};

/// Init container that copies the static binary and `uv` into [`BIN_VOLUME`].
pub const BOOTSTRAP_CONTAINER: &str = "bifrost-requirements-bootstrap";
/// Init container that runs `install` in the worker's image.
pub const INSTALL_CONTAINER: &str = "bifrost-requirements-install";
/// `emptyDir` holding `bifrost-requirements` and `uv`.
pub const BIN_VOLUME: &str = "bifrost-requirements-bin";
/// `emptyDir` the packages are installed into; mounted into every app container.
pub const SITE_PACKAGES_VOLUME: &str = "bifrost-requirements-site-packages";
/// The ConfigMap snapshot (the installer's fallback when Redis is unreachable).
pub const SNAPSHOT_VOLUME: &str = "bifrost-requirements-snapshot";
/// `emptyDir` for the install container's HOME, TMPDIR and installer cache.
pub const WORK_VOLUME: &str = "bifrost-requirements-work";
/// The administrator's PersistentVolumeClaim for the installer's download cache.
pub const CACHE_VOLUME: &str = "bifrost-requirements-cache";

/// Every volume the webhook adds (a pod that already has one of them is left alone).
pub const VOLUMES: [&str; 5] = [
    BIN_VOLUME,
    SITE_PACKAGES_VOLUME,
    SNAPSHOT_VOLUME,
    WORK_VOLUME,
    CACHE_VOLUME,
];

/// Mount points inside the init containers.
pub const BIN_DIR: &str = "/bifrost-requirements/bin";
pub const SNAPSHOT_DIR: &str = "/bifrost-requirements/snapshot";
pub const WORK_DIR: &str = "/bifrost-requirements/work";
pub const CACHE_DIR: &str = "/bifrost-requirements/cache";
/// Where the operator image keeps the binary (`uv` lies next to it). Contract with the Dockerfile.
pub const OPERATOR_BINARY: &str = "/usr/local/bin/bifrost-requirements";
/// ConfigMap key of Bifrost's JSON payload `{"content", "hash"}`.
pub const SNAPSHOT_PAYLOAD_KEY: &str = "payload.json";
/// The user the init containers run as when the pod names none (or names root).
pub const NON_ROOT_UID: i64 = 65532;
/// Pods carrying this label with value [`OPERATOR_NAME`] are the operator's own: never mutated.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const OPERATOR_NAME: &str = "bifrost-requirements";
/// Namespaces whose pods are never mutated.
pub const EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];
/// Size limit of the binaries volume (the static binary and uv: ~60 MB).
const BIN_SIZE_LIMIT: &str = "256Mi";
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

/// Operator-wide injection settings (from the `operator` command's flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of the bootstrap init container: the operator's own image.
    pub operator_image: String,
    /// `imagePullPolicy` of the bootstrap init container (None: the cluster's default).
    pub operator_image_pull_policy: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operator_image: format!("bifrost-requirements:{}", env!("CARGO_PKG_VERSION")),
            operator_image_pull_policy: Some("IfNotPresent".into()),
        }
    }
}

/// Whether a pod is the webhook's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptIn<'a> {
    /// No `bifrost.io/requirements` label: not ours.
    NotLabelled,
    /// Labelled, but in an excluded namespace or one of the operator's own pods.
    Excluded(&'static str),
    /// Already carries the marker, our init containers or our volumes. `warning` is set when
    /// the pod looks half-injected (our volumes without our marker), which deserves a word.
    AlreadyInjected { warning: Option<String> },
    /// Mutate with the `WorkspaceRequirements` of this name in the pod's namespace.
    Requested(&'a str),
}

/// Decide whether `pod` (in `namespace`) is to be injected.
pub fn opt_in<'a>(pod: &'a Pod, namespace: &str) -> OptIn<'a> {
    let meta = &pod.metadata;
    let Some(name) = meta.labels.as_ref().and_then(|l| l.get(OPT_IN_LABEL)) else {
        return OptIn::NotLabelled;
    };
    if EXCLUDED_NAMESPACES.contains(&namespace) {
        return OptIn::Excluded("pods in kube-system are never mutated");
    }
    if meta
        .labels
        .as_ref()
        .and_then(|l| l.get(NAME_LABEL))
        .map(String::as_str)
        == Some(OPERATOR_NAME)
    {
        return OptIn::Excluded("the operator's own pods are never mutated");
    }
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
    {
        return OptIn::AlreadyInjected { warning: None };
    }
    let spec = pod.spec.as_ref();
    let has_ours = spec
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.name == BOOTSTRAP_CONTAINER || c.name == INSTALL_CONTAINER)
        });
    if has_ours {
        return OptIn::AlreadyInjected { warning: None };
    }
    if let Some(v) = spec
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| VOLUMES.contains(&v.name.as_str())))
    {
        return OptIn::AlreadyInjected {
            warning: Some(format!(
                "pod already has a volume named {} but no {INJECTED_ANNOTATION} annotation; \
                 not injecting (remove the volume from the pod template to let the webhook inject)",
                v.name
            )),
        };
    }
    OptIn::Requested(name)
}

/// The patch for one pod, and what to tell the pod's creator.
#[derive(Debug, Clone)]
pub struct Plan {
    pub patch: Patch,
    /// The content hash the pod is admitted for (the annotation's value).
    pub hash: String,
    /// Names of the app containers that got the mount and `PYTHONPATH`.
    pub containers: Vec<String>,
    /// Human-readable warnings (returned in the admission response).
    pub warnings: Vec<String>,
}

/// Why a labelled pod cannot be injected; it is then admitted unchanged with a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotInjected(pub String);

impl std::fmt::Display for NotInjected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Build the patch that injects `resource` into `pod`.
pub fn plan(
    pod: &Pod,
    resource: &WorkspaceRequirements,
    settings: &Settings,
) -> Result<Plan, NotInjected> {
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| NotInjected("the pod has no spec".into()))?;
    let first = spec
        .containers
        .first()
        .ok_or_else(|| NotInjected("the pod has no containers".into()))?;
    reserved_names(spec)?;
    let install = &resource.spec.install;
    let mount_path = validate_mount_path(&install.mount_path)?;
    let hash = crate::requirements::content_hash(&resource.spec.content);
    let mut warnings = Vec::new();

    // Volumes.
    let size_limit = match install.size_limit.trim() {
        "" => None,
        q if crate::spec::parse_quantity(q).is_ok_and(|v| v.nano > 0) => {
            Some(Quantity(q.to_string()))
        }
        q => {
            warnings.push(format!(
                "spec.install.sizeLimit {q:?} is not a positive Kubernetes quantity; the site-packages volume has no size limit"
            ));
            None
        }
    };
    let empty_dir = |limit: Option<Quantity>| EmptyDirVolumeSource {
        medium: None,
        size_limit: limit,
    };
    let mut volumes = vec![
        Volume {
            name: BIN_VOLUME.into(),
            empty_dir: Some(empty_dir(Some(Quantity(BIN_SIZE_LIMIT.into())))),
            ..Volume::default()
        },
        Volume {
            name: SITE_PACKAGES_VOLUME.into(),
            empty_dir: Some(empty_dir(size_limit.clone())),
            ..Volume::default()
        },
        Volume {
            name: SNAPSHOT_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: resource.snapshot_name(),
                // A missing snapshot must not keep the pod from starting: Redis may serve.
                optional: Some(true),
                default_mode: Some(0o444),
                items: None,
            }),
            ..Volume::default()
        },
        Volume {
            name: WORK_VOLUME.into(),
            empty_dir: Some(empty_dir(size_limit)),
            ..Volume::default()
        },
    ];
    let cache_claim = install
        .cache_volume
        .as_ref()
        .map(|c| c.claim_name.trim())
        .filter(|c| !c.is_empty());
    if let Some(claim) = cache_claim {
        volumes.push(Volume {
            name: CACHE_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: Some(false),
            }),
            ..Volume::default()
        });
    }

    // Who the init containers run as (see `init_user`).
    let pod_sc = spec.security_context.as_ref();
    let pod_uid = pod_sc.and_then(|s| s.run_as_user);
    let pod_gid = pod_sc.and_then(|s| s.run_as_group);
    let first_sc = first.security_context.as_ref();
    let worker_uid = first_sc.and_then(|s| s.run_as_user).or(pod_uid);
    let worker_gid = first_sc.and_then(|s| s.run_as_group).or(pod_gid);

    let bootstrap = Container {
        name: BOOTSTRAP_CONTAINER.into(),
        image: Some(settings.operator_image.clone()),
        image_pull_policy: settings.operator_image_pull_policy.clone(),
        command: Some(vec![OPERATOR_BINARY.into()]),
        args: Some(vec!["bootstrap".into(), "--to".into(), BIN_DIR.into()]),
        volume_mounts: Some(vec![mount(BIN_VOLUME, BIN_DIR, false)]),
        resources: Some(bootstrap_resources()),
        security_context: Some(restricted(pod_uid, pod_gid)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    let image = install
        .image
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .or_else(|| first.image.clone());
    let resources = match &install.resources {
        Some(r) => match crate::spec::resource_problems(r, &[]).first() {
            None => r.clone(),
            Some((field, why)) => {
                warnings.push(format!(
                    "spec.install.resources{field}: {why}; using the default resources"
                ));
                install_resources()
            }
        },
        None => install_resources(),
    };
    let mut install_mounts = vec![
        mount(BIN_VOLUME, BIN_DIR, true),
        mount(SITE_PACKAGES_VOLUME, mount_path, false),
        mount(SNAPSHOT_VOLUME, SNAPSHOT_DIR, true),
        mount(WORK_VOLUME, WORK_DIR, false),
    ];
    if cache_claim.is_some() {
        install_mounts.push(mount(CACHE_VOLUME, CACHE_DIR, false));
    }
    let install_container = Container {
        name: INSTALL_CONTAINER.into(),
        image,
        // Same pull behaviour as the worker when it is the worker's image.
        image_pull_policy: if install
            .image
            .as_deref()
            .is_some_and(|i| !i.trim().is_empty())
        {
            None
        } else {
            first.image_pull_policy.clone()
        },
        command: Some(vec![format!("{BIN_DIR}/bifrost-requirements")]),
        args: Some(install_args(
            resource,
            mount_path,
            &hash,
            cache_claim.is_some(),
        )),
        env: Some(install_env(resource, first, cache_claim.is_some())),
        volume_mounts: Some(install_mounts),
        resources: Some(resources),
        security_context: Some(restricted(worker_uid, worker_gid)),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };

    let mut ops: Vec<PatchOperation> = Vec::new();
    append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes.iter().map(to_value).collect(),
    );
    append_all(
        &mut ops,
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        vec![to_value(&bootstrap), to_value(&install_container)],
    );

    // App containers: mount + PYTHONPATH.
    let mut containers = Vec::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let env = c.env.as_deref().unwrap_or_default();
        // Kubernetes uses the last definition of a variable.
        let python_path = env.iter().rposition(|e| e.name == "PYTHONPATH");
        if let Some(j) = python_path
            && env[j].value_from.is_some()
        {
            warnings.push(format!(
                "container {:?} sets PYTHONPATH with valueFrom; the installed packages were not \
                 added to it (set PYTHONPATH literally, or add {mount_path} yourself)",
                c.name
            ));
            continue;
        }
        if python_path.is_none() && c.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
            warnings.push(format!(
                "container {:?} takes variables from envFrom, which may define PYTHONPATH; the \
                 injected PYTHONPATH={mount_path} replaces it (set PYTHONPATH in env to keep both)",
                c.name
            ));
        }
        if let Some(m) = c
            .volume_mounts
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|m| m.mount_path.trim_end_matches('/') == mount_path)
        {
            warnings.push(format!(
                "container {:?} already mounts volume {:?} at {mount_path} (spec.install.mountPath); \
                 the installed packages were not mounted into it",
                c.name, m.name
            ));
            continue;
        }
        let base = ["spec", "containers"];
        let idx = i.to_string();
        append_all(
            &mut ops,
            &[base[0], base[1], &idx, "volumeMounts"],
            c.volume_mounts.is_some(),
            vec![to_value(&mount(SITE_PACKAGES_VOLUME, mount_path, false))],
        );
        match python_path {
            Some(j) => {
                let old = env[j].value.as_deref().unwrap_or("");
                if !old
                    .split(':')
                    .any(|p| p.trim_end_matches('/') == mount_path)
                {
                    let new = if old.is_empty() {
                        mount_path.to_string()
                    } else {
                        format!("{mount_path}:{old}")
                    };
                    ops.push(add(
                        &[base[0], base[1], &idx, "env", &j.to_string(), "value"],
                        Value::String(new),
                    ));
                }
            }
            None => append_all(
                &mut ops,
                &[base[0], base[1], &idx, "env"],
                c.env.is_some(),
                vec![to_value(&EnvVar {
                    name: "PYTHONPATH".into(),
                    value: Some(mount_path.to_string()),
                    value_from: None,
                })],
            ),
        }
        containers.push(c.name.clone());
    }

    // The marker.
    match &pod.metadata.annotations {
        Some(_) => ops.push(add(
            &["metadata", "annotations", INJECTED_ANNOTATION],
            Value::String(hash.clone()),
        )),
        None => ops.push(add(
            &["metadata", "annotations"],
            serde_json::json!({ INJECTED_ANNOTATION: hash }),
        )),
    }

    Ok(Plan {
        patch: Patch(ops),
        hash,
        containers,
        warnings,
    })
}

/// Serializing k8s-openapi values into JSON cannot fail (no maps with non-string keys); this
/// keeps the call sites free of `unwrap`.
fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn pointer(tokens: &[&str]) -> PointerBuf {
    PointerBuf::from_tokens(tokens.iter().copied())
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: pointer(tokens),
        value,
    })
}

/// Append `items` to the array at `tokens`, creating it when absent.
fn append_all(ops: &mut Vec<PatchOperation>, tokens: &[&str], exists: bool, items: Vec<Value>) {
    if exists {
        for item in items {
            let mut path: Vec<&str> = tokens.to_vec();
            path.push("-");
            ops.push(add(&path, item));
        }
    } else {
        ops.push(add(tokens, Value::Array(items)));
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// `mountPath` by [`crate::spec::mount_path`]'s rules; the trailing slash is dropped.
fn validate_mount_path(path: &str) -> Result<&str, NotInjected> {
    crate::spec::mount_path(path)
        .map_err(|why| NotInjected(format!("spec.install.mountPath: {why}")))
}

/// Our container names must be free in the pod: an app container already named like one of
/// them would make the API server refuse the pod ("Duplicate value").
fn reserved_names(spec: &k8s_openapi::api::core::v1::PodSpec) -> Result<(), NotInjected> {
    let taken = spec
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| c.name.as_str()),
        )
        .find(|n| *n == BOOTSTRAP_CONTAINER || *n == INSTALL_CONTAINER);
    match taken {
        Some(n) => Err(NotInjected(format!(
            "the pod already has a container named {n:?}, a name the injected init containers \
             need; rename it"
        ))),
        None => Ok(()),
    }
}

/// `install` arguments; flag names are the installer's contract (see `cli::InstallArgs`). Every
/// value is joined to its flag (`--flag=value`), so no value can be read as a flag.
fn install_args(
    resource: &WorkspaceRequirements,
    target: &str,
    hash: &str,
    cache: bool,
) -> Vec<String> {
    let install = &resource.spec.install;
    let flag = |name: &str, value: &str| format!("--{name}={value}");
    let mut args: Vec<String> = vec![
        "install".into(),
        flag("target", target),
        flag("installer", install.installer.name()),
    ];
    if install.installer == Installer::Uv {
        args.push(flag("uv", &format!("{BIN_DIR}/uv")));
    }
    args.extend([
        flag("expected-hash", hash),
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
    if cache {
        args.push(flag("cache-dir", CACHE_DIR));
    }
    args
}

fn install_env(resource: &WorkspaceRequirements, worker: &Container, cache: bool) -> Vec<EnvVar> {
    let literal = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let mut env = Vec::new();
    if let Some(redis) = resource.spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        env.push(EnvVar {
            name: "REDIS_URL".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: redis.url_secret_ref.name.clone(),
                    key: redis.url_secret_ref.key.clone(),
                    // A missing Secret must not keep the pod from starting: the snapshot serves.
                    optional: Some(true),
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    // The root filesystem is read-only: everything the installer writes goes to volumes.
    env.push(literal("HOME", WORK_DIR.into()));
    env.push(literal("TMPDIR", WORK_DIR.into()));
    env.push(literal("XDG_CACHE_HOME", format!("{WORK_DIR}/cache")));
    if !cache {
        env.push(literal("UV_CACHE_DIR", format!("{WORK_DIR}/cache/uv")));
    }
    for e in worker.env.as_deref().unwrap_or_default() {
        if PASSED_ENV.contains(&e.name.as_str()) && !env.iter().any(|x| x.name == e.name) {
            env.push(e.clone());
        }
    }
    env
}

/// The restricted security context of both init containers. `uid`/`gid`: what the pod (or the
/// worker container) asks for. A non-root uid is kept, so installed files belong to the worker's
/// user and Python can write `__pycache__` next to them; no uid (or root) becomes
/// [`NON_ROOT_UID`]: the init containers never run as root.
fn restricted(uid: Option<i64>, gid: Option<i64>) -> SecurityContext {
    let (run_as_user, run_as_group) = match uid {
        Some(u) if u != 0 => (Some(u), None),
        _ => (
            Some(NON_ROOT_UID),
            if gid.is_none() {
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

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// Default resources of the install container (`spec.install.resources` replaces them).
pub fn install_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "256Mi")])),
        limits: Some(quantities(&[("cpu", "2"), ("memory", "2Gi")])),
        ..ResourceRequirements::default()
    }
}

/// Resources of the bootstrap container (it copies two files).
pub fn bootstrap_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(&[("cpu", "10m"), ("memory", "16Mi")])),
        limits: Some(quantities(&[("cpu", "200m"), ("memory", "64Mi")])),
        ..ResourceRequirements::default()
    }
}

/// Whether `s` parses as a Kubernetes quantity (see [`crate::spec::parse_quantity`]).
pub fn valid_quantity(s: &str) -> bool {
    crate::spec::valid_quantity(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        CacheSpec, CacheVolume, OnFailure, RedisCache, SecretKeyRef, WorkspaceRequirementsSpec,
    };
    use serde_json::json;

    const HASH_OF_REQUESTS: &str = "requests==2.32.3\n";

    fn resource() -> WorkspaceRequirements {
        let mut r = WorkspaceRequirements::new(
            "default",
            WorkspaceRequirementsSpec {
                content: HASH_OF_REQUESTS.into(),
                cache: Some(CacheSpec {
                    redis: Some(RedisCache {
                        url_secret_ref: SecretKeyRef {
                            name: "bifrost-redis".into(),
                            key: "url".into(),
                        },
                        key: "bifrost:requirements:content".into(),
                        ttl_seconds: 86400,
                    }),
                }),
                ..WorkspaceRequirementsSpec::default()
            },
        );
        r.metadata.namespace = Some("bifrost".into());
        r
    }

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).expect("a pod")
    }

    fn worker() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "worker-", "labels": {OPT_IN_LABEL: "default", "app": "worker"}},
            "spec": {"containers": [{"name": "worker", "image": "bifrost/worker:1.2", "imagePullPolicy": "Always"}]}
        })
    }

    fn settings() -> Settings {
        Settings {
            operator_image: "ghcr.io/example/bifrost-requirements:0.1.0".into(),
            operator_image_pull_policy: Some("IfNotPresent".into()),
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

    #[test]
    fn opt_in_rules() {
        let mut unlabelled = worker();
        unlabelled["metadata"]["labels"] = json!({"app": "worker"});
        assert_eq!(opt_in(&pod(unlabelled), "bifrost"), OptIn::NotLabelled);
        let labelled = pod(worker());
        assert_eq!(opt_in(&labelled, "bifrost"), OptIn::Requested("default"));
        assert!(matches!(
            opt_in(&labelled, "kube-system"),
            OptIn::Excluded(_)
        ));
        let mut operator = worker();
        operator["metadata"]["labels"][NAME_LABEL] = json!(OPERATOR_NAME);
        assert!(matches!(
            opt_in(&pod(operator), "bifrost"),
            OptIn::Excluded(_)
        ));
        let mut marked = worker();
        marked["metadata"]["annotations"] = json!({INJECTED_ANNOTATION: "abc"});
        assert_eq!(
            opt_in(&pod(marked), "bifrost"),
            OptIn::AlreadyInjected { warning: None }
        );
        let mut with_init = worker();
        with_init["spec"]["initContainers"] = json!([{"name": INSTALL_CONTAINER, "image": "x"}]);
        assert_eq!(
            opt_in(&pod(with_init), "bifrost"),
            OptIn::AlreadyInjected { warning: None }
        );
        let mut with_volume = worker();
        with_volume["spec"]["volumes"] = json!([{"name": SITE_PACKAGES_VOLUME, "emptyDir": {}}]);
        match opt_in(&pod(with_volume), "bifrost") {
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
        let hash = crate::requirements::content_hash(HASH_OF_REQUESTS);
        assert_eq!(plan.hash, hash);
        assert_eq!(plan.containers, ["worker"]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[INJECTED_ANNOTATION],
            hash
        );
        // The patch escapes the annotation key only when the map exists; here it was absent.
        let spec = p.spec.as_ref().unwrap();
        let names: Vec<_> = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
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

        let inits: Vec<_> = spec
            .init_containers
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(inits, [BOOTSTRAP_CONTAINER, INSTALL_CONTAINER]);
        let boot = init(&p, BOOTSTRAP_CONTAINER);
        assert_eq!(
            boot.image.as_deref(),
            Some("ghcr.io/example/bifrost-requirements:0.1.0")
        );
        assert_eq!(boot.command.as_ref().unwrap(), &[OPERATOR_BINARY]);
        assert_eq!(boot.args.as_ref().unwrap(), &["bootstrap", "--to", BIN_DIR]);
        let inst = init(&p, INSTALL_CONTAINER);
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
                "install --target=/opt/bifrost/site-packages --installer=uv --uv={BIN_DIR}/uv \
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
            env(app, "PYTHONPATH").unwrap().value.as_deref(),
            Some("/opt/bifrost/site-packages")
        );
        let m = &app.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (m.name.as_str(), m.mount_path.as_str()),
            (SITE_PACKAGES_VOLUME, "/opt/bifrost/site-packages")
        );
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
        assert!(
            paths.contains(&"/metadata/annotations/bifrost.io~1injected-hash".to_string()),
            "{paths:?}"
        );
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
        let inits: Vec<_> = spec
            .init_containers
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
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
            opt_in(&once, "bifrost"),
            OptIn::AlreadyInjected { warning: None }
        );
        // Even without the annotation (stripped by someone), the init containers are recognized.
        let mut stripped = once.clone();
        stripped.metadata.annotations = None;
        assert_eq!(
            opt_in(&stripped, "bifrost"),
            OptIn::AlreadyInjected { warning: None }
        );
    }

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
        let (p, plan) = apply(&pod(v), &resource());
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
        let (p, plan) = apply(&pod(v), &resource());
        assert!(plan.warnings.is_empty());
        let e = &p.spec.as_ref().unwrap().containers[0].env.as_ref().unwrap()[1];
        assert_eq!(e.value.as_deref(), Some("/opt/bifrost/site-packages:/app"));
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
        assert!(env(&p.spec.as_ref().unwrap().containers[0], "PYTHONPATH").is_none());
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
        let mut r = resource();
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
        assert!(args.contains("--index-url=https://pypi.example/simple --extra-index-url=https://extra.example/simple"), "{args}");
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
    fn env_from_gets_the_pythonpath_warning() {
        let mut v = worker();
        v["spec"]["containers"] = json!([
            {"name": "from-config", "image": "w", "envFrom": [{"configMapRef": {"name": "bifrost-config"}}]},
            {"name": "explicit", "image": "w", "envFrom": [{"configMapRef": {"name": "c"}}],
             "env": [{"name": "PYTHONPATH", "value": "/app"}]}
        ]);
        let (p, plan) = apply(&pod(v), &resource());
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
    fn values_that_look_like_flags_stay_values() {
        let mut r = resource();
        r.spec.cache.as_mut().unwrap().redis.as_mut().unwrap().key =
            "--bifrost-requirements".into();
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
}
