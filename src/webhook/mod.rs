//! The mutating admission webhook: injects the installer into worker pods.
//!
//! Every replica of `bifrost-requirements operator` serves `POST /mutate` over HTTPS (rustls with
//! the ring provider only). The API server sends an `AdmissionReview` (v1) for each pod CREATE
//! that carries the opt-in label `bifrost.io/requirements` (the MutatingWebhookConfiguration's
//! `objectSelector`); the answer is a JSON patch built by [`inject::plan`] from the
//! `WorkspaceRequirements` named by the label, read from a reflector cache (no API call per
//! request). Nothing here ever refuses a pod: whatever goes wrong — unknown resource, cache not
//! ready, a setting that cannot be honoured, an internal error — the pod is admitted unchanged
//! with a warning (and a Kubernetes Event), and with `failurePolicy: Ignore` an unreachable
//! webhook admits pods unchanged too. The controller's status counts pods that missed injection
//! (`status.workloads[].uninjectedPods`).
//!
//! TLS certificates come from [`tls`]: self-managed (a CA and serving certificate in a Secret,
//! `caBundle` patched into the webhook configuration, rotated before expiry and hot-swapped) or
//! mounted files (cert-manager).

pub mod bootstrap;
pub mod inject;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::{FutureExt, StreamExt};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::cli::{OperatorArgs, TlsMode};
use crate::crd::{OPT_IN_LABEL, WorkspaceRequirements};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::supervise::{Backoff, OnExit, Supervisor};
use inject::{NotInjected, OptIn, Settings};

/// The only path served.
pub const MUTATE_PATH: &str = "/mutate";
/// The MutatingWebhookConfiguration the chart ships (`deploy/webhook.yaml`): CREATE on pods with
/// the opt-in label, `failurePolicy: Ignore`, `timeoutSeconds: 5`, `sideEffects: None`,
/// `reinvocationPolicy: IfNeeded`, never kube-system. `caBundle` is filled in by the operator
/// (self-managed TLS) or by cert-manager's CA injector.
pub const WEBHOOK_CONFIGURATION_YAML: &str = include_str!("../../deploy/webhook.yaml");
/// Largest AdmissionReview accepted (a pod is at most ~1.5 MB in etcd).
const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// How long a request waits for the resource cache's first listing.
const CACHE_WAIT: Duration = Duration::from_secs(2);
/// One Warning Event per (regarding object, reason) in this window.
const EVENT_INTERVAL: Duration = Duration::from_secs(60);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Configuration.

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    SelfManaged(tls::SelfManaged),
    /// cert-manager (or any mounted certificate): files reloaded when they change.
    Files {
        cert: PathBuf,
        key: PathBuf,
        interval: Duration,
    },
}

/// Everything the webhook needs to run.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub settings: Settings,
    pub tls: TlsSource,
    /// Only resources in this namespace are visible (None: all namespaces).
    pub namespace: Option<String>,
}

