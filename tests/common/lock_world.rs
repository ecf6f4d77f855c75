//! One world for the tests of the lock on the install side (`tests/lock_install.rs`,
//! `tests/lock_verify.rs`): a package index served over HTTP, a database store for
//! `requirements show --lock`, and snapshot folders as the webhook mounts the ConfigMap.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::database::{Database, RowSelector};

use super::index::{Index, path_with_real_uv};
use super::services::{fresh_database, write_bifrost_row};
use super::wheels::{Wheel, import};
use super::{assert_ok, cli, stderr, stdout};

pub const MARKER: &str = ".bifrost-requirements.json";
pub const VERSION: &str = "3.11";
pub const PLATFORM: &str = "x86_64-manylinux_2_28";

/// One test's world: an index, a store, a snapshot folder (payload.json and maybe
/// requirements.lock, as the webhook mounts the ConfigMap) and scratch folders.
pub struct World {
    pub index: Index,
    pub db_url: String,
    pub db: Database,
    pub dir: tempfile::TempDir,
}

impl World {
    pub async fn new(wheels: &[Wheel]) -> World {
        World::on(Index::start(wheels)).await
    }

    /// A world around an index already started (e.g. `Index::serve_dir` of real packages).
    pub async fn on(index: Index) -> World {
        let db_url = fresh_database().await;
        let db = Database::connect(&db_url, RowSelector::default(), Duration::from_secs(10))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        World {
            index,
            db_url,
            db,
            dir: tempfile::Builder::new()
                .prefix("bifrost-lock-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A folder no earlier step used (a fresh cache, target or snapshot).
    pub fn fresh(&self, what: &str) -> PathBuf {
        tempfile::Builder::new()
            .prefix(what)
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep()
    }

    /// `requirements show --lock` of `content` (stored first) for `version`, plus `extra`.
    pub async fn show_lock(&self, content: &str, version: &str, extra: &[&str]) -> Output {
        write_bifrost_row(self.db.pool(), content).await;
        let cache = self.fresh("resolver-cache-");
        let url = self.index.url();
        let mut args = vec!["requirements", "show", "--lock"];
        args.extend(["--python-version", version, "--python-platform", PLATFORM]);
        args.extend(["--index-url", &url]);
        args.extend(["--resolver-cache-dir", cache.to_str().unwrap()]);
        args.extend(extra);
        let path = path_with_real_uv();
        cli(&args, &[("DATABASE_URL", &self.db_url), ("PATH", &path)])
    }

    /// The lock of `content` for `version`, as the CLI prints it.
    pub async fn lock(&self, content: &str, version: &str) -> String {
        let out = self.show_lock(content, version, &[]).await;
        assert_ok(&out);
        stdout(&out)
    }

    /// A snapshot folder holding `content`'s payload.json and, when given, `lock`.
    pub fn snapshot(&self, content: &str, lock: Option<&str>) -> PathBuf {
        let dir = self.fresh("snapshot-");
        std::fs::write(dir.join("payload.json"), Payload::new(content).to_json()).unwrap();
        if let Some(lock) = lock {
            std::fs::write(dir.join("requirements.lock"), lock).unwrap();
        }
        dir.join("payload.json")
    }

    /// `install --json` from the fallback file `payload` alone, with the index, a fresh cache.
    pub fn install(&self, payload: &Path, target: &Path, extra: &[&str]) -> Output {
        let cache = self.fresh("install-cache-");
        let url = self.index.url();
        let mut args = vec!["install", "--json", "--target", target.to_str().unwrap()];
        args.extend(["--fallback-file", payload.to_str().unwrap()]);
        args.extend(["--index-url", &url, "--cache-dir", cache.to_str().unwrap()]);
        args.extend(extra);
        cli(&args, &[])
    }
}

/// A fresh database, migrated by `bifrost-requirements migrate`, whose Bifrost row holds
/// `content`: its URL, for the resolver (`requirements show --lock`).
pub async fn database_holding(content: &str) -> String {
    let db_url = fresh_database().await;
    assert_ok(&cli(&["migrate"], &[("DATABASE_URL", &db_url)]));
    let pool = sqlx::PgPool::connect(&db_url).await.unwrap();
    write_bifrost_row(&pool, content).await;
    db_url
}

pub fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

pub fn marker(target: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(target.join(MARKER)).expect("a marker")).unwrap()
}

pub fn import_version(target: &Path, module: &str) -> String {
    import(target, module).unwrap_or_else(|e| panic!("import {module}: {e}"))
}
