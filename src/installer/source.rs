//! Where the requirements come from: Redis, then the fallback file, then nothing.
//!
//! Redis is read with bounded retries (the cache's own attempts and backoff) under an overall
//! deadline. The fallback file is the ConfigMap snapshot the webhook mounts; it may hold the plain
//! requirements.txt (verified against a sibling file named `hash` when there is one) or Bifrost's
//! JSON payload `{"content": …, "hash": …}`. Every payload's hash is verified against its content.
//! With an expected hash (the one the pod was admitted for), a source holding it is preferred;
//! when none does, the newest (Redis) wins, and the log says so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cache::{Cache, CacheConfig, Payload};
use crate::error::{Error, Result};
use crate::redact;
use crate::requirements::{content_hash, hash_matches, hashes_equal};

/// Name of the file next to a plain fallback file that holds its hash (a ConfigMap key).
const HASH_FILE: &str = "hash";

/// Where a payload came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Redis { key: String },
    Fallback { path: PathBuf },
}

impl Origin {
    /// `redis` or `fallback-file` (marker and `--json`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Origin::Redis { .. } => "redis",
            Origin::Fallback { .. } => "fallback-file",
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Origin::Redis { key } => format!("Redis key {key}"),
            Origin::Fallback { path } => format!("fallback file {}", path.display()),
        }
    }
}

/// A verified payload and where it came from.
#[derive(Debug, Clone)]
pub(crate) struct Sourced {
    pub payload: Payload,
    pub origin: Origin,
}

/// What the sources yielded.
#[derive(Debug)]
pub(crate) enum Fetched {
    Found(Sourced),
    /// No source holds requirements (Redis answered without the key; no fallback file).
    Absent {
        why: String,
    },
}

/// What to read.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub redis: Option<CacheConfig>,
    pub redis_deadline: Duration,
    pub fallback_file: Option<PathBuf>,
    /// Normalized (lowercase hex, no prefix).
    pub expected_hash: Option<String>,
}

enum Read {
    Hit(Payload),
    /// The source is reachable/present but holds nothing.
    Miss(String),
    Failed(Error),
}

/// One source's answer, and where it came from.
struct Reading {
    origin: Origin,
    read: Read,
}

impl Reading {
    fn hit(&self) -> Option<Sourced> {
        match &self.read {
            Read::Hit(p) => Some(Sourced {
                payload: p.clone(),
                origin: self.origin.clone(),
            }),
            _ => None,
        }
    }

