//! The source of truth in Bifrost today: `_repo/requirements.txt` in an S3 bucket.
//!
//! Bifrost writes the object with a plain `PutObject` of the UTF-8 bytes (no metadata) and reads it
//! back whole. This module reads it byte-exact (CRLF and a missing trailing newline are kept) and
//! refuses what cannot be a requirements file (over [`MAX_OBJECT_BYTES`], or not UTF-8) instead of
//! passing on a lossy copy.
//!
//! - **Polling is cheap**: [`S3Store::read_if_changed`] sends the last ETag as `If-None-Match`, so
//!   an unchanged object costs one `304 Not Modified` and no body.
//! - **Writers lose nothing**: [`S3Store::update`] is a read–modify–write whose `PutObject` only
//!   succeeds where the object still has the ETag that was read (`If-Match`), or still does not
//!   exist (`If-None-Match: *`). A writer that loses the race (`412`, or the `409` S3 answers to
//!   concurrent conditional writes) reads again and re-applies its change after a jittered pause.
//! - **Errors say why, never the secret**: every failure maps to one of the reasons the mirror
//!   reports (`S3Unreachable`, `AccessDenied`, `NotFound`, `InvalidContent`), and texts that come
//!   from the client are scrubbed of the secret access key.
//!
//! Signing, the AWS credential chain and conditional requests come from `object_store`; nothing
//! here signs a request by hand.

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};

use crate::error::{Error, Result};
use crate::redact;

/// Where Bifrost keeps requirements.txt (`RepoStorage` prefixes `_repo/`).
pub const DEFAULT_KEY: &str = "_repo/requirements.txt";
/// Bifrost's default (`s3_region` in its settings).
pub const DEFAULT_REGION: &str = "us-east-1";
/// Larger objects are refused before their body is read: no requirements file is this big, and
/// the content travels on into a resource, Redis and a ConfigMap.
pub const MAX_OBJECT_BYTES: u64 = 1024 * 1024;
/// Per request, connecting included: a poll must fail in time for the next one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bifrost's environment names (Secret `bifrost-secrets`, ConfigMap `bifrost-config`), so that
/// `envFrom` of both works unchanged.
pub const ENV_ENDPOINT: &str = "BIFROST_S3_ENDPOINT_URL";
pub const ENV_BUCKET: &str = "BIFROST_S3_BUCKET";
pub const ENV_ACCESS_KEY: &str = "BIFROST_S3_ACCESS_KEY";
pub const ENV_SECRET_KEY: &str = "BIFROST_S3_SECRET_KEY";
pub const ENV_REGION: &str = "BIFROST_S3_REGION";

