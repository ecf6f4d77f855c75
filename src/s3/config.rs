//! Where the object lives and how to reach it, checked before any request is sent.

use super::{
    DEFAULT_KEY, DEFAULT_REGION, DEFAULT_TIMEOUT, ENV_ACCESS_KEY, ENV_BUCKET, ENV_ENDPOINT,
    ENV_REGION, ENV_SECRET_KEY,
};
use crate::error::{Error, Result};
use crate::redact;
use std::time::Duration;

/// Static credentials. `Debug` shows the key id (an identifier, as in AWS's own logs), never the
/// secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact::MASK)
            .finish()
    }
}

/// Where requirements.txt lives and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    pub key: String,
    /// `None`: AWS itself (`https://s3.<region>.amazonaws.com`, or `AWS_ENDPOINT` of the default
    /// chain's environment).
    pub endpoint: Option<String>,
    pub region: String,
    /// `https://host/bucket/key` instead of `https://bucket.host/key`: what SeaweedFS, MinIO and
    /// most self-hosted stores need, so the default when an endpoint is set.
    pub force_path_style: bool,
    /// `None`: the default AWS credential chain (`AWS_ACCESS_KEY_ID`…, web identity, EKS pod
    /// identity, ECS, instance metadata).
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .field("endpoint", &self.endpoint.as_deref().map(redact::url))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("credentials", &self.credentials)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl S3Config {
    /// Bifrost's object in `bucket` on AWS, with the default credential chain.
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            key: DEFAULT_KEY.into(),
            endpoint: None,
            region: DEFAULT_REGION.into(),
            force_path_style: false,
            credentials: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A self-hosted or explicit endpoint; switches to path-style addressing (set
    /// `force_path_style` afterwards to undo that).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self.force_path_style = true;
        self
    }

    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some(Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        });
        self
    }

    /// The configuration Bifrost's own processes use, from its environment names. `lookup` is
    /// `std::env::var(..).ok()` in a process, a map in tests. Empty values count as unset (a
    /// ConfigMap key left blank), so Bifrost's defaults apply.
    pub fn from_bifrost_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let bucket = get(ENV_BUCKET).ok_or_else(|| {
            Error::Config(format!(
                "{ENV_BUCKET} is not set (the bucket holding requirements.txt)"
            ))
        })?;
        let mut config = Self::new(bucket.trim());
        if let Some(endpoint) = get(ENV_ENDPOINT) {
            config = config.with_endpoint(endpoint.trim());
        }
        if let Some(region) = get(ENV_REGION) {
            config.region = region.trim().to_string();
        }
        config.credentials = match (get(ENV_ACCESS_KEY), get(ENV_SECRET_KEY)) {
            (Some(id), Some(secret)) => Some(Credentials {
                access_key_id: id.trim().to_string(),
                secret_access_key: secret,
            }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(Error::Config(format!(
                    "{ENV_ACCESS_KEY} is set but {ENV_SECRET_KEY} is not: set both, or neither to use \
                     the default AWS credential chain"
                )));
            }
            (None, Some(_)) => {
                return Err(Error::Config(format!(
                    "{ENV_SECRET_KEY} is set but {ENV_ACCESS_KEY} is not: set both, or neither to use \
                     the default AWS credential chain"
                )));
            }
        };
        config.validate()?;
        Ok(config)
    }

    /// `s3://bucket/key`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    /// Refuse what S3 would refuse, or read as something else, before any request is sent.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_bucket(&self.bucket)?;
        validate_key(&self.key)?;
        validate_region(&self.region)?;
        if let Some(endpoint) = &self.endpoint {
            validate_endpoint(endpoint)?;
        }
        if let Some(c) = &self.credentials {
            if c.access_key_id.is_empty() || c.access_key_id.chars().any(|ch| ch.is_control()) {
                return Err(Error::Config(
                    "S3 access key id is empty or holds control characters".into(),
                ));
            }
            if c.secret_access_key.is_empty() {
                return Err(Error::Config("S3 secret access key is empty".into()));
            }
        }
        if self.timeout.is_zero() {
            return Err(Error::Config("S3 timeout must be above zero".into()));
        }
        Ok(())
    }
}

/// AWS's rules for bucket names: 3–63 characters of lowercase letters, digits, `.` and `-`,
/// starting and ending with a letter or digit, no `..`, not an IPv4 address. Anything else would
/// not reach the bucket meant (a `/` changes the path, a `?` the query).
pub(crate) fn validate_bucket(bucket: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Config(format!(
            "S3 bucket name {bucket:?} is not valid: {why}"
        )))
    };
    if !(3..=63).contains(&bucket.len()) {
        return bad("it must be 3 to 63 characters long");
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return bad(&format!(
            "{c:?} is not allowed (lowercase letters, digits, '.' and '-' only)"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(bucket.chars().next()) || !edge_ok(bucket.chars().last()) {
        return bad("it must start and end with a letter or digit");
    }
    if bucket.contains("..") {
        return bad("it must not contain \"..\"");
    }
    if bucket.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("it must not be an IP address");
    }
    Ok(())
}

/// Keys are sent as URL paths: segments that are empty, `.` or `..` would be normalised away by a
/// proxy or server and name another object, and control characters cannot be sent at all.
pub(crate) fn validate_key(key: &str) -> Result<()> {
    let bad = |why: String| Err(Error::Config(format!("S3 key {key:?} is not valid: {why}")));
    if key.is_empty() {
        return bad("it is empty".into());
    }
    if key.len() > 1024 {
        return bad(format!("{} bytes exceed S3's limit of 1024", key.len()));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return bad(format!("control character {c:?}"));
    }
    if let Some(seg) = key
        .split('/')
        .find(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return bad(if seg.is_empty() {
            "an empty path segment (leading, trailing or doubled '/')".into()
        } else {
            format!("a {seg:?} path segment")
        });
    }
    Ok(())
}

pub(crate) fn validate_region(region: &str) -> Result<()> {
    if region.is_empty()
        || !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::Config(format!(
            "S3 region {region:?} is not valid (letters, digits and '-' only, e.g. us-east-1)"
        )));
    }
    Ok(())
}

pub(crate) fn validate_endpoint(endpoint: &str) -> Result<()> {
    let shown = redact::url(endpoint);
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or_else(|| {
            Error::Config(format!(
                "S3 endpoint {shown:?} must start with http:// or https://"
            ))
        })?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(Error::Config(format!(
            "S3 endpoint {shown:?} holds credentials: give them as the access key and secret \
             key, not in the URL"
        )));
    }
    if authority.is_empty() || endpoint.chars().any(|c| c.is_control() || c == ' ') {
        return Err(Error::Config(format!(
            "S3 endpoint {shown:?} has no host or holds spaces or control characters"
        )));
    }
    if rest.contains(['?', '#']) {
        return Err(Error::Config(format!(
            "S3 endpoint {shown:?} must not have a query or fragment"
        )));
    }
    Ok(())
}
