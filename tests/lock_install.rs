//! The lock on the install side: `requirements show --lock` against a package index served
//! here over HTTP, and `install` using `requirements.lock` beside its fallback file (exactly
//! the locked, hash-checked distributions) or saying why it resolves requirements.txt itself.
//!
//! Every install and resolution gets a fresh uv/pip cache: a cache holding the good bytes of a
//! wheel would hide a tampered one from the hash check.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;

use bifrost_requirements::lock::Lock;
use bifrost_requirements::requirements::content_hash;
use common::checks::{assert_exit, assert_says};
use common::index::Index;
use common::lock_world::{MARKER, VERSION, World, import_version, marker, report};
use common::wheels::{Wheel, import};
use common::{assert_ok, stderr, stdout};

const ALPHA: &str = "bifrost_l_alpha";
const BETA: &str = "bifrost_l_beta";

fn alpha(version: &str) -> Wheel {
    Wheel::new(ALPHA, version).requires(&format!("{BETA}>=1"))
}

/// The fixture itself: a project folder is an index page, a release published while it serves
/// is seen, a tampered file keeps its name and changes its hash.
#[test]
fn the_index_serves_releases_published_while_it_runs() {
    let alpha = Wheel::new(ALPHA, "1.0").requires(&format!("{BETA}>=1"));
    let index = Index::start(&[alpha.clone(), Wheel::new(BETA, "1.0")]);
    assert!(index.url().starts_with("http://127.0.0.1:"));
    let first = tempfile::tempdir().unwrap();
    let out = index.uv_install(&[OsStr::new(&format!("{ALPHA}>=1.0"))], first.path());
    assert_ok(&out);
    assert_eq!(import_version(first.path(), ALPHA), "1.0");
    assert_eq!(import_version(first.path(), BETA), "1.0");

    index.publish(&Wheel::new(ALPHA, "1.1").requires(&format!("{BETA}>=1")));
    let second = tempfile::tempdir().unwrap();
    assert_ok(&index.uv_install(&[OsStr::new(&format!("{ALPHA}>=1.0"))], second.path()));
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
    let out = index.uv_install(&[OsStr::new(&format!("{BETA}==2.0"))], third.path());
    assert!(
        !out.status.success(),
        "a win_amd64 wheel installed on Linux"
    );
    assert_says(&out, &["bifrost-l-beta==2.0"]);
}

/// `install` into a fresh folder `name` from a snapshot of `content` and the lock `text`: it
/// succeeded, from the lock. Returns the folder, the output and its `--json` report.
fn installed_from_lock(
    w: &World,
    name: &str,
    content: &str,
    text: &str,
) -> (PathBuf, Output, serde_json::Value) {
    let target = w.path(name);
    let out = w.install(&w.snapshot(content, Some(text)), &target, &[]);
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["lock"]["used"], true, "{r}");
    assert_eq!(r["from_lock"], true, "{r}");
    (target, out, r)
}

