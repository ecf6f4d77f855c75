//! Self-managed mode's I/O: the certificate Secret (read, decided by [`step`], written with
//! optimistic concurrency) and the `caBundle` of the MutatingWebhookConfiguration.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, TestOperation};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use time::OffsetDateTime;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::issue::{CertInfo, Issued, inspect, issue, to_pem};
use super::resolver::CertResolver;
use super::rotation::{CertSpec, Step, Stored, step};
use crate::error::{Error, Result};

const KEY_CERT: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
const KEY_CA: &str = "ca.crt";
const KEY_BUNDLE: &str = "ca-bundle.crt";
pub(crate) const KEY_NEXT_CERT: &str = "next-tls.crt";
const KEY_NEXT_KEY: &str = "next-tls.key";
const KEY_NEXT_CA: &str = "next-ca.crt";
/// Secret annotation: when the pending rotation was staged (Unix seconds).
const STAGED_AT_ANNOTATION: &str = "bifrost.io/rotation-staged-at";
/// Field manager of the operator's writes to the webhook configuration.
const MANAGER: &str = "bifrost-requirements-webhook";
/// Read-decide-write rounds lost to concurrent writers before this check gives up (the next
/// check tries again); replicas converge within a round or two.
const ATTEMPTS: usize = 5;

/// Settings of the self-managed mode.
#[derive(Debug, Clone)]
pub(crate) struct SelfManaged {
    pub namespace: String,
    pub secret_name: String,
    /// MutatingWebhookConfiguration whose webhooks get the `caBundle`.
    pub webhook_config: String,
    pub cert: CertSpec,
    /// Upper bound between two looks at the Secret and the webhook configuration.
    pub check_interval: Duration,
}

/// Whether the missing webhook configuration was already reported (it is logged once, not on
/// every check).
#[derive(Default)]
struct Reported {
    config_missing: bool,
}

impl SelfManaged {
    /// Keep the Secret, the served certificate and the `caBundle` in shape until `shutdown`.
    /// Every failure is logged and retried; nothing here is fatal.
    pub(crate) async fn run(
        self,
        client: Client,
        resolver: Arc<CertResolver>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut reported = Reported::default();
        loop {
            let wait = match self.check(&client, &resolver, &mut reported).await {
                Ok(next) => {
                    let now = OffsetDateTime::now_utc().unix_timestamp();
                    Duration::from_secs(next.saturating_sub(now).max(0) as u64)
                }
                Err(e) => {
                    warn!(error = %e, secret = %self.secret_name, namespace = %self.namespace, "webhook certificate: retrying");
                    Duration::from_secs(2)
                }
            };
            let wait = wait.clamp(Duration::from_millis(200), self.check_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    /// One look: bring the Secret up to date, serve its certificate, patch the `caBundle`.
    /// Returns the Unix time of the next look at the latest.
    async fn check(
        &self,
        client: &Client,
        resolver: &CertResolver,
        reported: &mut Reported,
    ) -> Result<i64> {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let config = match configs.get_opt(&self.webhook_config).await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "cannot read the webhook configuration");
                None
            }
        };
        let trusted = config.as_ref().map(trusted_bundle);
        for _attempt in 0..ATTEMPTS {
            let Some((stored, next)) = self.converge(&secrets, trusted.as_deref()).await? else {
                continue;
            };
            self.serve(resolver, &stored);
            self.patch_ca_bundle(
                &configs,
                config.as_ref(),
                stored.bundle.as_bytes(),
                reported,
            )
            .await;
            return Ok(next);
        }
        Err(Error::Tls(
            "the certificate Secret kept changing; retrying".into(),
        ))
    }

    /// Read the Secret, take one rotation step and write its result. `None` when another
    /// replica got there first (re-read and decide again).
    async fn converge(
        &self,
        secrets: &Api<Secret>,
        trusted: Option<&[u8]>,
    ) -> Result<Option<(Stored, i64)>> {
        let secret = secrets.get_opt(&self.secret_name).await.map_err(|e| {
            Error::kube(
                format!("reading Secret {}/{}", self.namespace, self.secret_name),
                e,
            )
        })?;
        let stored = secret.as_ref().map(Stored::from_secret);
        let now = OffsetDateTime::now_utc();
        let cert = &self.cert;
        let (step, next) = step(
            now.unix_timestamp(),
            stored.as_ref(),
            cert,
            trusted,
            &|| issue(&cert.names, cert.validity, now),
        )?;
        match step {
            Step::Keep => Ok(stored.map(|s| (s, next))),
            Step::Write { stored, why } => {
                if !self.write_secret(secrets, secret, &stored).await? {
                    return Ok(None);
                }
                info!(secret = %self.secret_name, namespace = %self.namespace, "webhook certificate: {why}");
                Ok(Some((*stored, next)))
            }
        }
    }

    /// Create or replace the Secret; `false` when it changed since it was read (`replace`
    /// carries the resourceVersion, so a concurrent writer wins and we re-read).
    async fn write_secret(
        &self,
        secrets: &Api<Secret>,
        existing: Option<Secret>,
        stored: &Stored,
    ) -> Result<bool> {
        let written = match existing {
            None => {
                let fresh = stored.clone().into_secret(self.new_secret());
                secrets.create(&PostParams::default(), &fresh).await
            }
            Some(existing) => {
                let updated = stored.clone().into_secret(existing);
                secrets
                    .replace(&self.secret_name, &PostParams::default(), &updated)
                    .await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                debug!("webhook certificate Secret changed concurrently; re-reading");
                Ok(false)
            }
            Err(e) => Err(Error::kube(
                format!("writing Secret {}/{}", self.namespace, self.secret_name),
                e,
            )),
        }
    }

