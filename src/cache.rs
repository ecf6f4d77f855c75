//! The Redis cache of requirements.txt, wire-compatible with Bifrost.
//!
//! Bifrost's workers read `bifrost:requirements:content` on start-up, expecting the JSON object
//! `{"content": "<requirements.txt>", "hash": "<sha256 hex>"}` written with `SETEX` (TTL one day).
//! We write the very bytes Python's `json.dumps` produces for that dict, so a value written by us
//! and one written by Bifrost are indistinguishable, and we verify the hash on every read so a
//! corrupted or tampered value is never installed.

use std::time::Duration;

use redis::AsyncCommands;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::redact;
use crate::requirements::{content_hash, hash_matches, normalize_hash};

/// Default Redis key, as Bifrost uses it.
pub(crate) const DEFAULT_KEY: &str = "bifrost:requirements:content";
/// Default TTL, as Bifrost uses it (one day).
pub(crate) const DEFAULT_TTL_SECONDS: u64 = 86_400;

/// How to reach Redis and which key to use. `Debug` shows the URL redacted.
#[derive(Clone)]
pub struct CacheConfig {
    pub url: String,
    pub key: String,
    pub ttl: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    /// Attempts per operation (connect and each command), with exponential backoff between them.
    pub attempts: u32,
    pub backoff: Duration,
}

impl std::fmt::Debug for CacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheConfig")
            .field("url", &redact::url(&self.url))
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl CacheConfig {
    /// A crate error's text fit for messages: the redis crate may repeat the URL (or parts of
    /// it, decoded) in its errors.
    fn scrub(&self, e: &impl std::fmt::Display) -> String {
        redact::scrub(&e.to_string(), &self.url)
    }

    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key: DEFAULT_KEY.to_string(),
            ttl: Duration::from_secs(DEFAULT_TTL_SECONDS),
            connect_timeout: Duration::from_secs(3),
            command_timeout: Duration::from_secs(3),
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// The cached requirements: content and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    pub content: String,
    /// Lowercase hex, as stored (a `sha256:` prefix written by someone else is dropped).
    pub hash: String,
}

impl Payload {
    pub fn new(content: impl Into<String>) -> Self {
        let content = content.into();
        let hash = content_hash(&content);
        Self { content, hash }
    }

    /// Exactly what Python's `json.dumps({"content": c, "hash": h})` prints.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(self.content.len() + 100);
        out.push_str("{\"content\": ");
        push_python_json_string(&mut out, &self.content);
        out.push_str(", \"hash\": ");
        push_python_json_string(&mut out, &self.hash);
        out.push('}');
        out
    }

    /// Parse and verify a stored value. `key` is only used in error messages.
    pub fn from_json(key: &str, raw: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct Wire {
            content: Option<String>,
            hash: Option<String>,
        }
        let bad = |reason: String| Error::CachePayload {
            key: key.to_string(),
            reason,
        };
        let wire: Wire = serde_json::from_str(raw).map_err(|e| {
            bad(format!(
                "not the JSON object {{\"content\": …, \"hash\": …}} ({e})"
            ))
        })?;
        let content = wire
            .content
            .ok_or_else(|| bad("the \"content\" field is missing or null".into()))?;
        let hash = wire
            .hash
            .ok_or_else(|| bad("the \"hash\" field is missing or null".into()))?;
        if !hash_matches(&content, &hash) {
            return Err(bad(format!(
                "hash mismatch: stored {hash}, content hashes to {}",
                content_hash(&content)
            )));
        }
        Ok(Self {
            content,
            hash: normalize_hash(&hash),
        })
    }
}

/// JSON string encoding with Python's defaults (`ensure_ascii=True`).
fn push_python_json_string(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A connected cache. Cheap to clone (one multiplexed connection).
#[derive(Clone)]
pub struct Cache {
    conn: redis::aio::MultiplexedConnection,
    config: CacheConfig,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("url", &redact::url(&self.config.url))
            .field("key", &self.config.key)
            .finish()
    }
}

