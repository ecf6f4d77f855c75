//! What the webhook does to a pod: pure functions from (pod, resource, settings) to a JSON patch.
//!
//! No Kubernetes I/O happens here, so every rule is unit-tested on plain values:
//! - [`opt_in`] decides whether a pod is ours at all (opt-in label, excluded namespaces and the
//!   operator's own pods, already-injected pods);
//! - [`plan`] builds the RFC 6902 patch that adds the volumes, the two init containers, the
//!   packages' mount and `PYTHONUSERBASE` (mode `UserBase`, the default: the image's
//!   `PYTHONPATH`, which a webhook never sees, stays intact) or `PYTHONPATH` (mode `PythonPath`)
//!   in every app container, and the `bifrost.io/injected-hash` and `bifrost.io/injected-mode`
//!   annotations.
//!
//! The patch is written for the pod exactly as submitted: arrays and maps that are absent are
//! added whole (`/spec/initContainers`, `/metadata/annotations`, …), existing ones get `/-`
//! appends, and keys containing `/` are escaped (`bifrost.io~1injected-hash`). Applying the patch
//! and submitting the result again yields [`OptIn::AlreadyInjected`], so reinvocation
//! (`reinvocationPolicy: IfNeeded`) and re-submission never duplicate anything.
//!
//! The parts of a plan: `volumes` (what is added to the pod), `containers` (the two init
//! containers), `patch` (the operations, including the app containers' mount and variable).

mod containers;
mod patch;
mod volumes;

#[cfg(test)]
mod tests;

use json_patch::Patch;
use k8s_openapi::api::core::v1::{Pod, PodSpec};

use crate::crd::{INJECTED_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements};
use crate::telemetry::LogFormat;
use containers::{InstallTarget, RunAs};

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
const CACHE_VOLUME: &str = "bifrost-requirements-cache";

/// Every volume the webhook adds (a pod that already has one of them is left alone).
const VOLUMES: [&str; 5] = [
    BIN_VOLUME,
    SITE_PACKAGES_VOLUME,
    SNAPSHOT_VOLUME,
    WORK_VOLUME,
    CACHE_VOLUME,
];

/// Mount points inside the init containers.
const BIN_DIR: &str = "/bifrost-requirements/bin";
const SNAPSHOT_DIR: &str = "/bifrost-requirements/snapshot";
const WORK_DIR: &str = "/bifrost-requirements/work";
const CACHE_DIR: &str = "/bifrost-requirements/cache";
/// Where the operator image keeps the binary (`uv` lies next to it). Contract with the Dockerfile.
pub const OPERATOR_BINARY: &str = "/usr/local/bin/bifrost-requirements";
/// ConfigMap key of Bifrost's JSON payload `{"content", "hash"}`.
const SNAPSHOT_PAYLOAD_KEY: &str = "payload.json";
/// The user the init containers run as when the pod names none (or names root).
pub const NON_ROOT_UID: i64 = 65532;
/// Pods carrying this label with value [`OPERATOR_NAME`] are the operator's own: never mutated.
const NAME_LABEL: &str = "app.kubernetes.io/name";
pub const OPERATOR_NAME: &str = "bifrost-requirements";
/// Namespaces whose pods are never mutated, whatever the configuration.
const EXCLUDED_NAMESPACES: [&str; 1] = ["kube-system"];

/// The namespaces whose pods the webhook may inject. The chart's `namespaceSelector` says the
/// same, but on the `kubernetes.io/metadata.name` label, which namespaces carry only from
/// Kubernetes 1.21: before that the API server sends every labelled pod, so the webhook decides
/// itself (on every version; the selector only spares the calls).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// The operator's own namespace (its pods and the release's are never workers).
    pub own: Option<String>,
    /// More namespaces never injected (`--webhook-exclude-namespace`).
    pub excluded: Vec<String>,
    /// The one namespace the operator watches (None: all): pods elsewhere name resources the
    /// operator neither sees nor is allowed to read.
    pub watched: Option<String>,
}

