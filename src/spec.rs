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

mod names;
mod pod;
mod quantity;

use std::fmt;

use crate::cache::Payload;
use crate::crd::{InstallSpec, WorkspaceRequirements, WorkspaceRequirementsSpec};

pub use names::mount_path;
pub(crate) use names::{index_url, redis_key};

pub(crate) use names::{config_key, dns_label, dns_subdomain, image_reference, python_path_entry};
pub use pod::pod_problems;
pub use quantity::parse_quantity;
pub(crate) use quantity::resource_problems;

/// Largest `spec.content`: the one limit every writer enforces ([`crate::limit`]).
pub use crate::limit::MAX_CONTENT_BYTES;
/// Largest `requirements.txt` + `payload.json` in the snapshot (content at the limit above, in
/// ASCII, takes ~530 KiB); the remaining 384 KiB of the ConfigMap's 1 MiB are for the lock file
/// and the object's metadata. Content full of non-ASCII characters hits this limit first.
const MAX_SNAPSHOT_BYTES: usize = 640 * 1024;
/// Kubernetes object names are at most 253 characters; the snapshot's is the resource's plus
/// this suffix.
const SNAPSHOT_SUFFIX: &str = "-requirements";

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
    pub(crate) fn as_str(self) -> &'static str {
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
    pub(crate) fn reason(&self) -> Reason {
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
    wheelhouse(&mut c, spec);
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
            credentials_ref(c, f, r);
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

/// `spec.install.wheelhouse`: the bucket it lands in (given, or shared with `spec.source.s3`),
/// its prefix, endpoint, region and Secret reference.
fn wheelhouse(c: &mut Collector, spec: &WorkspaceRequirementsSpec) {
    let f = "spec.install.wheelhouse.s3";
    let target = match crate::crd::wheelhouse_target(spec) {
        Ok(Some(t)) => t,
        Ok(None) => return,
        Err(e) => return c.invalid(f, e),
    };
    let shown = |r: crate::error::Result<()>| r.map_err(|e| e.to_string());
    c.check(
        format!("{f}.bucket"),
        shown(crate::s3::validate_bucket(&target.bucket)),
    );
    c.check(
        format!("{f}.prefix"),
        crate::wheelhouse::valid_prefix(&target.prefix).map(drop),
    );
    c.check(
        format!("{f}.region"),
        shown(crate::s3::validate_region(&target.region)),
    );
    if let Some(endpoint) = &target.endpoint {
        c.check(
            format!("{f}.endpoint"),
            shown(crate::s3::validate_endpoint(endpoint)),
        );
    }
    if let Some(r) = &target.credentials {
        credentials_ref(c, f, r);
    }
}

/// `{at}.credentialsSecretRef`: a Secret name and two keys the API server accepts.
fn credentials_ref(c: &mut Collector, at: &str, r: &crate::crd::S3CredentialsRef) {
    let at = format!("{at}.credentialsSecretRef");
    c.check(format!("{at}.name"), dns_subdomain(&r.name));
    c.check(
        format!("{at}.accessKeyIdKey"),
        config_key(&r.access_key_id_key),
    );
    c.check(
        format!("{at}.secretAccessKeyKey"),
        config_key(&r.secret_access_key_key),
    );
}

/// The S3 client configuration a `spec.source.s3` asks for (credentials read from its Secret).
pub(crate) fn s3_config(
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

#[cfg(test)]
mod tests;
