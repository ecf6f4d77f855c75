//! Secrets out of every message: connection URLs and DSNs are redacted before they reach a log
//! line, a status condition, an Event, a metric or the CLI's output.
//!
//! Connection strings come from Secrets and environment variables written by people, so they are
//! often not valid URLs: passwords hold `#`, `/`, `?`, `@` or `:` unencoded, or are
//! percent-encoded; PostgreSQL also takes libpq key-value strings (`host=db password='a b'`) and
//! `?password=` parameters; Redis takes `redis+unix:///sock?pass=`. A parser that gives up on
//! such input must not print it back, so the rules here are deliberately pessimistic:
//!
//! - **userinfo**: everything between `://` and the *last* `@` that is followed by something
//!   shaped like `host[:port]` is userinfo (a password may hold `@`, `/`, `?` and `#`); only a
//!   plain user name before the first `:` is kept;
//! - **secret parameters** (`password`, `pass`, `sslpassword`, `secret`, `token`, … compared
//!   case-insensitively after percent-decoding the name) lose their value up to the next
//!   `&name=` or the end — not the next `&` or `#`, which a password may contain;
//! - **libpq key-value strings**: the values of the same keys, quoted (`'a \' b'`) or not;
//! - both rules apply at once: what either considers secret is masked.
//!
//! Error texts produced by the redis and sqlx crates are not trusted either: at the edge where the
//! URL is known, [`scrub`] removes every secret the URL holds (raw, percent-decoded and
//! percent-encoded) from them, then applies [`text`]. The host and port stay, so messages remain
//! useful.

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

mod keys;
#[cfg(test)]
mod tests;
mod url;

use keys::{dsn_secret_ranges, looks_like_dsn, text_key_ranges};
use url::{param_ranges, plain_user, scheme_start, url_secret_ranges, userinfo_end};

/// `%XX` decoded (invalid sequences kept as they are; invalid UTF-8 replaced).
pub(crate) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Every byte outside `A-Za-z0-9-._~` as `%XX` (how a careful writer encodes a password).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One connection string (URL or libpq key-value DSN) fit for messages.
pub(crate) fn url(value: &str) -> String {
    if let Some(sep) = value.find("://") {
        // One value: its blanks belong to it (unlike in free text).
        let mut ranges = url_secret_ranges(value, sep + 3, value.len());
        ranges.extend(text_key_ranges(value));
        return mask_ranges(value, &ranges);
    }
    if looks_like_dsn(value) {
        return mask_ranges(value, &dsn_secret_ranges(value));
    }
    // `unix:/path?pass=…` and other scheme-less forms: parameters still count.
    mask_ranges(value, &param_ranges(value, 0))
}

/// Free text (an error message, a log line) with every URL's userinfo, every secret URL
/// parameter and every `password=` value masked. Best effort for text that only *contains* a
/// secret: where the secret is known, use [`scrub`].
pub(crate) fn text(s: &str) -> String {
    let mut ranges = Vec::new();
    let mut search = 0;
    while let Some(found) = s[search..].find("://") {
        let sep = search + found;
        let start = scheme_start(s, sep);
        // A URL ends at whitespace (a password holding a space is caught by `scrub`).
        let end = s[sep..]
            .find(char::is_whitespace)
            .map_or(s.len(), |i| sep + i);
        // Punctuation of the sentence around it (`at redis://h:1/0: refused`) is not the URL's.
        let url_end = sep
            + 3
            + s[sep + 3..end]
                .trim_end_matches([':', ',', '.', ';', ')', ']', '"', '\''])
                .len();
        if start < sep {
            ranges.extend(url_secret_ranges(s, sep + 3, url_end));
        }
        search = end.max(sep + 3);
    }
    ranges.extend(text_key_ranges(s));
    mask_ranges(s, &ranges)
}

/// `text` with every secret that `source` (a connection string) holds removed as well: for
/// error texts of crates that were handed `source` and may repeat any part of it.
pub(crate) fn scrub(text_in: &str, source: &str) -> String {
    // The whole string first, as `url` shows it (host kept), then each secret wherever it is.
    let mut out = if source.is_empty() {
        text_in.to_string()
    } else {
        text_in.replace(source, &url(source))
    };
    let mut secrets = secrets_of(source);
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        if secret.chars().count() >= 3 && out.contains(&secret) {
            out = out.replace(&secret, MASK);
        }
    }
    text(&out)
}

/// The secret values a connection string holds, in the forms a message could repeat them in.
fn secrets_of(source: &str) -> Vec<String> {
    let mut raw: Vec<String> = Vec::new();
    let mut ranges = Vec::new();
    if let Some(sep) = source.find("://") {
        ranges.extend(url_secret_ranges(source, sep + 3, source.len()));
        // The userinfo's password part on its own (the user name is kept in messages).
        let rest = &source[sep + 3..];
        let standard = rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())].rfind('@');
        for at in [userinfo_end(rest), standard].into_iter().flatten() {
            let userinfo = &rest[..at];
            match userinfo.split_once(':') {
                Some((user, pw)) => {
                    raw.push(pw.to_string());
                    raw.push(userinfo.to_string());
                    if !plain_user(user) {
                        raw.push(user.to_string());
                    }
                }
                None if !plain_user(userinfo) => raw.push(userinfo.to_string()),
                None => {}
            }
        }
    } else if looks_like_dsn(source) {
        ranges.extend(dsn_secret_ranges(source));
    } else {
        ranges.extend(param_ranges(source, 0));
    }
    for (a, b) in ranges {
        let value = &source[a..b];
        raw.push(value.to_string());
        // A quoted libpq value as the server would see it.
        let unquoted = value
            .strip_prefix('\'')
            .map(|v| v.strip_suffix('\'').unwrap_or(v))
            .map(|v| v.replace("\\'", "'").replace("\\\\", "\\"));
        raw.extend(unquoted);
    }
    let mut all = Vec::new();
    for r in raw.into_iter().filter(|r| !r.is_empty()) {
        let decoded = percent_decode(&r);
        all.push(percent_encode(&decoded));
        all.push(percent_encode(&r));
        all.push(decoded);
        all.push(r);
    }
    all.sort();
    all.dedup();
    all
}

/// Replace each (merged) byte range with [`MASK`].
fn mask_ranges(s: &str, ranges: &[(usize, usize)]) -> String {
    let mut ranges: Vec<(usize, usize)> = ranges.iter().copied().filter(|(a, b)| a < b).collect();
    if ranges.is_empty() {
        return s.to_string();
    }
    ranges.sort();
    let mut merged: Vec<(usize, usize)> = Vec::new();
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (a, b) in merged {
        out.push_str(&s[at..a]);
        out.push_str(MASK);
        at = b;
    }
    out.push_str(&s[at..]);
    out
}
