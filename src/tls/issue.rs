//! Issuing a CA and serving certificate, and reading back what the rotation needs to know.

use std::time::Duration;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use super::resolver::pem_certs;
use crate::error::{Error, Result};

/// Certificates start this long before they are issued, so a peer whose clock lags still
/// accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

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
    let (not_before, not_after) = (now - CLOCK_SKEW, now + validity);
    // The timestamp tells CAs of successive rotations apart in a bundle.
    let name = format!("bifrost-requirements webhook CA {}", now.unix_timestamp());
    let (ca_pem, issuer) = issue_ca(&name, not_before, not_after)?;
    let (cert, key) = issue_leaf(names, &issuer, not_before, not_after)?;
    Ok(Issued {
        ca: ca_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A CA named `name` that may sign serving certificates only (path length 0), valid from
/// `not_before` to `not_after`; returns its PEM and the issuer holding its key.
pub(crate) fn issue_ca(
    name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(String, Issuer<'static, KeyPair>)> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA", e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| fail("CA", e))?;
    Ok((ca_cert.pem(), Issuer::new(ca, ca_key)))
}

/// A serving certificate for `names` (DNS names or IP addresses; the first is its common name)
/// signed by `issuer`, and its key.
pub(crate) fn issue_leaf(
    names: &[String],
    issuer: &Issuer<'_, KeyPair>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(rcgen::Certificate, KeyPair)> {
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
    let key = KeyPair::generate().map_err(|e| fail("key", e))?;
    let cert = leaf
        .signed_by(&key, issuer)
        .map_err(|e| fail("certificate", e))?;
    Ok((cert, key))
}

fn fail(what: &str, e: rcgen::Error) -> Error {
    Error::Tls(format!("cannot issue the {what}: {e}"))
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
                .map_err(|e| Error::Tls(format!("unparseable certificate: {e}")))?;
            let names = match cert.subject_alternative_name() {
                Ok(Some(san)) => san.value.general_names.iter().filter_map(name).collect(),
                _ => Vec::new(),
            };
            Ok(CertInfo {
                not_after: cert.validity().not_after.timestamp(),
                names,
                der: der.as_ref().to_vec(),
            })
        })
        .collect()
}

/// A subject alternative name as text: DNS names as they are, IP addresses in their usual
/// notation; other kinds are not used by the webhook.
fn name(n: &GeneralName) -> Option<String> {
    match n {
        GeneralName::DNSName(d) => Some(d.to_string()),
        GeneralName::IPAddress(ip) => match ip.len() {
            4 => <[u8; 4]>::try_from(*ip)
                .ok()
                .map(|b| std::net::IpAddr::from(b).to_string()),
            16 => <[u8; 16]>::try_from(*ip)
                .ok()
                .map(|b| std::net::IpAddr::from(b).to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// One certificate as PEM, encoded as rcgen encodes it (64-column base64, `\n` line ends), so a
/// bundle rebuilt from DER compares equal to the one issued.
pub(crate) fn to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    // Base64 is ASCII: every 64-byte chunk is whole characters.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}