/// How often [`S3Store::update`] reads again after losing a race. Each round has one winner, so
/// this bounds how many writers can queue on the same object at once.
const UPDATE_ATTEMPTS: u32 = 50;

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
    pub fn validate(&self) -> Result<()> {
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
pub fn validate_bucket(bucket: &str) -> Result<()> {
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
pub fn validate_key(key: &str) -> Result<()> {
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

pub fn validate_region(region: &str) -> Result<()> {
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

pub fn validate_endpoint(endpoint: &str) -> Result<()> {
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

/// The object's content and the ETag it was read with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub content: String,
    /// Opaque, quotes included, exactly as the server sent it: only ever sent back.
    pub etag: String,
}

/// What a conditional read found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The object still has the ETag that was given (a `304`).
    NotModified,
    Changed(Versioned),
    /// No such object (or no such bucket): the caller keeps what it had.
    NotFound,
}

/// What an [`S3Store::update`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateOutcome {
    Created,
    Updated,
    /// The change was already there (or `modify` made none): nothing was written.
    Unchanged,
}

/// The result of an [`S3Store::update`]: what is in S3 now, as far as this writer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub outcome: UpdateOutcome,
    pub content: String,
    /// `None` only when nothing was written and there is no object.
    pub etag: Option<String>,
    /// How many times the conditional write lost a race before this result.
    pub retries: u32,
}

/// A client for one object.
pub struct S3Store {
    config: S3Config,
    store: AmazonS3,
    path: Path,
    /// Shown in messages instead of the URL the client knows.
    endpoint_shown: String,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Validate the configuration and build the client. No request is sent: an unreachable
    /// server shows on the first read.
    pub fn new(config: S3Config) -> Result<Self> {
        config.validate()?;
        // reqwest is built without a crypto provider of its own: use the process's (ring), as
        // every other TLS client here does.
        let _ = rustls::crypto::ring::default_provider().install_default();

        // Transport failures are retried by the client a little (a dropped keep-alive connection
        // is common), but not for long: the caller polls again and reports the outage.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(500),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: config.timeout,
        };
        let plain_http = config
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let options = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .with_allow_http(plain_http);

        // Without static credentials the builder starts from the environment: that is the
        // default AWS chain (static keys, web identity, pod identity, ECS, instance metadata).
        let mut builder = match &config.credentials {
            Some(c) => AmazonS3Builder::new()
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key),
            None => AmazonS3Builder::from_env(),
        };
        builder = builder
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(!config.force_path_style)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .with_retry(retry)
            .with_client_options(options);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(bucket_endpoint(
                endpoint,
                &config.bucket,
                config.force_path_style,
            ));
        }
        let store = builder.build().map_err(|e| {
            Error::Config(format!(
                "S3 client for {}: {}",
                config.location(),
                scrub(&config, &e.to_string())
            ))
        })?;
        let path = Path::parse(&config.key)
            .map_err(|e| Error::Config(format!("S3 key {:?} is not valid: {e}", config.key)))?;
        let endpoint_shown = match &config.endpoint {
            Some(e) => redact::url(e),
            None => format!("AWS S3 ({})", config.region),
        };
        Ok(Self {
            config,
            store,
            path,
            endpoint_shown,
        })
    }

    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// The object as it is now; a missing object (or bucket) is [`Error::NotFound`].
    pub async fn read(&self) -> Result<Versioned> {
        match self.read_if_changed(None).await? {
            Poll::Changed(v) => Ok(v),
            Poll::NotFound => Err(self.not_found(None)),
            Poll::NotModified => Err(self.failed(
                "reading",
                "answered 304 Not Modified to a read without a condition".into(),
            )),
        }
    }

    /// One `GET`, conditional on `etag` (`If-None-Match`) when given.
    pub async fn read_if_changed(&self, etag: Option<&str>) -> Result<Poll> {
        let options = GetOptions {
            if_none_match: etag.map(str::to_string),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&self.path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotModified { .. }) => return Ok(Poll::NotModified),
            // A missing bucket is a configuration problem, not a deleted file: say which.
            Err(e @ object_store::Error::NotFound { .. }) if !no_such_bucket(&describe(&e)) => {
                return Ok(Poll::NotFound);
            }
            Err(e) => return Err(self.classify("reading", e)),
        };
        // Refuse a huge object before downloading it.
        if got.meta.size > MAX_OBJECT_BYTES {
            return Err(self.too_large(got.meta.size));
        }
        let etag = got.meta.e_tag.clone().ok_or_else(|| {
            self.failed(
                "reading",
                "the server sent no ETag, so changes cannot be detected or written safely".into(),
            )
        })?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.classify("reading the body of", e))?;
        // The length header is the server's word; the body is what counts.
        if bytes.len() as u64 > MAX_OBJECT_BYTES {
            return Err(self.too_large(bytes.len() as u64));
        }
        let content = decode(&bytes).map_err(|reason| self.invalid(reason))?;
        Ok(Poll::Changed(Versioned { content, etag }))
    }

    /// Read–modify–write with a conditional `PutObject`. `modify` gets the current content (`""`
    /// when there is no object) and returns the new content, or `None` to leave it. It may run
    /// several times: once per lost race, each time on the content that won.
    pub async fn update<M>(&self, mut modify: M) -> Result<Saved>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(crate::cache::backoff(
                    Duration::from_millis(10),
                    attempt.min(6),
                ))
                .await;
            }
            if let Some(saved) = self.try_update(&mut modify, attempt).await? {
                return Ok(saved);
            }
        }
        Err(Error::Conflict {
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// One read–modify–write; `None` when someone else wrote (or deleted, or created) the
    /// object since it was read.
    async fn try_update<M>(&self, modify: &mut M, attempt: u32) -> Result<Option<Saved>>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        let current = match self.read_if_changed(None).await? {
            Poll::Changed(v) => Some(v),
            Poll::NotFound => None,
            Poll::NotModified => {
                return Err(self.failed(
                    "reading",
                    "answered 304 Not Modified to a read without a condition".into(),
                ));
            }
        };
        let text = current.as_ref().map_or("", |v| v.content.as_str());
        let unchanged = |current: Option<Versioned>| {
            let (content, etag) =
                current.map_or((String::new(), None), |v| (v.content, Some(v.etag)));
            Saved {
                outcome: UpdateOutcome::Unchanged,
                content,
                etag,
                retries: attempt,
            }
        };
        let Some(new) = modify(text)? else {
            return Ok(Some(unchanged(current)));
        };
        if current.as_ref().is_some_and(|v| v.content == new) {
            return Ok(Some(unchanged(current)));
        }
        if new.len() as u64 > MAX_OBJECT_BYTES {
            return Err(self.invalid(format!(
                "the new content is {} bytes, over the limit of {MAX_OBJECT_BYTES} bytes (1 MiB); \
                 nothing was written",
                new.len()
            )));
        }
        let outcome = match current {
            Some(_) => UpdateOutcome::Updated,
            None => UpdateOutcome::Created,
        };
        match self.put_if_unchanged(current.as_ref(), &new).await {
            Ok(put) => Ok(Some(Saved {
                outcome,
                content: new,
                etag: put.e_tag,
                retries: attempt,
            })),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                tracing::debug!(
                    attempt,
                    location = %self.config.location(),
                    "S3 object changed concurrently; reading again"
                );
                Ok(None)
            }
            Err(e) => Err(self.classify("writing", e)),
        }
    }

    /// `PutObject` of `new`, on condition that the object is still `current` (or still absent).
    async fn put_if_unchanged(
        &self,
        current: Option<&Versioned>,
        new: &str,
    ) -> object_store::Result<object_store::PutResult> {
        let mode = match current {
            Some(v) => PutMode::Update(UpdateVersion {
                e_tag: Some(v.etag.clone()),
                version: None,
            }),
            None => PutMode::Create,
        };
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        // Bifrost's `put_object(Bucket, Key, Body)`: the bytes, no metadata, no content type.
        let payload = PutPayload::from(new.to_string().into_bytes());
        self.store.put_opts(&self.path, payload, options).await
    }

    fn classify(&self, doing: &'static str, e: object_store::Error) -> Error {
        let text = scrub(&self.config, &describe(&e));
        match e {
            object_store::Error::NotFound { .. } => self.not_found(Some(&text)),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => Error::S3AccessDenied {
                location: self.config.location(),
                reason: denial_reason(&text),
            },
            object_store::Error::Generic { ref source, .. } if is_transport(source.as_ref()) => {
                self.unreachable(text)
            }
            // After the client's retries, a 5xx means the service is down for us.
            _ if server_error(&text) => self.unreachable(text),
            _ => self.failed(doing, text),
        }
    }

    fn unreachable(&self, reason: String) -> Error {
        Error::S3Unreachable {
            endpoint: self.endpoint_shown.clone(),
            bucket: self.config.bucket.clone(),
            reason,
        }
    }

    fn not_found(&self, detail: Option<&str>) -> Error {
        let no_bucket = detail.is_some_and(no_such_bucket);
        Error::NotFound {
            what: if no_bucket { "S3 bucket" } else { "S3 object" },
            name: if no_bucket {
                self.config.bucket.clone()
            } else {
                self.config.location()
            },
        }
    }

    fn too_large(&self, size: u64) -> Error {
        self.invalid(format!(
            "{size} bytes, over the limit of {MAX_OBJECT_BYTES} bytes (1 MiB) for requirements.txt"
        ))
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidContent {
            location: self.config.location(),
            reason,
        }
    }

    fn failed(&self, doing: &'static str, reason: String) -> Error {
        Error::S3 {
            context: doing,
            location: self.config.location(),
            reason,
        }
    }
}

