use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use time::OffsetDateTime;

use super::issue::to_pem;
use super::self_managed::KEY_NEXT_CERT;
use super::*;
use crate::error::Result;

fn spec(validity: u64) -> CertSpec {
    CertSpec {
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
    let i = issue(&spec(3600).names, Duration::from_secs(3600), now).unwrap();
    let leaf = &inspect(i.cert.as_bytes()).unwrap()[0];
    assert_eq!(leaf.names, ["svc.ns.svc", "127.0.0.1"]);
    assert_eq!(leaf.not_after, now.unix_timestamp() + 3600);
    certified_key(i.cert.as_bytes(), i.key.as_bytes()).unwrap();
    let other = issue(&spec(3600).names, Duration::from_secs(3600), now).unwrap();
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
fn resolver_reports_the_served_certificates_expiry() {
    let now = OffsetDateTime::now_utc();
    let gauge = prometheus_client::metrics::gauge::Gauge::<i64>::default();
    let r = CertResolver::reporting_expiry(gauge.clone());
    let a = issue(&["a".into()], Duration::from_secs(600), now).unwrap();
    let b = issue(&["b".into()], Duration::from_secs(6000), now).unwrap();
    assert!(r.set_pem(a.cert.as_bytes(), a.key.as_bytes()).unwrap());
    let expiry = |pem: &str| crate::tls::inspect(pem.as_bytes()).unwrap()[0].not_after;
    assert_eq!(gauge.get(), expiry(&a.cert));
    assert!((gauge.get() - (now.unix_timestamp() + 600)).abs() <= 1);
    // A rotation (or a reloaded file) moves it; a pair that does not load leaves it.
    assert!(r.set_pem(b"garbage", b.key.as_bytes()).is_err());
    assert_eq!(gauge.get(), expiry(&a.cert));
    assert!(r.set_pem(b.cert.as_bytes(), b.key.as_bytes()).unwrap());
    assert_eq!(gauge.get(), expiry(&b.cert));
}

#[test]
fn full_rotation_cycle() {
    let p = spec(300); // renew 100 s before expiry, grace 15 s
    let t0 = 1_000_000;
    // First start: issue.
    let (s0, next) = write(step(t0, None, &p, None, &issuer_at(p.names.clone(), 300, t0)).unwrap());
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
    for at in [t1 + 5, t1 + 20] {
        let (step, _) = step(at, Some(&s1), &p, Some(s0.bundle.as_bytes()), &|| panic!()).unwrap();
        assert_eq!(step, Step::Keep, "{at}");
    }
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
    let (s3, _) = write(step(t3, Some(&s2), &p, Some(s2.bundle.as_bytes()), &|| panic!()).unwrap());
    assert_eq!(cas(&s3.bundle), cas(&s2.ca));
}

#[test]
fn urgent_promotion_without_trust_and_recovery_from_garbage() {
    let p = spec(300);
    let t0 = 2_000_000;
    let (s0, _) = write(step(t0, None, &p, None, &issuer_at(p.names.clone(), 300, t0)).unwrap());
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
    let p = spec(3600);
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