impl WebhookConfig {
    /// From the `operator` command's flags; `None` when the webhook is disabled.
    pub fn from_args(args: &OperatorArgs) -> Option<Self> {
        let w = &args.webhook;
        if w.no_webhook {
            return None;
        }
        let service_ns = w
            .webhook_service_namespace
            .clone()
            .or_else(|| args.lease_namespace.clone())
            .or_else(|| args.namespace.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into());
        let svc = &w.webhook_service_name;
        let mut names = vec![
            svc.clone(),
            format!("{svc}.{service_ns}"),
            format!("{svc}.{service_ns}.svc"),
            format!("{svc}.{service_ns}.svc.cluster.local"),
        ];
        for extra in w
            .webhook_extra_san
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            if !names.iter().any(|n| n == extra) {
                names.push(extra.to_string());
            }
        }
        let tls = match w.tls_mode {
            TlsMode::SelfManaged => TlsSource::SelfManaged(tls::SelfManaged {
                namespace: service_ns,
                secret_name: w.tls_secret_name.clone(),
                webhook_config: w.webhook_config_name.clone(),
                policy: tls::Policy {
                    names,
                    validity: w.cert_validity,
                },
                check_interval: w.tls_check_interval,
            }),
            TlsMode::CertManager => TlsSource::Files {
                cert: w.tls_cert_file.clone(),
                key: w.tls_key_file.clone(),
                interval: w.tls_check_interval,
            },
        };
        Some(Self {
            addr: w.webhook_addr,
            settings: Settings {
                operator_image: w.operator_image.clone(),
                operator_image_pull_policy: Some(w.operator_image_pull_policy.clone())
                    .filter(|p| !p.is_empty()),
            },
            tls,
            namespace: args.namespace.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Events.

/// Publishes Warning Events about pods that were admitted without (full) injection. The pod
/// does not exist yet (no uid, often no name), so the Event regards the pod's controller (its
/// ReplicaSet, StatefulSet or Job — where `kubectl describe` and `kubectl get events` show it),
/// or the pod by name when it has no controller. Rate-limited per object and reason; published
/// in the background so the admission answer never waits for it.
pub struct Events {
    recorder: Recorder,
    recent: Mutex<HashMap<String, Instant>>,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client, reporter),
            recent: Mutex::default(),
        }
    }

    fn warn(&self, pod: &Pod, namespace: &str, reason: &'static str, note: &str) {
        let regarding = regarding(pod, namespace);
        let key = format!(
            "{namespace}/{}/{}/{reason}",
            regarding.kind.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default()
        );
        {
            let Ok(mut recent) = self.recent.lock() else {
                return;
            };
            let now = Instant::now();
            recent.retain(|_, at| now.duration_since(*at) < EVENT_INTERVAL);
            if recent.contains_key(&key) {
                return;
            }
            recent.insert(key, now);
        }
        let recorder = self.recorder.clone();
        let note = crate::controller::status::truncate(note, 1000);
        tokio::spawn(async move {
            let ev = Event {
                type_: EventType::Warning,
                reason: reason.into(),
                note: Some(note),
                action: "InjectRequirements".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&ev, &regarding).await {
                warn!(error = %e, reason, "cannot publish the admission Event");
            }
        });
    }
}

/// The object an Event about a pod being admitted should regard.
fn regarding(pod: &Pod, namespace: &str) -> ObjectReference {
    if let Some(owner) = pod
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
    {
        return ObjectReference {
            api_version: Some(owner.api_version.clone()),
            kind: Some(owner.kind.clone()),
            name: Some(owner.name.clone()),
            namespace: Some(namespace.to_string()),
            uid: Some(owner.uid.clone()),
            ..ObjectReference::default()
        };
    }
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| {
            pod.metadata
                .generate_name
                .as_ref()
                .map(|g| g.trim_end_matches(['-', '.']).to_string())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "pod".into());
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name),
        namespace: Some(namespace.to_string()),
        ..ObjectReference::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The admission logic.

/// Shared state of the admission handler.
pub struct Admission {
    pub resources: Store<WorkspaceRequirements>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub events: Option<Events>,
    /// The namespace the resource cache covers (None: all), for messages.
    pub namespace: Option<String>,
}

/// An HTTP answer.
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub json: bool,
    /// Metric label: what happened.
    pub result: &'static str,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        let content_type = if self.json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        };
        (
            self.status,
            [(header::CONTENT_TYPE, content_type)],
            self.body,
        )
            .into_response()
    }
}

/// The outcome of one review before it is serialized.
struct Decision {
    response: AdmissionResponse,
    result: &'static str,
}

fn allow<T: kube::Resource>(req: &AdmissionRequest<T>, result: &'static str) -> Decision {
    Decision {
        response: AdmissionResponse::from(req),
        result,
    }
}

fn allow_with_warning<T: kube::Resource>(
    req: &AdmissionRequest<T>,
    result: &'static str,
    warning: String,
) -> Decision {
    let mut response = AdmissionResponse::from(req);
    response.warnings = Some(vec![warning]);
    Decision { response, result }
}

