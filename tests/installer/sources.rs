//! Sources: Redis, the fallback file, and `--expected-hash` choosing between them.

use super::*;

#[test]
fn redis_down_uses_the_fallback_file_plain_or_json() {
    let w = World::new();
    let dead = services::dead_url("redis");

    // Plain requirements.txt, as a ConfigMap key, with its sibling `hash` key.
    let cm = w.file("configmap");
    std::fs::create_dir(&cm).unwrap();
    let content = format!("{GAMMA}==1.0\n");
    std::fs::write(cm.join("requirements.txt"), &content).unwrap();
    std::fs::write(cm.join("hash"), content_hash(&content)).unwrap();
    let fallback = cm.join("requirements.txt");
    let out = w.install_via(
        Some(&dead),
        &["--fallback-file", fallback.to_str().unwrap(), "--json"],
        &[],
    );
    assert_ok_says(&out, &["Redis unusable", "using the fallback file"]);
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    assert_eq!(w.marker()["source"], "fallback-file");
    assert_eq!(json(&out)["source"], "fallback-file");

    // Bifrost's JSON payload as the snapshot.
    let snapshot = w.file("payload.json");
    std::fs::write(&snapshot, Payload::new(format!("{GAMMA}==2.0\n")).to_json()).unwrap();
    let out = w.install_via(
        Some(&dead),
        &["--fallback-file", snapshot.to_str().unwrap()],
        &[],
    );
    assert_ok(&out);
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");

    // Without any Redis URL at all, the fallback file is the source.
    std::fs::write(&snapshot, Payload::new(format!("{GAMMA}==1.0\n")).to_json()).unwrap();
    let out = w.install_via(None, &["--fallback-file", snapshot.to_str().unwrap()], &[]);
    assert_ok(&out);
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
}

#[test]
fn missing_redis_key_falls_back_to_the_file_and_without_one_installs_nothing() {
    let w = World::new();
    let out = w.install(&["--json"]);
    assert_ok_says(&out, &["nothing to install", "does not exist"]);
    assert_eq!(json(&out)["status"], "absent");
    assert!(w.marker_bytes().is_none(), "no marker for nothing");

    let fallback = w.fallback_file(&format!("{GAMMA}==2.0\n"));
    assert_ok(&w.install(&["--fallback-file", &fallback]));
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
}

#[test]
fn redis_down_without_fallback_continue_warns_and_fail_exits_4() {
    let w = World::new();
    let before = w.good_install();
    let dead = services::dead_url("redis");
    let missing = w.file("not-mounted/requirements.txt");

    let out = w.install_via(
        Some(&dead),
        &[
            "--on-failure",
            "continue",
            "--fallback-file",
            missing.to_str().unwrap(),
            "--json",
        ],
        &[],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_says(
        &out,
        &[
            "warning: install failed; continuing",
            "cannot connect to Redis",
            "still holds the previous install",
        ],
    );
    let r = json(&out);
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["error"]["reason"], "RedisUnreachable");
    w.assert_untouched(&before);

    let out = w.install_via(Some(&dead), &[], &[]);
    assert_exit(&out, 4, &["error: cannot connect to Redis"]);
    w.assert_untouched(&before);
}

#[test]
fn expected_hash_prefers_the_source_that_holds_it() {
    let w = World::new();
    let old = format!("{GAMMA}==1.0\n");
    let new = format!("{GAMMA}==2.0\n");
    let old_hash = content_hash(&old);
    let new_hash = w.put(&new);
    let fallback = w.file("requirements.txt");
    std::fs::write(&fallback, &old).unwrap();
    let fb = fallback.to_str().unwrap();

    // The pod was admitted for the old hash; Redis already has the new one: install the old.
    let upper = format!("sha256:{}", old_hash.to_uppercase());
    let out = w.install(&["--fallback-file", fb, "--expected-hash", &upper, "--json"]);
    assert_ok_says(
        &out,
        &[&format!(
            "Redis holds sha256 {new_hash}, not the expected {old_hash}"
        )],
    );
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    let r = json(&out);
    assert_eq!(r["source"], "fallback-file");
    assert_eq!(r["expected_hash"], old_hash.as_str());

    // Expected matches Redis: Redis, no warning.
    let out = w.install(&["--fallback-file", fb, "--expected-hash", &new_hash]);
    assert_ok(&out);
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    assert_eq!(w.marker()["source"], "redis");

    // Neither source holds it: install the newest (Redis) and say so.
    let other = content_hash("something else entirely\n");
    std::fs::write(&fallback, format!("{ALPHA}\n")).unwrap();
    let out = w.install(&["--fallback-file", fb, "--expected-hash", &other]);
    assert_ok_says(
        &out,
        &[
            &format!("no source holds the expected sha256 {other}"),
            "installing the newest, from the Redis key",
        ],
    );
    assert_eq!(w.marker()["hash"], new_hash.as_str());

    // Redis down and the file does not hold it either: the file is all there is.
    let out = w.install_via(
        Some(&services::dead_url("redis")),
        &["--fallback-file", fb, "--expected-hash", &other],
        &[],
    );
    assert_ok_says(&out, &["installing the newest, from the fallback file"]);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
}
