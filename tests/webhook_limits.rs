//! The webhook under hostile clients: slow heads, slow bodies, idle connections, oversized and
//! chunked bodies, more connections than it serves at once — while normal AdmissionReviews keep
//! being answered in time and the operator's memory stays bounded.
//!
//! The operator runs as its own process (webhook on a free loopback port, a mounted certificate
//! as in cert-manager mode, so no webhook configuration is needed); the test talks HTTPS to it
//! directly and samples the operator's resident memory from `/proc/<pid>/status`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bifrost_requirements::webhook::{BODY_LIMIT, BODY_TIMEOUT, HEAD_TIMEOUT, MAX_CONNECTIONS};
use common::operator::{Operator, create_wsreq, namespace};
use common::proc::{free_port, wait_for_port};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Grace on top of a server timeout for scheduling on a busy machine.
const SLACK: Duration = Duration::from_secs(4);
/// How much the operator's memory may grow under the attack. The design bound is ~60 MiB
/// (128 connections × ~100 KiB of buffers and at most 256 KiB of small body each, plus two
/// large-body slots of 3 MiB and their parse): 96 MiB adds allocator slack and stays far below
/// what the chart allows (256 MiB limit, ~60 MiB used by the operator at rest). Before the
/// limits, the same attack added more than 300 MiB.
const RSS_GROWTH_BOUND_KIB: u64 = 96 * 1024;
/// The API server waits `timeoutSeconds: 5` for an answer: a normal admission slower than that
/// is a pod admitted without the requirements.
const ADMISSION_DEADLINE: Duration = Duration::from_secs(5);

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls_pemfile::certs(&mut ca_pem.as_bytes()).flatten() {
        roots.add(der).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls(port: u16, connector: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::IpAddress(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST).into(),
    );
    connector.connect(name, tcp).await
}

/// Read until the peer closes (or errors); returns what arrived and when it closed.
async fn read_until_closed(
    s: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), s.read(&mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, None),
        }
    }
}

fn status_code(response: &[u8]) -> u16 {
    String::from_utf8_lossy(response)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn review(ns: &str, i: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("00000000-0000-0000-0000-{i:012}"),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": ns, "operation": "CREATE", "userInfo": {"username": "test"},
            "object": {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "worker-", "namespace": ns,
                             "labels": {"app": "worker", "bifrost.io/requirements": "default"}},
                "spec": {"containers": [{"name": "worker", "image": "bifrost/worker:1"}]}}
        }
    }))
    .unwrap()
}

