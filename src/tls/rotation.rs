//! The rotation state machine of the self-managed certificate: pure (time, the Secret's content,
//! the trusted bundle and the issuer are passed in), so every transition is tested on plain
//! values. [`super::self_managed`] does the reading and writing.

use std::time::Duration;

use super::issue::{CertInfo, Issued, inspect, to_pem};
use super::resolver::certified_key;
use crate::error::Result;

/// A bundle keeps at most this many CAs: the current one, a staged one and the predecessors
/// that replicas may still be serving.
const MAX_BUNDLE: usize = 4;

/// The Secret's content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub bundle: String,
    pub next: Option<Issued>,
    /// Unix seconds when `next` was staged.
    pub staged_at: Option<i64>,
}

/// The serving certificate wanted: what it covers and how long it lasts; rotation timing
/// derives from the validity.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// DNS names / IPs the serving certificate must cover.
    pub names: Vec<String>,
    pub validity: Duration,
}

impl CertSpec {
    /// Stage a rotation when less than this is left: a third of the validity.
    fn renew_before(&self) -> i64 {
        (self.validity.as_secs() / 3).max(1) as i64
    }

    /// Promote a staged rotation after this long (and once the API server trusts the new CA).
    pub(crate) fn grace(&self) -> i64 {
        (self.validity.as_secs() / 20).clamp(1, 30) as i64
    }

    /// When a certificate issued at `now` is due for rotation.
    fn renew_at(&self, now: i64) -> i64 {
        now + self.validity.as_secs() as i64 - self.renew_before()
    }
}

/// What to do with the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to write.
    Keep,
    /// Write this content (`why` is logged).
    Write { stored: Box<Stored>, why: String },
}

/// One step of the rotation state machine. `now` in Unix seconds; `trusted`: the CA bundle the
/// webhook configuration holds (None when there is no configuration to protect); `issue` makes
/// a fresh CA and certificate. Returns the step and the Unix time to look again at the latest.
pub fn step(
    now: i64,
    stored: Option<&Stored>,
    spec: &CertSpec,
    trusted: Option<&[u8]>,
    issue: &dyn Fn() -> Result<Issued>,
) -> Result<(Step, i64)> {
    let Some((s, leaf)) = servable(stored, now) else {
        let why = if stored.is_some() {
            "the stored serving certificate is unusable or expired; issued a new one"
        } else {
            "issued the webhook's CA and serving certificate"
        };
        return issue_afresh(now, stored, spec, issue, why);
    };
    let bundle = bundle_of(&s.bundle);
    if let Some(next) = &s.next {
        return Ok(staged(now, s, next, &leaf, &bundle, spec, trusted));
    }
    let names_ok = spec.names.iter().all(|n| leaf.names.contains(n));
    if now >= leaf.not_after - spec.renew_before() || !names_ok {
        return stage(now, s, &leaf, &bundle, spec, issue);
    }
    Ok(tidy(now, s, &bundle, leaf.not_after - spec.renew_before()))
}

/// The stored content and its leaf, when the pair loads, the CA parses and the leaf has not
/// expired.
fn servable(stored: Option<&Stored>, now: i64) -> Option<(&Stored, CertInfo)> {
    let s = stored?;
    certified_key(s.cert.as_bytes(), s.key.as_bytes()).ok()?;
    let leaf = inspect(s.cert.as_bytes()).ok()?.into_iter().next()?;
    inspect(s.ca.as_bytes()).ok()?.into_iter().next()?;
    (leaf.not_after > now).then_some((s, leaf))
}

/// Issue at once, keeping the CAs of whatever may still be served.
fn issue_afresh(
    now: i64,
    stored: Option<&Stored>,
    spec: &CertSpec,
    issue: &dyn Fn() -> Result<Issued>,
    why: &str,
) -> Result<(Step, i64)> {
    let fresh = issue()?;
    let old = stored.map(|s| bundle_of(&s.bundle)).unwrap_or_default();
    let bundle = merge(now, &old, &[&fresh.ca]);
    let stored = Stored {
        ca: fresh.ca,
        cert: fresh.cert,
        key: fresh.key,
        bundle,
        next: None,
        staged_at: None,
    };
    Ok(write(stored, why, spec.renew_at(now)))
}

/// A rotation is due (time, or the names changed): stage a new CA and certificate beside the
/// current ones — unless the current certificate expires within the grace, when waiting for
/// trust would leave nothing to serve.
fn stage(
    now: i64,
    s: &Stored,
    leaf: &CertInfo,
    bundle: &[CertInfo],
    spec: &CertSpec,
    issue: &dyn Fn() -> Result<Issued>,
) -> Result<(Step, i64)> {
    if leaf.not_after - now <= spec.grace() {
        return issue_afresh(
            now,
            Some(s),
            spec,
            issue,
            "the serving certificate is about to expire and no rotation was staged; issued a new one",
        );
    }
    let next = issue()?;
    let bundle = merge(now, bundle, &[&next.ca, &s.ca]);
    let why = if spec.names.iter().all(|n| leaf.names.contains(n)) {
        format!(
            "serving certificate expires in {} s; staged a new CA and certificate",
            leaf.not_after - now
        )
    } else {
        format!(
            "serving certificate covers {:?}, not {:?}; staged a new CA and certificate",
            leaf.names, spec.names
        )
    };
    let stored = Stored {
        next: Some(next),
        staged_at: Some(now),
        bundle,
        ..s.clone()
    };
    Ok(write(stored, why, now + spec.grace()))
}

