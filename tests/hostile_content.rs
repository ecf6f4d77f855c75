//! Hostile requirements content everywhere it can arrive: the CLI (`requirements set`, `install`,
//! `warm`, `requirements add` over such a row) and the operator on a real control plane (inline
//! content and a mirrored database row). Content that once panicked (`foo-]`) or overflowed the
//! stack (3,000 nested parentheses) is refused with its line number; nothing exits 101 or aborts.

mod common;

use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::requirements::content_hash;
use common::operator::{Operator, create_wsreq, get_wsreq, namespace, secret, wait_for};
use common::services::{dead_url, fresh_database, write_bifrost_row};
use common::{cli, stderr};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
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

fn valid(obj: &WorkspaceRequirements) -> Option<(String, String)> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .map(|c| (c.status.clone(), c.message.clone()))
}

/// Wait for Valid=False naming line `line`; returns the message.
async fn wait_invalid(client: &Client, ns: &str, name: &str, line: usize) -> String {
    wait_for(&format!("{name} Valid=False"), T, || async {
        let (status, message) = valid(&get_wsreq(client, ns, name).await)?;
        (status == "False" && message.contains(&format!("line {line}"))).then_some(message)
    })
    .await
}

async fn wait_hash(client: &Client, ns: &str, name: &str, content: &str) {
    let hash = content_hash(content);
    wait_for(&format!("{name} status hash"), T, || async {
        let obj = get_wsreq(client, ns, name).await;
        let status = obj.status?;
        (status.content_hash.as_deref() == Some(hash.as_str())
            && valid_status(&status.conditions) == "True")
            .then_some(())
    })
    .await;
}

fn valid_status(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_resource_is_invalid_and_its_neighbour_keeps_working() {
    let (client, ns) = namespace("hostile").await;
    let op = Operator::start(&ns, "a", &[]);
    create_wsreq(&client, &ns, "good", json!({"content": "a==1\n"})).await;
    create_wsreq(&client, &ns, "bad", json!({"content": PANICKED})).await;
    wait_hash(&client, &ns, "good", "a==1\n").await;
    let message = wait_invalid(&client, &ns, "bad", 1).await;
    assert!(message.contains("letter or digit"), "{message}");

    let newer = "a==2\nb\n";
    Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns)
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"content": newer}})),
        )
        .await
        .unwrap();
    wait_hash(&client, &ns, "good", newer).await;
    assert_eq!(op.http_get("/healthz").0, 200);
    assert!(!op.log_text().contains("panicked at"), "{}", op.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_markers_inline_or_mirrored_do_not_stop_the_operator() {
    let (client, ns) = namespace("deep").await;
    let op = Operator::start(&ns, "a", &[]);
    create_wsreq(&client, &ns, "inline", json!({"content": deep()})).await;
    let message = wait_invalid(&client, &ns, "inline", 1).await;
    assert!(message.contains("levels"), "{message}");
    assert_eq!(op.http_get("/healthz").0, 200);

    // The same content arriving through Bifrost's database row.
    let db = fresh_database().await;
    common::assert_ok(&cli(&["migrate"], &[("DATABASE_URL", &db)]));
    let pool = sqlx::PgPool::connect(&db).await.unwrap();
    write_bifrost_row(&pool, "a==1\n").await;
    secret(&client, &ns, "db", "url", &db).await;
    create_wsreq(
        &client,
        &ns,
        "mirrored",
        json!({"source": {"database": {"urlSecretRef": {"name": "db", "key": "url"}, "pollIntervalSeconds": 60}}}),
    )
    .await;
    wait_hash(&client, &ns, "mirrored", "a==1\n").await;
    let hostile = format!("a==1\n{}", deep());
    write_bifrost_row(&pool, &hostile).await;
    wait_for("the mirror copies the row", T, || async {
        (get_wsreq(&client, &ns, "mirrored").await.spec.content == hostile).then_some(())
    })
    .await;
    let message = wait_invalid(&client, &ns, "mirrored", 2).await;
    assert!(message.contains("levels"), "{message}");
    assert_eq!(op.http_get("/healthz").0, 200);
    // Still serving: a later valid row is picked up.
    write_bifrost_row(&pool, "a==3\n").await;
    wait_hash(&client, &ns, "mirrored", "a==3\n").await;
    pool.close().await;
}
