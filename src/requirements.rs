//! The requirements.txt model: pure, no I/O.
//!
//! Bifrost stores `requirements.txt` as the text a user (or `pip freeze`) wrote, so this model keeps
//! every byte: a file is a list of [`Line`]s, each holding its raw text (with continuation
//! backslashes and its own line ending), and rendering concatenates them. Only lines we change are
//! rewritten, which makes parse → render of untouched content byte-identical.
//!
//! Requirements are parsed with `pep508_rs` (the parser uv uses); names are compared in their
//! PEP 503 normalized form, so `Flask_SQLAlchemy` and `flask-sqlalchemy` are the same package.

use std::fmt;
use std::str::FromStr;

use pep508_rs::{PackageName, Requirement, VersionOrUrl};
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of the exact UTF-8 bytes, as Python's
/// `hashlib.sha256(content.encode()).hexdigest()`.
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// Strip an optional `sha256:` prefix (Bifrost accepts both spellings) and lowercase.
pub fn normalize_hash(hash: &str) -> String {
    let h = hash.trim();
    let h = h
        .strip_prefix("sha256:")
        .or_else(|| h.strip_prefix("SHA256:"))
        .unwrap_or(h);
    h.to_ascii_lowercase()
}

/// Whether two stored hashes name the same content (prefix- and case-insensitive).
pub fn hashes_equal(a: &str, b: &str) -> bool {
    normalize_hash(a) == normalize_hash(b)
}

/// Whether `content` hashes to `hash` (which may carry a `sha256:` prefix).
pub fn hash_matches(content: &str, hash: &str) -> bool {
    hashes_equal(&content_hash(content), hash)
}

/// PEP 503 normalized form of a package name, or an error explaining why it is not a name.
pub fn normalize_name(name: &str) -> Result<String, String> {
    PackageName::from_str(name.trim())
        .map(|n| n.to_string())
        .map_err(|e| e.to_string())
}

/// A pip option that may stand on its own line in a requirements file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOption {
    IndexUrl(String),
    ExtraIndexUrl(String),
    FindLinks(String),
    TrustedHost(String),
    Editable(String),
    Requirement(String),
    Constraint(String),
    NoIndex,
    Pre,
    PreferBinary,
    RequireHashes,
    OnlyBinary(String),
    NoBinary(String),
    UseFeature(String),
}

impl FileOption {
    /// The option as written in requirements files, for messages.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::IndexUrl(_) => "--index-url",
            Self::ExtraIndexUrl(_) => "--extra-index-url",
            Self::FindLinks(_) => "--find-links",
            Self::TrustedHost(_) => "--trusted-host",
            Self::Editable(_) => "--editable",
            Self::Requirement(_) => "--requirement",
            Self::Constraint(_) => "--constraint",
            Self::NoIndex => "--no-index",
            Self::Pre => "--pre",
            Self::PreferBinary => "--prefer-binary",
            Self::RequireHashes => "--require-hashes",
            Self::OnlyBinary(_) => "--only-binary",
            Self::NoBinary(_) => "--no-binary",
            Self::UseFeature(_) => "--use-feature",
        }
    }
}

/// What one logical line of a requirements file means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Empty or whitespace only.
    Blank,
    /// A full-line comment.
    Comment,
    /// A named PEP 508 requirement, possibly followed by per-requirement options (`--hash=…`).
    Requirement {
        /// PEP 503 normalized name.
        name: String,
        /// The requirement text without options and comment, e.g. `flask[async]>=3.0`.
        spec: String,
        /// `Some(url)` for `name @ url` requirements.
        url: Option<String>,
        /// Per-requirement options such as `--hash=sha256:…`, as written.
        options: Vec<String>,
    },
    /// A requirement given as a bare URL or path (`./pkg`, `https://…/x.whl`, `git+https://…`).
    Location(String),
    /// A global option line (`-i …`, `-r …`, `--pre`, …).
    Option(FileOption),
    /// A line that is none of the above; the reason says why.
    Invalid(String),
}

/// One logical line: one or more physical lines joined by trailing backslashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based number of the first physical line.
    pub number: usize,
    /// The exact text, including continuation backslashes and line endings.
    pub raw: String,
    /// What the line means.
    pub entry: Entry,
}

