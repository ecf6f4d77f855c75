//! The `WorkspaceRequirements` custom resource (`bifrost.io/v1alpha1`).
//!
//! It mirrors Bifrost's requirements row inside the cluster: `spec.content` is requirements.txt
//! (written by the database mirror when `spec.source.database` is set, or by the user for GitOps),
//! the rest says where the Redis cache lives, how workers install, and how they roll out.
//! Field names are part of the contract (see design.md); generate the YAML with
//! `bifrost-requirements crd`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cache::{DEFAULT_KEY, DEFAULT_TTL_SECONDS};
use crate::database::{DEFAULT_ENTITY_TYPE, DEFAULT_PATH};

mod wheelhouse;

pub use wheelhouse::{
    DEFAULT_PREFIX as DEFAULT_WHEELHOUSE_PREFIX, WheelhouseS3, WheelhouseSpec, WheelhouseStatus,
};
pub(crate) use wheelhouse::{WheelhouseTarget, target as wheelhouse_target};

/// Pod and pod-template opt-in label: its value names the `WorkspaceRequirements`.
pub const OPT_IN_LABEL: &str = "bifrost.io/requirements";
/// Pod-template annotation whose change makes Kubernetes roll the workload.
pub const HASH_ANNOTATION: &str = "bifrost.io/requirements-hash";
/// Pod-template annotation beside [`HASH_ANNOTATION`]: the first 12 hex digits of the SHA-256
/// of the lock the pods install, `none` while they resolve for themselves. A template rolled
/// for another lock (or none) rolls once more when its content's lock appears (e.g. once the
/// workers' interpreter is learned); a template without it (rolled by an older operator) only on
/// a new hash, and losing a lock (pods resolve again) rolls nothing.
pub const LOCK_ANNOTATION: &str = "bifrost.io/requirements-lock";
/// Pod annotation set by the webhook: the hash the pod was admitted for.
pub const INJECTED_ANNOTATION: &str = "bifrost.io/injected-hash";
/// Pod-template annotation set by the controller to roll a workload out again when its pods
/// started without the packages (the webhook was unreachable when they were created); its value
/// is the time, as `kubectl rollout restart` sets `kubectl.kubernetes.io/restartedAt`.
pub(crate) const REINJECTED_ANNOTATION: &str = "bifrost.io/reinjected-at";
/// Pod annotation naming the [`InstallMode`] the webhook injected (`UserBase` or `PythonPath`).
pub const INJECTED_MODE_ANNOTATION: &str = "bifrost.io/injected-mode";
/// Field manager of the controller's writes.
pub(crate) const MANAGER: &str = "bifrost-requirements";
/// Field manager of the database mirror's writes to `spec.content`.
pub(crate) const MIRROR_MANAGER: &str = "bifrost-requirements-mirror";

/// Desired state: the requirements and how they reach the workers.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "bifrost.io",
    version = "v1alpha1",
    kind = "WorkspaceRequirements",
    plural = "workspacerequirements",
    shortname = "wsreq",
    namespaced,
    status = "WorkspaceRequirementsStatus",
    category = "bifrost",
    doc = "Bifrost's requirements.txt, mirrored into the cluster: the controller caches it in \
           Redis, snapshots it into a ConfigMap and rolls the Deployments and StatefulSets whose \
           pod template carries the label bifrost.io/requirements=<this name>; their pods get an \
           init container that installs the packages before the worker starts.",
    printcolumn = r#"{"name":"Hash","type":"string","jsonPath":".status.shortHash","description":"First 12 hex digits of the content's SHA-256"}"#,
    printcolumn = r#"{"name":"Packages","type":"integer","jsonPath":".status.packageCount"}"#,
    printcolumn = r#"{"name":"Workloads","type":"string","jsonPath":".status.workloadsUpToDate","description":"Labelled workloads whose replicas all run the current hash, of all labelled workloads"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","description":"Why Ready is what it is (e.g. NoWorkloads, RollingOut, InstallFailing)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRequirementsSpec {
    /// The requirements.txt the workers install, byte for byte. With `source` set the mirror
    /// writes it (edits are overwritten by the next change of the source); without, this field
    /// is the source (GitOps).
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "String::is_empty"
    )]
    #[schemars(transform = nullable_without_default)]
    pub content: String,

    /// Where `content` comes from: Bifrost's database row or its S3 object (at most one). Omit
    /// to make `content` itself the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,

    /// The Redis cache Bifrost and the workers read (`bifrost:requirements:content`). Omit to
    /// write no cache: workers then install from the ConfigMap snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheSpec>,

    /// How the injected init containers install the packages and how the worker's Python
    /// finds them.
    #[serde(default)]
    pub install: InstallSpec,

    /// When labelled workloads are rolled after the content changes.
    #[serde(default)]
    pub rollout: RolloutSpec,
}

