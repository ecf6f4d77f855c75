//! One request uv sends through the proxy, and the answer it gets back: plain HTTP, or read
//! inside an HTTPS tunnel ([`super::intercept`]).
//!
//! Requests go on one per connection (`Connection: close`) and ask for the body as it is
//! (`Accept-Encoding: identity`): a compressed or chunked index page would hide its links from
//! the check below. An index page (HTML, or the JSON simple API) is read whole, de-chunked, and
//! refused when it links to a `file:` URL, which uv would read from the operator's own disk;
//! anything else (wheels, metadata) is passed on as it comes.

use tokio::io::BufReader;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

pub(crate) use super::Origin;

/// Longest index page read whole (to look for `file:` links); larger pages are refused.
const MAX_PAGE: usize = 32 * 1024 * 1024;

/// Longest request or response head.
const MAX_HEAD: usize = 64 * 1024;

/// Headers of uv's request that are not sent on: they concern uv's hop to the proxy, or would
/// let the index compress the page past the check.
const DROPPED: [&str; 7] = [
    "connection",
    "proxy-connection",
    "proxy-authorization",
    "keep-alive",
    "accept-encoding",
    "te",
    "upgrade",
];

/// A request to send on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub method: String,
    /// The absolute URL, for messages.
    pub url: String,
    /// The head to send to the origin (origin form, one request, no compression).
    pub head: String,
}

impl Request {
    /// A plain-HTTP proxy request (`GET http://host:port/path HTTP/1.1` and its headers).
    pub(crate) fn proxied(head: &str) -> Result<(Origin, Request), String> {
        let (method, target, version, headers) = split(head);
        let url = url::Url::parse(target).map_err(|_| format!("{method} {target}"))?;
        let to = super::origin(target).ok_or_else(|| format!("{method} {target}"))?;
        if to.0 != "http" {
            return Err(format!("{method} {target}"));
        }
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let request = Request::new(method, &path, version, headers, &to)?;
        Ok((to, request))
    }

    /// A request read inside a tunnel to `to` (`GET /path HTTP/1.1`).
    pub(crate) fn in_tunnel(head: &str, to: &Origin) -> Result<Request, String> {
        let (method, target, version, headers) = split(head);
        if !target.starts_with('/') {
            return Err(format!(
                "{method} {target} (inside a tunnel to {}:{})",
                to.1, to.2
            ));
        }
        Request::new(method, target, version, headers, to)
    }

    fn new(
        method: &str,
        path: &str,
        version: &str,
        headers: Vec<&str>,
        to: &Origin,
    ) -> Result<Request, String> {
        let url = format!("{}://{}:{}{path}", to.0, to.1, to.2);
        // uv only reads: an index is never sent anything.
        if method != "GET" && method != "HEAD" {
            return Err(format!("{method} {url}"));
        }
        let version = if version.is_empty() {
            "HTTP/1.1"
        } else {
            version
        };
        let mut head = format!("{method} {path} {version}\r\n");
        for h in headers {
            let name = h.split(':').next().unwrap_or_default().trim();
            if !DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d)) {
                head.push_str(h);
                head.push_str("\r\n");
            }
        }
        head.push_str("Accept-Encoding: identity\r\nConnection: close\r\n\r\n");
        Ok(Request {
            method: method.to_string(),
            url,
            head,
        })
    }
}

/// `(method, target, version, header lines)` of a request head.
fn split(head: &str) -> (&str, &str, &str, Vec<&str>) {
    let mut lines = head.trim_end().split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    (
        method,
        target,
        version,
        lines.filter(|h| !h.is_empty()).collect(),
    )
}

/// Read a head (up to and including the empty line); `None` when the peer closed first.
pub(crate) async fn read_head<R: AsyncBufRead + Unpin>(reader: &mut R) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return (!head.is_empty()).then_some(head),
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" || head.len() > MAX_HEAD {
            return Some(head);
        }
    }
}

