//! The lock is the truth (issue 26), on the install side against a package index served here:
//! a user's `--hash` pin survives resolution or the lock is refused naming the line; `install`
//! refuses a lock whose digest is not the admitted one, or that is not a lock of
//! requirements.txt; continuations pip accepts resolve; content over the limit is refused before
//! it is parsed. Each refusal leaves the target as it was.

mod common;

use std::process::Command;

use bifrost_requirements::lock::Lock;
use bifrost_requirements::requirements::content_hash;
use common::checks::{assert_exit, assert_says};
use common::lock_world::{MARKER, VERSION, World, import_version, report};
use common::wheels::{Wheel, import};
use common::{assert_ok, stderr, stdout};

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
    let file = raw.path().join("r.txt");
    std::fs::write(&file, &content).unwrap();
    let out = w
        .index
        .uv_install(&["-r".as_ref(), file.as_os_str()], &raw.path().join("site"));
    assert!(!out.status.success(), "uv installed the impostor");

    let out = w.show_lock(&content, VERSION, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(stdout(&out), "", "a lock was printed");
    assert_says(
        &out,
        &[
            "cannot be locked (a --hash does not match the index)",
            &format!("line 2: `bifrost-l-good==1.0 --hash=sha256:{real}`"),
            &format!("the index's bifrost-l-good==1.0 has sha256:{served}"),
        ],
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
                "bifrost-l-evil==1.0 (lock line 2) is pinned but no requirement of requirements.txt pulls it in",
            ],
        ),
    ] {
        let out = w.install(&w.snapshot(content, Some(&lock)), &target, &[]);
        assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
        let err = stderr(&out);
        assert_says(&out, &["the lock is not a lock of requirements.txt"]);
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
    assert_exit(
        &out,
        4,
        &[
            &format!("its sha256 is {}", content_hash(&edited)),
            &format!("not the sha256 {digest} of the lock the pod was admitted with"),
        ],
    );
    assert!(!target.join(MARKER).exists());

    let out = w.install(&w.snapshot(content, None), &target, &args);
    assert_exit(&out, 4, &["but there is no lock"]);
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

/// A worker `python3` that never answers (it records its pid in `pid` first).
fn hanging_python(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let pid = dir.join("python.pid");
    let script = dir.join("python3");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf $$ > {}\nexec sleep 60\n", pid.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, pid)
}

#[tokio::test]
async fn timeout_and_sigterm_stop_install_while_it_asks_the_worker_interpreter() {
    let w = World::new(&[Wheel::new(GOOD, "1.0")]).await;
    let content = "bifrost-l-good==1.0\n";
    let lock = w.lock(content, VERSION).await;
    let snapshot = w.snapshot(content, Some(&lock));
    let (python, pid) = hanging_python(&w.fresh("python-"));
    let args = |target: &std::path::Path| {
        let mut c = Command::new(common::bin());
        c.args(["install", "--target", target.to_str().unwrap()])
            .args(["--fallback-file", snapshot.to_str().unwrap()])
            .args([
                "--python",
                python.to_str().unwrap(),
                "--index-url",
                &w.index.url(),
            ])
            .env_remove("REDIS_URL")
            .env_remove("BIFROST_REDIS_URL")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };

    let target = w.path("timed-out");
    let out = args(&target).args(["--timeout", "2s"]).output().unwrap();
    assert_exit(
        &out,
        5,
        &["did not finish within 2 s (--timeout) while asking the worker's interpreter"],
    );
    assert!(!target.join(MARKER).exists());

    std::fs::remove_file(&pid).ok();
    let target = w.path("terminated");
    let child = args(&target).spawn().unwrap();
    common::node::poll(
        "the worker's python3 asked",
        std::time::Duration::from_secs(60),
        || pid.exists().then_some(()),
        String::new,
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_exit(
        &out,
        143,
        &["interrupted by SIGTERM while asking the worker's interpreter"],
    );
    assert!(!target.join(MARKER).exists());
}

/// `--user-base` asks the worker's interpreter for its user site before anything else: that
/// question stops at `--timeout` too (and on a signal, through the same phase).
#[tokio::test]
async fn timeout_stops_install_while_it_asks_the_worker_interpreter_for_its_user_site() {
    let w = World::new(&[Wheel::new(GOOD, "1.0")]).await;
    let content = "bifrost-l-good==1.0\n";
    let snapshot = w.snapshot(content, None);
    let (python, _pid) = hanging_python(&w.fresh("python-"));
    let base = w.path("user-base");
    let out = Command::new(common::bin())
        .args(["install", "--user-base", base.to_str().unwrap()])
        .args(["--fallback-file", snapshot.to_str().unwrap()])
        .args(["--python", python.to_str().unwrap(), "--timeout", "2s"])
        .env_remove("REDIS_URL")
        .env_remove("BIFROST_REDIS_URL")
        .output()
        .unwrap();
    assert_exit(
        &out,
        5,
        &[
            "did not finish within 2 s (--timeout) while asking the worker's interpreter for its \
             user site",
        ],
    );
}
