//! bifrost-requirements: make Python packages installed in Bifrost survive container restarts.
//!
//! The persistence flow, end to end:
//! 1. a package install writes requirements.txt to PostgreSQL (`workspace_files`, the source of
//!    truth — [`database`]), with compare-and-swap so concurrent installs lose nothing;
//! 2. the content is cached in Redis as Bifrost's `{"content", "hash"}` JSON ([`cache`]);
//! 3. every worker installs it before starting.
//!
//! Modules, one per flow: [`requirements`] (the file model) and [`policy`] (what a file may ask
//! for) are pure; [`database`] and [`cache`] are the I/O edges; [`packages`] is the
//! `warm`/`requirements` flow of hosts without Kubernetes; [`installer`] is `install`, the
//! worker's start-up step (fetch, check, install atomically, mark); [`cli`] wires them to commands.

pub mod cache;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod crd;
pub mod database;
pub mod error;
pub mod installer;
pub mod metrics;
pub mod operator;
pub mod packages;
pub mod policy;
pub mod requirements;
pub mod server;
pub mod telemetry;
pub mod webhook;

pub use error::{Error, Result};