/// Hand the origin's answer to `request` to the client; an index page that links to a `file:`
/// URL (or is too large to check) is refused instead. Returns what was refused, if it was.
pub(crate) async fn answer<C, U>(mut client: C, upstream: U, request: &Request) -> Option<String>
where
    C: AsyncWrite + Unpin,
    U: AsyncRead + Unpin,
{
    let mut upstream = BufReader::new(upstream);
    let Some(head) = read_head(&mut upstream).await else {
        let what = format!("{} {} (no answer)", request.method, request.url);
        return bad_gateway(client, what).await;
    };
    let page = request.method == "GET" && is_page(&head);
    if !page {
        if client
            .write_all(closing(&head, None).as_bytes())
            .await
            .is_ok()
        {
            let _ = tokio::io::copy(&mut upstream, &mut client).await;
        }
        let _ = client.shutdown().await;
        return None;
    }
    let body = match read_body(&mut upstream, &head).await {
        Ok(Some(body)) => body,
        Ok(None) => {
            let what = format!("GET {} (an index page over {MAX_PAGE} bytes)", request.url);
            return refuse(client, what).await;
        }
        Err(_) => {
            let _ = client.shutdown().await;
            return None;
        }
    };
    if links_to_a_file(&body) {
        let what = format!(
            "GET {} (an index page linking to a file:// URL)",
            request.url
        );
        return refuse(client, what).await;
    }
    if client
        .write_all(closing(&head, Some(body.len())).as_bytes())
        .await
        .is_ok()
    {
        let _ = client.write_all(&body).await;
    }
    let _ = client.shutdown().await;
    None
}

/// Whether a response head announces an index page (HTML, or the JSON simple API).
fn is_page(head: &str) -> bool {
    head.lines().any(|h| {
        let h = h.to_ascii_lowercase();
        h.starts_with("content-type:")
            && (h.contains("html") || h.contains("pypi.simple") || h.contains("json"))
    })
}

/// The value of header `name` (first one), trimmed.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|h| {
        let (n, v) = h.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The response head as the client gets it: `Connection: close`, and when `length` is given
