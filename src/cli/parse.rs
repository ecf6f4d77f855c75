//! Value parsers of the command-line flags: each names the bad value and says what is expected.

use std::time::Duration;

use crate::requirements::normalize_hash;

/// Go's duration syntax (`1500ms`, `3s`, `1h30m`) or plain seconds: see [`crate::duration`].
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// `--cert-validity`: renewing at a third of less than 10 s would leave no time to roll out.
pub(crate) fn validity(s: &str) -> Result<Duration, String> {
    crate::duration::at_least(s, Duration::from_secs(10), "10s")
}

/// `--tls-check-interval`: shorter would only spin.
pub(crate) fn check_interval(s: &str) -> Result<Duration, String> {
    crate::duration::at_least(s, Duration::from_millis(100), "100ms")
}

/// `--resolver-memory-limit`: a Kubernetes quantity of bytes (`512Mi`, `1G`, `536870912`), at
/// least 64Mi (uv holds 25 to 40 MiB resident resolving a single wheel).
pub(crate) fn memory(s: &str) -> Result<u64, String> {
    let q = crate::spec::parse_quantity(s)?;
    let bytes = u64::try_from(q.nano / 1_000_000_000)
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if bytes < 64 << 20 {
        return Err(format!(
            "`{s}` is less than 64Mi, too little for uv to start"
        ));
    }
    Ok(bytes)
}

/// `--timeout`, `--redis-deadline`: a positive duration (`300`, `90s`, `5m`).
pub(crate) fn timeout(s: &str) -> Result<Duration, String> {
    let d = duration(s)?;
    if d.is_zero() {
        return Err(format!("`{s}` must be greater than zero"));
    }
    Ok(d)
}

/// `--expected-hash`: a SHA-256 hex digest, with or without `sha256:`.
pub(crate) fn expected_hash(s: &str) -> Result<String, String> {
    let h = normalize_hash(s);
    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(h)
    } else {
        Err(format!(
            "`{s}` is not a SHA-256 hex digest (64 hex characters, optionally prefixed with sha256:)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert!(duration("3 parsecs").unwrap_err().contains("unknown unit"));
        assert!(duration("-1s").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn expected_hash_and_timeout_parsers() {
        let h = "a".repeat(64);
        assert_eq!(expected_hash(&h).unwrap(), h);
        assert_eq!(
            expected_hash(&format!("sha256:{}", h.to_uppercase())).unwrap(),
            h
        );
        assert!(expected_hash("abc").is_err());
        assert!(expected_hash(&"g".repeat(64)).is_err());
        assert_eq!(timeout("90").unwrap(), Duration::from_secs(90));
        assert!(timeout("0").unwrap_err().contains("greater than zero"));
        assert!(timeout("-3").is_err());
    }
}