/// The source of `spec.content`: at most one of `database` and `s3`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Kubernetes 1.20 has no CEL; a structural schema may carry `maxProperties`, which is how the
// API server itself refuses both sources at once.
#[schemars(extend("maxProperties" = 1))]
pub struct Source {
    /// Mirror Bifrost's `workspace_files` row into `spec.content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseSource>,
    /// Mirror Bifrost's S3 object (`_repo/requirements.txt`) into `spec.content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Source>,
}

/// Bifrost's requirements object in S3 (Bifrost today).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Source {
    /// Bucket name (Bifrost's `BIFROST_S3_BUCKET`).
    pub bucket: String,
    /// Object key of requirements.txt (default `_repo/requirements.txt`, where Bifrost keeps
    /// it).
    #[serde(default = "default_s3_key")]
    pub key: String,
    /// Endpoint URL (Bifrost's `BIFROST_S3_ENDPOINT_URL`, e.g. `http://seaweedfs:8333`); omit for
    /// AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region (Bifrost's `BIFROST_S3_REGION`; default `us-east-1`).
    #[serde(default = "default_s3_region")]
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`, as SeaweedFS and MinIO need); default:
    /// true when `endpoint` is set, false on AWS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Static credentials from a Secret; omit to use the default AWS credential chain (e.g. a
    /// pod identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3CredentialsRef>,
    /// Seconds between conditional reads of the object (an unchanged object costs one `304`);
    /// default 10.
    #[serde(default = "default_s3_poll")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_interval_seconds: u32,
}

impl S3Source {
    /// Path-style addressing as resolved: explicit, else on exactly when an endpoint is set.
    pub(crate) fn path_style(&self) -> bool {
        self.force_path_style
            .unwrap_or_else(|| self.endpoint.as_deref().is_some_and(|e| !e.is_empty()))
    }

    /// `s3://bucket/key`, for messages.
    pub(crate) fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// A Secret holding S3 keys, by default under Bifrost's own names (`bifrost-secrets`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3CredentialsRef {
    /// Secret name in the resource's namespace.
    pub name: String,
    /// Key of the access key id in the Secret (default `BIFROST_S3_ACCESS_KEY`).
    #[serde(default = "default_access_key_key")]
    pub access_key_id_key: String,
    /// Key of the secret access key in the Secret (default `BIFROST_S3_SECRET_KEY`).
    #[serde(default = "default_secret_key_key")]
    pub secret_access_key_key: String,
}

/// Bifrost's PostgreSQL row.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSource {
    /// Secret key holding the PostgreSQL URL (`postgresql://…`; `postgresql+asyncpg://…` works).
    pub url_secret_ref: SecretKeyRef,
    /// `workspace_files.path` of the row (default `requirements.txt`).
    #[serde(default = "default_path")]
    pub path: String,
    /// `workspace_files.entity_type` of the row (default `requirements`).
    #[serde(default = "default_entity_type")]
    pub entity_type: String,
    /// Seconds between safety-net reads of the row (default 30); changes arrive at once
    /// through LISTEN/NOTIFY when the trigger of `bifrost-requirements migrate` exists.
    #[serde(default = "default_poll")]
    #[schemars(range(min = 1, max = 86400))]
    pub poll_interval_seconds: u32,
}

/// A key of a Secret in the resource's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret, in the resource's namespace.
    pub name: String,
    /// Key inside the Secret's data whose value is used.
    pub key: String,
}

/// The cache configuration.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// Bifrost's Redis: where the controller writes `{"content", "hash"}` and the install
    /// container reads it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisCache>,
}

/// Where and how long the payload `{"content", "hash"}` is cached.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisCache {
    /// Secret key holding the Redis URL (`redis://[:password@]host:port/db`).
    pub url_secret_ref: SecretKeyRef,
    /// Redis key (default `bifrost:requirements:content`, Bifrost's).
    #[serde(default = "default_key")]
    pub key: String,
    /// Seconds the key lives (default 86400, Bifrost's); the controller rewrites it before
    /// half of it has passed.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 60, max = 31536000))]
    pub ttl_seconds: u64,
}