/// A rotation is staged: drop it when unusable, promote it once the API server trusts it (or
/// when the current certificate is about to expire), else keep the bundle right and wait.
fn staged(
    now: i64,
    s: &Stored,
    next: &Issued,
    leaf: &CertInfo,
    bundle: &[CertInfo],
    spec: &CertSpec,
    trusted: Option<&[u8]>,
) -> (Step, i64) {
    let grace = spec.grace();
    if !usable_until(next, now + grace) {
        let stored = Stored {
            next: None,
            staged_at: None,
            ..s.clone()
        };
        return write(stored, "dropped an unusable staged certificate", now);
    }
    let staged_at = s.staged_at.unwrap_or(now);
    let urgent = leaf.not_after - now <= grace;
    if (now >= staged_at + grace && trusts(trusted, &next.ca)) || urgent {
        return promote(now, s, next, bundle, spec);
    }
    let wanted = merge(now, bundle, &[&next.ca, &s.ca]);
    if s.bundle != wanted || s.staged_at.is_none() {
        let stored = Stored {
            bundle: wanted,
            staged_at: Some(staged_at),
            ..s.clone()
        };
        return write(
            stored,
            "repaired the CA bundle of a staged rotation",
            now + 1,
        );
    }
    (Step::Keep, (staged_at + grace).max(now + 1))
}

/// Whether a staged pair loads and its CA outlives `until`.
fn usable_until(next: &Issued, until: i64) -> bool {
    certified_key(next.cert.as_bytes(), next.key.as_bytes()).is_ok()
        && inspect(next.ca.as_bytes()).is_ok_and(|c| c.iter().all(|c| c.not_after > until))
}

/// Whether the webhook configuration's bundle holds every certificate of `ca` (no
/// configuration: nothing to protect, so yes).
fn trusts(trusted: Option<&[u8]>, ca: &str) -> bool {
    let Some(pem) = trusted else {
        return true;
    };
    let trusted = bundle_of(&String::from_utf8_lossy(pem));
    bundle_of(ca)
        .iter()
        .all(|n| trusted.iter().any(|t| t.der == n.der))
}

fn promote(
    now: i64,
    s: &Stored,
    next: &Issued,
    bundle: &[CertInfo],
    spec: &CertSpec,
) -> (Step, i64) {
    let stored = Stored {
        ca: next.ca.clone(),
        cert: next.cert.clone(),
        key: next.key.clone(),
        bundle: merge(now, bundle, &[&next.ca, &s.ca]),
        next: None,
        staged_at: None,
    };
    write(
        stored,
        "promoted the staged serving certificate (the old CA stays trusted until it expires)",
        spec.renew_at(now),
    )
}

/// Nothing is due: keep the bundle tidy (the current CA present, expired CAs gone) and look
/// again at the renewal time or when the first CA of the bundle expires.
fn tidy(now: i64, s: &Stored, bundle: &[CertInfo], renew_at: i64) -> (Step, i64) {
    let wanted = merge(now, bundle, &[&s.ca]);
    let ders = |b: &[CertInfo]| b.iter().map(|c| c.der.clone()).collect::<Vec<_>>();
    if ders(&bundle_of(&wanted)) != ders(bundle) {
        let stored = Stored {
            bundle: wanted,
            ..s.clone()
        };
        let why = "updated the CA bundle (current CA present, expired CAs removed)";
        return write(stored, why, now + 1);
    }
    let earliest_ca_expiry = bundle.iter().map(|c| c.not_after).min().unwrap_or(i64::MAX);
    (
        Step::Keep,
        renew_at.min(earliest_ca_expiry.saturating_add(1)),
    )
}

fn write(stored: Stored, why: impl Into<String>, next: i64) -> (Step, i64) {
    let step = Step::Write {
        stored: Box::new(stored),
        why: why.into(),
    };
    (step, next)
}

/// The certificates of a PEM bundle; an unreadable bundle counts as empty (it is rebuilt).
fn bundle_of(pem: &str) -> Vec<CertInfo> {
    inspect(pem.as_bytes()).unwrap_or_default()
}

/// Unexpired CAs of a bundle, plus the given ones, newest first, without duplicates.
fn merge(now: i64, keep: &[CertInfo], add: &[&str]) -> String {
    let mut all: Vec<CertInfo> = add.iter().flat_map(|p| bundle_of(p)).collect();
    all.extend(keep.iter().cloned());
    all.retain(|c| c.not_after > now);
    all.sort_by_key(|c| std::cmp::Reverse(c.not_after));
    let mut seen = Vec::new();
    all.retain(|c| {
        let fresh = !seen.contains(&c.der);
        seen.push(c.der.clone());
        fresh
    });
    all.truncate(MAX_BUNDLE);
    all.iter().map(|c| to_pem(&c.der)).collect()
}
