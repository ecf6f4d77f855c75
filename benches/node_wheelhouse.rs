//! Pod-start benchmark on the real node (not a test): `cargo bench --bench node_wheelhouse`.
//!
//! For each real package set (`BENCH_SETS`, default `automation,data-science`, downloaded once by
//! `scripts/real-packages.sh`, served on the bridge by a local index), the operator installed by
//! the chart resolves it for the worker image's Python and copies the lock into a wheelhouse in
//! an S3 server on the bridge. Then `BENCH_RUNS` (default 3) rounds, each a new pod of every
//! kind, interleaved, timed from creation to Ready:
//!
//! - **baseline**: an unlabelled worker (nothing installed);
//! - **wheelhouse**: labelled for a resource with `install.wheelhouse` (the lock from S3);
//! - **index**: labelled for a resource without it (the same lock from the index);
//! - **pip (Bifrost)**: an unlabelled worker whose command first runs Bifrost's start-up,
//!   `python3 -m pip install --user -r requirements.txt` from the same index (Ready once pip
//!   is done: a readiness probe every second; `--break-system-packages` because Debian's
//!   python3 in the node's worker image is marked externally managed, Bifrost's image is not).
//!
//! Every pod is new, so every install is cold. Wall-clock figures are printed, never asserted;
//! what is asserted is that each pod took the path it measures.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::webhook::inject::INSTALL_CONTAINER;
use common::bench::{env_count, load_average, median_p95};
use common::index::Index;
use common::node::{HOST_IP, node, pod_redis, worker_pod_spec};
use common::operator::{namespace, secret, wait_for};
use common::real_packages::set;
use common::release::Release;
use common::s3::{BUCKET, S3Server};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const KINDS: [&str; 4] = ["baseline", "wheelhouse", "index", "pip (Bifrost)"];
const T: Duration = Duration::from_secs(180);

fn resource(
    name: &str,
    content: &str,
    index: &Index,
    wheelhouse: Option<Value>,
) -> WorkspaceRequirements {
    let mut install = json!({
        "python": {"version": "3.11", "platform": "x86_64-manylinux_2_28"},
        "indexUrls": [index.url()],
    });
    if let Some(w) = wheelhouse {
        install["wheelhouse"] = w;
    }
    serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
        "metadata": {"name": name},
        "spec": {
            "content": content,
            "cache": {"redis": {"urlSecretRef": {"name": "bifrost-redis", "key": "url"}}},
            "install": install,
        }
    }))
    .unwrap()
}

async fn create<K>(client: &Client, ns: &str, obj: Value) -> K
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    let obj: K = serde_json::from_value(obj).unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .expect("create")
}

