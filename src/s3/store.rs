//! The client for one object: conditional reads, and read–modify–write with conditional PUTs.

use std::time::Duration;

use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutMode, PutOptions, PutPayload,
    RetryConfig, UpdateVersion,
};

use super::client::SameOrigin;
use super::config::S3Config;
use super::errors::{Named, describe, no_such_bucket, scrub, too_large};
use super::{LARGE_TRANSFER_TIMEOUT, MAX_MEND_BYTES, MAX_OBJECT_BYTES, UPDATE_ATTEMPTS};
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

/// An object that is not a requirements file as it stands (not UTF-8, over [`MAX_OBJECT_BYTES`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// `s3://bucket/key`.
    pub location: String,
    /// Why it cannot be read: the reason of the [`Error::InvalidContent`] a read of it gives.
    pub reason: String,
    /// Its size in bytes: the server's word, or what was read of a body longer than announced.
    pub size: u64,
    /// Its bytes, unless it is over [`MAX_MEND_BYTES`] (then it is not downloaded).
    pub bytes: Option<Vec<u8>>,
}

impl Unreadable {
    /// The error a read of the object gives.
    pub fn error(&self) -> Error {
        Error::InvalidContent {
            location: self.location.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// What a read–modify–write starts from.
#[derive(Debug, Clone, Copy)]
pub enum Current<'a> {
    /// The content as stored (`""` when there is none).
    Text(&'a str),
    /// An object that cannot be read as requirements.txt. `modify` decides what the change can
    /// do with it: replace it (`set`), mend it line by line (`remove`), or refuse (`add`).
    Unreadable(&'a Unreadable),
}

/// One `GET`, the body not yet judged.
enum Raw {
    NotModified,
    NotFound,
    Found { etag: String, body: Body },
}

/// A body read up to a cap.
enum Body {
    Read(Vec<u8>),
    /// Over the cap, and not kept: the size announced, or what was read of a longer body.
    Over(u64),
}

/// What a read–modify–write found.
enum Start {
    Absent,
    Readable(Versioned),
    Unreadable { etag: String, object: Unreadable },
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
        let (store, endpoint_shown) = client(&config, Transfers::Small)?;
        let path = Path::parse(&config.key)
            .map_err(|e| Error::Config(format!("S3 key {:?} is not valid: {e}", config.key)))?;
        Ok(Self {
            config,
            store,
            path,
            endpoint_shown,
        })
    }

    pub(crate) fn config(&self) -> &S3Config {
        &self.config
    }

    /// What this object's failures are named by.
    fn named(&self) -> Named<'_> {
        Named {
            config: &self.config,
            endpoint_shown: &self.endpoint_shown,
        }
    }

    /// The object as it is now; a missing object (or bucket) is [`Error::NotFound`].
    pub async fn read(&self) -> Result<Versioned> {
        match self.read_if_changed(None).await? {
            Poll::Changed(v) => Ok(v),
            Poll::NotFound => Err(self.named().not_found(None)),
            Poll::NotModified => Err(self.named().failed(
                "reading",
                "answered 304 Not Modified to a read without a condition".into(),
            )),
        }
    }

    /// One `GET`, conditional on `etag` (`If-None-Match`) when given.
    pub async fn read_if_changed(&self, etag: Option<&str>) -> Result<Poll> {
        Ok(match self.read_raw(etag, MAX_OBJECT_BYTES).await? {
            Raw::NotModified => Poll::NotModified,
            Raw::NotFound => Poll::NotFound,
            Raw::Found { etag, body } => Poll::Changed(Versioned {
                content: judge(&body).map_err(|reason| self.named().invalid(reason))?,
                etag,
            }),
        })
    }

    /// One `GET` whose body is read only up to `cap` bytes (a larger one not at all), keeping
    /// the ETag of an object whose content is refused: a writer that mends or replaces it still
    /// writes on that condition.
    async fn read_raw(&self, etag: Option<&str>, cap: u64) -> Result<Raw> {
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
            Err(e) => return Err(self.named().classify("reading", e)),
        };
        let etag = got.meta.e_tag.clone().ok_or_else(|| {
            self.named().failed(
                "reading",
                "the server sent no ETag, so changes cannot be detected or written safely".into(),
            )
        })?;
        // Refuse a huge object before downloading it.
        if got.meta.size > cap {
            let body = Body::Over(got.meta.size);
            return Ok(Raw::Found { etag, body });
        }
        // The length header is the server's word; the body is what counts, and it is not read
        // past the cap.
        let mut bytes = Vec::with_capacity(got.meta.size as usize);
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| self.named().classify("reading the body of", e))?;
            let read = (bytes.len() + chunk.len()) as u64;
            if read > cap {
                return Ok(Raw::Found {
                    etag,
                    body: Body::Over(read),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let body = Body::Read(bytes);
        Ok(Raw::Found { etag, body })
    }

    /// Read–modify–write with a conditional `PutObject`. `modify` gets the current content (`""`
    /// when there is no object) and returns the new content, or `None` to leave it. It may run
    /// several times: once per lost race, each time on the content that won. An object that
    /// cannot be read is refused ([`Error::InvalidContent`]).
    pub async fn update<M>(&self, mut modify: M) -> Result<Saved>
    where
        M: FnMut(&str) -> Result<Option<String>>,
    {
        self.update_or_mend(|current| match current {
            Current::Text(text) => modify(text),
            Current::Unreadable(object) => Err(object.error()),
        })
        .await
    }

    /// [`Self::update`], where `modify` also gets an object that cannot be read (not UTF-8,
    /// over [`MAX_OBJECT_BYTES`]), with its bytes up to [`MAX_MEND_BYTES`], so that the CLI
    /// can mend what it refuses to read: a change that does not read the content replaces it
    /// (`requirements set`), `requirements remove` takes lines out of its bytes. What `modify`
    /// returns for such an object is written (`None` leaves it, and is its read error); the PUT
    /// is still conditional on the ETag seen.
    pub async fn update_or_mend<M>(&self, mut modify: M) -> Result<Saved>
    where
        M: FnMut(Current<'_>) -> Result<Option<String>>,
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
        M: FnMut(Current<'_>) -> Result<Option<String>>,
    {
        let start = self.start().await?;
        let unchanged = |content: String, etag: Option<String>| Saved {
            outcome: UpdateOutcome::Unchanged,
            content,
            etag,
            retries: attempt,
        };
        let (new, etag) = match &start {
            Start::Absent => match modify(Current::Text(""))? {
                None => return Ok(Some(unchanged(String::new(), None))),
                Some(new) => (new, None),
            },
            Start::Readable(v) => match modify(Current::Text(&v.content))? {
                Some(new) if new != v.content => (new, Some(v.etag.as_str())),
                _ => return Ok(Some(unchanged(v.content.clone(), Some(v.etag.clone())))),
            },
            Start::Unreadable { etag, object } => match modify(Current::Unreadable(object))? {
                None => return Err(object.error()),
                Some(new) => {
                    tracing::info!(location = %object.location, reason = %object.reason, "replacing an object that cannot be read");
                    (new, Some(etag.as_str()))
                }
            },
        };
        if new.len() as u64 > MAX_OBJECT_BYTES {
            return Err(self.named().invalid(format!(
                "the new content is {} bytes, over the limit of {MAX_OBJECT_BYTES} bytes (1 MiB); \
                 nothing was written",
                new.len()
            )));
        }
        let outcome = match etag {
            Some(_) => UpdateOutcome::Updated,
            None => UpdateOutcome::Created,
        };
        match self.put_if_unchanged(etag, &new).await {
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
            Err(e) => Err(self.named().classify("writing", e)),
        }
    }

    /// The object an update starts from; one that cannot be read comes with its bytes, up to
    /// [`MAX_MEND_BYTES`].
    async fn start(&self) -> Result<Start> {
        match self.read_raw(None, MAX_MEND_BYTES).await? {
            Raw::Found { etag, body } => Ok(match judge(&body) {
                Ok(content) => Start::Readable(Versioned { content, etag }),
                Err(reason) => {
                    let (size, bytes) = match body {
                        Body::Read(bytes) => (bytes.len() as u64, Some(bytes)),
                        Body::Over(size) => (size, None),
                    };
                    let location = self.config.location();
                    let object = Unreadable {
                        location,
                        reason,
                        size,
                        bytes,
                    };
                    Start::Unreadable { etag, object }
                }
            }),
            Raw::NotFound => Ok(Start::Absent),
            Raw::NotModified => Err(self.named().failed(
                "reading",
                "answered 304 Not Modified to a read without a condition".into(),
            )),
        }
    }

    /// `PutObject` of `new`, on condition that the object still has `etag` (or, without one,
    /// is still absent).
    async fn put_if_unchanged(
        &self,
        etag: Option<&str>,
        new: &str,
    ) -> object_store::Result<object_store::PutResult> {
        let mode = match etag {
            Some(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag.to_string()),
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

/// What a client's requests carry: a small object each (requirements.txt), or files of up to a
/// gigabyte (the wheelhouse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfers {
    /// Each request, body included, within `config.timeout`.
    Small,
    /// A request may take as long as its body needs; `config.timeout` bounds each wait for
    /// bytes instead (a stalled transfer fails, a slow one goes on).
    Large,
}

/// The `object_store` client for `config` (validated) and the endpoint as messages show it:
/// signing and the credential chain from the crate, requests on the endpoint's origin only.
pub(crate) fn client(config: &S3Config, transfers: Transfers) -> Result<(AmazonS3, String)> {
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
        timeout: match transfers {
            Transfers::Small => config.timeout,
            Transfers::Large => LARGE_TRANSFER_TIMEOUT,
        },
        read_timeout: (transfers == Transfers::Large).then_some(config.timeout),
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
            scrub(config, &e.to_string())
        ))
    })?;
    let endpoint_shown = match &config.endpoint {
        Some(e) => redact::url(e),
        None => format!("AWS S3 ({})", config.region),
    };
    Ok((store, endpoint_shown))
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

/// The body as requirements.txt, or why it is not one.
fn judge(body: &Body) -> std::result::Result<String, String> {
    match body {
        Body::Read(bytes) if bytes.len() as u64 <= MAX_OBJECT_BYTES => decode(bytes),
        Body::Read(bytes) => Err(too_large(bytes.len() as u64)),
        Body::Over(size) => Err(too_large(*size)),
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
