use super::*;
use crate::crd::{LockStatus, WorkspaceRequirementsStatus};
use crate::requirements::content_hash;
use crate::webhook::fixtures::{CONTENT, resource};

/// The install container's arguments for a pod admitted for `hash`, the resource's status
/// recording `lock`.
fn args(lock: Option<LockStatus>, hash: &str) -> Vec<String> {
    let mut r = resource("bifrost", "default");
    r.status = Some(WorkspaceRequirementsStatus {
        lock,
        ..WorkspaceRequirementsStatus::default()
    });
    let target = InstallTarget {
        mount_path: "/opt/bifrost/site-packages",
        hash,
        cache: false,
    };
    install_args(&r, &target)
}

fn lock(content_hash: &str, sha256: &str) -> LockStatus {
    LockStatus {
        content_hash: content_hash.into(),
        packages: 1,
        resolved_at: "2026-12-07T13:00:00Z".into(),
        sha256: sha256.into(),
    }
}

#[test]
fn the_recorded_lock_of_the_admitted_content_is_passed_after_its_hash() {
    let hash = content_hash(CONTENT);
    let digest = "ab".repeat(32);
    let got = args(Some(lock(&hash, &digest)), &hash);
    let at = got
        .iter()
        .position(|a| a == &format!("--expected-hash={hash}"))
        .expect("--expected-hash");
    assert_eq!(got[at + 1], format!("--lock-sha256={digest}"), "{got:?}");
    // The status may spell the content hash with its prefix.
    let prefixed = args(Some(lock(&format!("sha256:{hash}"), &digest)), &hash);
    assert!(prefixed.contains(&format!("--lock-sha256={digest}")));
}

#[test]
fn no_lock_digest_without_a_recorded_lock_of_that_content() {
    let hash = content_hash(CONTENT);
    let digest = "ab".repeat(32);
    for (status, why) in [
        (None, "no lock recorded (pods resolve)"),
        (
            Some(lock(&"cd".repeat(32), &digest)),
            "the lock of another content",
        ),
        (
            Some(lock(&hash, "")),
            "a status written before digests were recorded",
        ),
    ] {
        let got = args(status, &hash);
        assert!(
            !got.iter().any(|a| a.starts_with("--lock-sha256")),
            "{why}: {got:?}"
        );
        assert!(got.contains(&format!("--expected-hash={hash}")));
    }
}
