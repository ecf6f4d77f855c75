//! An allow-list HTTP proxy on loopback for the resolver: uv is told to reach every index
//! through it (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` in its clean environment), and it
//! forwards only to the origins (scheme, host, port) of the index URLs the operator may fetch.
//!
//! uv follows an index's redirects wherever they point (none of its options forbid it): an
//! allowed index could lead the operator's process to any host its network reaches. Through the
//! proxy such a request is answered `403` and never leaves: plain-HTTP requests carry their
//! absolute URL, HTTPS ones open a `CONNECT host:port` tunnel, and both name the origin before
//! anything is sent on. What was refused is kept for the resolver's message.
//!
//! uv also reads `file://` links in an index page from the local disk, without a request: an
//! index page that plain HTTP brings through the proxy with such a link is refused too. Pages
//! inside an HTTPS tunnel cannot be read here (see the README's security section).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The variables uv (reqwest) reads its proxy from, set in the resolver's clean environment
/// (which has no `NO_PROXY`: nothing bypasses it).
pub const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// Longest index page read whole (to look for `file:` links); larger pages are refused.
const MAX_PAGE: usize = 32 * 1024 * 1024;

/// Longest request head read from uv.
const MAX_HEAD: usize = 64 * 1024;

/// `(scheme, host, port)`, host lowercased.
pub type Origin = (String, String, u16);

/// The origin of `url` (`http` and `https` only), default ports filled in.
pub fn origin(url: &str) -> Option<Origin> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    let scheme = parsed.scheme();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    Some((
        scheme.to_string(),
        parsed.host_str()?.to_ascii_lowercase(),
        parsed.port_or_known_default()?,
    ))
}

/// What a request asks the proxy for: the origin and, for plain HTTP, the head to send on
/// (in origin form, `Connection: close`).
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Tunnel(Origin),
    Forward { to: Origin, head: String },
}

