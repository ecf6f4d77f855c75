//! `spec.install.wheelhouse` and `status.wheelhouse`: the lock's files kept in storage the
//! cluster already has, so that pods install the exact lock without the public index.
//!
//! The smallest useful form is `wheelhouse: {s3: {}}` on a resource whose source is Bifrost's S3
//! object: every unset field is taken from `spec.source.s3` (bucket, endpoint, region, path
//! style, credentials), and the files go under a prefix of ours beside `_repo/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{S3CredentialsRef, WorkspaceRequirementsSpec};

/// Where the files go in the bucket when `prefix` is unset (beside Bifrost's `_repo/`).
pub const DEFAULT_PREFIX: &str = "_bifrost-requirements/wheelhouse";

/// Where the lock's files are kept for the pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WheelhouseSpec {
    /// An S3 bucket (Bifrost's own by default), under a prefix of ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<WheelhouseS3>,
}

/// The wheelhouse in S3; each unset field is taken from `spec.source.s3`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WheelhouseS3 {
    /// Bucket; default: `spec.source.s3.bucket` (required without an S3 source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Key prefix, one folder per lock under it (default `_bifrost-requirements/wheelhouse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Endpoint URL; default: `spec.source.s3.endpoint` (none: AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region; default: `spec.source.s3.region`, else `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style addressing; default: `spec.source.s3`'s, else true exactly when an endpoint
    /// is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Static credentials (read by the operator, which writes, and by the pods' install
    /// container, which reads); default: `spec.source.s3.credentialsSecretRef`, else the
    /// default AWS credential chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<S3CredentialsRef>,
}

/// An optional field's value when it holds more than blanks.
fn set(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// The wheelhouse a spec asks for, every default filled in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WheelhouseTarget {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    pub credentials: Option<S3CredentialsRef>,
}

impl WheelhouseTarget {
    /// `s3://bucket/prefix/`, for messages and the status.
    pub(crate) fn location(&self) -> String {
        format!("s3://{}/{}/", self.bucket, self.prefix)
    }
}

/// The wheelhouse `spec` asks for (`Ok(None)`: none), or why it cannot be one (naming the
/// field). Pure: the webhook, the controller and validation read the same answer.
pub(crate) fn target(spec: &WorkspaceRequirementsSpec) -> Result<Option<WheelhouseTarget>, String> {
    let Some(w) = spec.install.wheelhouse.as_ref().and_then(|w| w.s3.as_ref()) else {
        return Ok(None);
    };
    let source = spec.source.as_ref().and_then(|s| s.s3.as_ref());
    let bucket = set(&w.bucket)
        .map(str::to_string)
        .or_else(|| source.map(|s| s.bucket.clone()))
        .ok_or(
            "spec.install.wheelhouse.s3.bucket: required when spec.source.s3 does not name a \
             bucket to share",
        )?;
    let endpoint = set(&w.endpoint)
        .map(str::to_string)
        .or_else(|| source.and_then(|s| set(&s.endpoint).map(str::to_string)));
    let path_style = w
        .force_path_style
        .or_else(|| source.and_then(|s| s.force_path_style))
        .unwrap_or(endpoint.is_some());
    Ok(Some(WheelhouseTarget {
        bucket,
        prefix: set(&w.prefix)
            .unwrap_or(DEFAULT_PREFIX)
            .trim_matches('/')
            .to_string(),
        region: set(&w.region)
            .map(str::to_string)
            .or_else(|| source.map(|s| s.region.clone()))
            .unwrap_or_else(|| crate::s3::DEFAULT_REGION.into()),
        endpoint,
        path_style,
        credentials: w
            .credentials_secret_ref
            .clone()
            .or_else(|| source.and_then(|s| s.credentials_secret_ref.clone())),
    }))
}

/// The wheelhouse of the current lock, as the controller last saw it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WheelhouseStatus {
    /// `s3://bucket/prefix/<lock sha256>/`.
    pub location: String,
    /// SHA-256 of the lock whose files it holds (`status.lock.sha256`).
    pub lock_sha256: String,
    /// Whether every file of the lock is there (its manifest is written last): pods then
    /// install from it, without the index.
    pub complete: bool,
    /// Files it holds (when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// Bytes it holds (when complete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
}
