use super::*;
use crate::lock::Interpreter;

fn lock_of(payload: &Payload, body_bytes: usize) -> Lock {
    let pin = "pkg==1.0 \\\n    --hash=sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    Lock {
        content_hash: payload.hash.clone(),
        interpreter: Interpreter {
            version: "3.11".into(),
            platform: "x86_64-manylinux_2_28".into(),
        },
        index_urls: vec!["https://pypi.org/simple".into()],
        only_binary: true,
        body: pin.repeat(body_bytes / pin.len() + 1),
    }
}

#[test]
fn a_content_and_its_lock_within_the_budget_fit() {
    let payload = Payload::new("requests==2.32.3\n");
    let lock = lock_of(&payload, 16 * 1024);
    let data = snapshot_data(&payload, Some(&lock));
    assert_eq!(data.len(), 4);
    assert_eq!(data[LOCK_FILE], lock.render());
    assert_eq!(fits(&data), Ok(()));
    assert_eq!(fits(&snapshot_data(&payload, None)), Ok(()));
}

#[test]
fn a_lock_that_tips_the_snapshot_over_says_both_sizes_the_limit_and_what_to_do() {
    let payload = Payload::new("a==1\n".repeat(40_000));
    let lock = lock_of(&payload, 900 * 1024);
    let data = snapshot_data(&payload, Some(&lock));
    let err = fits(&data).unwrap_err();
    let lock_len = lock.render().len();
    let content_len = payload.content.len() + payload.hash.len() + payload.to_json().len();
    let keys = "requirements.txt".len() + "hash".len() + "payload.json".len();
    assert!(
        err.contains(&format!("{LOCK_FILE} {lock_len} bytes")),
        "{err}"
    );
    assert!(
        err.contains(&format!("payload {} bytes", content_len + keys)),
        "{err}"
    );
    assert!(err.contains(&SNAPSHOT_BUDGET.to_string()), "{err}");
    assert!(err.contains("spec.install.resolve: Pod"), "{err}");
    // Without its lock the same content fits.
    assert_eq!(fits(&snapshot_data(&payload, None)), Ok(()));
}

#[test]
fn the_budget_is_exact_at_its_edge() {
    let payload = Payload::new("");
    let mut data = snapshot_data(&payload, None);
    let used: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum();
    data.insert(
        LOCK_FILE,
        "x".repeat(SNAPSHOT_BUDGET - used - LOCK_FILE.len()),
    );
    assert_eq!(fits(&data), Ok(()));
    data.insert(
        LOCK_FILE,
        "x".repeat(SNAPSHOT_BUDGET - used - LOCK_FILE.len() + 1),
    );
    assert!(fits(&data).is_err());
}

#[test]
fn too_large_is_snapshotted_false_ready_false_and_a_warning_once_per_content() {
    let payload = Payload::new("requests\n");
    let halt = too_large(&payload, "the sizes".into());
    assert_eq!(
        (halt.at, halt.reason, halt.action),
        (ConditionType::Snapshotted, "TooLarge", "Snapshot")
    );
    assert_eq!(halt.once_per.as_deref(), Some(payload.hash.as_str()));
    let mut conditions = super::super::status::Conditions::new(vec![], Some(1));
    conditions.halted(&halt);
    let list = conditions.into_vec();
    let find = |t: &str| list.iter().find(|c| c.type_ == t).unwrap();
    let snapshotted = find("Snapshotted");
    assert_eq!(
        (snapshotted.status.as_str(), snapshotted.reason.as_str()),
        ("False", "TooLarge")
    );
    assert_eq!(snapshotted.message, "the sizes");
    assert_eq!(find("RolledOut").status, "False");
    assert_eq!(find("Ready").message, "Snapshotted: the sizes");
}
