//! WheelhouseComplete: the lock's files copied once into the wheelhouse
//! (`spec.install.wheelhouse`), so that pods install the exact lock without the index.
//!
//! Copying can take minutes (a data-science lock is hundreds of megabytes), so it runs in a
//! task of its own, one per (wheelhouse, lock); each reconcile only reads how far it is and
//! comes back soon while it runs. The condition is not a step of `Ready`: until the wheelhouse
//! is complete, or when it cannot be, pods install from the index as they always did.
//!
//! Old wheelhouses are pruned after a fill completes and every [`PRUNE_EVERY`]: a lock folder
//! is kept while any resource's current lock or any running pod's admitted lock
//! (`--lock-sha256`) is that lock, or while it is younger than the retention.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tracing::{info, warn};

use super::context::{Context, secret_value};
use super::status::Draft;
use crate::crd::{
    ConditionType, WheelhouseStatus, WheelhouseTarget, WorkspaceRequirements, wheelhouse_target,
};
use crate::s3::{Credentials, S3Config};
use crate::wheelhouse::{Fetcher, Wheelhouse};

/// How often a running fill is looked at (its status is written then).
const WHILE_FILLING: Duration = Duration::from_secs(3);
/// When a failed fill is tried again.
const FAILED_RETRY: Duration = Duration::from_secs(60);
/// How often each wheelhouse is pruned at most.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Per request to the index while copying (one request is a whole file).
const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// How far the copy of one lock is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fill {
    Running,
    Complete { files: usize, bytes: u64 },
    Failed { message: String, at: Instant },
}

/// A fill's key: the wheelhouse (with how it is reached: a mended Secret reference starts
/// over at once) and the lock's sha256.
type FillKey = (WheelhouseTarget, String);

/// The fills of this operator, and when each wheelhouse (location) was last pruned.
#[derive(Default)]
pub(super) struct Fills {
    fills: Mutex<HashMap<FillKey, Fill>>,
    pruned: Mutex<HashMap<String, Instant>>,
}

impl Fills {
    fn get(&self, key: &FillKey) -> Option<Fill> {
        let fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        fills.get(key).cloned()
    }

    fn forget(&self, key: &FillKey) {
        let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        fills.remove(key);
    }

    fn set(&self, key: FillKey, fill: Fill) {
        let mut fills = self.fills.lock().unwrap_or_else(PoisonError::into_inner);
        fills.insert(key, fill);
    }

    /// Prune `location` at the next chance (a fill completed there).
    fn prune_soon(&self, location: &str) {
        let mut pruned = self.pruned.lock().unwrap_or_else(PoisonError::into_inner);
        pruned.remove(location);
    }

    /// Whether `location` is due for pruning (and mark it pruned now when it is).
    fn prune_due(&self, location: &str) -> bool {
        let mut pruned = self.pruned.lock().unwrap_or_else(PoisonError::into_inner);
        match pruned.get(location) {
            Some(at) if at.elapsed() < PRUNE_EVERY => false,
            _ => {
                pruned.insert(location.to_string(), Instant::now());
                true
            }
        }
    }
}

/// What the condition says, decided from plain values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// No wheelhouse asked for: no condition, no status.
    NotAsked,
    /// Asked for, but there is no lock to copy (pods resolve) or the spec is unusable.
    NoLock(String),
    /// Start (or restart) the copy.
    Start,
    Filling,
    Complete {
        files: usize,
        bytes: u64,
    },
    Failed(String),
}

