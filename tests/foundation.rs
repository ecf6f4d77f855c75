//! The foundation against real servers: PostgreSQL store, Redis store, the `migrate`, `warm` and
//! `requirements` commands, and wire compatibility with Bifrost's Python.

mod common;

use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::database::{Database, RowSelector, SaveOutcome};
use bifrost_requirements::requirements::content_hash;
use common::checks::assert_exit;
use common::services::{dead_url, fresh_database, fresh_key, migrated_database, redis_set};
use common::store_world::{DbWorld, cache, select, sql};
use common::{assert_ok, cli, stderr, stdout};

/// The raw value under `key` and its TTL.
async fn raw_redis(key: &str) -> (Option<String>, i64) {
    let client = redis::Client::open(common::services::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    (value, ttl)
}

type RowState = (String, Option<String>, Option<String>, Option<i32>, bool);

async fn row_state(db: &Database) -> Vec<RowState> {
    select(
        db,
        "SELECT path, content, content_hash, size_bytes, is_deleted FROM workspace_files ORDER BY path",
    )
    .await
}

#[tokio::test]
async fn migrate_creates_bifrost_table_and_is_idempotent() {
    let (url, db) = migrated_database().await;
    db.migrate().await.unwrap();
    let out = cli(&["migrate"], &[("DATABASE_URL", &url)]);
    assert_ok(&out);
    let columns: Vec<(String, String)> = select(
        &db,
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = 'workspace_files' ORDER BY ordinal_position",
    )
    .await;
    let names: Vec<&str> = columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "id",
            "path",
            "entity_type",
            "content",
            "content_hash",
            "size_bytes",
            "content_type",
            "git_status",
            "last_git_commit_hash",
            "is_deleted",
            "created_at",
            "updated_at"
        ]
    );
}