#[tokio::test]
async fn a_lock_keeps_installing_what_it_pinned_after_a_newer_release() {
    let w = World::new(&[alpha("1.0"), Wheel::new(BETA, "1.0")]).await;
    let content = format!("{ALPHA}>=1.0\n");
    let text = w.lock(&content, VERSION).await;
    let lock = Lock::parse(&text).unwrap();
    assert_eq!(lock.content_hash, content_hash(&content));
    assert_eq!(lock.pins(), ["bifrost-l-alpha==1.0", "bifrost-l-beta==1.0"]);
    for wheel in [alpha("1.0"), Wheel::new(BETA, "1.0")] {
        let hash = w.index.sha256(&wheel);
        assert!(
            text.contains(&format!("--hash=sha256:{hash}")),
            "{hash} not in\n{text}"
        );
    }

    w.index.publish(&alpha("1.1"));
    let (target, out, r) = installed_from_lock(&w, "locked", &content, &text);
    assert_eq!(r["package_count"], 2, "{r}");
    assert_says(&out, &[", as locked (hash-checked)"]);
    assert_eq!(import_version(&target, ALPHA), "1.0");
    assert_eq!(import_version(&target, BETA), "1.0");
    assert_eq!(marker(&target)["installed_from_lock"], true);

    // Exactly the locked distributions: a lock without beta installs no beta (--no-deps).
    let cut = lock.body.find("bifrost-l-beta==").unwrap();
    let alone = Lock {
        body: lock.body[..cut].to_string(),
        ..lock.clone()
    };
    let target = w.path("alpha-alone");
    let out = w.install(&w.snapshot(&content, Some(&alone.render())), &target, &[]);
    assert_ok(&out);
    assert_eq!(import_version(&target, ALPHA), "1.0");
    assert!(
        import(&target, BETA).is_err(),
        "a dependency outside the lock was installed"
    );

    // The same content without its lock resolves again, and gets the new release.
    let unlocked = w.path("unlocked");
    let out = w.install(&w.snapshot(&content, None), &unlocked, &[]);
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["lock"]["used"], false, "{r}");
    let why = r["lock"]["reason"].as_str().unwrap();
    assert!(
        why.contains("no ") && why.contains("requirements.lock beside"),
        "{why}"
    );
    assert_eq!(r["from_lock"], false, "{r}");
    assert_eq!(import_version(&unlocked, ALPHA), "1.1");
    assert_eq!(marker(&unlocked)["installed_from_lock"], false);
}

#[tokio::test]
async fn a_tampered_wheel_is_refused_by_the_hash_check_and_nothing_is_swapped_in() {
    let w = World::new(&[alpha("1.0"), Wheel::new(BETA, "1.0")]).await;
    let target = w.path("site");
    let first = format!("{BETA}>=1\n");
    let lock = w.lock(&first, VERSION).await;
    assert_ok(&w.install(&w.snapshot(&first, Some(&lock)), &target, &[]));
    let before = std::fs::read(target.join(MARKER)).unwrap();

    let content = format!("{ALPHA}>=1.0\n");
    let lock = w.lock(&content, VERSION).await;
    w.index.tamper(&alpha("1.0"));
    let out = w.install(&w.snapshot(&content, Some(&lock)), &target, &[]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let err = stderr(&out);
    assert_says(&out, &["bifrost-l-alpha (hash mismatch)"]);
    assert!(err.to_lowercase().contains("hash mismatch for"), "{err}");
    assert_eq!(report(&out)["lock"]["used"], true);
    assert_eq!(
        std::fs::read(target.join(MARKER)).unwrap(),
        before,
        "marker changed"
    );
    assert_eq!(import_version(&target, BETA), "1.0");
    assert!(
        import(&target, ALPHA).is_err(),
        "the tampered package was swapped in"
    );
}

#[tokio::test]
async fn pip_installs_the_lock_with_its_hashes_and_refuses_a_tampered_wheel() {
    let w = World::new(&[alpha("1.0"), Wheel::new(BETA, "1.0")]).await;
    let content = format!("{ALPHA}>=1.0\n");
    let lock = w.lock(&content, VERSION).await;
    w.index.publish(&alpha("1.1"));
    let pip_install = |target: &Path| {
        let snapshot = w.snapshot(&content, Some(&lock));
        w.install(&snapshot, target, &["--installer", "pip"])
    };
    let target = w.path("site");
    let out = pip_install(&target);
    assert_ok(&out);
    assert_eq!(report(&out)["lock"]["used"], true);
    assert_eq!(import_version(&target, ALPHA), "1.0");
    assert_eq!(marker(&target)["installer"], "pip");

    w.index.tamper(&alpha("1.0"));
    let fresh = w.path("again");
    let out = pip_install(&fresh);
    assert_exit(&out, 5, &["bifrost-l-alpha (hash mismatch)"]);
    assert!(!fresh.join(MARKER).exists());
    assert!(import(&fresh, ALPHA).is_err());
}

/// Install `content` from a snapshot holding `lock`: requirements.txt is resolved instead,
/// and the report and the log say `why`.
fn assert_resolved_instead(w: &World, content: &str, lock: &str, why: &str) {
    let target = w.fresh("site-");
    let out = w.install(&w.snapshot(content, Some(lock)), &target, &[]);
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["lock"]["used"], false, "{r}");
    let reason = r["lock"]["reason"].as_str().unwrap();
    assert!(reason.contains(why), "{why:?} not in {reason:?}");
    assert_says(&out, &[why]);
    assert!(r["warnings"].to_string().contains(why), "{r}");
    assert_eq!(import_version(&target, ALPHA), "1.1");
    assert_eq!(marker(&target)["installed_from_lock"], false);
}

