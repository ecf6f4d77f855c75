//! The CLI on Bifrost's S3 object (`--store s3`): the real binary against a real S3 server (moto,
//! credentials enforced) and a real Redis. `requirements show|add|remove|set` and `warm` keep the
//! bytes, write S3 with conditional PUTs and then Redis, lose nothing under concurrent writers,
//! read Bifrost's own environment names (`BIFROST_S3_*`, `BIFROST_REDIS_URL`), and refuse bad
//! input with a message naming it, writing nothing.

mod common;

use std::process::{Command, Output, Stdio};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::s3::DEFAULT_KEY;
use common::checks::{assert_exit, assert_ok_says, assert_says};
use common::s3::{BUCKET, World, bifrost_put, shared};
use common::services::{dead_url, fresh_key as fresh_redis_key, redis_get, redis_url};
use common::wheels::{Wheel, Wheelhouse};
use common::{assert_ok, cli, stderr, stdout};

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

#[tokio::test]
async fn add_remove_set_and_show_keep_the_bytes_and_refresh_redis() {
    let w = World::new();

    // No object yet: show says so, add creates it (If-None-Match: *).
    let out = w.run(&["requirements", "show"], &[]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "");
    assert_says(&out, &[&format!("no object s3://{BUCKET}/")]);
    let out = w.run(&["requirements", "add", "requests==2.32.3"], &[]);
    assert_ok_says(&out, &["created"]);
    w.assert_both("requests==2.32.3\n").await;

    // Bifrost edits the file in its editor (CRLF, a comment): the CLI keeps those bytes.
    bifrost_put(&w.s3, b"# team tools\r\nrequests==2.32.3\r\npandas>=2\r\n").await;
    let out = w.run(
        &["requirements", "add", "flask==3.0.3", "Requests==2.31"],
        &[],
    );
    assert_ok(&out);
    let (content, _) = w.object().await.unwrap();
    assert!(
        content.starts_with("# team tools\r\nRequests==2.31\r\npandas>=2\r\n"),
        "{content:?}"
    );
    assert!(content.contains("flask==3.0.3"), "{content:?}");
    assert_eq!(content.matches("equests").count(), 1, "{content:?}");
    w.assert_both(&content).await;

    let out = w.run(&["requirements", "show"], &[]);
    assert_ok(&out);
    assert_eq!(
        stdout(&out),
        content,
        "show prints the object byte for byte"
    );

    let out = w.run(&["requirements", "remove", "pandas"], &[]);
    assert_ok(&out);
    let (content, _) = w.object().await.unwrap();
    assert!(!content.contains("pandas"), "{content:?}");
    assert!(
        content.starts_with("# team tools\r\nRequests==2.31\r\n"),
        "{content:?}"
    );
    w.assert_both(&content).await;

    // set: exactly the file's bytes (CRLF, no trailing newline), via standard input too.
    assert_ok(&w.set_file("numpy==2.0.1\r\n# ü\r\nscipy"));
    w.assert_both("numpy==2.0.1\r\n# ü\r\nscipy").await;
    let out = w.run(&["requirements", "show"], &[]);
    assert_eq!(stdout(&out), "numpy==2.0.1\r\n# ü\r\nscipy");

    // Unchanged: no PUT, Redis not touched.
    let (_, etag) = w.object().await.unwrap();
    let out = w.set_file("numpy==2.0.1\r\n# ü\r\nscipy");
    assert_ok_says(&out, &["unchanged"]);
    assert_eq!(w.object().await.unwrap().1, etag);

    // Removing what is not there is input to fix: exit 2, nothing written.
    let out = w.run(&["requirements", "remove", "flask"], &[]);
    assert_exit(&out, 2, &["flask"]);
    assert_eq!(w.object().await.unwrap().1, etag);
}