impl Scope {
    /// Why pods in `namespace` are not injected, or None when they may be.
    fn excludes(&self, namespace: &str) -> Option<&'static str> {
        let named = |n: &Option<String>| n.as_deref().is_some_and(|n| !n.is_empty());
        if EXCLUDED_NAMESPACES.contains(&namespace) {
            Some("pods in kube-system are never mutated")
        } else if named(&self.own) && self.own.as_deref() == Some(namespace) {
            Some("pods in the operator's own namespace are never mutated")
        } else if self.excluded.iter().any(|n| n.trim() == namespace) {
            Some("the namespace is excluded (--webhook-exclude-namespace)")
        } else if named(&self.watched) && self.watched.as_deref() != Some(namespace) {
            Some("the operator watches another namespace only (--namespace)")
        } else {
            None
        }
    }
}

/// Operator-wide injection settings (from the `operator` command's flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of the bootstrap init container: the operator's own image.
    pub operator_image: String,
    /// `imagePullPolicy` of the bootstrap init container (None: the cluster's default).
    pub operator_image_pull_policy: Option<String>,
    /// The operator's own log format, passed to both init containers (`BIFROST_LOG_FORMAT`):
    /// one log pipeline reads the operator and the pods it injected alike.
    pub log_format: LogFormat,
    /// Where pods may be injected.
    pub scope: Scope,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            operator_image: format!("bifrost-requirements:{}", env!("CARGO_PKG_VERSION")),
            operator_image_pull_policy: Some("IfNotPresent".into()),
            log_format: LogFormat::Text,
            scope: Scope::default(),
        }
    }
}

/// Whether a pod is the webhook's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptIn<'a> {
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
pub(crate) fn opt_in<'a>(pod: &'a Pod, namespace: &str, scope: &Scope) -> OptIn<'a> {
    let meta = &pod.metadata;
    let Some(name) = meta.labels.as_ref().and_then(|l| l.get(OPT_IN_LABEL)) else {
        return OptIn::NotLabelled;
    };
    if let Some(why) = scope.excludes(namespace) {
        return OptIn::Excluded(why);
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
    /// Names of the app containers that got the mount and `PYTHONUSERBASE` or `PYTHONPATH`.
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
    let worker = spec
        .containers
        .first()
        .ok_or_else(|| NotInjected("the pod has no containers".into()))?;
    reserved_names(spec)?;
    let install = &resource.spec.install;
    let mount_path = validate_mount_path(&install.mount_path)?;
    let hash = crate::requirements::content_hash(&resource.spec.content);
    let mut warnings = Vec::new();

    let size_limit = volumes::size_limit(install, &mut warnings);
    let cache_claim = volumes::cache_claim(install);
    let volumes = volumes::volumes(resource, size_limit, cache_claim);
    let (pod_user, worker_user) = RunAs::of(spec, worker);
    let target = InstallTarget {
        mount_path,
        hash: &hash,
        cache: cache_claim.is_some(),
    };
    let init_containers = [
        containers::bootstrap(settings, pod_user),
        containers::install(
            resource,
            worker,
            &target,
            (settings, worker_user),
            &mut warnings,
        ),
    ];

    let mut ops = Vec::new();
    patch::append_all(
        &mut ops,
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volumes.iter().map(patch::to_value).collect(),
    );
    patch::append_all(
        &mut ops,
        &["spec", "initContainers"],
        spec.init_containers.is_some(),
        init_containers.iter().map(patch::to_value).collect(),
    );
    let how = patch::Interpreter {
        mode: install.mode,
        mount_path,
        python_path: &install.python_path,
    };
    let containers = patch::app_containers(&mut ops, spec, &how, &mut warnings);
    patch::marker(&mut ops, pod, &hash, install.mode);
    Ok(Plan {
        patch: Patch(ops),
        hash,
        containers,
        warnings,
    })
}

/// `mountPath` by [`crate::spec::mount_path`]'s rules; the trailing slash is dropped.
fn validate_mount_path(path: &str) -> Result<&str, NotInjected> {
    crate::spec::mount_path(path)
        .map_err(|why| NotInjected(format!("spec.install.mountPath: {why}")))
}

/// Our container names must be free in the pod: an app container already named like one of
/// them would make the API server refuse the pod ("Duplicate value").
fn reserved_names(spec: &PodSpec) -> Result<(), NotInjected> {
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
