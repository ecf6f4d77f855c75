//! TLS of the admission server: a certificate resolver that swaps certificates without a restart,
//! and the two ways certificates arrive.
//!
//! **Self-managed** (default). Every replica runs [`SelfManaged::run`]; they converge on one
//! Secret through optimistic concurrency (create-if-absent, update with `resourceVersion`), so no
//! leadership is needed and a replica serves as soon as the Secret exists. The Secret
//! (`kubernetes.io/tls`) holds the serving certificate (`tls.crt`, `tls.key`), the CA that signed
//! it (`ca.crt`; its private key is discarded after signing) and `ca-bundle.crt`, the CAs the
//! API server must trust, which is patched into every webhook of the
//! MutatingWebhookConfiguration as `caBundle`. Rotation happens in two steps so that no request
//! ever meets a certificate the API server does not trust yet:
//! 1. **stage** (a third of the validity before expiry, or when the DNS names changed): a new CA
//!    and serving certificate are stored under `next-*`, the new CA is added to the bundle and
//!    the bundle is patched into the webhook configuration; everyone keeps serving the current
//!    certificate;
//! 2. **promote** (after a short grace, once the webhook configuration's `caBundle` holds the new
//!    CA): `next-*` becomes current. Each replica picks it up on its next check and swaps it in
//!    (new connections get it; nothing restarts). The old CA stays in the bundle until it
//!    expires, so replicas still serving the old certificate stay trusted meanwhile.
//!
//! **cert-manager**: the chart asks cert-manager for the certificate and for CA injection
//! (`cert-manager.io/inject-ca-from`); [`watch_files`] serves the mounted files and swaps them in
//! when the kubelet updates the Secret volume.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, TestOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};

pub const KEY_CERT: &str = "tls.crt";
pub const KEY_KEY: &str = "tls.key";
pub const KEY_CA: &str = "ca.crt";
pub const KEY_BUNDLE: &str = "ca-bundle.crt";
pub const KEY_NEXT_CERT: &str = "next-tls.crt";
pub const KEY_NEXT_KEY: &str = "next-tls.key";
pub const KEY_NEXT_CA: &str = "next-ca.crt";
/// Secret annotation: when the pending rotation was staged (Unix seconds).
pub const STAGED_AT_ANNOTATION: &str = "bifrost.io/rotation-staged-at";
/// Field manager of the operator's writes to the webhook configuration.
const MANAGER: &str = "bifrost-requirements-webhook";

// ---------------------------------------------------------------------------------------------
// Hot-swappable certificate.

/// The certificate the server presents; replaced in place, read on every handshake.
#[derive(Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The PEM last loaded (certificate then key), to tell a change from a re-read.
    loaded: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field(
                "loaded",
                &self.current.read().map(|c| c.is_some()).unwrap_or(false),
            )
            .finish()
    }
}

