//! Validation of a `WorkspaceRequirements` spec before anything is written from it.
//!
//! The webhook turns the spec into a pod patch that the API server validates much later, once
//! per pod; a value it refuses (a negative quantity, an unknown resource name, a Secret name that
//! is not a DNS subdomain, …) would make every labelled pod fail admission while the resource
//! looked healthy. So every field that ends up in a pod, in argv, in Redis or in the ConfigMap
//! snapshot is checked here, on plain values, with the rules the API server applies (stricter
//! where the API server accepts nonsense, e.g. a quantity without digits). The controller reports
//! the problems (`Valid=False`) and writes nothing; the webhook injects nothing from such a spec.
//!
//! [`pod_problems`] applies the same rules to a whole pod; tests use it on injected pods.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::cache::Payload;
use crate::crd::{InstallSpec, WorkspaceRequirements, WorkspaceRequirementsSpec};

/// Largest `spec.content`: the one limit every writer enforces ([`crate::limit`]).
pub use crate::limit::MAX_CONTENT_BYTES;
/// Largest `requirements.txt` + `payload.json` in the snapshot (content at the limit above, in
/// ASCII, takes ~530 KiB); the remaining 384 KiB of the ConfigMap's 1 MiB are for the lock file
/// and the object's metadata. Content full of non-ASCII characters hits this limit first.
pub const MAX_SNAPSHOT_BYTES: usize = 640 * 1024;
/// Kubernetes object names are at most 253 characters; the snapshot's is the resource's plus
/// this suffix.
const SNAPSHOT_SUFFIX: &str = "-requirements";
/// Resource names the install container accepts: the standard container resources that make
/// sense for an installer (hugepages and extended resources would need requests == limits and
/// have no use here).
pub const RESOURCE_NAMES: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];

/// Trees a volume must never be mounted over (equal or below): the image's system files.
const SYSTEM_TREES: [&str; 13] = [
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var/run",
    "/var/lib",
    "/var/log",
    "/bifrost-requirements",
];
/// Folders a volume must not replace (equal only): they hold what the image put there, and
/// below them a subfolder is fine (e.g. the default `/opt/bifrost/site-packages`, or the user
/// site-packages under `/home/<user>`). `/app` is where Bifrost's image keeps its code.
const SYSTEM_FOLDERS: [&str; 10] = [
    "/", "/app", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/tmp", "/var",
];

/// Why a spec was refused (the condition's reason), most fundamental first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Neither a source nor content: nothing says which packages to install.
    NoContent,
    /// The content is larger than the path to the workers can carry.
    TooLarge,
    /// A field the API server, the installer or Redis would refuse.
    InvalidSpec,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoContent => "NoContent",
            Reason::TooLarge => "TooLarge",
            Reason::InvalidSpec => "InvalidSpec",
        }
    }
}

/// One problem, with the field path it concerns (`spec.install.sizeLimit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem of a spec (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The condition reason: the most fundamental problem's.
    pub fn reason(&self) -> Reason {
        self.0
            .iter()
            .map(|p| p.reason)
            .min()
            .unwrap_or(Reason::InvalidSpec)
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[derive(Default)]
struct Collector(Vec<Problem>);

impl Collector {
    fn invalid(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.push(Reason::InvalidSpec, field, message);
    }
    fn push(&mut self, reason: Reason, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            reason,
            field: field.into(),
            message: message.into(),
        });
    }
    fn check(&mut self, field: impl Into<String>, r: Result<(), String>) {
        if let Err(m) = r {
            self.invalid(field, m);
        }
    }
}

/// Validate a resource: its name (the snapshot is named after it) and its spec.
pub fn validate(obj: &WorkspaceRequirements) -> Result<(), Problems> {
    validate_spec(&kube::ResourceExt::name_any(obj), &obj.spec)
}

/// Validate the spec of the resource named `name`.
pub fn validate_spec(name: &str, spec: &WorkspaceRequirementsSpec) -> Result<(), Problems> {
    let mut c = Collector::default();
    let snapshot = format!("{name}{SNAPSHOT_SUFFIX}");
    if snapshot.len() > 253 {
        c.invalid(
            "metadata.name",
            format!(
                "at most {} characters (the snapshot ConfigMap {snapshot:?} must fit 253)",
                253 - SNAPSHOT_SUFFIX.len()
            ),
        );
    }
    content(&mut c, spec);
    source(&mut c, spec);
    cache(&mut c, spec);
    install(&mut c, &spec.install);
    if c.0.is_empty() {
        Ok(())
    } else {
        Err(Problems(c.0))
    }
}

