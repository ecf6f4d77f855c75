//! The requirements.txt model: pure, no I/O.
//!
//! Bifrost stores `requirements.txt` as the text a user (or `pip freeze`) wrote, so this model keeps
//! every byte: a file is a list of [`Line`]s, each holding its raw text (with continuation
//! backslashes and its own line ending), and rendering concatenates them. Only lines we change are
//! rewritten, which makes parse → render of untouched content byte-identical.
//!
//! The file is read the way pip reads it (`pip/_internal/req/req_file.py`: `splitlines`,
//! `join_lines`, comment stripping, `break_args_options`, `shlex` and `optparse` over pip's
//! requirements-file options), and every form that uv reads differently is refused as an
//! [`Entry::Invalid`] line: line separators other than `\n`/`\r\n`, control and bidi characters,
//! Unicode whitespace, backslashes other than one trailing continuation, a continuation on a line
//! with a comment, and option values uv cuts short. What the installers then receive is not the
//! stored text but [`RequirementsFile::installer_text`], rendered from this model.
//!
//! Requirements are parsed with `pep508_rs` (the parser uv uses) behind length and nesting limits
//! and `catch_unwind`, so hostile input can neither exhaust the stack nor panic; names are compared
//! in their PEP 503 normalized form, so `Flask_SQLAlchemy` and `flask-sqlalchemy` are the same
//! package.

use std::fmt;
use std::str::FromStr;

use pep508_rs::{PackageName, Requirement, VersionOrUrl};
use sha2::{Digest, Sha256};

mod guard;
pub mod mend;
mod options;

pub use guard::MAX_NESTING;

use options::{Opt, Parsed};