// One enum each for the flag, the resource field and the webhook's argv: the installer owns
// them (clap's value names and serde's spellings sit side by side there).
pub use crate::installer::{Installer, OnFailure};

/// Installation settings for the injected init container.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstallSpec {
    /// `uv` (default; bundled, fast) or `pip` (the worker's own `python3 -m pip`, as Bifrost's
    /// worker installs).
    #[serde(default)]
    pub installer: Installer,
    /// `Fail` (default): a failed install fails the init container, so a rolling update halts
    /// and the old pods keep serving. `Continue`: the worker starts with what did install.
    /// Either way one bad package fails only itself.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How the worker's Python finds the installed packages: `UserBase` (default) sets
    /// `PYTHONUSERBASE` and leaves `PYTHONPATH` alone; `PythonPath` prepends the mount to
    /// `PYTHONPATH`.
    #[serde(default)]
    pub mode: InstallMode,
    /// Where the installed packages' volume is mounted in every app container: the
    /// `PYTHONUSERBASE` (the packages go to its user site, e.g. `lib/python3.11/site-packages`),
    /// or the folder put on `PYTHONPATH` in `PythonPath` mode.
    #[serde(default = "default_mount_path")]
    pub mount_path: String,
    /// `PythonPath` mode only: folders kept on `PYTHONPATH` after the installed packages, e.g.
    /// `/app` when the image sets `ENV PYTHONPATH=/app` (image environment is invisible to the
    /// webhook, so the injected `PYTHONPATH` would hide it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub python_path: Vec<String>,
    /// Package index URLs the administrator allows: passed to the installer, and the only ones
    /// requirements.txt may select (`--index-url` lines naming another are refused). Empty: the
    /// installer's default index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub index_urls: Vec<String>,
    /// Install binary wheels only (`--only-binary :all:`): no source distribution is built in
    /// the pod.
    #[serde(default)]
    pub only_binary: bool,
    /// Image of the install container; default: the first app container's image (its
    /// `python3` must be the worker's, so the packages fit its ABI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Size limit of the `emptyDir` holding the installed packages (a quantity, default
    /// `2Gi`).
    #[serde(default = "default_size_limit")]
    pub size_limit: String,
    /// Requests and limits of the install container (the one that runs the installer; the
    /// bootstrap container that copies the binary keeps its small fixed ones). Omitted:
    /// requests cpu 100m, memory 256Mi; limits cpu 2, memory 2Gi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// A PersistentVolumeClaim for the installer's download cache, shared by the workers'
    /// pods so each does not download every package again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_volume: Option<CacheVolume>,
    /// Where requirements.txt is resolved into exact, hash-checked distributions: `Controller`
    /// (default) resolves each content once, for `python`, into the lock every pod installs
    /// (`requirements.lock` in the ConfigMap snapshot), and nothing rolls out while it cannot be
    /// resolved; `Pod` lets every pod resolve on its own (for clusters where only the workers
    /// reach the index).
    #[serde(default)]
    pub resolve: Resolve,
    /// The workers' interpreter the lock is resolved for. Unset: the operator learns it from
    /// the workers' image (a short-lived probe pod, once per image, see
    /// `status.interpreter`); until then each pod resolves for itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<Interpreter>,
    /// Keep the lock's files in storage the cluster already has (`s3`: Bifrost's bucket by
    /// default), copied once per lock by the operator: pods install the exact lock from there,
    /// the index only as a fallback, so a pod starts while the index is down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wheelhouse: Option<WheelhouseSpec>,
}

pub use crate::lock::Interpreter;

/// Who resolves requirements.txt into the distributions that are installed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Resolve {
    /// The controller, once per content and interpreter, against the index URLs the operator
    /// allows; pods install the lock with `--no-deps --require-hashes`.
    #[default]
    Controller,
    /// Each pod, when it installs (every pod may get different versions).
    Pod,
}

impl Default for InstallSpec {
    fn default() -> Self {
        Self {
            installer: Installer::default(),
            on_failure: OnFailure::default(),
            mode: InstallMode::default(),
            mount_path: default_mount_path(),
            python_path: Vec::new(),
            index_urls: Vec::new(),
            only_binary: false,
            image: None,
            size_limit: default_size_limit(),
            resources: None,
            cache_volume: None,
            resolve: Resolve::default(),
            python: None,
            wheelhouse: None,
        }
    }
}

