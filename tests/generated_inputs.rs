//! Generated inputs (proptest, fixed seeds) on every input path this branch touches:
//! - CLI argument vectors for `install`, `warm`, `requirements add|remove|set` and `migrate`,
//!   each with at least one hostile element: never a panic (101) or an abort, always exit 2
//!   naming an offending argument, nothing written (real PostgreSQL, Redis, target folder);
//! - Redis values as a reader gets them (random bytes, truncated, deeply nested, wrong types,
//!   wrong hash): a clear error naming the key, never a panic;
//! - `workspace_files` rows (any text, bad hashes, NULLs) through `read` and `warm`: a clear error
//!   naming the row, never a panic, and Redis written only with exactly the row's content.

mod common;

use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::time::Instant;

use bifrost_requirements::Result as Outcome;
use bifrost_requirements::cache::{Cache, Payload};
use bifrost_requirements::cli::Cli;
use bifrost_requirements::database::Database;
use bifrost_requirements::packages::{self, WarmOutcome};
use bifrost_requirements::policy::Policy;
use bifrost_requirements::requirements::content_hash;
use bifrost_requirements::store::Store;
use clap::Parser;
use common::props::{just, runner};
use common::services::{fresh_key, redis_url};
use common::store_world::{DbWorld, cache_trying_once};
use futures::FutureExt;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------------
// CLI argument vectors
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Sub {
    Install,
    Warm,
    Add,
    Remove,
    Set,
    Migrate,
}

impl Sub {
    fn words(self) -> &'static [&'static str] {
        match self {
            Sub::Install => &["install"],
            Sub::Warm => &["warm"],
            Sub::Add => &["requirements", "add", "flask==3.0.3"],
            Sub::Remove => &["requirements", "remove", "requests"],
            Sub::Set => &["requirements", "set"],
            Sub::Migrate => &["migrate"],
        }
    }

    /// Flags that take a value and reject a non-numeric, non-duration one.
    fn strict_value_flags(self) -> &'static [&'static str] {
        match self {
            Sub::Migrate => &["--database-timeout"],
            Sub::Install => &[
                "--redis-timeout",
                "--redis-attempts",
                "--ttl-seconds",
                "--timeout",
                "--redis-deadline",
                "--installer",
                "--on-failure",
                "--expected-hash",
            ],
            _ => &[
                "--database-timeout",
                "--redis-timeout",
                "--redis-attempts",
                "--ttl-seconds",
                "--store",
                "--s3-timeout",
                "--s3-force-path-style",
            ],
        }
    }

    /// Every flag (for noise): value flags and switches.
    fn flags(self) -> Vec<&'static str> {
        let mut v = self.strict_value_flags().to_vec();
        v.extend(["--log-format", "--log-level"]);
        match self {
            Sub::Migrate => v.extend(["--database-url", "--path", "--entity-type"]),
            Sub::Install => v.extend([
                "--target",
                "--python",
                "--uv",
                "--fallback-file",
                "--cache-dir",
                "--index-url",
                "--find-links",
                "--no-index",
                "--json",
                "--redis-url",
                "--redis-key",
            ]),
            _ => v.extend([
                "--database-url",
                "--redis-url",
                "--redis-key",
                "--s3-bucket",
                "--s3-key",
                "--s3-endpoint-url",
                "--s3-region",
                "--s3-access-key",
                "--s3-secret-key",
                "--path",
                "--allowed-index-url",
                "--policy-only-binary",
            ]),
        }
        v
    }
}

/// Text a hostile caller might pass: unicode, control characters (not NUL: argv cannot hold
/// it), huge numbers, leading dashes, empty, very long.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        "[0-9]{19,60}",
        "-[0-9]{1,30}",
        just(""),
        just("-x"),
        "[\\x01-\\x1f]{1,6}",
        "[a-z]{1,8}=[a-z=]{0,8}",
        "\\p{Greek}\\p{Han}{1,6}",
        (0usize..70_000).prop_map(|n| "9".repeat(n)),
        "(sha256:)?[0-9a-f]{0,70}",
    ]
}

