//! bifrost-requirements: make Python packages installed in Bifrost survive container restarts.
//!
//! The persistence flow, end to end:
//! 1. a package install writes requirements.txt to PostgreSQL (`workspace_files`, the source of
//!    truth — [`database`]), with compare-and-swap so concurrent installs lose nothing, and a
//!    trigger `NOTIFY`s the change;
//! 2. once committed, the content is cached in Redis as Bifrost's `{"content", "hash"}` JSON
//!    ([`cache`]), in commit order;
//! 3. on Kubernetes, the [`controller`] mirrors the row into a `WorkspaceRequirements` resource
//!    ([`crd`]), validates it, warms Redis, snapshots it into a ConfigMap and rolls the labelled
//!    workloads; the [`webhook`] injects init containers into their new pods;
//! 4. every worker runs `installer` before it starts: Redis (else the snapshot) → checks →
//!    uv/pip → atomic swap into a folder on `PYTHONPATH`.
//!
//! [`requirements`] (the file model), [`policy`] (what a file may ask for) and
//! [`webhook::inject`] are pure; [`database`], [`s3`] (where Bifrost keeps requirements.txt
//! today), [`cache`] and the Kubernetes calls are the I/O edges. [`packages`] is the
//! `warm`/`requirements` flow of hosts without Kubernetes, on either [`store`] (row or object);
//! `operator` wires the controller, webhook, leader election and `server` (metrics, health),
//! each long-running part under [`supervise`] and one [`shutdown`] token;
//! [`cli`] maps it all to the command line: clap stops there, every other module takes typed
//! options of its own.

pub(crate) mod bootstrap;
pub mod cache;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod database;
pub mod duration;
pub mod egress;
pub(crate) mod error;
pub(crate) mod installer;
pub mod k8s_compat;
pub mod limit;
pub mod lock;
pub mod metrics;
pub(crate) mod operator;
pub mod packages;
pub mod policy;
pub mod redact;
pub mod requirements;
pub mod s3;
pub(crate) mod server;
pub mod shutdown;
pub mod spec;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub(crate) mod text;
pub mod tls;
pub(crate) mod uv;
pub mod watch;
pub mod webhook;
pub mod wheelhouse;

pub use error::{Error, Result};
