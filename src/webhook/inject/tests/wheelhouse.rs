//! The wheelhouse reaches the install container only with a lock of the pod's content.

use super::*;
use crate::crd::{LockStatus, S3CredentialsRef, WheelhouseS3, WheelhouseSpec};
use crate::requirements::content_hash;

fn with_wheelhouse(lock_of: &str) -> WorkspaceRequirements {
    let mut r = resource();
    r.spec.install.wheelhouse = Some(WheelhouseSpec {
        s3: Some(WheelhouseS3 {
            bucket: Some("bifrost-local".into()),
            endpoint: Some("http://10.244.0.1:8333".into()),
            credentials_secret_ref: Some(S3CredentialsRef {
                name: "bifrost-secrets".into(),
                access_key_id_key: "BIFROST_S3_ACCESS_KEY".into(),
                secret_access_key_key: "BIFROST_S3_SECRET_KEY".into(),
            }),
            ..WheelhouseS3::default()
        }),
    });
    r.status.get_or_insert_default().lock = Some(LockStatus {
        content_hash: content_hash(lock_of),
        packages: 1,
        resolved_at: "2026-12-07T00:00:00Z".into(),
        sha256: "ab".repeat(32),
    });
    r
}

fn secret_ref(c: &Container, name: &str) -> (String, String, Option<bool>) {
    let s = env(c, name)
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.secret_key_ref.as_ref())
        .unwrap_or_else(|| panic!("{name} from a Secret"));
    (s.name.clone(), s.key.clone(), s.optional)
}

#[test]
fn a_locked_pod_gets_the_wheelhouse_flags_and_its_keys_from_the_secret() {
    let (p, _) = apply(&pod(worker()), &with_wheelhouse(CONTENT));
    let inst = init(&p, INSTALL_CONTAINER);
    let args = inst.args.as_ref().unwrap().join(" ");
    assert!(
        args.contains(&format!("--lock-sha256={}", "ab".repeat(32))),
        "{args}"
    );
    assert!(
        args.contains(
            "--wheelhouse=s3://bifrost-local/_bifrost-requirements/wheelhouse \
             --wheelhouse-region=us-east-1 --wheelhouse-endpoint=http://10.244.0.1:8333 \
             --wheelhouse-path-style"
        ),
        "{args}"
    );
    assert_eq!(
        secret_ref(inst, "BIFROST_WHEELHOUSE_ACCESS_KEY"),
        (
            "bifrost-secrets".into(),
            "BIFROST_S3_ACCESS_KEY".into(),
            Some(true)
        )
    );
    assert_eq!(
        secret_ref(inst, "BIFROST_WHEELHOUSE_SECRET_KEY"),
        (
            "bifrost-secrets".into(),
            "BIFROST_S3_SECRET_KEY".into(),
            Some(true)
        )
    );
    // The keys never appear as arguments.
    assert!(!args.contains("BIFROST_S3"), "{args}");
}

#[test]
fn without_a_lock_of_the_pods_content_there_is_no_wheelhouse() {
    for r in [with_wheelhouse("another content\n"), {
        let mut r = with_wheelhouse(CONTENT);
        r.status = None;
        r
    }] {
        let (p, _) = apply(&pod(worker()), &r);
        let inst = init(&p, INSTALL_CONTAINER);
        let args = inst.args.as_ref().unwrap().join(" ");
        assert!(!args.contains("--wheelhouse"), "{args}");
        assert!(env(inst, "BIFROST_WHEELHOUSE_ACCESS_KEY").is_none());
    }
}
