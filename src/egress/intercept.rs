//! Reading inside the HTTPS tunnels uv opens through the proxy.
//!
//! An HTTPS index page is the one place a `file://` link could hide from a proxy that only
//! forwards bytes: so the proxy ends uv's TLS itself, with a certificate for the tunnel's host
//! signed by a CA made for this one resolution ([`Authority`]; uv trusts it alone, through
//! `SSL_CERT_FILE` in its clean environment), and opens its own TLS connection to the index,
//! checked against the public roots uv would use plus the ones the operator's environment
//! names (`SSL_CERT_FILE`, `SSL_CERT_DIR`). In between, each request is read like a plain-HTTP
//! one ([`super::relay`]). The CA's key lives in memory only and dies with the proxy.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::relay::{self, Origin};
use crate::tls::issue::{issue_ca, issue_leaf};

/// How long the resolution's CA and its certificates are valid (a resolution is bounded by the
/// resolver's timeout, far shorter); they start a few minutes back for a lagging clock.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The CA of one proxy: signs a serving certificate per host on demand.
pub(crate) struct Authority {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    served: Mutex<HashMap<String, Arc<ServerConfig>>>,
    upstream: Arc<ClientConfig>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

impl Authority {
    /// A fresh CA, and the client configuration that checks the real indexes.
    pub(crate) fn new() -> Result<Authority, String> {
        let now = time::OffsetDateTime::now_utc();
        let name = "bifrost-requirements resolver proxy (one resolution)";
        let (ca_pem, issuer) =
            issue_ca(name, now - CLOCK_SKEW, now + VALIDITY).map_err(|e| e.to_string())?;
        Ok(Authority {
            ca_pem,
            issuer,
            served: Mutex::new(HashMap::new()),
            upstream: upstream_config(),
        })
    }

    /// The CA certificate (PEM) uv is told to trust.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server configuration presenting a certificate for `host` (a DNS name or an IP
    /// address), made once per host.
    fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let mut served = self.served.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(config) = served.get(host) {
            return Ok(config.clone());
        }
        let now = time::OffsetDateTime::now_utc();
        let (cert, key) = issue_leaf(
            &[host.to_string()],
            &self.issuer,
            now - CLOCK_SKEW,
            now + VALIDITY,
        )
        .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .map_err(|e| e.to_string())?;
        // One request per connection, read as HTTP/1.1: no HTTP/2 inside the tunnel.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        served.insert(host.to_string(), config.clone());
        Ok(config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The roots the real index is checked against: the public ones uv bundles, and what the
/// operator's environment trusts (a private index's CA in `SSL_CERT_FILE` keeps working). Read
/// once per process: the environment does not change.
fn upstream_config() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| Arc::new(read_upstream_config()))
        .clone()
}

fn read_upstream_config() -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Serve one CONNECT tunnel to the allowed HTTPS origin `to` (already answered `200`): end
/// uv's TLS, read its one request, send it on over a checked TLS connection to `to`, and relay
/// the answer as [`relay::answer`] does. Returns what was refused, if anything was.
pub(crate) async fn tunnel(
    client: TcpStream,
    to: &Origin,
    authority: &Authority,
) -> Option<String> {
    let config = match authority.server_config(&to.1) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("resolver proxy: no certificate for {}: {e}", to.1);
            return None;
        }
    };
    let tls = TlsAcceptor::from(config).accept(client).await.ok()?;
    let mut reader = BufReader::new(tls);
    let head = relay::read_head(&mut reader).await?;
    let request = match relay::Request::in_tunnel(&head, to) {
        Ok(r) => r,
        Err(what) => return relay::refuse(reader.into_inner(), what).await,
    };
    let mut client = reader.into_inner();
    let mut upstream = match connect(to, &authority.upstream).await {
        Ok(u) => u,
        Err(e) => {
            let what = format!("{} {} ({e})", request.method, request.url);
            return relay::bad_gateway(client, what).await;
        }
    };
    if upstream.write_all(request.head.as_bytes()).await.is_err() {
        let _ = client.shutdown().await;
        return None;
    }
    relay::answer(client, upstream, &request).await
}

async fn connect(
    to: &Origin,
    config: &Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let name = ServerName::try_from(to.1.clone()).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect((to.1.as_str(), to.2))
        .await
        .map_err(|e| e.to_string())?;
    TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {}:{}: {e}", to.1, to.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_name_dns_hosts_and_ip_addresses() {
        let authority = Authority::new().expect("a CA");
        assert!(
            authority
                .ca_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        for host in ["pypi.org", "127.0.0.1", "index.internal"] {
            let first = authority.server_config(host).expect(host);
            let again = authority.server_config(host).expect(host);
            assert!(Arc::ptr_eq(&first, &again), "{host}: made once");
        }
    }
}
