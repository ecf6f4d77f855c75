//! The certificate the server presents, swapped in place without a restart.

use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// The certificate the server presents; replaced in place, read on every handshake.
#[derive(Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The PEM last loaded (certificate then key), to tell a change from a re-read.
    loaded: Mutex<Vec<u8>>,
    /// Set to the served certificate's `notAfter` (unix seconds) whenever one is loaded, which
    /// covers issue, rotation and reload from files alike: each of them ends here.
    expiry: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("loaded", &self.is_loaded())
            .finish()
    }
}

impl CertResolver {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// A resolver that reports the served certificate's expiry to `gauge`.
    pub(crate) fn reporting_expiry(gauge: prometheus_client::metrics::gauge::Gauge) -> Arc<Self> {
        Arc::new(Self {
            expiry: Some(gauge),
            ..Self::default()
        })
    }

    /// Load a PEM certificate chain and key; `Ok(true)` when it differs from what was served.
    /// On error the current certificate stays in place.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool> {
        let mut both = cert_pem.to_vec();
        both.push(0);
        both.extend_from_slice(key_pem);
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| Error::Internal("certificate lock poisoned".into()))?;
        if *loaded == both {
            return Ok(false);
        }
        let key = certified_key(cert_pem, key_pem)?;
        *self
            .current
            .write()
            .map_err(|_| Error::Internal("certificate lock poisoned".into()))? =
            Some(Arc::new(key));
        *loaded = both;
        if let Some(gauge) = &self.expiry
            && let Some(leaf) = super::inspect(cert_pem)?.first()
        {
            gauge.set(leaf.not_after);
        }
        Ok(true)
    }

    /// DER of the certificate being served (for tests and logs).
    pub fn current_der(&self) -> Option<Vec<u8>> {
        let current = self.current.read().ok()?;
        current.as_ref().map(|k| k.cert[0].as_ref().to_vec())
    }

    pub fn is_loaded(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok()?.clone()
    }
}

/// A rustls server configuration with the ring provider (the only one compiled in) that asks
/// `resolver` for the certificate on every handshake.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

pub(crate) fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut &*pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("unreadable PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Tls("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &*pem)
        .map_err(|e| Error::Tls(format!("unreadable PEM private key: {e}")))?
        .ok_or_else(|| Error::Tls("no PEM private key found".into()))
}

/// Parse and check a certificate chain with its key (the key must belong to the first
/// certificate).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(pem_certs(cert_pem)?, pem_key(key_pem)?, &provider)
        .map_err(|e| Error::Tls(format!("certificate and key do not fit together: {e}")))
}
