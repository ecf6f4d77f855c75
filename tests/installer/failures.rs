//! One bad package fails only itself.

use super::*;

/// A requirement no index holds.
const MISSING: &str = "bifrost_t_missing";
/// A requirement published only as a source distribution.
const SOURCE_ONLY: &str = "bifrost_t_src";

/// Publish `name` 1.0 as a source distribution only (a tar.gz with PKG-INFO and pyproject.toml).
fn publish_sdist(wheels: &Path, name: &str) {
    let pyproject = "[build-system]\nrequires = []\nbuild-backend = \"setuptools.build_meta\"\n";
    common::wheels::sdist(wheels, name, pyproject, &[]);
}

/// Normalized names and reasons of the report's `failed_packages`.
fn failed_packages(report: &serde_json::Value) -> Vec<(String, String)> {
    report["failed_packages"]
        .as_array()
        .unwrap_or_else(|| panic!("no failed_packages: {report}"))
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_string(),
                f["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn one_bad_package_under_continue_installs_the_rest_and_the_next_run_retries_only_it() {
    for installer in ["uv", "pip"] {
        let w = World::new();
        publish_sdist(w.wheels.path(), SOURCE_ONLY);
        let log = w.file("termination-log");
        let log_arg = log.display().to_string();
        let args = [
            "--installer",
            installer,
            "--only-binary",
            "--on-failure",
            "continue",
            "--json",
            "--termination-log",
            &log_arg,
        ];
        let (missing_reason, source_only_reason) = failure_reasons(installer);
        let runs = Runs {
            w: &w,
            args: &args,
            log: &log,
            installer,
            missing_reason,
            source_only_reason,
        };
        runs.first_installs_the_rest();
        runs.retry_installs_only_the_failed();
        runs.the_last_one_as_a_wheel_completes_it();
    }
}

/// The runs of one world under `--on-failure continue` with `installer`, and what they say.
struct Runs<'a> {
    w: &'a World,
    args: &'a [&'a str],
    log: &'a Path,
    installer: &'a str,
    missing_reason: &'static str,
    source_only_reason: &'static str,
}

/// The reasons `installer` gives for the missing package and for the source-only one.
fn failure_reasons(installer: &str) -> (&'static str, &'static str) {
    let source_only_reason = match installer {
        "uv" => "no wheel, source only",
        _ => "no matching distribution",
    };
    let missing_reason = match installer {
        "uv" => "not found on the index",
        _ => "no matching distribution",
    };
    (missing_reason, source_only_reason)
}

