//! `s3::S3Store` against a real S3-speaking server (moto, credentials enforced; see
//! tests/common/s3.rs): byte-exact reads, conditional polling, conditional writes that lose
//! nothing under concurrency, and errors classified as the mirror reports them, never holding the
//! secret key. Generated contents go through `read` too.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bifrost_requirements::Error;
use bifrost_requirements::s3::{
    Current, MAX_MEND_BYTES, MAX_OBJECT_BYTES, Poll, S3Config, S3Store, UpdateOutcome, Versioned,
};
use common::props::runner;
use common::s3::{BUCKET, bifrost_put, delete, fresh_key, raw, shared, stored};
use object_store::ObjectStoreExt;
use proptest::prelude::*;

fn store(config: S3Config) -> S3Store {
    S3Store::new(config).expect("valid test config")
}

/// A config for a fresh key on the shared server.
fn fresh() -> S3Config {
    shared().config(&fresh_key())
}

#[track_caller]
fn assert_reason(e: &Error, reason: &str) {
    assert_eq!(e.reason(), reason, "{e}");
}

#[tokio::test]
async fn reads_are_byte_exact_with_the_etag_of_the_write() {
    for content in [
        "flask==3.0.3\r\nrequests\r\n",
        "flask==3.0.3\nrequests",
        "",
        "# ü ☃ 😀\n\n\tpandas>=2 ; python_version >= \"3.9\"\n",
        "\u{feff}bom-first==1\n",
    ] {
        let config = fresh();
        let etag = bifrost_put(&config, content.as_bytes()).await;
        let got = store(config).read().await.unwrap();
        assert_eq!(got.content, content);
        assert_eq!(got.etag, etag);
    }
}

#[tokio::test]
async fn polling_costs_one_304_when_unchanged_and_follows_changes_and_deletes() {
    let config = fresh();
    let s3 = store(config.clone());
    assert_eq!(s3.read_if_changed(None).await.unwrap(), Poll::NotFound);
    let e = s3.read().await.unwrap_err();
    assert_reason(&e, "NotFound");
    assert!(e.to_string().contains(&config.location()), "{e}");

    let first = bifrost_put(&config, b"a==1\n").await;
    let Poll::Changed(v) = s3.read_if_changed(None).await.unwrap() else {
        panic!("first read must see the object")
    };
    assert_eq!(
        (v.content.as_str(), v.etag.as_str()),
        ("a==1\n", first.as_str())
    );

    let before = shared().requests_for(&config.key).len();
    assert_eq!(
        s3.read_if_changed(Some(&first)).await.unwrap(),
        Poll::NotModified
    );
    let requests = shared().requests_for(&config.key);
    assert_eq!(
        requests[before..],
        [("GET".to_string(), 304)],
        "an unchanged object costs exactly one conditional GET answered 304"
    );

    let second = bifrost_put(&config, b"a==1\nb==2\n").await;
    assert_ne!(first, second);
    assert_eq!(
        s3.read_if_changed(Some(&first)).await.unwrap(),
        Poll::Changed(bifrost_requirements::s3::Versioned {
            content: "a==1\nb==2\n".into(),
            etag: second.clone()
        })
    );
    assert_eq!(
        s3.read_if_changed(Some(&second)).await.unwrap(),
        Poll::NotModified
    );

    delete(&config).await;
    assert_eq!(
        s3.read_if_changed(Some(&second)).await.unwrap(),
        Poll::NotFound
    );
}

