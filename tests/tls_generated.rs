//! Generated inputs on the certificate path: whatever a Secret or a mounted file holds (a
//! truncated, bit-flipped, swapped or foreign PEM), loading, inspecting and the rotation step
//! never panic, an unusable Secret is repaired by issuing afresh, and a rejected file leaves the
//! certificate being served in place.

use std::sync::OnceLock;
use std::time::Duration;

use bifrost_requirements::tls::{
    CertResolver, CertSpec, Issued, Step, Stored, certified_key, inspect, issue, step,
};
use proptest::prelude::*;
use time::OffsetDateTime;

const NOW: i64 = 1_800_000_000;

fn issued() -> &'static Issued {
    static ISSUED: OnceLock<Issued> = OnceLock::new();
    ISSUED.get_or_init(|| {
        issue(
            &["svc.ns.svc".into(), "127.0.0.1".into()],
            Duration::from_secs(3600),
            OffsetDateTime::from_unix_timestamp(NOW).expect("time"),
        )
        .expect("issue")
    })
}

fn spec() -> CertSpec {
    CertSpec {
        names: vec!["svc.ns.svc".into(), "127.0.0.1".into()],
        validity: Duration::from_secs(3600),
    }
}

/// A damaged copy of a valid PEM text.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, String),
    Duplicate,
    Random(Vec<u8>),
    Untouched,
}

/// Whole PEM lines and a NUL, inserted anywhere into a valid PEM.
const PEM_PIECES: [&str; 4] = [
    "-----BEGIN CERTIFICATE-----\n",
    "-----END CERTIFICATE-----\n",
    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    "\0",
];

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0usize..2000).prop_map(Damage::Truncate),
        (0usize..2000, 1u8..=255).prop_map(|(i, x)| Damage::Flip(i, x)),
        (
            0usize..2000,
            prop_oneof![
                // Each of the four as likely as either text below.
                4 => prop::sample::select(PEM_PIECES.to_vec()).prop_map(str::to_string),
                1 => "[A-Za-z0-9+/=\n]{0,200}",
                1 => "\\PC{0,40}",
            ]
        )
            .prop_map(|(i, s)| Damage::Insert(i, s)),
        Just(Damage::Duplicate),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Damage::Random),
        Just(Damage::Untouched),
    ]
}

fn apply(pem: &str, d: &Damage) -> Vec<u8> {
    let mut b = pem.as_bytes().to_vec();
    match d {
        Damage::Truncate(i) => b.truncate(*i % (b.len() + 1)),
        Damage::Flip(i, x) => {
            if !b.is_empty() {
                let i = *i % b.len();
                b[i] ^= *x;
            }
        }
        Damage::Insert(i, s) => {
            let i = *i % (b.len() + 1);
            b.splice(i..i, s.bytes());
        }
        Damage::Duplicate => b.extend_from_slice(pem.as_bytes()),
        Damage::Random(r) => b = r.clone(),
        Damage::Untouched => {}
    }
    b
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// A mounted certificate/key pair (cert-manager mode) of any shape: loading returns an error
    /// or a certificate, and a rejected pair leaves the served certificate unchanged.
    #[test]
    fn damaged_files_never_panic_and_keep_the_served_certificate(
        cert_damage in damage(),
        key_damage in damage(),
    ) {
        let good = issued();
        let resolver = CertResolver::new();
        resolver.set_pem(good.cert.as_bytes(), good.key.as_bytes()).expect("valid pair loads");
        let served = resolver.current_der();
        let cert = apply(&good.cert, &cert_damage);
        let key = apply(&good.key, &key_damage);
        let _ = inspect(&cert);
        let _ = certified_key(&cert, &key);
        match resolver.set_pem(&cert, &key) {
            Ok(_) => prop_assert!(resolver.is_loaded()),
            Err(e) => {
                prop_assert!(!e.to_string().is_empty());
                prop_assert_eq!(resolver.current_der(), served, "a rejected pair replaced the certificate");
            }
        }
    }

    /// The self-managed Secret with any field damaged: the rotation step never panics, and when
    /// the Secret cannot be served from it issues afresh instead of keeping it.
    #[test]
    fn damaged_secret_is_repaired_not_panicked_on(
        ca in damage(),
        cert in damage(),
        key in damage(),
        bundle in damage(),
        trusted in damage(),
    ) {
        let good = issued();
        let stored = Stored {
            ca: lossy(&apply(&good.ca, &ca)),
            cert: lossy(&apply(&good.cert, &cert)),
            key: lossy(&apply(&good.key, &key)),
            bundle: lossy(&apply(&good.ca, &bundle)),
            next: None,
            staged_at: None,
        };
        let trusted = apply(&good.ca, &trusted);
        let issuer = || Ok(good.clone());
        let servable = certified_key(stored.cert.as_bytes(), stored.key.as_bytes()).is_ok()
            && inspect(stored.ca.as_bytes()).map(|c| !c.is_empty()).unwrap_or(false);
        let (decision, next) = step(NOW, Some(&stored), &spec(), Some(&trusted), &issuer)
            .expect("step with a working issuer");
        prop_assert!(next >= NOW, "next look {next} is in the past");
        if !servable {
            match decision {
                Step::Write { stored: fresh, .. } => {
                    prop_assert!(certified_key(fresh.cert.as_bytes(), fresh.key.as_bytes()).is_ok());
                }
                Step::Keep => prop_assert!(false, "an unservable Secret was kept"),
            }
        }
    }
}