    fn new_secret(&self) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "bifrost-requirements".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Swap the stored certificate in; a broken one is logged and the served one stays.
    fn serve(&self, resolver: &CertResolver, stored: &Stored) {
        match resolver.set_pem(stored.cert.as_bytes(), stored.key.as_bytes()) {
            Ok(true) => {
                let expires = inspect(stored.cert.as_bytes())
                    .ok()
                    .and_then(|c| c.first().map(|c| c.not_after))
                    .unwrap_or_default();
                info!(
                    expires_unix = expires,
                    "serving the webhook certificate from Secret {}/{}",
                    self.namespace,
                    self.secret_name
                );
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "the stored serving certificate cannot be loaded"),
        }
    }

    /// Put `bundle` into every webhook of the configuration that lacks it.
    async fn patch_ca_bundle(
        &self,
        configs: &Api<MutatingWebhookConfiguration>,
        config: Option<&MutatingWebhookConfiguration>,
        bundle: &[u8],
        reported: &mut Reported,
    ) {
        let Some(config) = config else {
            if !reported.config_missing {
                info!(
                    name = %self.webhook_config,
                    "MutatingWebhookConfiguration not found (yet); its caBundle will be set once it exists"
                );
                reported.config_missing = true;
            }
            return;
        };
        reported.config_missing = false;
        let ops = ca_bundle_patch(config, bundle);
        if ops.is_empty() {
            return;
        }
        let patch: Patch<()> = Patch::Json(json_patch::Patch(ops));
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        match configs.patch(&self.webhook_config, &params, &patch).await {
            Ok(_) => {
                info!(name = %self.webhook_config, "patched caBundle into the MutatingWebhookConfiguration")
            }
            Err(e) => {
                warn!(error = %e, name = %self.webhook_config, "cannot patch the caBundle; retrying")
            }
        }
    }
}

/// JSON-patch operations setting `bundle` on each webhook that lacks it; each is guarded by a
/// test of the webhook's name, so a configuration reordered meanwhile fails the patch instead
/// of getting a bundle in the wrong place.
fn ca_bundle_patch(config: &MutatingWebhookConfiguration, bundle: &[u8]) -> Vec<PatchOperation> {
    let mut ops = Vec::new();
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    for (i, w) in webhooks.iter().enumerate() {
        if w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) == Some(bundle) {
            continue;
        }
        let idx = i.to_string();
        ops.push(PatchOperation::Test(TestOperation {
            path: PointerBuf::from_tokens(["webhooks", idx.as_str(), "name"]),
            value: serde_json::Value::String(w.name.clone()),
        }));
        ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["webhooks", idx.as_str(), "clientConfig", "caBundle"]),
            value: serde_json::to_value(ByteString(bundle.to_vec())).unwrap_or_default(),
        }));
    }
    ops
}

/// The CAs every webhook of the configuration trusts (the intersection's worth: we use the
/// first webhook's bundle, and an empty bundle when any webhook lacks one).
fn trusted_bundle(config: &MutatingWebhookConfiguration) -> Vec<u8> {
    let webhooks = config.webhooks.as_deref().unwrap_or_default();
    if webhooks.iter().any(|w| w.client_config.ca_bundle.is_none()) {
        return Vec::new();
    }
    // Every webhook must trust the CA: keep only what all bundles share (compared as PEM text).
    let bundles: Vec<Vec<CertInfo>> = webhooks
        .iter()
        .map(|w| {
            inspect(
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .map(|b| b.0.as_slice())
                    .unwrap_or_default(),
            )
            .unwrap_or_default()
        })
        .collect();
    let Some(first) = bundles.first() else {
        return Vec::new();
    };
    first
        .iter()
        .filter(|c| bundles.iter().all(|b| b.iter().any(|o| o.der == c.der)))
        .map(|c| to_pem(&c.der))
        .collect::<String>()
        .into_bytes()
}

impl Stored {
    pub(crate) fn from_secret(secret: &Secret) -> Self {
        let data = secret.data.clone().unwrap_or_default();
        let get = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                .unwrap_or_default()
        };
        let next = Issued {
            ca: get(KEY_NEXT_CA),
            cert: get(KEY_NEXT_CERT),
            key: get(KEY_NEXT_KEY),
        };
        Stored {
            ca: get(KEY_CA),
            cert: get(KEY_CERT),
            key: get(KEY_KEY),
            bundle: get(KEY_BUNDLE),
            next: (!next.cert.is_empty()).then_some(next),
            staged_at: secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(STAGED_AT_ANNOTATION))
                .and_then(|v| v.parse().ok()),
        }
    }

    /// Write into `secret` (data and the staging annotation; other fields untouched).
    pub(crate) fn into_secret(self, mut secret: Secret) -> Secret {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            data.insert(k.to_string(), ByteString(v.into_bytes()));
        };
        put(KEY_CA, self.ca);
        put(KEY_CERT, self.cert);
        put(KEY_KEY, self.key);
        put(KEY_BUNDLE, self.bundle);
        if let Some(next) = self.next {
            put(KEY_NEXT_CA, next.ca);
            put(KEY_NEXT_CERT, next.cert);
            put(KEY_NEXT_KEY, next.key);
        }
        secret.data = Some(data);
        secret.string_data = None;
        secret.type_ = Some("kubernetes.io/tls".into());
        let annotations = secret
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        match self.staged_at {
            Some(t) => {
                annotations.insert(STAGED_AT_ANNOTATION.into(), t.to_string());
            }
            None => {
                annotations.remove(STAGED_AT_ANNOTATION);
            }
        }
        secret
    }
}
