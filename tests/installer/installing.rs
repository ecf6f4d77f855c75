//! Installing: uv and pip from Redis, skips, replacements, concurrency, the environment, UserBase.

use super::*;

#[test]
fn uv_installs_from_redis_with_dependencies_and_writes_the_marker() {
    let w = World::new();
    let content = format!("# workspace packages\n{ALPHA}==1.0\n{GAMMA}>=2\n");
    let hash = w.put(&content);
    let out = w.install(&["--json"]);
    assert_ok(&out);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
    assert_eq!(w.import(BETA).unwrap(), "1.0", "dependency installed");
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");

    let m = w.marker();
    assert_eq!(m["hash"], hash.as_str());
    assert_eq!(m["installer"], "uv");
    assert_eq!(m["package_count"], 2);
    assert_eq!(m["distribution_count"], 3);
    assert_eq!(m["source"], "redis");
    assert!(m["duration_ms"].as_u64().is_some());
    assert!(m["installed_at"].as_str().unwrap().ends_with('Z'));
    assert!(m["python"].as_str().unwrap().contains("python3"));
    assert!(m["python_version"].as_str().unwrap().starts_with("3."));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    let entries = common::checks::strings(&m["entries"]);
    assert!(
        entries.contains(&ALPHA) && !entries.contains(&".lock"),
        "{entries:?}"
    );
    assert!(
        !w.target().join(".lock").exists(),
        "uv's lock file is not an install entry"
    );
    // Bytecode is not compiled by default.
    assert!(!w.target().join(GAMMA).join("__pycache__").exists());

    let err = stderr(&out);
    for needle in [
        "Redis key",
        &hash[..],
        "2 package(s)",
        "with uv",
        "installed: 2 package(s) (3 distribution(s))",
    ] {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    let r = json(&out);
    assert_eq!(r["status"], "installed");
    assert_eq!(r["exit_code"], 0);
    assert_eq!(r["hash"], hash.as_str());
    assert_eq!(r["source"], "redis");
    assert_eq!(r["package_count"], 2);
    assert_eq!(r["installer"], "uv");
    assert_eq!(r["installer_run"], true);
}

#[test]
fn pip_installs_from_redis() {
    let w = World::new();
    let hash = w.put(&format!("{ALPHA}\n"));
    let out = w.install(&["--installer", "pip", "--json"]);
    assert_ok(&out);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
    assert_eq!(w.import(BETA).unwrap(), "1.0");
    let m = w.marker();
    assert_eq!(m["hash"], hash.as_str());
    assert_eq!(m["installer"], "pip");
    assert_eq!(m["distribution_count"], 2);
    assert_eq!(json(&out)["installer"], "pip");
    assert_says(&out, &["with pip"]);
    // --no-compile is passed unless --compile-bytecode.
    assert!(!w.target().join(ALPHA).join("__pycache__").exists());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn compile_bytecode_writes_pyc_files() {
    let w = World::new();
    w.put(&format!("{GAMMA}==1.0\n"));
    assert_ok(&w.install(&["--compile-bytecode"]));
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    let pycache = w.target().join(GAMMA).join("__pycache__");
    assert!(pycache.is_dir(), "no {}", pycache.display());
    assert_eq!(w.marker()["compile_bytecode"], true);
}

#[test]
fn second_run_with_the_same_hash_skips_without_running_the_installer() {
    let w = World::new();
    let before = w.good_install();
    // /bin/false as "uv": if the installer ran, the install would fail.
    let out = w.install(&["--uv", "/bin/false", "--json"]);
    assert_ok_says(&out, &["already installed", "installer not run"]);
    assert_eq!(
        w.marker_bytes().unwrap(),
        before,
        "marker (and its timestamp) unchanged"
    );
    let r = json(&out);
    assert_eq!(r["status"], "unchanged");
    assert_eq!(r["installer_run"], false);
    assert_eq!(r["source"], "redis");
    w.assert_untouched(&before);

    // With the admitted hash, a restart needs no source at all: Redis may be down.
    let hash = w.marker()["hash"].as_str().unwrap().to_string();
    let out = w.install_via(
        Some(&services::dead_url("redis")),
        &[
            "--uv",
            "/bin/false",
            "--expected-hash",
            &format!("sha256:{hash}"),
            "--json",
        ],
        &[],
    );
    assert_ok_says(&out, &["no source read"]);
    assert_eq!(json(&out)["source"], "marker");
    w.assert_untouched(&before);
}

#[test]
fn changed_requirements_replace_the_previous_install() {
    let w = World::new();
    w.good_install();
    let hash = w.put(&format!("{GAMMA}==1.0\n"));
    let out = w.install(&[]);
    assert_ok(&out);
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
    assert!(
        w.import(ALPHA).is_err(),
        "alpha was removed from requirements"
    );
    assert!(w.import(BETA).is_err(), "so was its dependency");
    assert_eq!(w.marker()["hash"], hash.as_str());
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn a_different_interpreter_reinstalls() {
    let w = World::new();
    w.good_install();
    // Another interpreter path (a wrapper): same hash, but packages are redone for its ABI.
    let wrapper = w.file("python-wrapper");
    std::fs::write(&wrapper, "#!/bin/sh\nexec python3 \"$@\"\n").unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = w.install(&["--python", wrapper.to_str().unwrap()]);
    assert_ok_says(&out, &["interpreter changed", "installed:"]);
    assert_eq!(w.marker()["python"], wrapper.to_str().unwrap());
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
}

#[test]
fn concurrent_installs_into_one_target_serialize() {
    let w = World::new();
    w.put(&format!("{ALPHA}\n{GAMMA}\n"));
    let a = w.spawn(&[]);
    let b = w.spawn(&[]);
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    for o in &outs {
        assert_ok(o);
    }
    let installed = outs
        .iter()
        .filter(|o| stderr(o).lines().any(|l| l.starts_with("installed: ")))
        .count();
    let skipped = outs
        .iter()
        .filter(|o| stderr(o).contains("already installed"))
        .count();
    assert_eq!(
        (installed, skipped),
        (1, 1),
        "one installs, the other finds it done"
    );
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn environment_variables_replace_flags() {
    let w = World::new();
    let hash = w.put(&format!("{GAMMA}==1.0\n"));
    let target = w.target().display().to_string();
    let out = common::cli(
        &["install"],
        &[
            ("BIFROST_INSTALL_TARGET", &target),
            ("BIFROST_INSTALL_INSTALLER", "uv"),
            ("BIFROST_INSTALL_FIND_LINKS", w.wheels.path_str()),
            ("BIFROST_INSTALL_NO_INDEX", "true"),
            ("BIFROST_INSTALL_ON_FAILURE", "fail"),
            ("BIFROST_INSTALL_TIMEOUT", "2m"),
            ("BIFROST_INSTALL_EXPECTED_HASH", &hash),
            ("BIFROST_INSTALL_JSON", "1"),
            ("REDIS_URL", &w.redis_url),
            ("BIFROST_REQUIREMENTS_REDIS_KEY", &w.key),
        ],
    );
    assert_ok(&out);
    assert_eq!(json(&out)["status"], "installed");
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
}

/// `--user-base BASE` installs into the user site the real python3 reports for
/// `PYTHONUSERBASE=BASE`, so a worker with that variable imports the packages while its own
/// `PYTHONPATH` (here an `/app`-like folder) keeps working, and its own `pip install -r` finds
/// them already satisfied without an index.
#[test]
fn user_base_installs_into_the_interpreters_user_site_and_leaves_pythonpath_alone() {
    let w = World::new();
    let base = w.file("userbase");
    let content = format!("{ALPHA}==1.0\n{GAMMA}>=2\n");
    let hash = w.put(&content);
    let mut args = w.args(Some(&w.redis_url), &["--json"]);
    args[1] = "--user-base".into();
    args[2] = base.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = common::cli(&args, &[]);
    assert_ok(&out);

    let python = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .env("PYTHONUSERBASE", &base)
            .env("PYTHONPATH", w.file("app"))
            .env_remove("PYTHONNOUSERSITE")
            .env("PIP_NO_INDEX", "1")
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .output()
            .unwrap()
    };
    let site = stdout(&python(&[
        "-c",
        "import site; print(site.getusersitepackages())",
    ]));
    let site = PathBuf::from(site.trim());
    assert!(
        site.starts_with(&base) && site != base,
        "{}",
        site.display()
    );
    let report = json(&out);
    assert_eq!(report["target"], site.display().to_string());
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(site.join(MARKER)).expect("marker in the user site"))
            .unwrap();
    assert_eq!(marker["hash"], hash.as_str());

    the_app_and_its_pip_see_the_packages(&w, &python, &content);

    // A restart with the same base resolves the same folder and finds its marker.
    let again = common::cli(&args, &[]);
    assert_ok(&again);
    assert_eq!(json(&again)["status"], "unchanged");
    assert_eq!(json(&again)["target"], site.display().to_string());
    assert!(
        std::fs::read_dir(&base).unwrap().count() == 1,
        "only lib/ under the base"
    );

    one_destination_only();
}

/// The worker's own code on its `PYTHONPATH` imports alongside the packages, as a module and
/// with `-m`, and its own `pip install -r` finds them already satisfied.
fn the_app_and_its_pip_see_the_packages(
    w: &World,
    python: &dyn Fn(&[&str]) -> Output,
    content: &str,
) {
    std::fs::create_dir_all(w.file("app/appmod")).unwrap();
    std::fs::write(w.file("app/appmod/__init__.py"), "WHERE = 'app'\n").unwrap();
    std::fs::write(
        w.file("app/appmod/__main__.py"),
        format!("import {ALPHA}, {GAMMA}\nprint('main', {ALPHA}.VERSION, {GAMMA}.VERSION)\n"),
    )
    .unwrap();
    let both = python(&[
        "-c",
        &format!("import appmod, {ALPHA}, {BETA}; print(appmod.WHERE, {ALPHA}.VERSION)"),
    ]);
    assert_eq!(stdout(&both).trim(), "app 1.0", "{}", stderr(&both));
    let main = python(&["-m", "appmod"]);
    assert_eq!(stdout(&main).trim(), "main 1.0 2.0", "{}", stderr(&main));
    std::fs::write(w.file("requirements.txt"), content).unwrap();
    let pip = python(&[
        "-m",
        "pip",
        "install",
        "-r",
        &w.file("requirements.txt").display().to_string(),
    ]);
    assert!(pip.status.success(), "{}", stderr(&pip));
    let said = stdout(&pip);
    for name in [ALPHA, GAMMA] {
        assert!(
            said.contains(&format!("Requirement already satisfied: {name}")),
            "{said}"
        );
    }
}

/// `--target` and `--user-base` together are refused: one destination only.
fn one_destination_only() {
    let both_flags = common::cli(
        &[
            "install",
            "--target",
            "/tmp/x",
            "--user-base",
            "/tmp/y",
            "--fallback-file",
            "/tmp/z",
        ],
        &[],
    );
    assert_eq!(code(&both_flags), 2, "{}", stderr(&both_flags));
}