impl Cache {
    /// Connect with bounded retries; the error names the (redacted) URL.
    pub async fn connect(config: CacheConfig) -> Result<Self> {
        let url = redact::url(&config.url);
        let client = redis::Client::open(config.url.as_str()).map_err(|e| Error::CacheConnect {
            url: url.clone(),
            reason: format!("invalid Redis URL: {}", config.scrub(&e)),
        })?;
        let conn_config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout));
        let mut last = String::new();
        for attempt in 0..config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff(config.backoff, attempt)).await;
            }
            let fut = client.get_multiplexed_async_connection_with_config(&conn_config);
            match tokio::time::timeout(config.connect_timeout + Duration::from_millis(500), fut)
                .await
            {
                Ok(Ok(mut conn)) => {
                    // A PING proves the server answers (and that AUTH, if any, worked).
                    match redis::cmd("PING").query_async::<String>(&mut conn).await {
                        Ok(_) => return Ok(Self { conn, config }),
                        Err(e) => last = config.scrub(&e),
                    }
                }
                Ok(Err(e)) => last = config.scrub(&e),
                Err(_) => last = format!("timed out after {:?}", config.connect_timeout),
            }
            tracing::debug!(attempt, error = %last, url = %url, "Redis connect failed");
        }
        Err(Error::CacheConnect { url, reason: last })
    }

    pub(crate) fn key(&self) -> &str {
        &self.config.key
    }

    pub(crate) fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Write `content` with `SETEX key ttl json` and return what was written.
    pub async fn put(&self, content: &str) -> Result<Payload> {
        let payload = Payload::new(content);
        self.put_payload(&payload).await?;
        Ok(payload)
    }

    /// Write a payload as it is (its hash must match; callers build it with [`Payload::new`]).
    pub(crate) async fn put_payload(&self, payload: &Payload) -> Result<()> {
        let json = payload.to_json();
        let ttl = self.config.ttl.as_secs().max(1);
        self.retry("writing the requirements (SETEX)", |mut conn, key| {
            let json = json.clone();
            async move { conn.set_ex::<_, _, ()>(key, json, ttl).await }
        })
        .await
    }

    /// Read and verify. `Ok(None)` when the key does not exist.
    pub async fn get(&self) -> Result<Option<Payload>> {
        let raw: Option<String> = self
            .retry(
                "reading the requirements (GET)",
                |mut conn, key| async move { conn.get::<_, Option<String>>(key).await },
            )
            .await?;
        raw.map(|raw| Payload::from_json(&self.config.key, &raw))
            .transpose()
    }

    /// Remaining TTL in seconds (`None` when the key is missing or has no TTL).
    pub async fn ttl(&self) -> Result<Option<u64>> {
        let ttl: i64 = self
            .retry("reading the TTL", |mut conn, key| async move {
                conn.ttl::<_, i64>(key).await
            })
            .await?;
        Ok(u64::try_from(ttl).ok())
    }

    async fn retry<T, F, Fut>(&self, context: &'static str, op: F) -> Result<T>
    where
        F: Fn(redis::aio::MultiplexedConnection, String) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut last = String::new();
        for attempt in 0..self.config.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff(self.config.backoff, attempt)).await;
            }
            let fut = op(self.conn.clone(), self.config.key.clone());
            match tokio::time::timeout(
                self.config.command_timeout + Duration::from_millis(500),
                fut,
            )
            .await
            {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => last = self.config.scrub(&e),
                Err(_) => last = format!("timed out after {:?}", self.config.command_timeout),
            }
            tracing::debug!(attempt, error = %last, context, "Redis command failed");
        }
        Err(Error::Cache {
            context,
            key: self.config.key.clone(),
            reason: last,
        })
    }
}

/// Exponential backoff with ±25 % jitter, capped at 5 s.
pub(crate) fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(10).saturating_sub(1));
    let capped = exp.min(Duration::from_secs(5));
    let jitter = rand::random_range(0.75..1.25);
    capped.mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_byte_identical_to_python_json_dumps() {
        // python3 -c 'import json; print(json.dumps({"content": "a==1\n\"x\"\té☃😀\\", "hash": "h"}))'
        let p = Payload {
            content: "a==1\n\"x\"\té☃😀\\\u{1}\u{7f}".into(),
            hash: "h".into(),
        };
        assert_eq!(
            p.to_json(),
            r#"{"content": "a==1\n\"x\"\t\u00e9\u2603\ud83d\ude00\\\u0001\u007f", "hash": "h"}"#
        );
    }

    #[test]
    fn reads_verify_the_hash_and_accept_a_prefix() {
        let p = Payload::new("requests==2.32.3\n");
        assert_eq!(Payload::from_json("k", &p.to_json()).unwrap(), p);
        let prefixed = format!(
            r#"{{"content": "requests==2.32.3\n", "hash": "sha256:{}"}}"#,
            p.hash
        );
        assert_eq!(Payload::from_json("k", &prefixed).unwrap(), p);
        let wrong = r#"{"content": "x", "hash": "0000"}"#;
        let err = Payload::from_json("k", wrong).unwrap_err().to_string();
        assert!(
            err.contains("hash mismatch") && err.contains("\"k\""),
            "{err}"
        );
        for (raw, why) in [
            ("not json", "not the JSON object"),
            ("[1,2]", "not the JSON object"),
            (r#"{"hash": "x"}"#, "content"),
            (r#"{"content": "x"}"#, "hash"),
            (r#"{"content": 1, "hash": "x"}"#, "not the JSON object"),
        ] {
            let err = Payload::from_json("k", raw).unwrap_err().to_string();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        assert!(backoff(base, 1) <= Duration::from_millis(125));
        assert!(backoff(base, 3) >= Duration::from_millis(300));
        assert!(backoff(base, 30) <= Duration::from_millis(6250));
    }
}
