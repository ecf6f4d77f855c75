use super::*;

fn interpreter() -> Interpreter {
    Interpreter {
        version: "3.11".into(),
        platform: "x86_64-manylinux_2_28".into(),
    }
}

fn lock() -> Lock {
    Lock {
        content_hash: "ab".repeat(32),
        interpreter: interpreter(),
        index_urls: vec!["http://127.0.0.1:9/simple".into()],
        only_binary: true,
        body: "alpha==1.0 \\\n    --hash=sha256:00\n    # via -r requirements.txt\nbeta==2.0 \\\n    --hash=sha256:11\n".into(),
    }
}

fn worker(version: &str, machine: &str, glibc: Option<&str>) -> Worker {
    Worker {
        version: version.into(),
        machine: machine.into(),
        glibc: glibc.map(Into::into),
    }
}

#[test]
fn a_rendered_lock_parses_back_and_lists_its_pins() {
    let lock = lock();
    let text = lock.render();
    assert!(text.starts_with("# bifrost-requirements lock"), "{text}");
    assert_eq!(Lock::parse(&text).unwrap(), lock);
    assert_eq!(lock.pins(), ["alpha==1.0", "beta==2.0"]);
    assert!(lock.resolves(&format!("sha256:{}", "AB".repeat(32))));
    assert!(!lock.resolves(&"cd".repeat(32)));
}

#[test]
fn a_damaged_lock_says_what_is_wrong() {
    let good = lock().render();
    let cases = [
        ("alpha==1.0\n".to_string(), "does not start with"),
        (
            good.replace("# content-sha256", "# content-sha1"),
            "unknown header field",
        ),
        (good.replace(&"ab".repeat(32), "xyz"), "is not a SHA-256"),
        (
            good.replace("# python-version: 3.11\n", ""),
            "no python-version",
        ),
        (good.replace("3.11", "2.7"), "not a Python 3 version"),
        (
            good.replace("x86_64-manylinux_2_28", "win_amd64"),
            "platform",
        ),
        (good.replace("# only-binary: true\n", ""), "no only-binary"),
    ];
    for (text, expected) in cases {
        let err = Lock::parse(&text).unwrap_err();
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
    }
}

#[test]
fn interpreters_are_checked_field_by_field() {
    assert!(interpreter().check().is_ok());
    for (version, platform, field) in [
        ("3", "x86_64-manylinux_2_28", "version"),
        ("3.11.7.1", "x86_64-manylinux_2_28", "version"),
        ("3.x", "x86_64-manylinux_2_28", "version"),
        ("", "x86_64-manylinux_2_28", "version"),
        ("3.11", "x86_64", "platform"),
        ("3.11", "riscv64-manylinux_2_28", "platform"),
        ("3.11", "x86_64-manylinux_2_", "platform"),
        ("3.11", "x86_64-manylinux2014", "platform"),
        ("3.11", "x86_64-unknown-linux-musl", "platform"),
    ] {
        let err = Interpreter {
            version: version.into(),
            platform: platform.into(),
        }
        .check()
        .unwrap_err();
        assert!(
            err.contains(&format!("spec.install.python.{field}")),
            "{version} {platform}: {err}"
        );
    }
    let gnu = Interpreter {
        version: "3.12.1".into(),
        platform: "aarch64-unknown-linux-gnu".into(),
    };
    assert!(gnu.check().is_ok());
}

#[test]
fn a_worker_matches_a_lock_by_version_machine_and_glibc() {
    let i = interpreter();
    assert_eq!(i.mismatch(&worker("3.11.2", "x86_64", Some("2.36"))), None);
    assert_eq!(i.mismatch(&worker("3.11.2", "x86_64", Some("2.28"))), None);
    let cases = [
        (
            worker("3.12.0", "x86_64", Some("2.36")),
            "Python 3.11, the worker's python3 is 3.12.0",
        ),
        (worker("3.1.0", "x86_64", Some("2.36")), "python3 is 3.1.0"),
        (
            worker("3.11.2", "aarch64", Some("2.36")),
            "machine is aarch64",
        ),
        (worker("3.11.2", "x86_64", Some("2.17")), "glibc 2.17"),
        (worker("3.11.2", "x86_64", None), "not glibc"),
    ];
    for (w, expected) in cases {
        let why = i.mismatch(&w).unwrap_or_default();
        assert!(why.contains(expected), "{w:?}: {why:?}");
    }
    let patch = Interpreter {
        version: "3.11.7".into(),
        ..interpreter()
    };
    assert_eq!(
        patch.mismatch(&worker("3.11.7", "x86_64", Some("2.36"))),
        None
    );
    assert!(
        patch
            .mismatch(&worker("3.11.2", "x86_64", Some("2.36")))
            .is_some()
    );
}