impl Line {
    /// The logical text without line endings, continuations or comment, for messages.
    pub fn text(&self) -> String {
        strip_comment(&logical_text(&self.raw)).trim().to_string()
    }
}

/// A parsed requirements file that renders back to its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequirementsFile {
    lines: Vec<Line>,
}

impl RequirementsFile {
    /// Split into logical lines and classify each. Never fails: lines that cannot be understood
    /// become [`Entry::Invalid`] so the policy reports them with their number.
    pub fn parse(content: &str) -> Self {
        let mut lines = Vec::new();
        let mut number = 1;
        let mut rest = content;
        while !rest.is_empty() {
            // Take physical lines until one does not end in a continuation backslash.
            let mut len = 0;
            let mut physical = 0;
            loop {
                let tail = &rest[len..];
                let (line_len, has_newline) = match tail.find('\n') {
                    Some(i) => (i + 1, true),
                    None => (tail.len(), false),
                };
                physical += 1;
                let body = tail[..line_len].trim_end_matches(['\n', '\r']);
                len += line_len;
                let continued = body.ends_with('\\') && !is_comment_line(body);
                if !(continued && has_newline) || len >= rest.len() {
                    break;
                }
            }
            let raw = &rest[..len];
            lines.push(Line {
                number,
                raw: raw.to_string(),
                entry: classify(&logical_text(raw)),
            });
            number += physical;
            rest = &rest[len..];
        }
        Self { lines }
    }

    /// The exact text: parse → render of untouched content is byte-identical.
    pub fn render(&self) -> String {
        self.lines.iter().map(|l| l.raw.as_str()).collect()
    }

    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The named requirements, in file order.
    pub fn requirements(&self) -> impl Iterator<Item = (&Line, &str)> {
        self.lines.iter().filter_map(|l| match &l.entry {
            Entry::Requirement { name, .. } => Some((l, name.as_str())),
            _ => None,
        })
    }

    /// How many packages the file asks for (named requirements plus bare URLs/paths).
    pub fn package_count(&self) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l.entry, Entry::Requirement { .. } | Entry::Location(_)))
            .count()
    }

    /// True when nothing would be installed (empty, blank lines or comments only).
    pub fn is_empty(&self) -> bool {
        self.package_count() == 0
    }

    /// Add or replace a requirement. An existing entry with the same normalized name is replaced
    /// in place (its first occurrence; later duplicates are dropped) instead of appending a second
    /// line. Returns what happened.
    pub fn merge(&mut self, spec: &str) -> Result<MergeOutcome, SpecError> {
        if let Some(c) = spec.chars().find(|c| c.is_control()) {
            return Err(SpecError::new(
                &spec.escape_debug().to_string(),
                format!(
                    "contains the control character {:?} (one requirement per argument)",
                    c
                ),
            ));
        }
        let spec = spec.trim();
        if spec.ends_with('\\') {
            return Err(SpecError::new(
                spec,
                "ends with a line-continuation backslash",
            ));
        }
        let name = match classify(spec) {
            Entry::Requirement { name, .. } => name,
            Entry::Invalid(reason) => return Err(SpecError::new(spec, reason)),
            Entry::Location(_) => {
                return Err(SpecError::new(
                    spec,
                    "is a URL or path, not a package name; install by package name from the configured index",
                ));
            }
            _ => {
                return Err(SpecError::new(
                    spec,
                    "expected a package requirement such as `requests==2.32.3`",
                ));
            }
        };
        let eol = self.line_ending();
        let mut replaced: Option<String> = None;
        let mut kept = Vec::with_capacity(self.lines.len() + 1);
        for line in self.lines.drain(..) {
            let same = matches!(&line.entry, Entry::Requirement { name: n, .. } if *n == name);
            if !same {
                kept.push(line);
            } else if replaced.is_none() {
                let ending = line_ending_of(&line.raw);
                replaced = Some(line.text());
                kept.push(Line {
                    number: line.number,
                    raw: format!("{spec}{ending}"),
                    entry: classify(spec),
                });
            }
        }
        self.lines = kept;
        if let Some(previous) = replaced {
            self.renumber();
            return Ok(if previous == spec {
                MergeOutcome::Unchanged
            } else {
                MergeOutcome::Replaced { previous }
            });
        }
        if let Some(last) = self.lines.last_mut()
            && !last.raw.ends_with('\n')
        {
            last.raw.push_str(eol);
        }
        self.lines.push(Line {
            number: 0,
            raw: format!("{spec}{eol}"),
            entry: classify(spec),
        });
        self.renumber();
        Ok(MergeOutcome::Added)
    }

    /// Remove every entry with this (normalized) name. Returns how many lines were removed.
    pub fn remove(&mut self, name: &str) -> Result<usize, SpecError> {
        let wanted = normalize_name(name).map_err(|e| SpecError::new(name, e))?;
        let before = self.lines.len();
        self.lines
            .retain(|l| !matches!(&l.entry, Entry::Requirement { name, .. } if *name == wanted));
        let removed = before - self.lines.len();
        self.renumber();
        Ok(removed)
    }

    /// `\r\n` when the file mostly uses it, else `\n`.
    fn line_ending(&self) -> &'static str {
        let crlf = self
            .lines
            .iter()
            .filter(|l| l.raw.ends_with("\r\n"))
            .count();
        let lf = self.lines.iter().filter(|l| l.raw.ends_with('\n')).count();
        if crlf * 2 > lf { "\r\n" } else { "\n" }
    }

    fn renumber(&mut self) {
        let mut number = 1;
        for line in &mut self.lines {
            line.number = number;
            number += line.raw.matches('\n').count().max(1);
        }
    }
}