/// The verdict for a spec's wheelhouse `target`, the lock's digest (`None`: no lock) and the
/// copy's state.
fn verdict(
    target: Result<Option<&WheelhouseTarget>, &str>,
    lock: Option<&str>,
    fill: Option<&Fill>,
) -> Verdict {
    let target = match target {
        Ok(None) => return Verdict::NotAsked,
        Err(why) => return Verdict::NoLock(why.to_string()),
        Ok(Some(t)) => t,
    };
    let Some(_) = lock else {
        return Verdict::NoLock(format!(
            "no lock of this content (see Resolved): pods resolve for themselves, and {} holds \
             only locked files",
            target.location()
        ));
    };
    match fill {
        None => Verdict::Start,
        Some(Fill::Running) => Verdict::Filling,
        Some(Fill::Complete { files, bytes }) => Verdict::Complete {
            files: *files,
            bytes: *bytes,
        },
        Some(Fill::Failed { at, .. }) if at.elapsed() >= FAILED_RETRY => Verdict::Start,
        Some(Fill::Failed { message, .. }) => Verdict::Failed(message.clone()),
    }
}

/// What to say right after a copy was started (`started`: its state now), given the status
/// the last reconcile wrote (`old`) and the lock (`digest`).
fn just_started(started: Option<Fill>, old: Option<&WheelhouseStatus>, digest: &str) -> Verdict {
    match (started, old) {
        // A copy that could not start (a Secret missing) says so at once.
        (Some(Fill::Failed { message, .. }), _) => Verdict::Failed(message),
        // A new leader checks what the last one completed: the status keeps saying so
        // meanwhile instead of flapping to Filling.
        (_, Some(old)) if old.complete && old.lock_sha256 == digest => Verdict::Complete {
            files: old.files.unwrap_or_default() as usize,
            bytes: old.bytes.unwrap_or_default() as u64,
        },
        _ => Verdict::Filling,
    }
}

/// Set WheelhouseComplete and `status.wheelhouse`, starting the copy of the current lock when
/// it is not running or done.
pub(super) async fn check_wheelhouse(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    draft: &mut Draft,
) {
    let target = wheelhouse_target(&obj.spec);
    let digest = draft
        .lock
        .as_ref()
        .and(draft.status.lock.as_ref())
        .map(|l| l.sha256.clone())
        .filter(|d| !d.is_empty());
    let fills = ctx.memory::<Fills>();
    let key = match (&target, &digest) {
        (Ok(Some(t)), Some(d)) => Some((t.clone(), d.clone())),
        _ => None,
    };
    let fill = key.as_ref().and_then(|k| fills.get(k));
    let verdict = verdict(
        target.as_ref().map(Option::as_ref).map_err(String::as_str),
        digest.as_deref(),
        fill.as_ref(),
    );
    let location = |t: &WheelhouseTarget, d: &str| format!("{}{d}/", t.location());
    let (Ok(Some(t)), Some(d)) = (&target, &digest) else {
        return record(draft, &verdict, None);
    };
    let status = |complete: bool, files: Option<usize>, bytes: Option<u64>| WheelhouseStatus {
        location: location(t, d),
        lock_sha256: d.clone(),
        complete,
        files: files.map(|f| f as i64),
        bytes: bytes.map(|b| b as i64),
    };
    match &verdict {
        Verdict::Start => {
            start(ctx, obj, t, d, draft, fills.clone()).await;
            let started = key.as_ref().and_then(|k| fills.get(k));
            let now = just_started(started, draft.old.wheelhouse.as_ref(), d);
            draft.recheck_within(WHILE_FILLING);
            let shown = match &now {
                Verdict::Complete { files, bytes } => status(true, Some(*files), Some(*bytes)),
                _ => status(false, None, None),
            };
            return record(draft, &now, Some(shown));
        }
        Verdict::Filling => draft.recheck_within(WHILE_FILLING),
        Verdict::Failed(_) => draft.recheck_within(FAILED_RETRY),
        Verdict::Complete { .. } => {
            if fills.prune_due(&t.location()) {
                prune(ctx, obj, (t, d), fills.clone()).await;
            }
        }
        Verdict::NotAsked | Verdict::NoLock(_) => {}
    }
    let shown = match &verdict {
        Verdict::Complete { files, bytes } => status(true, Some(*files), Some(*bytes)),
        _ => status(false, None, None),
    };
    record(draft, &verdict, Some(shown));
}

