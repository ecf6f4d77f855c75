//! Warning Events about pods admitted without (full) injection.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

/// One Warning Event per (regarding object, reason) in this window.
const EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// Longest Event note; the API server refuses notes over 1 KiB.
const NOTE_LIMIT: usize = 1000;

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
    pub(crate) fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            recorder: Recorder::new(client, reporter),
            recent: Mutex::default(),
        }
    }

    pub(super) fn warn(&self, pod: &Pod, namespace: &str, reason: &'static str, note: &str) {
        let regarding = regarding(pod, namespace);
        let key = format!(
            "{namespace}/{}/{}/{reason}",
            regarding.kind.as_deref().unwrap_or_default(),
            regarding.name.as_deref().unwrap_or_default()
        );
        if !self.first_in_interval(key) {
            return;
        }
        let recorder = self.recorder.clone();
        let note = crate::text::truncate(&crate::redact::text(note), NOTE_LIMIT);
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

    /// Whether no Event with `key` went out within [`EVENT_INTERVAL`] (and remember this one).
    fn first_in_interval(&self, key: String) -> bool {
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let now = Instant::now();
        recent.retain(|_, at| now.duration_since(*at) < EVENT_INTERVAL);
        if recent.contains_key(&key) {
            return false;
        }
        recent.insert(key, now);
        true
    }
}

/// The object an Event about a pod being admitted should regard.
pub(super) fn regarding(pod: &Pod, namespace: &str) -> ObjectReference {
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
