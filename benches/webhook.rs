//! Admission latency of the webhook on loopback: `cargo bench --bench webhook`.
//!
//! The real server (`webhook::serve_tls` + `webhook::router`, rustls/ring, the admission logic and
//! its metrics) answers AdmissionReviews of a realistic ReplicaSet-created pod — as the API server
//! sends them — at a fixed open-loop rate of 200 requests/s for 30 s over kept-alive TLS
//! connections (what the API server does). Latency is measured from each request's scheduled
//! send time to the last byte of the answer, so a slow answer also delays (and is charged to) the
//! requests queued behind it. A short second phase opens a new TLS connection per request to
//! show the cost of a handshake. Target: p99 ≤ 5 ms.
//!
//! `BENCH_RATE` (requests/s) and `BENCH_SECONDS` override the defaults.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bifrost_requirements::crd::WorkspaceRequirements;
use bifrost_requirements::metrics::Metrics;
use bifrost_requirements::tls;
use bifrost_requirements::webhook::{self, Admission, inject::Settings};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Conn = TlsStream<TcpStream>;

fn resource() -> WorkspaceRequirements {
    serde_json::from_value(json!({
        "apiVersion": "bifrost.io/v1alpha1", "kind": "WorkspaceRequirements",
        "metadata": {"name": "default", "namespace": "bifrost"},
        "spec": {
            "content": "flask==3.0.3\nrequests==2.32.3\nhttpx==0.27.0\npydantic==2.8.2\nmsal==1.30.0\n\
                        python-dateutil==2.9.0\npyyaml==6.0.1\njinja2==3.1.4\nbeautifulsoup4==4.12.3\n\
                        openpyxl==3.1.5\nnumpy==2.0.1\npandas==2.2.2\n",
            "cache": {"redis": {"urlSecretRef": {"name": "bifrost-redis", "key": "url"}}},
            "install": {"indexUrls": ["https://pypi.example/simple"], "sizeLimit": "2Gi"}
        }
    }))
    .expect("resource")
}

