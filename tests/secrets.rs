//! Secrets are never printed: known passwords planted in every accepted connection-string form
//! (Redis URLs, PostgreSQL URLs with userinfo or `?password=`, libpq key-value strings,
//! `redis+unix://`) must appear nowhere the operator or the CLI writes — the operator's log, the
//! resources' conditions, the namespace's Events, `/metrics`, the CLI's stdout and stderr — while
//! the messages still name the host, so they stay useful.
//!
//! Real control plane, real PostgreSQL (for the forms that need a live database to reach Redis),
//! dead ports for the servers the secrets point at.

mod common;

use std::time::Duration;

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::redact::percent_encode;
use common::operator::{Operator, create_wsreq, namespace, secret, wait_for};
use common::proc::free_port;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// A password of hostile characters around three random runs: a message leaks it if any run
/// (or the whole, raw or encoded) appears.
struct Planted {
    password: String,
    runs: Vec<String>,
}

impl Planted {
    fn new(shape: &str) -> Planted {
        let runs: Vec<String> = (0..3)
            .map(|_| uuid::Uuid::new_v4().simple().to_string()[..10].to_string())
            .collect();
        // `shape` holds `{}` three times: the runs go there.
        let mut password = String::new();
        let mut parts = shape.split("{}");
        password.push_str(parts.next().unwrap());
        for (run, rest) in runs.iter().zip(parts) {
            password.push_str(run);
            password.push_str(rest);
        }
        Planted { password, runs }
    }

    /// Every place in `text` where the secret (or a part of it) shows.
    fn leaks(&self, text: &str) -> Vec<String> {
        let mut found: Vec<String> = self
            .runs
            .iter()
            .filter(|r| text.contains(r.as_str()))
            .cloned()
            .collect();
        if text.contains(&self.password) || text.contains(&percent_encode(&self.password)) {
            found.push(self.password.clone());
        }
        found
    }
}

/// One planted connection string: the Secret key's value, and what a useful message names.
struct Form {
    name: &'static str,
    value: String,
    planted: Planted,
    /// The host (and port, or socket path) a message must still name.
    names: Vec<String>,
}

fn redis_forms(port: u16) -> Vec<Form> {
    let mut forms = Vec::new();
    let p = Planted::new("Sup3r#{}/{}?{}@x");
    forms.push(Form {
        name: "redis://:pass-with-#-/-?-@",
        value: format!("redis://:{}@127.0.0.1:{port}/0", p.password),
        planted: p,
        names: vec!["127.0.0.1".into(), port.to_string()],
    });
    let p = Planted::new("{}:{}@{} #");
    forms.push(Form {
        name: "redis://user:percent-encoded",
        value: format!(
            "redis://bifrost:{}@127.0.0.1:{port}/0",
            percent_encode(&p.password)
        ),
        planted: p,
        names: vec!["127.0.0.1".into(), port.to_string()],
    });
    let p = Planted::new("{}&{}={}");
    let sock = format!("/tmp/bifrost-no-such-{port}.sock");
    forms.push(Form {
        name: "redis+unix://?pass=",
        value: format!(
            "redis+unix://{sock}?db=0&pass={}",
            percent_encode(&p.password)
        ),
        planted: p,
        names: vec![sock],
    });
    forms
}

fn database_forms(port: u16) -> Vec<Form> {
    let mut forms = Vec::new();
    let p = Planted::new("{}#{}&{}");
    forms.push(Form {
        name: "postgresql://?password=",
        value: format!(
            "postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable&password={}",
            p.password.replace('&', "%26")
        ),
        planted: p,
        names: vec!["127.0.0.1".into(), port.to_string()],
    });
    let p = Planted::new("{}/{}?{}@");
    forms.push(Form {
        name: "postgresql+asyncpg://user:pass-with-/-?-@",
        value: format!(
            "postgresql+asyncpg://bifrost:{}@127.0.0.1:{port}/bifrost",
            p.password
        ),
        planted: p,
        names: vec!["127.0.0.1".into(), port.to_string()],
    });
    let p = Planted::new("{} {}'{}");
    forms.push(Form {
        name: "libpq key-value, quoted",
        value: format!(
            "host=127.0.0.1 port={port} user=bifrost password='{}' dbname=bifrost",
            p.password.replace('\'', "\\'")
        ),
        planted: p,
        names: vec!["127.0.0.1".into(), port.to_string()],
    });
    forms
}

/// The Secret as the operator reads it: proof that the secret really was there.
async fn stored(client: &Client, ns: &str, name: &str) -> String {
    let s = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    String::from_utf8(s.data.unwrap()["url"].0.clone()).unwrap()
}

fn conditions(obj: &WorkspaceRequirements) -> String {
    obj.status
        .as_ref()
        .map(|s| serde_json::to_string(s).unwrap())
        .unwrap_or_default()
}

fn condition_message(obj: &WorkspaceRequirements, type_: &str, status: &str) -> Option<String> {
    obj.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.message.clone())
}

