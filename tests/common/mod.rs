//! Shared test harness: real PostgreSQL, Redis and Kubernetes control plane, plus CLI helpers.
#![allow(dead_code)]

pub mod admission;
pub mod bench;
pub mod checks;
pub mod fixtures;
pub mod helm;
pub mod helm_scenario;
pub mod index;
pub mod k8s;
pub mod lock_world;
pub mod node;
pub mod objects;
pub mod operator;
pub mod proc;
pub mod props;
pub mod real_index;
pub mod real_packages;
pub mod redirect;
pub mod release;
pub mod s3;
pub mod s3_world;
pub mod scenario;
pub mod scenario_ext;
pub mod services;
pub mod store_world;
pub mod wheels;

use std::process::{Command, Output};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_bifrost-requirements")
}

/// Run the CLI with a clean environment for the variables it reads.
pub fn cli(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    for var in [
        "DATABASE_URL",
        "REDIS_URL",
        "BIFROST_REDIS_URL",
        "BIFROST_REQUIREMENTS_STORE",
        "BIFROST_REQUIREMENTS_S3_KEY",
        "BIFROST_S3_ENDPOINT_URL",
        "BIFROST_S3_BUCKET",
        "BIFROST_S3_ACCESS_KEY",
        "BIFROST_S3_SECRET_KEY",
        "BIFROST_S3_REGION",
        "BIFROST_S3_FORCE_PATH_STYLE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT",
        "BIFROST_REQUIREMENTS_REDIS_KEY",
        "BIFROST_ALLOWED_INDEX_URLS",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args).envs(envs.iter().copied());
    cmd.output().expect("run bifrost-requirements")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Panic with both streams unless the command succeeded.
#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "command failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Install the one rustls crypto provider for this test process.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
