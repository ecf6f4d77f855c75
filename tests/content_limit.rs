//! One size limit at every door (`bifrost_requirements::limit`): the CLI on the database row and
//! on the S3 object (`requirements set|add|remove`, `warm`) refuses content over 256 KiB with the
//! same words (the size and the limit), exit 2, and writes nothing: not the source, not Redis.
//! Real PostgreSQL, real Redis, moto S3. (The mirrors' refusal is in `tests/s3_mirror.rs`
//! and `tests/controller.rs`, on a real control plane.)

mod common;

use std::path::Path;
use std::process::Output;

use bifrost_requirements::database::Database;
use bifrost_requirements::limit::{MAX_CONTENT_BYTES, exceeded};
use bifrost_requirements::s3::{Poll, S3Store};
use common::s3::{BUCKET, bifrost_put, fresh_key as fresh_s3_key, shared};
use common::services::{fresh_key, redis_get, redis_set, redis_url, write_bifrost_row};
use common::store_world::DbWorld;
use common::{assert_ok, cli, stderr};
use proptest::prelude::*;

/// Valid requirements of exactly `len` bytes (`len` ≥ 16): pinned lines, then a comment pad.
fn content_of(len: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.len() + 40 < len {
        s.push_str(&format!("package-{i:08}==1.0\n"));
        i += 1;
    }
    let pad = len - s.len() - 3;
    s.push_str("# ");
    s.push_str(&"x".repeat(pad));
    s.push('\n');
    assert_eq!(s.len(), len);
    s
}

/// Exit 2, naming the size and the limit in the shared words.
#[track_caller]
fn assert_too_large(out: &std::process::Output, len: usize, what: &str) {
    assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(out));
    assert!(
        stderr(out).contains(&exceeded(len)),
        "{what}: {}",
        stderr(out)
    );
}

/// `add` to a stored file already over the limit: exit 2, naming the stored file and its size,
/// and what mends it.
#[track_caller]
fn assert_over_before_add(out: &std::process::Output, location: &str, len: usize) {
    assert_too_large(out, len, "add");
    let text = stderr(out);
    for word in [
        location,
        "it was over the limit before this `add`",
        &format!("({} bytes must go)", len - MAX_CONTENT_BYTES),
        "`requirements set FILE`",
    ] {
        assert!(text.contains(word), "add should say {word:?}: {text}");
    }
}

async fn row(db: &Database) -> Option<(String, String)> {
    sqlx::query_as(
        "SELECT content, content_hash FROM workspace_files WHERE path = 'requirements.txt'",
    )
    .fetch_optional(db.pool())
    .await
    .unwrap()
}

/// The row's content alone.
async fn content(db: &Database) -> Option<String> {
    row(db).await.map(|r| r.0)
}

/// `requirements set --file` with `content`, written to `dir/name` first.
fn set(dir: &Path, name: &str, content: &str, env: &[(&str, &str)]) -> Output {
    let file = dir.join(name);
    std::fs::write(&file, content).unwrap();
    cli(
        &["requirements", "set", "--file", file.to_str().unwrap()],
        env,
    )
}

#[tokio::test]
async fn the_database_store_refuses_content_over_the_limit_at_every_command() {
    let w = DbWorld::new().await;
    let dir = tempfile::tempdir().unwrap();
    assert_ok(&w.cli(&["requirements", "add", "requests==2.32.3"]));
    oversized_sets_write_nothing(&w, dir.path()).await;
    let cached = an_add_may_not_cross_the_limit(&w, dir.path()).await;
    an_oversized_row_stays_out_of_redis_until_set(&w, dir.path(), cached).await;
    removing_the_runaway_line_brings_the_row_under(&w).await;
}

/// The 5.2 MB file, and one byte over: refused before anything is written.
async fn oversized_sets_write_nothing(w: &DbWorld, dir: &Path) {
    let before = row(&w.db).await;
    let cached = w.cached().await;
    assert!(cached.is_some());
    for len in [5_200_000, MAX_CONTENT_BYTES + 1] {
        let out = set(dir, &format!("{len}.txt"), &content_of(len), &w.env());
        assert_too_large(&out, len, "set");
        assert_eq!(row(&w.db).await, before, "set {len} changed the row");
        assert_eq!(w.cached().await, cached, "set {len} wrote Redis");
    }
}

/// At the limit: accepted; an add to it crosses the limit, and the result is refused. Returns
/// what Redis holds at the limit.
async fn an_add_may_not_cross_the_limit(w: &DbWorld, dir: &Path) -> Option<String> {
    let at = content_of(MAX_CONTENT_BYTES);
    assert_ok(&set(dir, "at.txt", &at, &w.env()));
    let at_limit = row(&w.db).await;
    let cached = w.cached().await;

    let out = w.cli(&["requirements", "add", "flask==3.0.3"]);
    let grown = at.len() + "flask==3.0.3\n".len();
    assert_too_large(&out, grown, "add");
    assert_eq!(row(&w.db).await, at_limit);
    cached
}