/// One argument that makes the command invalid whatever else is present (rendered so that no
/// noise can swallow it: values are attached with `=`, a valueless flag comes last).
#[derive(Debug, Clone)]
enum Poison {
    UnknownFlag(String),
    BadValue(&'static str, String),
    MissingValue(&'static str),
}

fn poison(sub: Sub) -> impl Strategy<Value = Poison> {
    let flags = sub.strict_value_flags();
    prop_oneof![
        "(zz-|ü|--)[a-z\\PC]{1,16}".prop_map(|s| Poison::UnknownFlag(format!("--{s}"))),
        (
            proptest::sample::select(flags),
            prop_oneof!["x\\PC{0,12}", "ü[0-9]{0,4}", just("-x")]
        )
            .prop_map(|(f, v)| Poison::BadValue(f, v)),
        proptest::sample::select(flags).prop_map(Poison::MissingValue),
    ]
}

fn argv(sub: Sub) -> impl Strategy<Value = (Vec<String>, Poison)> {
    let flags = sub.flags();
    let noise = prop_oneof![
        (proptest::sample::select(flags), hostile_text()).prop_map(|(f, v)| format!("{f}={v}")),
        proptest::sample::select(sub.flags()).prop_map(String::from),
    ];
    (
        proptest::collection::vec(noise, 0..5),
        poison(sub),
        any::<proptest::sample::Index>(),
    )
        .prop_map(move |(mut noise, poison, at)| {
            match &poison {
                Poison::UnknownFlag(f) => noise.insert(at.index(noise.len() + 1), f.clone()),
                Poison::BadValue(f, v) => {
                    noise.insert(at.index(noise.len() + 1), format!("{f}={v}"))
                }
                Poison::MissingValue(f) => noise.push(f.to_string()),
            }
            (noise, poison)
        })
}

fn any_sub() -> impl Strategy<Value = Sub> {
    proptest::sample::select(vec![
        Sub::Install,
        Sub::Warm,
        Sub::Add,
        Sub::Remove,
        Sub::Set,
        Sub::Migrate,
    ])
}

/// Whether the error message names one of the arguments (a flag's name or a whole token).
fn names_an_argument(message: &str, args: &[String]) -> bool {
    args.iter().any(|a| {
        let flag = a.split('=').next().unwrap_or(a);
        (flag.starts_with("--") && message.contains(flag)) || (!a.is_empty() && message.contains(a))
    })
}

/// In-process: clap never panics on these vectors and always refuses them with exit code 2,
/// naming an argument. Thousands of cases in well under a second each.
#[test]
fn generated_argument_vectors_are_refused_by_the_parser() {
    let started = Instant::now();
    let strategy = any_sub().prop_flat_map(|sub| argv(sub).prop_map(move |a| (sub, a)));
    let mut runner = runner(3000, 0x5eed_0002, "CLI vectors (in-process parse)");
    runner
        .run(&strategy, |(sub, (rest, poison))| {
            let mut full: Vec<String> = vec!["bifrost-requirements".into()];
            full.extend(sub.words().iter().map(|w| w.to_string()));
            full.extend(rest.iter().cloned());
            let parsed = std::panic::catch_unwind(|| Cli::try_parse_from(&full));
            let parsed =
                parsed.map_err(|_| TestCaseError::fail(format!("clap panicked on {full:?}")))?;
            let err = match parsed {
                Ok(cli) => {
                    return Err(TestCaseError::fail(format!(
                        "accepted {full:?} (poison {poison:?}): {:?}",
                        cli.command
                    )));
                }
                Err(e) => e,
            };
            prop_assert_eq!(err.exit_code(), 2, "{:?}: {}", full, err);
            let message = err.to_string();
            prop_assert!(
                names_an_argument(&message, &rest),
                "{:?}: the error names no argument: {}",
                full,
                message
            );
            Ok(())
        })
        .unwrap();
    eprintln!("in-process parse: {:?}", started.elapsed());
}

/// The real binary against real servers: exit 2, no panic or abort, nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_argument_vectors_exit_2_and_write_nothing() {
    let w = DbWorld::new().await;
    assert!(
        w.cli(&["requirements", "add", "requests==2.32.3"])
            .status
            .success()
    );
    let row_before = w.db.read().await.unwrap();
    let redis_before = w.cached().await;
    assert!(redis_before.is_some());
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    let file = dir.path().join("new.txt");
    std::fs::write(&file, "numpy==2.0.1\n").unwrap();

    let strategy = any_sub().prop_flat_map(|sub| argv(sub).prop_map(move |a| (sub, a)));
    let mut runner = runner(1500, 0x5eed_0003, "CLI vectors (binary, real servers)");
    let started = Instant::now();
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(sub, (rest, poison))| {
            let mut args: Vec<String> = sub.words().iter().map(|w| w.to_string()).collect();
            match sub {
                Sub::Install => args.extend(["--target".into(), target.display().to_string()]),
                Sub::Set => args.extend(["--file".into(), file.display().to_string()]),
                _ => {}
            }
            args.extend(rest.iter().cloned());
            let out = Command::new(common::bin())
                .args(&args)
                .envs(w.env())
                .env_remove("RUST_LOG")
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(
                out.status.code().is_some(),
                "{:?} died by a signal: {:?}\n{}",
                args,
                out.status,
                stderr
            );
            prop_assert!(
                !stderr.contains("panicked"),
                "{:?} panicked:\n{}",
                args,
                stderr
            );
            prop_assert_eq!(
                out.status.code(),
                Some(2),
                "{:?} (poison {:?}):\n{}",
                args,
                poison,
                stderr
            );
            prop_assert!(
                names_an_argument(&stderr, &rest),
                "{:?}: no argument named:\n{}",
                args,
                stderr
            );
            let (row, cached) =
                handle.block_on(async { (w.db.read().await.unwrap(), w.cached().await) });
            prop_assert_eq!(&row, &row_before, "{:?} changed the row", args);
            prop_assert_eq!(&cached, &redis_before, "{:?} changed Redis", args);
            prop_assert!(!target.exists(), "{:?} created the install target", args);
            Ok(())
        })
    });
    eprintln!("binary vectors: {:?}", started.elapsed());
    result.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Redis payloads
