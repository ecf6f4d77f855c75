//! Where a URL keeps its secrets: the userinfo and secret query parameters.

use super::keys::is_secret_param;

/// Where the scheme ending at `sep` (the index of `://`) starts; `sep` when there is none.
pub(super) fn scheme_start(s: &str, sep: usize) -> usize {
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
pub(super) fn url_secret_ranges(s: &str, from: usize, to: usize) -> Vec<(usize, usize)> {
    let rest = &s[from..to];
    let mut ranges = param_ranges(rest, from);
    if let Some(at) = userinfo_end_avoiding(rest, &ranges, from) {
        let scheme = &s[scheme_start(s, from - 3)..from - 3];
        if let Some(end) = two_hosts(scheme, rest, at) {
            // Two readings name two hosts: mask both rather than show one that may not be used.
            ranges.push((from, from + end));
            return ranges;
        }
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

/// Where the authority after the `@` at `at` ends, when a URL parser (the `url` crate, which
/// the Redis, PostgreSQL and HTTP clients use) reads another host from the same text: in
/// `http://127.0.0.1:45821/simple#@127.0.0.1:47205/` it connects to 127.0.0.1:45821 (the rest
/// is path and fragment), while the pessimistic reading of a password holding `/` or `#` sees
/// 127.0.0.1:47205. Showing either could name a host that is not the one used, and the first
/// may be part of a password: neither is shown. `scheme` is the URL's (`http`, `redis`, …).
fn two_hosts(scheme: &str, rest: &str, at: usize) -> Option<usize> {
    let standard_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if scheme.is_empty() || standard_end >= at {
        return None;
    }
    let origin = |authority: &str| {
        let parsed = ::url::Url::parse(&format!("{scheme}://{authority}")).ok()?;
        let host = parsed.host_str()?.to_ascii_lowercase();
        (!host.is_empty()).then(|| (host, parsed.port_or_known_default()))
    };
    let used = origin(rest)?;
    let after = &rest[at + 1..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    if origin(&after[..end]) == Some(used) {
        return None;
    }
    Some(at + 1 + end)
}

/// A user name shown in messages: nothing a password could be mistaken for.
pub(super) fn plain_user(u: &str) -> bool {
    u.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The index in `rest` (the text after `://`) of the `@` that ends the userinfo, if any: the last
/// `@` followed by a plausible `host[:port]`, else the last `@`.
pub(super) fn userinfo_end(rest: &str) -> Option<usize> {
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
pub(super) fn param_ranges(s: &str, offset: usize) -> Vec<(usize, usize)> {
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
