//! Hostile requirements content everywhere it can arrive: the CLI (`requirements set`, `install`,
//! `warm`, `requirements add` over such a row) and the operator on a real control plane (inline
//! content and a mirrored database row). Content that once panicked (`foo-]`) or overflowed the
//! stack (3,000 nested parentheses) is refused with its line number; nothing exits 101 or aborts.

mod common;

use bifrost_requirements::requirements::content_hash;
use common::operator::{condition, wait_for};
use common::scenario::{Ns, Scenario, T};
use common::services::{dead_url, fresh_database, write_bifrost_row};
use common::{cli, stderr};
use serde_json::json;

const PANICKED: &str = "foo-]\n";

fn deep() -> String {
    format!(
        "alpha ; {}python_version > \"3\"{}\n",
        "(".repeat(3000),
        ")".repeat(3000)
    )
}

/// Exit 2 with a message naming line `line`; neither a panic (101) nor an abort (signal).
#[track_caller]
fn assert_refused(out: &std::process::Output, line: usize, what: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: {:?}\n{err}",
        out.status
    );
    assert!(err.contains(&format!("line {line}")), "{what}: {err}");
    assert!(
        !err.contains("panicked at") && !err.contains("overflowed its stack"),
        "{what}: {err}"
    );
}

#[test]
fn the_cli_refuses_hostile_files_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [("panicked", PANICKED.to_string()), ("deep", deep())] {
        let file = dir.path().join(format!("{name}.txt"));
        std::fs::write(&file, &content).unwrap();
        let file = file.to_str().unwrap();
        let out = cli(
            &["requirements", "set", "--file", file],
            &[("DATABASE_URL", &dead_url("postgres"))],
        );
        assert_refused(&out, 1, &format!("requirements set {name}"));
        let target = dir.path().join(format!("site-{name}"));
        let out = cli(
            &[
                "install",
                "--target",
                target.to_str().unwrap(),
                "--fallback-file",
                file,
                "--redis-url",
                &dead_url("redis"),
                "--redis-timeout",
                "1s",
            ],
            &[],
        );
        assert_refused(&out, 1, &format!("install {name}"));
        assert!(
            !target.join(".bifrost-requirements.json").exists(),
            "install {name} wrote a marker"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_and_add_over_a_hostile_row_exit_2() {
    let db = fresh_database().await;
    common::assert_ok(&cli(&["migrate"], &[("DATABASE_URL", &db)]));
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    for content in [PANICKED.to_string(), format!("ok\n{}", deep())] {
        write_bifrost_row(&pool, &content).await;
        let line = if content.starts_with("ok") { 2 } else { 1 };
        let env = [
            ("DATABASE_URL", db.as_str()),
            ("REDIS_URL", &common::services::redis_url()),
        ];
        assert_refused(&cli(&["warm"], &env), line, "warm");
        assert_refused(&cli(&["requirements", "add", "bar"], &env), line, "add");
        let stored: (String,) =
            sqlx::query_as("SELECT content FROM workspace_files WHERE path = 'requirements.txt'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(stored.0, content, "the row changed");
    }
    pool.close().await;
}

/// Wait for Valid=False naming line `line`; returns the message.
async fn wait_invalid(ns: &Ns, name: &str, line: usize) -> String {
    wait_for(&format!("{name} Valid=False"), T, || async {
        let (status, _, message) = condition(&ns.get(name).await, "Valid")?;
        (status == "False" && message.contains(&format!("line {line}"))).then_some(message)
    })
    .await
}

/// Wait for the status to show `content`'s hash, valid.
async fn wait_hash(ns: &Ns, name: &str, content: &str) {
    let hash = content_hash(content);
    wait_for(&format!("{name} status hash"), T, || async {
        let obj = ns.get(name).await;
        let valid = condition(&obj, "Valid")?.0 == "True";
        (valid && obj.status?.content_hash? == hash).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_resource_is_invalid_and_its_neighbour_keeps_working() {
    let op = Scenario::start("hostile", &[]).await;
    op.wsreq("good", json!({"content": "a==1\n"})).await;
    op.wsreq("bad", json!({"content": PANICKED})).await;
    wait_hash(&op, "good", "a==1\n").await;
    let message = wait_invalid(&op, "bad", 1).await;
    assert!(message.contains("letter or digit"), "{message}");

    let newer = "a==2\nb\n";
    op.set_content("good", newer).await;
    wait_hash(&op, "good", newer).await;
    assert_eq!(op.http_get("/healthz").0, 200);
    assert!(!op.log_text().contains("panicked at"), "{}", op.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_markers_inline_or_mirrored_do_not_stop_the_operator() {
    let op = Scenario::start("deep", &[]).await;
    op.wsreq("inline", json!({"content": deep()})).await;
    let message = wait_invalid(&op, "inline", 1).await;
    assert!(message.contains("levels"), "{message}");
    assert_eq!(op.http_get("/healthz").0, 200);

    // The same content arriving through Bifrost's database row.
    let db = fresh_database().await;
    common::assert_ok(&cli(&["migrate"], &[("DATABASE_URL", &db)]));
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    write_bifrost_row(&pool, "a==1\n").await;
    op.secret("db", "url", &db).await;
    let spec = json!({"source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 60}}});
    op.wsreq("mirrored", spec).await;
    wait_hash(&op, "mirrored", "a==1\n").await;
    let hostile = format!("a==1\n{}", deep());
    write_bifrost_row(&pool, &hostile).await;
    wait_for("the mirror copies the row", T, || async {
        (op.get("mirrored").await.spec.content == hostile).then_some(())
    })
    .await;
    let message = wait_invalid(&op, "mirrored", 2).await;
    assert!(message.contains("levels"), "{message}");
    assert_eq!(op.http_get("/healthz").0, 200);
    // Still serving: a later valid row is picked up.
    write_bifrost_row(&pool, "a==3\n").await;
    wait_hash(&op, "mirrored", "a==3\n").await;
    pool.close().await;
}