/// Lowercase hex SHA-256 of the exact UTF-8 bytes, as Python's
/// `hashlib.sha256(content.encode()).hexdigest()`.
pub fn content_hash(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// Strip an optional `sha256:` prefix (Bifrost accepts both spellings) and lowercase.
pub(crate) fn normalize_hash(hash: &str) -> String {
    let h = hash.trim();
    let h = h
        .strip_prefix("sha256:")
        .or_else(|| h.strip_prefix("SHA256:"))
        .unwrap_or(h);
    h.to_ascii_lowercase()
}

/// Whether two stored hashes name the same content (prefix- and case-insensitive).
pub(crate) fn hashes_equal(a: &str, b: &str) -> bool {
    normalize_hash(a) == normalize_hash(b)
}

/// Whether `content` hashes to `hash` (which may carry a `sha256:` prefix).
pub(crate) fn hash_matches(content: &str, hash: &str) -> bool {
    hashes_equal(&content_hash(content), hash)
}

/// PEP 503 normalized form of a package name, or an error explaining why it is not a name.
pub(crate) fn normalize_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    guard::catch(|| PackageName::from_str(name))
        .ok_or_else(|| format!("`{name}` made the package name parser fail"))?
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
    pub(crate) fn flag(&self) -> &'static str {
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

    /// The value, for options that take one.
    pub(crate) fn value(&self) -> Option<&str> {
        match self {
            Self::IndexUrl(v)
            | Self::ExtraIndexUrl(v)
            | Self::FindLinks(v)
            | Self::TrustedHost(v)
            | Self::Editable(v)
            | Self::Requirement(v)
            | Self::Constraint(v)
            | Self::OnlyBinary(v)
            | Self::NoBinary(v)
            | Self::UseFeature(v) => Some(v),
            Self::NoIndex | Self::Pre | Self::PreferBinary | Self::RequireHashes => None,
        }
    }

    /// `--flag=value` or `--flag`: read the same by pip and uv.
    pub(crate) fn canonical(&self) -> String {
        match self.value() {
            Some(v) => format!("{}={v}", self.flag()),
            None => self.flag().to_string(),
        }
    }

    fn from_parsed(p: Parsed) -> Result<Self, String> {
        let value = p.value.unwrap_or_default();
        Ok(match p.opt {
            Opt::IndexUrl => Self::IndexUrl(value),
            Opt::ExtraIndexUrl => Self::ExtraIndexUrl(value),
            Opt::FindLinks => Self::FindLinks(value),
            Opt::TrustedHost => Self::TrustedHost(value),
            Opt::Editable => Self::Editable(value),
            Opt::Requirement => Self::Requirement(value),
            Opt::Constraint => Self::Constraint(value),
            Opt::NoIndex => Self::NoIndex,
            Opt::Pre => Self::Pre,
            Opt::PreferBinary => Self::PreferBinary,
            Opt::RequireHashes => Self::RequireHashes,
            Opt::OnlyBinary => Self::OnlyBinary(value),
            Opt::NoBinary => Self::NoBinary(value),
            Opt::UseFeature => Self::UseFeature(value),
            Opt::GlobalOption | Opt::Hash | Opt::ConfigSettings => {
                return Err(format!(
                    "option {} belongs after a requirement on the same line (pip ignores it here, uv refuses it)",
                    p.opt.long()
                ));
            }
        })
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
        /// Per-requirement options in canonical form (`--hash=sha256:…`), in file order.
        options: Vec<String>,
    },
    /// A requirement given as a bare URL or path (`./pkg`, `https://…/x.whl`, `git+https://…`).
    Location(String),
    /// A line of global options (`-i …`, `--pre`, …): every option on it, as pip applies them.
    Options(Vec<FileOption>),
    /// A line that is none of the above, or one that pip and uv would read differently; the
    /// reason says why.
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

/// Longest line text quoted in messages.
const MESSAGE_CHARS: usize = 200;

impl Line {
    /// The logical text without line endings, continuations or comment, for messages: control,
    /// bidi and other invisible characters are escaped and long lines are shortened.
    pub(crate) fn text(&self) -> String {
        let logical = logical_text(guard::meaning(self.number, &self.raw));
        let text = strip_comment(&logical);
        let mut out = String::new();
        for (i, c) in text.trim().chars().enumerate() {
            if i == MESSAGE_CHARS {
                out.push('…');
                break;
            }
            if c.is_control() || guard::character(c.encode_utf8(&mut [0; 4])).is_some() {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// One requirement with the file's options, as [`RequirementsFile::installer_texts_each`] renders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Single {
    /// PEP 503 normalized name.
    pub name: String,
    /// The requirement without options, e.g. `flask[async]>=3.0`.
    pub spec: String,
    /// Every option line of the file, shared by all the file's singles (one copy, however many
    /// requirements: rendering stays linear in the file's size).
    pub options: std::sync::Arc<str>,
    /// This requirement's own line, with its own options (`--hash=…`).
    pub line: String,
}

impl Single {
    /// What the installer reads: the file's options, then this requirement.
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.options, self.line)
    }
}

/// A parsed requirements file that renders back to its exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequirementsFile {
    lines: Vec<Line>,
}

impl RequirementsFile {
    /// Split into logical lines and classify each. Never fails, never panics: lines that cannot be
    /// understood, or that pip and uv would read differently, become [`Entry::Invalid`] so the
    /// policy reports them with their number.
    pub fn parse(content: &str) -> Self {
        let mut lines = Vec::new();
        let mut number = 1;
        let mut physical = content.split_inclusive('\n');
        while let Some(first) = physical.next() {
            let mut raw = first.to_string();
            let mut parts = 1;
            let mut last = first;
            while continues(last) {
                match physical.next() {
                    Some(next) => {
                        raw.push_str(next);
                        parts += 1;
                        last = next;
                    }
                    None => break,
                }
            }
            // The raw line keeps a byte order mark, so the file renders back byte-exact.
            let meaning = guard::meaning(number, &raw);
            let entry = match physical_hazard(number, meaning) {
                Some(reason) => Entry::Invalid(reason),
                None => classify(&logical_text(meaning)),
            };
            lines.push(Line { number, raw, entry });
            number += parts;
        }
        Self { lines }
    }

    /// The exact text: parse → render of untouched content is byte-identical.
    pub fn render(&self) -> String {
        self.lines.iter().map(|l| l.raw.as_str()).collect()
    }

    /// What the installers receive: one `\n`-terminated line per requirement or option, in file
    /// order and canonical spelling (`--flag=value`, one option per line, `--hash=` kept after its
    /// requirement); comments and blank lines dropped. Rendered from this model, so the installers
    /// read exactly what the policy checked. Invalid lines and bare locations are left out: render
    /// only a file the policy accepted.
    pub fn installer_text(&self) -> String {
        let mut out = String::new();
        for line in &self.lines {
            match &line.entry {
                Entry::Requirement { spec, options, .. } => {
                    out.push_str(&requirement_line(spec, options));
                }
                Entry::Options(opts) => {
                    for o in opts {
                        out.push_str(&o.canonical());
                        out.push('\n');
                    }
                }
                Entry::Blank | Entry::Comment | Entry::Location(_) | Entry::Invalid(_) => {}
            }
        }
        out
    }

    /// One installer text per named requirement, to install each on its own: every option line
    /// of the file (index URLs, `--only-binary`, …; where they stand does not matter to pip or
    /// uv) and that one requirement with its own options (`--hash=…`), in the spelling of
    /// [`Self::installer_text`]. The options are rendered once and shared: linear in the file.
    pub fn installer_texts_each(&self) -> Vec<Single> {
        let mut options = String::new();
        for line in &self.lines {
            if let Entry::Options(opts) = &line.entry {
                for o in opts {
                    options.push_str(&o.canonical());
                    options.push('\n');
                }
            }
        }
        let options: std::sync::Arc<str> = options.into();
        self.lines
            .iter()
            .filter_map(|line| match &line.entry {
                Entry::Requirement {
                    name,
                    spec,
                    options: own,
                    ..
                } => Some(Single {
                    name: name.clone(),
                    spec: spec.clone(),
                    options: options.clone(),
                    line: requirement_line(spec, own),
                }),
                _ => None,
            })
            .collect()
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
        let bom = guard::has_bom(&self.lines);
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
        guard::keep_bom(&mut self.lines, bom);
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
        let (before, bom) = (self.lines.len(), guard::has_bom(&self.lines));
        self.lines
            .retain(|l| !matches!(&l.entry, Entry::Requirement { name, .. } if *name == wanted));
        guard::keep_bom(&mut self.lines, bom);
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

/// `spec --opt=… --opt=…\n`: a requirement as the installers receive it.
fn requirement_line(spec: &str, options: &[String]) -> String {
    let mut out = spec.to_string();
    for o in options {
        out.push(' ');
        out.push_str(o);
    }
    out.push('\n');
    out
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

/// A physical line without its `\n` or `\r\n`.
fn body(physical: &str) -> &str {
    match physical.strip_suffix('\n') {
        Some(b) => b.strip_suffix('\r').unwrap_or(b),
        None => physical,
    }
}

/// pip's `COMMENT_RE.match`: the whole line is a comment.
fn is_comment_line(body: &str) -> bool {
    body.trim_start().starts_with('#')
}

/// pip's `join_lines`: a line ending in `\` is joined with the next unless it is a comment line.
fn continues(physical: &str) -> bool {
    let b = body(physical);
    physical.ends_with('\n') && b.ends_with('\\') && !is_comment_line(b)
}

/// Join continuation lines and drop line endings.
fn logical_text(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for physical in raw.split_inclusive('\n') {
        let b = body(physical);
        match b.strip_suffix('\\') {
            Some(head) if continues(physical) => out.push_str(head),
            _ => out.push_str(b),
        }
    }
    out
}

/// What no physical line of a logical line may hold: characters the installers split or show
/// differently, and a continuation after a comment (pip joins the next line into the comment, uv
/// reads it as a line of its own).
fn physical_hazard(first: usize, raw: &str) -> Option<String> {
    for (i, physical) in raw.split_inclusive('\n').enumerate() {
        let b = body(physical);
        let at = |reason: String| {
            if i == 0 {
                reason
            } else {
                format!("{reason} (on line {}, continuing this one)", first + i)
            }
        };
        if let Some(reason) = guard::character(b) {
            return Some(at(reason));
        }
        if b.ends_with('\\') && guard::comment_start(b).is_some() {
            return Some(at(
                "a line-continuation backslash on a line with a comment: pip joins the next line into the comment, uv reads it as a line of its own"
                    .into(),
            ));
        }
    }
    None
}

/// Drop a comment: `#` at the start or after whitespace (pip's rule; `#` inside a URL fragment
/// such as `#egg=` is not a comment).
fn strip_comment(text: &str) -> &str {
    &text[..guard::comment_start(text).unwrap_or(text.len())]
}

/// pip's `break_args_options`: the requirement is every space-separated token before the first
/// one starting with `-`; the rest is options.
fn break_args_options(text: &str) -> (&str, Option<&str>) {
    let mut at = 0;
    for token in text.split(' ') {
        if token.starts_with('-') {
            return (text[..at].trim_end(), Some(&text[at..]));
        }
        at += token.len() + 1;
    }
    (text, None)
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

/// Classify one logical line (continuations already joined, line ending dropped).
pub(crate) fn classify(logical: &str) -> Entry {
    if let Some(reason) = guard::character(logical).or_else(|| guard::outside_comment(logical)) {
        return Entry::Invalid(reason);
    }
    if logical.trim().is_empty() {
        return Entry::Blank;
    }
    let text = strip_comment(logical).trim();
    if text.is_empty() {
        return Entry::Comment;
    }
    let (spec, option_text) = break_args_options(text);
    let parsed = match option_text.map(options::parse).transpose() {
        Ok(parsed) => parsed.unwrap_or_default(),
        Err(reason) => return Entry::Invalid(reason),
    };
    if spec.is_empty() {
        return match parsed
            .into_iter()
            .map(FileOption::from_parsed)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(opts) => Entry::Options(opts),
            Err(reason) => Entry::Invalid(reason),
        };
    }
    let options: Vec<String> = parsed.iter().map(Parsed::canonical).collect();
    if looks_like_location(spec) && !spec.contains('@') {
        return Entry::Location(spec.to_string());
    }
    if let Some(reason) = guard::requirement(spec) {
        return Entry::Invalid(reason);
    }
    let Some(parsed) = guard::catch(|| Requirement::<pep508_rs::VerbatimUrl>::from_str(spec))
    else {
        return Entry::Invalid("the requirement parser failed on this line".into());
    };
    match parsed {
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
        Err(_) if looks_like_location(spec) => Entry::Location(spec.to_string()),
        Err(e) => Entry::Invalid(format!("not a valid requirement: {}", e.message)),
    }
}

#[cfg(test)]
mod tests;