/// The endpoint the client sends requests to: path-style takes the bucket from the path, virtual
/// hosting from the host name.
fn bucket_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    if path_style {
        // The builder appends `/bucket` itself.
        return endpoint.to_string();
    }
    match endpoint.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{bucket}.{rest}"),
        None => endpoint.to_string(),
    }
}

/// The content as text, or why it is not requirements.txt.
fn decode(bytes: &[u8]) -> std::result::Result<String, String> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let at = e.valid_up_to();
            let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
            Err(format!(
                "not UTF-8: byte 0x{:02x} at offset {at} (line {line}) does not start a valid \
                 sequence",
                bytes[at]
            ))
        }
    }
}

/// S3 names what is missing in its error code.
fn no_such_bucket(text: &str) -> bool {
    text.contains("NoSuchBucket")
}

/// The client's error on one line: its chain of causes (the last one says "Connection refused"),
/// and S3's XML error body reduced to its code and message.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        next = cause.source();
    }
    if let Some(at) = text.find("<?xml") {
        let body = &text[at..];
        let tag = |name: &str| {
            let open = format!("<{name}>");
            let start = body.find(&open)? + open.len();
            let end = body[start..].find(&format!("</{name}>"))? + start;
            Some(body[start..end].to_string())
        };
        let summary = match (tag("Code"), tag("Message")) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code,
            _ => String::new(),
        };
        text = format!("{}{summary}", &text[..at]);
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Connection refused, DNS, TLS, timeouts: the request never got an answer.
fn is_transport(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            return matches!(
                http.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            );
        }
        if e.is::<std::io::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// The client words a final status as "status code: 503 Service Unavailable".