#[test]
fn the_operator_fetches_only_the_indexes_it_allows() {
    let r = Resolver {
        uv: "uv".into(),
        python: "python3".into(),
        allowed_index_urls: vec![DEFAULT_INDEX.into(), "http://index.local/simple/".into()],
        file_origins: vec![DEFAULT_FILE_ORIGIN.into()],
        timeout: Duration::from_secs(1),
        memory_limit: 1 << 30,
        cache_dir: "/tmp".into(),
        wheelhouse_retention: crate::wheelhouse::DEFAULT_RETENTION,
    };
    assert_eq!(r.refused_index(&effective_index_urls(&[])), None);
    assert_eq!(
        r.refused_index(&["http://index.local/simple".into()]),
        None,
        "a trailing slash is the same index"
    );
    assert_eq!(
        r.refused_index(&[
            "http://index.local/simple".into(),
            "http://user:pw@10.0.0.1/simple".into()
        ])
        .as_deref(),
        Some("http://user:***@10.0.0.1/simple")
    );
    assert_eq!(
        effective_index_urls(&[" ".into(), " http://a/simple ".into()]),
        ["http://a/simple"]
    );
}

#[test]
fn the_resolver_message_starts_at_uvs_error() {
    let tail = "Resolved 3 packages\nerror: No solution found when resolving dependencies\n  cause: Because nosuch was not found";
    assert_eq!(
        resolver_message(tail),
        "error: No solution found when resolving dependencies\n  cause: Because nosuch was not found"
    );
    assert!(resolver_message("").contains("no message"));
}

proptest::proptest! {
    /// Whatever a ConfigMap holds, reading it as a lock answers (a lock or why not), never
    /// panics, and a lock it accepts renders back to a lock that parses to the same.
    #[test]
    fn any_text_parses_to_a_lock_or_a_reason(text in "(# [a-z-]{0,16}: [ -~]{0,20}\n|[ -~]{0,30}\n){0,8}") {
        for candidate in [text.clone(), format!("{MAGIC}\n{text}")] {
            if let Ok(lock) = Lock::parse(&candidate) {
                proptest::prop_assert_eq!(Lock::parse(&lock.render()), Ok(lock));
            }
        }
    }

    /// Every lock renders to a text that parses back to it.
    #[test]
    fn rendered_locks_round_trip(
        hash in "[0-9a-f]{64}",
        minor in 8u32..20,
        glibc in 17u32..40,
        urls in proptest::collection::vec("https?://[a-z]{1,8}(:[0-9]{2,5})?/[a-z/]{0,10}", 0..3),
        only_binary: bool,
        body in "([a-z]{1,8}==[0-9]\\.[0-9] \\\\\n    --hash=sha256:[0-9a-f]{64}\n){0,4}",
    ) {
        let lock = Lock {
            content_hash: hash,
            interpreter: Interpreter {
                version: format!("3.{minor}"),
                platform: format!("x86_64-manylinux_2_{glibc}"),
            },
            index_urls: urls,
            only_binary,
            body,
        };
        proptest::prop_assert_eq!(Lock::parse(&lock.render()), Ok(lock));
    }
}

