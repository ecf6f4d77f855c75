//! A real S3-speaking server for tests: moto's S3 and IAM (`tests/fixtures/s3_server.py`, run by
//! the Python of the venv `scripts/setup.sh` installs moto into), on a free port in a temporary
//! folder, under the watchdog of [`super::proc`]. Credentials are enforced: requests must be
//! signed with a key id the server issued and its secret, and be allowed by the user's policy.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Output};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bifrost_requirements::cache::Payload;
use bifrost_requirements::s3::{Poll, S3Config, S3Store};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use object_store::ObjectStoreExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use serde_json::json;

use super::proc::{free_port, spawn_guarded_in, terminate};
use super::services;

/// The bucket every server has; tests share it and keep apart by key ([`fresh_key`]).
pub const BUCKET: &str = "bifrost-test";

#[derive(Debug, Clone)]
pub struct Key {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// A moto server of our own.
pub struct S3Server {
    pub port: u16,
    /// The address it listens on (127.0.0.1 unless started with [`S3Server::start_on`]).
    pub host: String,
    /// An IAM user allowed `s3:*`.
    pub writer: Key,
    /// An IAM user allowed nothing.
    pub nobody: Key,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

/// The venv's Python: `BIFROST_S3_TEST_PYTHON`, else where `scripts/setup.sh` puts it.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("BIFROST_S3_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    let p = cache.join("bifrost-requirements/moto/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs moto, the S3 test server)",
        p.display()
    );
    p
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_on("127.0.0.1")
    }

    /// A server listening on `host` (the node's bridge address, for an operator in a pod).
    pub fn start_on(host: &str) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("bifrost-s3-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let log = dir.path().join("s3.log");
        let keys = dir.path().join("keys.json");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/s3_server.py");
        let python = python();
        let port_arg = port.to_string();
        let mut child = spawn_guarded_in(
            python.to_str().unwrap(),
            &[script, &port_arg, keys.to_str().unwrap(), BUCKET],
            // No proxy may take 127.0.0.1 traffic; no AWS file may change the set-up client.
            &[
                ("NO_PROXY", "*"),
                ("AWS_CONFIG_FILE", "/dev/null"),
                ("BIFROST_S3_TEST_HOST", host),
            ],
            &log,
            Some(dir.path()),
        );
        // Importing boto3 and moto takes seconds on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !keys.exists() {
            let exited = child.try_wait().ok().flatten().is_some();
            if exited || Instant::now() > deadline {
                panic!(
                    "the S3 test server did not start ({}); log:\n{}",
                    if exited { "it exited" } else { "timed out" },
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let parsed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&keys).unwrap()).unwrap();
        let key = |user: &str| Key {
            access_key_id: parsed[user]["access_key_id"].as_str().unwrap().into(),
            secret_access_key: parsed[user]["secret_access_key"].as_str().unwrap().into(),
        };
        S3Server {
            port,
            host: host.to_string(),
            writer: key("bifrost"),
            nobody: key("nobody"),
            dir,
            child: Mutex::new(Some(child)),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The object `key` in [`BUCKET`], as the writer user, path-style on this server.
    pub fn config(&self, key: &str) -> S3Config {
        let mut c = S3Config::new(BUCKET)
            .with_endpoint(self.endpoint())
            .with_credentials(&self.writer.access_key_id, &self.writer.secret_access_key);
        c.key = key.to_string();
        c
    }

    /// Requests the server logged for `key` so far, as (method, status), oldest first.
    pub fn requests_for(&self, key: &str) -> Vec<(String, u16)> {
        let log = std::fs::read_to_string(self.dir.path().join("s3.log")).unwrap_or_default();
        let target = format!(" /{BUCKET}/{key}");
        log.lines()
            .filter_map(|line| {
                // werkzeug: `127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 304 -`, maybe coloured.
                let start = line.find('"')?;
                let end = line.rfind('"')?;
                let request = &line[start + 1..end];
                let (method, rest) = request.split_once(' ')?;
                let path = rest.rsplit_once(' ')?.0;
                let path = path.split('?').next()?;
                if format!(" {path}") != target {
                    return None;
                }
                let status: String = line[end + 1..]
                    .trim_start_matches(|c: char| !c.is_ascii_digit())
                    .chars()
                    .take_while(|c| c.is_ascii_digit())
                    .collect();
                let method: String = method.chars().filter(|c| c.is_ascii_uppercase()).collect();
                Some((method, status.parse().ok()?))
            })
            .collect()
    }

    pub fn stop(&self) {
        terminate(&self.child);
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: OnceLock<S3Server> = OnceLock::new();

/// One server per test binary (the watchdog stops it and removes its folder when the binary
/// exits).
pub fn shared() -> &'static S3Server {
    SHARED.get_or_init(S3Server::start)
}

/// A key no other test uses.
pub fn fresh_key() -> String {
    format!("tests/{}/requirements.txt", uuid::Uuid::new_v4().simple())
}

/// A plain client for the same object, playing Bifrost (`put_object(Bucket, Key, Body)`: no
/// condition, no metadata) or a person deleting the file.
pub fn raw(config: &S3Config) -> (AmazonS3, Path) {
    super::init_crypto();
    let creds = config
        .credentials
        .as_ref()
        .expect("test configs carry keys");
    let store = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_endpoint(
            config
                .endpoint
                .as_deref()
                .expect("test configs name the server"),
        )
        .with_allow_http(true)
        .with_access_key_id(&creds.access_key_id)
        .with_secret_access_key(&creds.secret_access_key)
        .build()
        .expect("raw S3 client");
    (store, Path::parse(&config.key).expect("test key"))
}

/// Write the object the way Bifrost does; returns the new ETag.
pub async fn bifrost_put(config: &S3Config, bytes: &[u8]) -> String {
    let (store, path) = raw(config);
    store
        .put(&path, bytes.to_vec().into())
        .await
        .expect("plain PutObject")
        .e_tag
        .expect("ETag of the put")
}

/// The object's bytes and ETag as the server holds them, `None` when there is no object.
pub async fn stored(config: &S3Config) -> Option<(Vec<u8>, String)> {
    let (store, path) = raw(config);
    match store.get(&path).await {
        Ok(got) => {
            let etag = got.meta.e_tag.clone().expect("ETag of the object");
            Some((got.bytes().await.expect("the body").to_vec(), etag))
        }
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("GetObject: {e}"),
    }
}

/// One object in the shared bucket and one Redis key, no other test uses.
pub struct World {
    pub s3: S3Config,
    pub redis_key: String,
}

impl World {
    pub fn new() -> World {
        World {
            s3: shared().config(&fresh_key()),
            redis_key: services::fresh_key(),
        }
    }

    /// Bifrost's environment names for the object, plus ours for the key and the store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let creds = self.s3.credentials.clone().unwrap();
        vec![
            ("BIFROST_REQUIREMENTS_STORE", "s3".into()),
            ("BIFROST_S3_ENDPOINT_URL", shared().endpoint()),
            ("BIFROST_S3_BUCKET", BUCKET.into()),
            ("BIFROST_S3_ACCESS_KEY", creds.access_key_id),
            ("BIFROST_S3_SECRET_KEY", creds.secret_access_key),
            ("BIFROST_REQUIREMENTS_S3_KEY", self.s3.key.clone()),
            ("BIFROST_REQUIREMENTS_REDIS_KEY", self.redis_key.clone()),
            ("REDIS_URL", services::redis_url()),
        ]
    }

    /// Run the CLI with [`World::env`], `changes` replacing or (with an empty value) blanking
    /// entries.
    pub fn run(&self, args: &[&str], changes: &[(&'static str, &str)]) -> Output {
        let mut env = self.env();
        for (name, value) in changes {
            env.retain(|(n, _)| n != name);
            env.push((name, value.to_string()));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (*n, v.as_str())).collect();
        super::cli(args, &env)
    }

    pub async fn object(&self) -> Option<(String, String)> {
        match S3Store::new(self.s3.clone())
            .unwrap()
            .read_if_changed(None)
            .await
            .unwrap()
        {
            Poll::Changed(v) => Some((v.content, v.etag)),
            Poll::NotFound => None,
            Poll::NotModified => unreachable!("no condition was sent"),
        }
    }

    pub async fn redis(&self) -> Option<String> {
        services::redis_get(&services::redis_url(), &self.redis_key).await
    }

    /// S3 holds `content` and Redis holds Bifrost's payload of exactly that.
    pub async fn assert_both(&self, content: &str) {
        assert_eq!(self.object().await.map(|o| o.0).as_deref(), Some(content));
        assert_eq!(
            self.redis().await,
            Some(Payload::new(content).to_json()),
            "Redis must hold Bifrost's payload of the object"
        );
    }
}

pub async fn delete(config: &S3Config) {
    let (store, path) = raw(config);
    store.delete(&path).await.expect("DeleteObject");
}

/// Bifrost's Secret `bifrost-secrets` with its own key names.
pub async fn bifrost_secrets(client: &Client, ns: &str, id: &str, secret_key: &str) {
    let s: Secret = serde_json::from_value(json!({
        "metadata": {"name": "bifrost-secrets"},
        "stringData": {"BIFROST_S3_ACCESS_KEY": id, "BIFROST_S3_SECRET_KEY": secret_key},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}