#[tokio::test]
async fn a_lock_for_another_interpreter_content_or_a_damaged_one_is_not_used_and_says_why() {
    let w = World::new(&[alpha("1.0"), Wheel::new(BETA, "1.0")]).await;
    let content = format!("{ALPHA}>=1.0\n");
    let newer_python = w.lock(&content, "3.12").await;
    let other_content = w.lock(&format!("{ALPHA}>=0.1\n"), VERSION).await;
    let good = w.lock(&content, VERSION).await;
    w.index.publish(&alpha("1.1"));

    assert_resolved_instead(&w, &content, &newer_python, "the lock is for Python 3.12");
    assert_resolved_instead(
        &w,
        &content,
        &other_content,
        "was resolved from content sha256",
    );
    let damaged = good.replacen("# content-sha256", "# content-sha1", 1);
    assert_resolved_instead(&w, &content, &damaged, "is damaged: unknown header field");
}

#[tokio::test]
async fn a_hostile_lock_is_refused_naming_its_lines_and_installs_nothing() {
    let w = World::new(&[alpha("1.0"), Wheel::new(BETA, "1.0")]).await;
    let content = format!("{ALPHA}>=1.0\n");
    let lock = w.lock(&content, VERSION).await;
    let hostile = format!("{lock}--index-url http://127.0.0.1:9/simple\n-e .\n");
    let lines = lock.lines().count();
    let target = w.path("site");
    let out = w.install(&w.snapshot(&content, Some(&hostile)), &target, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_says(
        &out,
        &[
            "requirements.lock: the lock is refused",
            &format!(
                "line {}: `--index-url http://127.0.0.1:9/simple`",
                lines + 1
            ),
            &format!("line {}: `-e .`", lines + 2),
        ],
    );
    assert!(!target.join(MARKER).exists());
    assert!(import(&target, ALPHA).is_err());
}

#[tokio::test]
async fn show_lock_of_unresolvable_content_exits_1_naming_the_requirement() {
    let w = World::new(&[
        alpha("1.0"),
        Wheel::new(BETA, "1.0"),
        Wheel::new("bifrost_l_windows", "1.0").tag("py3-none-win_amd64"),
    ])
    .await;
    for (content, extra, named) in [
        ("bifrost-l-nowhere\n", &[][..], "bifrost-l-nowhere"),
        ("bifrost-l-alpha==9.9\n", &[], "bifrost-l-alpha==9.9"),
        (
            "bifrost-l-windows\n",
            &["--only-binary"],
            "bifrost-l-windows",
        ),
    ] {
        let out = w.show_lock(content, VERSION, extra).await;
        assert_eq!(out.status.code(), Some(1), "{content}: {}", stderr(&out));
        assert_eq!(stdout(&out), "", "{content}");
        let err = stderr(&out);
        assert_says(&out, &["does not resolve for Python 3.11"]);
        assert!(err.contains(named), "{named:?} not in {err}");
    }
    let out = w.show_lock("bifrost-l-alpha\n", "3.x", &[]).await;
    assert_exit(&out, 2, &["--python-version"]);
}

/// Each lock entry is tried on its own when the batch fails: under `--on-failure continue` the
/// good entries are swapped in, and the next run of the same content retries only the refused
/// one, from the lock again.
#[tokio::test]
async fn continue_keeps_the_good_entries_and_the_next_run_retries_the_refused_one() {
    let w = World::new(&[alpha("1.0"), Wheel::new(BETA, "1.0")]).await;
    let content = format!("{ALPHA}>=1.0\n");
    let lock = w.lock(&content, VERSION).await;
    let snapshot = w.snapshot(&content, Some(&lock));
    let good = std::fs::read(w.index.path_of(&alpha("1.0"))).unwrap();
    w.index.tamper(&alpha("1.0"));
    let target = w.path("site");
    let out = w.install(&snapshot, &target, &["--on-failure", "continue"]);
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["status"], "partial", "{r}");
    assert_eq!(
        r["summary"],
        "installed 1/2; failed: bifrost-l-alpha (hash mismatch)"
    );
    assert_eq!(import_version(&target, BETA), "1.0");
    assert!(import(&target, ALPHA).is_err());
    let m = marker(&target);
    assert_eq!(m["installed_from_lock"], true);
    assert_eq!(m["failed"][0]["name"], "bifrost-l-alpha");

    std::fs::write(w.index.path_of(&alpha("1.0")), good).unwrap();
    w.index.publish(&alpha("1.1"));
    let out = w.install(&snapshot, &target, &["--on-failure", "continue"]);
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["status"], "installed", "{r}");
    assert_says(
        &out,
        &["retrying with uv the 1 package(s) that failed last time"],
    );
    assert_eq!(import_version(&target, ALPHA), "1.0");
    assert_eq!(import_version(&target, BETA), "1.0");
}

