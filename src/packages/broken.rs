//! What `requirements add` and `remove` say about a stored file that is not a requirements file
//! as it stands: bytes that are not UTF-8, or more than the content limit.
//!
//! `set` replaces such a file whole and `remove` mends it line by line
//! ([`crate::requirements::mend`]); `add` needs a file it can read. Every refusal names what is
//! wrong and where (the stored file's line numbers), says that nothing was written, and gives
//! the command that mends it — with the package names when the broken lines name packages.
//! The exit code follows the problem, as `warm` reports the same file: not UTF-8, or over the
//! 1 MiB an S3 read takes, is [`Error::InvalidContent`] (3); over the content limit is
//! [`crate::limit::TooLarge`] (2).

use crate::error::Error;
use crate::limit::{MAX_CONTENT_BYTES, TooLarge};
use crate::requirements::mend::{self, NotUtf8};
use crate::s3::MAX_MEND_BYTES;
use crate::store::Unreadable;

/// How many broken lines a message lists.
const LISTED: usize = 5;

const SET: &str = "`requirements set FILE` replaces the whole file";

/// `add` on an object it cannot read.
pub(super) fn refused_add(object: &Unreadable) -> Error {
    let Some(bytes) = &object.bytes else {
        return too_large_to_mend(object);
    };
    let bad = mend::remove(bytes, &[]).map_or_else(|_| Vec::new(), |r| r.not_utf8);
    let mut problems = Vec::new();
    if !bad.is_empty() {
        problems.push(format!("not UTF-8 at {}", lines(&bad)));
    }
    if object.size > MAX_CONTENT_BYTES as u64 {
        problems.push(over_the_limit(object.size));
    }
    if problems.is_empty() {
        problems.push(object.reason.clone());
    }
    Error::InvalidContent {
        location: object.location.clone(),
        reason: format!(
            "{}; nothing was written: `requirements add` needs a file it can read: {}",
            problems.join("; "),
            mends(&bad, object.size)
        ),
    }
}

/// `add` to a stored file that was over the limit before and still is after the merge.
pub(super) fn over_the_limit_before_add(location: &str, len: usize) -> Error {
    TooLarge {
        location: location.to_string(),
        len,
        hint: Some(format!(
            "it was over the limit before this `add`: {}",
            mends(&[], len as u64)
        )),
    }
    .into()
}

/// `remove` on an object too large to read at all.
pub(super) fn too_large_to_mend(object: &Unreadable) -> Error {
    Error::InvalidContent {
        location: object.location.clone(),
        reason: format!(
            "{}; nothing was written: `requirements remove` reads at most {MAX_MEND_BYTES} bytes \
             (4 MiB) to mend a file; {SET}",
            object.reason
        ),
    }
}

/// `remove` that leaves lines that are not UTF-8.
pub(super) fn still_not_utf8(location: &str, names: &[String], bad: &[NotUtf8]) -> Error {
    Error::InvalidContent {
        location: location.to_string(),
        reason: format!(
            "removing {} leaves {} not UTF-8; nothing was written: {}",
            names.join(" "),
            lines(bad),
            mends(bad, 0)
        ),
    }
}

/// `remove` that leaves a file over the limit (it was over before: removing only shrinks).
pub(super) fn still_too_large(location: &str, len: usize) -> Error {
    TooLarge {
        location: location.to_string(),
        len,
        hint: Some(format!(
            "{} more bytes must go: remove more packages, or replace the whole file with \
             `requirements set FILE`",
            len - MAX_CONTENT_BYTES
        )),
    }
    .into()
}

/// `{size} bytes, N over the content limit …`.
fn over_the_limit(size: u64) -> String {
    format!(
        "{size} bytes, {} over the content limit of {MAX_CONTENT_BYTES} bytes (256 KiB)",
        size - MAX_CONTENT_BYTES as u64
    )
}

/// `line 2 (byte 0xff at offset 17, package `flask`), line 5 (…)`, the first few.
fn lines(bad: &[NotUtf8]) -> String {
    let mut out: Vec<String> = bad.iter().take(LISTED).map(ToString::to_string).collect();
    if bad.len() > LISTED {
        out.push(format!("and {} more lines", bad.len() - LISTED));
    }
    out.join(", ")
}

/// The commands that mend a stored file with these lines that are not UTF-8 and this size.
fn mends(bad: &[NotUtf8], size: u64) -> String {
    let unnamed: Vec<String> = bad
        .iter()
        .filter(|b| b.name.is_none())
        .map(|b| b.line.to_string())
        .collect();
    if !unnamed.is_empty() {
        let (s, verb) = if unnamed.len() == 1 {
            ("", "names")
        } else {
            ("s", "name")
        };
        return format!(
            "line{s} {} {verb} no package `requirements remove` could take out: {SET}",
            unnamed.join(", ")
        );
    }
    let mut names: Vec<&str> = Vec::new();
    for name in bad.iter().filter_map(|b| b.name.as_deref()) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let mut ways = Vec::new();
    if !names.is_empty() {
        ways.push(format!(
            "`requirements remove {}` takes out the lines that are not UTF-8 (the others are kept \
             byte for byte)",
            names.join(" ")
        ));
    }
    if size > MAX_CONTENT_BYTES as u64 {
        ways.push(format!(
            "`requirements remove NAME…` can bring it under the limit ({} bytes must go)",
            size - MAX_CONTENT_BYTES as u64
        ));
    }
    ways.push(SET.to_string());
    ways.join(", or ")
}