#[tokio::test]
async fn a_server_that_is_down_is_s3_unreachable_quickly() {
    let mut config = fresh();
    let dead = format!("http://127.0.0.1:{}", common::proc::free_port());
    config = S3Config {
        timeout: Duration::from_secs(3),
        ..config.with_endpoint(&dead)
    };
    let s3 = store(config.clone());
    let started = Instant::now();
    let e = s3.read_if_changed(None).await.unwrap_err();
    assert_reason(&e, "S3Unreachable");
    assert_eq!(e.exit_code(), 3);
    let text = e.to_string();
    assert!(text.contains(&dead) && text.contains(BUCKET), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let e = s3
        .update(|c| Ok(Some(format!("{c}x\n"))))
        .await
        .unwrap_err();
    assert_reason(&e, "S3Unreachable");
}

#[tokio::test]
async fn wrong_credentials_are_access_denied_and_no_error_holds_a_secret() {
    let server = shared();
    let good = fresh();
    bifrost_put(&good, b"a==1\n").await;
    let wrong_secret = "Wr0ngSecretWr0ngSecretWr0ngSecret/+=".to_string();

    let cases = [
        (
            "wrong secret",
            good.clone()
                .with_credentials(&server.writer.access_key_id, &wrong_secret),
            "SignatureDoesNotMatch",
        ),
        (
            "unknown key id",
            good.clone()
                .with_credentials("AKIAUNKNOWNUNKNOWN00", &server.writer.secret_access_key),
            "InvalidAccessKeyId",
        ),
        (
            "no permission",
            good.clone().with_credentials(
                &server.nobody.access_key_id,
                &server.nobody.secret_access_key,
            ),
            "AccessDenied",
        ),
    ];
    for (what, config, code) in cases {
        let s3 = store(config);
        let errors = [
            s3.read().await.unwrap_err(),
            s3.read_if_changed(Some("\"etag\"")).await.unwrap_err(),
            s3.update(|c| Ok(Some(format!("{c}b==2\n"))))
                .await
                .unwrap_err(),
        ];
        for e in errors {
            assert_reason(&e, "AccessDenied");
            let shown = format!("{e} {e:?}");
            assert!(shown.contains(code), "{what}: {shown}");
            for secret in [
                wrong_secret.as_str(),
                server.writer.secret_access_key.as_str(),
                server.nobody.secret_access_key.as_str(),
            ] {
                assert!(!shown.contains(secret), "{what}: secret in {shown}");
            }
        }
        let debug = format!("{s3:?}");
        assert!(!debug.contains(&wrong_secret), "{debug}");
        assert!(!debug.contains(&server.writer.secret_access_key), "{debug}");
    }
    // Nothing was written by the refused updates.
    assert_eq!(store(good).read().await.unwrap().content, "a==1\n");
}

#[tokio::test]
async fn content_that_is_not_utf8_or_too_large_is_invalid_content() {
    let config = fresh();
    let s3 = store(config.clone());

    bifrost_put(&config, b"flask==3\nreq\xc3\x28uests\n").await;
    for e in [
        s3.read().await.unwrap_err(),
        s3.read_if_changed(Some("\"other\"")).await.unwrap_err(),
    ] {
        assert_reason(&e, "InvalidContent");
        let text = e.to_string();
        assert!(
            text.contains("offset 12") && text.contains("line 2"),
            "{text}"
        );
        assert!(text.contains(&config.location()), "{text}");
    }
    // A write is refused too: replacing bytes it cannot read would lose them.
    let e = s3
        .update(|c| Ok(Some(format!("{c}x\n"))))
        .await
        .unwrap_err();
    assert_reason(&e, "InvalidContent");

    let limit = MAX_OBJECT_BYTES as usize;
    let line = "# padding padding padding padding padding padding padding padding\n";
    let mut at_limit = line.repeat(limit / line.len());
    at_limit.push_str(&"#".repeat(limit - at_limit.len()));
    assert_eq!(at_limit.len(), limit);
    bifrost_put(&config, at_limit.as_bytes()).await;
    assert_eq!(s3.read().await.unwrap().content.len(), limit);

    let over = format!("{at_limit}#");
    bifrost_put(&config, over.as_bytes()).await;
    let e = s3.read().await.unwrap_err();
    assert_reason(&e, "InvalidContent");
    let text = e.to_string();
    assert!(
        text.contains(&format!("{}", limit + 1)) && text.contains(&limit.to_string()),
        "size and limit: {text}"
    );

    // Growing an object past the limit writes nothing.
    let small = fresh();
    bifrost_put(&small, b"a==1\n").await;
    let e = store(small.clone())
        .update(|_| Ok(Some(over.clone())))
        .await
        .unwrap_err();
    assert_reason(&e, "InvalidContent");
    assert_eq!(store(small).read().await.unwrap().content, "a==1\n");
}

/// What cannot be read reaches a change that may mend it as its bytes (`requirements remove`
/// takes lines out of them, `requirements set` replaces them), and is written on the condition
/// of the ETag seen: a broken object changed meanwhile is not overwritten blindly. A change that
/// reads the text refuses it, and one that declines to write leaves it, with its read error.
#[tokio::test]
async fn a_broken_object_reaches_the_change_as_bytes_and_is_written_on_its_etag() {
    let over = "#".repeat(MAX_OBJECT_BYTES as usize + 1);
    for broken in [b"ok\nbad\xff\n".to_vec(), over.into_bytes()] {
        let config = fresh();
        let s3 = store(config.clone());
        bifrost_put(&config, &broken).await;
        let e = s3
            .update(|c| Ok(Some(format!("{c}x\n"))))
            .await
            .unwrap_err();
        assert_reason(&e, "InvalidContent");
        let e = s3.update_or_mend(|_| Ok(None)).await.unwrap_err();
        assert_reason(&e, "InvalidContent");
        assert_eq!(
            stored(&config).await.unwrap().0,
            broken,
            "refusals write nothing"
        );

        let mut seen = Vec::new();
        let saved = s3
            .update_or_mend(|c| {
                let Current::Unreadable(object) = c else {
                    panic!("an unreadable object must reach the change as such")
                };
                assert_eq!(object.location, config.location());
                assert_eq!(object.size, object.bytes.as_ref().unwrap().len() as u64);
                assert_eq!(object.error().reason(), "InvalidContent");
                seen.push(object.bytes.clone().unwrap());
                // Another writer lands between the read and the PUT, once.
                if seen.len() == 1 {
                    let config = config.clone();
                    std::thread::spawn(move || {
                        tokio::runtime::Runtime::new()
                            .unwrap()
                            .block_on(bifrost_put(&config, b"bad\xfe again\n"))
                    })
                    .join()
                    .unwrap();
                }
                Ok(Some("flask==3.0.3\n".into()))
            })
            .await
            .unwrap();
        assert_eq!(saved.outcome, UpdateOutcome::Updated);
        assert_eq!(saved.retries, 1, "the PUT on the first ETag must have lost");
        assert_eq!(seen, [broken.clone(), b"bad\xfe again\n".to_vec()]);
        assert_eq!(s3.read().await.unwrap().content, "flask==3.0.3\n");
        // An empty file is a replacement too, not "unchanged".
        bifrost_put(&config, &broken).await;
        let saved = s3
            .update_or_mend(|_| Ok(Some(String::new())))
            .await
            .unwrap();
        assert_eq!(saved.outcome, UpdateOutcome::Updated);
        assert_eq!(s3.read().await.unwrap().content, "");
    }
}

/// An object over the cap of what a mend reads is not downloaded: the change gets its size and
/// no bytes, and may still replace it.
#[tokio::test]
async fn an_object_over_the_mend_cap_reaches_the_change_without_its_bytes() {
    let config = fresh();
    let s3 = store(config.clone());
    let huge = vec![b'#'; MAX_MEND_BYTES as usize + 1];
    bifrost_put(&config, &huge).await;
    let mut sizes = Vec::new();
    let e = s3
        .update_or_mend(|c| {
            let Current::Unreadable(object) = c else {
                panic!("an unreadable object must reach the change as such")
            };
            sizes.push((object.size, object.bytes.is_some()));
            Ok(None)
        })
        .await
        .unwrap_err();
    assert_reason(&e, "InvalidContent");
    assert_eq!(sizes, [(MAX_MEND_BYTES + 1, false)]);
    assert!(
        e.to_string().contains(&format!("{}", MAX_MEND_BYTES + 1)),
        "{e}"
    );
    let saved = s3
        .update_or_mend(|_| Ok(Some("numpy\n".into())))
        .await
        .unwrap();
    assert_eq!(saved.outcome, UpdateOutcome::Updated);
    assert_eq!(stored(&config).await.unwrap().0, b"numpy\n");
}

#[tokio::test]
async fn update_creates_when_absent_and_writes_plain_bytes() {
    let config = fresh();
    let s3 = store(config.clone());
    let saved = s3
        .update(|c| {
            assert_eq!(c, "");
            Ok(Some("flask==3.0.3\r\n".into()))
        })
        .await
        .unwrap();
    assert_eq!(saved.outcome, UpdateOutcome::Created);
    assert_eq!(saved.retries, 0);
    let read = s3.read().await.unwrap();
    assert_eq!(read.content, "flask==3.0.3\r\n");
    assert_eq!(Some(read.etag), saved.etag);

    // As Bifrost writes it: no user metadata, no content type of ours.
    let (raw, path) = raw(&config);
    let got = raw.get(&path).await.unwrap();
    for (attribute, value) in got.attributes.iter() {
        assert!(
            !matches!(attribute, object_store::Attribute::Metadata(_)),
            "metadata {attribute:?}={value:?}"
        );
        if matches!(attribute, object_store::Attribute::ContentType) {
            assert_eq!(value.as_ref(), "binary/octet-stream", "S3's default only");
        }
    }

    // No change, no write.
    let puts_before = count(&config.key, "PUT");
    let same = s3.update(|c| Ok(Some(c.to_string()))).await.unwrap();
    assert_eq!(same.outcome, UpdateOutcome::Unchanged);
    let none = s3.update(|_| Ok(None)).await.unwrap();
    assert_eq!(none.outcome, UpdateOutcome::Unchanged);
    assert_eq!(none.content, "flask==3.0.3\r\n");
    assert_eq!(count(&config.key, "PUT"), puts_before);

    // An error from `modify` is returned as it is, and nothing is written.
    let e = s3
        .update(|_| Err(Error::Config("refused by policy".into())))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("refused by policy"), "{e}");
    assert_eq!(count(&config.key, "PUT"), puts_before);
}

