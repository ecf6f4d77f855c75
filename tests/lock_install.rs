//! The lock on the install side: `requirements show --lock` against a package index served
//! here over HTTP, and `install` using `requirements.lock` beside its fallback file (exactly
//! the locked, hash-checked distributions) or saying why it resolves requirements.txt itself.
//!
//! Every install and resolution gets a fresh uv/pip cache: a cache holding the good bytes of a
//! wheel would hide a tampered one from the hash check.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use bifrost_requirements::cache::Payload;
use bifrost_requirements::database::{Database, RowSelector};
use bifrost_requirements::lock::Lock;
use bifrost_requirements::requirements::content_hash;
use common::index::{Index, path_with_real_uv};
use common::services::{fresh_database, write_bifrost_row};
use common::wheels::{Wheel, import};
use common::{assert_ok, cli, stderr, stdout};

const ALPHA: &str = "bifrost_l_alpha";
const BETA: &str = "bifrost_l_beta";
const MARKER: &str = ".bifrost-requirements.json";
const VERSION: &str = "3.11";
const PLATFORM: &str = "x86_64-manylinux_2_28";

fn alpha(version: &str) -> Wheel {
    Wheel::new(ALPHA, version).requires(&format!("{BETA}>=1"))
}

/// One test's world: an index, a store, a snapshot folder (payload.json and maybe
/// requirements.lock, as the webhook mounts the ConfigMap) and scratch folders.
struct World {
    index: Index,
    db_url: String,
    db: Database,
    dir: tempfile::TempDir,
}

