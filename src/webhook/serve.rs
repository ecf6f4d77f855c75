//! HTTPS serving of the admission webhook: the router, the limits that keep a hostile or broken
//! client from exhausting the operator (connections, body size, time, concurrent large bodies),
//! and the TLS accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::StreamExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, warn};

use super::admission::Admission;

/// The only path served.
pub(crate) const MUTATE_PATH: &str = "/mutate";
/// Largest AdmissionReview accepted. etcd stores objects of at most 1.5 MiB (its default request
/// limit), so a pod that can exist at all fits twice over with the review's envelope and the API
/// server's re-encoding; a bigger body could only come from a pod etcd will refuse anyway (with
/// `failurePolicy: Ignore` the 413 admits it unchanged and etcd then rejects it). A body
/// announcing more is refused before a byte of it is read; a chunked one is cut when it passes.
pub const BODY_LIMIT: usize = 3 * 1024 * 1024;
/// Bodies above this size are "large": real pods are a few KiB to a few tens of KiB, so
/// everything normal stays below it and never waits for [`MAX_LARGE_BODIES`].
const LARGE_BODY: usize = 256 * 1024;
/// Large bodies read and reviewed at the same time. Parsing JSON into a pod costs about ten times
/// the body in memory, so two 3 MiB bodies peak near 70 MiB; more would threaten the chart's
/// 256 MiB limit (the operator itself uses ~60 MiB). Beyond it a large body waits (within
/// [`BODY_TIMEOUT`]), then gets 503; small bodies never wait for it.
const MAX_LARGE_BODIES: usize = 2;
/// Connections served at once; beyond it `accept` waits (the kernel's backlog holds the rest).
/// Each costs at most ~100 KiB of buffers (TLS records, the 64 KiB [`READ_BUFFER`]) plus a body
/// below [`LARGE_BODY`] in flight: 128 × (100 KiB + 256 KiB) ≈ 45 MiB at worst. The API server
/// keeps a handful of connections per webhook; 128 leaves room for bursts of pod creations.
pub const MAX_CONNECTIONS: usize = 128;
/// Time for a request head (line and headers) to arrive, counted from when the connection is
/// ready for it — just accepted or its previous response written. Hyper starts this clock while
/// a keep-alive connection sits idle, so it is also the idle keep-alive timeout: an idle
/// connection costs a slot of [`MAX_CONNECTIONS`], and the API server reconnects in a
/// millisecond (Go retries a request that met a connection closed while idle).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the whole body to arrive (including any wait for a large-body slot). The API server
/// gives the webhook 5 s for the whole round trip (`timeoutSeconds`, at most 30), and sends the
/// body in one go: a body still trickling in after 10 s is an attack, not an admission.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Hyper's read buffer per connection: request heads of the API server are well below 8 KiB;
/// bodies stream through it in chunks.
const READ_BUFFER: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish once shutdown is asked for.
const CONNECTION_GRACE: Duration = Duration::from_secs(5);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP routes: `POST /mutate`; other methods there get 405, other paths 404. Bodies are read
/// by [`read_body`] (size, time and large-body limits), never buffered by a generic extractor.
pub fn router(state: Arc<Admission>) -> Router {
    let large = Arc::new(Semaphore::new(MAX_LARGE_BODIES));
    Router::new()
        .route(
            MUTATE_PATH,
            post(
                move |State(state): State<Arc<Admission>>, headers: HeaderMap, body: Body| {
                    mutate(state, large.clone(), headers, body)
                },
            ),
        )
        .fallback(not_found)
        .with_state(state)
}

async fn mutate(
    state: Arc<Admission>,
    large: Arc<Semaphore>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    // The slot (if any) is held through the review: parsing is where a body's memory peaks.
    let (body, _slot) = match read_body(&large, &headers, body).await {
        Ok(read) => read,
        Err(refused) => {
            state.metrics.admission(refused.result, started.elapsed());
            return refused.into_response();
        }
    };
    let reply = state.review(&body).await;
    state.metrics.admission(reply.result, started.elapsed());
    reply.into_response()
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: the webhook serves POST /mutate\n",
    )
}

