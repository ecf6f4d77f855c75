//! The source of truth in Bifrost today: `_repo/requirements.txt` in an S3 bucket.
//!
//! Bifrost writes the object with a plain `PutObject` of the UTF-8 bytes (no metadata) and reads it
//! back whole. This module reads it byte-exact (CRLF and a missing trailing newline are kept) and
//! refuses what cannot be a requirements file (over [`MAX_OBJECT_BYTES`], or not UTF-8) instead of
//! passing on a lossy copy. A writer gets such an object as its bytes (up to [`MAX_MEND_BYTES`])
//! to mend or replace it ([`S3Store::update_or_mend`]).
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

mod client;
mod config;
mod errors;
mod store;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use config::S3Config;

pub(crate) use client::same_origin_redirects;
pub(crate) use errors::{Named, describe, no_such_bucket};
pub(crate) use store::{Transfers, client};

pub(crate) use config::{
    Credentials, validate_bucket, validate_endpoint, validate_key, validate_region,
};
pub use store::{Current, Poll, S3Store, Unreadable, UpdateOutcome, Versioned};

/// Where Bifrost keeps requirements.txt (`RepoStorage` prefixes `_repo/`).
pub const DEFAULT_KEY: &str = "_repo/requirements.txt";
/// Bifrost's default (`s3_region` in its settings).
pub(crate) const DEFAULT_REGION: &str = "us-east-1";
/// Larger objects are refused before their body is read: no requirements file is this big, and
/// the content travels on into a resource, Redis and a ConfigMap.
pub const MAX_OBJECT_BYTES: u64 = 1024 * 1024;
/// What `requirements remove` reads of an object it mends line by line (one not UTF-8, or over
/// [`MAX_OBJECT_BYTES`]): four times that cap, sixteen times the content limit, so that a file
/// grown far past the limit can still be cut down, and no more, so that a hostile object cannot
/// exhaust memory. A larger object is not downloaded; `requirements set` replaces it.
pub const MAX_MEND_BYTES: u64 = 4 * MAX_OBJECT_BYTES;
/// Per request, connecting included: a poll must fail in time for the next one.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// One request of [`Transfers::Large`] at most (a gigabyte at 300 KiB/s); each wait for bytes
/// is bounded by the configuration's timeout well before that.
const LARGE_TRANSFER_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bifrost's environment names (Secret `bifrost-secrets`, ConfigMap `bifrost-config`), so that
/// `envFrom` of both works unchanged.
pub(crate) const ENV_ENDPOINT: &str = "BIFROST_S3_ENDPOINT_URL";
pub(crate) const ENV_BUCKET: &str = "BIFROST_S3_BUCKET";
pub(crate) const ENV_ACCESS_KEY: &str = "BIFROST_S3_ACCESS_KEY";
pub(crate) const ENV_SECRET_KEY: &str = "BIFROST_S3_SECRET_KEY";
pub(crate) const ENV_REGION: &str = "BIFROST_S3_REGION";

/// How often [`S3Store::update`] reads again after losing a race. Each round has one winner, so
/// this bounds how many writers can queue on the same object at once.
const UPDATE_ATTEMPTS: u32 = 50;