/// Write the verdict into the condition and `status.wheelhouse`.
fn record(draft: &mut Draft, verdict: &Verdict, status: Option<WheelhouseStatus>) {
    let at = ConditionType::WheelhouseComplete;
    let where_ = status
        .as_ref()
        .map(|s| s.location.clone())
        .unwrap_or_default();
    match verdict {
        Verdict::NotAsked => draft.conditions.remove(at),
        Verdict::NoLock(why) => draft.conditions.set(at, false, "NoLock", why),
        Verdict::Start | Verdict::Filling => draft.conditions.set(
            at,
            false,
            "Filling",
            &format!(
                "copying the lock's files to {where_}; until then pods install from the index"
            ),
        ),
        Verdict::Complete { files, bytes } => draft.conditions.set(
            at,
            true,
            "Complete",
            &format!(
                "{where_} holds all {files} file(s) of the lock ({:.1} MB): pods install from it, \
                 not from the index",
                *bytes as f64 / 1e6
            ),
        ),
        Verdict::Failed(message) => draft.conditions.set(
            at,
            false,
            "WheelhouseFailed",
            &format!(
                "{message}; pods install from the index; tried again within {} s",
                FAILED_RETRY.as_secs()
            ),
        ),
    }
    draft.status.wheelhouse = status;
}

/// The S3 configuration of `target`, its keys read from the Secret in the resource's namespace.
async fn config(
    ctx: &Context,
    ns: &str,
    target: &WheelhouseTarget,
) -> crate::error::Result<S3Config> {
    let mut config = S3Config::new(target.bucket.clone());
    config.region = target.region.clone();
    config.endpoint = target.endpoint.clone();
    config.force_path_style = target.path_style;
    if let Some(r) = &target.credentials {
        config.credentials = Some(Credentials {
            access_key_id: secret_value(&ctx.client, ns, &r.name, &r.access_key_id_key).await?,
            secret_access_key: secret_value(&ctx.client, ns, &r.name, &r.secret_access_key_key)
                .await?,
        });
    }
    Ok(config)
}

