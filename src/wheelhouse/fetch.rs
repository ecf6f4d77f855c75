//! The package index as a fill reads it: a pin's page, then the files it links, each from an
//! origin the operator allows and nowhere else.
//!
//! - **Origins**: a file is fetched only from an index's own origin or one of the allowed ones
//!   (PyPI serves its files from `files.pythonhosted.org`); a link elsewhere, or a `file://`
//!   one, is refused naming it, and a redirect is followed only within its origin
//!   ([`crate::s3::same_origin_redirects`]).
//! - **Credentials**: an index URL's `user:password` is taken out of the URL and sent as basic
//!   auth only to that index's origin; messages show the index redacted and every text of the
//!   HTTP client is scrubbed of it.
//! - **Limits**: a page is read up to [`MAX_PAGE_BYTES`], a file up to
//!   [`super::MAX_FILE_BYTES`], each wait for bytes up to the timeout.

use std::time::Duration;

use bytes::Bytes;
use url::Url;

use super::page::{self, Listed};
use super::{MAX_FILE_BYTES, dist, layout};
use crate::egress::{self, Origin};
use crate::error::{Error, Result};
use crate::lock::Pinned;
use crate::redact;

/// Larger pages are refused: PyPI's page of a project with thousands of files is a few MiB.
pub const MAX_PAGE_BYTES: u64 = 16 * 1024 * 1024;

/// One index, its credentials apart.
struct Index {
    /// Without userinfo, ending in `/`.
    url: Url,
    /// Redacted, for messages.
    shown: String,
    origin: Origin,
    credentials: Option<(String, String)>,
    /// As given, to scrub texts of every form of its secrets.
    given: String,
}

/// An HTTP client for the package indexes of one lock.
pub struct Fetcher {
    client: reqwest::Client,
    indexes: Vec<Index>,
    /// The indexes' origins and the allowed file origins.
    allowed: Vec<Origin>,
    timeout: Duration,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self.indexes.iter().map(|i| i.shown.as_str()).collect();
        f.debug_struct("Fetcher")
            .field("indexes", &shown)
            .field("allowed", &self.allowed)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The files of one pin that one index offers.
pub(super) struct Offer {
    /// The index, redacted.
    pub index: String,
    pub files: Vec<Candidate>,
}

/// A file of a pin's project and version, on an allowed origin.
#[derive(Debug, Clone)]
pub(super) struct Candidate {
    pub name: String,
    /// Without userinfo.
    pub url: Url,
    /// What the page says its SHA-256 is (already among the pin's), if it says.
    pub sha256: Option<String>,
}

/// A file's body as it arrives.
pub(super) struct Body<'a> {
    fetcher: &'a Fetcher,
    index: &'a str,
    name: &'a str,
    response: reqwest::Response,
    read: u64,
}

impl Fetcher {
    /// A client for `index_urls` (in the order they are tried; `user:password` in one is sent
    /// to its origin only) that fetches files from their origins and `allowed_origins`;
    /// `timeout` bounds each page and each wait for a file's bytes.
    pub fn new(
        index_urls: &[String],
        allowed_origins: Vec<Origin>,
        timeout: Duration,
    ) -> Result<Fetcher> {
        if index_urls.is_empty() {
            return Err(Error::Config("the wheelhouse needs an index URL".into()));
        }
        if timeout.is_zero() {
            return Err(Error::Config(
                "the package index timeout must be above zero".into(),
            ));
        }
        let indexes = index_urls
            .iter()
            .map(|u| index(u))
            .collect::<Result<Vec<_>>>()?;
        let mut allowed = allowed_origins;
        for index in &indexes {
            if !allowed.contains(&index.origin) {
                allowed.push(index.origin.clone());
            }
        }
        // reqwest has no crypto provider of its own here: the process's (ring).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .user_agent(concat!("bifrost-requirements/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .read_timeout(timeout)
            .referer(false)
            .redirect(crate::s3::same_origin_redirects())
            .build()
            .map_err(|e| Error::Config(format!("the package index client: {e}")))?;
        Ok(Fetcher {
            client,
            indexes,
            allowed,
            timeout,
        })
    }

