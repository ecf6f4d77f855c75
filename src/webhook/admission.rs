//! The admission decisions: from an HTTP body to an answer. A pod is never refused; whatever
//! goes wrong, it is admitted unchanged with a warning (and an Event), and every path has a
//! result label for the metrics.

use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::events::Events;
use super::inject::{self, NotInjected, OptIn, Plan, Settings};
use crate::crd::{INJECTED_ANNOTATION, OPT_IN_LABEL, WorkspaceRequirements};
use crate::metrics::Metrics;

/// How long a request waits for the resource cache's first listing.
const CACHE_WAIT: Duration = Duration::from_secs(2);
/// Longest warning returned for an invalid resource: `kubectl` prints warnings in full, and the
/// whole list of problems is in the Event and the resource's status.
const WARNING_LIMIT: usize = 500;

/// Shared state of the admission handler.
pub struct Admission {
    pub resources: Store<WorkspaceRequirements>,
    /// True once `resources` holds its first listing ([`crate::watch::Resources::listed_signal`]):
    /// every concurrent request waits on it, which kube's `Store::wait_until_ready` cannot offer
    /// (it wakes only the last of several waiters, the others would time out).
    pub listed: watch::Receiver<bool>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub events: Option<Events>,
    /// The namespace the resource cache covers (None: all), for messages.
    pub namespace: Option<String>,
}

/// An HTTP answer.
pub(crate) struct Reply {
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

/// A pod CREATE under review: what every answer, log line and Event about it needs.
struct PodCreate<'a> {
    req: &'a AdmissionRequest<Pod>,
    pod: &'a Pod,
    namespace: String,
    /// The pod's name, or its `generateName` prefix (for logs).
    name: String,
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

fn decision_reply(decision: Decision) -> Reply {
    json_reply(
        StatusCode::OK,
        &decision.response.into_review(),
        decision.result,
    )
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
        .contains_key(INJECTED_ANNOTATION);
    let installs = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == inject::INSTALL_CONTAINER));
    (marked && !installs).then(|| {
        format!(
            "bifrost-requirements: not injected: the pod carries the annotation {} but no {} init \
             container (copied into the pod template?); remove the annotation from the template",
            INJECTED_ANNOTATION,
            inject::INSTALL_CONTAINER
        )
    })
}