// ---------------------------------------------------------------------------------------------

fn redis_values() -> impl Strategy<Value = Vec<u8>> {
    let good = Payload::new("requests==2.32.3\nflask==3.0.3 # ☃\n").to_json();
    let good_len = good.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "\\PC{0,200}".prop_map(String::into_bytes),
        (0..good_len).prop_map(move |n| good.as_bytes()[..n].to_vec()),
        (1usize..50_000, proptest::bool::ANY).prop_map(|(depth, obj)| {
            let (open, close) = if obj { ("{\"a\":", "}") } else { ("[", "]") };
            let mut s = open.repeat(depth);
            s.push('1');
            s.push_str(&close.repeat(depth));
            s.into_bytes()
        }),
        (
            prop_oneof![
                just("null"),
                just("1"),
                just("[]"),
                just("{}"),
                "\"\\PC{0,20}\"",
            ],
            prop_oneof![
                just("null"),
                just("42"),
                just("[\"a\"]"),
                "\"[0-9a-f]{0,70}\"",
            ],
        )
            .prop_map(|(c, h)| format!("{{\"content\": {c}, \"hash\": {h}}}").into_bytes()),
        "\\PC{0,80}".prop_map(|c| {
            // Right shape, wrong hash (the hash of something else).
            let h = content_hash(&format!("{c}x"));
            format!(
                "{{\"content\": {}, \"hash\": \"{h}\"}}",
                serde_json::json!(c)
            )
            .into_bytes()
        }),
    ]
}