/// How the worker's Python finds the installed packages (`bifrost.io/injected-mode` on the pod
/// says which one it got).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum InstallMode {
    /// `PYTHONUSERBASE=<mountPath>`; packages go to that interpreter's user site, which Python
    /// adds to `sys.path` itself; `PYTHONPATH` (e.g. an image's `ENV PYTHONPATH=/app`) is kept.
    #[default]
    UserBase,
    /// `PYTHONPATH=<mountPath>[:pythonPath…][:the container's literal PYTHONPATH]`; hides an
    /// image's `ENV PYTHONPATH` unless `pythonPath` lists it again.
    PythonPath,
}

impl InstallMode {
    /// The value of the `bifrost.io/injected-mode` annotation.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::UserBase => "UserBase",
            Self::PythonPath => "PythonPath",
        }
    }
}

/// A persistent download cache for the installer.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheVolume {
    /// Name of the PersistentVolumeClaim, in the pod's namespace.
    pub claim_name: String,
}

/// Rollout strategy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RolloutStrategy {
    /// Patch the pod-template hash annotation of labelled workloads.
    #[default]
    Automatic,
    /// Only report stale workloads in status.
    Manual,
}

/// How workloads follow content changes.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `Automatic` (default): patch the pod-template annotation `bifrost.io/requirements-hash`
    /// of labelled workloads, which makes Kubernetes roll them. `Manual`: only report stale
    /// workloads in status.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Seconds a new content must stay unchanged before workloads roll (default 5): a burst of
    /// edits produces one rollout.
    #[serde(default = "default_debounce")]
    #[schemars(range(min = 0, max = 3600))]
    pub debounce_seconds: u32,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            debounce_seconds: default_debounce(),
        }
    }
}

/// The condition types of [`WorkspaceRequirementsStatus::conditions`], in the order they are
/// listed: each step of a reconcile sets one, and `Ready` sums up the others. Their names are
/// API (alerts, `kubectl wait --for=condition=Ready`), written here once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConditionType {
    Valid,
    Synced,
    Resolved,
    CacheWarmed,
    Snapshotted,
    RolledOut,
    /// Not a step of `Ready`: pods fall back to the index while it is not complete.
    WheelhouseComplete,
    Ready,
}

impl ConditionType {
    /// The conditions `Ready` sums up, in the order they are listed (`Ready` after them).
    pub(crate) const STEPS: [ConditionType; 6] = [
        ConditionType::Valid,
        ConditionType::Synced,
        ConditionType::Resolved,
        ConditionType::CacheWarmed,
        ConditionType::Snapshotted,
        ConditionType::RolledOut,
    ];

    /// The condition's `type`.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ConditionType::Valid => "Valid",
            ConditionType::Synced => "Synced",
            ConditionType::Resolved => "Resolved",
            ConditionType::CacheWarmed => "CacheWarmed",
            ConditionType::Snapshotted => "Snapshotted",
            ConditionType::RolledOut => "RolledOut",
            ConditionType::WheelhouseComplete => "WheelhouseComplete",
            ConditionType::Ready => "Ready",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceRequirementsStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// SHA-256 of `spec.content` (lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// First 12 hex digits of `contentHash`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_hash: Option<String>,
    /// Requirement lines in `spec.content` (absent while it is invalid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_count: Option<i64>,
    /// RFC 3339 time of the last successful read of the database row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_from_database: Option<String>,
    /// RFC 3339 time of the last successful read of the source (database row or S3 object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced: Option<String>,
    /// The lock of the current content, when the controller resolved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockStatus>,
    /// The workers' interpreter as the operator learned it from their image, when
    /// `spec.install.python` is unset: the lock is resolved for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<InterpreterStatus>,
    /// The wheelhouse of the current lock (`spec.install.wheelhouse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wheelhouse: Option<WheelhouseStatus>,
    /// RFC 3339 time of the last Redis write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_warmed_at: Option<String>,
    /// The hash every labelled workload's ready replicas run (set once all are rolled out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_out_hash: Option<String>,
    /// Labelled workloads whose replicas all run the current hash and are ready, of all
    /// labelled workloads (e.g. `1/2`), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workloads_up_to_date: Option<String>,
    /// The Deployments and StatefulSets whose pod template carries the label
    /// `bifrost.io/requirements=<this name>`, and how far each is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadStatus>,
    /// `Valid`, `Synced`, `Resolved`, `CacheWarmed`, `Snapshotted`, `RolledOut` and `Ready`
    /// (all of them True; its reason says what is wrong otherwise, e.g. `NoWorkloads`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The lock in the ConfigMap snapshot (`requirements.lock`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LockStatus {
    /// SHA-256 of the content it was resolved from.
    pub content_hash: String,
    /// Distributions it pins (the whole dependency closure).
    pub packages: i64,
    /// RFC 3339 time it was resolved.
    pub resolved_at: String,
    /// SHA-256 of `requirements.lock` as the controller wrote it: after a restart the snapshot's
    /// lock is reused only while it still hashes to this (an edited ConfigMap is resolved anew).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sha256: String,
}

