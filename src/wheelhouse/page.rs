//! A project's page on a package index, read into the files it lists: PEP 691's JSON
//! (`files[].url`, `files[].hashes.sha256`) or PEP 503's HTML (`<a href="…#sha256=…">`, the hash
//! optional: a plain folder listing has none).
//!
//! Nothing here decides what to fetch: each file comes with its link resolved against the page
//! (or why it cannot be) and the hash the page gives, and the caller checks origins and hashes.

use std::collections::HashMap;

use serde::Deserialize;
use url::Url;

use super::layout;

/// What PEP 691 answers are asked for, HTML accepted as well.
pub(super) const ACCEPT: &str = "application/vnd.pypi.simple.v1+json, text/html;q=0.1";

/// One file a page lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    /// The file's name: PEP 691's `filename`, or the link's last path segment (decoded).
    pub name: String,
    /// The link resolved against the page, or why it cannot be.
    pub url: Result<Url, String>,
    /// The hash the page gives (lowercase hex), if it gives a SHA-256.
    pub sha256: Option<String>,
}

#[derive(Deserialize)]
struct JsonPage {
    files: Vec<JsonFile>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: HashMap<String, String>,
}

/// The files of a page served as `content_type` from `base` (the URL it was read from, after
/// redirects). JSON that is not PEP 691's is an error; HTML is read as far as it has anchors.
pub(super) fn files(body: &[u8], content_type: &str, base: &Url) -> Result<Vec<Listed>, String> {
    let kind = content_type.split(';').next().unwrap_or_default().trim();
    if kind.starts_with("application/vnd.pypi.simple.") && kind.ends_with("+json") {
        let page: JsonPage = serde_json::from_slice(body)
            .map_err(|e| format!("the page is not PEP 691 JSON: {e}"))?;
        return Ok(page
            .files
            .into_iter()
            .map(|f| Listed {
                url: resolve(base, &f.url),
                sha256: f.hashes.get("sha256").and_then(|h| sha256(h)),
                name: f.filename,
            })
            .collect());
    }
    let html = String::from_utf8_lossy(body);
    Ok(hrefs(&html)
        .into_iter()
        .filter_map(|href| {
            let url = resolve(base, &href);
            let name = match &url {
                Ok(u) => last_segment(u),
                Err(_) => last_segment_of(&href),
            }?;
            let sha256 = href
                .split_once('#')
                .and_then(|(_, fragment)| fragment.strip_prefix("sha256="))
                .and_then(sha256);
            Some(Listed { name, url, sha256 })
        })
        .collect())
}

fn resolve(base: &Url, href: &str) -> Result<Url, String> {
    base.join(href)
        .map_err(|e| format!("the link {href:?} cannot be resolved: {e}"))
}

/// 64 hex digits, lowercased; `None` for anything else.
fn sha256(value: &str) -> Option<String> {
    layout::is_sha256(value).then(|| value.to_ascii_lowercase())
}

/// The decoded last path segment of a URL, if it has one.
fn last_segment(url: &Url) -> Option<String> {
    let segment = url.path_segments()?.next_back()?;
    (!segment.is_empty()).then(|| crate::redact::percent_decode(segment))
}

/// The same, of a link that is not a URL.
fn last_segment_of(href: &str) -> Option<String> {
    let path = href.split(['?', '#']).next()?;
    let segment = path.rsplit('/').next()?;
    (!segment.is_empty()).then(|| crate::redact::percent_decode(segment))
}

/// The `href` of every `<a>` of a page, entities decoded.
pub(super) fn hrefs(html: &str) -> Vec<String> {
    // ASCII lowercasing keeps every byte offset, so positions found in `lower` hold in `html`.
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(found) = lower[at..].find("<a") {
        let start = at + found + 2;
        if !lower[start..].starts_with(|c: char| c.is_ascii_whitespace()) {
            at = start;
            continue;
        }
        let (attributes, end) = attributes(&html[start..]);
        if let Some((_, href)) = attributes.into_iter().find(|(name, _)| name == "href") {
            out.push(unescape(&href));
        }
        at = start + end;
    }
    out
}

/// The attributes of a tag whose name was just read, and how far its `>` is.
fn attributes(tag: &str) -> (Vec<(String, String)>, usize) {
    let b = tag.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_blank = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    loop {
        i = skip_blank(i);
        if i >= b.len() || b[i] == b'>' {
            return (out, (i + 1).min(b.len()));
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'>') {
            i += 1;
        }
        let name = tag[name_start..i].to_ascii_lowercase();
        i = skip_blank(i);
        if i >= b.len() || b[i] != b'=' {
            out.push((name, String::new()));
            continue;
        }
        i = skip_blank(i + 1);
        let value_start;
        if i < b.len() && matches!(b[i], b'"' | b'\'') {
            let quote = b[i];
            value_start = i + 1;
            i = value_start;
            while i < b.len() && b[i] != quote {
                i += 1;
            }
            out.push((name, tag[value_start..i].to_string()));
            i = (i + 1).min(b.len());
        } else {
            value_start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                i += 1;
            }
            out.push((name, tag[value_start..i].to_string()));
        }
    }
}

/// HTML character references in an attribute: the named ones an index writes, and numeric ones.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.bytes().take(12).position(|b| b == b';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;
