use super::*;

fn marker(hash: &str) -> Marker {
    Marker {
        hash: hash.into(),
        installer: "uv".into(),
        package_count: 1,
        distribution_count: 1,
        duration_ms: 1,
        installed_at: "2025-01-01T00:00:00Z".into(),
        python: None,
        python_realpath: None,
        python_version: None,
        source: "redis".into(),
        compile_bytecode: false,
        entries: vec![],
        failed: vec![],
        installed_from_lock: false,
    }
}

fn failure(name: &str) -> FailedPackage {
    FailedPackage {
        name: name.into(),
        requirement: format!("{name}==1"),
        reason: "not found on the index".into(),
        error: "error: No solution found".into(),
    }
}

#[test]
fn an_old_marker_without_failures_reads_as_before() {
    let old = r#"{"hash":"h1","installer":"uv","package_count":1,"distribution_count":1,
        "duration_ms":5,"installed_at":"2025-01-01T00:00:00Z","python":null,
        "python_realpath":null,"python_version":"3.11.7","source":"redis",
        "compile_bytecode":false,"entries":[]}"#;
    let m: Marker = serde_json::from_str(old).unwrap();
    assert!(m.failed.is_empty());
    // And a complete install still writes no `failed` field (older readers see no change).
    let json = serde_json::to_value(marker("h1")).unwrap();
    assert!(json.get("failed").is_none(), "{json}");
}

#[test]
fn a_marker_with_failures_is_partial_not_current() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Target::open(dir.path()).unwrap();
    let s = stage(&t, &["a", "a-1.dist-info"], "1");
    let mut m = marker("h1");
    m.failed = vec![failure("b")];
    t.commit(s, m).unwrap();
    let why = t.current("h1", None).unwrap_err();
    assert!(why.contains("failed last time (b)"), "{why}");
    assert_eq!(t.partial("h1", None).unwrap().failed, vec![failure("b")]);
    assert!(t.partial("h2", None).is_none());
    drop(t);
    let t = Target::open(dir.path()).unwrap();
    assert_eq!(t.marker().unwrap().failed, vec![failure("b")]);
}

#[test]
fn commit_adding_keeps_the_installed_entries_and_rolls_back_to_them() {
    let dir = tempfile::tempdir().unwrap();
    let before = installed_v1(dir.path());
    // A retry that stages one new package and a dependency the target already holds.
    let mut t = Target::open(dir.path()).unwrap();
    let s = stage(&t, &["b", "b-1.dist-info", "shared"], "2");
    t.commit_adding(s, marker("h1")).unwrap();
    let m = t.marker().unwrap().clone();
    assert_eq!(
        m.entries,
        ["a", "a-1.dist-info", "b", "b-1.dist-info", "shared"]
    );
    assert_eq!(m.distribution_count, 2);
    drop(t);
    let st = state(dir.path());
    assert!(st.contains(&("a".into(), "1".into())), "{st:?}");
    assert!(st.contains(&("shared".into(), "2".into())), "{st:?}");

    // Killed after each rename: the next open restores the install before the retry.
    for n in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        installed_v1(dir.path());
        let mut t = Target::open(dir.path()).unwrap();
        let s = stage(&t, &["b", "shared"], "2");
        assert!(t.swap(s, marker("h1"), Some((n, true)), true).is_err());
        drop(t);
        let t = Target::open(dir.path()).unwrap();
        drop(t);
        assert_eq!(state(dir.path()), before, "killed after {n} rename(s)");
    }
}

/// Stage `names` (each a folder holding `v`), as an installer would.
fn stage(t: &Target, names: &[&str], v: &str) -> Staging {
    let s = t.staging().unwrap();
    for n in names {
        fs::create_dir(s.site.join(n)).unwrap();
        fs::write(s.site.join(n).join("v"), v).unwrap();
    }
    s
}

fn state(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != LOCK)
        .map(|n| {
            let v = fs::read_to_string(dir.join(&n).join("v"))
                .or_else(|_| fs::read_to_string(dir.join(&n)))
                .unwrap_or_default();
            (n, v)
        })
        .collect();
    out.sort();
    out
}