fn count(key: &str, method: &str) -> usize {
    shared()
        .requests_for(key)
        .iter()
        .filter(|(m, _)| m == method)
        .count()
}

/// Between our read and our conditional write another writer changes the object: our write must
/// be refused (412), and the retry must re-apply our change on top of theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_loses_the_race_reads_again_and_keeps_both_changes() {
    for existing in [false, true] {
        let config = fresh();
        if existing {
            bifrost_put(&config, b"base==1\n").await;
        }
        let s3 = store(config.clone());
        let mut calls = 0;
        let handle = tokio::runtime::Handle::current();
        let saved = s3
            .update(|current| {
                calls += 1;
                if calls == 1 {
                    // Bifrost saves while we hold our read (If-None-Match: * / If-Match must
                    // refuse our write now).
                    let mut theirs = current.to_string();
                    theirs.push_str("theirs==1\n");
                    tokio::task::block_in_place(|| {
                        handle.block_on(bifrost_put(&config, theirs.as_bytes()))
                    });
                }
                Ok(Some(format!("{current}ours==1\n")))
            })
            .await
            .unwrap();
        let expected = if existing {
            "base==1\ntheirs==1\nours==1\n"
        } else {
            "theirs==1\nours==1\n"
        };
        assert_eq!(saved.retries, 1, "existing={existing}");
        assert_eq!(calls, 2);
        assert_eq!(saved.outcome, UpdateOutcome::Updated);
        assert_eq!(saved.content, expected);
        assert_eq!(s3.read().await.unwrap().content, expected);
        let refused = shared()
            .requests_for(&config.key)
            .iter()
            .filter(|r| *r == &("PUT".to_string(), 412))
            .count();
        assert_eq!(refused, 1, "existing={existing}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_updates_keep_all_twenty_lines() {
    let config = fresh();
    bifrost_put(&config, b"# requirements\r\n").await;
    let s3 = Arc::new(store(config.clone()));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s3 = s3.clone();
            tokio::spawn(async move {
                s3.update(move |c| Ok(Some(format!("{c}package-{i:02}==1.0\r\n"))))
                    .await
            })
        })
        .collect();
    let mut retries = 0;
    for t in tasks {
        let saved = t.await.unwrap().unwrap();
        assert_eq!(saved.outcome, UpdateOutcome::Updated);
        retries += saved.retries;
    }
    let content = s3.read().await.unwrap().content;
    assert!(content.starts_with("# requirements\r\n"), "{content}");
    for i in 0..20 {
        let line = format!("package-{i:02}==1.0\r\n");
        assert_eq!(content.matches(&line).count(), 1, "{line:?} in {content:?}");
    }
    assert_eq!(content.lines().count(), 21);
    eprintln!("20 concurrent updates: {retries} lost races retried");
    assert!(
        retries > 0,
        "the writers did not contend; the test proves nothing"
    );
}

