//! Locks for the workers' platform only.
//!
//! `uv pip compile --generate-hashes` (the requirements format, whose `# via` annotations
//! [`super::satisfy`] reads) lists the hash of every file of each pinned version: every
//! platform, every Python (numpy alone: dozens). The same resolution written with
//! `--format pylock.toml` lists only the files the target interpreter (version, platform, ABI
//! tags) can install, with their sha256. [`filter`] keeps, on each pin of the requirements
//! body, only the hashes the pylock lists for that name and version; a pin the pylock does not
//! list, or one left with no hash, is an error naming the pin (never a lock that cannot
//! install).
//!
//! The filtering is recorded by [`note`]: a comment line without `": "`, put first in the body.
//! A lock is read by `install` in the pods, which runs the operator's image; during an upgrade
//! an older `install` reads locks the newer operator wrote, and its `Lock::parse` refuses an
//! unknown `# field: value` header line. A plain comment ends its header loop and is carried in
//! the body, which its pin parser and uv skip as any comment: old readers install a filtered
//! lock unchanged.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use pep508_rs::pep440_rs::Version;
use toml_edit::{DocumentMut, Item, Value};

use super::entries;
use crate::requirements::normalize_name;
use crate::shutdown::Stop;
use crate::uv::process::{self, Invocation, RunFailure};

/// The pylock's file name (uv accepts `pylock.toml` or `pylock.<name>.toml` only).
pub(crate) const PYLOCK: &str = "pylock.toml";

/// Run the resolution (`compile`, the requirements format), then the same one written as a
/// pylock to `pylock` (same arguments and cache: fast, nothing resolved anew from the index).
/// Both runs share the one deadline `timeout`: a resolution never takes longer than the user
/// allowed because it is run twice.
pub(crate) async fn compile_twice(
    compile: &Invocation,
    pylock: &Path,
    timeout: Duration,
    stop: &Stop,
) -> Result<(), RunFailure> {
    let started = std::time::Instant::now();
    process::run(compile, timeout, stop).await?;
    let left = timeout.saturating_sub(started.elapsed());
    process::run(&pylock_invocation(compile, pylock), left, stop).await
}

/// `compile` writing a pylock to `pylock` instead (its `-o` value replaced).
pub(crate) fn pylock_invocation(compile: &Invocation, pylock: &Path) -> Invocation {
    let mut run = compile.clone();
    let mut args = Vec::with_capacity(run.args.len() + 2);
    let mut output_next = false;
    for arg in run.args {
        if output_next {
            args.push(pylock.as_os_str().to_owned());
        } else {
            args.push(arg.clone());
        }
        output_next = arg == "-o";
    }
    let format = args.len().saturating_sub(1);
    args.splice(
        format..format,
        [OsString::from("--format"), "pylock.toml".into()],
    );
    run.args = args;
    run
}

/// The lock body for the workers' interpreter (`version`, `platform`): `body` filtered to the
/// files `pylock` lists, behind the [`note`] that records it.
pub(crate) fn for_interpreter(
    body: &str,
    pylock: &str,
    version: &str,
    platform: &str,
) -> Result<String, String> {
    let filtered = filter(body, &compatible(pylock)?)?;
    Ok(format!(
        "{}{}",
        note(version, platform, &filtered),
        filtered.body
    ))
}

/// The files a pylock lists: `sha256:<hex>` (lowercase) per (normalized name, version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Compatible {
    files: HashMap<(String, Version), HashSet<String>>,
}

/// A body filtered to the compatible files, and how many of its hashes it kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filtered {
    pub body: String,
    pub kept: usize,
    pub total: usize,
}

/// The files `pylock` (uv's `pylock.toml` for the target interpreter) lists, or what is wrong
/// with it (naming the package and the field).
pub(crate) fn compatible(pylock: &str) -> Result<Compatible, String> {
    let doc = DocumentMut::from_str(pylock).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_string();
        format!("the pylock is not TOML: {first}")
    })?;
    let mut out = Compatible::default();
    let Some(packages) = doc.get("packages") else {
        return Ok(out);
    };
    let packages = packages
        .as_array_of_tables()
        .ok_or("the pylock's `packages` is not an array of tables")?;
    for (i, package) in packages.iter().enumerate() {
        let at = |why: &str| format!("the pylock's package {}: {why}", i + 1);
        let text = |field: &str| {
            package
                .get(field)
                .and_then(Item::as_str)
                .ok_or_else(|| at(&format!("no string `{field}`")))
        };
        let name = normalize_name(text("name")?).map_err(|e| at(&format!("name: {e}")))?;
        let raw_version = text("version")?;
        let version = Version::from_str(raw_version)
            .map_err(|e| at(&format!("{name} version {raw_version:?}: {e}")))?;
        let hashes = package_hashes(package, &name).map_err(|e| at(&e))?;
        out.files.entry((name, version)).or_default().extend(hashes);
    }
    Ok(out)
}