impl Runs<'_> {
    /// The first run installs the good packages and names the two that failed.
    fn first_installs_the_rest(&self) {
        let Runs {
            w,
            args,
            log,
            installer,
            missing_reason,
            source_only_reason,
        } = *self;
        let hash = w.put(&format!(
            "{ALPHA}==1.0\n{MISSING}==1.0\n{GAMMA}==1.0\n{SOURCE_ONLY}==1.0\n"
        ));
        let out = w.install(args);
        assert_eq!(code(&out), 0, "{installer}: {}", stderr(&out));
        let report = json(&out);
        assert_eq!(report["status"], "partial", "{installer}: {report}");
        assert_eq!(report["package_count"], 4);
        assert_eq!(report["installed_count"], 2);
        assert_eq!(
            failed_packages(&report),
            [
                ("bifrost-t-missing".into(), missing_reason.into()),
                ("bifrost-t-src".into(), source_only_reason.into()),
            ],
            "{installer}: {report}"
        );
        for f in report["failed_packages"].as_array().unwrap() {
            let error = f["error"].as_str().unwrap();
            let first = error.lines().next().unwrap();
            assert!(
                first.starts_with("error: No solution found") || first.starts_with("ERROR: "),
                "{installer}: the error starts at the installer's verdict: {error}"
            );
            let name = f["name"].as_str().unwrap();
            assert!(
                error.contains(name) || error.contains(&name.replace('-', "_")),
                "{installer}: {error}"
            );
        }
        // The good ones import with the worker's python.
        assert_eq!(w.import(ALPHA).as_deref(), Ok("1.0"), "{installer}");
        assert_eq!(w.import(BETA).as_deref(), Ok("1.0"), "{installer}");
        assert_eq!(w.import(GAMMA).as_deref(), Ok("1.0"), "{installer}");
        assert!(w.import(MISSING).is_err());
        let marker = w.marker();
        assert_eq!(marker["hash"], hash.as_str());
        let names = common::checks::fields(&marker["failed"], "name");
        assert_eq!(names, ["bifrost-t-missing", "bifrost-t-src"], "{marker}");
        assert_eq!(
            std::fs::read_to_string(log).unwrap(),
            format!(
                "installed 2/4; failed: bifrost-t-missing ({missing_reason}), \
             bifrost-t-src ({source_only_reason})"
            )
        );
        assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    }

    /// The next run retries only the two that failed; the missing one is published by then.
    fn retry_installs_only_the_failed(&self) {
        let Runs {
            w,
            args,
            log,
            installer,
            source_only_reason,
            ..
        } = *self;
        // Between runs the missing package is published and the good ones' wheels disappear:
        // a run that tried anything but the failed ones again would fail on those.
        Wheel::new(MISSING, "1.0").build(w.wheels.path());
        for f in std::fs::read_dir(w.wheels.path()).unwrap().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if [ALPHA, BETA, GAMMA].iter().any(|p| n.starts_with(p)) {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        let out = w.install(args);
        assert_eq!(code(&out), 0, "{installer}: {}", stderr(&out));
        let report = json(&out);
        let retrying = format!("retrying with {installer} the 2 package(s) that failed last time");
        assert_says(&out, &[&retrying]);
        let err = stderr(&out);
        assert!(!err.contains("installing 4 package(s)"), "{err}");
        assert_eq!(report["status"], "partial", "{report}");
        assert_eq!(report["installed_count"], 3);
        assert_eq!(
            failed_packages(&report),
            [("bifrost-t-src".into(), source_only_reason.into())]
        );
        assert_eq!(w.import(MISSING).as_deref(), Ok("1.0"), "{installer}");
        assert_eq!(w.import(ALPHA).as_deref(), Ok("1.0"), "{installer}: kept");
        assert_eq!(w.import(GAMMA).as_deref(), Ok("1.0"), "{installer}: kept");
        assert_eq!(w.marker()["failed"].as_array().unwrap().len(), 1);
        assert_eq!(
            std::fs::read_to_string(log).unwrap(),
            format!("installed 3/4; failed: bifrost-t-src ({source_only_reason})")
        );
    }

    /// The source-only package published as a wheel: the install is complete.
    fn the_last_one_as_a_wheel_completes_it(&self) {
        let Runs {
            w,
            args,
            log,
            installer,
            ..
        } = *self;
        // Published as a wheel, the source-only package installs on the next retry, and the
        // marker is complete: the run after that is "unchanged".
        Wheel::new(SOURCE_ONLY, "1.0").build(w.wheels.path());
        let out = w.install(args);
        assert_eq!(code(&out), 0, "{installer}: {}", stderr(&out));
        let report = json(&out);
        assert_eq!(report["status"], "installed", "{report}");
        assert_eq!(report["failed_packages"], serde_json::json!([]));
        assert!(w.marker().get("failed").is_none(), "{}", w.marker());
        assert_eq!(std::fs::read_to_string(log).unwrap(), "installed 4/4");
        let out = w.install(args);
        assert_eq!(json(&out)["status"], "unchanged");
        assert_eq!(std::fs::read_to_string(log).unwrap(), "installed 4/4");
    }
}

