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
use common::operator::{Operator, wait_for};
use common::proc::free_port;
use common::scenario::Ns;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use serde_json::{Value, json};

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

impl Form {
    /// A password of `shape` ([`Planted::new`]) put into a connection string by `into`; a message
    /// must still name `names`.
    fn new(
        name: &'static str,
        shape: &str,
        into: impl FnOnce(&str) -> String,
        names: Vec<String>,
    ) -> Form {
        let planted = Planted::new(shape);
        let value = into(&planted.password);
        Form {
            name,
            value,
            planted,
            names,
        }
    }

    /// [`Form::new`] for a server on loopback `port`: a message must name the host and the port.
    fn tcp(name: &'static str, shape: &str, port: u16, into: impl FnOnce(&str) -> String) -> Form {
        Form::new(
            name,
            shape,
            into,
            vec!["127.0.0.1".into(), port.to_string()],
        )
    }
}

fn redis_forms(port: u16) -> Vec<Form> {
    let sock = format!("/tmp/bifrost-no-such-{port}.sock");
    let unix = format!("redis+unix://{sock}?db=0&pass=");
    vec![
        Form::tcp(
            "redis://:pass-with-#-/-?-@",
            "Sup3r#{}/{}?{}@x",
            port,
            |p| format!("redis://:{p}@127.0.0.1:{port}/0"),
        ),
        Form::tcp("redis://user:percent-encoded", "{}:{}@{} #", port, |p| {
            format!("redis://bifrost:{}@127.0.0.1:{port}/0", percent_encode(p))
        }),
        Form::new(
            "redis+unix://?pass=",
            "{}&{}={}",
            |p| format!("{unix}{}", percent_encode(p)),
            vec![sock],
        ),
    ]
}

fn database_forms(port: u16) -> Vec<Form> {
    vec![
        Form::tcp("postgresql://?password=", "{}#{}&{}", port, |p| {
            let p = p.replace('&', "%26");
            format!("postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable&password={p}")
        }),
        Form::tcp(
            "postgresql+asyncpg://user:pass-with-/-?-@",
            "{}/{}?{}@",
            port,
            |p| format!("postgresql+asyncpg://bifrost:{p}@127.0.0.1:{port}/bifrost"),
        ),
        Form::tcp("libpq key-value, quoted", "{} {}'{}", port, |p| {
            let p = p.replace('\'', "\\'");
            format!("host=127.0.0.1 port={port} user=bifrost password='{p}' dbname=bifrost")
        }),
    ]
}

/// Where a resource reads a planted connection string, and the condition that fails naming it.
struct Reader {
    /// The resources and their Secrets are `{prefix}-{i}`.
    prefix: &'static str,
    /// The resource's spec, reading the Secret `name` (key `url`).
    spec: fn(&str) -> Value,
    /// The condition that turns False, its message naming the host.
    condition: &'static str,
}

/// Redis, through `spec.cache`.
const CACHE: Reader = Reader {
    prefix: "redis",
    spec: |name| {
        json!({
            "content": "requests==2.32.3\n",
            "cache": {"redis": {"urlSecretRef": {"name": name, "key": "url"}}},
        })
    },
    condition: "CacheWarmed",
};

/// PostgreSQL, through `spec.source.database`.
const SOURCE: Reader = Reader {
    prefix: "db",
    spec: |name| {
        json!({"source": {"database": {
            "urlSecretRef": {"name": name, "key": "url"},
            "pollIntervalSeconds": 1,
        }}})
    },
    condition: "Synced",
};

/// The Secret as the operator reads it: proof that the secret really was there.
async fn stored(ns: &Ns, name: &str) -> String {
    let s = ns.api::<Secret>().get(name).await.unwrap();
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
async fn events(ns: &Ns) -> String {
    let lp = ListParams::default();
    let new = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&lp)
        .await
        .unwrap();
    let old = ns
        .api::<k8s_openapi::api::core::v1::Event>()
        .list(&lp)
        .await
        .unwrap();
    format!(
        "{}\n{}",
        serde_json::to_string(&new.items).unwrap(),
        serde_json::to_string(&old.items).unwrap()
    )
}

/// A Secret and a resource reading it for each form. The assertions below can fail: each secret
/// is in the Secret the operator reads, and the leak check finds it there.
async fn plant(ns: &Ns, reader: &Reader, forms: &[Form]) {
    for (i, f) in forms.iter().enumerate() {
        let name = format!("{}-{i}", reader.prefix);
        ns.secret(&name, "url", &f.value).await;
        ns.wsreq(&name, (reader.spec)(&name)).await;
    }
    for (i, f) in forms.iter().enumerate() {
        let v = stored(ns, &format!("{}-{i}", reader.prefix)).await;
        assert!(!f.planted.leaks(&v).is_empty(), "{}: {v}", f.name);
    }
}

/// Each resource's condition turns False with a message that still names the host.
async fn each_failure_names_the_host(ns: &Ns, reader: &Reader, forms: &[Form]) {
    let api = ns.api::<WorkspaceRequirements>();
    for (i, f) in forms.iter().enumerate() {
        let name = format!("{}-{i}", reader.prefix);
        let what = format!("{name} {}=False", reader.condition);
        let message = wait_for(&what, T, || async {
            condition_message(&api.get(&name).await.ok()?, reader.condition, "False")
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
}

/// Each place a form leaked into, with the line that shows it.
fn leaks(forms: &[&Form], places: &[(&str, &str)]) -> Vec<String> {
    let mut failures = Vec::new();
    for f in forms {
        for (place, text) in places {
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
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_never_prints_planted_secrets() {
    let ns = Ns::new("secrets").await;
    let planted = [
        (CACHE, redis_forms(free_port())),
        (SOURCE, database_forms(free_port())),
    ];
    for (reader, forms) in &planted {
        plant(&ns, reader, forms).await;
    }

    let op = Operator::start(&ns.name, "secrets", &[]);
    for (reader, forms) in &planted {
        each_failure_names_the_host(&ns, reader, forms).await;
    }
    // A few retries more, so the log holds repeated attempts too.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let log = op.log_text();
    let (_, metrics) = op.http_get("/metrics");
    let events = events(&ns).await;
    let statuses: String = ns
        .api::<WorkspaceRequirements>()
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
    let forms: Vec<&Form> = planted.iter().flat_map(|(_, forms)| forms).collect();
    let places = [
        ("operator log", log.as_str()),
        ("status", &statuses),
        ("Events", &events),
        ("/metrics", &metrics),
    ];
    let failures = leaks(&forms, &places);
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
