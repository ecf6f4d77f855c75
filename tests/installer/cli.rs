//! Empty content, CLI errors, waiting, and what `install` logs on a pipe.

use super::*;

#[test]
fn empty_requirements_succeed_and_clear_the_previous_install() {
    let w = World::new();
    w.good_install();
    let hash = w.put("# no packages yet\n\n");
    let out = w.install(&["--uv", "/bin/false", "--json"]);
    assert_ok_says(
        &out,
        &[
            "nothing to install",
            "lists no packages",
            "removed the previous install",
        ],
    );
    assert!(w.import(ALPHA).is_err(), "requirements are empty now");
    let m = w.marker();
    assert_eq!(m["hash"], hash.as_str());
    assert_eq!(m["package_count"], 0);
    assert_eq!(json(&out)["status"], "empty");

    // Marked, so the next start is free.
    let out = w.install(&["--uv", "/bin/false"]);
    assert_ok_says(&out, &["already installed"]);

    // Truly empty content (Bifrost's "no row" payload) on a fresh target.
    let fresh = World::new();
    fresh.put("");
    let out = fresh.install(&[]);
    assert_ok(&out);
    assert_eq!(fresh.marker()["hash"], content_hash("").as_str());
}

#[test]
fn malformed_arguments_exit_2_and_touch_nothing() {
    let w = World::new();
    let target = w.target().display().to_string();
    let url = w.redis_url.clone();
    let base = [
        "install",
        "--target",
        target.as_str(),
        "--redis-url",
        url.as_str(),
    ];
    let cases: &[(&[&str], &str)] = &[
        (&["--installer", "conda"], "conda"),
        (&["--timeout", "-3"], "-3"),
        (&["--timeout", "0"], "greater than zero"),
        (&["--timeout", "3 fortnights"], "unknown unit"),
        (&["--on-failure", "maybe"], "maybe"),
        (&["--expected-hash", "abc123"], "not a SHA-256"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (extra, needle) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let out = common::cli(&args, &[]);
        assert_eq!(code(&out), 2, "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
    }
    let out = common::cli(&["install", "--redis-url", &url], &[]);
    assert_eq!(code(&out), 2);
    assert_says(&out, &["--target"]);
    // No source configured is a configuration error even under --on-failure continue.
    let out = common::cli(
        &["install", "--target", &target, "--on-failure", "continue"],
        &[],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing to install from")
            && stderr(&out).contains("(REDIS_URL or BIFROST_REDIS_URL)"),
        "{}",
        stderr(&out)
    );
    assert!(!w.target().exists(), "no flag error may create the target");
}

#[test]
fn help_documents_the_exit_codes_and_environment() {
    let out = common::cli(&["install", "--help"], &[]);
    assert_ok(&out);
    let help = stdout(&out);
    for needle in [
        "Exit codes",
        "143",
        "--on-failure",
        "BIFROST_INSTALL_TARGET",
        "BIFROST_INSTALL_EXPECTED_HASH",
        "--compile-bytecode",
        "--fallback-file",
        "--allow-index-url",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[test]
fn an_own_redis_that_stops_mid_life_falls_back() {
    let redis = RedisServer::start();
    let w = World::new();
    let key_url = redis.url();
    let hash = {
        let p = Payload::new(format!("{GAMMA}==1.0\n"));
        let client = redis::Client::open(key_url.as_str()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("SET")
            .arg(&w.key)
            .arg(p.to_json())
            .query::<()>(&mut con)
            .unwrap();
        p.hash
    };
    let fallback = w.fallback_file(&format!("{GAMMA}==2.0\n"));
    let fb = fallback.as_str();
    assert_ok(&w.install_via(Some(&key_url), &["--fallback-file", fb], &[]));
    assert_eq!(w.marker()["hash"], hash.as_str());
    redis.stop();
    let out = w.install_via(Some(&key_url), &["--fallback-file", fb], &[]);
    assert_ok_says(&out, &["using the fallback file"]);
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
}

#[test]
fn relative_paths_are_resolved_against_the_callers_directory() {
    let w = World::new();
    let hash = w.put(&format!("{GAMMA}==2.0\n"));
    std::fs::create_dir(w.file("wh")).unwrap();
    Wheel::new(GAMMA, "2.0").build(&w.file("wh"));
    let out = Command::new(common::bin())
        .current_dir(w.dir.path())
        .env_remove("REDIS_URL")
        .args([
            "install",
            "--target",
            "site-packages",
            "--redis-url",
            &w.redis_url,
        ])
        .args(["--redis-key", &w.key, "--no-index", "--find-links", "wh"])
        .args(["--cache-dir", "uv-cache"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(w.marker()["hash"], hash.as_str());
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    let cache = std::fs::read_dir(w.file("uv-cache")).unwrap().count();
    assert!(
        cache > 0,
        "uv used ./uv-cache, not a folder relative to its own working directory"
    );
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn waiting_for_another_install_stays_interruptible() {
    let w = World::new();
    w.put(&format!("{GAMMA}\n"));
    std::fs::create_dir_all(w.target()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(w.target().join(".bifrost-requirements.lock"))
        .unwrap();
    lock.lock().unwrap(); // "another install" holds the target
    let mut child = w.spawn(&[]);
    // Signal once it says it is waiting (its handlers are installed by then).
    let (tx, rx) = std::sync::mpsc::channel();
    let stream = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("waiting for it to finish") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("install never said it was waiting for the lock");
    signal(child.id() as i32, "-TERM");
    let status = child.wait().unwrap();
    let err = reader.join().unwrap();
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("another install into"), "{err}");
    assert!(
        err.contains("interrupted by SIGTERM while waiting"),
        "{err}"
    );
    assert!(w.marker_bytes().is_none());
    drop(lock);
}

/// `install` as a pod runs it: stderr a pipe, the given log format (none: the default), no
/// colour or format settings inherited from the test's environment.
fn install_piped(w: &World, format: Option<&str>, extra: &[&str]) -> Output {
    let mut cmd = Command::new(common::bin());
    for var in ["NO_COLOR", "BIFROST_LOG_FORMAT", "RUST_LOG", "REDIS_URL"] {
        cmd.env_remove(var);
    }
    if let Some(f) = format {
        cmd.args(["--log-format", f]);
    }
    cmd.args(w.args(Some(&w.redis_url), extra))
        // Debug: every kind of line there is, including the installer's command line.
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every stderr line as a JSON object (panics naming the line that is not one).
fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    let err = stderr(o);
    err.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {l:?}\n{err}"));
            assert!(
                v["level"].is_string() && v["fields"]["message"].is_string(),
                "{l}"
            );
            v
        })
        .collect()
}

#[test]
fn logs_carry_no_colour_codes_on_a_pipe_and_json_is_json_throughout() {
    let w = World::new();
    w.put(&format!("{ALPHA}==1.0\n"));
    let text = install_piped(&w, None, &[]);
    assert_ok(&text);
    let err = stderr(&text);
    assert!(!err.contains("\x1b["), "colour codes on a pipe:\n{err}");
    assert!(err.contains("  uv | "), "uv's lines are relayed:\n{err}");

    // A new world: the second run would only find the marker.
    let w = World::new();
    w.put(&format!("{ALPHA}==1.0\n"));
    let json = install_piped(&w, Some("json"), &["--json"]);
    assert_ok(&json);
    let lines = json_lines(&json);
    assert!(!stderr(&json).contains("\x1b["));
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap().to_string();
    assert!(
        lines.iter().any(|v| v["fields"]["program"] == "uv"),
        "uv's lines are JSON objects too:\n{}",
        stderr(&json)
    );
    assert!(
        lines
            .iter()
            .any(|v| message(v).starts_with("installed: 1 package(s)") && v["level"] == "INFO"),
        "the summary is a JSON object:\n{}",
        stderr(&json)
    );
    // stdout keeps the one --json report.
    assert_eq!(self::json(&json)["status"], "installed");
}

#[test]
fn installer_output_is_redacted_and_uncoloured_in_both_formats() {
    let w = World::new();
    w.put(&format!("{ALPHA}==1.0\n"));
    // A stand-in uv that says what it was told and fails with a credentialled index URL in
    // colour, as uv does when an index refuses it.
    let fake = w.file("fake-uv");
    std::fs::write(
        &fake,
        "#!/bin/sh\n\
         echo \"args: $*\" >&2\n\
         echo \"NO_COLOR=$NO_COLOR\" >&2\n\
         printf '\\033[1;31merror\\033[0m: Failed to fetch: https://alice:hunter2@pkgs.example.com/simple/x/\\n' >&2\n\
         exit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fake = fake.display().to_string();
    for format in ["text", "json"] {
        let out = install_piped(&w, Some(format), &["--uv", &fake]);
        assert_eq!(code(&out), 5, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            !err.contains("hunter2"),
            "{format}: the password leaked:\n{err}"
        );
        assert!(
            err.contains("alice:***@pkgs.example.com"),
            "{format}:\n{err}"
        );
        assert!(
            !err.contains("\x1b[") && !err.contains("\\u001b"),
            "{format}:\n{err}"
        );
        assert!(
            err.contains("--color never"),
            "{format}: uv told no colour:\n{err}"
        );
        assert!(err.contains("NO_COLOR=1"), "{format}:\n{err}");
        if format == "json" {
            let lines = json_lines(&out);
            let last = lines.last().unwrap();
            assert_eq!(last["level"], "ERROR", "{err}");
            let msg = last["fields"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("error: installation failed: uv failed"),
                "{msg}"
            );
            assert!(
                msg.contains("alice:***@"),
                "the tail is redacted too: {msg}"
            );
        }
    }
}
