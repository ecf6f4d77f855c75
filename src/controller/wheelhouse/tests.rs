use super::*;
use crate::crd::{
    S3CredentialsRef, S3Source, Source, WheelhouseS3, WheelhouseSpec, WorkspaceRequirementsSpec,
};

fn spec(wheelhouse: Option<WheelhouseS3>, source: Option<S3Source>) -> WorkspaceRequirementsSpec {
    let mut spec = WorkspaceRequirementsSpec::default();
    spec.install.wheelhouse = wheelhouse.map(|s3| WheelhouseSpec { s3: Some(s3) });
    spec.source = source.map(|s3| Source {
        database: None,
        s3: Some(s3),
    });
    spec
}

fn bifrost_source() -> S3Source {
    S3Source {
        bucket: "bifrost-local".into(),
        key: "_repo/requirements.txt".into(),
        endpoint: Some("http://seaweedfs:8333".into()),
        region: "eu-west-1".into(),
        force_path_style: None,
        credentials_secret_ref: Some(S3CredentialsRef {
            name: "bifrost-secrets".into(),
            access_key_id_key: "BIFROST_S3_ACCESS_KEY".into(),
            secret_access_key_key: "BIFROST_S3_SECRET_KEY".into(),
        }),
        poll_interval_seconds: 10,
    }
}

#[test]
fn an_empty_wheelhouse_takes_everything_from_the_s3_source() {
    let t = wheelhouse_target(&spec(Some(WheelhouseS3::default()), Some(bifrost_source())))
        .unwrap()
        .unwrap();
    assert_eq!(t.bucket, "bifrost-local");
    assert_eq!(t.prefix, crate::crd::DEFAULT_WHEELHOUSE_PREFIX);
    assert_eq!(t.endpoint.as_deref(), Some("http://seaweedfs:8333"));
    assert_eq!(t.region, "eu-west-1");
    assert!(
        t.path_style,
        "an endpoint means path style unless told otherwise"
    );
    assert_eq!(t.credentials.unwrap().name, "bifrost-secrets");
    assert_eq!(
        wheelhouse_target(&spec(None, Some(bifrost_source()))),
        Ok(None)
    );
}

#[test]
fn its_own_fields_win_and_a_bucket_is_needed_without_a_source() {
    let own = WheelhouseS3 {
        bucket: Some("wheels".into()),
        prefix: Some("/team-a/wheels/".into()),
        region: Some("us-west-2".into()),
        force_path_style: Some(false),
        ..WheelhouseS3::default()
    };
    let t = wheelhouse_target(&spec(Some(own.clone()), Some(bifrost_source())))
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.bucket.as_str(), t.prefix.as_str(), t.region.as_str()),
        ("wheels", "team-a/wheels", "us-west-2")
    );
    assert!(!t.path_style);
    assert_eq!(t.location(), "s3://wheels/team-a/wheels/");
    let alone = wheelhouse_target(&spec(Some(own), None)).unwrap().unwrap();
    assert_eq!((alone.endpoint, alone.credentials), (None, None));
    let e = wheelhouse_target(&spec(Some(WheelhouseS3::default()), None)).unwrap_err();
    assert!(e.contains("spec.install.wheelhouse.s3.bucket"), "{e}");
}

#[test]
fn the_verdict_follows_the_lock_and_the_copy() {
    let t = wheelhouse_target(&spec(Some(WheelhouseS3::default()), Some(bifrost_source())))
        .unwrap()
        .unwrap();
    let lock = Some("ab".repeat(32));
    let lock = lock.as_deref();
    assert_eq!(verdict(Ok(None), lock, None), Verdict::NotAsked);
    assert!(
        matches!(verdict(Ok(Some(&t)), None, None), Verdict::NoLock(m) if m.contains("Resolved"))
    );
    assert!(matches!(verdict(Err("bad"), lock, None), Verdict::NoLock(m) if m == "bad"));
    assert_eq!(verdict(Ok(Some(&t)), lock, None), Verdict::Start);
    assert_eq!(
        verdict(Ok(Some(&t)), lock, Some(&Fill::Running)),
        Verdict::Filling
    );
    let done = Fill::Complete {
        files: 3,
        bytes: 10,
    };
    assert_eq!(
        verdict(Ok(Some(&t)), lock, Some(&done)),
        Verdict::Complete {
            files: 3,
            bytes: 10
        }
    );
    let recent = Fill::Failed {
        message: "S3 down".into(),
        at: Instant::now(),
    };
    assert_eq!(
        verdict(Ok(Some(&t)), lock, Some(&recent)),
        Verdict::Failed("S3 down".into())
    );
    if let Some(at) = Instant::now().checked_sub(FAILED_RETRY) {
        let old = Fill::Failed {
            message: "S3 down".into(),
            at,
        };
        assert_eq!(verdict(Ok(Some(&t)), lock, Some(&old)), Verdict::Start);
    }
}

#[test]
fn a_pods_admitted_lock_is_read_from_its_install_container() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "spec": {
            "initContainers": [
                {"name": "bootstrap", "args": ["bootstrap", "--to=/b"]},
                {"name": "install", "args": ["install", "--expected-hash=x", "--lock-sha256=abc"]}
            ],
            "containers": [{"name": "worker"}]
        }
    }))
    .unwrap();
    assert_eq!(admitted_lock(&pod).as_deref(), Some("abc"));
    let bare: Pod =
        serde_json::from_value(serde_json::json!({"spec": {"containers": []}})).unwrap();
    assert_eq!(admitted_lock(&bare), None);
}

#[test]
fn a_started_copy_keeps_a_completed_status_and_reports_a_failed_start() {
    let sha = "ab".repeat(32);
    let done = WheelhouseStatus {
        location: "s3://b/p/x/".into(),
        lock_sha256: sha.clone(),
        complete: true,
        files: Some(41),
        bytes: Some(259_000_000),
    };
    assert_eq!(
        just_started(Some(Fill::Running), Some(&done), &sha),
        Verdict::Complete {
            files: 41,
            bytes: 259_000_000
        },
        "a new leader re-checking does not flap the status"
    );
    assert_eq!(
        just_started(Some(Fill::Running), Some(&done), &"cd".repeat(32)),
        Verdict::Filling,
        "another lock's completion says nothing of this one"
    );
    let incomplete = WheelhouseStatus {
        complete: false,
        ..done.clone()
    };
    assert_eq!(
        just_started(Some(Fill::Running), Some(&incomplete), &sha),
        Verdict::Filling
    );
    let failed = Fill::Failed {
        message: "Secret bifrost/s3 not found".into(),
        at: Instant::now(),
    };
    assert_eq!(
        just_started(Some(failed), Some(&done), &sha),
        Verdict::Failed("Secret bifrost/s3 not found".into())
    );
}