impl fmt::Display for RequirementsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// What [`RequirementsFile::merge`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    Added,
    Replaced { previous: String },
    Unchanged,
}

/// A requirement given on the command line that is not a valid requirement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid requirement `{spec}`: {reason}")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl SpecError {
    fn new(spec: &str, reason: impl Into<String>) -> Self {
        Self {
            spec: spec.to_string(),
            reason: reason.into(),
        }
    }
}

fn line_ending_of(raw: &str) -> &'static str {
    if raw.ends_with("\r\n") {
        "\r\n"
    } else if raw.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

fn is_comment_line(body: &str) -> bool {
    body.trim_start().starts_with('#')
}

/// Join continuation lines and drop line endings.
fn logical_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for physical in raw.split_inclusive('\n') {
        let body = physical.trim_end_matches(['\n', '\r']);
        match body.strip_suffix('\\') {
            Some(head) if physical.ends_with('\n') && !is_comment_line(body) => out.push_str(head),
            _ => out.push_str(body),
        }
    }
    out
}

/// Drop a comment: `#` at the start or after whitespace (pip's rule; `#` inside a URL fragment
/// such as `#egg=` is not a comment).
fn strip_comment(text: &str) -> String {
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return text[..i].to_string();
        }
    }
    text.to_string()
}

/// Split `--flag=value` / `--flag value` / `-fvalue` / `-f value`.
fn split_option(text: &str) -> (String, String) {
    if let Some(long) = text.strip_prefix("--") {
        let end = long
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(long.len());
        let flag = format!("--{}", &long[..end]);
        let value = long[end..].trim_start_matches(['=', ' ', '\t']).trim();
        (flag, value.to_string())
    } else {
        let mut chars = text.chars();
        chars.next();
        let short = chars.next().map(|c| format!("-{c}")).unwrap_or_default();
        let value = text[short.len().min(text.len())..].trim_start_matches(['=', ' ', '\t']);
        (short, value.trim().to_string())
    }
}

fn classify_option(text: &str) -> Entry {
    let (flag, value) = split_option(text);
    let need_value = |make: fn(String) -> FileOption| {
        if value.is_empty() {
            Entry::Invalid(format!("option {flag} needs a value"))
        } else {
            Entry::Option(make(value.clone()))
        }
    };
    let no_value = |opt: FileOption| {
        if value.is_empty() {
            Entry::Option(opt)
        } else {
            Entry::Invalid(format!("option {flag} takes no value"))
        }
    };
    match flag.as_str() {
        "-i" | "--index-url" => need_value(FileOption::IndexUrl),
        "--extra-index-url" => need_value(FileOption::ExtraIndexUrl),
        "-f" | "--find-links" => need_value(FileOption::FindLinks),
        "--trusted-host" => need_value(FileOption::TrustedHost),
        "-e" | "--editable" => need_value(FileOption::Editable),
        "-r" | "--requirement" => need_value(FileOption::Requirement),
        "-c" | "--constraint" => need_value(FileOption::Constraint),
        "--only-binary" => need_value(FileOption::OnlyBinary),
        "--no-binary" => need_value(FileOption::NoBinary),
        "--use-feature" => need_value(FileOption::UseFeature),
        "--no-index" => no_value(FileOption::NoIndex),
        "--pre" => no_value(FileOption::Pre),
        "--prefer-binary" => no_value(FileOption::PreferBinary),
        "--require-hashes" => no_value(FileOption::RequireHashes),
        _ => Entry::Invalid(format!("unknown option {flag}")),
    }
}