/// `spec.source`: one source at most, its Secret references and S3 settings.
fn source(c: &mut Collector, spec: &WorkspaceRequirementsSpec) {
    if let Some(db) = spec.source.as_ref().and_then(|s| s.database.as_ref()) {
        let f = "spec.source.database.urlSecretRef";
        c.check(format!("{f}.name"), dns_subdomain(&db.url_secret_ref.name));
        c.check(format!("{f}.key"), config_key(&db.url_secret_ref.key));
    }
    if let Some(source) = &spec.source
        && source.database.is_some()
        && source.s3.is_some()
    {
        c.invalid(
            "spec.source",
            "has both database and s3: set exactly one (the mirror follows one source of truth)",
        );
    }
    if let Some(s3) = spec.source.as_ref().and_then(|s| s.s3.as_ref()) {
        let f = "spec.source.s3";
        if let Err(e) = s3_config(s3, None).validate() {
            c.invalid(f, e.to_string());
        }
        if let Some(r) = &s3.credentials_secret_ref {
            c.check(
                format!("{f}.credentialsSecretRef.name"),
                dns_subdomain(&r.name),
            );
            c.check(
                format!("{f}.credentialsSecretRef.accessKeyIdKey"),
                config_key(&r.access_key_id_key),
            );
            c.check(
                format!("{f}.credentialsSecretRef.secretAccessKeyKey"),
                config_key(&r.secret_access_key_key),
            );
        }
    }
}

/// `spec.cache.redis`: its Secret reference and key.
fn cache(c: &mut Collector, spec: &WorkspaceRequirementsSpec) {
    if let Some(redis) = spec.cache.as_ref().and_then(|c| c.redis.as_ref()) {
        let f = "spec.cache.redis";
        c.check(
            format!("{f}.urlSecretRef.name"),
            dns_subdomain(&redis.url_secret_ref.name),
        );
        c.check(
            format!("{f}.urlSecretRef.key"),
            config_key(&redis.url_secret_ref.key),
        );
        c.check(format!("{f}.key"), redis_key(&redis.key));
    }
}

/// `spec.install`: what the webhook puts in the pod and the installer reads.
fn install(c: &mut Collector, install: &InstallSpec) {
    if let Err(m) = mount_path(&install.mount_path) {
        c.invalid("spec.install.mountPath", m);
    }
    for (i, url) in install.index_urls.iter().enumerate() {
        c.check(format!("spec.install.indexUrls[{i}]"), index_url(url));
    }
    for (i, entry) in install.python_path.iter().enumerate() {
        c.check(
            format!("spec.install.pythonPath[{i}]"),
            python_path_entry(entry),
        );
    }
    if let Some(image) = &install.image
        && !image.is_empty()
    {
        c.check("spec.install.image", image_reference(image));
    }
    if !install.size_limit.is_empty() {
        c.check(
            "spec.install.sizeLimit",
            parse_quantity(&install.size_limit).and_then(|q| {
                if q.nano > 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "{:?} must be greater than zero (omit it for no limit)",
                        install.size_limit
                    ))
                }
            }),
        );
    }
    if let Some(r) = &install.resources {
        for (field, message) in resource_problems(r, &[]) {
            c.invalid(format!("spec.install.resources{field}"), message);
        }
    }
    if let Some(python) = &install.python {
        for (field, message) in python.problems() {
            c.invalid(format!("spec.install.python.{field}"), message);
        }
    }
    if let Some(v) = &install.cache_volume {
        c.check(
            "spec.install.cacheVolume.claimName",
            dns_subdomain(&v.claim_name),
        );
    }
}

/// The S3 client configuration a `spec.source.s3` asks for (credentials read from its Secret).
pub fn s3_config(
    s3: &crate::crd::S3Source,
    credentials: Option<crate::s3::Credentials>,
) -> crate::s3::S3Config {
    let mut config = crate::s3::S3Config::new(s3.bucket.clone());
    config.key = s3.key.clone();
    config.region = s3.region.clone();
    config.endpoint = s3.endpoint.clone().filter(|e| !e.trim().is_empty());
    config.force_path_style = s3.path_style();
    config.credentials = credentials;
    config
}

