//! Real PostgreSQL and Redis for tests, started from the distribution's binaries on free ports in
//! temporary folders (once per test binary), or taken from `DATABASE_URL` / `REDIS_URL`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::time::Duration;

use super::proc::{
    free_port, spawn_guarded_in, terminate, wait_closed, wait_for_addr, wait_for_port,
};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The folder holding `initdb` and `postgres`: PATH first, then Debian's versioned folders.
fn pg_bin_dir() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty()
            && let Ok(real) = std::fs::canonicalize(&p)
        {
            return real.parent().unwrap().to_path_buf();
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (run scripts/setup.sh)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no initdb under /usr/lib/postgresql (run scripts/setup.sh)")
}

/// A PostgreSQL server of our own, which a test may stop and start again.
pub struct PgServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<Child>>,
}

impl PgServer {
    /// `initdb` a fresh cluster (as the `postgres` user when we are root: initdb refuses root)
    /// and start it on a free port.
    pub fn start() -> PgServer {
        let dir = tempfile::Builder::new()
            .prefix("bifrost-pg-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let root = is_root();
        if root {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(st.success(), "chown of the PostgreSQL folder failed");
        }
        let bin = pg_bin_dir();
        let initdb = bin.join("initdb");
        let mut cmd = as_postgres(root, &initdb);
        let out = cmd
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PgServer {
            port: free_port(),
            dir,
            child: std::sync::Mutex::new(None),
        };
        server.start_again();
        server
    }

    /// Start (again) after [`PgServer::stop`], on the same port and data.
    pub fn start_again(&self) {
        let bin = pg_bin_dir().join("postgres");
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("postgres.log");
        let port = self.port.to_string();
        let sock = self.dir.path().to_str().unwrap().to_string();
        let mut args: Vec<String> = Vec::new();
        let program = if is_root() {
            args.extend(
                [
                    "--reuid=postgres",
                    "--regid=postgres",
                    "--init-groups",
                    "--",
                    bin.to_str().unwrap(),
                ]
                .map(String::from),
            );
            "setpriv".to_string()
        } else {
            bin.to_str().unwrap().to_string()
        };
        args.extend(
            [
                "-D",
                data.to_str().unwrap(),
                "-p",
                &port,
                "-k",
                &sock,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ]
            .map(String::from),
        );
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = spawn_guarded_in(&program, &argv, &[], &log, Some(self.dir.path()));
        wait_for_port(self.port, "PostgreSQL", &log, Duration::from_secs(60));
        // Accepting TCP is not yet accepting logins; wait for a real query.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    "postgres",
                    "-Atc",
                    "select 1",
                ])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL did not accept queries"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        *self.child.lock().unwrap() = Some(child);
    }

    /// Stop the server (fast shutdown: SIGINT to the postmaster, which disconnects clients — SIGTERM
    /// would wait for every client to leave) and wait until the port is closed.
    pub fn stop(&self) {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.lines().next().map(str::to_string))
        {
            let _ = Command::new("kill").args(["-INT", pid.trim()]).status();
        }
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.wait();
        }
        wait_closed(
            "127.0.0.1",
            self.port,
            "PostgreSQL",
            Duration::from_secs(30),
        );
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_postgres(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A Redis server of our own (no persistence), which a test may stop and start again.
pub struct RedisServer {
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless started with [`RedisServer::start_on`]).
    pub host: String,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<Child>>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on("127.0.0.1")
    }

    /// A Redis listening on `host` (the node's bridge address, for pods).
    pub fn start_on(host: &str) -> RedisServer {
        let server = RedisServer {
            port: free_port(),
            host: host.to_string(),
            dir: tempfile::Builder::new()
                .prefix("bifrost-redis-")
                .tempdir()
                .expect("tempdir"),
            child: std::sync::Mutex::new(None),
        };
        server.start_again();
        server
    }

    /// Start (again) after [`RedisServer::stop`], on the same address and port.
    pub fn start_again(&self) {
        let log = self.dir.path().join("redis.log");
        let port = self.port.to_string();
        let child = spawn_guarded_in(
            "redis-server",
            &[
                "--port",
                &port,
                "--bind",
                &self.host,
                "--save",
                "",
                "--appendonly",
                "no",
                // Without a password Redis answers only loopback clients unless told otherwise.
                "--protected-mode",
                "no",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ],
            &[],
            &log,
            Some(self.dir.path()),
        );
        wait_for_addr(
            &self.host,
            self.port,
            "Redis",
            &log,
            Duration::from_secs(30),
        );
        *self.child.lock().unwrap() = Some(child);
    }

    pub fn stop(&self) {
        terminate(&self.child);
        wait_closed(&self.host, self.port, "Redis", Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("redis://{}:{}/0", self.host, self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED_PG: OnceLock<PgServer> = OnceLock::new();
static SHARED_REDIS: OnceLock<RedisServer> = OnceLock::new();

/// The URL in `var` when it is set and not empty, else `ours()`.
fn env_or(var: &str, ours: impl FnOnce() -> String) -> String {
    std::env::var(var)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(ours)
}

/// Admin URL of the shared PostgreSQL (ours, or `DATABASE_URL`).
pub fn postgres_admin_url() -> String {
    env_or("DATABASE_URL", || {
        SHARED_PG.get_or_init(PgServer::start).url("postgres")
    })
}

/// URL of the shared Redis (ours, or `REDIS_URL`).
pub fn redis_url() -> String {
    env_or("REDIS_URL", || {
        SHARED_REDIS.get_or_init(RedisServer::start).url()
    })
}

/// A new, empty database on the shared server; returns its URL.
pub async fn fresh_database() -> String {
    let admin = postgres_admin_url();
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create test database");
    // Same server, other database: replace the path of the admin URL.
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| i + scheme_end)
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..host_end])
}