/// A request refused before its review: plain text, and the connection is closed (its body may
/// be unread, so it cannot carry another request).
struct Refused {
    status: StatusCode,
    message: String,
    result: &'static str,
}

impl Refused {
    fn invalid(message: String) -> Self {
        Refused {
            status: StatusCode::BAD_REQUEST,
            message,
            result: "invalid",
        }
    }

    fn too_large(what: String) -> Self {
        Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!(
                "{what}; the webhook accepts AdmissionReviews of at most {BODY_LIMIT} bytes"
            ),
            result: "too-large",
        }
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        debug!(status = %self.status, message = %self.message, "webhook: request refused");
        (
            self.status,
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                (header::CONNECTION, "close"),
            ],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

/// Read a request body within [`BODY_LIMIT`] and [`BODY_TIMEOUT`]; a large one first takes one
/// of [`MAX_LARGE_BODIES`] slots, returned with the body so the review keeps it.
async fn read_body(
    large: &Arc<Semaphore>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refused> {
    let declared = declared_length(headers)?;
    if let Some(n) = declared.filter(|n| *n > BODY_LIMIT as u64) {
        return Err(Refused::too_large(format!("the body announces {n} bytes")));
    }
    match tokio::time::timeout(BODY_TIMEOUT, read_limited(large, declared, body)).await {
        Ok(r) => r,
        Err(_) => Err(Refused {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
            result: "timeout",
        }),
    }
}

/// The body length the client announced, if any.
fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, Refused> {
    let Some(v) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(Refused::invalid("invalid Content-Length".into())),
    }
}

async fn read_limited(
    large: &Arc<Semaphore>,
    declared: Option<u64>,
    body: Body,
) -> Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refused> {
    let mut slot = None;
    if declared.is_some_and(|n| n > LARGE_BODY as u64) {
        slot = Some(large_slot(large).await);
    }
    let mut buf = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| Refused::invalid(format!("cannot read the request body: {e}")))?;
        if buf.len() + chunk.len() > BODY_LIMIT {
            return Err(Refused::too_large(format!(
                "the body passed {BODY_LIMIT} bytes while being read"
            )));
        }
        // A chunked body becomes large while it is read: it waits for a slot from then on.
        if slot.is_none() && buf.len() + chunk.len() > LARGE_BODY {
            slot = Some(large_slot(large).await);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, slot))
}

async fn large_slot(large: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    // The semaphore is never closed; should that change, waiting forever is still bounded by the
    // caller's timeout.
    match large.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => std::future::pending().await,
    }
}

/// Serve `app` over TLS on `listener` until `shutdown` turns true; in-flight requests get a few
/// seconds to finish.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let mut tasks = tokio::task::JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // A free slot first, then accept: beyond the cap, connections wait in the backlog.
        let slot = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                warn!(error = %e, "webhook: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(
            stream,
            peer,
            acceptor.clone(),
            app.clone(),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let _slot = slot;
            connection.await
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// One connection: TLS handshake within [`HANDSHAKE_TIMEOUT`], then HTTP/1.1 with the head
/// timeout and buffer limit, closed gracefully on shutdown.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "webhook: TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "webhook: TLS handshake timed out");
            return;
        }
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(READ_BUFFER)
        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(%peer, error = %e, "webhook: connection ended with an error");
            }
        }
        _ = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CONNECTION_GRACE, conn).await;
        }
    }
}

/// Resolves once the shutdown flag is raised (or its sender is gone); unlike `wait_for` it holds
/// no borrow of the flag, so the caller may await while handling it.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Bind `addr`, retrying until it works or `shutdown`: a taken port is logged, never fatal (the
/// controller keeps working; pods are admitted without injection meanwhile).
pub(super) async fn bind(
    addr: SocketAddr,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<TcpListener> {
    let mut delay = Duration::from_millis(500);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Some(l),
            Err(e) => {
                error!(%addr, error = %e, "cannot listen for the admission webhook; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|s| *s) => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