fn json_reply(status: StatusCode, review: &impl serde::Serialize, result: &'static str) -> Reply {
    match serde_json::to_vec(review) {
        Ok(body) => Reply {
            status,
            body,
            json: true,
            result,
        },
        Err(e) => Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: format!("cannot serialize the AdmissionReview: {e}").into_bytes(),
            json: false,
            result: "error",
        },
    }
}

/// `400` with an AdmissionReview-shaped `invalid` answer when the uid is known, else plain text.
fn invalid(uid: Option<String>, api_version: Option<String>, message: String) -> Reply {
    debug!(%message, "invalid admission request");
    match uid {
        Some(uid) => {
            let mut response = AdmissionResponse::invalid(&message);
            response.uid = uid;
            let mut review = response.into_review();
            if let Some(v) = api_version {
                review.types.api_version = v;
            }
            json_reply(StatusCode::BAD_REQUEST, &review, "invalid")
        }
        None => Reply {
            status: StatusCode::BAD_REQUEST,
            body: format!("{message}\n").into_bytes(),
            json: false,
            result: "invalid",
        },
    }
}

/// Kubernetes object names: DNS subdomains.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A warning when `pod` carries the injection marker but not the install container: the marker
/// was copied (typically from an injected pod into a pod template), so the webhook takes the pod
/// for injected and it runs without the packages.
fn copied_marker(pod: &Pod) -> Option<String> {
    let marked = pod
        .metadata
        .annotations
        .as_ref()?
        .contains_key(crate::crd::INJECTED_ANNOTATION);
    let installs = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == inject::INSTALL_CONTAINER));
    (marked && !installs).then(|| {
        format!(
            "bifrost-requirements: not injected: the pod carries the annotation {} but no {} init \
             container (copied into the pod template?); remove the annotation from the template",
            crate::crd::INJECTED_ANNOTATION,
            inject::INSTALL_CONTAINER
        )
    })
}

impl Admission {
    /// Answer one HTTP body. Never panics; every path produces a reply.
    pub async fn review(&self, body: &[u8]) -> Reply {
        // The common case parses straight into the typed review; anything else takes the slow
        // path below, which explains what is wrong.
        if let Ok(review) = serde_json::from_slice::<AdmissionReview<Pod>>(body)
            && let Ok(req) = TryInto::<AdmissionRequest<Pod>>::try_into(review)
        {
            let decision = if req.kind.kind == "Pod" && req.kind.group.is_empty() {
                self.decide(&req).await
            } else {
                allow(&req, "ignored")
            };
            return json_reply(
                StatusCode::OK,
                &decision.response.into_review(),
                decision.result,
            );
        }
        Self::diagnose(body)
    }