impl CertResolver {
    pub fn new() -> Arc<Self> {
        Arc::default()
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
            .map_err(|_| Error::Config("certificate lock poisoned".into()))?;
        if *loaded == both {
            return Ok(false);
        }
        let key = certified_key(cert_pem, key_pem)?;
        *self
            .current
            .write()
            .map_err(|_| Error::Config("certificate lock poisoned".into()))? = Some(Arc::new(key));
        *loaded = both;
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
        .map_err(|e| Error::Config(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut &*pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("unreadable PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Config("no PEM certificate found".into()));
    }
    Ok(certs)
}

fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut &*pem)
        .map_err(|e| Error::Config(format!("unreadable PEM private key: {e}")))?
        .ok_or_else(|| Error::Config("no PEM private key found".into()))
}

/// Parse and check a certificate chain with its key (the key must belong to the first
/// certificate).
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(pem_certs(cert_pem)?, pem_key(key_pem)?, &provider)
        .map_err(|e| Error::Config(format!("certificate and key do not fit together: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Issuing and inspecting certificates.

/// A freshly issued CA and serving certificate (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

/// Issue a CA and a serving certificate for `names` (DNS names or IP addresses), both valid
/// from a few minutes ago (clock skew) until `now + validity`. The CA's key is dropped here.
pub fn issue(names: &[String], validity: Duration, now: OffsetDateTime) -> Result<Issued> {
    let fail = |what: &str, e: rcgen::Error| {
        Error::Config(format!("cannot issue the webhook {what}: {e}"))
    };
    let not_before = now - Duration::from_secs(300);
    let not_after = now + validity;

    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("bifrost-requirements webhook CA {}", now.unix_timestamp()),
    );
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail("CA", e))?;
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf = CertificateParams::new(names.to_vec()).map_err(|e| fail("certificate", e))?;
    leaf.distinguished_name.push(
        DnType::CommonName,
        names
            .first()
            .cloned()
            .unwrap_or_else(|| "bifrost-requirements-webhook".into()),
    );
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate().map_err(|e| fail("key", e))?;
    let leaf_cert = leaf
        .signed_by(&leaf_key, &issuer)
        .map_err(|e| fail("certificate", e))?;
    Ok(Issued {
        ca: ca_cert.pem(),
        cert: leaf_cert.pem(),
        key: leaf_key.serialize_pem(),
    })
}

/// What the rotation logic needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub not_after: i64,
    /// DNS names and IP addresses (as text).
    pub names: Vec<String>,
}

/// Every certificate of a PEM bundle.
pub fn inspect(pem: &[u8]) -> Result<Vec<CertInfo>> {
    pem_certs(pem)?
        .into_iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| Error::Config(format!("unparseable certificate: {e}")))?;
            let mut names = Vec::new();
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            names.push(d.to_string())
                        }
                        x509_parser::extensions::GeneralName::IPAddress(ip) => {
                            if let Ok(b) = <[u8; 4]>::try_from(*ip) {
                                names.push(std::net::IpAddr::from(b).to_string());
                            } else if let Ok(b) = <[u8; 16]>::try_from(*ip) {
                                names.push(std::net::IpAddr::from(b).to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
            Ok(CertInfo {
                not_after: cert.validity().not_after.timestamp(),
                names,
                der: der.as_ref().to_vec(),
            })
        })
        .collect()
}

fn to_pem(der: &[u8]) -> String {
    // Same encoding rcgen uses: 64-column base64 between the markers.
    use std::fmt::Write;
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(chunk));
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The rotation state machine (pure: time and issuing are passed in).

/// The Secret's content.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub bundle: String,
    pub next: Option<Issued>,
    /// Unix seconds when `next` was staged.
    pub staged_at: Option<i64>,
}

impl Stored {
    pub fn from_secret(secret: &Secret) -> Self {
        let data = secret.data.clone().unwrap_or_default();
        let get = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        let next = Issued {
            ca: get(KEY_NEXT_CA),
            cert: get(KEY_NEXT_CERT),
            key: get(KEY_NEXT_KEY),
        };
        Stored {
            ca: get(KEY_CA),
            cert: get(KEY_CERT),
            key: get(KEY_KEY),
            bundle: get(KEY_BUNDLE),
            next: (!next.cert.is_empty()).then_some(next),
            staged_at: secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STAGED_AT_ANNOTATION))
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Write into `secret` (data and the staging annotation; other fields untouched).
    pub fn into_secret(self, mut secret: Secret) -> Secret {
        let mut data = std::collections::BTreeMap::new();
        let mut put = |k: &str, v: String| {
            data.insert(k.to_string(), ByteString(v.into_bytes()));
        };
        put(KEY_CA, self.ca);
        put(KEY_CERT, self.cert);
        put(KEY_KEY, self.key);
        put(KEY_BUNDLE, self.bundle);
        if let Some(next) = self.next {
            put(KEY_NEXT_CA, next.ca);
            put(KEY_NEXT_CERT, next.cert);
            put(KEY_NEXT_KEY, next.key);
        }
        secret.data = Some(data);
        secret.string_data = None;
        secret.type_ = Some("kubernetes.io/tls".into());
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        match self.staged_at {
            Some(t) => {
                annotations.insert(STAGED_AT_ANNOTATION.into(), t.to_string());
            }
            None => {
                annotations.remove(STAGED_AT_ANNOTATION);
            }
        }
        secret
    }
}