/// A Redis key no other test uses.
/// A fresh database with Bifrost's table and trigger ([`Database::migrate`]), and a client of it.
pub async fn migrated_database() -> (String, bifrost_requirements::database::Database) {
    use bifrost_requirements::database::{Database, RowSelector};
    let url = fresh_database().await;
    let db = Database::connect(&url, RowSelector::default(), Duration::from_secs(10))
        .await
        .expect("connect to the fresh database");
    db.migrate().await.expect("migrate the fresh database");
    (url, db)
}

pub fn fresh_key() -> String {
    format!("bifrost:test:{}", uuid::Uuid::new_v4().simple())
}

/// A URL on which nothing listens (for "server down" tests).
pub fn dead_url(scheme: &str) -> String {
    match scheme {
        "redis" => format!("redis://127.0.0.1:{}/0", free_port()),
        _ => format!("postgresql://postgres@127.0.0.1:{}/postgres", free_port()),
    }
}

/// Write the requirements row the way Bifrost's Python does (plain SQL upsert, plain hex hash),
/// which fires the NOTIFY trigger like any other writer.
pub async fn write_bifrost_row(pool: &sqlx::PgPool, content: &str) {
    let hash = bifrost_requirements::requirements::content_hash(content);
    sqlx::query(
        "INSERT INTO workspace_files (id, path, entity_type, content, content_hash, size_bytes, \
         content_type, git_status, is_deleted, created_at, updated_at) VALUES (gen_random_uuid(), \
         'requirements.txt', 'requirements', $1, $2, $3, 'text/plain', 'untracked', false, now(), now()) \
         ON CONFLICT (path) DO UPDATE SET content = excluded.content, content_hash = excluded.content_hash, \
         size_bytes = excluded.size_bytes, is_deleted = false, updated_at = now()",
    )
    .bind(content)
    .bind(hash)
    .bind(content.len() as i32)
    .execute(pool)
    .await
    .expect("write the requirements row");
}

/// `GET key` on a Redis URL; `None` when the key is missing or Redis does not answer.
pub async fn redis_get(url: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .ok()?
}

/// `SET key value` on a Redis URL (as another writer, e.g. Bifrost, would).
pub async fn redis_set(url: &str, key: &str, value: &str) {
    let client = redis::Client::open(url).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(&mut conn)
        .await
        .expect("SET");
}