impl Admission {
    /// Answer one HTTP body. Never panics; every path produces a reply.
    pub(crate) async fn review(&self, body: &[u8]) -> Reply {
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
            return decision_reply(decision);
        }
        diagnose(body)
    }

    async fn decide(&self, req: &AdmissionRequest<Pod>) -> Decision {
        if req.operation != Operation::Create {
            return allow(req, "ignored");
        }
        let Some(pod) = req.object.as_ref() else {
            return allow(req, "ignored");
        };
        let create = PodCreate {
            req,
            pod,
            namespace: req
                .namespace
                .clone()
                .or_else(|| pod.metadata.namespace.clone())
                .unwrap_or_default(),
            name: pod
                .metadata
                .name
                .clone()
                .or_else(|| pod.metadata.generate_name.clone())
                .unwrap_or_default(),
        };
        let name = match self.requested(&create) {
            Continue(name) => name,
            Break(d) => return d,
        };
        let resource = match self.resource(&create, name).await {
            Continue(r) => r,
            Break(d) => return d,
        };
        match self.plan(&create, name, &resource) {
            Continue(plan) => self.patch(&create, name, plan),
            Break(d) => d,
        }
    }

    /// The name of the `WorkspaceRequirements` the pod asks for, or the answer when it asks for
    /// none (not labelled, excluded, already injected, not a name).
    fn requested<'a>(&self, c: &PodCreate<'a>) -> ControlFlow<Decision, &'a str> {
        let namespace = c.namespace.as_str();
        match inject::opt_in(c.pod, namespace, &self.settings.scope) {
            OptIn::NotLabelled => Break(allow(c.req, "not-labelled")),
            OptIn::Excluded(why) => {
                debug!(namespace, why, "not mutating");
                Break(allow(c.req, "excluded"))
            }
            OptIn::AlreadyInjected { warning } => match warning.or_else(|| copied_marker(c.pod)) {
                None => Break(allow(c.req, "already-injected")),
                Some(w) => {
                    warn!(namespace, "{w}");
                    self.event(c, "RequirementsNotInjected", &w);
                    Break(allow_with_warning(c.req, "already-injected", w))
                }
            },
            OptIn::Requested(name) if !valid_name(name) => {
                let w = format!(
                    "label {OPT_IN_LABEL}={name:?} does not name a WorkspaceRequirements; the pod runs without the requirements"
                );
                self.event(c, "RequirementsNotFound", &w);
                Break(allow_with_warning(c.req, "unknown-resource", w))
            }
            OptIn::Requested(name) => Continue(name),
        }
    }

    /// The named resource from the cache (waiting a little for its first listing).
    async fn resource(
        &self,
        c: &PodCreate<'_>,
        name: &str,
    ) -> ControlFlow<Decision, Arc<WorkspaceRequirements>> {
        if !self.cache_ready().await {
            let w = "bifrost-requirements webhook: the WorkspaceRequirements cache is not ready yet; the pod runs without the requirements".to_string();
            warn!(namespace = c.namespace, pod = %c.name, "{w}");
            return Break(allow_with_warning(c.req, "error", w));
        }
        let namespace = &c.namespace;
        if let Some(resource) = self.resources.get(&ObjectRef::new(name).within(namespace)) {
            return Continue(resource);
        }
        let scope = match &self.namespace {
            Some(ns) if ns != namespace => format!(" (the operator watches namespace {ns} only)"),
            _ => String::new(),
        };
        let w = format!(
            "WorkspaceRequirements {namespace}/{name} (label {OPT_IN_LABEL}) does not exist{scope}; \
             the pod runs without the requirements"
        );
        Break(self.not_injected(c, "unknown-resource", "RequirementsNotFound", w))
    }

    async fn cache_ready(&self) -> bool {
        let mut listed = self.listed.clone();
        tokio::time::timeout(CACHE_WAIT, listed.wait_for(|l| *l))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The patch for the pod, or why it gets none.
    fn plan(
        &self,
        c: &PodCreate<'_>,
        name: &str,
        resource: &WorkspaceRequirements,
    ) -> ControlFlow<Decision, Plan> {
        self.check_spec(c, name, resource)?;
        // `plan` is pure and does not panic; the guard is a last line of defence so that even
        // a bug admits the pod instead of dropping the connection.
        let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            inject::plan(c.pod, resource, &self.settings)
        }))
        .unwrap_or_else(|_| {
            Err(NotInjected(
                "internal error while building the patch".into(),
            ))
        });
        match planned {
            Ok(plan) => Continue(plan),
            Err(NotInjected(why)) => {
                let w = format!("bifrost-requirements: not injected: {why}");
                Break(self.not_injected(c, "not-injected", "RequirementsNotInjected", w))
            }
        }
    }

    /// A spec the API server (or the installer) would refuse injects nothing: the pod is
    /// admitted as it is, which the controller counts as uninjected and reports (Valid=False).
    fn check_spec(
        &self,
        c: &PodCreate<'_>,
        name: &str,
        resource: &WorkspaceRequirements,
    ) -> ControlFlow<Decision> {
        let Err(problems) = crate::spec::validate(resource) else {
            return Continue(());
        };
        let namespace = &c.namespace;
        let more = match problems.0.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let w = format!(
            "WorkspaceRequirements {namespace}/{name} is invalid: {}{more}; the pod runs \
             without the requirements",
            problems.0[0]
        );
        warn!(namespace, pod = %c.name, "{w}");
        let full = format!(
            "WorkspaceRequirements {namespace}/{name} is invalid ({}: {problems}); the pod runs without the requirements",
            problems.reason().as_str()
        );
        self.event(c, "RequirementsInvalid", &full);
        Break(allow_with_warning(
            c.req,
            "invalid-resource",
            crate::text::truncate(&w, WARNING_LIMIT),
        ))
    }

    /// Admit with the plan's patch; its warnings go back to the pod's creator and into Events.
    fn patch(&self, c: &PodCreate<'_>, name: &str, plan: Plan) -> Decision {
        let namespace = &c.namespace;
        for w in &plan.warnings {
            warn!(namespace, pod = %c.name, "{w}");
            self.event(c, "RequirementsPartiallyInjected", w);
        }
        let Plan {
            patch,
            hash,
            containers,
            warnings,
        } = plan;
        match AdmissionResponse::from(c.req).with_patch(patch) {
            Ok(mut response) => {
                info!(namespace, pod = %c.name, resource = name, hash = %&hash[..12.min(hash.len())],
                      containers = ?containers, "injected the requirements installer");
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
                    c.req,
                    "error",
                    format!("bifrost-requirements: internal error: {e}"),
                )
            }
        }
    }

    /// Admit unchanged with `warning`, logged and published as an Event with `reason`.
    fn not_injected(
        &self,
        c: &PodCreate<'_>,
        result: &'static str,
        reason: &'static str,
        warning: String,
    ) -> Decision {
        warn!(namespace = c.namespace, pod = %c.name, "{warning}");
        self.event(c, reason, &warning);
        allow_with_warning(c.req, result, warning)
    }

    /// Publish a Warning Event about the pod (not for dry runs: nothing is created).
    fn event(&self, c: &PodCreate<'_>, reason: &'static str, note: &str) {
        if c.req.dry_run {
            return;
        }
        if let Some(events) = &self.events {
            events.warn(c.pod, &c.namespace, reason, note);
        }
    }
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
    if value.get("request").is_some() && (kind != Some("Pod") || !matches!(group, None | Some("")))
    {
        return not_a_pod(value, uid, api_version);
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

/// A review of something other than a pod is not ours (a misconfigured rule): admitted
/// unchanged when it is a well-formed review at all.
fn not_a_pod(value: Value, uid: Option<String>, api_version: Option<String>) -> Reply {
    match serde_json::from_value::<AdmissionReview<DynamicObject>>(value) {
        Ok(review) => match TryInto::<AdmissionRequest<DynamicObject>>::try_into(review) {
            Ok(req) => decision_reply(allow(&req, "ignored")),
            Err(_) => invalid(
                uid,
                api_version,
                "the AdmissionReview has no request".into(),
            ),
        },
        Err(e) => invalid(uid, api_version, format!("not an AdmissionReview: {e}")),
    }
}
