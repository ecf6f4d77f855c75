//! Order of writes: Redis is written only after PostgreSQL (the source of truth) committed.
//! Real PostgreSQL and Redis from the harness.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_requirements::database::Database;
use bifrost_requirements::packages::{self, WarmOutcome};
use bifrost_requirements::policy::Policy;
use bifrost_requirements::store::Store;
use common::checks::assert_exit;
use common::services::{migrated_database, redis_get, redis_set, redis_url};
use common::store_world::{DbWorld, cache, select};
use common::{assert_ok, cli, stderr};
use futures::FutureExt;

type Row = (String, Option<String>, Option<String>, bool, String);

/// Everything about the row a write could change.
async fn row(db: &Database) -> Vec<Row> {
    select(
        db,
        "SELECT path, content, content_hash, is_deleted, updated_at::text FROM workspace_files \
         ORDER BY path",
    )
    .await
}

async fn redis_cmd(args: &[&str]) -> redis::Value {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await.unwrap()
}

#[tokio::test]
async fn a_commit_that_fails_leaves_redis_and_the_row_as_they_were() {
    let w = DbWorld::new().await;
    assert_ok(&w.cli(&["requirements", "add", "requests==2.32.3"]));
    // A constraint checked only at COMMIT: the write itself succeeds, the commit fails — the
    // window in which the old order (SETEX before COMMIT) put unsaved content in Redis.
    w.sql(
        "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.content LIKE '%refused-at-commit%' THEN \
           RAISE EXCEPTION 'refused at commit by the test'; END IF; RETURN NEW; END $$; \
         CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON workspace_files \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();",
    )
    .await;
    // Bytes Bifrost could have written (a different spelling than ours): must survive as they are.
    let cached = r#"{"content":"requests==2.32.3\n","hash":"sha256:5ad1e8d3fbc0bb3ba3bc35ec6bcee2a4d6e2bfa3d9fa0a9f14f8f1dbb7e5fb54"}"#;
    redis_set(&w.redis, &w.key, cached).await;
    let before_row = row(&w.db).await;

    let out = w.cli(&["requirements", "add", "refused-at-commit==1"]);
    assert_exit(
        &out,
        3,
        &["committing the save", "refused at commit by the test"],
    );
    assert_eq!(
        w.cached().await.as_deref(),
        Some(cached),
        "Redis changed although the commit failed"
    );
    assert_eq!(row(&w.db).await, before_row);

    // The connection that failed held the ordering lock: it must not block the next writer.
    let out = w.cli(&["requirements", "add", "flask==3.0.3"]);
    assert_ok(&out);
    let now = w.cached().await.unwrap();
    assert!(now.contains("flask==3.0.3"), "{now}");
}

#[tokio::test]
async fn a_redis_failure_after_commit_keeps_the_row_and_exits_4_saying_so() {
    let w = DbWorld::new().await;
    assert_ok(&w.cli(&["requirements", "add", "requests==2.32.3"]));
    let cached = w.cached().await.unwrap();

    // A Redis user that may connect and PING but not SETEX: Redis fails after the commit.
    let user = format!("u{}", uuid::Uuid::new_v4().simple());
    redis_cmd(&[
        "ACL", "SETUSER", &user, "on", ">pw", "~*", "+@all", "-setex",
    ])
    .await;
    let limited = w
        .redis
        .replacen("redis://", &format!("redis://{user}:pw@"), 1);
    let out = cli(
        &[
            "requirements",
            "add",
            "flask==3.0.3",
            "--redis-attempts",
            "1",
        ],
        &w.env_with(&w.url, &limited),
    );
    redis_cmd(&["ACL", "DELUSER", &user]).await;
    assert_exit(&out, 4, &["is saved in PostgreSQL", "warm"]);
    let err = stderr(&out);
    assert!(!err.contains(":pw@"), "the password leaked: {err}");
    let saved = w.db.read().await.unwrap().unwrap();
    assert_eq!(saved.content, "requests==2.32.3\nflask==3.0.3\n");
    assert_eq!(w.cached().await.unwrap(), cached);

    // `warm` repairs Redis from the saved row.
    assert_ok(&w.cli(&["warm"]));
    assert!(w.cached().await.unwrap().contains("flask==3.0.3"));
}

#[tokio::test]
async fn after_commit_runs_only_once_the_row_is_visible_to_others() {
    let (_url, db) = migrated_database().await;
    let other = db.clone();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    db.update(
        |_| Ok(Some("committed==1\n".to_string())),
        move |content| {
            let (other, s) = (other.clone(), s.clone());
            async move {
                // Another connection of the pool: sees only committed data.
                let visible = other.read().await?.map(|r| r.content);
                *s.lock().unwrap() = Some((content, visible));
                Ok(())
            }
        },
    )
    .await
    .unwrap();
    let (content, visible) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(content, "committed==1\n");
    assert_eq!(visible.as_deref(), Some("committed==1\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_waits_for_a_save_between_its_commit_and_its_redis_write() {
    let (_url, db) = migrated_database().await;
    let key = common::services::fresh_key();
    let cache = cache(&key).await;
    let (committed_tx, committed_rx) = tokio::sync::oneshot::channel::<()>();
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let saver = {
        let (db, cache) = (db.clone(), cache.clone());
        tokio::spawn(async move {
            let mut signals = Some((committed_tx, release_rx));
            db.update(
                |_| Ok(Some("new==2\n".to_string())),
                move |content| {
                    let (committed, release) = signals.take().unwrap();
                    let cache = cache.clone();
                    async move {
                        // Committed, Redis not yet written: the window a warm must not use.
                        let _ = committed.send(());
                        let _ = release.await;
                        cache.put(&content).await.map(drop)
                    }
                },
            )
            .await
        })
    };
    committed_rx.await.unwrap();
    let warm = {
        let (db, cache) = (db.clone(), cache.clone());
        tokio::spawn(
            async move { packages::warm(&Store::from(db), &cache, &Policy::default()).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !warm.is_finished(),
        "warm ran inside a save's commit-to-Redis window"
    );
    assert_eq!(redis_get(&redis_url(), &key).await, None);
    release_tx.send(()).unwrap();
    saver.await.unwrap().unwrap();
    let warmed = warm.await.unwrap().unwrap();
    assert!(matches!(warmed, WarmOutcome::Warmed(ref p) if p.content == "new==2\n"));
    let cached = cache.get().await.unwrap().unwrap();
    assert_eq!(cached.content, "new==2\n");
}

#[tokio::test]
async fn a_panic_while_holding_the_order_lock_does_not_block_the_next_save() {
    let (_url, db) = migrated_database().await;
    let panicked = AssertUnwindSafe(db.read_in_order(|_| async {
        panic!("a library bug while the lock is held");
        #[allow(unreachable_code)]
        Ok(())
    }))
    .catch_unwind()
    .await;
    assert!(panicked.is_err());
    // No session anywhere still holds an advisory lock (a pooled connection would, unseen).
    let mut held = -1i64;
    for _ in 0..100 {
        held = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \
             (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        if held == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(held, 0, "the write-order lock is still held");
    let saved = tokio::time::timeout(
        Duration::from_secs(10),
        db.update(|_| Ok(Some("after==1\n".to_string())), |_| async { Ok(()) }),
    )
    .await
    .expect("the lock was left held by a pooled connection");
    saved.unwrap();
}
