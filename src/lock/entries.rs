//! The distributions a lock's body pins, as `uv pip compile --generate-hashes` writes them:
//!
//! ```text
//! evil==1.0 \
//!     --hash=sha256:14a8…
//!     # via goodpkg
//! goodpkg==1.0 \
//!     --hash=sha256:cc19…
//!     # via
//!     #   -r requirements.txt
//!     #   other
//! ```
//!
//! Each pin's name, version, hashes and `# via` annotations (who pulled it in: a line of
//! requirements.txt, or another pinned distribution). The annotations are the only dependency
//! graph a lock carries; they are uv's word, checked for consistency, not against metadata.

use std::str::FromStr;

use pep508_rs::pep440_rs::Version;
use pep508_rs::{Requirement, VersionOrUrl};

use crate::requirements::{Entry, classify, normalize_name};

/// Who pulled a distribution into the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A requirement of the requirements file itself (`# via -r requirements.txt`).
    Requirements,
    /// Another pinned distribution (normalized name).
    Package(String),
}

/// One pinned distribution of a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// 1-based line of the pin in the body.
    pub line: usize,
    /// PEP 503 normalized name.
    pub name: String,
    pub version: Version,
    /// `sha256:<hex>`, lowercase, in the lock's order.
    pub hashes: Vec<String>,
    pub via: Vec<Via>,
}

impl Pinned {
    /// `goodpkg==1.0`, for messages.
    pub(crate) fn pin(&self) -> String {
        format!("{}=={}", self.name, self.version)
    }
}

/// `--hash=algo:hex` (or `--hash algo:hex`'s value) as compared: lowercase, algorithm kept.
pub(crate) fn normalize_hash_option(value: &str) -> String {
    value.trim().to_ascii_lowercase()
}

/// The pins of a lock body, or why a line is not one (naming the line).
pub(crate) fn parse(body: &str) -> Result<Vec<Pinned>, String> {
    let mut pins: Vec<Pinned> = Vec::new();
    // Inside a multi-line `# via` block of the last pin.
    let mut in_via = false;
    for (i, raw) in body.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim_end().trim_end_matches('\\').trim_end();
        if line.trim().is_empty() {
            in_via = false;
            continue;
        }
        if !raw.starts_with([' ', '\t']) {
            in_via = false;
            if line.starts_with('#') {
                continue;
            }
            pins.push(pin_line(number, line)?);
            continue;
        }
        let Some(last) = pins.last_mut() else {
            return Err(format!(
                "line {number}: {:?} belongs to no pin",
                line.trim()
            ));
        };
        let item = line.trim();
        if let Some(value) = item.strip_prefix("--hash=") {
            last.hashes.push(normalize_hash_option(value));
        } else if let Some(rest) = item.strip_prefix("# via") {
            let rest = rest.trim();
            in_via = rest.is_empty();
            if !in_via {
                last.via.push(via(number, rest)?);
            }
        } else if let Some(rest) = item.strip_prefix('#').filter(|_| in_via) {
            last.via.push(via(number, rest.trim())?);
        } else if !item.starts_with('#') {
            return Err(format!(
                "line {number}: {item:?} is neither a hash nor a comment"
            ));
        }
    }
    Ok(pins)
}

/// `name==version [--hash=…]` at the start of a line.
fn pin_line(number: usize, line: &str) -> Result<Pinned, String> {
    let mut parts = line.split_whitespace();
    let spec = parts.next().unwrap_or_default();
    let mut hashes = Vec::new();
    for option in parts {
        match option.strip_prefix("--hash=") {
            Some(value) => hashes.push(normalize_hash_option(value)),
            None => return Err(format!("line {number}: {option:?} after the pin {spec:?}")),
        }
    }
    let bad = |why: &str| format!("line {number}: {spec:?} {why}");
    // The requirements model's reading first: its length and nesting limits and its guard
    // against the parser's panics; only what it accepted is parsed again here.
    match classify(spec) {
        Entry::Requirement { .. } => {}
        Entry::Invalid(why) => return Err(bad(&format!("is not a pin: {why}"))),
        _ => return Err(bad("is not a pin")),
    }
    let requirement = Requirement::<pep508_rs::VerbatimUrl>::from_str(spec)
        .map_err(|e| bad(&format!("is not a pin: {}", e.message)))?;
    let Some(VersionOrUrl::VersionSpecifier(specifiers)) = &requirement.version_or_url else {
        return Err(bad("pins no version (name==version)"));
    };
    let version = match specifiers.iter().collect::<Vec<_>>().as_slice() {
        [one] if one.operator() == &pep508_rs::pep440_rs::Operator::Equal => one.version().clone(),
        _ => return Err(bad("is not one exact version (name==version)")),
    };
    Ok(Pinned {
        line: number,
        name: requirement.name.to_string(),
        version,
        hashes,
        via: Vec::new(),
    })
}

/// One `# via` item: `-r file` (a requirement of the file) or a package name.
fn via(number: usize, item: &str) -> Result<Via, String> {
    if item.starts_with("-r ") {
        return Ok(Via::Requirements);
    }
    // uv may qualify a parent with its extras (`flask[async]`): the package is the parent.
    let name = item.split(['[', ' ']).next().unwrap_or_default();
    normalize_name(name)
        .map(Via::Package)
        .map_err(|e| format!("line {number}: `# via {item}` names no package: {e}"))
}

#[cfg(test)]
mod tests;