/// Bare URLs, VCS references and paths: pip accepts them on a line of their own.
fn looks_like_location(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    let lower = first.to_ascii_lowercase();
    lower.contains("://")
        || ["git+", "hg+", "svn+", "bzr+", "file:"]
            .iter()
            .any(|p| lower.starts_with(p))
        || first.starts_with(['.', '/', '~', '\\'])
        || first.contains(['/', '\\'])
        || (first.len() > 2
            && first.as_bytes()[1] == b':'
            && first.as_bytes()[0].is_ascii_alphabetic())
        || [".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz"]
            .iter()
            .any(|ext| lower.ends_with(ext))
}

/// Find where per-requirement options start: the first whitespace-preceded `-x`/`--x` token.
fn split_requirement_options(text: &str) -> (&str, Vec<String>) {
    let bytes = text.as_bytes();
    let mut i = 1;
    while i + 1 < bytes.len() {
        if bytes[i] == b'-'
            && bytes[i - 1].is_ascii_whitespace()
            && (bytes[i + 1] == b'-' || bytes[i + 1].is_ascii_alphabetic())
        {
            let options =
                text[i..]
                    .split_whitespace()
                    .fold(Vec::<String>::new(), |mut acc, tok| {
                        if tok.starts_with('-') || acc.is_empty() {
                            acc.push(tok.to_string());
                        } else if let Some(last) = acc.last_mut() {
                            // `--hash sha256:…` written with a space.
                            last.push('=');
                            last.push_str(tok);
                        }
                        acc
                    });
            return (text[..i].trim_end(), options);
        }
        i += 1;
    }
    (text.trim_end(), Vec::new())
}

/// Classify one logical line (continuations already joined, line ending dropped).
pub fn classify(logical: &str) -> Entry {
    if logical.trim().is_empty() {
        return Entry::Blank;
    }
    if logical.trim_start().starts_with('#') {
        return Entry::Comment;
    }
    let text = strip_comment(logical);
    let text = text.trim();
    if text.is_empty() {
        return Entry::Comment;
    }
    if text.starts_with('-') {
        return classify_option(text);
    }
    let (spec, options) = split_requirement_options(text);
    if looks_like_location(spec) && !spec.contains('@') {
        return Entry::Location(spec.to_string());
    }
    match Requirement::<pep508_rs::VerbatimUrl>::from_str(spec) {
        Ok(req) => {
            let url = match &req.version_or_url {
                Some(VersionOrUrl::Url(u)) => Some(u.to_string()),
                _ => None,
            };
            Entry::Requirement {
                name: req.name.to_string(),
                spec: spec.to_string(),
                url,
                options,
            }
        }
        Err(e) if looks_like_location(spec) => {
            let _ = e;
            Entry::Location(spec.to_string())
        }
        Err(e) => Entry::Invalid(format!("not a valid requirement: {}", e.message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_matches_python_hashlib() {
        // Values printed by python3: hashlib.sha256(s.encode()).hexdigest()
        assert_eq!(
            content_hash("requests==2.32.3\n"),
            "4b8183101fd19f071771805a42a31fbb234a7961921fdb8b783a279755a1b5d5"
        );
        assert_eq!(
            content_hash("é\r\n"),
            "64da669b12bbeda0ca8f2840891bd8834e5b8206f24c7703e20ac1d472612b0e"
        );
        assert_eq!(
            content_hash(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn prefixed_hashes_compare_equal() {
        let h = content_hash("x");
        assert!(hashes_equal(&format!("sha256:{h}"), &h));
        assert!(hashes_equal(&h.to_uppercase(), &h));
        assert!(hash_matches("x", &format!("sha256:{h}")));
        assert!(!hash_matches("y", &h));
    }
}