    /// Answer a body that is not a well-formed AdmissionReview of a Pod.
    fn diagnose(body: &[u8]) -> Reply {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return invalid(None, None, format!("the request body is not JSON: {e}")),
        };
        let uid = value
            .pointer("/request/uid")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        let api_version = value
            .get("apiVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let kind = value.pointer("/request/kind/kind").and_then(Value::as_str);
        let group = value.pointer("/request/kind/group").and_then(Value::as_str);
        if value.get("request").is_some()
            && (kind != Some("Pod") || !matches!(group, None | Some("")))
        {
            // Not a pod: not ours (a misconfigured rule); admit unchanged.
            return match serde_json::from_value::<AdmissionReview<DynamicObject>>(value) {
                Ok(review) => match TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) {
                    Ok(req) => {
                        let d = allow(&req, "ignored");
                        json_reply(StatusCode::OK, &d.response.into_review(), d.result)
                    }
                    Err(_) => invalid(
                        uid,
                        api_version,
                        "the AdmissionReview has no request".into(),
                    ),
                },
                Err(e) => invalid(uid, api_version, format!("not an AdmissionReview: {e}")),
            };
        }
        match serde_json::from_value::<AdmissionReview<Pod>>(value) {
            Ok(review) if review.request.is_none() => invalid(
                uid,
                api_version,
                "the AdmissionReview has no request".into(),
            ),
            Ok(_) => invalid(uid, api_version, "unexpected AdmissionReview".into()),
            Err(e) => invalid(
                uid,
                api_version,
                format!("not an AdmissionReview of a Pod: {e}"),
            ),
        }
    }

    async fn decide(&self, req: &AdmissionRequest<Pod>) -> Decision {
        if req.operation != Operation::Create {
            return allow(req, "ignored");
        }
        let Some(pod) = req.object.as_ref() else {
            return allow(req, "ignored");
        };
        let namespace = req
            .namespace
            .clone()
            .or_else(|| pod.metadata.namespace.clone())
            .unwrap_or_default();
        let name = match inject::opt_in(pod, &namespace) {
            OptIn::NotLabelled => return allow(req, "not-labelled"),
            OptIn::Excluded(why) => {
                debug!(namespace, why, "not mutating");
                return allow(req, "excluded");
            }
            OptIn::AlreadyInjected { warning: None } => {
                return match copied_marker(pod) {
                    None => allow(req, "already-injected"),
                    Some(w) => {
                        warn!(namespace, "{w}");
                        self.event(req, pod, &namespace, "RequirementsNotInjected", &w);
                        allow_with_warning(req, "already-injected", w)
                    }
                };
            }
            OptIn::AlreadyInjected { warning: Some(w) } => {
                warn!(namespace, "{w}");
                self.event(req, pod, &namespace, "RequirementsNotInjected", &w);
                return allow_with_warning(req, "already-injected", w);
            }
            OptIn::Requested(name) => name,
        };
        let pod_name = pod
            .metadata
            .name
            .clone()
            .or_else(|| pod.metadata.generate_name.clone())
            .unwrap_or_default();

        if !valid_name(name) {
            let w = format!(
                "label {OPT_IN_LABEL}={name:?} does not name a WorkspaceRequirements; the pod runs without the requirements"
            );
            self.event(req, pod, &namespace, "RequirementsNotFound", &w);
            return allow_with_warning(req, "unknown-resource", w);
        }
        let ready = match self.resources.wait_until_ready().now_or_never() {
            Some(r) => r.is_ok(),
            None => tokio::time::timeout(CACHE_WAIT, self.resources.wait_until_ready())
                .await
                .is_ok_and(|r| r.is_ok()),
        };
        if !ready {
            let w = "bifrost-requirements webhook: the WorkspaceRequirements cache is not ready yet; the pod runs without the requirements".to_string();
            warn!(namespace, pod = %pod_name, "{w}");
            return allow_with_warning(req, "error", w);
        }
        let Some(resource) = self.resources.get(&ObjectRef::new(name).within(&namespace)) else {
            let scope = match &self.namespace {
                Some(ns) if *ns != namespace => {
                    format!(" (the operator watches namespace {ns} only)")
                }
                _ => String::new(),
            };
            let w = format!(
                "WorkspaceRequirements {namespace}/{name} (label {OPT_IN_LABEL}) does not exist{scope}; \
                 the pod runs without the requirements"
            );
            warn!(namespace, pod = %pod_name, "{w}");
            self.event(req, pod, &namespace, "RequirementsNotFound", &w);
            return allow_with_warning(req, "unknown-resource", w);
        };

        // A spec the API server (or the installer) would refuse injects nothing: the pod is
        // admitted as it is, which the controller counts as uninjected and reports (Valid=False).
        if let Err(problems) = crate::spec::validate(&resource) {
            let more = match problems.0.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            let w = format!(
                "WorkspaceRequirements {namespace}/{name} is invalid: {}{more}; the pod runs \
                 without the requirements",
                problems.0[0]
            );
            warn!(namespace, pod = %pod_name, "{w}");
            let full = format!(
                "WorkspaceRequirements {namespace}/{name} is invalid ({}: {problems}); the pod runs without the requirements",
                problems.reason().as_str()
            );
            self.event(req, pod, &namespace, "RequirementsInvalid", &full);
            return allow_with_warning(
                req,
                "invalid-resource",
                crate::controller::status::truncate(&w, 500),
            );
        }

        // `plan` is pure and does not panic; the guard is a last line of defence so that even
        // a bug admits the pod instead of dropping the connection.
        let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inject::plan(pod, &resource, &self.settings)
        }))
        .unwrap_or_else(|_| {
            Err(NotInjected(
                "internal error while building the patch".into(),
            ))
        });
        let plan = match planned {
            Ok(p) => p,
            Err(NotInjected(why)) => {
                let w = format!("bifrost-requirements: not injected: {why}");
                warn!(namespace, pod = %pod_name, "{w}");
                self.event(req, pod, &namespace, "RequirementsNotInjected", &w);
                return allow_with_warning(req, "not-injected", w);
            }
        };
        for w in &plan.warnings {
            warn!(namespace, pod = %pod_name, "{w}");
            self.event(req, pod, &namespace, "RequirementsPartiallyInjected", w);
        }
        let warnings = plan.warnings.clone();
        let hash = plan.hash.clone();
        match AdmissionResponse::from(req).with_patch(plan.patch) {
            Ok(mut response) => {
                info!(namespace, pod = %pod_name, resource = name, hash = %&hash[..12.min(hash.len())],
                      containers = ?plan.containers, "injected the requirements installer");
                if !warnings.is_empty() {
                    response.warnings = Some(warnings);
                }
                Decision {
                    response,
                    result: "injected",
                }
            }
            Err(e) => {
                error!(error = %e, "cannot serialize the patch");
                allow_with_warning(
                    req,
                    "error",
                    format!("bifrost-requirements: internal error: {e}"),
                )
            }
        }
    }

    fn event(
        &self,
        req: &AdmissionRequest<Pod>,
        pod: &Pod,
        namespace: &str,
        reason: &'static str,
        note: &str,
    ) {
        if req.dry_run {
            return;
        }
        if let Some(events) = &self.events {
            events.warn(pod, namespace, reason, note);
        }
    }
}