/// Rotation timing, derived from the validity.
#[derive(Debug, Clone)]
pub struct Policy {
    /// DNS names / IPs the serving certificate must cover.
    pub names: Vec<String>,
    pub validity: Duration,
}

impl Policy {
    /// Stage a rotation when less than this is left: a third of the validity.
    pub fn renew_before(&self) -> i64 {
        (self.validity.as_secs() / 3).max(1) as i64
    }

    /// Promote a staged rotation after this long (and once the API server trusts the new CA).
    pub fn grace(&self) -> i64 {
        (self.validity.as_secs() / 20).clamp(1, 30) as i64
    }
}

/// What to do with the Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to write.
    Keep,
    /// Write this content (`why` is logged).
    Write { stored: Box<Stored>, why: String },
}

/// One step of the rotation state machine. `now` in Unix seconds; `trusted`: the CA bundle the
/// webhook configuration holds (None when there is no configuration to protect); `issue` makes
/// a fresh CA and certificate. Returns the step and the Unix time to look again at the latest.
pub fn step(
    now: i64,
    stored: Option<&Stored>,
    policy: &Policy,
    trusted: Option<&[u8]>,
    issue: &dyn Fn() -> Result<Issued>,
) -> Result<(Step, i64)> {
    let renew_before = policy.renew_before();
    let grace = policy.grace();
    let bundle_of = |pem: &str| inspect(pem.as_bytes()).unwrap_or_default();
    // Unexpired CAs of a bundle, plus the given ones, newest first, without duplicates.
    let merge = |keep: &[CertInfo], add: &[&str]| -> String {
        let mut all: Vec<CertInfo> = add.iter().flat_map(|p| bundle_of(p)).collect();
        all.extend(keep.iter().cloned());
        all.retain(|c| c.not_after > now);
        all.sort_by_key(|c| std::cmp::Reverse(c.not_after));
        let mut seen = Vec::new();
        all.retain(|c| {
            let fresh = !seen.contains(&c.der);
            seen.push(c.der.clone());
            fresh
        });
        all.truncate(4);
        all.iter().map(|c| to_pem(&c.der)).collect()
    };

    let current = stored.and_then(|s| {
        certified_key(s.cert.as_bytes(), s.key.as_bytes()).ok()?;
        let leaf = inspect(s.cert.as_bytes()).ok()?.into_iter().next()?;
        inspect(s.ca.as_bytes()).ok()?.into_iter().next()?;
        Some((s, leaf))
    });
    // Issue at once, keeping the CAs of whatever may still be served.
    let fresh = |why: &str| -> Result<(Step, i64)> {
        let fresh = issue()?;
        let old = stored.map(|s| bundle_of(&s.bundle)).unwrap_or_default();
        let bundle = merge(&old, &[&fresh.ca]);
        let stored = Stored {
            ca: fresh.ca,
            cert: fresh.cert,
            key: fresh.key,
            bundle,
            next: None,
            staged_at: None,
        };
        let renew_at = now + policy.validity.as_secs() as i64 - renew_before;
        Ok((
            Step::Write {
                stored: Box::new(stored),
                why: why.into(),
            },
            renew_at,
        ))
    };
    let Some((s, leaf)) = current.filter(|(_, leaf)| leaf.not_after > now) else {
        return fresh(if stored.is_some() {
            "the stored serving certificate is unusable or expired; issued a new one"
        } else {
            "issued the webhook's CA and serving certificate"
        });
    };
    let bundle = bundle_of(&s.bundle);
    let names_ok = policy.names.iter().all(|n| leaf.names.contains(n));
    let renew_at = leaf.not_after - renew_before;

    if let Some(next) = &s.next {
        let next_ok = certified_key(next.cert.as_bytes(), next.key.as_bytes()).is_ok()
            && inspect(next.ca.as_bytes())
                .is_ok_and(|c| c.iter().all(|c| c.not_after > now + grace));
        if !next_ok {
            let mut stored = s.clone();
            stored.next = None;
            stored.staged_at = None;
            return Ok((
                Step::Write {
                    stored: Box::new(stored),
                    why: "dropped an unusable staged certificate".into(),
                },
                now,
            ));
        }
        let staged_at = s.staged_at.unwrap_or(now);
        let next_ca = inspect(next.ca.as_bytes()).unwrap_or_default();
        let api_trusts = match trusted {
            None => true,
            Some(pem) => {
                let trusted = bundle_of(&String::from_utf8_lossy(pem));
                next_ca
                    .iter()
                    .all(|n| trusted.iter().any(|t| t.der == n.der))
            }
        };
        let urgent = leaf.not_after - now <= grace;
        if (now >= staged_at + grace && api_trusts) || urgent {
            let stored = Stored {
                ca: next.ca.clone(),
                cert: next.cert.clone(),
                key: next.key.clone(),
                bundle: merge(&bundle, &[&next.ca, &s.ca]),
                next: None,
                staged_at: None,
            };
            let valid = policy.validity.as_secs() as i64;
            return Ok((
                Step::Write { stored: Box::new(stored), why: "promoted the staged serving certificate (the old CA stays trusted until it expires)".into() },
                now + valid - renew_before,
            ));
        }
        let mut stored = s.clone();
        stored.staged_at = Some(staged_at);
        let wanted_bundle = merge(&bundle, &[&next.ca, &s.ca]);
        if stored.bundle != wanted_bundle || s.staged_at.is_none() {
            stored.bundle = wanted_bundle;
            return Ok((
                Step::Write {
                    stored: Box::new(stored),
                    why: "repaired the CA bundle of a staged rotation".into(),
                },
                now + 1,
            ));
        }
        return Ok((Step::Keep, (staged_at + grace).max(now + 1)));
    }

    if now >= renew_at || !names_ok {
        if leaf.not_after - now <= grace {
            return fresh(
                "the serving certificate is about to expire and no rotation was staged; issued a new one",
            );
        }
        let next = issue()?;
        let bundle = merge(&bundle, &[&next.ca, &s.ca]);
        let why = if names_ok {
            format!(
                "serving certificate expires in {} s; staged a new CA and certificate",
                leaf.not_after - now
            )
        } else {
            format!(
                "serving certificate covers {:?}, not {:?}; staged a new CA and certificate",
                leaf.names, policy.names
            )
        };
        let stored = Stored {
            next: Some(next),
            staged_at: Some(now),
            bundle,
            ..s.clone()
        };
        return Ok((
            Step::Write {
                stored: Box::new(stored),
                why,
            },
            now + grace,
        ));
    }

    // Keep the bundle tidy: the current CA present, expired CAs gone.
    let wanted = merge(&bundle, &[&s.ca]);
    let ders = |b: &[CertInfo]| b.iter().map(|c| c.der.clone()).collect::<Vec<_>>();
    if ders(&bundle_of(&wanted)) != ders(&bundle) {
        let stored = Stored {
            bundle: wanted,
            ..s.clone()
        };
        let why = "updated the CA bundle (current CA present, expired CAs removed)";
        return Ok((
            Step::Write {
                stored: Box::new(stored),
                why: why.into(),
            },
            now + 1,
        ));
    }
    let earliest_ca_expiry = bundle.iter().map(|c| c.not_after).min().unwrap_or(i64::MAX);
    Ok((
        Step::Keep,
        renew_at.min(earliest_ca_expiry.saturating_add(1)),
    ))
}