#[tokio::test]
async fn twenty_concurrent_adds_from_twenty_processes_keep_all_twenty() {
    let w = World::holding(b"# shared\r\n").await;
    let env = w.env();
    let children: Vec<_> = (0..20)
        .map(|i| {
            let mut cmd = Command::new(common::bin());
            cmd.args(["requirements", "add", &format!("pkg-{i:02}==1.{i}")])
                .env_remove("RUST_LOG")
                .env_remove("AWS_ACCESS_KEY_ID")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (n, v) in &env {
                cmd.env(n, v);
            }
            cmd.spawn().unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_ok(&out);
    }
    let (content, _) = w.object().await.unwrap();
    assert!(content.starts_with("# shared\r\n"), "{content:?}");
    for i in 0..20 {
        assert!(
            content.contains(&format!("pkg-{i:02}==1.{i}")),
            "pkg-{i:02} lost:\n{content}"
        );
    }
    assert_eq!(content.lines().count(), 21, "{content}");
    // The last Redis write is of the last object: never older over newer.
    w.assert_both(&content).await;
}

#[tokio::test]
async fn warm_with_only_bifrosts_environment_names_writes_bifrosts_payload() {
    // Bifrost's Secret and ConfigMap as `envFrom` gives them; the key is Bifrost's default.
    let mut s3 = shared().config(DEFAULT_KEY);
    s3.region = "us-east-1".into();
    let content = "# from Bifrost's editor\r\nhttpx==0.27.0\r\npydantic>=2";
    bifrost_put(&s3, content.as_bytes()).await;
    let creds = s3.credentials.clone().unwrap();
    let redis_key = fresh_redis_key();
    let endpoint = shared().endpoint();
    let redis = redis_url();
    let out = cli(
        &["warm", "--store", "s3", "--redis-key", &redis_key],
        &[
            ("BIFROST_S3_ENDPOINT_URL", &endpoint),
            ("BIFROST_S3_BUCKET", BUCKET),
            ("BIFROST_S3_ACCESS_KEY", &creds.access_key_id),
            ("BIFROST_S3_SECRET_KEY", &creds.secret_access_key),
            ("BIFROST_S3_REGION", "us-east-1"),
            ("BIFROST_REDIS_URL", &redis),
        ],
    );
    assert_ok_says(&out, &[&format!("s3://{BUCKET}/{DEFAULT_KEY}")]);
    assert_eq!(
        redis_get(&redis, &redis_key).await,
        Some(Payload::new(content).to_json())
    );
    assert!(!stderr(&out).contains(&creds.secret_access_key));

    // No object: exit 0, says so, Redis untouched.
    let w = World::new();
    let out = w.run(&["warm"], &[]);
    assert_ok_says(&out, &["no object"]);
    assert_eq!(w.redis().await, None);
}

#[tokio::test]
async fn a_policy_violation_changes_neither_s3_nor_redis() {
    let w = World::new();
    assert_ok(&w.run(&["requirements", "add", "requests==2.32.3"], &[]));
    let (before, etag) = w.object().await.unwrap();
    let cached = w.redis().await;

    // Refused arguments, before anything is contacted.
    for args in [
        &["requirements", "add", "git+https://evil.example/x.git"][..],
        &["requirements", "add", "-e", "."],
    ] {
        let out = w.run(args, &[]);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
    }
    let out = w.set_file("flask\n--extra-index-url https://evil.example/simple\n");
    assert_exit(&out, 2, &["line 2"]);
    assert_eq!(w.object().await.unwrap().1, etag);
    assert_eq!(w.redis().await, cached);

    // Someone put a forbidden line into the object: an add refuses the result, writes nothing.
    let hostile = format!("{before}-i https://evil.example/simple\n");
    let hostile_etag = bifrost_put(&w.s3, hostile.as_bytes()).await;
    let out = w.run(&["requirements", "add", "flask==3.0.3"], &[]);
    assert_exit(&out, 2, &["evil.example"]);
    assert_eq!(w.object().await, Some((hostile.clone(), hostile_etag)));
    assert_eq!(w.redis().await, cached);
    // warm refuses it too.
    let out = w.run(&["warm"], &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(w.redis().await, cached);
}

#[tokio::test]
async fn bifrost_redis_url_is_read_and_redis_url_wins() {
    let w = World::new();
    let dead = dead_url("redis");

    // Only Bifrost's name: used.
    let out = w.run(
        &["requirements", "add", "requests==2.32.3"],
        &[("REDIS_URL", ""), ("BIFROST_REDIS_URL", &redis_url())],
    );
    assert_ok(&out);
    w.assert_both("requests==2.32.3\n").await;

    // Both: REDIS_URL wins (Bifrost's points nowhere).
    let out = w.run(
        &["requirements", "add", "flask==3.0.3"],
        &[("BIFROST_REDIS_URL", &dead)],
    );
    assert_ok(&out);
    w.assert_both("requests==2.32.3\nflask==3.0.3\n").await;

    // Only Bifrost's name, pointing nowhere: Redis is required to be reachable before S3 is
    // written, so nothing changes (exit 4, Redis's code).
    let (_, etag) = w.object().await.unwrap();
    let out = w.run(
        &["requirements", "add", "numpy==2.0.1"],
        &[("REDIS_URL", ""), ("BIFROST_REDIS_URL", &dead)],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    assert_eq!(w.object().await.unwrap().1, etag);
}

#[test]
fn install_reads_bifrost_redis_url_alone_and_redis_url_wins() {
    let wheels = Wheelhouse::new(&[Wheel::new("bifrost_t_s3cli", "1.0")]);
    let dir = tempfile::tempdir().unwrap();
    let key = fresh_redis_key();
    let redis = redis_url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(common::services::redis_set(
        &redis,
        &key,
        &Payload::new("bifrost_t_s3cli==1.0\n").to_json(),
    ));
    let dead = dead_url("redis");
    for (n, env) in [
        (1, vec![("BIFROST_REDIS_URL", redis.as_str())]),
        (
            2,
            vec![("REDIS_URL", redis.as_str()), ("BIFROST_REDIS_URL", &dead)],
        ),
    ] {
        let target = dir.path().join(format!("target-{n}"));
        let mut env = env;
        env.push(("BIFROST_REQUIREMENTS_REDIS_KEY", &key));
        let out = cli(
            &[
                "install",
                "--target",
                target.to_str().unwrap(),
                "--no-index",
                "--find-links",
                wheels.path_str(),
                "--redis-timeout",
                "1s",
                "--json",
            ],
            &env,
        );
        assert_ok(&out);
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(report["status"], "installed", "{env:?}: {}", stderr(&out));
        assert!(target.join("bifrost_t_s3cli/__init__.py").exists());
    }
}

/// One variable of the environment changed, the exit code that gives, and what the message
/// must name.
struct Case<'a> {
    var: &'static str,
    value: &'a str,
    code: i32,
    names: Vec<&'a str>,
}

/// Exit 2: the value is input to fix.
const BAD_INPUT: i32 = 2;
/// Exit 3: with the value, S3 cannot be reached or refuses access.
const NO_ACCESS: i32 = 3;

impl<'a> Case<'a> {
    fn new(code: i32, var: &'static str, value: &'a str, names: Vec<&'a str>) -> Case<'a> {
        Case {
            var,
            value,
            code,
            names,
        }
    }
}

/// Each bad value of the environment, and what it must give; `dead_endpoint` is an endpoint
/// where nothing listens.
fn bad_s3_cases(dead_endpoint: &str) -> Vec<Case<'_>> {
    let (bucket, endpoint, secret) = (
        "BIFROST_S3_BUCKET",
        "BIFROST_S3_ENDPOINT_URL",
        "BIFROST_S3_SECRET_KEY",
    );
    vec![
        Case::new(BAD_INPUT, bucket, "", vec!["--s3-bucket", bucket]),
        Case::new(
            BAD_INPUT,
            bucket,
            "Bad_Bucket",
            vec!["--s3-bucket", "\"Bad_Bucket\""],
        ),
        Case::new(
            BAD_INPUT,
            bucket,
            "other/../bucket",
            vec!["--s3-bucket", "'/'"],
        ),
        Case::new(
            BAD_INPUT,
            endpoint,
            "seaweedfs:8333",
            vec!["--s3-endpoint-url", endpoint, "http://"],
        ),
        Case::new(
            BAD_INPUT,
            endpoint,
            "http://u:pw-in-url-123@127.0.0.1:1",
            vec!["--s3-endpoint-url", "holds credentials"],
        ),
        Case::new(
            BAD_INPUT,
            "BIFROST_REQUIREMENTS_S3_KEY",
            "_repo/../secrets.txt",
            vec!["--s3-key", "\"..\""],
        ),
        Case::new(
            BAD_INPUT,
            "BIFROST_S3_REGION",
            "us east",
            vec!["--s3-region", "\"us east\""],
        ),
        Case::new(BAD_INPUT, secret, "", vec![secret, "set both"]),
        Case::new(
            BAD_INPUT,
            "BIFROST_REQUIREMENTS_STORE",
            "s4",
            vec!["--store", "s4"],
        ),
        Case::new(
            NO_ACCESS,
            endpoint,
            dead_endpoint,
            vec!["cannot reach S3", dead_endpoint, BUCKET],
        ),
        Case::new(
            NO_ACCESS,
            secret,
            "wrong-secret-not-shown-42",
            vec!["S3 refused access", "SignatureDoesNotMatch", BUCKET],
        ),
        Case::new(
            NO_ACCESS,
            "BIFROST_S3_ACCESS_KEY",
            "AKIAUNKNOWN0000",
            vec!["S3 refused access", "InvalidAccessKeyId"],
        ),
    ]
}

#[tokio::test]
async fn bad_s3_input_names_what_is_wrong_and_writes_nothing() {
    let w = World::new();
    assert_ok(&w.run(&["requirements", "add", "requests==2.32.3"], &[]));
    let before = w.object().await;
    let cached = w.redis().await;
    let dead_endpoint = format!("http://127.0.0.1:{}", common::proc::free_port());
    let cases = bad_s3_cases(&dead_endpoint);
    for case in &cases {
        let changes = [(case.var, case.value)];
        for args in [
            &["requirements", "add", "flask==3.0.3"][..],
            &["requirements", "show"],
            &["warm"],
        ] {
            names_what_is_wrong_and_no_secret(&w, case, args);
        }
        assert_eq!(w.object().await, before, "{changes:?} changed S3");
        assert_eq!(w.redis().await, cached, "{changes:?} changed Redis");
    }
}

/// `args` under `case` exits with its code, names what it must, and shows no secret.
fn names_what_is_wrong_and_no_secret(w: &World, case: &Case, args: &[&str]) {
    let changes = [(case.var, case.value)];
    let out = w.run(args, &changes);
    let err = stderr(&out);
    assert_eq!(code(&out), case.code, "{changes:?} {args:?}:\n{err}");
    for name in &case.names {
        assert!(
            err.contains(name),
            "{changes:?} {args:?}: {name:?} not in\n{err}"
        );
    }
    assert!(!err.contains("panicked"), "{err}");
    for secret in ["wrong-secret-not-shown-42", "pw-in-url-123"] {
        assert!(!err.contains(secret), "{changes:?}: secret shown:\n{err}");
    }
    let real = w.s3.credentials.as_ref().unwrap();
    assert!(!err.contains(&real.secret_access_key), "{err}");
    assert!(!stdout(&out).contains(&real.secret_access_key));
}

/// A blank variable counts as unset, as the README says: `BIFROST_REQUIREMENTS_S3_KEY=""` reads
/// Bifrost's `_repo/requirements.txt` (it was exit 2, "the key is empty"), a blank timeout is
/// the default one.
#[tokio::test]
async fn blank_variables_are_unset_and_their_defaults_apply() {
    let w = World::new();
    let out = w.run(
        &["requirements", "show"],
        &[
            ("BIFROST_REQUIREMENTS_S3_KEY", ""),
            ("BIFROST_S3_TIMEOUT", ""),
        ],
    );
    assert_ok(&out);
    // Whatever the shared bucket holds there: the default key is the one read.
    if stdout(&out).is_empty() {
        assert_says(&out, &[DEFAULT_KEY]);
    }
    // The object of this test's own key was not the one read.
    assert_ok(&w.run(&["requirements", "add", "numpy==2.0.1"], &[]));
    let out = w.run(
        &["requirements", "show"],
        &[("BIFROST_REQUIREMENTS_S3_KEY", "")],
    );
    assert_ok(&out);
    assert!(!stdout(&out).contains("numpy==2.0.1"), "{}", stdout(&out));
}

/// A UTF-8 byte order mark (an editor on Windows writes one) is read as pip reads it: ignored at
/// the start. `add` and `warm` refused such an object (`line 1: '\ufeffgoodpkg==1.0'`); now they
/// accept it and keep its bytes, the mark included.
#[tokio::test]
async fn a_byte_order_mark_is_ignored_and_kept() {
    let w = World::holding("\u{feff}goodpkg==1.0\r\n".as_bytes()).await;
    let out = w.run(&["warm"], &[]);
    assert_ok(&out);
    w.assert_both("\u{feff}goodpkg==1.0\r\n").await;
    let out = w.run(&["requirements", "add", "flask==3.0.3"], &[]);
    assert_ok(&out);
    w.assert_both("\u{feff}goodpkg==1.0\r\nflask==3.0.3\r\n")
        .await;
    let out = w.run(&["requirements", "add", "goodpkg==2.0"], &[]);
    assert_ok(&out);
    w.assert_both("\u{feff}goodpkg==2.0\r\nflask==3.0.3\r\n")
        .await;
    // The mark belongs to the file: removing the first line keeps it in front.
    let out = w.run(&["requirements", "remove", "goodpkg"], &[]);
    assert_ok(&out);
    w.assert_both("\u{feff}flask==3.0.3\r\n").await;
}