    /// The indexes, redacted, in the order they are tried.
    pub fn indexes(&self) -> Vec<String> {
        self.indexes.iter().map(|i| i.shown.clone()).collect()
    }

    /// The files of `pin`'s release on the first index that lists any: its name and version,
    /// a hash among the pin's where the page gives one. A candidate link to an origin files may
    /// not come from is an error naming it.
    pub(super) async fn offer(&self, pin: &Pinned) -> Result<Offer> {
        let mut unreachable = None;
        for index in &self.indexes {
            let listed = match self.page(index, pin).await {
                Ok(Some(listed)) => listed,
                Ok(None) => continue,
                Err(e @ Error::IndexUnreachable { .. }) => {
                    unreachable.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let files = self.candidates(index, pin, listed)?;
            if !files.is_empty() {
                let index = index.shown.clone();
                return Ok(Offer { index, files });
            }
        }
        Err(unreachable.unwrap_or_else(|| Error::PackageIndex {
            index: self.indexes().join(", "),
            reason: format!(
                "{} (lock line {}): no index lists a file of this release",
                pin.pin(),
                pin.line
            ),
        }))
    }

    /// The files `index`'s page of `pin` lists; `None` when the index has no such project.
    async fn page(&self, index: &Index, pin: &Pinned) -> Result<Option<Vec<Listed>>> {
        let url = index
            .url
            .join(&format!("{}/", pin.name))
            .map_err(|e| self.refused(index, format!("{}: {e}", pin.pin())))?;
        let request = self.get(&url).header(reqwest::header::ACCEPT, page::ACCEPT);
        let mut response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| self.unreachable(index, &e))?;
        let status = response.status();
        if matches!(status.as_u16(), 404 | 410) {
            return Ok(None);
        }
        if status.is_server_error() || status.as_u16() == 429 {
            let reason = format!("GET {} answered {status}", redact::url(url.as_str()));
            return Err(self.unreachable_because(index, reason));
        }
        if !status.is_success() {
            let reason = format!("{}: GET {url} answered {status}", pin.pin());
            return Err(self.refused(index, reason));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/html")
            .to_string();
        let base = response.url().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.unreachable(index, &e))?
        {
            if (body.len() + chunk.len()) as u64 > MAX_PAGE_BYTES {
                let reason = format!(
                    "{}: the page {url} is over {MAX_PAGE_BYTES} bytes",
                    pin.pin()
                );
                return Err(self.refused(index, reason));
            }
            body.extend_from_slice(&chunk);
        }
        page::files(&body, &content_type, &base)
            .map(Some)
            .map_err(|why| self.refused(index, format!("{}: {url}: {why}", pin.pin())))
    }

    /// The files of `listed` that are `pin`'s release and may be among its files.
    fn candidates(
        &self,
        index: &Index,
        pin: &Pinned,
        listed: Vec<Listed>,
    ) -> Result<Vec<Candidate>> {
        let mut out: Vec<Candidate> = Vec::new();
        for file in listed {
            if !dist::is_file_of(&file.name, &pin.name, &pin.version)
                || layout::file_name(&file.name).is_err()
                || out.iter().any(|c| c.name == file.name)
            {
                continue;
            }
            if let Some(hash) = &file.sha256
                && !pin.hashes.contains(&format!("sha256:{hash}"))
            {
                continue;
            }
            let link = |why: String| {
                let reason = format!("{}: the page links {}{why}; refused", pin.pin(), file.name);
                self.refused(index, reason)
            };
            let mut url = file.url.map_err(|why| link(format!(": {why}")))?;
            if let Err(why) = self.may_fetch(&url) {
                return Err(link(format!(" at {} ({why})", redact::url(url.as_str()))));
            }
            // Credentials come from the index URLs, never from a page.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            out.push(Candidate {
                name: file.name,
                url,
                sha256: file.sha256,
            });
        }
        Ok(out)
    }

    /// Why `url` may not be fetched, if it may not.
    fn may_fetch(&self, url: &Url) -> std::result::Result<(), String> {
        if url.scheme() == "file" {
            return Err("a file:// link: files come from the index, never the local disk".into());
        }
        match egress::origin(url.as_str()) {
            Some(origin) if self.allowed.contains(&origin) => Ok(()),
            _ => Err(format!(
                "another origin: files are fetched only from {}",
                self.allowed
                    .iter()
                    .map(|(s, h, p)| format!("{s}://{h}:{p}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// Start downloading `file`, offered by the index shown as `index`.
    pub(super) async fn open<'a>(
        &'a self,
        index: &'a str,
        file: &'a Candidate,
    ) -> Result<Body<'a>> {
        let shown = || redact::url(file.url.as_str());
        let response = self
            .get(&file.url)
            .send()
            .await
            .map_err(|e| Error::IndexUnreachable {
                index: index.to_string(),
                reason: format!("{}: {}", file.name, self.scrub(&crate::s3::describe(&e))),
            })?;
        let status = response.status();
        if !status.is_success() {
            let reason = format!("{}: GET {} answered {status}", file.name, shown());
            return Err(match status.is_server_error() {
                true => Error::IndexUnreachable {
                    index: index.into(),
                    reason,
                },
                false => Error::PackageIndex {
                    index: index.into(),
                    reason,
                },
            });
        }
        if let Some(size) = response.content_length().filter(|s| *s > MAX_FILE_BYTES) {
            return Err(Error::PackageIndex {
                index: index.into(),
                reason: format!(
                    "{}: {size} bytes, over the limit of {MAX_FILE_BYTES}",
                    file.name
                ),
            });
        }
        Ok(Body {
            fetcher: self,
            index,
            name: &file.name,
            response,
            read: 0,
        })
    }

    /// A GET of `url`, with the credentials of the index whose origin it is, if any.
    fn get(&self, url: &Url) -> reqwest::RequestBuilder {
        let request = self.client.get(url.clone());
        let origin = egress::origin(url.as_str());
        let credentials = self
            .indexes
            .iter()
            .filter(|i| Some(&i.origin) == origin.as_ref())
            .find_map(|i| i.credentials.as_ref());
        match credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    fn unreachable(&self, index: &Index, e: &reqwest::Error) -> Error {
        self.unreachable_because(index, crate::s3::describe(e))
    }

    fn unreachable_because(&self, index: &Index, reason: String) -> Error {
        Error::IndexUnreachable {
            index: index.shown.clone(),
            reason: self.scrub(&reason),
        }
    }

    fn refused(&self, index: &Index, reason: String) -> Error {
        Error::PackageIndex {
            index: index.shown.clone(),
            reason: self.scrub(&reason),
        }
    }

    /// `text` without any index's secrets, in any form.
    fn scrub(&self, text: &str) -> String {
        self.indexes
            .iter()
            .fold(text.to_string(), |t, i| redact::scrub(&t, &i.given))
    }
}

impl Body<'_> {
    /// The next bytes of the file; `None` at its end.
    pub(super) async fn next(&mut self) -> Result<Option<Bytes>> {
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|e| Error::IndexUnreachable {
                index: self.index.to_string(),
                reason: format!(
                    "{}: {}",
                    self.name,
                    self.fetcher.scrub(&crate::s3::describe(&e))
                ),
            })?;
        if let Some(chunk) = &chunk {
            self.read += chunk.len() as u64;
            if self.read > MAX_FILE_BYTES {
                return Err(Error::PackageIndex {
                    index: self.index.to_string(),
                    reason: format!("{}: over the limit of {MAX_FILE_BYTES} bytes", self.name),
                });
            }
        }
        Ok(chunk)
    }
}

/// One index URL checked, its credentials taken out.
fn index(given: &str) -> Result<Index> {
    let shown = redact::url(given);
    let bad = |why: String| Error::Config(format!("index URL {shown:?}: {why}"));
    let mut url = Url::parse(given.trim()).map_err(|e| bad(e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http:// and https:// indexes are read".into()));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("an index URL has no query or fragment".into()));
    }
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, password) => Some((
            redact::percent_decode(user),
            redact::percent_decode(password.unwrap_or_default()),
        )),
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    let origin = egress::origin(url.as_str()).ok_or_else(|| bad("it has no host".into()))?;
    Ok(Index {
        url,
        shown,
        origin,
        credentials,
        given: given.to_string(),
    })
}
