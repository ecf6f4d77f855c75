//! The client for one object: conditional reads, and read–modify–write with conditional PUTs.

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};

use super::client::SameOrigin;
use super::config::S3Config;
use super::errors::{describe, no_such_bucket, scrub};
use super::{MAX_OBJECT_BYTES, UPDATE_ATTEMPTS};
use crate::error::{Error, Result};
use crate::redact;

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

/// What [`S3Store::update_or_mend`] does with an object it cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Fail: the change needs the current content (`add`, `remove`).
    Refuse,
    /// Replace it: the change does not read it (`set`).
    Replace,
}

/// One `GET`, the body not yet judged.
enum Raw {
    NotModified,
    NotFound,
    Found {
        etag: String,
        content: Result<String>,
    },
}

/// An unreadable object's error, saying how to mend it.
fn mend_hint(e: Error) -> Error {
    match e {
        Error::InvalidContent { location, reason } => Error::InvalidContent {
            location,
            reason: format!("{reason}; `requirements set` replaces it"),
        },
        other => other,
    }
}

/// A client for one object.
pub struct S3Store {
    pub(super) config: S3Config,
    pub(super) store: AmazonS3,
    pub(super) path: Path,
    /// Shown in messages instead of the URL the client knows.
    pub(super) endpoint_shown: String,
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
        let connect_timeout = config.timeout.min(Duration::from_secs(5));
        let options = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(connect_timeout)
            .with_allow_http(plain_http);
        // The requests themselves go through a client that stays on the endpoint's origin.
        let connector = SameOrigin {
            timeout: config.timeout,
            connect_timeout,
            allow_http: plain_http,
        };

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
            .with_client_options(options)
            .with_http_connector(connector);
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
        Ok(match self.read_raw(etag).await? {
            Raw::NotModified => Poll::NotModified,
            Raw::NotFound => Poll::NotFound,
            Raw::Found { etag, content } => Poll::Changed(Versioned {
                content: content?,
                etag,
            }),
        })
    }

    /// [`Self::read_if_changed`], keeping the ETag of an object whose content is refused (too
    /// large, not UTF-8): a writer that replaces it whole still writes on that condition.
    async fn read_raw(&self, etag: Option<&str>) -> Result<Raw> {
        let options = GetOptions {
            if_none_match: etag.map(str::to_string),
            ..GetOptions::default()
        };
        let got = match self.store.get_opts(&self.path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotModified { .. }) => return Ok(Raw::NotModified),
            // A missing bucket is a configuration problem, not a deleted file: say which.
            Err(e @ object_store::Error::NotFound { .. }) if !no_such_bucket(&describe(&e)) => {
                return Ok(Raw::NotFound);
            }
            Err(e) => return Err(self.classify("reading", e)),
        };
        let etag = got.meta.e_tag.clone().ok_or_else(|| {
            self.failed(
                "reading",
                "the server sent no ETag, so changes cannot be detected or written safely".into(),
            )
        })?;
        // Refuse a huge object before downloading it.
        if got.meta.size > MAX_OBJECT_BYTES {
            let content = Err(self.too_large(got.meta.size));
            return Ok(Raw::Found { etag, content });
        }
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.classify("reading the body of", e))?;
        // The length header is the server's word; the body is what counts.
        let content = if bytes.len() as u64 > MAX_OBJECT_BYTES {
            Err(self.too_large(bytes.len() as u64))
        } else {
            decode(&bytes).map_err(|reason| self.invalid(reason))
        };
        Ok(Raw::Found { etag, content })
    }

    /// Read–modify–write with a conditional `PutObject`. `modify` gets the current content (`""`
    /// when there is no object) and returns the new content, or `None` to leave it. It may run
    /// several times: once per lost race, each time on the content that won.
    pub async fn update<M>(&self, modify: M) -> Result<Saved>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        self.update_or_mend(Broken::Refuse, modify).await
    }

    /// [`Self::update`], where `broken` says what to do with an object that cannot be read
    /// (over [`MAX_OBJECT_BYTES`], not UTF-8): refuse, or hand `modify` `""` and replace it —
    /// for a change that does not read the current content (`requirements set`), so that the
    /// CLI can mend what it refuses to read. The PUT is still conditional on the ETag seen.
    pub async fn update_or_mend<M>(&self, broken: Broken, mut modify: M) -> Result<Saved>
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
            if let Some(saved) = self.try_update(broken, &mut modify, attempt).await? {
                return Ok(saved);
            }
        }
        Err(Error::Conflict {
            attempts: UPDATE_ATTEMPTS,
        })
    }

    /// One read–modify–write; `None` when someone else wrote (or deleted, or created) the
    /// object since it was read.
    async fn try_update<M>(
        &self,
        broken: Broken,
        modify: &mut M,
        attempt: u32,
    ) -> Result<Option<Saved>>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        let (current, mending) = self.current(broken).await?;
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
        if !mending && current.as_ref().is_some_and(|v| v.content == new) {
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

    /// The object an update starts from, and whether it is being mended: there but unreadable,
    /// so it is replaced whatever `modify` says ([`Broken::Replace`]), as `""` on its ETag.
    async fn current(&self, broken: Broken) -> Result<(Option<Versioned>, bool)> {
        match self.read_raw(None).await? {
            Raw::Found { etag, content } => match (content, broken) {
                (Ok(content), _) => Ok((Some(Versioned { content, etag }), false)),
                (Err(e), Broken::Replace) => {
                    tracing::info!(location = %self.config.location(), error = %e, "replacing an object that cannot be read");
                    let content = String::new();
                    Ok((Some(Versioned { content, etag }), true))
                }
                (Err(e), Broken::Refuse) => Err(mend_hint(e)),
            },
            Raw::NotFound => Ok((None, false)),
            Raw::NotModified => Err(self.failed(
                "reading",
                "answered 304 Not Modified to a read without a condition".into(),
            )),
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
}

/// The endpoint the client sends requests to: path-style takes the bucket from the path, virtual
/// hosting from the host name.
pub(super) fn bucket_endpoint(endpoint: &str, bucket: &str, path_style: bool) -> String {
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
pub(super) fn decode(bytes: &[u8]) -> std::result::Result<String, String> {
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