// ---------------------------------------------------------------------------------------------
// Self-managed mode: the Secret and the webhook configuration.

/// Settings of the self-managed mode.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    pub namespace: String,
    pub secret_name: String,
    /// MutatingWebhookConfiguration whose webhooks get the `caBundle`.
    pub webhook_config: String,
    pub policy: Policy,
    /// Upper bound between two looks at the Secret and the webhook configuration.
    pub check_interval: Duration,
}

impl SelfManaged {
    /// Keep the Secret, the served certificate and the `caBundle` in shape until `shutdown`.
    /// Every failure is logged and retried; nothing here is fatal.
    pub async fn run(
        self,
        client: Client,
        resolver: Arc<CertResolver>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut state = LoopState::default();
        loop {
            let wait = match self.once(&client, &resolver, &mut state).await {
                Ok(next) => {
                    let now = OffsetDateTime::now_utc().unix_timestamp();
                    Duration::from_secs(next.saturating_sub(now).max(0) as u64)
                }
                Err(e) => {
                    warn!(error = %e, secret = %self.secret_name, namespace = %self.namespace, "webhook certificate: retrying");
                    Duration::from_secs(2)
                }
            };
            let wait = wait.clamp(Duration::from_millis(200), self.check_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn once(
        &self,
        client: &Client,
        resolver: &CertResolver,
        state: &mut LoopState,
    ) -> Result<i64> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let config = match configs.get_opt(&self.webhook_config).await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "cannot read the webhook configuration");
                None
            }
        };
        let trusted = config.as_ref().map(trusted_bundle);
        for _attempt in 0..5 {
            let secret = secrets.get_opt(&self.secret_name).await.map_err(|e| {
                Error::kube(
                    format!("reading Secret {}/{}", self.namespace, self.secret_name),
                    e,
                )
            })?;
            let stored = secret.as_ref().map(Stored::from_secret);
            let now = OffsetDateTime::now_utc();
            let policy = &self.policy;
            let (step, next) = step(
                now.unix_timestamp(),
                stored.as_ref(),
                policy,
                trusted.as_deref(),
                &|| issue(&policy.names, policy.validity, now),
            )?;
            let stored = match step {
                Step::Keep => match stored {
                    Some(s) => s,
                    None => continue,
                },
                Step::Write { stored, why } => {
                    let stored = *stored;
                    let written = match secret {
                        None => {
                            let fresh = Secret {
                                metadata: kube::api::ObjectMeta {
                                    name: Some(self.secret_name.clone()),
                                    namespace: Some(self.namespace.clone()),
                                    labels: Some(
                                        [(
                                            "app.kubernetes.io/managed-by".to_string(),
                                            "bifrost-requirements".to_string(),
                                        )]
                                        .into(),
                                    ),
                                    ..Default::default()
                                },
                                ..Default::default()
                            };
                            secrets
                                .create(&PostParams::default(), &stored.clone().into_secret(fresh))
                                .await
                        }
                        Some(existing) => {
                            // `replace` carries the resourceVersion: a concurrent writer wins,
                            // we re-read and re-decide.
                            secrets
                                .replace(
                                    &self.secret_name,
                                    &PostParams::default(),
                                    &stored.clone().into_secret(existing),
                                )
                                .await
                        }
                    };
                    match written {
                        Ok(_) => {
                            info!(secret = %self.secret_name, namespace = %self.namespace, "webhook certificate: {why}");
                            stored
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => {
                            debug!("webhook certificate Secret changed concurrently; re-reading");
                            continue;
                        }
                        Err(e) => {
                            return Err(Error::kube(
                                format!("writing Secret {}/{}", self.namespace, self.secret_name),
                                e,
                            ));
                        }
                    }
                }
            };
            match resolver.set_pem(stored.cert.as_bytes(), stored.key.as_bytes()) {
                Ok(true) => {
                    let expires = inspect(stored.cert.as_bytes())
                        .ok()
                        .and_then(|c| c.first().map(|c| c.not_after))
                        .unwrap_or_default();
                    info!(
                        expires_unix = expires,
                        "serving the webhook certificate from Secret {}/{}",
                        self.namespace,
                        self.secret_name
                    );
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "the stored serving certificate cannot be loaded"),
            }
            self.patch_ca_bundle(&configs, config.as_ref(), stored.bundle.as_bytes(), state)
                .await;
            return Ok(next);
        }
        Err(Error::Config(
            "the certificate Secret kept changing; retrying".into(),
        ))
    }