#[tokio::test]
async fn migrate_never_alters_a_table_bifrost_created() {
    let url = fresh_database().await;
    let db = Database::connect(&url, RowSelector::default(), Duration::from_secs(10))
        .await
        .unwrap();
    // Bifrost's own shape, with its own enum type name and an extra column we do not know.
    sql(
        &db,
        "CREATE TYPE git_status_enum AS ENUM ('untracked', 'synced', 'modified');
         CREATE TABLE workspace_files (
            id uuid PRIMARY KEY, path varchar(1000) UNIQUE NOT NULL, entity_type varchar NOT NULL,
            content text, content_hash varchar, size_bytes integer,
            content_type varchar(100) DEFAULT 'text/plain', git_status git_status_enum NOT NULL,
            last_git_commit_hash varchar(40), is_deleted boolean DEFAULT false NOT NULL,
            created_at timestamp NOT NULL, updated_at timestamp NOT NULL, bifrost_only integer);",
    )
    .await;
    db.migrate().await.unwrap();
    let extra: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_name = 'workspace_files' AND column_name = 'bifrost_only'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(extra, 1, "migration altered Bifrost's table");
    // And we can write a row into Bifrost's table (its enum type, not ours).
    let out = cli(
        &["requirements", "add", "requests==2.32.3"],
        &[("DATABASE_URL", &url)],
    );
    assert_ok(&out);
    let status: String = sqlx::query_scalar(
        "SELECT git_status::text FROM workspace_files WHERE path = 'requirements.txt'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(status, "untracked");
}

#[tokio::test]
async fn database_create_update_revive_and_read_bifrost_rows() {
    let (_url, db) = migrated_database().await;
    assert!(db.read().await.unwrap().is_none());

    let set = |c: &'static str| move |_: &str| Ok(Some(c.to_string()));
    let noop = |_: String| async { Ok(()) };
    let (o, _) = db.update(set("a==1\n"), noop).await.unwrap();
    assert_eq!(o, SaveOutcome::Created);
    let (o, _) = db.update(set("a==2\n"), noop).await.unwrap();
    assert_eq!(o, SaveOutcome::Updated);
    let rows = row_state(&db).await;
    assert_eq!(
        rows,
        vec![(
            "requirements.txt".into(),
            Some("a==2\n".into()),
            Some(content_hash("a==2\n")),
            Some(5),
            false
        )]
    );
    let (ct, gs, et): (String, String, String) =
        sqlx::query_as("SELECT content_type, git_status::text, entity_type FROM workspace_files")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(
        (ct.as_str(), gs.as_str(), et.as_str()),
        ("text/plain", "untracked", "requirements")
    );

    // Soft-deleted: reads see nothing; a save revives the row, without the deleted content.
    sql(&db, "UPDATE workspace_files SET is_deleted = true").await;
    assert!(db.read().await.unwrap().is_none());
    let (o, content) = db
        .update(|cur: &str| Ok(Some(format!("{cur}b==1\n"))), noop)
        .await
        .unwrap();
    assert_eq!(o, SaveOutcome::Revived);
    assert_eq!(content, "b==1\n");
    assert_eq!(db.read().await.unwrap().unwrap().content, "b==1\n");

    // A row written by Bifrost with plain SQL (its hash spelled with a prefix) is read and
    // compare-and-swapped correctly.
    sql(&db, "DELETE FROM workspace_files").await;
    let bifrost = "flask==3.0.3\nrequests==2.32.3\n";
    sqlx::query(
        "INSERT INTO workspace_files (id, path, entity_type, content, content_hash, size_bytes, \
         content_type, git_status, is_deleted, created_at, updated_at) VALUES \
         (gen_random_uuid(), 'requirements.txt', 'requirements', $1, $2, $3, 'text/plain', \
         'untracked', false, now(), now())",
    )
    .bind(bifrost)
    .bind(format!("sha256:{}", content_hash(bifrost)))
    .bind(bifrost.len() as i32)
    .execute(db.pool())
    .await
    .unwrap();
    let row = db.read().await.unwrap().unwrap();
    assert_eq!(row.content, bifrost);
    let (o, content) = db
        .update(|cur: &str| Ok(Some(format!("{cur}numpy\n"))), noop)
        .await
        .unwrap();
    assert_eq!(o, SaveOutcome::Updated);
    assert_eq!(content, format!("{bifrost}numpy\n"));
}

#[tokio::test]
async fn malformed_rows_give_clear_errors_and_are_not_overwritten() {
    let (url, db) = migrated_database().await;
    sql(
        &db,
        "INSERT INTO workspace_files (id, path, entity_type, content, content_hash, git_status, \
         created_at, updated_at) VALUES (gen_random_uuid(), 'requirements.txt', 'requirements', \
         NULL, NULL, 'untracked', now(), now())",
    )
    .await;
    let err = db.read().await.unwrap_err().to_string();
    assert!(
        err.contains("content is NULL") && err.contains("requirements.txt"),
        "{err}"
    );
    let out = cli(&["requirements", "add", "x"], &[("DATABASE_URL", &url)]);
    assert_exit(&out, 3, &["content is NULL"]);

    // A file of another kind at the same path is never clobbered.
    sql(
        &db,
        "UPDATE workspace_files SET entity_type = 'workflow', content = 'print(1)'",
    )
    .await;
    let before = row_state(&db).await;
    let out = cli(&["requirements", "add", "x"], &[("DATABASE_URL", &url)]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("entity_type is \"workflow\""),
        "{}",
        stderr(&out)
    );
    assert_eq!(row_state(&db).await, before);
}

#[tokio::test]
async fn redis_payload_has_bifrost_shape_and_ttl() {
    let key = fresh_key();
    let cache = cache(&key).await;
    let content = "requests==2.32.3\nflask==3.0.3 # ☃\n";
    let written = cache.put(content).await.unwrap();
    let (raw, ttl) = raw_redis(&key).await;
    let raw = raw.unwrap();
    let expected = format!(
        "{{\"content\": \"requests==2.32.3\\nflask==3.0.3 # \\u2603\\n\", \"hash\": \"{}\"}}",
        content_hash(content)
    );
    assert_eq!(raw, expected);
    assert!((86_390..=86_400).contains(&ttl), "TTL {ttl}");
    assert_eq!(cache.get().await.unwrap().unwrap(), written);
    assert_eq!(cache.ttl().await.unwrap().unwrap() / 10, 8_640);
}

#[tokio::test]
async fn corrupted_redis_values_give_clear_errors() {
    let key = fresh_key();
    let cache = cache(&key).await;
    assert!(cache.get().await.unwrap().is_none());
    for (value, why) in [
        ("{not json", "not the JSON object"),
        (
            r#"{"content": "a==1\n", "hash": "deadbeef"}"#,
            "hash mismatch",
        ),
        (r#"{"content": "a==1\n"}"#, "\"hash\" field"),
        (r#""just a string""#, "not the JSON object"),
    ] {
        redis_set(&common::services::redis_url(), &key, value).await;
        let err = cache.get().await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(why) && msg.contains(&key), "{value}: {msg}");
        assert_eq!(err.exit_code(), 4);
        // Reading never repairs or deletes what is there.
        assert_eq!(raw_redis(&key).await.0.as_deref(), Some(value));
    }
}

#[tokio::test]
async fn warm_copies_the_row_and_says_when_there_is_none() {
    let w = DbWorld::new().await;
    let out = w.cli(&["warm"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("nothing to warm"), "{}", stderr(&out));
    assert_eq!(raw_redis(&w.key).await.0, None);

    w.sql(
        "INSERT INTO workspace_files (id, path, entity_type, content, content_hash, git_status, \
         created_at, updated_at) VALUES (gen_random_uuid(), 'requirements.txt', 'requirements', \
         'requests==2.32.3\n', 'x', 'untracked', now(), now())",
    )
    .await;
    let out = w.cli(&["warm"]);
    assert_ok(&out);
    assert!(stderr(&out).contains("warmed"), "{}", stderr(&out));
    let payload = Payload::from_json(&w.key, &raw_redis(&w.key).await.0.unwrap()).unwrap();
    assert_eq!(payload, Payload::new("requests==2.32.3\n"));
}

#[tokio::test]
async fn warm_with_a_server_down_fails_naming_it_and_writes_nothing() {
    let w = DbWorld::new().await;
    let out = cli(
        &["requirements", "add", "requests==2.32.3"],
        &[("DATABASE_URL", w.url.as_str())],
    );
    assert_ok(&out);

    let dead_redis = dead_url("redis");
    let out = cli(
        &["warm", "--redis-timeout", "300ms", "--redis-attempts", "2"],
        &w.env_with(&w.url, &dead_redis),
    );
    assert_exit(&out, 4, &["Redis", &dead_redis]);

    let dead_db = dead_url("postgres");
    let out = cli(
        &["warm", "--database-timeout", "2s"],
        &w.env_with(&dead_db, &w.redis),
    );
    assert_exit(&out, 3, &["PostgreSQL", &dead_db]);
    assert_eq!(raw_redis(&w.key).await.0, None, "something was written");
}

#[tokio::test]
async fn requirements_add_remove_set_show() {
    let w = DbWorld::new().await;
    assert_ok(&w.cli(&["requirements", "add", "Flask==2.3", "requests"]));
    let out = w.cli(&["requirements", "add", "flask==3.0"]);
    assert_ok(&out);
    assert!(
        stderr(&out).contains("replaced Flask==2.3 with flask==3.0"),
        "{}",
        stderr(&out)
    );
    let out = w.cli(&["requirements", "show"]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "flask==3.0\nrequests\n");
    assert_ok(&w.cli(&["requirements", "remove", "REQUESTS"]));
    assert_eq!(w.db.read().await.unwrap().unwrap().content, "flask==3.0\n");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "# pinned\nnumpy==2.0.1\r\n").unwrap();
    assert_ok(&w.cli(&[
        "requirements",
        "set",
        "--file",
        file.path().to_str().unwrap(),
    ]));
    let row = w.db.read().await.unwrap().unwrap();
    assert_eq!(row.content, "# pinned\nnumpy==2.0.1\r\n");
    let cached = w.cache().await.get().await.unwrap().unwrap();
    assert_eq!(cached.content, row.content);
    assert_eq!(Some(cached.hash), row.content_hash);

    let out = w.cli(&["requirements", "remove", "pandas"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("\"pandas\" was not found"),
        "{}",
        stderr(&out)
    );
}

/// Commands a user may get wrong, each with what its refusal must say.
fn invalid_inputs(bad_file: &str) -> Vec<(Vec<&str>, &'static str)> {
    let add = |args: &[&'static str]| [&["requirements", "add"][..], args].concat();
    vec![
        (
            add(&["pkg @ https://evil.example/pkg.tar.gz"]),
            "direct URL",
        ),
        (add(&["-e", "."]), "unexpected argument"),
        (add(&["--", "-e ."]), "expected a package requirement"),
        (
            add(&["flask\n-i https://evil.example"]),
            "control character",
        ),
        (add(&["flask[="]), "not a valid requirement"),
        (add(&["./local/pkg"]), "URL or path"),
        (
            vec!["requirements", "remove", "not a name!"],
            "invalid requirement",
        ),
        (vec!["requirements", "set", "--file", bad_file], "line 2"),
        (
            vec!["requirements", "set", "--file", "/nonexistent/req.txt"],
            "/nonexistent/req.txt",
        ),
        (add(&["x", "--ttl-seconds", "0"]), "--ttl-seconds"),
        (add(&["x", "--redis-timeout", "soon"]), "not a duration"),
    ]
}

#[tokio::test]
async fn invalid_input_changes_nothing_anywhere() {
    let w = DbWorld::new().await;
    assert_ok(&w.cli(&["requirements", "add", "requests==2.32.3"]));
    let before_row = row_state(&w.db).await;
    let before_cache = raw_redis(&w.key).await.0;

    let bad_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad_file.path(),
        "flask\n--extra-index-url https://evil.example/simple\n",
    )
    .unwrap();
    for (args, why) in invalid_inputs(bad_file.path().to_str().unwrap()) {
        let out = w.cli(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
        assert_eq!(
            row_state(&w.db).await,
            before_row,
            "{args:?} changed the row"
        );
        assert_eq!(
            raw_redis(&w.key).await.0,
            before_cache,
            "{args:?} changed Redis"
        );
    }

    // Redis unreachable: the database is not written either.
    let dead = dead_url("redis");
    let out = cli(
        &[
            "requirements",
            "add",
            "numpy",
            "--redis-timeout",
            "300ms",
            "--redis-attempts",
            "1",
        ],
        &w.env_with(&w.url, &dead),
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(row_state(&w.db).await, before_row);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_lose_nothing_and_redis_matches_the_row() {
    let w = DbWorld::new().await;
    // Twenty separate processes, started together.
    let children: Vec<_> = (0..20)
        .map(|i| {
            std::process::Command::new(common::bin())
                .args(["requirements", "add", &format!("package-{i:02}==1.{i}")])
                .envs(w.env())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_ok(&out);
    }
    let row = w.db.read().await.unwrap().unwrap();
    for i in 0..20 {
        assert!(
            row.content.contains(&format!("package-{i:02}==1.{i}\n")),
            "package-{i:02} lost:\n{}",
            row.content
        );
    }
    assert_eq!(row.content.lines().count(), 20);
    let cached = w.cache().await.get().await.unwrap().unwrap();
    assert_eq!(
        cached.content, row.content,
        "Redis differs from the database row"
    );
    assert_eq!(Some(cached.hash), row.content_hash);
}

/// Python (with Bifrost's Redis client) running `script` with the world's Redis URL and key as
/// its arguments.
fn python(script: &str, w: &DbWorld) -> std::process::Output {
    std::process::Command::new("python3")
        .args(["-c", script, &w.redis, &w.key])
        .output()
        .unwrap()
}

/// Bifrost's Python side reads what we wrote and writes what we read.
#[tokio::test]
async fn python_redis_client_agrees_with_us() {
    let w = DbWorld::new().await;
    assert_ok(&w.cli(&["requirements", "add", "requests==2.32.3", "Flask[async]>=3"]));
    assert_ok(&w.cli(&["warm"]));

    let read = r#"
import hashlib, json, sys, redis
r = redis.Redis.from_url(sys.argv[1])
raw = r.get(sys.argv[2])
v = json.loads(raw)
assert set(v) == {"content", "hash"}, v
assert v["hash"] == hashlib.sha256(v["content"].encode()).hexdigest(), v
assert raw.decode() == json.dumps({"content": v["content"], "hash": v["hash"]}), raw
assert 86000 < r.ttl(sys.argv[2]) <= 86400
print(v["content"], end="")
"#;
    let out = python(read, &w);
    assert_ok(&out);
    assert_eq!(stdout(&out), "requests==2.32.3\nFlask[async]>=3\n");

    // Bifrost's writer (its code, abridged): json.dumps + SETEX, hash with a non-ASCII content.
    let write = r#"
import hashlib, json, sys, redis
content = "numpy==2.0.1\n# café ☃\n"
payload = json.dumps({"content": content, "hash": hashlib.sha256(content.encode()).hexdigest()})
redis.Redis.from_url(sys.argv[1]).setex(sys.argv[2], 86400, payload)
"#;
    let out = python(write, &w);
    assert_ok(&out);
    let got = w.cache().await.get().await.unwrap().unwrap();
    assert_eq!(got, Payload::new("numpy==2.0.1\n# café ☃\n"));
}