impl World {
    async fn new(wheels: &[Wheel]) -> World {
        let db_url = fresh_database().await;
        let db = Database::connect(&db_url, RowSelector::default(), Duration::from_secs(10))
            .await
            .unwrap();
        db.migrate().await.unwrap();
        World {
            index: Index::start(wheels),
            db_url,
            db,
            dir: tempfile::Builder::new()
                .prefix("bifrost-lock-")
                .tempdir()
                .unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A folder no earlier step used (a fresh cache, target or snapshot).
    fn fresh(&self, what: &str) -> PathBuf {
        tempfile::Builder::new()
            .prefix(what)
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep()
    }

    /// `requirements show --lock` of `content` (stored first) for `version`, plus `extra`.
    async fn show_lock(&self, content: &str, version: &str, extra: &[&str]) -> Output {
        write_bifrost_row(self.db.pool(), content).await;
        let cache = self.fresh("resolver-cache-");
        let url = self.index.url();
        let mut args = vec![
            "requirements",
            "show",
            "--lock",
            "--python-version",
            version,
            "--python-platform",
            PLATFORM,
            "--index-url",
            &url,
            "--resolver-cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend(extra);
        let path = path_with_real_uv();
        cli(&args, &[("DATABASE_URL", &self.db_url), ("PATH", &path)])
    }

    /// The lock of `content` for `version`, as the CLI prints it.
    async fn lock(&self, content: &str, version: &str) -> String {
        let out = self.show_lock(content, version, &[]).await;
        assert_ok(&out);
        stdout(&out)
    }

    /// A snapshot folder holding `content`'s payload.json and, when given, `lock`.
    fn snapshot(&self, content: &str, lock: Option<&str>) -> PathBuf {
        let dir = self.fresh("snapshot-");
        std::fs::write(dir.join("payload.json"), Payload::new(content).to_json()).unwrap();
        if let Some(lock) = lock {
            std::fs::write(dir.join("requirements.lock"), lock).unwrap();
        }
        dir.join("payload.json")
    }

    /// `install --json` from the fallback file `payload` alone, with the index, a fresh cache.
    fn install(&self, payload: &Path, target: &Path, extra: &[&str]) -> Output {
        let cache = self.fresh("install-cache-");
        let url = self.index.url();
        let mut args = vec![
            "install",
            "--json",
            "--target",
            target.to_str().unwrap(),
            "--fallback-file",
            payload.to_str().unwrap(),
            "--index-url",
            &url,
            "--cache-dir",
            cache.to_str().unwrap(),
        ];
        args.extend(extra);
        cli(&args, &[])
    }
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(out).trim())
        .unwrap_or_else(|e| panic!("--json is not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn marker(target: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(target.join(MARKER)).expect("a marker")).unwrap()
}

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
    import(target, module).unwrap_or_else(|e| panic!("import {module}: {e}"))
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
    let target = w.path("locked");
    let out = w.install(&w.snapshot(&content, Some(&text)), &target, &[]);
    assert_ok(&out);
    let r = report(&out);
    assert_eq!(r["lock"]["used"], true, "{r}");
    assert_eq!(r["from_lock"], true, "{r}");
    assert_eq!(r["package_count"], 2, "{r}");
    assert!(
        stderr(&out).contains(", as locked (hash-checked)"),
        "{}",
        stderr(&out)
    );
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
    assert!(err.contains("bifrost-l-alpha (hash mismatch)"), "{err}");
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
    let target = w.path("site");
    let out = w.install(
        &w.snapshot(&content, Some(&lock)),
        &target,
        &["--installer", "pip"],
    );
    assert_ok(&out);
    assert_eq!(report(&out)["lock"]["used"], true);
    assert_eq!(import_version(&target, ALPHA), "1.0");
    assert_eq!(marker(&target)["installer"], "pip");

    w.index.tamper(&alpha("1.0"));
    let fresh = w.path("again");
    let out = w.install(
        &w.snapshot(&content, Some(&lock)),
        &fresh,
        &["--installer", "pip"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("bifrost-l-alpha (hash mismatch)"),
        "{}",
        stderr(&out)
    );
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
    assert!(stderr(&out).contains(why), "{}", stderr(&out));
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
    let err = stderr(&out);
    assert!(
        err.contains("requirements.lock: the lock is refused"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "line {}: `--index-url http://127.0.0.1:9/simple`",
            lines + 1
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("line {}: `-e .`", lines + 2)),
        "{err}"
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
        assert!(err.contains("does not resolve for Python 3.11"), "{err}");
        assert!(err.contains(named), "{named:?} not in {err}");
    }
    let out = w.show_lock("bifrost-l-alpha\n", "3.x", &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--python-version"),
        "{}",
        stderr(&out)
    );
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
    assert!(
        stderr(&out).contains("retrying with uv the 1 package(s) that failed last time"),
        "{}",
        stderr(&out)
    );
    assert_eq!(import_version(&target, ALPHA), "1.0");
    assert_eq!(import_version(&target, BETA), "1.0");
}

const GOOD: &str = "bifrost_l_good";
const EVIL: &str = "bifrost_l_evil";

/// `goodpkg` as its author built it, and the index's impostor: same file name, other bytes,
/// and a dependency on `evil`.
fn good_and_impostor() -> (Wheel, Wheel) {
    let good = Wheel::new(GOOD, "1.0");
    let impostor = good
        .clone()
        .requires(&format!("{EVIL}>=1"))
        .extra("IMPOSTOR = True\n");
    (good, impostor)
}

/// The SHA-256 of `wheel` as its author built it (not the index's copy).
fn authors_hash(wheel: &Wheel) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = wheel.build(dir.path());
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(path).unwrap(),
    ))
}

#[tokio::test]
async fn a_users_hash_pin_survives_resolution_or_the_lock_is_refused_naming_the_line() {
    let (good, impostor) = good_and_impostor();
    let w = World::new(&[impostor.clone(), Wheel::new(EVIL, "1.0")]).await;
    let real = authors_hash(&good);
    let served = w.index.sha256(&impostor);
    assert_ne!(real, served);
    let content = format!("# the wheel we reviewed\nbifrost-l-good==1.0 --hash=sha256:{real}\n");

    // Without a lock uv refuses the same content: the pin is what guards against this index.
    let raw = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::write(raw.path().join("r.txt"), &content).unwrap();
    let out = Command::new("uv")
        .args([
            "pip",
            "install",
            "--no-config",
            "--python",
            "python3",
            "--target",
        ])
        .arg(raw.path().join("site"))
        .arg("--cache-dir")
        .arg(cache.path())
        .args(["--index-url", &w.index.url(), "-r"])
        .arg(raw.path().join("r.txt"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "uv installed the impostor");

    let out = w.show_lock(&content, VERSION, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(stdout(&out), "", "a lock was printed");
    let err = stderr(&out);
    assert!(
        err.contains("cannot be locked (a --hash does not match the index)"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "line 2: `bifrost-l-good==1.0 --hash=sha256:{real}`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "the index's bifrost-l-good==1.0 has sha256:{served}"
        )),
        "{err}"
    );

    // The author's wheel back on the index: the lock pins exactly the user's file.
    std::fs::remove_file(w.index.path_of(&impostor)).unwrap();
    w.index.publish(&good);
    let text = w.lock(&content, VERSION).await;
    assert!(text.contains(&format!("--hash=sha256:{real}")), "{text}");
    assert!(
        !text.contains(&served) && !text.contains("bifrost-l-evil"),
        "{text}"
    );
}

/// A lock whose header is right for `content` but whose pins are `body`'s.
fn forged(lock: &str, content: &str) -> String {
    Lock {
        content_hash: content_hash(content),
        ..Lock::parse(lock).unwrap()
    }
    .render()
}

#[tokio::test]
async fn install_refuses_a_lock_that_is_not_a_lock_of_requirements_txt() {
    let (good, _) = good_and_impostor();
    let w = World::new(&[
        good.clone(),
        Wheel::new(GOOD, "2.0"),
        Wheel::new(EVIL, "1.0"),
    ])
    .await;
    let target = w.path("site");
    let first = format!("{EVIL}==1.0\n");
    assert_ok(&w.install(&w.snapshot(&first, None), &target, &[]));
    let before = std::fs::read(target.join(MARKER)).unwrap();

    let content = "bifrost-l-good==2.0\n";
    let old = w.lock("bifrost-l-good==1.0\n", VERSION).await;
    let only_evil = w.lock(&first, VERSION).await;
    for (lock, names) in [
        (
            forged(&old, content),
            vec![
                "requirements.txt line 1: `bifrost-l-good==2.0`: the lock pins bifrost-l-good==1.0",
                "a version it does not allow",
            ],
        ),
        (
            forged(&only_evil, content),
            vec![
                "the lock pins no bifrost-l-good",
                "bifrost-l-evil==1.0 (lock line 1) is pinned but no requirement of requirements.txt pulls it in",
            ],
        ),
    ] {
        let out = w.install(&w.snapshot(content, Some(&lock)), &target, &[]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("the lock is not a lock of requirements.txt"),
            "{err}"
        );
        for name in names {
            assert!(err.contains(name), "{name:?} not in {err}");
        }
        assert_eq!(
            std::fs::read(target.join(MARKER)).unwrap(),
            before,
            "marker changed"
        );
        assert_eq!(import_version(&target, EVIL), "1.0");
        assert!(import(&target, GOOD).is_err());
    }
}

#[tokio::test]
async fn install_refuses_a_lock_whose_digest_is_not_the_admitted_one() {
    let w = World::new(&[Wheel::new(GOOD, "1.0"), Wheel::new(GOOD, "2.0")]).await;
    let content = "bifrost-l-good>=1.0\n";
    let hash = content_hash(content);
    let target = w.path("site");
    let resolved = w.lock("bifrost-l-good==1.0\n", VERSION).await;
    let lock = forged(&resolved, content);
    let digest = content_hash(&lock);
    let admitted = |d: &str| {
        vec![
            format!("--expected-hash={hash}"),
            format!("--lock-sha256={d}"),
        ]
    };
    // Another pin that satisfies requirements.txt just as well: only the digest tells.
    let edited = lock.replace("bifrost-l-good==1.0", "bifrost-l-good==2.0");
    let args = admitted(&digest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = w.install(&w.snapshot(content, Some(&edited)), &target, &args);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("its sha256 is {}", content_hash(&edited))),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "not the sha256 {digest} of the lock the pod was admitted with"
        )),
        "{err}"
    );
    assert!(!target.join(MARKER).exists());

    let out = w.install(&w.snapshot(content, None), &target, &args);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("but there is no lock"),
        "{}",
        stderr(&out)
    );
    assert!(!target.join(MARKER).exists());

    let out = w.install(&w.snapshot(content, Some(&lock)), &target, &args);
    assert_ok(&out);
    assert_eq!(report(&out)["lock"]["used"], true);
    assert_eq!(import_version(&target, GOOD), "1.0");
}

