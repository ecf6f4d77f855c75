//! The controller: `WorkspaceRequirements` → validated content → Redis → ConfigMap → rollout.
//!
//! Each reconcile is idempotent and cheap when nothing changed: it validates `spec.content` with
//! the policy (invalid content never reaches Redis and never rolls anything), resolves it once
//! into the lock the pods install (unresolvable content stops there too), makes sure Redis
//! holds Bifrost's payload (rewriting it only when missing, different, or past half its TTL),
//! server-side-applies the ConfigMap snapshot the installer falls back to, and patches the
//! pod-template hash annotation of labelled Deployments/StatefulSets whose hash differs — which
//! is what makes Kubernetes roll them. A workload already carrying the hash is never touched, so
//! operator restarts and leader changes cause no rollouts.

mod context;
mod coverage;
#[cfg(test)]
mod fixtures;
mod lock;
pub(crate) mod mirror;
mod observe;
pub(crate) mod progress;
mod reconcile;
pub(crate) mod rollout;
mod run;
mod snapshot;
pub(crate) mod status;
mod synced;
mod valid;
mod warm;
mod wheelhouse;

pub use context::Context;
pub use lock::probe;
pub use reconcile::reconcile;
pub use run::{Settings, run};
