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
pub const MASK: &str = "***";

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

fn is_secret_param(raw: &str) -> bool {
    SECRET_PARAMS.contains(&normalized_key(raw).as_str())
}

fn is_secret_text_key(raw: &str) -> bool {
    SECRET_TEXT_KEYS.contains(&normalized_key(raw).as_str())
}

/// `%XX` decoded (invalid sequences kept as they are; invalid UTF-8 replaced).
pub fn percent_decode(s: &str) -> String {
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
pub fn url(value: &str) -> String {
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
pub fn text(s: &str) -> String {
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
pub fn scrub(text_in: &str, source: &str) -> String {
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
pub fn secrets_of(source: &str) -> Vec<String> {
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

// ---------------------------------------------------------------------------------------------

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

/// Where the scheme ending at `sep` (the index of `://`) starts; `sep` when there is none.
fn scheme_start(s: &str, sep: usize) -> usize {
    let bytes = s.as_bytes();
    let mut start = sep;
    while start > 0 {
        let c = bytes[start - 1];
        if c.is_ascii_alphanumeric() || matches!(c, b'+' | b'.' | b'-') {
            start -= 1;
        } else {
            break;
        }
    }
    // A scheme starts with a letter.
    while start < sep && !bytes[start].is_ascii_alphabetic() {
        start += 1;
    }
    start
}

/// Secret byte ranges of the URL whose text after `://` is `s[from..to]`.
fn url_secret_ranges(s: &str, from: usize, to: usize) -> Vec<(usize, usize)> {
    let rest = &s[from..to];
    let mut ranges = param_ranges(rest, from);
    if let Some(at) = userinfo_end_avoiding(rest, &ranges, from) {
        let userinfo = &rest[..at];
        let keep = match userinfo.split_once(':') {
            Some((user, _)) if plain_user(user) => user.len() + 1,
            Some(_) => 0,
            None if plain_user(userinfo) => at,
            None => 0,
        };
        if keep < at {
            ranges.push((from + keep, from + at));
        }
    }
    ranges
}

/// A user name shown in messages: nothing a password could be mistaken for.
fn plain_user(u: &str) -> bool {
    u.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The index in `rest` (the text after `://`) of the `@` that ends the userinfo, if any: the last
/// `@` followed by a plausible `host[:port]`, else the last `@`.
fn userinfo_end(rest: &str) -> Option<usize> {
    userinfo_end_avoiding(rest, &[], 0)
}

/// [`userinfo_end`], preferring an `@` outside the secret parameter values `avoid` (so a
/// `?password=a@b` does not swallow the host): the last plausible `@` outside them; else, when
/// the text up to the first `/`, `?` or `#` is no `host[:port]` (a password holding `?` broke it),
/// the last plausible one; else the last one outside them (an `@` inside a masked value only is
/// no userinfo: the value is masked anyway).
fn userinfo_end_avoiding(rest: &str, avoid: &[(usize, usize)], offset: usize) -> Option<usize> {
    let ats: Vec<usize> = rest.match_indices('@').map(|(i, _)| i).collect();
    let inside = |i: usize| avoid.iter().any(|(a, b)| (*a..*b).contains(&(offset + i)));
    let plausible = |i: usize| plausible_authority(&rest[i + 1..]);
    let last = |keep: &dyn Fn(usize) -> bool| ats.iter().rev().copied().find(|&i| keep(i));
    last(&|i| !inside(i) && plausible(i))
        .or_else(|| {
            let standard = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
            if standard.is_empty() || plausible_authority(standard) {
                None
            } else {
                last(&plausible)
            }
        })
        .or_else(|| last(&|i| !inside(i)))
}

/// `host[:port][,host[:port]…]` up to the end or the next `/`, `?` or `#`.
fn plausible_authority(after: &str) -> bool {
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..end];
    !authority.is_empty() && authority.split(',').all(plausible_host_port)
}

fn plausible_host_port(hp: &str) -> bool {
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(v6) = hp.strip_prefix('[') {
        let Some((host, rest)) = v6.split_once(']') else {
            return false;
        };
        let port_ok = rest.is_empty() || rest.strip_prefix(':').is_some_and(digits);
        return !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            && port_ok;
    }
    let (host, port) = hp.rsplit_once(':').unwrap_or((hp, ""));
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        && digits(port)
}

/// Values of secret `name=value` parameters in `s` (offset by `offset`): a parameter starts at
/// the beginning or after `?`, `&` or `;`; its value runs to the next `&name=` or the end.
fn param_ranges(s: &str, offset: usize) -> Vec<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts = i == 0 || matches!(bytes[i - 1], b'?' | b'&' | b';');
        if starts && let Some(name_len) = param_name_len(&s[i..]) {
            let eq = i + name_len;
            if bytes.get(eq) == Some(&b'=') && is_secret_param(&s[i..eq]) {
                let value_start = eq + 1;
                let value_end = next_param(s, value_start);
                ranges.push((offset + value_start, offset + value_end));
                i = value_end;
                continue;
            }
        }
        i += 1;
    }
    ranges
}

fn param_name_len(s: &str) -> Option<usize> {
    let n = s
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%' | b'.'))
        .count();
    (n > 0).then_some(n)
}

/// The index of the `&` that starts the next `name=` parameter after `from`, or the end.
fn next_param(s: &str, from: usize) -> usize {
    let mut search = from;
    while let Some(i) = s[search..].find('&') {
        let amp = search + i;
        if let Some(n) = param_name_len(&s[amp + 1..])
            && s.as_bytes().get(amp + 1 + n) == Some(&b'=')
        {
            return amp;
        }
        search = amp + 1;
    }
    s.len()
}

/// `key=value` pairs, libpq style: the first non-blank text is `word =`.
fn looks_like_dsn(s: &str) -> bool {
    let t = s.trim_start();
    let n = t
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    n > 0 && t[n..].trim_start().starts_with('=')
}

/// Secret values of a libpq key-value string: quoted (`'…'`, backslash escapes) or up to the
/// next ` key=` (a value with an unescaped blank is malformed, but must not leak either).
fn dsn_secret_ranges(s: &str) -> Vec<(usize, usize)> {
    kv_ranges(s, is_secret_param, true)
}

/// `password=…` anywhere in free text, after a blank or punctuation.
fn text_key_ranges(s: &str) -> Vec<(usize, usize)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        for (input, want) in [
            (
                "postgresql://bifrost:s3cret@db:5432/bifrost?sslmode=require",
                "postgresql://bifrost:***@db:5432/bifrost?sslmode=require",
            ),
            ("redis://:pw@cache:6379/0", "redis://:***@cache:6379/0"),
            ("redis://cache:6379", "redis://cache:6379"),
            ("not a url", "not a url"),
            // The tester's findings.
            (
                "redis://:Sup3r#Secret@10.0.0.7:6380/0",
                "redis://:***@10.0.0.7:6380/0",
            ),
            (
                "postgresql://bifrost@db:5432/bifrost?sslmode=disable&password=Sup3r#Secret",
                "postgresql://bifrost@db:5432/bifrost?sslmode=disable&password=***",
            ),
            (
                "host=db port=5432 user=bifrost password=Sup3rSecret dbname=bifrost",
                "host=db port=5432 user=bifrost password=*** dbname=bifrost",
            ),
            (
                "host=db password = 'Sup3r \\' Secret' dbname=bifrost",
                "host=db password = *** dbname=bifrost",
            ),
            (
                "redis+unix:///run/redis.sock?db=0&pass=Sup3rSecret",
                "redis+unix:///run/redis.sock?db=0&pass=***",
            ),
            (
                "unix:///run/redis.sock?PASS=Sup3rSecret",
                "unix:///run/redis.sock?PASS=***",
            ),
            (
                "redis://u:a/b?c@d@cache:6379/0",
                "redis://u:***@cache:6379/0",
            ),
            (
                "postgresql://bifrost:Sup3r%23Secret@db/bifrost",
                "postgresql://bifrost:***@db/bifrost",
            ),
            // Percent-encoded parameter names count too.
            (
                "postgresql://db/x?%70assword=Sup3rSecret&sslmode=require",
                "postgresql://db/x?%70assword=***&sslmode=require",
            ),
            // A password holding `&` runs to the next `name=`.
            (
                "postgresql://db/x?password=a&b#c&sslmode=require",
                "postgresql://db/x?password=***&sslmode=require",
            ),
            // `@` in a secret value does not swallow the host.
            (
                "postgresql://bifrost@db:5432/x?password=ab@cdefgh",
                "postgresql://bifrost@db:5432/x?password=***",
            ),
            // A user name that could be a password is masked with it.
            ("redis://S3cr#t@cache:6379", "redis://***@cache:6379"),
            ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
            (
                "postgresql://u:p@h1:5432,h2:5433/db",
                "postgresql://u:***@h1:5432,h2:5433/db",
            ),
        ] {
            assert_eq!(url(input), want, "{input}");
        }
    }

    #[test]
    fn text_masks_urls_inside_messages() {
        assert_eq!(
            text("cannot connect to Redis at redis://:Sup3r#Secret@127.0.0.1:1/0: refused"),
            "cannot connect to Redis at redis://:***@127.0.0.1:1/0: refused"
        );
        assert_eq!(
            text("bad DSN (host=db password=Sup3rSecret)"),
            "bad DSN (host=db password=***"
        );
        // Kubernetes Secret names in log fields stay.
        assert_eq!(
            text("certificate ok secret=bifrost-webhook-tls namespace=x"),
            "certificate ok secret=bifrost-webhook-tls namespace=x"
        );
        assert_eq!(text("no secrets here: a=b"), "no secrets here: a=b");
    }

    #[test]
    fn scrub_removes_every_form_of_the_known_secret() {
        let source = "redis://:Sup3r%23Secret@127.0.0.1:6379/0";
        for leaked in ["Sup3r#Secret", "Sup3r%23Secret", "Sup3r%23Secret"] {
            let msg = format!("auth failed with password {leaked} on 127.0.0.1:6379");
            let out = scrub(&msg, source);
            assert!(!out.contains("Sup3r"), "{out}");
            assert!(out.contains("127.0.0.1:6379"), "{out}");
        }
        let dsn = "host=db password='a b c \\' d' dbname=x";
        let out = scrub("server said: a b c ' d is wrong", dsn);
        assert!(!out.contains("a b c ' d"), "{out}");
    }

    /// What the generator below found, kept by name.
    #[test]
    fn generator_findings() {
        let pg = "postgres://db.internal:1024/b";
        // An `@` inside a secret parameter value once swallowed the host as "userinfo".
        for value in [
            format!("{pg}?%70assword=aA0A0@:aa0aA"),
            format!("{pg}?%70assword=AaaAa@0A0aA"),
            "redis+unix:///run/redis-1024.sock?db=0&pass=AaaAa@0A0aA".to_string(),
        ] {
            let out = url(&value);
            assert!(!out.contains("AaaAa") && !out.contains("aA0A0"), "{out}");
            assert!(out.contains("1024"), "{out}");
        }
        // Sentence punctuation after a URL hid its host: the `@` before it looked implausible.
        let out = text("at rediss://bifrost:aa0aA@A0a0a#0A0Aa@cache.internal:1024: refused");
        assert_eq!(out, "at rediss://bifrost:***@cache.internal:1024: refused");
        // `scrub` once replaced the whole URL (host included), and a plain user name as a secret.
        let source = "postgresql://bifrost@db.internal:1024/bifrost?password=0AaA0%26AAa0A%2500a";
        let out = scrub(&format!("error {source} at db.internal"), source);
        assert_eq!(
            out,
            "error postgresql://bifrost@db.internal:1024/bifrost?password=*** at db.internal"
        );
    }

    // ---- generated inputs ---------------------------------------------------------------

    /// A password of hostile characters: runs of 5–8 random letters/digits (what the leak check
    /// looks for) joined by characters that break naive parsers.
    fn password() -> impl Strategy<Value = String> {
        let run = "[A-Za-z0-9]{5,8}";
        let sep = prop::sample::select(vec![
            "#", "/", "?", "@", ":", "@:", "%", "=", " ", "'", "\\", "&", ";", "+", ",", "é", "[",
            "]", "!", "$", "*",
        ]);
        (run, prop::collection::vec((sep, run), 1..4)).prop_map(|(first, rest)| {
            let mut s = first;
            for (sep, run) in rest {
                s.push_str(sep);
                s.push_str(&run);
            }
            s
        })
    }

    /// The distinctive parts of a password: if any appears, something leaked.
    fn runs(pw: &str) -> Vec<&str> {
        pw.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|r| r.len() >= 5)
            .collect()
    }

    /// Plant `pw` into each accepted form; returns (value, host, port) with the form's name.
    fn forms(pw: &str, port: u16) -> Vec<(String, String, &'static str)> {
        let enc = percent_encode(pw);
        // Inside a query value only `%` and `&` need encoding (`&` would start a parameter).
        let q = pw.replace('%', "%25").replace('&', "%26");
        // libpq: quoted, quote and backslash escaped.
        let quoted = format!("'{}'", pw.replace('\\', "\\\\").replace('\'', "\\'"));
        let unquoted_ok = !pw.contains([' ', '\'', '\\']);
        let host = "db.internal".to_string();
        let mut v = vec![
            (
                format!("redis://:{pw}@127.0.0.1:{port}/0"),
                "127.0.0.1".into(),
                "redis raw",
            ),
            (
                format!("redis://:{enc}@127.0.0.1:{port}/0"),
                "127.0.0.1".into(),
                "redis encoded",
            ),
            (
                format!("rediss://bifrost:{pw}@cache.internal:{port}"),
                "cache.internal".into(),
                "rediss user",
            ),
            (
                format!("postgresql://bifrost:{pw}@{host}:{port}/bifrost?sslmode=require"),
                host.clone(),
                "pg raw",
            ),
            (
                format!("postgresql+asyncpg://bifrost:{enc}@{host}:{port}/bifrost"),
                host.clone(),
                "pg encoded",
            ),
            (
                format!("postgresql://bifrost@{host}:{port}/bifrost?sslmode=disable&password={q}"),
                host.clone(),
                "pg ?password",
            ),
            (
                format!("postgresql://{host}:{port}/bifrost?PassWord={enc}&application_name=x"),
                host.clone(),
                "pg ?PassWord",
            ),
            (
                format!("postgres://{host}:{port}/b?%70assword={q}"),
                host.clone(),
                "pg ?%70assword",
            ),
            (
                format!("redis+unix:///run/redis-{port}.sock?db=0&pass={q}"),
                format!("/run/redis-{port}.sock"),
                "redis+unix",
            ),
            (
                format!("unix:///run/redis-{port}.sock?pass={enc}"),
                format!("/run/redis-{port}.sock"),
                "unix",
            ),
            (
                format!("host={host} port={port} user=bifrost password={quoted} dbname=bifrost"),
                host.clone(),
                "libpq quoted",
            ),
        ];
        if unquoted_ok {
            v.push((
                format!("host={host} port={port} password={pw} dbname=bifrost"),
                host.clone(),
                "libpq plain",
            ));
        }
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn planted_passwords_never_come_out(pw in password(), port in 1024u16..65535) {
            for (value, host, form) in forms(&pw, port) {
                let port_s = port.to_string();
                let outputs = [
                    ("url", url(&value)),
                    ("text", text(&format!("cannot connect to {value}: refused"))),
                    ("scrub", scrub(&format!("error {value} (password {pw}, {}) at {host}", percent_encode(&pw)), &value)),
                ];
                for (how, out) in outputs {
                    // Free text ends a URL at a blank: a raw blank in a URL is `scrub`'s job.
                    if how == "text" && pw.contains(char::is_whitespace) && !form.starts_with("libpq") {
                        continue;
                    }
                    for run in runs(&pw) {
                        prop_assert!(!out.contains(run), "{form} via {how}: {run:?} leaked from {value:?}: {out}");
                    }
                    prop_assert!(out.contains(&host), "{form} via {how}: host lost: {out}");
                    prop_assert!(out.contains(&port_s), "{form} via {how}: port lost: {out}");
                }
            }
        }

        /// Anything at all: no panic, and text without a secret marker comes back unchanged.
        #[test]
        fn arbitrary_input_never_panics(s in ".{0,200}") {
            let _ = url(&s);
            let _ = text(&s);
            let _ = scrub(&s, &s);
            if !s.contains("://") && !s.contains('=') {
                prop_assert_eq!(text(&s), s);
            }
        }
    }
}