/// One normal admission on a new connection: Ok(latency) when it was answered with a patch.
async fn admit(port: u16, connector: &TlsConnector, body: &[u8]) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = tls(port, connector).await.map_err(|e| e.to_string())?;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(body).await.map_err(|e| e.to_string())?;
    let (response, closed) = read_until_closed(&mut s, Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    if closed.is_none() {
        return Err("no answer within 30 s".into());
    }
    let text = String::from_utf8_lossy(&response);
    let Some((_, body)) = text.split_once("\r\n\r\n") else {
        return Err(format!("no HTTP response: {text:?}"));
    };
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if status_code(&response) != 200
        || v["response"]["allowed"] != json!(true)
        || v["response"].get("patch").is_none()
    {
        return Err(format!("not injected: {text}"));
    }
    Ok(elapsed)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// An oversized request: announces `announced` bytes (or is chunked) and sends up to `send`
/// bytes as fast as it can; returns the status code the server answered (0: none).
async fn oversized(
    port: u16,
    connector: TlsConnector,
    announced: Option<usize>,
    send: usize,
) -> u16 {
    let Ok(mut s) = tls(port, &connector).await else {
        return 0;
    };
    let length = match announced {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    let head = format!(
        "POST /mutate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{length}\r\n\r\n"
    );
    if s.write_all(head.as_bytes()).await.is_err() {
        return 0;
    }
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < send {
        let n = chunk.len().min(send - sent);
        let ok = match announced {
            Some(_) => s.write_all(&chunk[..n]).await.is_ok(),
            None => {
                let framed = [format!("{n:x}\r\n").as_bytes(), &chunk[..n], b"\r\n"].concat();
                s.write_all(&framed).await.is_ok()
            }
        };
        if !ok {
            break;
        }
        sent += n;
    }
    if announced.is_none() && sent >= send {
        let _ = s.write_all(b"0\r\n\r\n").await;
    }
    let _ = s.flush().await;
    let (response, _) = read_until_closed(&mut s, BODY_TIMEOUT + SLACK).await;
    status_code(&response)
}

/// The operator in its own process, serving the webhook on `port` with a mounted certificate
/// (as in cert-manager mode), and a client that trusts that certificate.
struct Webhook {
    op: Operator,
    ns: String,
    port: u16,
    pid: u32,
    connector: TlsConnector,
    _dir: tempfile::TempDir,
}

impl Webhook {
    /// A namespace with a `WorkspaceRequirements`, and the operator watching it, its webhook
    /// listening.
    async fn start() -> Webhook {
        let (client, ns) = namespace("wh-limits").await;
        let spec = json!({"content": "requests==2.32.3\n"});
        create_wsreq(&client, &ns, "default", spec).await;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let issued = bifrost_requirements::tls::issue(
            &["127.0.0.1".to_string()],
            Duration::from_secs(3600),
            time::OffsetDateTime::now_utc(),
        )
        .unwrap();
        std::fs::write(&cert, format!("{}{}", issued.cert, issued.ca)).unwrap();
        std::fs::write(&key, &issued.key).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--webhook-addr", &addr, "--tls-mode", "cert-manager"];
        args.extend(["--tls-cert-file", cert.to_str().unwrap()]);
        args.extend(["--tls-key-file", key.to_str().unwrap()]);
        args.extend([
            "--operator-image",
            "registry.example/bifrost-requirements:test",
        ]);
        let op = Operator::start(&ns, "limits", &args);
        let log = op.log.clone();
        wait_for_port(port, "the admission webhook", &log, Duration::from_secs(30));
        let pid = op.pid().expect("the operator's pid");
        Webhook {
            op,
            ns,
            port,
            pid,
            connector: connector(&issued.ca),
            _dir: dir,
        }
    }

    /// One normal admission (review number `i`) on a new connection.
    async fn admit(&self, i: usize) -> Result<Duration, String> {
        admit(self.port, &self.connector, &review(&self.ns, i)).await
    }

    /// Warm up: the resource cache is ready once a review is injected; 20 more, then a second's
    /// rest. Returns the operator's resident memory after that (KiB).
    async fn warm_up(&self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.admit(0).await {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "the webhook never injected: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for i in 0..20 {
            self.admit(i).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_kib(self.pid).unwrap()
    }

    /// A client that sends `payload` (after a TLS handshake, or none at all) and then nothing:
    /// what arrived and when the server closed, waiting up to `limit` + 30 s.
    fn slow(&self, payload: &'static [u8], handshake: bool, limit: Duration) -> Closing {
        let (port, connector) = (self.port, self.connector.clone());
        tokio::spawn(async move {
            if handshake {
                let mut s = tls(port, &connector).await.expect("TLS handshake");
                s.write_all(payload).await.unwrap();
                s.flush().await.unwrap();
                read_until_closed(&mut s, limit + Duration::from_secs(30)).await
            } else {
                let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                read_until_closed(&mut s, limit + Duration::from_secs(30)).await
            }
        })
    }

    /// Slow clients of each kind, with the timeout within which the server must close them.
    fn slow_clients(&self) -> Vec<(&'static str, Vec<Closing>, Duration)> {
        let kinds: [(&str, usize, &'static [u8], bool, Duration); 4] = [
            ("slow body", 10, SLOW_BODY, true, BODY_TIMEOUT),
            ("slow head", 5, SLOW_HEAD, true, HEAD_TIMEOUT),
            ("idle after handshake", 5, b"", true, HEAD_TIMEOUT),
            ("no TLS handshake", 5, b"", false, Duration::from_secs(10)),
        ];
        kinds
            .into_iter()
            .map(|(what, n, payload, handshake, limit)| {
                let clients = (0..n).map(|_| self.slow(payload, handshake, limit));
                (what, clients.collect(), limit)
            })
            .collect()
    }

    /// Oversized bodies, as fast as possible: 40 announcing 8 MB (7.9 MB sent), 10 chunked
    /// 8 MB, 10 at exactly the limit (read in full by the server: two at a time).
    fn oversized_bodies(&self) -> Vec<tokio::task::JoinHandle<u16>> {
        let kinds = [
            (40, Some(8_000_000), 7_900_000),
            (10, None, 8_000_000),
            (10, Some(BODY_LIMIT), BODY_LIMIT),
        ];
        let mut attack = Vec::new();
        for (n, announced, send) in kinds {
            for _ in 0..n {
                let body = oversized(self.port, self.connector.clone(), announced, send);
                attack.push(tokio::spawn(body));
            }
        }
        attack
    }

    /// Normal admissions, one every 50 ms, until there were 60, the attack is over and the
    /// body timeout has passed: their latencies and failures.
    async fn admissions_during(
        &self,
        attack: &[tokio::task::JoinHandle<u16>],
    ) -> (Vec<Duration>, Vec<String>) {
        let mut latencies = Vec::new();
        let mut failures = Vec::new();
        let started = Instant::now();
        let mut i = 100;
        while latencies.len() + failures.len() < 60
            || attack.iter().any(|t| !t.is_finished())
            || started.elapsed() < BODY_TIMEOUT + SLACK
        {
            i += 1;
            match self.admit(i).await {
                Ok(d) => latencies.push(d),
                Err(e) => failures.push(e),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (latencies, failures)
    }

    /// More connections than served at once: the rest wait in the backlog, and a normal
    /// admission still completes once the hogs time out.
    async fn admission_behind_hogs(&self) -> Result<Duration, String> {
        let mut hogs: Vec<TcpStream> = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 20 {
            hogs.push(TcpStream::connect(("127.0.0.1", self.port)).await.unwrap());
        }
        let queued = self.admit(99_999).await;
        drop(hogs);
        queued
    }
}

/// A request head announcing 100 bytes of body, and the first of them.
const SLOW_BODY: &[u8] =
    b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
/// The start of a request head.
const SLOW_HEAD: &[u8] = b"POST /mutate HTTP/1.1\r\nHost: x\r\n";

/// A slow client's task: what arrived and when the server closed (None: never).
type Closing = tokio::task::JoinHandle<(Vec<u8>, Option<Duration>)>;

/// Each slow client was closed within its timeout (a slow body with 408): one line each.
async fn closed_in_time(slow: Vec<(&'static str, Vec<Closing>, Duration)>) -> Vec<String> {
    let mut closed = Vec::new();
    for (what, tasks, limit) in slow {
        for t in tasks {
            let (response, after) = t.await.unwrap();
            let after = after.unwrap_or_else(|| panic!("{what}: never closed"));
            assert!(
                after <= limit + SLACK,
                "{what}: closed after {after:?}, limit {limit:?}"
            );
            if what == "slow body" {
                assert_eq!(status_code(&response), 408, "{what}");
            }
            closed.push(format!("{what}: closed after {:.1} s", after.as_secs_f64()));
        }
    }
    closed
}

/// The peak resident memory of a process, sampled every 20 ms on a thread of its own.
struct RssSampler {
    peak: Arc<AtomicU64>,
    sampling: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32, before: u64) -> RssSampler {
        let peak = Arc::new(AtomicU64::new(before));
        let sampling = Arc::new(AtomicBool::new(true));
        let thread = {
            let (peak, sampling) = (peak.clone(), sampling.clone());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        RssSampler {
            peak,
            sampling,
            thread,
        }
    }

    /// Stop sampling: the peak seen.
    fn stop(self) -> u64 {
        self.sampling.store(false, Ordering::Relaxed);
        self.thread.join().unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_clients_cannot_exhaust_the_webhook() {
    common::init_crypto();
    let hook = Webhook::start().await;
    let before = hook.warm_up().await;
    let sampler = RssSampler::start(hook.pid, before);

    // Slow clients and oversized bodies; meanwhile, normal admissions.
    let slow = hook.slow_clients();
    let attack = hook.oversized_bodies();
    let (mut latencies, failures) = hook.admissions_during(&attack).await;
    let mut codes = std::collections::BTreeMap::<u16, usize>::new();
    for t in attack {
        *codes.entry(t.await.unwrap()).or_default() += 1;
    }
    let closed = closed_in_time(slow).await;
    let queued = hook.admission_behind_hogs().await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak = sampler.stop();
    let after = rss_kib(hook.pid).unwrap();

    latencies.sort();
    let p50 = percentile(&latencies, 0.5);
    let p99 = percentile(&latencies, 0.99);
    println!(
        "RSS: before {} MiB, peak {} MiB, after {} MiB (bound: before + {} MiB)",
        before / 1024,
        peak / 1024,
        after / 1024,
        RSS_GROWTH_BOUND_KIB / 1024
    );
    println!(
        "normal admissions during the attack: {} ok, {} failed; p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        failures.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("oversized requests by answer (0: connection cut): {codes:?}");
    println!("{}", closed.join("\n"));
    println!(
        "admission behind {} hogging connections: {queued:?}",
        MAX_CONNECTIONS + 20
    );

    assert!(
        failures.is_empty(),
        "normal admissions failed: {failures:#?}"
    );
    assert!(p99 < ADMISSION_DEADLINE, "p99 {p99:?}");
    assert!(
        peak < before + RSS_GROWTH_BOUND_KIB,
        "RSS grew from {before} KiB to {peak} KiB"
    );
    // The 8 MB announcements are refused before their body is read.
    assert!(
        codes.get(&413).copied().unwrap_or(0) >= 40,
        "oversized bodies were not refused with 413: {codes:?}"
    );
    let queued = queued.expect("a normal admission behind the connection cap");
    assert!(
        queued < Duration::from_secs(10) + HEAD_TIMEOUT + SLACK,
        "{queued:?}"
    );
    // And the operator is still there, serving.
    hook.admit(100_000).await.unwrap();
    assert!(hook.op.pid().is_some(), "the operator died");
}
