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

pub mod inject;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
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
        let note = crate::controller::status::truncate(&crate::redact::text(note), 1000);
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

/// A request refused before its review: plain text, and the connection is closed (its body may
/// be unread, so it cannot carry another request).
struct Refused {
    status: StatusCode,
    message: String,
    result: &'static str,
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
) -> std::result::Result<(Vec<u8>, Option<OwnedSemaphorePermit>), Refused> {
    let too_large = |what: String| Refused {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        message: format!(
            "{what}; the webhook accepts AdmissionReviews of at most {BODY_LIMIT} bytes"
        ),
        result: "too-large",
    };
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            Some(n) => Some(n),
            None => {
                return Err(Refused {
                    status: StatusCode::BAD_REQUEST,
                    message: "invalid Content-Length".into(),
                    result: "invalid",
                });
            }
        },
    };
    if let Some(n) = declared.filter(|n| *n > BODY_LIMIT as u64) {
        return Err(too_large(format!("the body announces {n} bytes")));
    }
    let read = async {
        let mut slot = None;
        if declared.is_some_and(|n| n > LARGE_BODY as u64) {
            slot = Some(large_slot(large).await);
        }
        let mut buf = Vec::with_capacity(declared.map_or(8 * 1024, |n| n as usize));
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Refused {
                status: StatusCode::BAD_REQUEST,
                message: format!("cannot read the request body: {e}"),
                result: "invalid",
            })?;
            if buf.len() + chunk.len() > BODY_LIMIT {
                return Err(too_large(format!(
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
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
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

async fn large_slot(large: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    // The semaphore is never closed; should that change, waiting forever is still bounded by the
    // caller's timeout.
    match large.clone().acquire_owned().await {
        Ok(p) => p,
        Err(_) => std::future::pending().await,
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found: the webhook serves POST /mutate\n",
    )
}

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
        let acceptor = acceptor.clone();
        let app = app.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            let _slot = slot;
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

    /// Generated inputs on the admission entry point: whatever the body, `review` answers (no
    /// panic), with 400 or an allowed review; a patch only for a pod that really names an
    /// existing resource, and every patch applies to the pod it was computed for.
    mod generated {
        use super::*;
        use proptest::prelude::*;

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        }

        /// Strings that break naive code: quotes, JSON-pointer and patch syntax, control and
        /// non-ASCII characters, shell metacharacters, very long runs.
        fn hostile_string() -> impl Strategy<Value = String> {
            prop_oneof![
                ".{0,40}",
                "[a-z0-9.-]{1,70}",
                Just("default".to_string()),
                Just("default ".to_string()),
                Just("Default".to_string()),
                Just("default\u{0}".to_string()),
                Just("~1spec~0/../\"\\".to_string()),
                Just("$(rm -rf /); `id`".to_string()),
                Just("\u{202e}default".to_string()),
                (1usize..200_000).prop_map(|n| "a".repeat(n)),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| json!(f)),
                hostile_string().prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(hostile_string(), inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// `depth` levels of arrays or objects around a value, as text (a `Value` that deep
        /// would overflow the test's own stack when dropped; serde_json stops parsing at 128).
        fn nested(depth: usize, object: bool) -> String {
            let (open, close) = if object { ("{\"a\":", "}") } else { ("[", "]") };
            format!("{}\"bottom\"{}", open.repeat(depth), close.repeat(depth))
        }

        const POINTERS: &[&str] = &[
            "",
            "/apiVersion",
            "/kind",
            "/request",
            "/request/uid",
            "/request/kind",
            "/request/kind/kind",
            "/request/kind/group",
            "/request/namespace",
            "/request/operation",
            "/request/dryRun",
            "/request/object",
            "/request/object/metadata",
            "/request/object/metadata/name",
            "/request/object/metadata/labels",
            "/request/object/metadata/labels/bifrost.io~1requirements",
            "/request/object/metadata/annotations",
            "/request/object/metadata/ownerReferences",
            "/request/object/spec",
            "/request/object/spec/containers",
            "/request/object/spec/containers/0",
            "/request/object/spec/containers/0/name",
            "/request/object/spec/containers/0/env",
            "/request/object/spec/containers/0/volumeMounts",
            "/request/object/spec/initContainers",
            "/request/object/spec/volumes",
        ];

        fn set(root: &mut Value, pointer: &str, v: Value) {
            if pointer.is_empty() {
                *root = v;
                return;
            }
            let (parent, last) = pointer.rsplit_once('/').unwrap();
            let key = last.replace("~1", "/").replace("~0", "~");
            match root.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.insert(key, v);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>()
                        && i < a.len()
                    {
                        a[i] = v;
                    }
                }
                _ => {}
            }
        }

        /// Check one answer against the contract; returns a failure description.
        fn check(body: &[u8], reply: &Reply) -> std::result::Result<(), String> {
            match reply.status {
                StatusCode::BAD_REQUEST => return Ok(()),
                StatusCode::OK => {}
                other => return Err(format!("status {other}")),
            }
            let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
            let resp = &v["response"];
            if resp["allowed"] != json!(true) {
                return Err(format!("200 without allowed=true: {v}"));
            }
            let Some(patch) = resp.get("patch") else {
                return Ok(());
            };
            // A patch: the request, read as the server reads it, must be a CREATE of a pod in
            // bifrost labelled `default`.
            let sent: AdmissionReview<Pod> = serde_json::from_slice(body)
                .map_err(|e| format!("patched an unparsable body: {e}"))?;
            let req: AdmissionRequest<Pod> = sent.try_into().map_err(|e| format!("{e:?}"))?;
            let pod = req
                .object
                .clone()
                .ok_or("patched a request without an object")?;
            let namespace = req.namespace.clone().or(pod.metadata.namespace.clone());
            let label = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(OPT_IN_LABEL));
            if label.map(String::as_str) != Some("default")
                || req.operation != Operation::Create
                || namespace.as_deref() != Some("bifrost")
                || reply.result != "injected"
            {
                return Err(format!(
                    "patched a request that names no resource: {}",
                    reply.result
                ));
            }
            let bytes: Vec<u8> =
                serde_json::from_value(patch.clone()).map_err(|e| e.to_string())?;
            let ops: json_patch::Patch = serde_json::from_slice(&bytes)
                .map_err(|e| format!("patch is not a JSON patch: {e}"))?;
            // The API server applies the patch to the object it sent (here: as the typed Pod
            // serializes it); it must apply cleanly.
            let mut doc = serde_json::to_value(&pod).unwrap();
            json_patch::patch(&mut doc, &ops).map_err(|e| format!("patch does not apply: {e}"))?;
            Ok(())
        }

        fn base() -> Value {
            review(worker(Some("default")))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2500, ..ProptestConfig::default() })]

            #[test]
            fn random_bytes(body in prop::collection::vec(any::<u8>(), 0..2048)) {
                let a = admission(vec![resource("bifrost", "default")]);
                let reply = runtime().block_on(a.review(&body));
                prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
            }

            #[test]
            fn mutated_reviews(
                edits in prop::collection::vec((prop::sample::select(POINTERS), json_value()), 1..4),
            ) {
                let a = admission(vec![resource("bifrost", "default")]);
                let mut v = base();
                for (pointer, value) in edits {
                    set(&mut v, pointer, value);
                }
                let body = serde_json::to_vec(&v).unwrap();
                let reply = runtime().block_on(a.review(&body));
                prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
            }

            #[test]
            fn deep_nesting(pointer in prop::sample::select(POINTERS), depth in 100usize..3000, object: bool) {
                let a = admission(vec![resource("bifrost", "default")]);
                let mut v = base();
                set(&mut v, pointer, json!("__deep__"));
                let body = serde_json::to_string(&v)
                    .unwrap()
                    .replacen("\"__deep__\"", &nested(depth, object), 1)
                    .into_bytes();
                let reply = runtime().block_on(a.review(&body));
                prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
            }

            #[test]
            fn mutated_bytes(
                edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8),
            ) {
                let a = admission(vec![resource("bifrost", "default")]);
                let mut body = serde_json::to_vec(&base()).unwrap();
                for (at, byte, op) in edits {
                    let i = at.index(body.len());
                    match op {
                        0 => body[i] = byte,
                        1 => body.insert(i, byte),
                        _ => { body.remove(i); }
                    }
                }
                let reply = runtime().block_on(a.review(&body));
                prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
            }

            #[test]
            fn hostile_labels_and_names(label in hostile_string(), name in hostile_string(), ns in hostile_string()) {
                let a = admission(vec![resource("bifrost", "default")]);
                let mut v = base();
                set(&mut v, "/request/object/metadata/labels/bifrost.io~1requirements", json!(label));
                set(&mut v, "/request/object/metadata/name", json!(name));
                set(&mut v, "/request/namespace", json!(ns));
                let body = serde_json::to_vec(&v).unwrap();
                let reply = runtime().block_on(a.review(&body));
                prop_assert!(check(&body, &reply).is_ok(), "{:?}", check(&body, &reply));
                if label != "default" || ns != "bifrost" {
                    prop_assert_ne!(reply.result, "injected");
                }
            }
        }

        /// The unmutated base case really is injected (else the properties above prove little).
        #[test]
        fn the_base_review_is_injected() {
            let a = admission(vec![resource("bifrost", "default")]);
            let body = serde_json::to_vec(&base()).unwrap();
            let reply = runtime().block_on(a.review(&body));
            assert_eq!(reply.result, "injected");
            check(&body, &reply).unwrap();
        }
    }
}
