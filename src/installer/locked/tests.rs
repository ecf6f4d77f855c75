use super::*;
use crate::lock::Interpreter;
use crate::requirements::content_hash;

const CONTENT: &str = "alpha>=1.0\n";

fn lock_text(content: &str, version: &str) -> String {
    Lock {
        content_hash: content_hash(content),
        interpreter: Interpreter {
            version: version.into(),
            platform: "x86_64-manylinux_2_28".into(),
        },
        index_urls: vec!["http://127.0.0.1:9/".into()],
        only_binary: false,
        body: format!(
            "alpha==1.0 \\\n    --hash=sha256:{}\n    # via -r requirements.txt\n\
             beta==2.0 \\\n    --hash=sha256:{}\n    # via alpha\n",
            "0a".repeat(32),
            "1b".repeat(32)
        ),
    }
    .render()
}

fn worker() -> Worker {
    Worker {
        version: "3.11.7".into(),
        machine: "x86_64".into(),
        glibc: Some("2.36".into()),
    }
}

fn decide(text: &str, worker: std::result::Result<&Worker, &str>) -> Result<Choice> {
    decide_for(CONTENT, Some(text), None, worker)
}

/// `choose` for requirements.txt `content`, the lock `text` and the admitted digest `digest`.
fn decide_for(
    content: &str,
    text: Option<&str>,
    digest: Option<&str>,
    worker: std::result::Result<&Worker, &str>,
) -> Result<Choice> {
    let hash = content_hash(content);
    let installing = Installing {
        hash: &hash,
        content,
        lock_sha256: digest,
    };
    choose(
        Path::new("/snap/requirements.lock"),
        text,
        &installing,
        worker,
        &Policy::default(),
    )
}

/// The refusal's message (the lock must neither be used nor set aside for requirements.txt).
fn refused(choice: Result<Choice>) -> String {
    match choice {
        Err(e) => e.to_string(),
        Ok(Choice::Lock { .. }) => panic!("the lock was used"),
        Ok(Choice::Requirements { why }) => panic!("requirements.txt was resolved instead: {why}"),
    }
}

/// A lock of `content` with `body` as its pins.
fn lock_of(content: &str, body: &str) -> String {
    Lock {
        body: body.into(),
        ..Lock::parse(&lock_text(content, "3.11")).unwrap()
    }
    .render()
}

fn why(choice: Result<Choice>) -> String {
    match choice.unwrap() {
        Choice::Requirements { why } => why,
        Choice::Lock { .. } => panic!("the lock was chosen"),
    }
}

#[test]
fn a_matching_lock_is_installed_entry_by_entry_with_its_hashes() {
    let Choice::Lock { lock, accepted } =
        decide(&lock_text(CONTENT, "3.11"), Ok(&worker())).unwrap()
    else {
        panic!("the lock was not chosen");
    };
    assert_eq!(lock.pins(), ["alpha==1.0", "beta==2.0"]);
    assert_eq!(accepted.package_count, 2);
    let each = crate::requirements::RequirementsFile::parse(&accepted.installer_text)
        .installer_texts_each();
    assert_eq!(each.len(), 2);
    assert_eq!(
        each[0].text(),
        format!("alpha==1.0 --hash=sha256:{}\n", "0a".repeat(32))
    );
    assert_eq!(each[1].name, "beta");
}

#[test]
fn every_other_lock_says_why_it_is_not_used() {
    let other = why(decide(&lock_text("alpha>=2\n", "3.11"), Ok(&worker())));
    assert!(
        other.contains("was resolved from content sha256"),
        "{other}"
    );
    assert!(other.contains(&content_hash(CONTENT)), "{other}");

    let newer = why(decide(&lock_text(CONTENT, "3.12"), Ok(&worker())));
    assert!(newer.contains("the lock is for Python 3.12"), "{newer}");
    assert!(newer.contains("3.11.7"), "{newer}");

    let musl = Worker {
        glibc: None,
        ..worker()
    };
    let libc = why(decide(&lock_text(CONTENT, "3.11"), Ok(&musl)));
    assert!(libc.contains("not glibc"), "{libc}");

    let damaged = why(decide("alpha==1.0\n", Ok(&worker())));
    assert!(
        damaged.contains("/snap/requirements.lock is damaged"),
        "{damaged}"
    );
    assert!(damaged.contains("does not start with"), "{damaged}");

    let empty = Lock {
        body: String::new(),
        ..Lock::parse(&lock_text(CONTENT, "3.11")).unwrap()
    };
    let empty = why(decide(&empty.render(), Ok(&worker())));
    assert!(empty.contains("lists no distributions"), "{empty}");

    let unasked = why(decide(
        &lock_text(CONTENT, "3.11"),
        Err("python3 not found"),
    ));
    assert!(unasked.contains("python3 not found"), "{unasked}");
}

