//! Order of writes: Redis is written only after PostgreSQL (the source of truth) committed.
//! Real PostgreSQL and Redis from the harness.

mod common;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bifrost_requirements::cache::{Cache, CacheConfig};
use bifrost_requirements::database::Database;
use bifrost_requirements::packages::{self, WarmOutcome};
use bifrost_requirements::policy::Policy;
use bifrost_requirements::store::Store;
use common::services::{fresh_key, migrated_database, redis_get, redis_set, redis_url};
use common::{assert_ok, cli, stderr};
use futures::FutureExt;

async fn migrated_db() -> (String, Database) {
    let (url, db) = migrated_database().await;
    (url, db)
}

async fn sql(db: &Database, statement: &str) {
    sqlx::raw_sql(statement).execute(db.pool()).await.unwrap();
}

/// Everything about the row a write could change.
async fn row(db: &Database) -> Vec<(String, Option<String>, Option<String>, bool, String)> {
    sqlx::query_as(
        "SELECT path, content, content_hash, is_deleted, updated_at::text FROM workspace_files \
         ORDER BY path",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

fn env<'a>(db_url: &'a str, redis: &'a str, key: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("DATABASE_URL", db_url),
        ("REDIS_URL", redis),
        ("BIFROST_REQUIREMENTS_REDIS_KEY", key),
    ]
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
    let (url, db) = migrated_db().await;
    let key = fresh_key();
    let redis = redis_url();
    let e = env(&url, &redis, &key);
    assert_ok(&cli(&["requirements", "add", "requests==2.32.3"], &e));
    // A constraint checked only at COMMIT: the write itself succeeds, the commit fails — the
    // window in which the old order (SETEX before COMMIT) put unsaved content in Redis.
    sql(
        &db,
        "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.content LIKE '%refused-at-commit%' THEN \
           RAISE EXCEPTION 'refused at commit by the test'; END IF; RETURN NEW; END $$; \
         CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT OR UPDATE ON workspace_files \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();",
    )
    .await;
    // Bytes Bifrost could have written (a different spelling than ours): must survive as they are.
    let cached = r#"{"content":"requests==2.32.3\n","hash":"sha256:5ad1e8d3fbc0bb3ba3bc35ec6bcee2a4d6e2bfa3d9fa0a9f14f8f1dbb7e5fb54"}"#;
    redis_set(&redis, &key, cached).await;
    let before_row = row(&db).await;

    let out = cli(&["requirements", "add", "refused-at-commit==1"], &e);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("committing the save") && err.contains("refused at commit by the test"),
        "{err}"
    );
    assert_eq!(
        redis_get(&redis, &key).await.as_deref(),
        Some(cached),
        "Redis changed although the commit failed"
    );
    assert_eq!(row(&db).await, before_row);

    // The connection that failed held the ordering lock: it must not block the next writer.
    let out = cli(&["requirements", "add", "flask==3.0.3"], &e);
    assert_ok(&out);
    let now = redis_get(&redis, &key).await.unwrap();
    assert!(now.contains("flask==3.0.3"), "{now}");
}

#[tokio::test]
async fn a_redis_failure_after_commit_keeps_the_row_and_exits_4_saying_so() {
    let (url, db) = migrated_db().await;
    let key = fresh_key();
    let redis = redis_url();
    let e0 = env(&url, &redis, &key);
    assert_ok(&cli(&["requirements", "add", "requests==2.32.3"], &e0));
    let cached = redis_get(&redis_url(), &key).await.unwrap();

    // A Redis user that may connect and PING but not SETEX: Redis fails after the commit.
    let user = format!("u{}", uuid::Uuid::new_v4().simple());
    redis_cmd(&[
        "ACL", "SETUSER", &user, "on", ">pw", "~*", "+@all", "-setex",
    ])
    .await;
    let limited = redis_url().replacen("redis://", &format!("redis://{user}:pw@"), 1);
    let e = env(&url, &limited, &key);
    let out = cli(
        &[
            "requirements",
            "add",
            "flask==3.0.3",
            "--redis-attempts",
            "1",
        ],
        &e,
    );
    redis_cmd(&["ACL", "DELUSER", &user]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("is saved in PostgreSQL") && err.contains("warm"),
        "{err}"
    );
    assert!(!err.contains(":pw@"), "the password leaked: {err}");
    let saved = db.read().await.unwrap().unwrap();
    assert_eq!(saved.content, "requests==2.32.3\nflask==3.0.3\n");
    assert_eq!(redis_get(&redis_url(), &key).await.unwrap(), cached);

    // `warm` repairs Redis from the saved row.
    assert_ok(&cli(&["warm"], &e0));
    assert!(
        redis_get(&redis_url(), &key)
            .await
            .unwrap()
            .contains("flask==3.0.3")
    );
}

#[tokio::test]
async fn after_commit_runs_only_once_the_row_is_visible_to_others() {
    let (_url, db) = migrated_db().await;
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
    let (_url, db) = migrated_db().await;
    let key = fresh_key();
    let cache = Cache::connect(CacheConfig {
        key: key.clone(),
        ..CacheConfig::new(redis_url())
    })
    .await
    .unwrap();
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
    let (_url, db) = migrated_db().await;
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