/// (a page read whole) that length instead of the origin's framing.
fn closing(head: &str, length: Option<usize>) -> String {
    let mut lines = head.trim_end().split("\r\n").flat_map(|l| l.split('\n'));
    let mut out = format!("{}\r\n", lines.next().unwrap_or("HTTP/1.1 502 Bad Gateway"));
    let framing = ["transfer-encoding", "content-length"];
    for h in lines.filter(|h| !h.is_empty()) {
        let name = h
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let hop = name == "connection" || name == "keep-alive";
        if hop || (length.is_some() && framing.contains(&name.as_str())) {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    if let Some(n) = length {
        out.push_str(&format!("Content-Length: {n}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

/// A response body by its framing (chunked, a length, or until the origin closes), decoded;
/// `None` when it is over [`MAX_PAGE`].
async fn read_body<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    head: &str,
) -> std::io::Result<Option<Vec<u8>>> {
    let chunked = header(head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return read_chunked(reader).await;
    }
    let limit = match header(head, "content-length").map(str::parse::<u64>) {
        Some(Ok(n)) if n > MAX_PAGE as u64 => return Ok(None),
        Some(Ok(n)) => n,
        Some(Err(_)) => return Err(std::io::ErrorKind::InvalidData.into()),
        None => MAX_PAGE as u64 + 1,
    };
    let mut body = Vec::new();
    reader.take(limit).read_to_end(&mut body).await?;
    Ok((body.len() <= MAX_PAGE).then_some(body))
}

/// A chunked body, decoded (trailers dropped).
async fn read_chunked<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
    let mut body = Vec::new();
    loop {
        let mut line = String::new();
        if reader.take(1024).read_line(&mut line).await? == 0 {
            return Err(bad());
        }
        let size = line.trim().split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| bad())?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                let mut trailer = String::new();
                let n = reader.take(MAX_HEAD as u64).read_line(&mut trailer).await?;
                if n == 0 || trailer.trim().is_empty() {
                    return Ok(Some(body));
                }
            }
        }
        if body.len() + size > MAX_PAGE {
            return Ok(None);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
    }
}

/// Whether an index page (HTML `href=`, or the JSON API's `"url":`) names a `file:` URL.
fn links_to_a_file(page: &[u8]) -> bool {
    let text = String::from_utf8_lossy(page).to_ascii_lowercase();
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    ["=\"file:", "='file:", "=file:", ":\"file:"]
        .iter()
        .any(|p| compact.contains(p))
}

/// Answer 403 naming what was refused; returns it (redacted) for the resolver's message.
pub(crate) async fn refuse<C: AsyncWrite + Unpin>(client: C, what: String) -> Option<String> {
    let what = crate::redact::text(what.trim());
    let body = format!("bifrost-requirements: {what} refused by the resolver's proxy\n");
    reply(client, "403 Forbidden", &body).await;
    Some(what)
}

/// Answer 502 (the origin could not be reached, or its TLS not trusted); logged, not a refusal.
pub(crate) async fn bad_gateway<C: AsyncWrite + Unpin>(client: C, what: String) -> Option<String> {
    let what = crate::redact::text(what.trim());
    tracing::warn!("resolver proxy: {what}");
    reply(
        client,
        "502 Bad Gateway",
        &format!("bifrost-requirements: {what}\n"),
    )
    .await;
    None
}

/// A whole plain-text answer, then the connection's end.
async fn reply<C: AsyncWrite + Unpin>(mut client: C, status: &str, body: &str) {
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
    let _ = client.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn origin(s: &str, h: &str, p: u16) -> Origin {
        (s.into(), h.into(), p)
    }

    #[test]
    fn requests_go_on_in_origin_form_uncompressed_one_per_connection() {
        let (to, r) = Request::proxied(
            "GET http://127.0.0.1:8080/simple/x/?a=b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\nAccept-Encoding: gzip, br\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        assert_eq!(to, origin("http", "127.0.0.1", 8080));
        assert_eq!(
            r.head,
            "GET /simple/x/?a=b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(r.url, "http://127.0.0.1:8080/simple/x/?a=b");
        let inside = Request::in_tunnel(
            "GET /simple/x/ HTTP/1.1\r\nHost: pypi.org\r\naccept-encoding: br\r\n\r\n",
            &origin("https", "pypi.org", 443),
        )
        .unwrap();
        assert_eq!(inside.url, "https://pypi.org:443/simple/x/");
        assert!(
            !inside.head.to_ascii_lowercase().contains("br\r\n"),
            "{}",
            inside.head
        );
        for bad in [
            "GET /relative HTTP/1.1",
            "GET file:///etc/passwd HTTP/1.1",
            "GET ftp://h/x HTTP/1.1",
            "POST http://h/x HTTP/1.1",
            "",
        ] {
            assert!(Request::proxied(bad).is_err(), "{bad}");
        }
        let to = origin("https", "h", 443);
        for bad in ["GET http://elsewhere/x HTTP/1.1", "PUT /x HTTP/1.1", ""] {
            assert!(Request::in_tunnel(bad, &to).is_err(), "{bad}");
        }
    }

    #[test]
    fn file_links_are_found_in_html_and_json_pages() {
        for page in [
            r#"<a href="file:///etc/passwd">x-1.0-py3-none-any.whl</a>"#,
            r#"<A HREF = 'FILE:///x.whl'>x</A>"#,
            r#"<a href=file:///x.whl>x</a>"#,
            r#"<base href="file:///"><a href="x.whl">x</a>"#,
            r#"{"files": [{"filename": "x.whl", "url": "file:///x.whl"}]}"#,
        ] {
            assert!(links_to_a_file(page.as_bytes()), "{page}");
        }
        for page in [
            r#"<a href="x-1.0-py3-none-any.whl#sha256=00">x</a>"#,
            r#"<a href="https://files.example/x.whl">profile: file:x</a>"#,
            r#"{"files": [{"url": "https://h/x.whl"}]}"#,
        ] {
            assert!(!links_to_a_file(page.as_bytes()), "{page}");
        }
    }

    async fn answered(response: &[u8], method: &str) -> (Option<String>, String) {
        let request = Request {
            method: method.into(),
            url: "http://h:80/simple/x/".into(),
            head: String::new(),
        };
        let mut client = Vec::new();
        let refused = answer(&mut client, response, &request).await;
        (refused, String::from_utf8_lossy(&client).into_owned())
    }

    #[tokio::test]
    async fn a_chunked_page_is_read_whole_and_checked() {
        // "file:" split across two chunks: only the decoded page shows it.
        let hostile = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n<a href=\"\r\nd\r\nfile:///x.whl\r\n6\r\n\">x</a\r\n0\r\n\r\n";
        let (refused, sent) = answered(hostile, "GET").await;
        assert!(refused.unwrap().contains("file://"));
        assert!(sent.starts_with("HTTP/1.1 403"), "{sent}");

        let fine = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\n<a hr\r\n9\r\nef=\"x.whl\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let (refused, sent) = answered(fine, "GET").await;
        assert_eq!(refused, None);
        assert_eq!(
            sent,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 14\r\nConnection: close\r\n\r\n<a href=\"x.whl"
        );
    }

    #[tokio::test]
    async fn files_pass_as_they_come_and_oversize_pages_are_refused() {
        let wheel = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nPK\x03";
        let (refused, sent) = answered(wheel, "GET").await;
        assert_eq!(refused, None);
        assert_eq!(
            sent,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: close\r\n\r\nPK\x03"
        );
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n",
            MAX_PAGE + 1
        );
        let (refused, sent) = answered(huge.as_bytes(), "GET").await;
        assert!(refused.unwrap().contains("over"));
        assert!(sent.starts_with("HTTP/1.1 403"), "{sent}");
        let (refused, sent) = answered(b"", "GET").await;
        assert_eq!(refused, None);
        assert!(sent.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{sent}");
        let bad = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let (refused, sent) = answered(bad, "GET").await;
        assert_eq!(
            (refused, sent.as_str()),
            (None, ""),
            "a broken page reaches no one"
        );
    }

    proptest! {
        /// A forwarded request goes exactly to the origin its absolute URL names.
        #[test]
        fn the_origin_forwarded_to_is_the_one_the_url_names(
            host in "[a-z]{1,8}(\\.[a-z]{1,4})?",
            port in 1u16..65535,
            path in "(/[a-z0-9._-]{0,8}){0,4}",
        ) {
            let head = format!("GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}");
            match Request::proxied(&head) {
                Ok((to, r)) => {
                    prop_assert_eq!(to, ("http".to_string(), host.clone(), port));
                    let first = r.head.lines().next().unwrap_or_default().to_string();
                    prop_assert!(first.starts_with("GET /"), "{}", first);
                    prop_assert!(!first.contains("://"), "{}", first);
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }

        /// Chunked pages decode to their text whatever the chunk boundaries.
        #[test]
        fn chunked_pages_decode_whatever_the_boundaries(
            page in "[ -~]{0,200}",
            cuts in proptest::collection::vec(1usize..40, 0..12),
        ) {
            let bytes = page.as_bytes();
            let mut encoded = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            let mut at: usize = 0;
            for cut in cuts.iter().chain(std::iter::once(&usize::MAX)) {
                let end = at.saturating_add(*cut).min(bytes.len());
                if end > at {
                    encoded.extend(format!("{:x}\r\n", end - at).as_bytes());
                    encoded.extend(&bytes[at..end]);
                    encoded.extend(b"\r\n");
                }
                at = end;
            }
            encoded.extend(b"0\r\n\r\n");
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (refused, sent) = rt.block_on(answered(&encoded, "GET"));
            prop_assert_eq!(refused.is_some(), links_to_a_file(bytes));
            if refused.is_none() {
                prop_assert!(sent.ends_with(&page), "{}", sent);
            }
        }
    }
}
