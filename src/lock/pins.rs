//! A user's `--hash` pins survive resolution.
//!
//! `uv pip compile` ignores the hashes of its input: it pins whatever file the index serves. A
//! requirement carrying `--hash` guards against exactly that index, so after resolving, every
//! hash the lock records for that distribution must be one of the line's. Not a subset is not
//! a lock: the index served a file the user did not pin (tampered, or added since), and its
//! metadata may have pulled in more. A user pins every file of a release (as
//! `pip-compile --generate-hashes` and `uv pip compile --generate-hashes` write them) or none.

use super::entries::{Pinned, normalize_hash_option};
use crate::requirements::{Entry, RequirementsFile};

/// Every requirement line whose `--hash` values the lock does not keep, naming the line and the
/// index's hashes; `Ok` when each hashed requirement's locked hashes are among its own.
pub(crate) fn check(content: &RequirementsFile, pins: &[Pinned]) -> Result<(), String> {
    let mut problems = Vec::new();
    for line in content.lines() {
        let Entry::Requirement { name, options, .. } = &line.entry else {
            continue;
        };
        let wanted: Vec<String> = options
            .iter()
            .filter_map(|o| o.strip_prefix("--hash="))
            .map(normalize_hash_option)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        // Absent from the lock (a marker false for the interpreter): nothing to constrain; the
        // installer's own check says whether the lock may leave it out.
        for pinned in pins.iter().filter(|p| &p.name == name) {
            let foreign: Vec<&str> = pinned
                .hashes
                .iter()
                .filter(|h| !wanted.contains(h))
                .map(String::as_str)
                .collect();
            let why = if pinned.hashes.is_empty() {
                format!("the lock records no hash for {}", pinned.pin())
            } else if foreign.is_empty() {
                continue;
            } else {
                format!(
                    "the index's {} has {} (not among the line's --hash values: the index \
                     serves a file other than the one pinned)",
                    pinned.pin(),
                    foreign.join(", ")
                )
            };
            problems.push(format!("line {}: `{}`: {why}", line.number, line.text()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[cfg(test)]
mod tests;