fn installed_v1(dir: &Path) -> Vec<(String, String)> {
    let mut t = Target::open(dir).unwrap();
    let s = stage(&t, &["a", "a-1.dist-info", "shared"], "1");
    t.commit(s, marker("h1")).unwrap();
    state(dir)
}

#[test]
fn commit_replaces_owned_entries_and_keeps_foreign_ones() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("lost+found"), "foreign").unwrap();
    installed_v1(dir.path());
    let mut t = Target::open(dir.path()).unwrap();
    assert_eq!(t.current("h1", None).unwrap().entries.len(), 3);
    let s = stage(&t, &["b", "shared"], "2");
    t.commit(s, marker("h2")).unwrap();
    drop(t); // releases the lock (flock: a second open in this process would wait)
    let st = state(dir.path());
    let names: Vec<&str> = st.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, vec![MARKER, "b", "lost+found", "shared"]);
    assert!(st.contains(&("shared".into(), "2".into())));
    let t = Target::open(dir.path()).unwrap();
    assert_eq!(t.marker().unwrap().entries, vec!["b", "shared"]);
    assert!(t.notes.is_empty(), "{:?}", t.notes);
}

#[test]
fn a_failing_rename_rolls_back_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let before = installed_v1(dir.path());
    for n in 0..6 {
        let mut t = Target::open(dir.path()).unwrap();
        let s = stage(&t, &["b", "shared", "a"], "2");
        assert!(t.swap(s, marker("h2"), Some((n, false)), false).is_err());
        assert_eq!(state(dir.path()), before, "fault after {n} renames");
        assert_eq!(t.marker().unwrap().hash, "h1");
    }
}

#[test]
fn a_killed_swap_never_leaves_a_marker_and_the_next_open_restores_the_previous_install() {
    let dir = tempfile::tempdir().unwrap();
    let before = installed_v1(dir.path());
    for n in 0..6 {
        {
            let mut t = Target::open(dir.path()).unwrap();
            let s = stage(&t, &["b", "shared", "a"], "2");
            assert!(t.swap(s, marker("h2"), Some((n, true)), false).is_err());
            // Killed here: whatever the state, no marker claims success.
            assert!(!dir.path().join(MARKER).exists(), "after {n} renames");
        }
        let t = Target::open(dir.path()).unwrap();
        assert!(
            t.notes
                .iter()
                .any(|n| n.contains("restored the previous install")),
            "{:?}",
            t.notes
        );
        assert_eq!(state(dir.path()), before, "crash after {n} renames");
        assert!(t.current("h1", None).is_ok());
    }
}

#[test]
fn first_install_killed_mid_swap_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut t = Target::open(dir.path()).unwrap();
        let s = stage(&t, &["a", "b"], "1");
        assert!(t.swap(s, marker("h1"), Some((1, true)), false).is_err());
    }
    let t = Target::open(dir.path()).unwrap();
    assert!(t.marker().is_none());
    assert_eq!(state(dir.path()), vec![]);
}

#[test]
fn current_checks_hash_interpreter_and_entries() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = Target::open(dir.path()).unwrap();
    let s = stage(&t, &["a"], "1");
    let m = Marker {
        python_realpath: Some("/usr/bin/python3.11".into()),
        ..marker("h1")
    };
    t.commit(s, m).unwrap();
    assert!(t.current("h1", Some("/usr/bin/python3.11")).is_ok());
    assert!(t.current("h1", None).is_ok());
    assert!(
        t.current("h2", None)
            .unwrap_err()
            .contains("holds sha256 h1")
    );
    assert!(
        t.current("h1", Some("/usr/bin/python3.12"))
            .unwrap_err()
            .contains("interpreter changed")
    );
    fs::remove_dir_all(dir.path().join("a")).unwrap();
    assert!(t.current("h1", None).unwrap_err().contains("gone missing"));
}

#[test]
fn stale_staging_folders_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join(".bifrost-staging-99999/site-packages/x")).unwrap();
    fs::write(dir.path().join(".bifrost-requirements.json.tmp-99999"), "{").unwrap();
    let t = Target::open(dir.path()).unwrap();
    assert_eq!(t.notes.len(), 2, "{:?}", t.notes);
    assert_eq!(state(dir.path()), vec![]);
}