fn content(c: &mut Collector, spec: &WorkspaceRequirementsSpec) {
    let has_source = spec
        .source
        .as_ref()
        .is_some_and(|s| s.database.is_some() || s.s3.is_some());
    if !has_source && spec.content.trim().is_empty() {
        c.push(
            Reason::NoContent,
            "spec.content",
            "empty, and there is no spec.source: nothing says which packages to install \
             (to install no packages, write a comment-only file, e.g. \"# no packages\")",
        );
        return;
    }
    let len = spec.content.len();
    if len > MAX_CONTENT_BYTES {
        c.push(
            Reason::TooLarge,
            "spec.content",
            crate::limit::exceeded(len),
        );
        return;
    }
    let snapshot = len + Payload::new(spec.content.as_str()).to_json().len();
    if snapshot > MAX_SNAPSHOT_BYTES {
        c.push(
            Reason::TooLarge,
            "spec.content",
            format!(
                "the ConfigMap snapshot would hold {snapshot} bytes (requirements.txt and its JSON \
                 payload, which escapes non-ASCII characters), over the limit of \
                 {MAX_SNAPSHOT_BYTES} bytes (640 KiB)"
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities.

/// A parsed quantity: its value in nano units (10⁻⁹), rounded away from zero as the API server
/// rounds anything finer than nano.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParsedQuantity {
    pub nano: i128,
}

/// The API server's largest quantity (2⁶³−1 units); above it, versions disagree (1.20 caps every
/// quantity, later ones only binary-SI ones), so a larger value is refused.
const MAX_NANO: i128 = (i64::MAX as i128) * 1_000_000_000;

/// Parse a quantity as the API server does (`resource.ParseQuantity`):
/// `<sign>? <digits>? (. <digits>?)? <suffix>`, suffix one of `Ki Mi Gi Ti Pi Ei`,
/// `n u m "" k M G T P E`, or `e`/`E` and a signed integer. Stricter than the API server where it
/// accepts nonsense: the number needs a digit (the API server reads `Gi`, `.` and `-` as zero),
/// an exponent must fit 32 bits (the API server wraps it around), and the magnitude must not
/// exceed 2⁶³−1.
pub fn parse_quantity(s: &str) -> Result<ParsedQuantity, String> {
    let fail = |why: &str| format!("{s:?} is not a Kubernetes quantity: {why}");
    let number = split_quantity(s).map_err(fail)?;
    let (exp10, exp2) = suffix_scale(number.suffix).map_err(fail)?;
    let digits = format!("{}{}", number.int_digits, number.frac_digits);
    let digits = digits.trim_start_matches('0');
    let exp10 = exp10 - number.frac_digits.len() as i64;
    match to_nano(digits, exp10, exp2) {
        Some(n) if n <= MAX_NANO => Ok(ParsedQuantity {
            nano: if number.negative { -n } else { n },
        }),
        _ => Err(fail("larger than 2^63-1")),
    }
}

/// A quantity cut into its parts, not yet scaled.
struct QuantityParts<'a> {
    negative: bool,
    int_digits: &'a str,
    frac_digits: &'a str,
    suffix: &'a str,
}

/// Sign, digits and suffix of a quantity; the error says what is wrong with it.
fn split_quantity(s: &str) -> Result<QuantityParts<'_>, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    let b = s.as_bytes();
    let mut pos = 0;
    let negative = match b[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let digits_from = |pos: usize| {
        b[pos..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(b.len(), |n| pos + n)
    };
    let int_end = digits_from(pos);
    let int_digits = &s[pos..int_end];
    pos = int_end;
    let mut frac_digits = "";
    if b.get(pos) == Some(&b'.') {
        let frac_end = digits_from(pos + 1);
        frac_digits = &s[pos + 1..frac_end];
        pos = frac_end;
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err("no digits before the suffix");
    }
    // The API server's scanner: letters from this set, an optional sign, digits, the end.
    let suffix = &s[pos..];
    let letters = suffix
        .bytes()
        .position(|c| !b"eEinumkKMGTP".contains(&c))
        .unwrap_or(suffix.len());
    let rest = &suffix[letters..];
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if !rest.bytes().all(|c| c.is_ascii_digit()) {
        return Err("unexpected characters (spaces, units such as GB, …)");
    }
    Ok(QuantityParts {
        negative,
        int_digits,
        frac_digits,
        suffix,
    })
}

/// The power of ten and of two a suffix stands for.
fn suffix_scale(suffix: &str) -> Result<(i64, u32), &'static str> {
    Ok(match suffix {
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "" => (0, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        e if e.len() > 1 && e.starts_with(['e', 'E']) => {
            let exp = &e[1..];
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err("the exponent is not an integer");
            }
            match exp.parse::<i32>() {
                Ok(v) => (i64::from(v), 0),
                Err(_) => return Err("the exponent is out of range"),
            }
        }
        _ => {
            return Err(
                "unknown suffix (use Ki, Mi, Gi, Ti, Pi, Ei, n, u, m, k, M, G, T, P, E or e<exp>)",
            );
        }
    })
}

/// `digits × 10^exp10 × 2^exp2` in nano units, rounded up; `None` when far too large.
fn to_nano(digits: &str, exp10: i64, exp2: u32) -> Option<i128> {
    if digits.is_empty() {
        return Some(0);
    }
    let n = digits.len() as i64;
    let scale = exp10.checked_add(9)?;
    let log2_10 = f64::from(exp2) * std::f64::consts::LOG10_2;
    // Bounds of the value's decimal magnitude: decide the extremes without big arithmetic.
    let lowest = (n - 1).saturating_add(scale) as f64 + log2_10;
    if lowest > 29.0 {
        return None;
    }
    if (n.saturating_add(scale) as f64 + log2_10) < -1.0 {
        return Some(1); // non-zero below a nano: the API server rounds it up to 1n
    }
    // digits × 2^exp2, exactly, as decimal digits (most significant first).
    let mut value: Vec<u8> = digits.bytes().map(|c| c - b'0').collect();
    for _ in 0..exp2 / 10 {
        let mut carry = 0u32;
        for d in value.iter_mut().rev() {
            let x = u32::from(*d) * 1024 + carry;
            *d = (x % 10) as u8;
            carry = x / 10;
        }
        while carry > 0 {
            value.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }
    let (int_part, round_up): (&[u8], bool) = if scale >= 0 {
        (&value, false)
    } else {
        let cut = value.len().saturating_sub(scale.unsigned_abs() as usize);
        (&value[..cut], value[cut..].iter().any(|d| *d != 0))
    };
    let mut out: i128 = 0;
    for d in int_part {
        out = out.checked_mul(10)?.checked_add(i128::from(*d))?;
    }
    if scale > 0 {
        for _ in 0..scale {
            out = out.checked_mul(10)?;
        }
    }
    Some(out + i128::from(round_up))
}

/// Whether `s` parses as a quantity (sign and size not considered).
pub fn valid_quantity(s: &str) -> bool {
    parse_quantity(s).is_ok()
}

/// Problems of a container's resources, as (field suffix such as `.limits[cpu]`, message), by the
/// API server's rules: known names, non-negative quantities, requests ≤ limits. `extra` names
/// further allowed resource names (none for the install container).
pub fn resource_problems(r: &ResourceRequirements, extra: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if r.claims.as_ref().is_some_and(|c| !c.is_empty()) {
        out.push((
            ".claims".into(),
            "resource claims are not supported for the install container".into(),
        ));
    }
    let mut parsed: [BTreeMap<&str, ParsedQuantity>; 2] = Default::default();
    for (i, (part, map)) in [("requests", &r.requests), ("limits", &r.limits)]
        .into_iter()
        .enumerate()
    {
        for (name, q) in map.iter().flatten() {
            let field = format!(".{part}[{name}]");
            if !RESOURCE_NAMES.contains(&name.as_str()) && !extra.contains(&name.as_str()) {
                out.push((
                    field,
                    format!(
                        "unknown resource {name:?} (allowed: {})",
                        RESOURCE_NAMES.join(", ")
                    ),
                ));
                continue;
            }
            match parse_quantity(&q.0) {
                Ok(v) if v.nano < 0 => {
                    out.push((field, format!("{:?} must not be negative", q.0)));
                }
                Ok(v) => {
                    parsed[i].insert(name.as_str(), v);
                }
                Err(m) => out.push((field, m)),
            }
        }
    }
    for (name, request) in &parsed[0] {
        if let Some(limit) = parsed[1].get(name)
            && request > limit
        {
            let q = |m: &Option<BTreeMap<String, Quantity>>| {
                m.as_ref()
                    .and_then(|m| m.get(*name))
                    .map(|q| q.0.clone())
                    .unwrap_or_default()
            };
            out.push((
                format!(".requests[{name}]"),
                format!(
                    "{:?} must not exceed the limit {:?}",
                    q(&r.requests),
                    q(&r.limits)
                ),
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Names, paths, keys, URLs.

/// A DNS subdomain (RFC 1123): object names such as Secrets, ConfigMaps and claims.
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid object name (lowercase letters, digits, '-' and '.', starting \
             and ending with a letter or digit, at most 253 characters)"
        ))
    }
}

/// A DNS label (RFC 1123): container and volume names.
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.len() <= 63 && !s.contains('.') && dns_subdomain(s).is_ok() {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid name (lowercase letters, digits and '-', at most 63 characters)"
        ))
    }
}

/// A key of a Secret or ConfigMap.
pub fn config_key(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && !s.starts_with("..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid key (letters, digits, '-', '_' and '.', at most 253 characters)"
        ))
    }
}

