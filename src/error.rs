//! The crate's single error type.

use std::path::PathBuf;

use crate::policy::Violations;
use crate::requirements::SpecError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// requirements.txt content broke the policy or could not be parsed.
    #[error("{0}")]
    Policy(#[from] Violations),

    /// Content over the one size limit ([`crate::limit`]), at any door.
    #[error("{0}")]
    TooLarge(#[from] crate::limit::TooLarge),

    /// A requirement given on the command line is not valid.
    #[error("{0}")]
    Spec(#[from] SpecError),

    /// `url` is redacted and `reason` scrubbed of the URL's secrets where both were built
    /// ([`crate::redact`]): sqlx's own texts may repeat parts of the URL.
    #[error("cannot connect to PostgreSQL at {url}: {reason}")]
    DatabaseConnect { url: String, reason: String },

    /// sqlx's text is passed through [`crate::redact::text`]: it should hold no URL, but must not
    /// be able to carry one into a status or log.
    #[error("PostgreSQL error while {context}: {}", crate::redact::text(&.source.to_string()))]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },

    /// A `workspace_files` row that cannot be used as it is.
    #[error("workspace_files row for path {path:?}: {reason}")]
    BadRow { path: String, reason: String },

    /// Optimistic concurrency gave up (the row or S3 object kept changing under us).
    #[error("requirements.txt kept changing under this write; gave up after {attempts} attempts")]
    Conflict { attempts: u32 },

    /// No answer from S3 (connection, DNS, TLS, timeout) or only server errors. `endpoint` is
    /// redacted; every text from the client is scrubbed of the secret key ([`crate::s3`]).
    #[error("cannot reach S3 at {endpoint} (bucket {bucket:?}): {reason}")]
    S3Unreachable {
        endpoint: String,
        bucket: String,
        reason: String,
    },

    /// S3 refused the credentials (unknown key id, wrong secret) or the permission.
    #[error("S3 refused access to {location}: {reason}")]
    S3AccessDenied { location: String, reason: String },

    /// Any other S3 answer that stops the operation.
    #[error("S3 error while {context} {location}: {reason}")]
    S3 {
        context: &'static str,
        location: String,
        reason: String,
    },

    /// A stored requirements.txt that cannot be used as it is (not UTF-8, too large).
    #[error("{location}: {reason}")]
    InvalidContent { location: String, reason: String },

    #[error("cannot connect to Redis at {url}: {reason}")]
    CacheConnect { url: String, reason: String },

    #[error("Redis error while {context} (key {key:?}): {reason}")]
    Cache {
        context: &'static str,
        key: String,
        reason: String,
    },

    /// A Redis value that is not Bifrost's `{"content": …, "hash": …}` or whose hash is wrong.
    #[error("Redis key {key:?} holds an unusable value: {reason}")]
    CachePayload { key: String, reason: String },

    /// The installer's fallback file (the ConfigMap snapshot) is unreadable, corrupt, or its hash
    /// does not match its content.
    #[error("fallback file {path}: {reason}")]
    Snapshot { path: PathBuf, reason: String },

    #[error("{what} {name:?} was not found")]
    NotFound { what: &'static str, name: String },

    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Invalid configuration (flags, environment, resource fields): the user can fix it there.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A Secret the resource refers to does not exist, or lacks the key (`secret` is
    /// `namespace/name`).
    #[error("Secret {secret} {}", missing_part(.key.as_deref()))]
    SecretMissing { secret: String, key: Option<String> },

    /// The webhook's serving certificate cannot be loaded, issued or stored.
    #[error("TLS: {0}")]
    Tls(String),

    /// A broken invariant (a poisoned lock): a bug, not something configuration can fix.
    #[error("internal error: {0}")]
    Internal(String),

    #[error("installation failed: {0}")]
    Install(String),

    #[error("Kubernetes API error while {context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("serialization error: {0}")]
    Serialization(String),

    /// A wheelhouse ([`crate::wheelhouse`]) without its manifest: not filled yet, or a fill was
    /// stopped. The installer falls back to the index.
    #[error("the wheelhouse {location} is not complete: {reason}")]
    WheelhouseIncomplete { location: String, reason: String },

    /// A wheelhouse that cannot be installed from as it is: a manifest that is malformed or
    /// hostile, a file whose bytes are not the ones recorded, a pin with no file.
    #[error("the wheelhouse {location} cannot be used: {reason}")]
    BadWheelhouse { location: String, reason: String },

    /// No answer from a package index (connection, timeout, a 5xx). `index` is redacted and
    /// `reason` scrubbed of its credentials.
    #[error("cannot reach the package index {index}: {reason}")]
    IndexUnreachable { index: String, reason: String },

    /// An index answer that is refused: a page that cannot be read, a link to an origin files
    /// may not come from, a file whose bytes are not the ones pinned, a pin with no file.
    #[error("package index {index}: {reason}")]
    PackageIndex { index: String, reason: String },
}

impl Error {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source: Box::new(source),
        }
    }

    /// Short machine-friendly label, used in metrics and Kubernetes condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Policy(_) | Self::Spec(_) => "InvalidRequirements",
            Self::TooLarge(_) => "TooLarge",
            Self::DatabaseConnect { .. } => "DatabaseUnreachable",
            Self::Database { .. } => "DatabaseError",
            Self::BadRow { .. } => "BadDatabaseRow",
            Self::Conflict { .. } => "Conflict",
            Self::S3Unreachable { .. } => "S3Unreachable",
            Self::S3AccessDenied { .. } => "AccessDenied",
            Self::S3 { .. } => "S3Error",
            Self::InvalidContent { .. } => "InvalidContent",
            Self::CacheConnect { .. } => "RedisUnreachable",
            Self::Cache { .. } => "RedisError",
            Self::CachePayload { .. } => "BadRedisPayload",
            Self::Snapshot { .. } => "BadSnapshot",
            Self::NotFound { .. } => "NotFound",
            Self::Io { .. } => "IoError",
            Self::Config(_) => "InvalidConfiguration",
            Self::SecretMissing { .. } => "SecretMissing",
            Self::Tls(_) => "TlsError",
            Self::Internal(_) => "InternalError",
            Self::Install(_) => "InstallFailed",
            Self::Kube { .. } => "KubernetesError",
            Self::Serialization(_) => "SerializationError",
            Self::WheelhouseIncomplete { .. } => "WheelhouseIncomplete",
            Self::BadWheelhouse { .. } => "BadWheelhouse",
            Self::IndexUnreachable { .. } => "IndexUnreachable",
            Self::PackageIndex { .. } => "PackageIndexError",
        }
    }

    /// Process exit code for the CLI (documented in `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Policy(_) | Self::Spec(_) | Self::Config(_) | Self::NotFound { .. } => 2,
            // Input to fix, as a policy violation is, whichever door it came by.
            Self::TooLarge(_) => 2,
            // The resource names a Secret that is not there: input to fix, like a bad flag.
            Self::SecretMissing { .. } => 2,
            Self::DatabaseConnect { .. } | Self::Database { .. } | Self::BadRow { .. } => 3,
            Self::Conflict { .. } => 3,
            // S3 is the other home of the source of truth: the same code as PostgreSQL.
            Self::S3Unreachable { .. } | Self::S3AccessDenied { .. } | Self::S3 { .. } => 3,
            Self::InvalidContent { .. } => 3,
            Self::CacheConnect { .. } | Self::Cache { .. } | Self::CachePayload { .. } => 4,
            Self::Snapshot { .. } => 4,
            Self::Install(_) => 5,
            // What an install is delivered from: its failure is the install's.
            Self::WheelhouseIncomplete { .. } | Self::BadWheelhouse { .. } => 5,
            Self::IndexUnreachable { .. } | Self::PackageIndex { .. } => 5,
            Self::Io { .. } | Self::Kube { .. } | Self::Serialization(_) => 1,
            Self::Tls(_) | Self::Internal(_) => 1,
        }
    }
}