#[tokio::test]
async fn hostile_names_are_refused_before_any_request_and_odd_valid_keys_stay_apart() {
    let server = shared();
    for (bucket, key) in [
        ("../etc", "k"),
        ("bucket?x=1", "k"),
        ("UPPER", "k"),
        (BUCKET, "../requirements.txt"),
        (BUCKET, "/_repo/requirements.txt"),
        (BUCKET, "_repo//requirements.txt"),
        (BUCKET, "_repo/req\nuirements.txt"),
        (BUCKET, ""),
    ] {
        let mut config = server.config(key);
        config.bucket = bucket.to_string();
        let e = S3Store::new(config).unwrap_err();
        assert_reason(&e, "InvalidConfiguration");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{bucket:?}")) || text.contains(&format!("{key:?}")),
            "names the bad value: {text}"
        );
    }

    // Valid keys with characters that mean something in a URL reach their own object.
    let base = format!("tests/{}", uuid::Uuid::new_v4().simple());
    let keys = [
        format!("{base}/x"),
        format!("{base}/x?y=1"),
        format!("{base}/x#frag"),
        format!("{base}/x%3Fy"),
        format!("{base}/a b/ü.txt"),
    ];
    for (i, key) in keys.iter().enumerate() {
        store(server.config(key))
            .update(|_| Ok(Some(format!("{i}\n"))))
            .await
            .unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            store(server.config(key)).read().await.unwrap().content,
            format!("{i}\n"),
            "{key:?}"
        );
    }

    let mut missing_bucket = server.config(&fresh_key());
    missing_bucket.bucket = "no-such-bucket-here".into();
    let e = store(missing_bucket).read().await.unwrap_err();
    assert_reason(&e, "NotFound");
    assert!(e.to_string().contains("no-such-bucket-here"), "{e}");
}

