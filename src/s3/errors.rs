//! What an S3 failure means, in words that never carry the secret.

use super::MAX_OBJECT_BYTES;
use super::client::RedirectRefused;
use super::config::S3Config;
use crate::error::Error;
use crate::redact;

/// What one object's failures are named by: its location and its endpoint as shown (never the
/// URL the client knows, which may carry a secret).
pub(crate) struct Named<'a> {
    pub(crate) config: &'a S3Config,
    pub(crate) endpoint_shown: &'a str,
}

impl Named<'_> {
    pub(crate) fn classify(&self, doing: &'static str, e: object_store::Error) -> Error {
        let text = scrub(self.config, &describe(&e));
        if let Some(refused) = refused_redirect(&e) {
            return self.failed(doing, format!("{}: {refused}", self.endpoint_shown));
        }
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

    pub(super) fn unreachable(&self, reason: String) -> Error {
        Error::S3Unreachable {
            endpoint: self.endpoint_shown.to_string(),
            bucket: self.config.bucket.clone(),
            reason,
        }
    }

    pub(super) fn not_found(&self, detail: Option<&str>) -> Error {
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

    pub(super) fn invalid(&self, reason: String) -> Error {
        Error::InvalidContent {
            location: self.config.location(),
            reason,
        }
    }

    pub(super) fn failed(&self, doing: &'static str, reason: String) -> Error {
        Error::S3 {
            context: doing,
            location: self.config.location(),
            reason,
        }
    }
}

/// Why an object is not read as requirements.txt: its size.
pub(super) fn too_large(size: u64) -> String {
    format!("{size} bytes, over the limit of {MAX_OBJECT_BYTES} bytes (1 MiB) for requirements.txt")
}

/// The redirect the client refused to follow, if that is what failed.
fn refused_redirect<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RedirectRefused> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<RedirectRefused>() {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// S3 names what is missing in its error code.
pub(crate) fn no_such_bucket(text: &str) -> bool {
    text.contains("NoSuchBucket")
}

/// The client's error on one line: its chain of causes (the last one says "Connection refused"),
/// and S3's XML error body reduced to its code and message.
pub(crate) fn describe(e: &(dyn std::error::Error + 'static)) -> String {
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
pub(super) fn is_transport(e: &(dyn std::error::Error + 'static)) -> bool {
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
pub(super) fn server_error(text: &str) -> bool {
    text.split("status code: ")
        .skip(1)
        .any(|rest| rest.starts_with('5'))
}

/// S3's error code (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied`) tells a wrong
/// key from a missing permission; put it first, the client's full text after.
pub(super) fn denial_reason(text: &str) -> String {
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
pub(super) fn scrub(config: &S3Config, text: &str) -> String {
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