fn no_space(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    match s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        Some(c) => Err(format!(
            "{s:?}: the {what} must not contain whitespace or control characters (found {c:?})"
        )),
        None => Ok(()),
    }
}

/// The Redis key: passed on the install container's command line and to Redis.
pub fn redis_key(s: &str) -> Result<(), String> {
    no_space(s, "Redis key")
}

/// An index URL: `scheme://…`, no whitespace (it becomes an installer argument).
pub fn index_url(s: &str) -> Result<(), String> {
    no_space(s, "index URL")?;
    let scheme_ok = s.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    if scheme_ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a URL (expected scheme://host/…, e.g. https://pypi.org/simple)"
        ))
    }
}

/// An image reference (no whitespace; the API server refuses surrounding spaces).
pub fn image_reference(s: &str) -> Result<(), String> {
    no_space(s, "image reference")
}

/// A `spec.install.pythonPath` entry: an absolute folder, without `:` (the separator) or
/// whitespace.
pub fn python_path_entry(entry: &str) -> Result<(), String> {
    if !entry.starts_with('/') {
        return Err(format!("{entry:?} must be an absolute path (e.g. /app)"));
    }
    match entry
        .chars()
        .find(|c| *c == ':' || c.is_control() || c.is_whitespace())
    {
        Some(c) => Err(format!(
            "{entry:?} must not contain {c:?} (':' separates PYTHONPATH entries; whitespace and \
             control characters are refused)"
        )),
        None => Ok(()),
    }
}