#[test]
fn a_probed_worker_is_resolved_for_its_exact_version_and_newest_fitting_platform() {
    let learned = |glibc: Option<&str>| worker("3.11.2", "x86_64", glibc).interpreter();
    let bookworm = learned(Some("2.36")).unwrap();
    assert_eq!(bookworm.version, "3.11.2");
    assert_eq!(bookworm.platform, "x86_64-manylinux_2_36");
    assert_eq!(
        bookworm.mismatch(&worker("3.11.2", "x86_64", Some("2.36"))),
        None
    );
    assert_eq!(
        learned(Some("2.30")).unwrap().platform,
        "x86_64-manylinux_2_28"
    );
    assert_eq!(
        learned(Some("2.99")).unwrap().platform,
        "x86_64-manylinux_2_40"
    );
    assert_eq!(
        learned(Some("2.17")).unwrap().platform,
        "x86_64-unknown-linux-gnu"
    );
    assert_eq!(
        worker("3.12.1", "aarch64", Some("2.31"))
            .interpreter()
            .unwrap()
            .platform,
        "aarch64-manylinux_2_31"
    );
    assert!(learned(None).unwrap_err().contains("does not use glibc"));
    assert!(
        learned(Some("2.12"))
            .unwrap_err()
            .contains("older than 2.17")
    );
    assert!(
        learned(Some("banana"))
            .unwrap_err()
            .contains("not 2.<minor>")
    );
    let other = worker("3.11.2", "riscv64", Some("2.36")).interpreter();
    assert!(
        other.unwrap_err().contains("platform"),
        "a machine uv does not resolve for"
    );
    let old = worker("2.7.18", "x86_64", Some("2.36")).interpreter();
    assert!(old.unwrap_err().contains("version"), "Python 2 has no lock");
}

proptest::proptest! {
    /// Whatever a probe answers, the interpreter learned from it (when there is one) is one a
    /// lock can name and one that worker may install.
    #[test]
    fn a_learned_interpreter_fits_its_worker(
        minor in 0u32..20, patch in 0u32..30,
        machine in proptest::sample::select(vec!["x86_64", "aarch64", "armv7l"]),
        glibc in proptest::option::of(0u32..60),
    ) {
        let glibc = glibc.map(|g| format!("2.{g}"));
        let w = worker(&format!("3.{minor}.{patch}"), machine, glibc.as_deref());
        if let Ok(i) = w.interpreter() {
            proptest::prop_assert!(i.check().is_ok(), "{:?}", i);
            proptest::prop_assert_eq!(i.mismatch(&w), None);
        }
    }
}

#[test]
fn the_resolver_reads_the_text_the_policy_checked() {
    let file = RequirementsFile::parse("goodpkg \\\n==2.0  # pinned\nother>=1.0,\\\n<3\n");
    assert_eq!(
        resolver_text(&file).unwrap(),
        "goodpkg ==2.0\nother>=1.0,<3\n"
    );
    let bad = RequirementsFile::parse("ok\n./local/pkg\n");
    let Err(Failure::Unresolvable(why)) = resolver_text(&bad) else {
        panic!("a path was resolved");
    };
    assert!(why.starts_with("line 2: `./local/pkg`"), "{why}");
}

#[test]
fn the_proxy_lets_uv_reach_the_indexes_and_their_file_hosts_only() {
    let r = Resolver::bundled(
        "python3".into(),
        vec![DEFAULT_INDEX.into()],
        Duration::from_secs(1),
        1 << 30,
        None,
    );
    let origins = r.proxy_origins(&[DEFAULT_INDEX.into()]);
    let https = |host: &str| ("https".to_string(), host.to_string(), 443);
    // PyPI serves its files (wheels, PEP 658 metadata) from another host than its pages.
    assert_eq!(
        origins,
        [https("pypi.org"), https("files.pythonhosted.org")]
    );
    let local = r
        .with_file_origins(Vec::new())
        .proxy_origins(&["http://127.0.0.1:3141/simple/".into()]);
    assert_eq!(local, [("http".to_string(), "127.0.0.1".to_string(), 3141)]);
}

/// A filtered lock's note is a plain comment: `Lock::parse` (unchanged since before filtering,
/// so also the one an older `install` runs) ends its header before it and keeps it in the body,
/// whose pins read as before.
#[test]
fn a_filtered_lock_reads_with_the_parser_of_unfiltered_ones() {
    let mut lock = lock();
    let filtered = platform::Filtered {
        body: lock.body.clone(),
        kept: 2,
        total: 9,
    };
    lock.body = format!(
        "{}{}",
        platform::note("3.11", "x86_64-manylinux_2_28", &filtered),
        filtered.body
    );
    let parsed = Lock::parse(&lock.render()).unwrap();
    assert_eq!(parsed, lock);
    assert!(
        parsed.body.starts_with("# Hashes kept for Python 3.11"),
        "{}",
        parsed.body
    );
    assert_eq!(parsed.pins(), ["alpha==1.0", "beta==2.0"]);
    assert_eq!(parsed.pinned().unwrap().len(), 2);
}