#[test]
fn generated_redis_payloads_are_refused_clearly_never_a_panic() {
    let mut runner = runner(4000, 0x5eed_0004, "Redis payloads (parse)");
    let started = Instant::now();
    runner
        .run(&redis_values(), |raw| {
            let Ok(text) = std::str::from_utf8(&raw) else {
                return Ok(());
            };
            let parsed = std::panic::catch_unwind(|| Payload::from_json("the-key", text))
                .map_err(|_| TestCaseError::fail(format!("panicked on {text:?}")))?;
            match parsed {
                Ok(p) => prop_assert_eq!(p.hash, content_hash(&p.content)),
                Err(e) => {
                    let m = e.to_string();
                    prop_assert!(m.contains("the-key"), "{}", m);
                    prop_assert_eq!(e.exit_code(), 4);
                }
            }
            Ok(())
        })
        .unwrap();
    eprintln!("Redis payloads (parse): {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_redis_values_read_through_a_real_redis_fail_clearly() {
    let key = fresh_key();
    let cache = cache_trying_once(&key).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut runner = runner(3000, 0x5eed_0005, "Redis values (real Redis)");
    let handle = tokio::runtime::Handle::current();
    let started = Instant::now();
    let result = tokio::task::block_in_place(|| {
        runner.run(&redis_values(), |raw| {
            let mut conn = conn.clone();
            let got = handle.block_on(async {
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(&raw)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                let got = cache.get().await;
                let after: Vec<u8> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                (got, after)
            });
            let (got, after) = got;
            prop_assert_eq!(&after, &raw, "reading changed the value");
            match got {
                Ok(Some(p)) => prop_assert_eq!(p.hash, content_hash(&p.content)),
                Ok(None) => prop_assert!(false, "a set key read as missing"),
                Err(e) => {
                    let m = e.to_string();
                    prop_assert!(m.contains(&key), "{}", m);
                    prop_assert_eq!(e.exit_code(), 4, "{}", m);
                }
            }
            Ok(())
        })
    });
    eprintln!("Redis values (real Redis): {:?}", started.elapsed());
    result.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Database rows
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Row {
    content: Option<String>,
    hash: Option<String>,
    deleted: bool,
}

fn rows() -> impl Strategy<Value = Row> {
    let content = prop_oneof![
        1 => Just(None),
        6 => "[^\\x00]{0,200}".prop_map(Some),
        3 => "([a-zA-Z0-9_.\\-\\[\\]=<>!~;@ ,#'\"]{0,30}\r?\n){0,6}".prop_map(Some),
    ];
    let hash = prop_oneof![
        Just(None),
        "\\PC{0,80}".prop_map(Some),
        "(sha256:)?[0-9a-fA-F]{64}".prop_map(Some),
    ];
    (content, hash, proptest::bool::weighted(0.1)).prop_map(|(content, hash, deleted)| Row {
        content,
        hash,
        deleted,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_database_rows_read_and_warm_clearly_never_a_panic() {
    let w = DbWorld::new().await;
    let cache = cache_trying_once(&w.key).await;
    let policy = Policy::default();
    let handle = tokio::runtime::Handle::current();
    let mut runner = runner(2500, 0x5eed_0006, "database rows (read, warm)");
    let started = Instant::now();
    let result = tokio::task::block_in_place(|| {
        runner.run(&rows(), |row| {
            handle.block_on(async {
                store(&w.db, &row).await;
                let before = w.cached().await;
                read_gives_the_row_or_names_it(&w.db, &row).await?;
                let warmed = warm_without_a_panic(&w.db, &cache, &policy).await?;
                warm_caches_exactly_the_row(warmed, &row, before, w.cached().await)
            })
        })
    });
    eprintln!("database rows: {:?}", started.elapsed());
    result.unwrap();
}

/// `row` as the only row of the table.
async fn store(db: &Database, row: &Row) {
    sqlx::query("DELETE FROM workspace_files")
        .execute(db.pool())
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO workspace_files (id, path, entity_type, content, content_hash, \
         git_status, is_deleted, created_at, updated_at) VALUES (gen_random_uuid(), \
         'requirements.txt', 'requirements', $1, $2, 'untracked', $3, now(), now())",
    )
    .bind(&row.content)
    .bind(&row.hash)
    .bind(row.deleted)
    .execute(db.pool())
    .await
    .unwrap();
}

/// A read sees nothing of a deleted row, a row's content as it is, and names a NULL content.
async fn read_gives_the_row_or_names_it(db: &Database, row: &Row) -> Result<(), TestCaseError> {
    let read = db.read().await;
    match (&read, &row.content, row.deleted) {
        (Ok(None), _, true) => {}
        (Ok(Some(r)), Some(c), false) => prop_assert_eq!(&r.content, c),
        (Err(e), None, false) => {
            let m = e.to_string();
            prop_assert!(
                m.contains("requirements.txt") && m.contains("NULL"),
                "{}",
                m
            );
        }
        other => prop_assert!(false, "unexpected read {:?} for {:?}", other, row),
    }
    Ok(())
}

/// `warm`, failing the case if it panics.
async fn warm_without_a_panic(
    db: &Database,
    cache: &Cache,
    policy: &Policy,
) -> Result<Outcome<WarmOutcome>, TestCaseError> {
    let warmed = AssertUnwindSafe(packages::warm(&Store::from(db.clone()), cache, policy))
        .catch_unwind()
        .await;
    match warmed {
        Ok(w) => Ok(w),
        Err(panic) => {
            let m = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            prop_assert!(false, "warm panicked: {}", m);
            unreachable!()
        }
    }
}

/// Redis holds exactly the row's content after a warm, and is untouched by a refused one.
fn warm_caches_exactly_the_row(
    warmed: Outcome<WarmOutcome>,
    row: &Row,
    before: Option<String>,
    after: Option<String>,
) -> Result<(), TestCaseError> {
    match warmed {
        Ok(WarmOutcome::Warmed(p)) => {
            prop_assert_eq!(Some(&p.content), row.content.as_ref());
            prop_assert_eq!(after, Some(p.to_json()));
        }
        Ok(WarmOutcome::NoRow) => {
            prop_assert!(row.deleted);
            prop_assert_eq!(after, before);
        }
        Err(e) => {
            let m = e.to_string();
            prop_assert!(!m.is_empty());
            if row.content.is_none() {
                prop_assert!(m.contains("requirements.txt"), "{}", m);
            } else {
                prop_assert!(m.contains("line "), "names no line: {}", m);
            }
            prop_assert_eq!(after, before, "a refused row reached Redis");
        }
    }
    Ok(())
}

/// Crasher found by `generated_database_rows_read_and_warm_clearly_never_a_panic` (seed
/// 0x5eed_0006): a row holding `A-~` made `warm` panic inside pep508_rs (exit 101).
#[tokio::test]
async fn regression_row_a_dash_tilde_warms_without_a_panic() {
    let w = DbWorld::new().await;
    w.sql(
        "INSERT INTO workspace_files (id, path, entity_type, content, git_status, created_at, \
         updated_at) VALUES (gen_random_uuid(), 'requirements.txt', 'requirements', 'A-~\n', \
         'untracked', now(), now())",
    )
    .await;
    let out = w.cli(&["warm"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 1"), "{stderr}");
    assert_eq!(w.cached().await, None);
}