/// Bifrost wrote an oversized row itself: warm keeps it out of Redis, remove cannot shrink it
/// below the limit (refused), add refuses it naming the row, set replaces it.
async fn an_oversized_row_stays_out_of_redis_until_set(
    w: &DbWorld,
    dir: &Path,
    cached: Option<String>,
) {
    let huge = format!("{}flask==3.0.3\n", content_of(MAX_CONTENT_BYTES + 100));
    write_bifrost_row(w.db.pool(), &huge).await;
    redis_set(&w.redis, &w.key, "untouched").await;
    let out = w.cli(&["warm"]);
    assert_too_large(&out, huge.len(), "warm");
    assert!(
        stderr(&out).contains("workspace_files row"),
        "{}",
        stderr(&out)
    );
    assert_eq!(w.cached().await.as_deref(), Some("untouched"));
    let out = w.cli(&["requirements", "remove", "flask"]);
    assert_too_large(&out, huge.len() - "flask==3.0.3\n".len(), "remove");
    assert!(
        stderr(&out).contains("more bytes must go"),
        "{}",
        stderr(&out)
    );
    let out = w.cli(&["requirements", "add", "numpy"]);
    assert_over_before_add(&out, "workspace_files row", huge.len());
    assert_eq!(content(&w.db).await, Some(huge));
    assert_eq!(w.cached().await.as_deref(), Some("untouched"));
    assert_ok(&set(dir, "small.txt", "numpy==2.0.1\n", &w.env()));
    assert_eq!(content(&w.db).await.as_deref(), Some("numpy==2.0.1\n"));
    assert_ne!(w.cached().await, cached);
}

/// As on S3: a remove that takes the runaway line out brings the row under the limit.
async fn removing_the_runaway_line_brings_the_row_under(w: &DbWorld) {
    let runaway = format!(
        "flask==3.0.3\nblob==1.0  # {}\n",
        "x".repeat(MAX_CONTENT_BYTES)
    );
    write_bifrost_row(w.db.pool(), &runaway).await;
    assert_ok(&w.cli(&["requirements", "remove", "blob"]));
    assert_eq!(content(&w.db).await.as_deref(), Some("flask==3.0.3\n"));
    assert_eq!(
        w.cached().await,
        Some(bifrost_requirements::cache::Payload::new("flask==3.0.3\n").to_json())
    );
}

#[tokio::test]
async fn the_s3_store_refuses_content_over_the_limit_at_every_command() {
    let s3 = shared().config(&fresh_s3_key());
    let creds = s3.credentials.clone().unwrap();
    let key = fresh_key();
    let redis = redis_url();
    let endpoint = shared().endpoint();
    let env = [
        ("BIFROST_REQUIREMENTS_STORE", "s3"),
        ("BIFROST_S3_ENDPOINT_URL", endpoint.as_str()),
        ("BIFROST_S3_BUCKET", BUCKET),
        ("BIFROST_S3_ACCESS_KEY", creds.access_key_id.as_str()),
        ("BIFROST_S3_SECRET_KEY", creds.secret_access_key.as_str()),
        ("BIFROST_REQUIREMENTS_S3_KEY", s3.key.as_str()),
        ("BIFROST_REQUIREMENTS_REDIS_KEY", key.as_str()),
        ("REDIS_URL", redis.as_str()),
    ];
    let object = || async {
        match S3Store::new(s3.clone())
            .unwrap()
            .read_if_changed(None)
            .await
            .unwrap()
        {
            Poll::Changed(v) => Some((v.content, v.etag)),
            _ => None,
        }
    };
    assert_ok(&cli(&["requirements", "add", "requests==2.32.3"], &env));
    let before = object().await;
    let cached = redis_get(&redis, &key).await;

    let dir = tempfile::tempdir().unwrap();
    let out = set(
        dir.path(),
        "big.txt",
        &content_of(MAX_CONTENT_BYTES + 1),
        &env,
    );
    assert_too_large(&out, MAX_CONTENT_BYTES + 1, "set");
    assert_eq!(object().await, before);
    assert_eq!(redis_get(&redis, &key).await, cached);

    // Bifrost's plain PutObject of 300 KiB (under the 1 MiB read cap): readable, but warm and
    // add refuse it (naming the object, its size and what mends it), set replaces it.
    let huge = format!("{}flask==3.0.3\n", content_of(300 * 1024));
    bifrost_put(&s3, huge.as_bytes()).await;
    redis_set(&redis, &key, "untouched").await;
    let out = cli(&["warm"], &env);
    assert_too_large(&out, huge.len(), "warm");
    assert!(stderr(&out).contains(&s3.location()), "{}", stderr(&out));
    let out = cli(&["requirements", "add", "numpy"], &env);
    assert_over_before_add(&out, &s3.location(), huge.len());
    assert_eq!(object().await.map(|o| o.0), Some(huge));
    assert_eq!(redis_get(&redis, &key).await.as_deref(), Some("untouched"));
    assert_ok(&set(dir.path(), "small.txt", "numpy==2.0.1\n", &env));
    assert_eq!(
        object().await.map(|o| o.0).as_deref(),
        Some("numpy==2.0.1\n")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The CLI's up-front check (before connecting anywhere) draws the line at the limit in
    /// bytes, with the shared words; the builder the doors are tested with makes what it says.
    #[test]
    fn set_is_refused_up_front_exactly_over_the_limit(len in 64usize..(MAX_CONTENT_BYTES * 2)) {
        use bifrost_requirements::packages::{Change, validate};
        let c = content_of(len);
        prop_assert_eq!(c.len(), len);
        let checked = validate(&Change::Set(c), &bifrost_requirements::policy::Policy::default());
        match checked {
            Ok(()) => prop_assert!(len <= MAX_CONTENT_BYTES),
            Err(e) => {
                prop_assert!(len > MAX_CONTENT_BYTES, "{}", e);
                prop_assert_eq!(e.reason(), "TooLarge");
                prop_assert!(e.to_string().contains(&exceeded(len)), "{}", e);
            }
        }
    }
}
