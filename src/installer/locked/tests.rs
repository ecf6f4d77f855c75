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
    choose(
        Path::new("/snap/requirements.lock"),
        text,
        &content_hash(CONTENT),
        worker,
        &Policy::default(),
    )
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
        each[0].text,
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