/// An AdmissionReview like the one kube-apiserver sends for a pod the ReplicaSet controller
/// creates (defaults, service-account token, tolerations, owner reference).
fn review_body(i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bifrost", "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "uid": "5d5f3c2e-2b0f-4e8e-9d5a-1f6d2b9c8a11",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]},
            "object": {
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {
                    "generateName": "bifrost-worker-7d9c5b8f6d-", "namespace": "bifrost", "creationTimestamp": null,
                    "labels": {"app": "bifrost-worker", "pod-template-hash": "7d9c5b8f6d", "bifrost.io/requirements": "default"},
                    "annotations": {"bifrost.io/requirements-hash": "d771d96435ef61bafab1be4d6b4aea041bc056a5095037ceeffd3f42deed4249"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "bifrost-worker-7d9c5b8f6d",
                                         "uid": "0b0e7f5e-6f7e-4a77-9d53-7a4f0fb1c3c2", "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": {
                    "volumes": [{"name": "default-token-x7k2p", "secret": {"secretName": "default-token-x7k2p", "defaultMode": 420}}],
                    "containers": [{
                        "name": "worker", "image": "ghcr.io/example/bifrost-worker:2.4.1",
                        "command": ["python", "-m", "bifrost.worker"],
                        "env": [{"name": "PYTHONPATH", "value": "/app"}, {"name": "BIFROST_ENV", "value": "production"},
                                {"name": "REDIS_URL", "valueFrom": {"secretKeyRef": {"name": "bifrost-redis", "key": "url"}}}],
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                        "volumeMounts": [{"name": "default-token-x7k2p", "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                        "imagePullPolicy": "IfNotPresent",
                        "securityContext": {"runAsUser": 1000, "runAsNonRoot": true}
                    }],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                    "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
                    "schedulerName": "default-scheduler",
                    "tolerations": [
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
                    ],
                    "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
                },
                "status": {}
            },
            "oldObject": null, "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    }))
    .expect("body")
}

async fn connect(port: u16, connector: &TlsConnector) -> std::io::Result<Conn> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    connector.connect(name, tcp).await
}

/// One HTTP/1.1 request on a kept-alive connection; returns (status, body).
async fn post(conn: &mut Conn, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let head = format!(
        "POST /mutate?timeout=5s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Accept: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    conn.write_all(&req).await?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let (head_end, len, status) = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            break (end + 4, len, status);
        }
    };
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other("connection closed mid-body"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[head_end..head_end + len].to_vec()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn report(what: &str, mut lat: Vec<Duration>, errors: usize, elapsed: Duration) -> Duration {
    lat.sort();
    let n = lat.len();
    println!("{what}");
    println!(
        "  requests {n} ok, {errors} failed, in {:.1} s ({:.1}/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(percentile(&lat, 99.9)),
        ms(lat.last().copied().unwrap_or_default())
    );
    percentile(&lat, 99.0)
}

fn main() {
    // `cargo test --all-targets` runs bench binaries too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("webhook latency benchmark: run it with `cargo bench --bench webhook`");
        return;
    }
    let rate: u64 = std::env::var("BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let p99 = runtime.block_on(run(rate, seconds));
    let target = Duration::from_millis(5);
    println!(
        "target p99 <= 5 ms: {}",
        if p99 <= target { "met" } else { "MISSED" }
    );
}

async fn run(rate: u64, seconds: u64) -> Duration {
    let server = start_server().await;
    let (port, connector) = (server.port, client(&server.ca));
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(review_body).collect());
    println!(
        "webhook admission latency on loopback: {rate} req/s for {seconds} s, AdmissionReview of {} bytes, \
         server and client sharing {} CPU(s)",
        bodies[0].len(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let first = warmed_connection(port, &connector, &bodies).await;
    let p99 = kept_alive(port, &connector, &bodies, first, rate, seconds).await;
    new_connection_each(port, &connector, &bodies).await;
    server_time(&server.metrics);
    p99
}

/// The operator's own server, serving until this is dropped.
struct Server {
    port: u16,
    metrics: Arc<Metrics>,
    /// The CA that signed its certificate.
    ca: String,
    _stop: tokio::sync::watch::Sender<bool>,
}

/// The operator's own server: a filled resource cache and a self-issued certificate.
async fn start_server() -> Server {
    let issued = tls::issue(
        &["127.0.0.1".to_string()],
        Duration::from_secs(3600),
        time::OffsetDateTime::now_utc(),
    )
    .expect("certificate");
    let resolver = tls::CertResolver::new();
    resolver
        .set_pem(issued.cert.as_bytes(), issued.key.as_bytes())
        .expect("load certificate");
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitApply(resource()));
    writer.apply_watcher_event(&Event::InitDone);
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(Admission {
        resources: store,
        listed: tokio::sync::watch::channel(true).1,
        settings: Settings::default(),
        metrics: metrics.clone(),
        events: None,
        namespace: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(webhook::serve_tls(
        listener,
        tls::server_config(resolver).expect("tls config"),
        webhook::router(state),
        stop_rx,
    ));
    Server {
        port,
        metrics,
        ca: issued.ca,
        _stop: stop,
    }
}

/// A client that trusts `ca`, like the API server with the caBundle.
fn client(ca: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut ca.as_bytes()).flatten() {
        roots.add(der).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One connection whose first answer is checked to be an injection, then warmed up (lazy
/// statics, allocator, TLS session) with every body — not measured.
async fn warmed_connection(port: u16, connector: &TlsConnector, bodies: &[Vec<u8>]) -> Conn {
    let mut c = connect(port, connector).await.expect("connect");
    let (status, body) = post(&mut c, &bodies[0]).await.expect("request");
    let text = String::from_utf8_lossy(&body);
    assert!(
        status == 200 && text.contains("\"patch\""),
        "unexpected answer {status}: {text}"
    );
    for b in bodies {
        let _ = post(&mut c, b).await;
    }
    c
}

/// What the requests of phase 1 share.
#[derive(Clone)]
struct Load {
    port: u16,
    connector: TlsConnector,
    bodies: Arc<Vec<Vec<u8>>>,
    pool: Arc<Mutex<Vec<Conn>>>,
    /// Latencies of the answered requests, and the count of failed ones.
    results: Arc<Mutex<(Vec<Duration>, usize)>>,
    opened: Arc<std::sync::atomic::AtomicUsize>,
    max_lag: Arc<Mutex<Duration>>,
}

/// Phase 1: kept-alive connections, open-loop schedule; returns the p99.
async fn kept_alive(
    port: u16,
    connector: &TlsConnector,
    bodies: &Arc<Vec<Vec<u8>>>,
    first: Conn,
    rate: u64,
    seconds: u64,
) -> Duration {
    let load = Load {
        port,
        connector: connector.clone(),
        bodies: bodies.clone(),
        pool: Arc::new(Mutex::new(vec![first])),
        results: Arc::default(),
        opened: Arc::new(std::sync::atomic::AtomicUsize::new(1)),
        max_lag: Arc::default(),
    };
    let period = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let total = (rate * seconds) as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + period * i as u32;
        tokio::time::sleep_until(scheduled).await;
        tasks.push(tokio::spawn(load.clone().request(i, scheduled)));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed();
    println!(
        "load generator: largest delay behind schedule {}",
        ms(*load.max_lag.lock().expect("lag"))
    );
    let (lat, errors) = std::mem::take(&mut *load.results.lock().expect("results"));
    report(
        &format!(
            "kept-alive connections ({} opened; the API server reuses connections the same way):",
            load.opened.load(std::sync::atomic::Ordering::Relaxed)
        ),
        lat,
        errors,
        elapsed,
    )
}

impl Load {
    /// Request `i`, scheduled at `scheduled`: measured from when the request starts (taking a
    /// free kept-alive connection, or opening one when all are busy): the generator never waits
    /// for answers, so a slow answer cannot hide the requests scheduled behind it.
    async fn request(self, i: usize, scheduled: tokio::time::Instant) {
        let t0 = Instant::now();
        let lag = t0.saturating_duration_since(scheduled.into_std());
        if let Ok(mut m) = self.max_lag.lock() {
            *m = (*m).max(lag);
        }
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let conn = match pooled {
            Some(c) => Ok(c),
            None => {
                self.opened
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                connect(self.port, &self.connector).await
            }
        };
        let outcome = match conn {
            Ok(mut c) => match post(&mut c, &self.bodies[i % self.bodies.len()]).await {
                Ok((200, body)) if body.windows(7).any(|w| w == b"\"patch\"") => {
                    let latency = t0.elapsed();
                    if let Ok(mut p) = self.pool.lock() {
                        p.push(c);
                    }
                    Some(latency)
                }
                _ => None,
            },
            Err(_) => None,
        };
        if let Ok(mut r) = self.results.lock() {
            match outcome {
                Some(l) => r.0.push(l),
                None => r.1 += 1,
            }
        }
    }
}

/// Phase 2: a new TLS connection per request (handshake included), 20/s for 5 s.
async fn new_connection_each(port: u16, connector: &TlsConnector, bodies: &[Vec<u8>]) {
    let mut lat = Vec::new();
    let mut errors = 0;
    let started = Instant::now();
    for i in 0..100 {
        let t0 = Instant::now();
        let ok = match connect(port, connector).await {
            Ok(mut c) => matches!(post(&mut c, &bodies[i % bodies.len()]).await, Ok((200, _))),
            Err(_) => false,
        };
        if ok {
            lat.push(t0.elapsed());
        } else {
            errors += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    report(
        "new TLS connection per request (TCP + TLS 1.3 handshake + request), 100 requests:",
        lat,
        errors,
        started.elapsed(),
    );
}

/// The server's own handler time, from its metrics.
fn server_time(metrics: &Metrics) {
    let encoded = metrics.encode();
    let value = |name: &str| {
        encoded
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    if let (Some(sum), Some(count)) = (
        value("bifrost_requirements_admission_duration_seconds_sum"),
        value("bifrost_requirements_admission_duration_seconds_count"),
    ) {
        println!(
            "server-side handler time (parse, decide, patch, serialize): mean {:.3} ms over {count} reviews",
            sum / count * 1000.0
        );
    }
}