/// The workers' interpreter, learned by running their image's `python3` in a probe pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterpreterStatus {
    /// The image probed (`spec.install.image`, else the first app container's image of a
    /// labelled workload); another image is probed again.
    pub image: String,
    /// Its Python version, e.g. `3.11.2`.
    pub version: String,
    /// Its platform as uv names it, e.g. `x86_64-manylinux_2_36`.
    pub platform: String,
    /// RFC 3339 time of the probe.
    pub probed_at: String,
}

/// One labelled Deployment or StatefulSet.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    /// Its name, in the resource's namespace.
    pub name: String,
    /// The hash its pod template carries (absent when none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Its pod template carries the current hash (its pods may still be rolling).
    pub up_to_date: bool,
    /// Desired replicas (`spec.replicas`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods of this workload that run the current hash: created from the template carrying it
    /// and injected with it by the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    /// Of `updatedReplicas`, those that are ready (their install container succeeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_updated_replicas: Option<i32>,
    /// Pods of this workload (matching its selector) that lack the webhook's injection marker:
    /// they were created while the webhook was unavailable and run without the packages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninjected_pods: Option<i32>,
    /// How its injected pods find the packages, from their `bifrost.io/injected-mode`
    /// annotation: `UserBase` or `PythonPath` (`PythonPath, UserBase` while pods of both run,
    /// e.g. after `spec.install.mode` changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Packages that the install containers of this workload's current pods could not install
    /// (`name (why)`, from their termination messages): under `onFailure: Continue` the workers
    /// run without them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_packages: Option<Vec<String>>,
    /// What is wrong with this workload, when something is: its pods cannot be created (the API
    /// server's answer), a pod's install container fails (the pod, the container and its
    /// termination message), or its pod template carries a copied injection marker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// An empty string does not survive every API server's JSON decoding (1.20 sees `null`), so an
/// empty `content` is omitted when written and accepted as `null` when read.
fn nullable_without_default(schema: &mut schemars::Schema) {
    schema.remove("default");
    schema.insert("nullable".into(), true.into());
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn default_path() -> String {
    DEFAULT_PATH.into()
}
fn default_entity_type() -> String {
    DEFAULT_ENTITY_TYPE.into()
}
fn default_poll() -> u32 {
    30
}
fn default_s3_key() -> String {
    crate::s3::DEFAULT_KEY.into()
}
fn default_s3_region() -> String {
    crate::s3::DEFAULT_REGION.into()
}
fn default_s3_poll() -> u32 {
    10
}
fn default_access_key_key() -> String {
    crate::s3::ENV_ACCESS_KEY.into()
}
fn default_secret_key_key() -> String {
    crate::s3::ENV_SECRET_KEY.into()
}
fn default_key() -> String {
    DEFAULT_KEY.into()
}
fn default_ttl() -> u64 {
    DEFAULT_TTL_SECONDS
}
fn default_mount_path() -> String {
    "/opt/bifrost/site-packages".into()
}
fn default_size_limit() -> String {
    "2Gi".into()
}
fn default_debounce() -> u32 {
    5
}

/// The CRD as YAML, exactly as committed in `crds/workspacerequirements.bifrost.io.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = WorkspaceRequirements::crd();
    let yaml = serde_yaml::to_string(&crd).expect("the CRD serializes");
    format!(
        "# Generated by `bifrost-requirements crd`; do not edit (a test fails when it drifts).\n{yaml}"
    )
}

impl WorkspaceRequirements {
    /// The policy this resource asks for.
    pub(crate) fn policy(&self) -> crate::policy::Policy {
        crate::policy::Policy {
            allowed_index_urls: self.spec.install.index_urls.clone(),
            only_binary: self.spec.install.only_binary,
        }
    }

    /// Name of the owned ConfigMap snapshot (the installer's fallback).
    pub(crate) fn snapshot_name(&self) -> String {
        format!("{}-requirements", kube::ResourceExt::name_any(self))
    }
}