#[tokio::test]
async fn bifrost_environment_names_reach_the_server() {
    let server = shared();
    let config = fresh();
    bifrost_put(&config, b"from-env==1\n").await;
    let endpoint = server.endpoint();
    let env = [
        ("BIFROST_S3_ENDPOINT_URL", endpoint.as_str()),
        ("BIFROST_S3_BUCKET", BUCKET),
        (
            "BIFROST_S3_ACCESS_KEY",
            server.writer.access_key_id.as_str(),
        ),
        (
            "BIFROST_S3_SECRET_KEY",
            server.writer.secret_access_key.as_str(),
        ),
        ("BIFROST_S3_REGION", "us-east-1"),
    ];
    let mut from_env = S3Config::from_bifrost_env(|name| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    assert_eq!(from_env.key, "_repo/requirements.txt");
    from_env.key = config.key.clone();
    assert_eq!(from_env, config);
    assert_eq!(
        store(from_env).read().await.unwrap().content,
        "from-env==1\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Generated inputs
// ---------------------------------------------------------------------------------------------

/// Requirements-like text: line endings of every kind, blank lines, unicode, control characters.
fn contents() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z][a-z0-9_.-]{0,12}(==[0-9]{1,3}(\\.[0-9]{1,3}){0,2})?",
        Just("\r\n".to_string()),
        Just("\n".to_string()),
        Just("\r".to_string()),
        Just(" ; python_version >= \"3.9\"".to_string()),
        "# [^\u{0}]{0,20}",
        "\\PC{0,8}",
        "[\u{0}-\u{1f}]{1,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|p| p.concat())
}

/// Any bytes, often valid UTF-8 with one bad byte planted.
fn raw_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (contents(), any::<prop::sample::Index>(), 0x80u8..=0xff).prop_map(|(s, at, bad)| {
            let mut b = s.into_bytes();
            let i = if b.is_empty() { 0 } else { at.index(b.len()) };
            b.insert(i, bad);
            b
        }),
    ]
}