/// The sha256 of each file of one pylock package: its `wheels` and its `sdist`.
fn package_hashes(package: &toml_edit::Table, name: &str) -> Result<Vec<String>, String> {
    let mut files: Vec<&dyn toml_edit::TableLike> = Vec::new();
    match package.get("wheels") {
        None => {}
        Some(Item::Value(Value::Array(wheels))) => {
            for wheel in wheels {
                files.push(
                    wheel
                        .as_inline_table()
                        .ok_or_else(|| format!("{name}: a wheel is not a table"))?,
                );
            }
        }
        Some(Item::ArrayOfTables(wheels)) => files.extend(
            wheels
                .iter()
                .map(|w| w as &dyn toml_edit::TableLike)
                .collect::<Vec<_>>(),
        ),
        Some(_) => return Err(format!("{name}: `wheels` is not an array")),
    }
    if let Some(sdist) = package.get("sdist") {
        files.push(
            sdist
                .as_table_like()
                .ok_or_else(|| format!("{name}: `sdist` is not a table"))?,
        );
    }
    files.iter().map(|file| sha256(*file, name)).collect()
}

/// `sha256:<hex>` of one file entry (`hashes = { sha256 = "…" }`).
fn sha256(file: &dyn toml_edit::TableLike, name: &str) -> Result<String, String> {
    let label = file
        .get("name")
        .or_else(|| file.get("url"))
        .or_else(|| file.get("path"))
        .and_then(Item::as_str)
        .unwrap_or("a file");
    let hex = file
        .get("hashes")
        .and_then(Item::as_table_like)
        .and_then(|h| h.get("sha256"))
        .and_then(Item::as_str)
        .ok_or_else(|| format!("{name}: {label} has no sha256 hash"))?;
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{name}: {label}'s sha256 {hex:?} is not a SHA-256"));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// `body` (uv's requirements-format lock) with each pin's hashes cut down to the files
/// `compatible` lists for it; `Err` names a pin it does not list or leaves without a hash.
/// Packages the pylock lists beyond the body's pins change nothing.
pub(crate) fn filter(body: &str, compatible: &Compatible) -> Result<Filtered, String> {
    let pins = entries::parse(body)?;
    let starts: HashMap<usize, &entries::Pinned> = pins.iter().map(|p| (p.line, p)).collect();
    let mut out = String::with_capacity(body.len());
    let (mut kept, mut total) = (0, 0);
    // The pin being copied: its line (without the continuation) and the lines after it.
    let mut block: Option<(String, Vec<String>, Vec<String>)> = None;
    for (i, raw) in body.lines().enumerate() {
        if let Some(pinned) = starts.get(&(i + 1)) {
            flush(&mut out, block.take());
            let wanted = compatible
                .files
                .get(&(pinned.name.clone(), pinned.version.clone()))
                .ok_or_else(|| {
                    format!(
                        "{} is not among the files uv lists for the workers' interpreter",
                        pinned.pin()
                    )
                })?;
            let hashes: Vec<String> = pinned
                .hashes
                .iter()
                .filter(|h| wanted.contains(*h))
                .map(|h| format!("--hash={h}"))
                .collect();
            total += pinned.hashes.len();
            kept += hashes.len();
            if hashes.is_empty() {
                return Err(format!(
                    "{}: none of its {} hash(es) is of a file the workers' interpreter can install",
                    pinned.pin(),
                    pinned.hashes.len()
                ));
            }
            let spec = raw
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            block = Some((spec, hashes, Vec::new()));
        } else if block.is_some() && raw.starts_with([' ', '\t']) {
            let item = raw.trim().trim_end_matches('\\').trim_end();
            if !item.starts_with("--hash=")
                && let Some((_, _, rest)) = block.as_mut()
            {
                rest.push(raw.to_string());
            }
        } else {
            flush(&mut out, block.take());
            out.push_str(raw);
            out.push('\n');
        }
    }
    flush(&mut out, block.take());
    Ok(Filtered {
        body: out,
        kept,
        total,
    })
}

/// One pin as uv writes it: `spec \`, its hashes continued, then its comments.
fn flush(out: &mut String, block: Option<(String, Vec<String>, Vec<String>)>) {
    let Some((spec, hashes, rest)) = block else {
        return;
    };
    out.push_str(&spec);
    for hash in &hashes {
        out.push_str(" \\\n    ");
        out.push_str(hash);
    }
    out.push('\n');
    for line in rest {
        out.push_str(&line);
        out.push('\n');
    }
}

/// The comment that records the filtering, first in the body: no `": "`, so every version of
/// `Lock::parse` ends its header before it and carries it in the body (see the module doc).
pub(crate) fn note(version: &str, platform: &str, filtered: &Filtered) -> String {
    format!(
        "# Hashes kept for Python {version} on {platform} only ({} of {} files; the others \
         cannot install there).\n",
        filtered.kept, filtered.total
    )
}

#[cfg(test)]
mod tests;