fn missing_part(key: Option<&str>) -> String {
    match key {
        None => "does not exist".into(),
        Some(key) => format!("has no key {key:?}"),
    }
}

/// A URL fit for logs and messages; kept for callers written before [`crate::redact`].
pub(crate) fn redact_url(url: &str) -> String {
    crate::redact::url(url)
}

#[cfg(test)]
mod tests {
    use super::{Error, redact_url};

    #[test]
    fn causes_keep_their_own_reason_and_exit_code() {
        let missing = Error::SecretMissing {
            secret: "ns/redis".into(),
            key: None,
        };
        assert_eq!(missing.to_string(), "Secret ns/redis does not exist");
        let no_key = Error::SecretMissing {
            secret: "ns/redis".into(),
            key: Some("url".into()),
        };
        assert_eq!(no_key.to_string(), "Secret ns/redis has no key \"url\"");
        assert_eq!((no_key.reason(), no_key.exit_code()), ("SecretMissing", 2));
        let tls = Error::Tls("no PEM certificate found".into());
        assert_eq!((tls.reason(), tls.exit_code()), ("TlsError", 1));
        let bug = Error::Internal("certificate lock poisoned".into());
        assert_eq!((bug.reason(), bug.exit_code()), ("InternalError", 1));
        // Real configuration errors stay exit code 2.
        let config = Error::Config("--target must not be empty".into());
        assert_eq!(
            (config.reason(), config.exit_code()),
            ("InvalidConfiguration", 2)
        );
    }

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgresql://bifrost:s3cret@db:5432/bifrost?sslmode=require"),
            "postgresql://bifrost:***@db:5432/bifrost?sslmode=require"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
