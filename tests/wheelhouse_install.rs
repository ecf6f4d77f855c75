//! `install --wheelhouse`, as the injected init container runs it, against the real S3 test
//! server and a real index: a complete wheelhouse installs the lock with the index stopped; an
//! empty one, a tampered object or half the keys fall back to the index (or refuse the flags)
//! and say why, in the log and in `--json`.

mod common;

use std::time::Duration;

use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::shutdown::stop_pair;
use bifrost_requirements::wheelhouse::{Fetcher, Wheelhouse};
use common::lock_world::{MARKER, VERSION, World, report};
use common::s3::{BUCKET, raw, shared};
use common::wheels::Wheel;
use common::{assert_ok, cli, stderr};
use object_store::ObjectStoreExt;
use object_store::path::Path as Key;

const CONTENT: &str = "beta==2.0\n";

/// The world's lock of [`CONTENT`], copied into a fresh wheelhouse: (world, lock, prefix).
async fn filled() -> (World, String, String) {
    let w = World::new(&[
        Wheel::new("alpha", "1.0"),
        Wheel::new("beta", "2.0").requires("alpha"),
    ])
    .await;
    let lock = w.lock(CONTENT, VERSION).await;
    let prefix = format!("tests/{}/wheelhouse", uuid::Uuid::new_v4().simple());
    let house = Wheelhouse::new(&shared().config("unused"), &prefix).unwrap();
    let fetcher = Fetcher::new(&[w.index.url()], vec![], Duration::from_secs(20)).unwrap();
    let (_handle, stop) = stop_pair();
    house
        .fill(&lock, &content_hash(&lock), &fetcher, &stop)
        .await
        .expect("the fill");
    (w, lock, prefix)
}

/// `install --json` of the snapshot (content and `lock`) with the wheelhouse under `prefix`,
/// the index `index_url`, and `env`.
fn install(
    w: &World,
    lock: &str,
    prefix: &str,
    index_url: &str,
    env: &[(&str, &str)],
) -> std::process::Output {
    let payload = w.snapshot(CONTENT, Some(lock));
    let target = w.fresh("target-");
    let cache = w.fresh("cache-");
    let location = format!("s3://{BUCKET}/{prefix}");
    let endpoint = shared().endpoint();
    let args = [
        "install",
        "--json",
        "--target",
        target.to_str().unwrap(),
        "--fallback-file",
        payload.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "--index-url",
        index_url,
        "--wheelhouse",
        &location,
        "--wheelhouse-endpoint",
        &endpoint,
        "--wheelhouse-path-style",
    ];
    let out = cli(&args, env);
    if out.status.success() {
        assert!(
            target.join(MARKER).exists(),
            "a marker after a successful install"
        );
    }
    out
}

fn keys() -> [(&'static str, String); 2] {
    let s3 = shared();
    [
        (
            "BIFROST_WHEELHOUSE_ACCESS_KEY",
            s3.writer.access_key_id.clone(),
        ),
        (
            "BIFROST_WHEELHOUSE_SECRET_KEY",
            s3.writer.secret_access_key.clone(),
        ),
    ]
}

fn env<'a>(keys: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    keys.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_wheelhouse_installs_the_lock_with_the_index_down() {
    let (mut w, lock, prefix) = filled().await;
    let url = w.index.url();
    w.index.stop();
    let keys = keys();
    let out = install(&w, &lock, &prefix, &url, &env(&keys));
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["wheelhouse"]["used"], true, "{r}");
    assert_eq!(r["wheelhouse"]["files"], 2, "{r}");
    assert_eq!(r["lock"]["used"], true, "{r}");
    let log = stderr(&out);
    assert!(
        log.contains("installing the lock from the wheelhouse"),
        "{log}"
    );
    assert!(
        !log.contains(&keys[1].1),
        "the secret key stays out of the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_tampered_wheelhouse_falls_back_to_the_index_saying_why() {
    let (w, lock, prefix) = filled().await;
    let url = w.index.url();
    let keys = keys();

    // Another prefix: no manifest there.
    let out = install(&w, &lock, "tests/nothing-here", &url, &env(&keys));
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["wheelhouse"]["used"], false, "{r}");
    assert!(
        r["wheelhouse"]["reason"]
            .as_str()
            .unwrap()
            .contains("manifest"),
        "{r}"
    );
    assert_eq!(
        r["lock"]["used"], true,
        "the lock still installs, from the index: {r}"
    );

    // Other bytes under a stored file's name: refused, naming it, and the index serves.
    let (store, _) = raw(&shared().config("unused"));
    let sha = content_hash(&lock);
    let name = Wheel::new("alpha", "1.0").file_name();
    let key = Key::from(format!("{prefix}/{sha}/{name}"));
    store
        .put(&key, b"not a wheel".to_vec().into())
        .await
        .unwrap();
    let out = install(&w, &lock, &prefix, &url, &env(&keys));
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["wheelhouse"]["used"], false, "{r}");
    let reason = r["wheelhouse"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&name),
        "the reason names the file: {reason}"
    );
    assert!(
        stderr(&out).contains("installing the lock from the index"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_wheelhouse_flags_are_refused_naming_them() {
    let w = World::new(&[Wheel::new("alpha", "1.0")]).await;
    let lock = w.lock("alpha==1.0\n", VERSION).await;
    let url = w.index.url();
    let keys = keys();
    let half = [(keys[0].0, keys[0].1.as_str())];
    let out = install(&w, &lock, "tests/p", &url, &half);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BIFROST_WHEELHOUSE_SECRET_KEY"),
        "{}",
        stderr(&out)
    );
    for (flag, value, words) in [
        ("--wheelhouse", "http://x/p", "must be s3://"),
        ("--wheelhouse", "s3://bucket/../p", "\"..\""),
        (
            "--wheelhouse-endpoint",
            "file:///etc",
            "--wheelhouse-endpoint",
        ),
    ] {
        let payload = w.snapshot("alpha==1.0\n", Some(&lock));
        let target = w.fresh("target-");
        let mut args = vec!["install", "--target", target.to_str().unwrap()];
        args.extend([
            "--fallback-file",
            payload.to_str().unwrap(),
            "--index-url",
            &url,
        ]);
        if flag != "--wheelhouse" {
            args.extend(["--wheelhouse", "s3://bucket/p"]);
        }
        args.extend([flag, value]);
        let out = cli(&args, &[]);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag}={value}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(words),
            "{flag}={value}: {}",
            stderr(&out)
        );
        assert!(!target.join(MARKER).exists(), "nothing installed");
    }
}