/// Start copying the lock `digest` into `target` in a task of its own.
async fn start(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    target: &WheelhouseTarget,
    digest: &str,
    draft: &Draft,
    fills: Arc<Fills>,
) {
    let key = (target.clone(), digest.to_string());
    let failed = |message: String| Fill::Failed {
        message,
        at: Instant::now(),
    };
    let (Some(lock), Some(resolver), Some(stop)) =
        (draft.lock.as_ref(), ctx.resolver.as_ref(), ctx.stop.clone())
    else {
        return fills.set(key, failed("this operator resolves nothing".into()));
    };
    let ns = obj.namespace().unwrap_or_default();
    let wheelhouse = match config(ctx, &ns, target).await {
        Ok(config) => Wheelhouse::new(&config, &target.prefix),
        Err(e) => Err(e),
    };
    // The spec's URLs, credentials included (the lock's header shows them redacted).
    let index_urls = crate::lock::effective_index_urls(&obj.spec.install.index_urls);
    let fetcher = Fetcher::new(
        &index_urls,
        resolver.proxy_origins(&index_urls),
        FETCH_TIMEOUT,
    );
    let (wheelhouse, fetcher) = match (wheelhouse, fetcher) {
        (Ok(w), Ok(f)) => (w, f),
        (Err(e), _) | (_, Err(e)) => return fills.set(key, failed(e.to_string())),
    };
    fills.set(key.clone(), Fill::Running);
    let text = lock.render();
    let digest = digest.to_string();
    let name = format!("{ns}/{}", obj.name_any());
    tokio::spawn(async move {
        let started = Instant::now();
        let filled = match wheelhouse.fill(&text, &digest, &fetcher, &stop).await {
            // The manifest's sizes: the wheelhouse's bytes, not only this fill's.
            Ok(done) => match wheelhouse.manifest(&digest).await {
                Ok(Some(m)) => Ok((done, m.files.iter().map(|f| f.size).sum::<u64>())),
                Ok(None) => Err(crate::error::Error::Config(
                    "the manifest is gone right after the fill".into(),
                )),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let fill = match filled {
            Ok((done, bytes)) => {
                info!(
                    resource = %name,
                    "wheelhouse {}{digest}/ complete: {} file(s), {} copied, in {:.1} s",
                    key.0.location(), done.files, done.copied, started.elapsed().as_secs_f64()
                );
                // The lock it replaced may be unused now.
                fills.prune_soon(&key.0.location());
                Fill::Complete {
                    files: done.files,
                    bytes,
                }
            }
            Err(e) => {
                warn!(resource = %name, error = %e, "wheelhouse fill failed");
                failed(format!("copying the lock's files failed: {e}"))
            }
        };
        fills.set(key, fill);
    });
}

/// Remove the lock folders of `target` that no resource and no running pod refers to; then
/// check that the current lock's folder (`digest`) is still complete (another namespace's
/// operator shares the bucket and may have pruned it): if not, it is copied again.
async fn prune(
    ctx: &Context,
    obj: &WorkspaceRequirements,
    (target, digest): (&WheelhouseTarget, &str),
    fills: Arc<Fills>,
) {
    let ns = obj.namespace().unwrap_or_default();
    let mut keep = match kept_locks(ctx, &ns, target).await {
        Ok(keep) => keep,
        Err(e) => return warn!(error = %e, "not pruning the wheelhouse: cannot list what uses it"),
    };
    // The status naming it may not be written yet.
    keep.insert(digest.to_string());
    let wheelhouse = match config(ctx, &ns, target).await {
        Ok(config) => Wheelhouse::new(&config, &target.prefix),
        Err(e) => Err(e),
    };
    let retention = ctx
        .resolver
        .as_ref()
        .map_or(crate::wheelhouse::DEFAULT_RETENTION, |r| {
            r.wheelhouse_retention
        });
    let location = target.location();
    let key = (target.clone(), digest.to_string());
    let w = match wheelhouse {
        Ok(w) => w,
        Err(e) => return warn!(error = %e, "not pruning the wheelhouse {location}"),
    };
    tokio::spawn(async move {
        match w.prune(&keep, retention).await {
            Ok(pruned) => info!("wheelhouse {location} pruned: {pruned:?}"),
            Err(e) => {
                warn!(error = %e, "pruning the wheelhouse {location} failed");
                // Try again at the next reconcile rather than in ten minutes.
                fills.prune_soon(&location);
            }
        }
        if let Ok(None) = w.manifest(&key.1).await {
            warn!(
                "the wheelhouse {location}{}/ is gone: copying it again",
                key.1
            );
            fills.forget(&key);
        }
    });
}

/// The locks still in use in `ns`: every resource's current lock whose wheelhouse is `target`,
/// and the lock every pod there was admitted with.
async fn kept_locks(
    ctx: &Context,
    ns: &str,
    target: &WheelhouseTarget,
) -> Result<HashSet<String>, kube::Error> {
    let mut keep = HashSet::new();
    let resources = Api::<WorkspaceRequirements>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    for r in &resources {
        let same = wheelhouse_target(&r.spec).ok().flatten().as_ref() == Some(target);
        if let Some(lock) = r.status.as_ref().and_then(|s| s.lock.as_ref())
            && same
            && !lock.sha256.is_empty()
        {
            keep.insert(lock.sha256.clone());
        }
    }
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(crate::crd::OPT_IN_LABEL))
        .await?;
    keep.extend(pods.iter().filter_map(admitted_lock));
    Ok(keep)
}

/// The `--lock-sha256` the webhook wrote into a pod's install container.
fn admitted_lock(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers
        .iter()
        .flatten()
        .flat_map(|c| c.args.iter().flatten())
        .find_map(|a| a.strip_prefix("--lock-sha256=").map(str::to_string))
}

#[cfg(test)]
mod tests;