    /// Put `bundle` into every webhook of the configuration that lacks it.
    async fn patch_ca_bundle(
        &self,
        configs: &Api<MutatingWebhookConfiguration>,
        config: Option<&MutatingWebhookConfiguration>,
        bundle: &[u8],
        state: &mut LoopState,
    ) {
        let Some(config) = config else {
            if !state.config_missing_logged {
                info!(
                    name = %self.webhook_config,
                    "MutatingWebhookConfiguration not found (yet); its caBundle will be set once it exists"
                );
                state.config_missing_logged = true;
            }
            return;
        };
        state.config_missing_logged = false;
        let mut ops = Vec::new();
        for (i, w) in config
            .webhooks
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(bundle) {
                continue;
            }
            let idx = i.to_string();
            ops.push(PatchOperation::Test(TestOperation {
                path: PointerBuf::from_tokens(["webhooks", idx.as_str(), "name"]),
                value: serde_json::Value::String(w.name.clone()),
            }));
            ops.push(PatchOperation::Add(AddOperation {
                path: PointerBuf::from_tokens([
                    "webhooks",
                    idx.as_str(),
                    "clientConfig",
                    "caBundle",
                ]),
                value: serde_json::to_value(ByteString(bundle.to_vec())).unwrap_or_default(),
            }));
        }
        if ops.is_empty() {
            return;
        }
        let patch: Patch<()> = Patch::Json(json_patch::Patch(ops));
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        match configs.patch(&self.webhook_config, &params, &patch).await {
            Ok(_) => {
                info!(name = %self.webhook_config, "patched caBundle into the MutatingWebhookConfiguration")
            }
            Err(e) => {
                warn!(error = %e, name = %self.webhook_config, "cannot patch the caBundle; retrying")
            }
        }
    }
}