#[test]
fn a_hostile_lock_is_refused_naming_its_lines() {
    let text = lock_text(CONTENT, "3.11") + "--index-url http://evil.example/simple\n-e .\n";
    let err = decide(&text, Ok(&worker()))
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("/snap/requirements.lock"), "{err}");
    assert!(
        err.contains("line 13: `--index-url http://evil.example/simple`"),
        "{err}"
    );
    assert!(err.contains("line 14: `-e .`"), "{err}");
}

#[test]
fn the_probe_answer_names_version_machine_and_glibc() {
    assert_eq!(Worker::parse("3.11.7\nx86_64\n2.36\n").unwrap(), worker());
    let musl = Worker::parse("3.12.1\naarch64\n").unwrap();
    assert_eq!((musl.machine.as_str(), musl.glibc), ("aarch64", None));
    assert_eq!(Worker::parse("3.12.1\naarch64\n\n").unwrap().glibc, None);
    assert!(Worker::parse("").unwrap_err().contains("unexpected answer"));
}

#[test]
fn the_lock_sits_beside_the_fallback_file() {
    assert_eq!(
        lock_path(Path::new("/snap/payload.json")),
        Path::new("/snap/requirements.lock")
    );
}

#[test]
fn a_lock_whose_digest_is_not_the_admitted_one_is_refused() {
    let text = lock_text(CONTENT, "3.11");
    let digest = content_hash(&text);
    let used = decide_for(CONTENT, Some(&text), Some(&digest), Ok(&worker())).unwrap();
    assert!(matches!(used, Choice::Lock { .. }));

    let edited = text.replace("alpha==1.0", "alpha==1.1");
    let err = refused(decide_for(
        CONTENT,
        Some(&edited),
        Some(&digest),
        Ok(&worker()),
    ));
    assert!(err.contains(&content_hash(&edited)), "{err}");
    assert!(err.contains(&format!("not the sha256 {digest}")), "{err}");
    assert!(
        err.contains("changed since the controller wrote it"),
        "{err}"
    );

    let gone = refused(decide_for(CONTENT, None, Some(&digest), Ok(&worker())));
    assert!(gone.contains("there is no lock"), "{gone}");
    // Without an admitted digest a missing lock is normal.
    let none = why(decide_for(CONTENT, None, None, Ok(&worker())));
    assert!(none.contains("no /snap/requirements.lock"), "{none}");
    // The next content's lock (a rollout under way) is set aside, whatever its digest.
    let next = why(decide_for(
        CONTENT,
        Some(&lock_text("alpha>=2\n", "3.11")),
        Some(&digest),
        Ok(&worker()),
    ));
    assert!(next.contains("was resolved from content sha256"), "{next}");
}

/// Why `install` refuses a lock whose header is right for `content` but which pins only `pin`
/// (as if pulled in by requirements.txt).
fn refusal_of_a_lock_pinning(content: &str, pin: &str) -> String {
    let body = format!(
        "{pin} \\\n    --hash=sha256:{}\n    # via -r requirements.txt\n",
        "0a".repeat(32)
    );
    refused(decide_for(
        content,
        Some(&lock_of(content, &body)),
        None,
        Ok(&worker()),
    ))
}

#[test]
fn a_lock_right_for_the_header_but_pinning_another_version_is_refused() {
    let err = refusal_of_a_lock_pinning("goodpkg==2.0\n", "goodpkg==1.0");
    assert!(err.contains("not a lock of requirements.txt"), "{err}");
    assert!(
        err.contains("requirements.txt line 1: `goodpkg==2.0`: the lock pins goodpkg==1.0"),
        "{err}"
    );
}

#[test]
fn a_lock_of_something_else_entirely_is_refused_naming_both_sides() {
    let err = refusal_of_a_lock_pinning("goodpkg==2.0\n", "evil==1.0");
    assert!(err.contains("the lock pins no goodpkg"), "{err}");
    assert!(
        err.contains("evil==1.0 (lock line 1) is pinned but no requirement"),
        "{err}"
    );
}

#[test]
fn a_lock_that_drops_a_users_hash_pin_is_refused() {
    let content = format!("alpha==1.0 --hash=sha256:{}\n", "ff".repeat(32));
    let err = refused(decide_for(
        &content,
        Some(&lock_text(&content, "3.11")),
        None,
        Ok(&worker()),
    ));
    assert!(
        err.contains("line 1: `alpha==1.0 --hash=sha256:ffff"),
        "{err}"
    );
    assert!(
        err.contains(&format!("sha256:{}", "0a".repeat(32))),
        "{err}"
    );
}
