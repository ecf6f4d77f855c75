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
//! index page with such a link is refused too ([`relay`]), whether plain HTTP brought it or an
//! HTTPS tunnel, which the proxy ends and reads itself ([`intercept`]).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The variables uv (reqwest) reads its proxy from, set in the resolver's clean environment
/// (which has no `NO_PROXY`: nothing bypasses it).
pub(crate) const PROXY_VARIABLES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

mod intercept;
mod relay;

pub(crate) use intercept::Authority;

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

/// What a request asks the proxy for: a tunnel to an HTTPS origin, or one plain-HTTP request.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Tunnel(Origin),
    Forward(Origin, relay::Request),
}

/// Read a proxy request head (`CONNECT host:port`, or a method with an absolute `http://` URL).
fn wanted(head: &str) -> Result<Wanted, String> {
    let line = head.lines().next().unwrap_or_default();
    if let Some(target) = line.strip_prefix("CONNECT ") {
        let target = target.split(' ').next().unwrap_or_default();
        let to = origin(&format!("https://{target}")).ok_or_else(|| format!("CONNECT {target}"))?;
        return Ok(Wanted::Tunnel(to));
    }
    let (to, request) = relay::Request::proxied(head)?;
    Ok(Wanted::Forward(to, request))
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub(crate) struct Proxy {
    port: u16,
    refused: Arc<Mutex<Vec<String>>>,
    authority: Arc<Authority>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Listen on a free loopback port, forwarding to `allowed` origins only.
    pub(crate) async fn start(allowed: Vec<Origin>) -> std::io::Result<Proxy> {
        let authority = Arc::new(Authority::new().map_err(std::io::Error::other)?);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let refused = Arc::new(Mutex::new(Vec::new()));
        let (allowed, seen, ca) = (Arc::new(allowed), refused.clone(), authority.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (allowed, seen, ca) = (allowed.clone(), seen.clone(), ca.clone());
                tokio::spawn(async move {
                    if let Some(what) = serve(client, &allowed, &ca).await {
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
            authority,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`, for the proxy variables.
    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The certificate (PEM) of the CA this proxy signs its HTTPS answers with: uv must trust
    /// it, and nothing else (`SSL_CERT_FILE`).
    pub(crate) fn ca_pem(&self) -> &str {
        self.authority.ca_pem()
    }

    /// The requests refused so far (`GET http://host:port/path`, `CONNECT host:port`, with why
    /// when it was not the origin), redacted.
    pub(crate) fn refused(&self) -> Vec<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Serve one client connection; returns what was refused, if it was.
async fn serve(client: TcpStream, allowed: &[Origin], authority: &Authority) -> Option<String> {
    let mut reader = BufReader::new(client);
    let head = relay::read_head(&mut reader).await?;
    let wanted = match wanted(&head) {
        Ok(w) => w,
        Err(what) => return relay::refuse(reader.into_inner(), what).await,
    };
    let to = match &wanted {
        Wanted::Tunnel(o) | Wanted::Forward(o, _) => o.clone(),
    };
    if !allowed.contains(&to) {
        let line = head.lines().next().unwrap_or_default();
        let what = format!("{line} (not among its index URLs)");
        return relay::refuse(reader.into_inner(), what).await;
    }
    let mut client = reader.into_inner();
    match wanted {
        Wanted::Tunnel(to) => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await
                .ok()?;
            intercept::tunnel(client, &to, authority).await
        }
        Wanted::Forward(to, request) => {
            let Ok(mut upstream) = TcpStream::connect((to.1.as_str(), to.2)).await else {
                let what = format!("{} {} (cannot connect)", request.method, request.url);
                return relay::bad_gateway(client, what).await;
            };
            upstream.write_all(request.head.as_bytes()).await.ok()?;
            relay::answer(client, upstream, &request).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_their_origin() {
        assert_eq!(
            wanted("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n"),
            Ok(Wanted::Tunnel(("https".into(), "pypi.org".into(), 443)))
        );
        assert!(matches!(
            wanted("GET http://127.0.0.1:8080/simple/ HTTP/1.1\r\n\r\n"),
            Ok(Wanted::Forward(to, _)) if to == ("http".to_string(), "127.0.0.1".to_string(), 8080)
        ));
        for bad in ["CONNECT  HTTP/1.1", "GET /x HTTP/1.1", ""] {
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
}
