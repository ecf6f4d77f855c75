//! Secret keys: which parameter names hold secrets, and their values in libpq key-value strings
//! and in free text.

use super::percent_decode;

/// Parameter names whose values are secrets, after lowercasing, percent-decoding and dropping
/// `-`/`_`: used inside URL query strings and libpq key-value strings.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "authtoken",
    "apikey",
    "auth",
    "authorization",
    "credentials",
    "xamzsignature",
    "xamzsecuritytoken",
    "xamzcredential",
    "signature",
    "sig",
];

/// The same keys in free text (`key=value` after whitespace), where `secret=`/`token=` are
/// ordinary log fields naming Kubernetes Secrets and are therefore left out.
const SECRET_TEXT_KEYS: &[&str] = &["password", "passwd", "pass", "pwd", "sslpassword"];

fn normalized_key(raw: &str) -> String {
    percent_decode(raw)
        .to_ascii_lowercase()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect()
}

pub(super) fn is_secret_param(raw: &str) -> bool {
    SECRET_PARAMS.contains(&normalized_key(raw).as_str())
}

fn is_secret_text_key(raw: &str) -> bool {
    SECRET_TEXT_KEYS.contains(&normalized_key(raw).as_str())
}

/// `key=value` pairs, libpq style: the first non-blank text is `word =`.
pub(super) fn looks_like_dsn(s: &str) -> bool {
    let t = s.trim_start();
    let n = t
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    n > 0 && t[n..].trim_start().starts_with('=')
}

/// Secret values of a libpq key-value string: quoted (`'…'`, backslash escapes) or up to the
/// next ` key=` (a value with an unescaped blank is malformed, but must not leak either).
pub(super) fn dsn_secret_ranges(s: &str) -> Vec<(usize, usize)> {
    kv_ranges(s, is_secret_param, true)
}

/// `password=…` anywhere in free text, after a blank or punctuation.
pub(super) fn text_key_ranges(s: &str) -> Vec<(usize, usize)> {
    kv_ranges(s, is_secret_text_key, false)
}

fn kv_ranges(s: &str, secret: impl Fn(&str) -> bool, dsn: bool) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let boundary = i == 0
            || bytes[i - 1].is_ascii_whitespace()
            || (!dsn && matches!(bytes[i - 1], b'(' | b',' | b';' | b'"' | b'\'' | b'{'));
        let n = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
            .count();
        if !boundary || n == 0 {
            i += 1;
            continue;
        }
        let mut j = i + n;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        if bytes.get(j) != Some(&b'=') || !secret(&s[i..i + n]) {
            i += n;
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j] == b' ' {
            j += 1;
        }
        let end = if bytes.get(j) == Some(&b'\'') {
            // Quoted: up to the closing quote (backslash escapes), or the end when unterminated.
            let mut k = j + 1;
            loop {
                match bytes.get(k) {
                    None => break k,
                    Some(b'\\') => k += 2,
                    Some(b'\'') => break k + 1,
                    Some(_) => k += 1,
                }
            }
            .min(bytes.len())
        } else {
            next_key(s, j)
        };
        ranges.push((j, end));
        i = end.max(i + 1);
    }
    ranges
}

/// The start of the blank before the next `word=` after `from`, or the end.
fn next_key(s: &str, from: usize) -> usize {
    let bytes = s.as_bytes();
    let mut k = from;
    while k < bytes.len() {
        if bytes[k].is_ascii_whitespace() {
            let mut w = k;
            while w < bytes.len() && bytes[w].is_ascii_whitespace() {
                w += 1;
            }
            let n = bytes[w..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                .count();
            let mut e = w + n;
            while e < bytes.len() && bytes[e] == b' ' {
                e += 1;
            }
            if n > 0 && bytes.get(e) == Some(&b'=') {
                return k;
            }
            // Trailing blanks are not part of the value.
            if w >= bytes.len() {
                return k;
            }
        }
        k += 1;
    }
    bytes.len()
}