/// Read a proxy request head (`CONNECT host:port`, or a method with an absolute `http://` URL).
fn wanted(head: &str) -> Result<Wanted, String> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method == "CONNECT" {
        let to = origin(&format!("https://{target}")).ok_or_else(|| format!("CONNECT {target}"))?;
        return Ok(Wanted::Tunnel(to));
    }
    let url = url::Url::parse(target).map_err(|_| format!("{method} {target}"))?;
    let to = origin(target).ok_or_else(|| format!("{method} {target}"))?;
    if to.0 != "http" {
        return Err(format!("{method} {target}"));
    }
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut out = format!("{method} {path} {}\r\n", parts.next().unwrap_or("HTTP/1.1"));
    for h in lines.filter(|h| !h.is_empty()) {
        let name = h
            .split(':')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !matches!(
            name.as_str(),
            "connection" | "proxy-connection" | "proxy-authorization" | "keep-alive"
        ) {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(Wanted::Forward { to, head: out })
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    refused: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `allowed` origins only.
    pub async fn start(allowed: Vec<Origin>) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (allowed, seen) = (Arc::new(allowed), refused.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (allowed, seen) = (allowed.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Some(what) = serve(client, &allowed).await {
                        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                        if !seen.contains(&what) {
                            seen.push(what);
                        }
                    }
                });
            }
        });
        Ok(Proxy {
            port,
            refused,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, for the proxy variables.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests refused so far (`GET http://host:port/path`, `CONNECT host:port`), redacted.
    pub fn refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Serve one client connection; returns what was refused, if it was.
async fn serve(client: TcpStream, allowed: &[Origin]) -> Option<String> {
    let mut reader = BufReader::new(client);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" || head.len() > MAX_HEAD {
            break;
        }
    }
    let wanted = match wanted(head.trim_end()) {
        Ok(w) => w,
        Err(what) => return refuse(reader.into_inner(), what).await,
    };
    let to = match &wanted {
        Wanted::Tunnel(o) | Wanted::Forward { to: o, .. } => o.clone(),
    };
    if !allowed.contains(&to) {
        let line = head.lines().next().unwrap_or_default().to_string();
        return refuse(reader.into_inner(), line).await;
    }
    let Ok(mut upstream) = TcpStream::connect((to.1.as_str(), to.2)).await else {
        let mut client = reader.into_inner();
        let _ = client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            .await;
        return None;
    };
    let mut client = reader.into_inner();
    match &wanted {
        Wanted::Tunnel(_) => {
            if client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .is_ok()
            {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            None
        }
        Wanted::Forward { head, .. } => {
            if upstream.write_all(head.as_bytes()).await.is_err() {
                return None;
            }
            let line = head.lines().next().unwrap_or_default();
            let url = format!(
                "http://{}:{}{}",
                to.1,
                to.2,
                line.split(' ').nth(1).unwrap_or("/")
            );
            relay(client, upstream, url).await
        }
    }
}

/// Hand the upstream's answer to `client`; an index page (HTML, or the JSON simple API) that
/// links to a `file:` URL is refused instead: uv would read that file from the operator's own
/// disk. Returns what was refused, if it was.
async fn relay(mut client: TcpStream, upstream: TcpStream, url: String) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut upstream = BufReader::new(upstream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        match upstream.read_line(&mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" || head.len() > MAX_HEAD {
            break;
        }
    }
    let page = head.lines().any(|h| {
        let h = h.to_ascii_lowercase();
        h.starts_with("content-type:")
            && (h.contains("html") || h.contains("pypi.simple") || h.contains("json"))
    });
    if !page {
        if client.write_all(head.as_bytes()).await.is_ok() {
            let _ = tokio::io::copy(&mut upstream, &mut client).await;
        }
        return None;
    }
    let mut body = Vec::new();
    let read = (&mut upstream)
        .take(MAX_PAGE as u64 + 1)
        .read_to_end(&mut body)
        .await;
    if read.is_err() || body.len() > MAX_PAGE {
        return refuse(
            client,
            format!("GET {url} (an index page over {MAX_PAGE} bytes)"),
        )
        .await;
    }
    if links_to_a_file(&body) {
        return refuse(
            client,
            format!("GET {url} (an index page linking to a file:// URL)"),
        )
        .await;
    }
    if client.write_all(head.as_bytes()).await.is_ok() {
        let _ = client.write_all(&body).await;
    }
    None
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
async fn refuse(mut client: TcpStream, what: String) -> Option<String> {
    let what = crate::redact::text(what.trim());
    let body = format!(
        "bifrost-requirements: {what} refused: not an index URL the resolver may fetch from\n"
    );
    let reply = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.write_all(reply.as_bytes()).await;
    Some(what)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn requests_name_their_origin_and_go_on_in_origin_form() {
        assert_eq!(
            wanted("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443"),
            Ok(Wanted::Tunnel(("https".into(), "pypi.org".into(), 443)))
        );
        assert_eq!(
            wanted("GET http://127.0.0.1:8080/simple/x/?a=b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\nAccept: */*"),
            Ok(Wanted::Forward {
                to: ("http".into(), "127.0.0.1".into(), 8080),
                head: "GET /simple/x/?a=b HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n".into(),
            })
        );
        for bad in [
            "GET /relative HTTP/1.1",
            "GET file:///etc/passwd HTTP/1.1",
            "GET ftp://h/x HTTP/1.1",
            "",
        ] {
            assert!(wanted(bad).is_err(), "{bad}");
        }
        assert_eq!(
            origin("http://Index.Example/simple"),
            Some(("http".into(), "index.example".into(), 80))
        );
        assert_eq!(
            origin("https://u:p@h:8443/"),
            Some(("https".into(), "h".into(), 8443))
        );
        assert_eq!(origin("file:///x"), None);
    }

    #[test]
    fn file_links_are_found_in_html_and_json_pages() {
        for page in [
            r#"<a href="file:///etc/passwd">x-1.0-py3-none-any.whl</a>"#,
            r#"<A HREF = 'FILE:///x.whl'>x</A>"#,
            r#"<a href=file:///x.whl>x</a>"#,
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

    proptest! {
        /// A forwarded request goes exactly to the origin its absolute URL names.
        #[test]
        fn the_origin_forwarded_to_is_the_one_the_url_names(
            host in "[a-z]{1,8}(\\.[a-z]{1,4})?",
            port in 1u16..65535,
            path in "(/[a-z0-9._-]{0,8}){0,4}",
        ) {
            let head = format!("GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}");
            match wanted(&head) {
                Ok(Wanted::Forward { to, head }) => {
                    prop_assert_eq!(to, ("http".to_string(), host.clone(), port));
                    let first = head.lines().next().unwrap_or_default().to_string();
                    prop_assert!(first.starts_with("GET /"), "{}", first);
                    prop_assert!(!first.contains("://"), "{}", first);
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
    }
}
