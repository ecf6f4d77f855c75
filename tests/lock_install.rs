//! The lock on the install side: `requirements show --lock` against a package index served
//! here over HTTP, and `install` using `requirements.lock` beside its fallback file (exactly
//! the locked, hash-checked distributions) or saying why it resolves requirements.txt itself.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::index::Index;
use common::wheels::Wheel;
use common::{assert_ok, stderr};

const ALPHA: &str = "bifrost_l_alpha";
const BETA: &str = "bifrost_l_beta";

/// `uv pip install --target` of `spec` from `index` alone, with a fresh cache.
fn uv_install(index: &Index, spec: &str, target: &Path) -> Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new("uv")
        .args([
            "pip",
            "install",
            "--no-config",
            "--python",
            "python3",
            "--target",
        ])
        .arg(target)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["--index-url", &index.url(), spec])
        .output()
        .unwrap()
}

fn import_version(target: &Path, module: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-s",
            "-c",
            &format!("import {module}; print({module}.VERSION)"),
        ])
        .env("PYTHONPATH", target)
        .output()
        .unwrap();
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The fixture itself: a project folder is an index page, a release published while it serves
/// is seen, a tampered file keeps its name and changes its hash.
#[test]
fn the_index_serves_releases_published_while_it_runs() {
    let alpha = Wheel::new(ALPHA, "1.0").requires(&format!("{BETA}>=1"));
    let index = Index::start(&[alpha.clone(), Wheel::new(BETA, "1.0")]);
    assert!(index.url().starts_with("http://127.0.0.1:"));
    let first = tempfile::tempdir().unwrap();
    let out = uv_install(&index, &format!("{ALPHA}>=1.0"), first.path());
    assert_ok(&out);
    assert_eq!(import_version(first.path(), ALPHA), "1.0");
    assert_eq!(import_version(first.path(), BETA), "1.0");

    index.publish(&Wheel::new(ALPHA, "1.1").requires(&format!("{BETA}>=1")));
    let second = tempfile::tempdir().unwrap();
    assert_ok(&uv_install(&index, &format!("{ALPHA}>=1.0"), second.path()));
    assert_eq!(import_version(second.path(), ALPHA), "1.1");

    let before = index.sha256(&alpha);
    let after = index.tamper(&alpha);
    assert_ne!(before, after);
    assert_eq!(index.sha256(&alpha), after);
    assert!(
        index.log().contains("GET /bifrost-l-alpha/"),
        "{}",
        index.log()
    );

    let windows = Wheel::new(BETA, "2.0").tag("py3-none-win_amd64");
    assert!(
        index
            .publish(&windows)
            .ends_with("bifrost_l_beta-2.0-py3-none-win_amd64.whl")
    );
    let third = tempfile::tempdir().unwrap();
    let out = uv_install(&index, &format!("{BETA}==2.0"), third.path());
    assert!(
        !out.status.success(),
        "a win_amd64 wheel installed on Linux"
    );
    assert!(
        stderr(&out).contains("bifrost-l-beta==2.0"),
        "{}",
        stderr(&out)
    );
}