    fn into_error(self) -> Option<Error> {
        match self.read {
            Read::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// Read the sources in order. `warnings` collects what the user should know (also logged).
pub(crate) async fn fetch(sources: &Sources, warnings: &mut Vec<String>) -> Result<Fetched> {
    let mut warn = |msg: String| {
        tracing::warn!("{msg}");
        warnings.push(msg);
    };
    let expected = sources.expected_hash.as_deref();
    let redis = match &sources.redis {
        Some(config) => Some(Reading {
            origin: Origin::Redis {
                key: config.key.clone(),
            },
            read: read_redis(config, sources.redis_deadline).await,
        }),
        None => None,
    };
    // Redis holding what is expected (or anything, when nothing is): the fallback file is not
    // even read.
    if let Some(hit) = redis.as_ref().and_then(Reading::hit)
        && expected.is_none_or(|e| hashes_equal(&hit.payload.hash, e))
    {
        return Ok(Fetched::Found(hit));
    }
    let file = sources.fallback_file.as_ref().map(|path| Reading {
        origin: Origin::Fallback { path: path.clone() },
        read: read_fallback(path),
    });
    for reading in redis.iter().chain(&file) {
        say_why_not(reading, &mut warn);
    }
    let redis_hit = redis.as_ref().and_then(Reading::hit);
    let file_hit = file.as_ref().and_then(Reading::hit);
    let chosen = match expected {
        Some(expected) => prefer_expected(expected, redis_hit, file_hit, &mut warn),
        None => redis_hit.or(file_hit).inspect(|hit| {
            if let (Origin::Fallback { path }, Some(_)) = (&hit.origin, &sources.redis) {
                warn(format!(
                    "using the fallback file {} (sha256 {}) because Redis did not provide the requirements",
                    path.display(),
                    hit.payload.hash
                ));
            }
        }),
    };
    match chosen {
        Some(found) => Ok(Fetched::Found(found)),
        None => nothing(sources, redis, file),
    }
}

/// Say what went wrong with a source that did not deliver.
fn say_why_not(reading: &Reading, warn: &mut impl FnMut(String)) {
    match (&reading.read, &reading.origin) {
        (Read::Failed(e), Origin::Redis { .. }) => warn(format!("Redis unusable: {e}")),
        (Read::Failed(e), Origin::Fallback { .. }) => warn(e.to_string()),
        (Read::Miss(why), origin) => tracing::info!("{}: {why}", origin.describe()),
        (Read::Hit(_), _) => {}
    }
}

/// With an expected hash: the source holding it, else the newest (Redis), with a warning.
fn prefer_expected(
    expected: &str,
    redis_hit: Option<Sourced>,
    file_hit: Option<Sourced>,
    warn: &mut impl FnMut(String),
) -> Option<Sourced> {
    if let Some(f) = file_hit
        .as_ref()
        .filter(|f| hashes_equal(&f.payload.hash, expected))
    {
        if let Some(r) = &redis_hit {
            warn(format!(
                "Redis holds sha256 {}, not the expected {expected}; using the {} which holds the expected hash",
                r.payload.hash,
                f.origin.describe()
            ));
        }
        return Some(f.clone());
    }
    let newest = redis_hit.clone().or_else(|| file_hit.clone())?;
    let mut held = Vec::new();
    if let Some(r) = &redis_hit {
        held.push(format!("Redis holds {}", r.payload.hash));
    }
    if let Some(f) = &file_hit {
        held.push(format!("the fallback file holds {}", f.payload.hash));
    }
    warn(format!(
        "no source holds the expected sha256 {expected} ({}); installing the newest, from the {}",
        held.join(", "),
        newest.origin.describe()
    ));
    Some(newest)
}

/// Nothing usable. A failure anywhere makes this an error; otherwise there is just nothing.
fn nothing(sources: &Sources, redis: Option<Reading>, file: Option<Reading>) -> Result<Fetched> {
    let file_error = file.and_then(Reading::into_error);
    if let Some(e) = file_error.or_else(|| redis.and_then(Reading::into_error)) {
        return Err(e);
    }
    let mut why = Vec::new();
    match &sources.redis {
        Some(c) => why.push(format!("Redis key {} does not exist", c.key)),
        None => why.push("no Redis URL configured".into()),
    }
    match &sources.fallback_file {
        Some(p) => why.push(format!("fallback file {} does not exist", p.display())),
        None => why.push("no fallback file configured".into()),
    }
    Ok(Fetched::Absent {
        why: why.join("; "),
    })
}

async fn read_redis(config: &CacheConfig, deadline: Duration) -> Read {
    let url = redact::url(&config.url);
    tracing::info!("reading requirements from Redis {url}, key {}", config.key);
    let read = async {
        let cache = Cache::connect(config.clone()).await?;
        cache.get().await
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(Ok(Some(p))) => Read::Hit(p),
        Ok(Ok(None)) => Read::Miss("the key does not exist".into()),
        Ok(Err(e)) => Read::Failed(e),
        Err(_) => Read::Failed(Error::CacheConnect {
            url,
            reason: format!("no answer within the {deadline:?} deadline"),
        }),
    }
}

fn read_fallback(path: &Path) -> Read {
    let raw = match std::fs::read_to_string(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Read::Miss("does not exist".into());
        }
        Err(e) => {
            return Read::Failed(Error::Snapshot {
                path: path.to_path_buf(),
                reason: format!("cannot read it: {e}"),
            });
        }
    };
    match parse_snapshot(path, &raw) {
        Ok(p) => Read::Hit(p),
        Err(e) => Read::Failed(e),
    }
}

/// A fallback file's payload: Bifrost's JSON object, or plain requirements.txt checked against
/// a sibling `hash` file when one exists.
fn parse_snapshot(path: &Path, raw: &str) -> Result<Payload> {
    let bad = |reason: String| Error::Snapshot {
        path: path.to_path_buf(),
        reason,
    };
    // No requirements.txt line starts with `{`: such a file is meant as the JSON payload.
    if raw.trim_start().starts_with('{') {
        return Payload::from_json(&path.display().to_string(), raw).map_err(|e| match e {
            Error::CachePayload { reason, .. } => bad(reason),
            other => other,
        });
    }
    let hash_file = path.parent().unwrap_or(Path::new(".")).join(HASH_FILE);
    if hash_file != path
        && let Ok(stored) = std::fs::read_to_string(&hash_file)
    {
        let stored = stored.trim();
        if !hash_matches(raw, stored) {
            return Err(bad(format!(
                "hash mismatch: {} says {stored}, the content hashes to {}",
                hash_file.display(),
                content_hash(raw)
            )));
        }
    }
    Ok(Payload::new(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_plain_json_and_sibling_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requirements.txt");
        let plain = parse_snapshot(&path, "flask\n").unwrap();
        assert_eq!(plain, Payload::new("flask\n"));
        let json = Payload::new("flask\n").to_json();
        assert_eq!(parse_snapshot(&path, &json).unwrap(), plain);
        let err = parse_snapshot(&path, "{\"content\": \"x\", \"hash\": \"00\"}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fallback file") && err.contains("hash mismatch"),
            "{err}"
        );
        assert!(
            parse_snapshot(&path, "{oops")
                .unwrap_err()
                .to_string()
                .contains("not the JSON object")
        );
        std::fs::write(
            dir.path().join(HASH_FILE),
            format!("sha256:{}\n", plain.hash),
        )
        .unwrap();
        assert!(parse_snapshot(&path, "flask\n").is_ok());
        let err = parse_snapshot(&path, "django\n").unwrap_err().to_string();
        assert!(err.contains("hash mismatch"), "{err}");
    }
}