/// A fresh key on the real server, as the generated cases see it.
struct Server {
    config: S3Config,
    s3: S3Store,
    handle: tokio::runtime::Handle,
}

impl Server {
    /// Put `bytes` the way Bifrost does, then read them back through the store.
    fn put_and_read(&self, bytes: &[u8]) -> (String, Result<Versioned, Error>) {
        self.handle.block_on(async {
            let etag = bifrost_put(&self.config, bytes).await;
            (etag, self.s3.read().await)
        })
    }
}

/// `check` 48 values of `strategy` (from `seed`) against a fresh key on the real server.
fn against_the_server<S: Strategy>(
    strategy: S,
    seed: u64,
    what: &str,
    check: impl Fn(&Server, S::Value) -> Result<(), TestCaseError>,
) {
    let config = fresh();
    let server = Server {
        s3: store(config.clone()),
        config,
        handle: tokio::runtime::Handle::current(),
    };
    let mut runner = runner(48, seed, what);
    let result = tokio::task::block_in_place(|| runner.run(&strategy, |v| check(&server, v)));
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_contents_read_back_byte_exact() {
    against_the_server(
        contents(),
        0x5eed_5301,
        "S3 contents (real server)",
        |server, content| {
            let (etag, got) = server.put_and_read(content.as_bytes());
            let got = got.map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&got.content, &content);
            prop_assert_eq!(&got.etag, &etag);
            Ok(())
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_bytes_are_read_exactly_or_refused_at_the_first_bad_byte() {
    against_the_server(
        raw_bytes(),
        0x5eed_5302,
        "S3 raw bytes (real server)",
        |server, bytes| {
            let (_, got) = server.put_and_read(&bytes);
            match (std::str::from_utf8(&bytes), got) {
                (Ok(text), Ok(v)) => prop_assert_eq!(v.content, text),
                (Err(utf8), Err(e)) => {
                    prop_assert_eq!(e.reason(), "InvalidContent", "{}", e);
                    let offset = format!("offset {}", utf8.valid_up_to());
                    prop_assert!(e.to_string().contains(&offset), "{} lacks {}", e, offset);
                }
                (Ok(_), Err(e)) => prop_assert!(false, "valid UTF-8 refused: {}", e),
                (Err(_), Ok(v)) => prop_assert!(false, "invalid UTF-8 accepted: {:?}", v),
            }
            Ok(())
        },
    );
}