/// Every Event of the namespace (both APIs), as text.
async fn events(client: &Client, ns: &str) -> String {
    let lp = ListParams::default();
    let new = Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    let old = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .unwrap();
    format!(
        "{}\n{}",
        serde_json::to_string(&new.items).unwrap(),
        serde_json::to_string(&old.items).unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_never_prints_planted_secrets() {
    let (client, ns) = namespace("secrets").await;
    let redis = redis_forms(free_port());
    let dbs = database_forms(free_port());
    for (i, f) in redis.iter().enumerate() {
        secret(&client, &ns, &format!("redis-{i}"), "url", &f.value).await;
        create_wsreq(
            &client,
            &ns,
            &format!("redis-{i}"),
            json!({
                "content": "requests==2.32.3\n",
                "cache": {"redis": {"urlSecretRef": {"name": format!("redis-{i}"), "key": "url"}}},
            }),
        )
        .await;
    }
    for (i, f) in dbs.iter().enumerate() {
        secret(&client, &ns, &format!("db-{i}"), "url", &f.value).await;
        create_wsreq(
            &client,
            &ns,
            &format!("db-{i}"),
            json!({"source": {"database": {
                "urlSecretRef": {"name": format!("db-{i}"), "key": "url"},
                "pollIntervalSeconds": 1,
            }}}),
        )
        .await;
    }
    // The assertions below can fail: each secret is in the Secret the operator reads, and the
    // leak check finds it there.
    for (i, f) in redis.iter().enumerate() {
        let v = stored(&client, &ns, &format!("redis-{i}")).await;
        assert!(!f.planted.leaks(&v).is_empty(), "{}: {v}", f.name);
    }
    for (i, f) in dbs.iter().enumerate() {
        let v = stored(&client, &ns, &format!("db-{i}")).await;
        assert!(!f.planted.leaks(&v).is_empty(), "{}: {v}", f.name);
    }

    let op = Operator::start(&ns, "secrets", &[]);
    let api = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns);
    for (i, f) in redis.iter().enumerate() {
        let name = format!("redis-{i}");
        let message = wait_for(&format!("{name} CacheWarmed=False"), T, || async {
            condition_message(&api.get(&name).await.ok()?, "CacheWarmed", "False")
        })
        .await;
        for n in &f.names {
            assert!(
                message.contains(n.as_str()),
                "{}: {n} not named: {message}",
                f.name
            );
        }
    }
    for (i, f) in dbs.iter().enumerate() {
        let name = format!("db-{i}");
        let message = wait_for(&format!("{name} Synced=False"), T, || async {
            condition_message(&api.get(&name).await.ok()?, "Synced", "False")
        })
        .await;
        for n in &f.names {
            assert!(
                message.contains(n.as_str()),
                "{}: {n} not named: {message}",
                f.name
            );
        }
    }
    // A few retries more, so the log holds repeated attempts too.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let log = op.log_text();
    let (_, metrics) = op.http_get("/metrics");
    let events = events(&client, &ns).await;
    let statuses: String = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(conditions)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        events.contains("RedisUnreachable"),
        "no Event was published: {events}"
    );
    assert!(log.contains("127.0.0.1"), "the log names no host");
    let mut failures = Vec::new();
    for f in redis.iter().chain(&dbs) {
        for (place, text) in [
            ("operator log", &log),
            ("status", &statuses),
            ("Events", &events),
            ("/metrics", &metrics),
        ] {
            let leaks = f.planted.leaks(text);
            if !leaks.is_empty() {
                let line = text
                    .lines()
                    .find(|l| leaks.iter().any(|s| l.contains(s.as_str())))
                    .unwrap_or_default();
                failures.push(format!("{} leaked into the {place}: {line}", f.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The CLI with each form against dead servers: the secret is never printed, the host is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_never_prints_planted_secrets() {
    let live_db = common::services::fresh_database().await;
    common::assert_ok(&common::cli(&["migrate"], &[("DATABASE_URL", &live_db)]));
    let target = tempfile::tempdir().unwrap();
    let target_s = target.path().join("site").to_str().unwrap().to_string();
    let mut failures = Vec::new();
    let mut runs = 0;
    let mut check = |what: String, f: &Form, out: std::process::Output| {
        runs += 1;
        let text = format!("{}\n{}", common::stdout(&out), common::stderr(&out));
        if out.status.success() {
            failures.push(format!(
                "{what} with {}: succeeded against a dead server",
                f.name
            ));
        }
        let leaks = f.planted.leaks(&text);
        if !leaks.is_empty() {
            failures.push(format!("{what} with {}: leaked {leaks:?}:\n{text}", f.name));
        }
        for n in &f.names {
            if !text.contains(n.as_str()) {
                failures.push(format!("{what} with {}: {n} not named:\n{text}", f.name));
            }
        }
    };
    for log in ["warn", "debug"] {
        let env_log = ("RUST_LOG", log);
        for f in database_forms(free_port()) {
            let db = ("DATABASE_URL", f.value.as_str());
            let redis = ("REDIS_URL", "redis://127.0.0.1:1/0");
            check(
                format!("warm ({log})"),
                &f,
                common::cli(&["warm"], &[db, redis, env_log]),
            );
            check(
                format!("requirements show ({log})"),
                &f,
                common::cli(&["requirements", "show"], &[db, env_log]),
            );
            check(
                format!("requirements add ({log})"),
                &f,
                common::cli(&["requirements", "add", "requests==2.32.3"], &[db, env_log]),
            );
        }
        for f in redis_forms(free_port()) {
            let db = ("DATABASE_URL", live_db.as_str());
            let redis = ("REDIS_URL", f.value.as_str());
            check(
                format!("warm ({log})"),
                &f,
                common::cli(&["warm"], &[db, redis, env_log]),
            );
            check(
                format!("requirements add ({log})"),
                &f,
                common::cli(
                    &["requirements", "add", "requests==2.32.3"],
                    &[db, redis, env_log],
                ),
            );
            for json in [false, true] {
                let mut args = vec!["install", "--target", &target_s, "--redis-deadline", "3s"];
                if json {
                    args.push("--json");
                }
                check(
                    format!("install json={json} ({log})"),
                    &f,
                    common::cli(&args, &[redis, env_log]),
                );
            }
        }
    }
    println!("CLI runs checked: {runs}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
