//! The HTTP client under `object_store`: requests go to the configured endpoint's origin only.
//!
//! reqwest's default follows up to ten redirects anywhere, re-sending the request's headers
//! (the `x-amz-*` ones, with the bucket and key in the path) and adding a `Referer`; the body
//! found at the end would be taken as requirements.txt. Here a redirect is followed only within
//! the origin it came from (scheme, host and port), never to another one, and no `Referer` is
//! sent: a refusal is an error naming the endpoint and where it pointed ([`RedirectRefused`]).

use std::time::Duration;

use object_store::ClientOptions;
use object_store::client::{HttpClient, HttpConnector};
use reqwest::redirect::{Attempt, Policy};

use crate::redact;

/// Redirects followed within one origin, at most.
const SAME_ORIGIN_REDIRECTS: usize = 3;

/// A redirect the client did not follow.
#[derive(Debug, thiserror::Error)]
#[error(
    "the endpoint answered with a redirect to {to} ({why}); requests go only to the endpoint's \
     own origin, so it was not followed"
)]
pub(crate) struct RedirectRefused {
    /// Redacted.
    pub to: String,
    why: &'static str,
}

/// Builds the reqwest client `object_store` sends requests with (its own builder cannot be told
/// about redirects): the timeouts of [`super::S3Config`], HTTP only where the endpoint is
/// `http://`, no `Referer`, redirects by [`follow`].
#[derive(Debug)]
pub(super) struct SameOrigin {
    /// The whole request, body included.
    pub timeout: Duration,
    /// Each wait for bytes, when the whole request may take longer than one.
    pub read_timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub allow_http: bool,
}

impl HttpConnector for SameOrigin {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("bifrost-requirements/", env!("CARGO_PKG_VERSION")))
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .https_only(!self.allow_http)
            .referer(false)
            .redirect(same_origin_redirects());
        if let Some(read_timeout) = self.read_timeout {
            builder = builder.read_timeout(read_timeout);
        }
        let client = builder.build().map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: Box::new(e),
        })?;
        Ok(HttpClient::new(client))
    }
}

/// The redirect policy of every client here that must stay on one origin (S3's endpoint, a
/// package index): [`follow`].
pub(crate) fn same_origin_redirects() -> Policy {
    Policy::custom(follow)
}

/// Follow `attempt` only to the origin of the first request.
fn follow(attempt: Attempt) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    match decide(first, attempt.url(), attempt.previous().len()) {
        Ok(()) => attempt.follow(),
        Err(why) => {
            let to = redact::url(attempt.url().as_str());
            attempt.error(RedirectRefused { to, why })
        }
    }
}

/// Whether a redirect from `first` to `to`, after `hops` requests, may be followed.
fn decide(first: &reqwest::Url, to: &reqwest::Url, hops: usize) -> Result<(), &'static str> {
    let origin = |u: &reqwest::Url| {
        (
            u.scheme().to_string(),
            u.host_str().map(str::to_string),
            u.port_or_known_default(),
        )
    };
    if origin(first) != origin(to) {
        return Err("another origin");
    }
    if hops > SAME_ORIGIN_REDIRECTS {
        return Err("too many redirects");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn u(s: &str) -> reqwest::Url {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_same_scheme_host_and_port_are_followed() {
        let from = u("http://127.0.0.1:8333/bucket/key");
        assert_eq!(decide(&from, &u("http://127.0.0.1:8333/other"), 1), Ok(()));
        for other in [
            "http://127.0.0.1:8334/bucket/key",
            "https://127.0.0.1:8333/bucket/key",
            "http://localhost:8333/bucket/key",
            "file:///etc/passwd",
        ] {
            assert_eq!(
                decide(&from, &u(other), 1),
                Err("another origin"),
                "{other}"
            );
        }
        assert_eq!(
            decide(&from, &from, SAME_ORIGIN_REDIRECTS + 1),
            Err("too many redirects")
        );
        // Default ports are the same origin written two ways.
        assert_eq!(
            decide(
                &u("https://s3.example/b"),
                &u("https://s3.example:443/c"),
                1
            ),
            Ok(())
        );
    }

    proptest! {
        #[test]
        fn a_redirect_is_followed_only_where_the_origin_is_unchanged(
            scheme in prop::sample::select(vec!["http", "https"]),
            host in "[a-z]{1,6}(\\.[a-z]{1,4})?",
            port in 1u16..65535,
            to_scheme in prop::sample::select(vec!["http", "https"]),
            to_host in "[a-z]{1,6}(\\.[a-z]{1,4})?",
            to_port in 1u16..65535,
            path in "[a-z/]{0,12}",
        ) {
            let from = u(&format!("{scheme}://{host}:{port}/b/k"));
            let to = u(&format!("{to_scheme}://{to_host}:{to_port}/{path}"));
            let same = from.scheme() == to.scheme()
                && from.host_str() == to.host_str()
                && from.port_or_known_default() == to.port_or_known_default();
            prop_assert_eq!(decide(&from, &to, 1).is_ok(), same);
        }
    }
}