/// `mountPath`: absolute, normalised (no `.`, `..` or empty components; one trailing `/` is
/// dropped), no `:` (it goes into PYTHONPATH), outside the image's system folders and our own.
/// Returns the path without its trailing `/`.
pub fn mount_path(path: &str) -> Result<&str, String> {
    let p = path.strip_suffix('/').unwrap_or(path);
    if !path.starts_with('/') || p.is_empty() {
        return Err(format!(
            "{path:?} must be an absolute path other than / (e.g. /opt/bifrost/site-packages)"
        ));
    }
    if let Some(c) = p
        .chars()
        .find(|c| *c == ':' || c.is_control() || c.is_whitespace())
    {
        return Err(format!(
            "{path:?} must not contain {c:?} (':' separates PYTHONPATH entries; whitespace and \
             control characters are refused)"
        ));
    }
    if p[1..]
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "{path:?} is not normalised (no '//', '.' or '..' components)"
        ));
    }
    let first = p[1..].split('/').next().unwrap_or_default();
    let under = |tree: &str| p == tree || p.starts_with(&format!("{tree}/"));
    if first.starts_with("lib") || SYSTEM_TREES.iter().any(|t| under(t)) {
        return Err(format!(
            "{path:?} is inside a system folder ({}, /lib*) or /bifrost-requirements; an empty \
             volume there would hide the image's files",
            SYSTEM_TREES[..SYSTEM_TREES.len() - 1].join(", ")
        ));
    }
    if SYSTEM_FOLDERS.contains(&p) {
        return Err(format!(
            "{path:?} would replace a whole system folder ({}); use a subfolder",
            SYSTEM_FOLDERS.join(", ")
        ));
    }
    if p.len() > 1024 {
        return Err(format!("{} characters: at most 1024", p.chars().count()));
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// Pods.

/// What the API server would refuse in `pod` (a subset of its validation: names, volumes,
/// mounts, resources, env, Secret references, emptyDir limits). Empty when fine.
pub fn pod_problems(pod: &Pod) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = pod.spec.as_ref() else {
        return vec!["spec: missing".into()];
    };
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let f = format!("spec.volumes[{i}]");
        if let Err(m) = dns_label(&v.name) {
            out.push(format!("{f}.name: {m}"));
        }
        if !volumes.insert(v.name.as_str()) {
            out.push(format!("{f}.name: duplicate {:?}", v.name));
        }
        if let Some(limit) = v.empty_dir.as_ref().and_then(|e| e.size_limit.as_ref()) {
            match parse_quantity(&limit.0) {
                Ok(q) if q.nano < 0 => out.push(format!("{f}.emptyDir.sizeLimit: negative")),
                Ok(_) => {}
                Err(m) => out.push(format!("{f}.emptyDir.sizeLimit: {m}")),
            }
        }
        if let Some(cm) = &v.config_map
            && let Err(m) = dns_subdomain(&cm.name)
        {
            out.push(format!("{f}.configMap.name: {m}"));
        }
        if let Some(pvc) = &v.persistent_volume_claim
            && let Err(m) = dns_subdomain(&pvc.claim_name)
        {
            out.push(format!("{f}.persistentVolumeClaim.claimName: {m}"));
        }
    }
    let mut names = HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (list, c) in all {
        let i = index.entry(list).or_default();
        let f = format!("spec.{list}[{i}]");
        *i += 1;
        if !names.insert(c.name.as_str()) {
            out.push(format!("{f}.name: duplicate {:?}", c.name));
        }
        container_problems(c, &f, &volumes, &mut out);
    }
    out
}