fn server_error(text: &str) -> bool {
    text.split("status code: ")
        .skip(1)
        .any(|rest| rest.starts_with('5'))
}

/// S3's error code (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied`) tells a wrong
/// key from a missing permission; put it first, the client's full text after.
fn denial_reason(text: &str) -> String {
    const CODES: &[(&str, &str)] = &[
        (
            "InvalidAccessKeyId",
            "the access key id is not known to the server",
        ),
        (
            "SignatureDoesNotMatch",
            "the secret access key does not match the access key id",
        ),
        ("ExpiredToken", "the credentials have expired"),
        ("InvalidToken", "the session token is not valid"),
        (
            "AccessDenied",
            "the credentials lack permission for this object",
        ),
    ];
    match CODES.iter().find(|(code, _)| text.contains(code)) {
        Some((code, meaning)) => format!("{code}: {meaning} ({text})"),
        None => text.to_string(),
    }
}

/// A client text without the secret key (the client should never print it; this makes sure) and
/// without URL credentials.
fn scrub(config: &S3Config, text: &str) -> String {
    let mut out = text.to_string();
    if let Some(c) = &config.credentials
        && c.secret_access_key.chars().count() >= 3
    {
        out = out.replace(&c.secret_access_key, redact::MASK);
        let encoded = redact::percent_encode(&c.secret_access_key);
        if encoded != c.secret_access_key {
            out = out.replace(&encoded, redact::MASK);
        }
    }
    redact::text(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn bifrost_env_gives_path_style_on_its_endpoint_with_static_keys() {
        let c = S3Config::from_bifrost_env(env(&[
            (ENV_BUCKET, "bifrost"),
            (ENV_ENDPOINT, "http://seaweedfs:8333"),
            (ENV_ACCESS_KEY, "AKIAEXAMPLE"),
            (ENV_SECRET_KEY, "s3cr3t/with+chars"),
        ]))
        .unwrap();
        assert_eq!(c.bucket, "bifrost");
        assert_eq!(c.key, DEFAULT_KEY);
        assert_eq!(c.region, DEFAULT_REGION);
        assert_eq!(c.endpoint.as_deref(), Some("http://seaweedfs:8333"));
        assert!(c.force_path_style);
        assert_eq!(
            c.credentials,
            Some(Credentials {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: "s3cr3t/with+chars".into()
            })
        );
    }

    #[test]
    fn bifrost_env_without_keys_uses_the_default_chain_and_aws() {
        let c = S3Config::from_bifrost_env(env(&[
            (ENV_BUCKET, "bifrost"),
            (ENV_REGION, "eu-west-1"),
            (ENV_ENDPOINT, ""),
            (ENV_ACCESS_KEY, " "),
        ]))
        .unwrap();
        assert_eq!(c.endpoint, None);
        assert!(!c.force_path_style);
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.credentials, None);
    }

    #[test]
    fn bifrost_env_errors_name_the_variable() {
        let e = S3Config::from_bifrost_env(env(&[])).unwrap_err();
        assert!(e.to_string().contains(ENV_BUCKET), "{e}");
        let e = S3Config::from_bifrost_env(env(&[(ENV_BUCKET, "b-1"), (ENV_ACCESS_KEY, "AK")]))
            .unwrap_err();
        assert!(e.to_string().contains(ENV_SECRET_KEY), "{e}");
        let e = S3Config::from_bifrost_env(env(&[
            (ENV_BUCKET, "b-1"),
            (ENV_SECRET_KEY, "hunter2-secret"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains(ENV_ACCESS_KEY), "{e}");
        assert!(!e.to_string().contains("hunter2-secret"), "{e}");
        let e = S3Config::from_bifrost_env(env(&[(ENV_BUCKET, "Has_Upper")])).unwrap_err();
        assert!(e.to_string().contains("Has_Upper"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let c = S3Config::new("bucket")
            .with_endpoint("https://user:urlpass@minio.example:9000")
            .with_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG");
        let shown = format!("{c:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(!shown.contains("urlpass"), "{shown}");
        assert!(shown.contains("AKIDEXAMPLE"), "{shown}");
    }

    #[test]
    fn hostile_buckets_are_refused_with_the_name_and_the_rule() {
        for (bucket, rule) in [
            ("", "3 to 63"),
            ("ab", "3 to 63"),
            (&"a".repeat(64) as &str, "3 to 63"),
            ("bucket/../other", "'/'"),
            ("bucket?acl", "'?'"),
            ("Bucket", "'B'"),
            ("buck et", "' '"),
            ("buck\net", "'\\n'"),
            ("-bucket", "start and end"),
            ("bucket.", "start and end"),
            ("a..b", "\"..\""),
            ("192.168.1.1", "IP address"),
            ("büket", "'ü'"),
        ] {
            let e = validate_bucket(bucket).unwrap_err().to_string();
            assert!(e.contains(rule), "{bucket:?}: {e}");
            assert!(e.contains(&format!("{bucket:?}")), "{bucket:?}: {e}");
        }
        for ok in ["bifrost", "my-bifrost-bucket", "a.b-c.123"] {
            validate_bucket(ok).unwrap();
        }
    }

    #[test]
    fn hostile_keys_are_refused_with_the_reason() {
        for (key, why) in [
            ("", "empty"),
            ("/_repo/requirements.txt", "empty path segment"),
            ("_repo//requirements.txt", "empty path segment"),
            ("_repo/", "empty path segment"),
            ("_repo/../secrets.txt", "\"..\""),
            ("./requirements.txt", "\".\""),
            ("_repo/req\u{0}.txt", "control character"),
            ("_repo/req\r\n.txt", "control character"),
            (&"k".repeat(1025) as &str, "1024"),
        ] {
            let e = validate_key(key).unwrap_err().to_string();
            assert!(e.contains(why), "{key:?}: {e}");
        }
        for ok in [
            DEFAULT_KEY,
            "requirements.txt",
            "a b/ü ñ/requirements (1).txt",
            "x?y#z%41",
        ] {
            validate_key(ok).unwrap();
            Path::parse(ok).unwrap();
        }
    }

    #[test]
    fn endpoints_with_credentials_or_no_scheme_are_refused_without_the_password() {
        for (endpoint, why) in [
            ("seaweedfs:8333", "http:// or https://"),
            ("ftp://host", "http:// or https://"),
            ("http://user:topsecret@host:8333", "holds credentials"),
            ("http://", "no host"),
            ("http://host:8333/?x=1", "query"),
        ] {
            let e = validate_endpoint(endpoint).unwrap_err().to_string();
            assert!(e.contains(why), "{endpoint:?}: {e}");
            assert!(!e.contains("topsecret"), "{e}");
        }
        validate_endpoint("https://s3.us-east-1.amazonaws.com").unwrap();
        validate_endpoint("http://127.0.0.1:8333/").unwrap();
    }

    #[test]
    fn virtual_hosting_puts_the_bucket_in_the_host() {
        assert_eq!(
            bucket_endpoint("https://minio.example:9000/", "b", false),
            "https://b.minio.example:9000"
        );
        assert_eq!(
            bucket_endpoint("http://seaweedfs:8333", "b", true),
            "http://seaweedfs:8333"
        );
    }

    #[test]
    fn decode_keeps_bytes_and_names_the_offset_of_bad_ones() {
        assert_eq!(decode(b"a==1\r\nb").unwrap(), "a==1\r\nb");
        assert_eq!(decode(b"").unwrap(), "");
        let e = decode(b"ok\nbad\xff\n").unwrap_err();
        assert!(e.contains("offset 6"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        assert!(e.contains("0xff"), "{e}");
        // A truncated multi-byte sequence at the end.
        let e = decode("é".as_bytes().split_last().unwrap().1).unwrap_err();
        assert!(e.contains("offset 0"), "{e}");
    }

    #[test]
    fn denial_names_the_s3_code_and_server_errors_are_recognised() {
        let r = denial_reason(
            "Server returned non-2xx status code: 403 Forbidden: <Code>SignatureDoesNotMatch</Code>",
        );
        assert!(
            r.starts_with("SignatureDoesNotMatch: the secret access key"),
            "{r}"
        );
        assert!(server_error(
            "Error performing GET in 1s - Server returned non-2xx status code: 503 Service Unavailable: "
        ));
        assert!(!server_error(
            "Server returned non-2xx status code: 400 Bad Request"
        ));
    }

    #[test]
    fn descriptions_are_one_line_with_the_s3_code_and_the_root_cause() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused",
        ));
        assert_eq!(describe(&e), "error sending request: Connection refused");
        let xml = std::io::Error::other(
            "status code: 403 Forbidden: <?xml version=\"1.0\"?>\n<Error>\n  <Code>SignatureDoesNotMatch</Code>\n  \
             <Message>The request signature we calculated does not match</Message>\n</Error>",
        );
        assert_eq!(
            describe(&xml),
            "status code: 403 Forbidden: SignatureDoesNotMatch: The request signature we calculated \
             does not match"
        );
    }

    #[test]
    fn the_store_can_be_shared_across_tasks() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<S3Store>();
    }

    #[test]
    fn scrub_masks_the_secret_raw_and_percent_encoded() {
        let c = S3Config::new("bucket").with_credentials("AK", "a/b+c=secret");
        let out = scrub(&c, "sig a/b+c=secret and a%2Fb%2Bc%3Dsecret");
        assert!(!out.contains("secret"), "{out}");
    }
}