/// The pod of `kind`, round `round`: its spec.
fn pod(kind: usize, round: usize, index: &Index) -> Value {
    let mut spec = worker_pod_spec(&node().worker_image);
    let mut labels = json!({"app": "bench"});
    match kind {
        1 => labels["bifrost.io/requirements"] = json!("wh"),
        2 => labels["bifrost.io/requirements"] = json!("ix"),
        3 => {
            let c = &mut spec["containers"][0];
            let start = format!(
                "import subprocess, sys, time\n\
                 subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--user', \
                 '--break-system-packages', '--disable-pip-version-check', '--index-url', '{}', \
                 '--trusted-host', '{}', '-r', \
                 '/req/requirements.txt'], check=True)\n\
                 open('/tmp/ready', 'w').close()\n\
                 while True: time.sleep(3600)",
                index.url(),
                HOST_IP
            );
            c["command"] = json!(["python3", "-c", start]);
            c["readinessProbe"] = json!({
                "exec": {"command": ["python3", "-c", "import os, sys; sys.exit(not os.path.exists('/tmp/ready'))"]},
                "periodSeconds": 1,
            });
            c["volumeMounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "req", "mountPath": "/req"}));
            spec["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "req", "configMap": {"name": "requirements"}}));
        }
        _ => {}
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("k{kind}-r{round}"), "labels": labels},
        "spec": spec,
    })
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Seconds from creating the pod to Ready, or `None` (with its log and events printed) when it
/// is not Ready within [`T`].
async fn start(client: &Client, ns: &str, spec: Value) -> (Option<f64>, String) {
    let api = Api::<Pod>::namespaced(client.clone(), ns);
    let t = Instant::now();
    let p: Pod = create(client, ns, spec).await;
    let name = p.metadata.name.clone().unwrap();
    while t.elapsed() < T {
        if api.get(&name).await.ok().is_some_and(|p| ready(&p)) {
            return (Some(t.elapsed().as_secs_f64()), name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for args in [
        vec!["-n", ns, "describe", "pod", &name],
        vec!["-n", ns, "logs", &name, "--all-containers", "--tail=30"],
    ] {
        let out = node().kubectl(&args);
        eprintln!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (None, name)
}

async fn measure(name: &str, runs: usize, s3: &S3Server) -> (String, [Vec<f64>; 4], Duration) {
    let set = set(name);
    let index = Index::serve_dir(HOST_IP, &set.dir);
    let (client, ns) = namespace("bench-wh").await;
    let redis = pod_redis();
    secret(&client, &ns, "bifrost-redis", "url", &redis.url()).await;
    let _: Secret = create(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bifrost-secrets"},
            "stringData": {
                "BIFROST_S3_ACCESS_KEY": s3.writer.access_key_id,
                "BIFROST_S3_SECRET_KEY": s3.writer.secret_access_key,
            },
        }),
    )
    .await;
    let _: ConfigMap = create(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "requirements"},
            "data": {"requirements.txt": set.requirements},
        }),
    )
    .await;
    let resolver = format!("resolver.indexUrls[0]!={}", index.url());
    // Should the operator not become Ready, say why before the install's wait gives up.
    let system = format!("{ns}-system");
    let why = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(120)).await;
        for args in [
            vec!["get", "pods", "-A", "-o", "wide"],
            vec!["-n", &system, "describe", "pods"],
            vec![
                "-n",
                &system,
                "logs",
                "-l",
                "app.kubernetes.io/name=bifrost-requirements",
                "--tail=40",
            ],
        ] {
            let out = node().kubectl(&args);
            eprintln!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    let _op = Release::install(&client, &ns, &["replicaCount=1", &resolver]).await;
    why.abort();
    let wsreq = Api::<WorkspaceRequirements>::namespaced(client.clone(), &ns);
    let wheelhouse = json!({"s3": {
        "bucket": BUCKET, "prefix": format!("bench-{name}-{}", std::process::id()),
        "endpoint": s3.endpoint(), "credentialsSecretRef": {"name": "bifrost-secrets"},
    }});
    let t = Instant::now();
    for r in [
        resource("ix", &set.requirements, &index, None),
        resource("wh", &set.requirements, &index, Some(wheelhouse)),
    ] {
        wsreq.create(&PostParams::default(), &r).await.unwrap();
    }
    wait_for("the wheelhouse complete", T, || async {
        let r = wsreq.get("wh").await.ok()?;
        r.status?.wheelhouse?.complete.then_some(())
    })
    .await;
    let filled = t.elapsed();
    wait_for("the index resource's lock", T, || async {
        wsreq.get("ix").await.ok()?.status?.lock.map(|_| ())
    })
    .await;
    let mut samples: [Vec<f64>; 4] = Default::default();
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    for round in 0..runs {
        eprintln!(
            "{name}, round {}/{runs} (load {})",
            round + 1,
            load_average()
        );
        for kind in 0..KINDS.len() {
            let (s, pod) = start(&client, &ns, pod(kind, round, &index)).await;
            let Some(s) = s else {
                eprintln!(
                    "   {}: not Ready within {T:?} (see above); not counted",
                    KINDS[kind]
                );
                let _ = pods.delete(&pod, &DeleteParams::default()).await;
                continue;
            };
            eprintln!("   {}: {s:.1} s", KINDS[kind]);
            samples[kind].push(s);
            if kind == 1 || kind == 2 {
                let log = node().logs(&ns, &pod, INSTALL_CONTAINER);
                let from_wheelhouse = log.contains("installing the lock from the wheelhouse");
                assert_eq!(from_wheelhouse, kind == 1, "{}:\n{log}", KINDS[kind]);
                assert!(log.contains("as locked (hash-checked)"), "{log}");
            }
            let _ = pods.delete(&pod, &DeleteParams::default()).await;
        }
    }
    (name.to_string(), samples, filled)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("node wheelhouse benchmark: run it with `cargo bench --bench node_wheelhouse`");
        return;
    }
    common::init_crypto();
    let runs = env_count("BENCH_RUNS", 3);
    let sets = std::env::var("BENCH_SETS").unwrap_or_else(|_| "automation,data-science".into());
    node();
    let s3 = S3Server::start_on(HOST_IP);
    let mut all = Vec::new();
    for name in sets.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        all.push(measure(name, runs, &s3).await);
    }
    println!("\n== pod start on the node, creation to Ready, {runs} new pods of each kind");
    for (name, mut samples, filled) in all {
        println!(
            "\n{name}: wheelhouse copied {:.1} s after the resources were created",
            filled.as_secs_f64()
        );
        let medians: Vec<f64> = samples
            .iter_mut()
            .map(|s| {
                if s.is_empty() {
                    f64::NAN
                } else {
                    median_p95(s).0
                }
            })
            .collect();
        for (kind, s) in KINDS.iter().zip(samples.iter_mut()) {
            if s.is_empty() {
                println!("  {kind:<14} no pod became Ready (see the log above)");
                continue;
            }
            let (median, p95) = median_p95(s);
            println!(
                "  {kind:<14} median {median:6.1} s  p95 {p95:6.1} s  (n={})",
                s.len()
            );
        }
        let over = |i: usize| medians[i] - medians[0];
        println!(
            "  install time (over the baseline): wheelhouse {:.1} s, index {:.1} s, pip {:.1} s; pip / wheelhouse {:.1}x",
            over(1),
            over(2),
            over(3),
            over(3) / over(1)
        );
    }
}