fn container_problems(c: &Container, f: &str, volumes: &HashSet<&str>, out: &mut Vec<String>) {
    if let Err(m) = dns_label(&c.name) {
        out.push(format!("{f}.name: {m}"));
    }
    match c.image.as_deref() {
        Some(image) if image.trim() == image && !image.is_empty() => {}
        other => out.push(format!(
            "{f}.image: {other:?} is empty or has surrounding spaces"
        )),
    }
    let mut paths = HashSet::new();
    for (j, m) in c.volume_mounts.iter().flatten().enumerate() {
        if !volumes.contains(m.name.as_str()) {
            out.push(format!(
                "{f}.volumeMounts[{j}].name: no volume {:?}",
                m.name
            ));
        }
        if m.mount_path.is_empty() || !paths.insert(m.mount_path.as_str()) {
            out.push(format!(
                "{f}.volumeMounts[{j}].mountPath: {:?} empty or not unique",
                m.mount_path
            ));
        }
    }
    for (j, e) in c.env.iter().flatten().enumerate() {
        let name_ok = !e.name.is_empty()
            && !e.name.starts_with(|c: char| c.is_ascii_digit())
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !name_ok {
            out.push(format!("{f}.env[{j}].name: {:?} is not valid", e.name));
        }
        if let Some(s) = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
        {
            if let Err(m) = dns_subdomain(&s.name) {
                out.push(format!("{f}.env[{j}].valueFrom.secretKeyRef.name: {m}"));
            }
            if let Err(m) = config_key(&s.key) {
                out.push(format!("{f}.env[{j}].valueFrom.secretKeyRef.key: {m}"));
            }
        }
    }
    if let Some(r) = &c.resources {
        for (field, m) in resource_problems(r, &[]) {
            out.push(format!("{f}.resources{field}: {m}"));
        }
    }
}

#[cfg(test)]
mod tests;