async fn mutate(State(state): State<Arc<Admission>>, body: Bytes) -> Reply {
    let started = Instant::now();
    let reply = state.review(&body).await;
    state.metrics.admission(reply.result, started.elapsed());
    reply
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: the webhook serves POST /mutate\n",
    )
}

/// The HTTP routes: `POST /mutate`; other methods there get 405, other paths 404.
pub fn router(state: Arc<Admission>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(mutate))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Serving.

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
    loop {
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
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
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
                .header_read_timeout(Duration::from_secs(30))
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
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Resolves once the shutdown flag is raised (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Bind `addr`, retrying until it works or `shutdown`: a taken port is logged, never fatal (the
/// controller keeps working; pods are admitted without injection meanwhile).
async fn bind(addr: SocketAddr, shutdown: &mut watch::Receiver<bool>) -> Option<TcpListener> {
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

/// Run the webhook (certificates, resource cache, HTTPS server) until the supervisor's stop
/// signal; each part is a supervised task (restarted when it dies, reported on `/healthz`).
pub async fn run(
    client: Client,
    config: WebhookConfig,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    resolver: Arc<tls::CertResolver>,
    tasks: Supervisor,
) -> Result<()> {
    let stop_rx = tasks.stop().receiver();
    let restart = OnExit::Restart(Backoff::default());
    let server_config = tls::server_config(resolver.clone())?;
    let certs = match config.tls.clone() {
        TlsSource::SelfManaged(sm) => {
            info!(secret = %sm.secret_name, namespace = %sm.namespace, names = ?sm.policy.names,
                  webhook_config = %sm.webhook_config, "webhook TLS: self-managed");
            let (client, resolver, stop) = (client.clone(), resolver.clone(), stop_rx.clone());
            tasks.spawn("webhook-certificates", restart, move || {
                sm.clone()
                    .run(client.clone(), resolver.clone(), stop.clone())
                    .map(Ok::<(), Infallible>)
            })
        }
        TlsSource::Files {
            cert,
            key,
            interval,
        } => {
            info!(cert = %cert.display(), key = %key.display(), "webhook TLS: mounted files (cert-manager)");
            let (resolver, stop) = (resolver.clone(), stop_rx.clone());
            tasks.spawn("webhook-certificates", restart, move || {
                tls::watch_files(
                    cert.clone(),
                    key.clone(),
                    interval,
                    resolver.clone(),
                    stop.clone(),
                )
                .map(Ok::<(), Infallible>)
            })
        }
    };

    // The resource cache every request reads.
    let api: Api<WorkspaceRequirements> = match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (store, writer) = reflector::store();
    // A restarted cache task resumes feeding the same store (its writer is shared), so requests
    // keep reading it meanwhile.
    let writer = Arc::new(tokio::sync::Mutex::new(writer));
    let cache = {
        let stop = stop_rx.clone();
        tasks.spawn("webhook-cache", restart, move || {
            feed_cache(api.clone(), writer.clone(), stop.clone())
        })
    };

    let state = Arc::new(Admission {
        resources: store,
        settings: config.settings.clone(),
        metrics,
        events: Some(Events::new(client, reporter)),
        namespace: config.namespace.clone(),
    });
    let app = router(state);
    let addr = config.addr;
    let server = tasks.spawn("webhook-server", restart, move || {
        let (app, server_config, mut stop) = (app.clone(), server_config.clone(), stop_rx.clone());
        async move {
            if let Some(listener) = bind(addr, &mut stop).await {
                info!(%addr, path = MUTATE_PATH, "serving the admission webhook (HTTPS)");
                serve_tls(listener, server_config, app, stop).await;
            }
            Ok::<(), Infallible>(())
        }
    });
    let _ = server.await;
    let _ = cache.await;
    let _ = certs.await;
    info!("admission webhook stopped");
    Ok(())
}

/// Watch `WorkspaceRequirements` into the admission cache until `stop`; a watch error is
/// retried by the watcher's own backoff, an ended stream is this task's failure.
async fn feed_cache(
    api: Api<WorkspaceRequirements>,
    writer: Arc<tokio::sync::Mutex<reflector::store::Writer<WorkspaceRequirements>>>,
    mut stop: watch::Receiver<bool>,
) -> std::result::Result<(), &'static str> {
    let mut writer = writer.lock().await;
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|r: &mut WorkspaceRequirements| r.managed_fields_mut().clear());
    let mut stream = std::pin::pin!(stream);
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(ev)) => writer.apply_watcher_event(&ev),
                Some(Err(e)) => warn!(error = %e, "webhook: watching WorkspaceRequirements failed; retrying"),
                None => return Err("the WorkspaceRequirements watch ended"),
            },
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// The shipped MutatingWebhookConfiguration, parsed (for tests and tools).
pub fn webhook_configuration()
-> Result<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> {
    serde_yaml::from_str(WEBHOOK_CONFIGURATION_YAML)
        .map_err(|e| Error::Serialization(format!("deploy/webhook.yaml: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event as WatchEvent;
    use serde_json::json;

    fn admission(resources: Vec<WorkspaceRequirements>) -> Admission {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&WatchEvent::Init);
        for r in resources {
            writer.apply_watcher_event(&WatchEvent::InitApply(r));
        }
        writer.apply_watcher_event(&WatchEvent::InitDone);
        Admission {
            resources: store,
            settings: Settings::default(),
            metrics: Arc::new(Metrics::new()),
            events: None,
            namespace: None,
        }
    }

    fn resource(ns: &str, name: &str) -> WorkspaceRequirements {
        let mut r = WorkspaceRequirements::new(name, Default::default());
        r.metadata.namespace = Some(ns.into());
        r.spec.content = "requests==2.32.3\n".into();
        r
    }

    fn review(pod: Value) -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "bifrost", "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": pod, "dryRun": false
            }
        })
    }

    fn worker(label: Option<&str>) -> Value {
        let mut labels = json!({"app": "worker"});
        if let Some(l) = label {
            labels[OPT_IN_LABEL] = json!(l);
        }
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "worker-", "namespace": "bifrost", "labels": labels},
               "spec": {"containers": [{"name": "worker", "image": "bifrost/worker"}]}})
    }

    async fn answer(a: &Admission, body: &[u8]) -> (Reply, Value) {
        let reply = a.review(body).await;
        let v = if reply.json {
            serde_json::from_slice(&reply.body).expect("JSON reply")
        } else {
            Value::Null
        };
        (reply, v)
    }

    #[tokio::test]
    async fn injects_labelled_pods() {
        let a = admission(vec![resource("bifrost", "default")]);
        let body = serde_json::to_vec(&review(worker(Some("default")))).unwrap();
        let (reply, v) = answer(&a, &body).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.result, "injected");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        let resp = &v["response"];
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        // kube-core serializes the patch bytes as a JSON array of numbers, which the API
        // server's decoder accepts for a []byte field (proven by tests/webhook.rs).
        let bytes: Vec<u8> = serde_json::from_value(resp["patch"].clone()).expect("patch bytes");
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON patch");
        assert!(ops.0.iter().any(|op| op.path() == "/metadata/annotations"));
    }

    #[tokio::test]
    async fn admits_unchanged_when_not_ours() {
        let a = admission(vec![resource("bifrost", "default")]);
        for (pod, result, warned) in [
            (worker(None), "not-labelled", false),
            (worker(Some("missing")), "unknown-resource", true),
            (worker(Some("Not A Name")), "unknown-resource", true),
        ] {
            let (reply, v) = answer(&a, &serde_json::to_vec(&review(pod)).unwrap()).await;
            assert_eq!((reply.status, reply.result), (StatusCode::OK, result));
            assert_eq!(v["response"]["allowed"], true);
            assert!(v["response"].get("patch").is_none(), "{v}");
            assert_eq!(v["response"].get("warnings").is_some(), warned, "{v}");
        }
        let mut system = review(worker(Some("default")));
        system["request"]["namespace"] = json!("kube-system");
        let (reply, v) = answer(&a, &serde_json::to_vec(&system).unwrap()).await;
        assert_eq!(reply.result, "excluded");
        assert!(v["response"].get("patch").is_none());
        let mut update = review(worker(Some("default")));
        update["request"]["operation"] = json!("UPDATE");
        assert_eq!(
            answer(&a, &serde_json::to_vec(&update).unwrap())
                .await
                .0
                .result,
            "ignored"
        );
        let mut deployment = review(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}),
        );
        deployment["request"]["kind"] =
            json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        let (reply, v) = answer(&a, &serde_json::to_vec(&deployment).unwrap()).await;
        assert_eq!((reply.status, reply.result), (StatusCode::OK, "ignored"));
        assert_eq!(v["response"]["allowed"], true);
    }

    #[tokio::test]
    async fn an_invalid_spec_injects_nothing() {
        let mut bad = resource("bifrost", "default");
        bad.spec.install.size_limit = "-1Gi".into();
        let mut empty = resource("bifrost", "empty");
        empty.spec.content = String::new();
        let a = admission(vec![bad, empty]);
        for (name, needle) in [
            ("default", "spec.install.sizeLimit"),
            ("empty", "spec.content"),
        ] {
            let body = serde_json::to_vec(&review(worker(Some(name)))).unwrap();
            let (reply, v) = answer(&a, &body).await;
            assert_eq!(
                (reply.status, reply.result),
                (StatusCode::OK, "invalid-resource")
            );
            assert_eq!(v["response"]["allowed"], true);
            assert!(v["response"].get("patch").is_none(), "{v}");
            let w = v["response"]["warnings"][0].as_str().unwrap();
            assert!(
                w.contains(needle) && w.contains("without the requirements"),
                "{w}"
            );
        }
    }

    #[tokio::test]
    async fn a_copied_marker_is_called_out() {
        let a = admission(vec![resource("bifrost", "default")]);
        let mut pod = worker(Some("default"));
        pod["metadata"]["annotations"] = json!({crate::crd::INJECTED_ANNOTATION: "abc"});
        let (reply, v) = answer(&a, &serde_json::to_vec(&review(pod)).unwrap()).await;
        assert_eq!(reply.result, "already-injected");
        assert!(v["response"].get("patch").is_none(), "{v}");
        let w = v["response"]["warnings"][0].as_str().unwrap();
        assert!(w.contains("copied"), "{w}");
    }

    #[tokio::test]
    async fn malformed_bodies_get_400() {
        let a = admission(vec![]);
        let (reply, _) = answer(&a, b"{not json").await;
        assert_eq!((reply.status, reply.json), (StatusCode::BAD_REQUEST, false));
        let (reply, _) = answer(&a, b"[1,2]").await;
        assert_eq!((reply.status, reply.json), (StatusCode::BAD_REQUEST, false));
        // A uid can be recovered: AdmissionReview-shaped `invalid` answer.
        let mut broken = review(worker(Some("default")));
        broken["request"]["object"]["spec"]["containers"] = json!("not a list");
        let (reply, v) = answer(&a, &serde_json::to_vec(&broken).unwrap()).await;
        assert_eq!(
            (reply.status, reply.result),
            (StatusCode::BAD_REQUEST, "invalid")
        );
        assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["reason"], "InvalidRequest");
        let (reply, _) = answer(
            &a,
            br#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}"#,
        )
        .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn cache_not_ready_admits_with_a_warning() {
        let (store, _writer) = reflector::store::<WorkspaceRequirements>();
        let a = Admission {
            resources: store,
            settings: Settings::default(),
            metrics: Arc::new(Metrics::new()),
            events: None,
            namespace: None,
        };
        let started = Instant::now();
        let (reply, v) = answer(
            &a,
            &serde_json::to_vec(&review(worker(Some("default")))).unwrap(),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!((reply.status, reply.result), (StatusCode::OK, "error"));
        assert_eq!(v["response"]["allowed"], true);
        assert!(
            v["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("not ready")
        );
    }

    #[test]
    fn events_regard_the_controller() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": "worker-5d9c7-", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "worker-5d9c7", "uid": "u1", "controller": true}
            ]}
        }))
        .unwrap();
        let r = regarding(&pod, "bifrost");
        assert_eq!(
            (r.kind.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("ReplicaSet"), Some("worker-5d9c7"), Some("u1"))
        );
        let bare: Pod =
            serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
        assert_eq!(regarding(&bare, "bifrost").name.as_deref(), Some("job"));
    }

    #[test]
    fn shipped_configuration_has_the_required_settings() {
        let c = webhook_configuration().expect("deploy/webhook.yaml parses");
        let hooks = c.webhooks.expect("webhooks");
        assert_eq!(hooks.len(), 1);
        let w = &hooks[0];
        assert_eq!(w.failure_policy.as_deref(), Some("Ignore"));
        assert!(w.timeout_seconds.is_some_and(|t| t <= 10));
        assert_eq!(w.side_effects, "None");
        assert_eq!(w.admission_review_versions, ["v1"]);
        assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let rule = &w.rules.as_ref().unwrap()[0];
        assert_eq!(
            rule.operations.as_deref(),
            Some(&["CREATE".to_string()][..])
        );
        assert_eq!(rule.resources.as_deref(), Some(&["pods".to_string()][..]));
        let sel = w
            .object_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(
            (sel[0].key.as_str(), sel[0].operator.as_str()),
            (OPT_IN_LABEL, "Exists")
        );
        assert_eq!(
            w.client_config.service.as_ref().unwrap().path.as_deref(),
            Some(MUTATE_PATH)
        );
    }
}