#[tokio::test]
async fn continuations_pip_accepts_resolve_to_the_same_lock() {
    let w = World::new(&[Wheel::new(GOOD, "1.0"), Wheel::new(GOOD, "2.0")]).await;
    for content in [
        "bifrost-l-good \\\n==1.0\n",
        "bifrost-l-good>=1.0,\\\n<2\n",
        "bifrost-l-good==1.0 ; python_version \\\n>= \"3\"\n",
    ] {
        let text = w.lock(content, VERSION).await;
        let lock = Lock::parse(&text).unwrap();
        assert_eq!(lock.pins(), ["bifrost-l-good==1.0"], "{content:?}");
        let target = w.fresh("site-");
        let out = w.install(&w.snapshot(content, Some(&text)), &target, &[]);
        assert_ok(&out);
        assert_eq!(report(&out)["lock"]["used"], true, "{content:?}");
        assert_eq!(import_version(&target, GOOD), "1.0");
    }
}

#[tokio::test]
async fn install_refuses_content_over_the_limit_before_parsing_it() {
    let w = World::new(&[Wheel::new(GOOD, "1.0")]).await;
    let target = w.path("site");
    assert_ok(&w.install(&w.snapshot("bifrost-l-good==1.0\n", None), &target, &[]));
    let before = std::fs::read(target.join(MARKER)).unwrap();
    let limit = bifrost_requirements::spec::MAX_CONTENT_BYTES;
    let line = "bifrost-l-good==1.0\n";
    let over = line.repeat(limit / line.len() + 1);
    let out = w.install(&w.snapshot(&over, None), &target, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{} bytes exceed the content limit of {limit} bytes (256 KiB)",
            over.len()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("requirements from the"),
        "parsed anyway"
    );
    assert_eq!(
        std::fs::read(target.join(MARKER)).unwrap(),
        before,
        "marker changed"
    );
}