#[derive(Default)]
struct LoopState {
    config_missing_logged: bool,
}

/// The CAs every webhook of the configuration trusts (the intersection's worth: we use the
/// first webhook's bundle, and an empty bundle when any webhook lacks one).
fn trusted_bundle(config: &MutatingWebhookConfiguration) -> Vec<u8> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    if webhooks.iter().any(|w| w.client_config.ca_bundle.is_none()) {
        return Vec::new();
    }
    // Every webhook must trust the CA: keep only what all bundles share (compared as PEM text).
    let bundles: Vec<Vec<CertInfo>> = webhooks
        .iter()
        .map(|w| {
            inspect(
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .map(|b| b.0.as_slice())
                    .unwrap_or_default(),
            )
            .unwrap_or_default()
        })
        .collect();
    let Some(first) = bundles.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|c| bundles.iter().all(|b| b.iter().any(|o| o.der == c.der)))
        .map(|c| to_pem(&c.der))
        .collect::<String>()
        .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// cert-manager mode: serve mounted files.

/// Load `cert`/`key` now and whenever their content changes (checked every `interval`), until
/// `shutdown`. A missing or broken pair is logged; the previous certificate keeps serving.
pub async fn watch_files(
    cert: PathBuf,
    key: PathBuf,
    interval: Duration,
    resolver: Arc<CertResolver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_error = String::new();
    loop {
        let loaded = match (tokio::fs::read(&cert).await, tokio::fs::read(&key).await) {
            (Ok(c), Ok(k)) => resolver.set_pem(&c, &k).map_err(|e| e.to_string()),
            (Err(e), _) => Err(format!("cannot read {}: {e}", cert.display())),
            (_, Err(e)) => Err(format!("cannot read {}: {e}", key.display())),
        };
        match loaded {
            Ok(true) => {
                last_error.clear();
                info!(cert = %cert.display(), "serving the webhook certificate from files (reloaded on change)");
            }
            Ok(false) => last_error.clear(),
            Err(e) if e != last_error => {
                warn!(error = %e, "webhook certificate files not usable; keeping the current certificate");
                last_error = e;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(validity: u64) -> Policy {
        Policy {
            names: vec!["svc.ns.svc".into(), "127.0.0.1".into()],
            validity: Duration::from_secs(validity),
        }
    }

    fn issuer_at(names: Vec<String>, validity: u64, now: i64) -> impl Fn() -> Result<Issued> {
        move || {
            issue(
                &names,
                Duration::from_secs(validity),
                OffsetDateTime::from_unix_timestamp(now).expect("time"),
            )
        }
    }

    fn write(s: (Step, i64)) -> (Stored, i64) {
        match s {
            (Step::Write { stored, .. }, next) => (*stored, next),
            (Step::Keep, _) => panic!("expected a write"),
        }
    }

    fn cas(pem: &str) -> Vec<Vec<u8>> {
        inspect(pem.as_bytes())
            .unwrap()
            .into_iter()
            .map(|c| c.der)
            .collect()
    }

    #[test]
    fn issued_certificates_carry_the_names_and_fit_their_keys() {
        let now = OffsetDateTime::now_utc();
        let i = issue(&policy(3600).names, Duration::from_secs(3600), now).unwrap();
        let leaf = &inspect(i.cert.as_bytes()).unwrap()[0];
        assert_eq!(leaf.names, ["svc.ns.svc", "127.0.0.1"]);
        assert_eq!(leaf.not_after, now.unix_timestamp() + 3600);
        certified_key(i.cert.as_bytes(), i.key.as_bytes()).unwrap();
        let other = issue(&policy(3600).names, Duration::from_secs(3600), now).unwrap();
        assert!(certified_key(i.cert.as_bytes(), other.key.as_bytes()).is_err());
        // Our PEM encoder writes what rcgen writes.
        assert_eq!(
            to_pem(&inspect(i.ca.as_bytes()).unwrap()[0].der),
            i.ca.replace("\r\n", "\n")
        );
    }

    #[test]
    fn resolver_swaps_in_place() {
        let now = OffsetDateTime::now_utc();
        let r = CertResolver::new();
        assert!(!r.is_loaded());
        let a = issue(&["a".into()], Duration::from_secs(60), now).unwrap();
        let b = issue(&["b".into()], Duration::from_secs(60), now).unwrap();
        assert!(r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap());
        assert!(
            !r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap(),
            "same content: no change"
        );
        let first = r.current_der().unwrap();
        assert!(r.set_pem(b"garbage", a.key.as_bytes()).is_err());
        assert_eq!(
            r.current_der().unwrap(),
            first,
            "a broken pair keeps the old certificate"
        );
        assert!(r.set_pem(b.cert.as_bytes(), b.key.as_bytes()).unwrap());
        assert_ne!(r.current_der().unwrap(), first);
    }

    #[test]
    fn full_rotation_cycle() {
        let p = policy(300); // renew 100 s before expiry, grace 15 s
        let t0 = 1_000_000;
        // First start: issue.
        let (s0, next) =
            write(step(t0, None, &p, None, &issuer_at(p.names.clone(), 300, t0)).unwrap());
        assert_eq!(next, t0 + 200);
        assert_eq!(cas(&s0.bundle), cas(&s0.ca));
        // Steady state: nothing to do until 200 s.
        let (k, next) = step(t0 + 10, Some(&s0), &p, Some(s0.bundle.as_bytes()), &|| {
            panic!("no issue")
        })
        .unwrap();
        assert_eq!((k, next), (Step::Keep, t0 + 200));
        // Stage at 200 s: the bundle gains the new CA, the served certificate is unchanged.
        let t1 = t0 + 201;
        let (s1, next) = write(
            step(
                t1,
                Some(&s0),
                &p,
                Some(s0.bundle.as_bytes()),
                &issuer_at(p.names.clone(), 300, t1),
            )
            .unwrap(),
        );
        assert_eq!(next, t1 + 15);
        assert_eq!(s1.cert, s0.cert);
        let staged = s1.next.clone().unwrap();
        assert_eq!(s1.staged_at, Some(t1));
        let b1 = cas(&s1.bundle);
        assert!(b1.contains(&cas(&s0.ca)[0]) && b1.contains(&cas(&staged.ca)[0]));
        // Not promoted before the grace, nor while the API server does not trust the new CA.
        assert_eq!(
            step(
                t1 + 5,
                Some(&s1),
                &p,
                Some(s0.bundle.as_bytes()),
                &|| panic!()
            )
            .unwrap()
            .0,
            Step::Keep
        );
        assert_eq!(
            step(
                t1 + 20,
                Some(&s1),
                &p,
                Some(s0.bundle.as_bytes()),
                &|| panic!()
            )
            .unwrap()
            .0,
            Step::Keep
        );
        // Promoted once trusted.
        let (s2, next) = write(
            step(
                t1 + 20,
                Some(&s1),
                &p,
                Some(s1.bundle.as_bytes()),
                &|| panic!(),
            )
            .unwrap(),
        );
        assert_eq!(s2.cert, staged.cert);
        assert_eq!(s2.ca, staged.ca);
        assert!(s2.next.is_none() && s2.staged_at.is_none());
        assert!(
            cas(&s2.bundle).contains(&cas(&s0.ca)[0]),
            "the old CA stays during the overlap"
        );
        assert_eq!(next, t1 + 20 + 200);
        // Once the old CA expired it is pruned.
        let t3 = t0 + 301;
        let (s3, _) =
            write(step(t3, Some(&s2), &p, Some(s2.bundle.as_bytes()), &|| panic!()).unwrap());
        assert_eq!(cas(&s3.bundle), cas(&s2.ca));
    }

    #[test]
    fn urgent_promotion_without_trust_and_recovery_from_garbage() {
        let p = policy(300);
        let t0 = 2_000_000;
        let (s0, _) =
            write(step(t0, None, &p, None, &issuer_at(p.names.clone(), 300, t0)).unwrap());
        let t1 = t0 + 250;
        let (s1, _) = write(
            step(
                t1,
                Some(&s0),
                &p,
                Some(b""),
                &issuer_at(p.names.clone(), 300, t1),
            )
            .unwrap(),
        );
        // The configuration never got the new CA, but the current certificate is about to expire.
        let (s2, _) = write(step(t0 + 290, Some(&s1), &p, Some(b""), &|| panic!()).unwrap());
        assert_eq!(s2.cert, s1.next.as_ref().unwrap().cert);
        // No webhook configuration at all: promote after the grace.
        let (s1b, _) = write(
            step(
                t1,
                Some(&s0),
                &p,
                None,
                &issuer_at(p.names.clone(), 300, t1),
            )
            .unwrap(),
        );
        assert!(matches!(
            step(t1 + 16, Some(&s1b), &p, None, &|| panic!()).unwrap().0,
            Step::Write { .. }
        ));
        // Garbage: reissue, keeping the still-valid CAs of the old bundle.
        let broken = Stored {
            cert: "junk".into(),
            ..s0.clone()
        };
        let (s3, _) = write(
            step(
                t0 + 10,
                Some(&broken),
                &p,
                None,
                &issuer_at(p.names.clone(), 300, t0 + 10),
            )
            .unwrap(),
        );
        assert_ne!(s3.cert, s0.cert);
        let b = cas(&s3.bundle);
        assert!(b.contains(&cas(&s0.ca)[0]) && b.contains(&cas(&s3.ca)[0]));
    }

    #[test]
    fn changed_names_stage_at_once() {
        let p = policy(3600);
        let t0 = 3_000_000;
        let (s0, _) = write(
            step(
                t0,
                None,
                &p,
                None,
                &issuer_at(vec!["old.name".into()], 3600, t0),
            )
            .unwrap(),
        );
        let (s1, _) = write(
            step(
                t0 + 1,
                Some(&s0),
                &p,
                None,
                &issuer_at(p.names.clone(), 3600, t0 + 1),
            )
            .unwrap(),
        );
        assert!(s1.next.is_some());
    }

    #[test]
    fn secret_round_trip() {
        let now = OffsetDateTime::now_utc();
        let i = issue(&["x".into()], Duration::from_secs(60), now).unwrap();
        let stored = Stored {
            ca: i.ca.clone(),
            cert: i.cert.clone(),
            key: i.key.clone(),
            bundle: i.ca.clone(),
            next: Some(i.clone()),
            staged_at: Some(42),
        };
        let secret = stored.clone().into_secret(Secret::default());
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(Stored::from_secret(&secret), stored);
        let done = Stored {
            next: None,
            staged_at: None,
            ..stored
        };
        let secret = done.clone().into_secret(secret);
        assert_eq!(Stored::from_secret(&secret), Stored { ..done });
        assert!(!secret.data.as_ref().unwrap().contains_key(KEY_NEXT_CERT));
    }
}