/// A project published for several platforms: the lock keeps exactly the file the workers'
/// interpreter (CPython 3.11 on x86_64 glibc) can install, says so in its first body line, and
/// installs from it; a pure-Python project's one file is kept as it was.
#[tokio::test]
async fn a_lock_keeps_only_the_files_the_workers_can_install_and_installs_from_them() {
    const GAMMA: &str = "bifrost_l_gamma";
    let gamma: Vec<Wheel> = [
        "cp311-cp311-manylinux_2_17_x86_64",
        "cp311-cp311-macosx_11_0_arm64",
        "cp311-cp311-win_amd64",
    ]
    .iter()
    .map(|tag| Wheel::new(GAMMA, "1.0").tag(tag))
    .collect();
    let beta = Wheel::new(BETA, "1.0");
    let mut wheels = gamma.clone();
    wheels.push(beta.clone());
    let w = World::new(&wheels).await;
    w.index.list_hashes(GAMMA);
    let content = format!("{GAMMA}==1.0\n{BETA}\n");
    let text = w.lock(&content, VERSION).await;
    let lock = Lock::parse(&text).unwrap();
    let hashes = |name: &str| {
        let pinned = lock.pinned().unwrap();
        let pin = pinned.iter().find(|p| p.name == name.replace('_', "-"));
        pin.unwrap_or_else(|| panic!("{name} not pinned in\n{text}"))
            .hashes
            .clone()
    };
    let sha = |wheel: &Wheel| format!("sha256:{}", w.index.sha256(wheel));
    assert_eq!(hashes(GAMMA), [sha(&gamma[0])], "{text}");
    assert_eq!(hashes(BETA), [sha(&beta)], "{text}");
    for foreign in &gamma[1..] {
        assert!(!text.contains(&w.index.sha256(foreign)), "{text}");
    }
    assert!(
        lock.body.starts_with(
            "# Hashes kept for Python 3.11 on x86_64-manylinux_2_28 only (2 of 4 files;"
        ),
        "{text}"
    );

    let (target, _, _) = installed_from_lock(&w, "filtered", &content, &text);
    assert_eq!(import_version(&target, GAMMA), "1.0");
}