#[test]
fn one_bad_package_under_fail_exits_non_zero_and_leaves_the_target_as_it_was() {
    for installer in ["uv", "pip"] {
        let w = World::new();
        let before = w.good_install();
        let log = w.file("termination-log");
        let content = format!("{ALPHA}==1.0\n{MISSING}==1.0\n{GAMMA}==1.0\n");
        w.put(&content);
        // The file through the environment variable this time.
        let out = w.install_via(
            Some(&w.redis_url),
            &["--installer", installer, "--json"],
            &[("BIFROST_INSTALL_TERMINATION_LOG", log.to_str().unwrap())],
        );
        assert_eq!(code(&out), 5, "{installer}: {}", stderr(&out));
        assert_says(
            &out,
            &[
                "1 of 3 package(s) did not install: bifrost-t-missing",
                "the 2 that did are not applied (--on-failure fail)",
            ],
        );
        let report = json(&out);
        assert_eq!(report["status"], "failed");
        assert_eq!(report["failed_packages"][0]["name"], "bifrost-t-missing");
        let message = std::fs::read_to_string(&log).unwrap();
        assert!(
            message.starts_with(
                "installed 0/3; kept the previous install; failed: bifrost-t-missing ("
            ),
            "{message}"
        );
        w.assert_untouched(&before);
        assert!(
            w.import(GAMMA).is_err(),
            "{installer}: nothing was swapped in"
        );
    }
}

#[test]
fn per_package_attempts_share_the_one_timeout() {
    let w = World::new();
    let real_uv = Command::new("sh")
        .args(["-c", "command -v uv"])
        .output()
        .unwrap();
    let real_uv = stdout(&real_uv).trim().to_string();
    assert!(!real_uv.is_empty(), "uv on PATH");
    // uv, except that a file asking for one `bifrost_t_hang*` package alone hangs.
    let hanging_uv = w.file("hanging-uv");
    script(
        &hanging_uv,
        &format!(
            "#!/bin/sh\nreq=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = -r ] && req=$a; prev=$a; done\n\
             if [ \"$(grep -c . \"$req\")\" = 1 ] && grep -q '^bifrost_t_hang' \"$req\"; then exec sleep 60; fi\n\
             exec '{real_uv}' \"$@\"\n"
        ),
    );
    let log = w.file("termination-log");
    w.put(&format!(
        "{GAMMA}==1.0\nbifrost_t_hang_a==1.0\nbifrost_t_hang_b==1.0\n"
    ));
    let started = Instant::now();
    let mut args = vec!["--uv", hanging_uv.to_str().unwrap(), "--timeout", "8s"];
    args.extend(["--on-failure", "continue", "--json"]);
    args.extend(["--termination-log", log.to_str().unwrap()]);
    let out = w.install(&args);
    let took = started.elapsed();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // Two hanging attempts with 8 s each would take 16 s; sharing the deadline, ~8 s.
    assert!(
        took < Duration::from_secs(14),
        "took {took:?}: {}",
        stderr(&out)
    );
    let report = json(&out);
    assert_eq!(
        failed_packages(&report),
        [
            ("bifrost-t-hang-a".into(), "timed out".into()),
            (
                "bifrost-t-hang-b".into(),
                "not attempted, --timeout spent".into()
            ),
        ],
        "{report}"
    );
    assert_eq!(w.import(GAMMA).as_deref(), Ok("1.0"));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "installed 1/3; failed: bifrost-t-hang-a (timed out), \
         bifrost-t-hang-b (not attempted, --timeout spent)"
    );
}

#[test]
fn the_termination_message_says_installed_or_the_error() {
    let w = World::new();
    let log = w.file("termination-log");
    let log_arg = log.to_str().unwrap();
    w.put(&format!("{ALPHA}==1.0\n{GAMMA}==2.0\n"));
    assert_ok(&w.install(&["--termination-log", log_arg]));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "installed 2/2");
    // Redis down, no fallback: the error's first line, the password masked.
    let out = w.install_via(
        Some("redis://:hunter22@127.0.0.1:1/0"),
        &["--termination-log", log_arg],
        &[],
    );
    assert_eq!(code(&out), 4, "{}", stderr(&out));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        !message.contains("hunter22") && !message.contains('\n'),
        "{message}"
    );
    assert!(message.contains("127.0.0.1:1"), "{message}");
}
