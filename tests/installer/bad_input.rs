//! Bad input, timeouts and signals: the target stays untouched.

use super::*;

#[test]
fn corrupted_redis_json_is_refused_or_replaced_by_the_fallback() {
    let w = World::new();
    let before = w.good_install();
    w.put_raw("{\"content\": \"bifrost_t_gamma\\n\", \"hash\": ");
    let out = w.install(&[]);
    assert_exit(&out, 4, &["unusable value", "not the JSON object"]);
    w.assert_untouched(&before);

    // With a good snapshot, the worker still gets its packages (and is told why).
    let fallback = w.fallback_file(&format!("{GAMMA}==1.0\n"));
    let out = w.install(&["--fallback-file", &fallback]);
    assert_ok_says(&out, &["Redis unusable"]);
    assert_eq!(w.import(GAMMA).unwrap(), "1.0");
}

#[test]
fn hash_mismatches_are_refused() {
    let w = World::new();
    let before = w.good_install();
    // Redis: content and hash disagree.
    w.put_raw(&format!(
        "{{\"content\": \"{GAMMA}\\n\", \"hash\": \"{}\"}}",
        content_hash("something else\n")
    ));
    assert_exit(&w.install(&[]), 4, &["hash mismatch"]);
    w.assert_untouched(&before);

    // Fallback file: its sibling `hash` disagrees with it.
    let cm = w.file("cm");
    std::fs::create_dir(&cm).unwrap();
    std::fs::write(cm.join("requirements.txt"), format!("{GAMMA}\n")).unwrap();
    std::fs::write(cm.join("hash"), content_hash("other\n")).unwrap();
    let fallback = cm.join("requirements.txt");
    let out = w.install_via(
        Some(&services::dead_url("redis")),
        &["--fallback-file", fallback.to_str().unwrap()],
        &[],
    );
    assert_exit(&out, 4, &["fallback file", "hash mismatch"]);
    w.assert_untouched(&before);
}

#[test]
fn policy_violations_name_the_line_and_install_nothing() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!(
        "{GAMMA}\n--extra-index-url https://evil.example/simple\n-e ./local\n"
    ));
    // /bin/false as uv: had anything run, the message would be uv's failure.
    let out = w.install(&["--uv", "/bin/false", "--json"]);
    assert_exit(
        &out,
        2,
        &["line 2", "--extra-index-url", "line 3", "editable"],
    );
    assert_eq!(json(&out)["error"]["reason"], "InvalidRequirements");
    w.assert_untouched(&before);

    // --on-failure continue: the worker starts, with the previous install, and is told why.
    let out = w.install(&["--uv", "/bin/false", "--on-failure", "continue"]);
    assert_exit(&out, 0, &["warning: install failed", "line 2"]);
    w.assert_untouched(&before);

    // An index the administrator configured is allowed in the file.
    w.put(&format!(
        "--extra-index-url {}\n{GAMMA}==1.0\n",
        "https://pypi.internal/simple"
    ));
    let out = w.install(&[
        "--extra-index-url",
        "https://pypi.internal/simple",
        "--uv",
        "/bin/false",
    ]);
    assert_eq!(
        code(&out),
        5,
        "policy passed, so /bin/false ran: {}",
        stderr(&out)
    );
}

#[test]
fn a_package_that_does_not_exist_fails_with_the_installers_reason() {
    for installer in ["uv", "pip"] {
        let w = World::new();
        let before = w.good_install();
        w.put("bifrost_t_nonexistent==9.9\n");
        let out = w.install(&["--installer", installer]);
        let failed = format!("error: installation failed: {installer} failed (exit status");
        assert_exit(&out, 5, &[&failed]);
        let err = stderr(&out);
        assert!(
            err.contains("bifrost_t_nonexistent") || err.contains("bifrost-t-nonexistent"),
            "{err}"
        );
        w.assert_untouched(&before);
    }
}

#[test]
fn the_timeout_stops_the_installers_whole_process_group() {
    let stuck = Stuck::new();
    let w = &stuck.w;
    let started = Instant::now();
    let out = w.install(&["--uv", stuck.uv(), "--timeout", "2s", "--json"]);
    let took = started.elapsed();
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // The installer's own output is forwarded.
    assert_says(
        &out,
        &[
            "did not finish within 2 s (--timeout)",
            "fake uv: resolving forever",
        ],
    );
    let (shell, sleeper) = wait_for_pids(&stuck.pids);
    assert!(wait_gone(shell), "installer {shell} still running");
    assert!(
        wait_gone(sleeper),
        "its child {sleeper} still running: the group was not stopped"
    );
    assert_eq!(json(&out)["error"]["reason"], "InstallFailed");
    w.assert_untouched(&stuck.before);
    assert!(w.import(GAMMA).is_err());
}

#[test]
fn sigterm_stops_the_installer_and_exits_143() {
    let stuck = Stuck::new();
    let (child, (shell, sleeper)) = stuck.spawn();
    signal(child.id() as i32, "-TERM");
    let out = child.wait_with_output().unwrap();
    assert_exit(&out, 143, &["interrupted by SIGTERM"]);
    assert!(
        wait_gone(shell) && wait_gone(sleeper),
        "installer group survived"
    );
    stuck.w.assert_untouched(&stuck.before);
}

#[test]
fn a_killed_install_leaves_the_previous_marker_and_the_next_run_cleans_up() {
    let stuck = Stuck::new();
    let (w, before) = (&stuck.w, &stuck.before);
    let (mut child, (shell, sleeper)) = stuck.spawn();
    signal(child.id() as i32, "-KILL");
    child.wait().unwrap();
    // The installer guard takes the installer and its child with it (it used to outlive us).
    assert!(wait_gone(shell) && wait_gone(sleeper));

    // Whatever was staged, the marker still names the previous install, which still imports.
    assert_eq!(&w.marker_bytes().unwrap(), before);
    assert_eq!(w.import(ALPHA).unwrap(), "1.0");
    assert!(
        !w.leftovers().is_empty(),
        "the killed run's staging folder is there"
    );

    let out = w.install(&[]);
    assert_ok_says(&out, &["left behind by an interrupted run"]);
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
}

#[test]
fn sigkill_of_install_takes_the_installer_and_all_its_descendants_with_it() {
    let w = World::new();
    let before = w.good_install();
    w.put(&format!("{GAMMA}==2.0\n"));
    // An installer with a grandchild in its process group and one that left it (setsid), as a
    // build backend's daemon might.
    let pids = w.file("tree.pids");
    let tree_uv = w.file("tree-uv");
    script(
        &tree_uv,
        &format!(
            "#!/bin/sh\nsleep 300 &\nA=$!\nsetsid sleep 301 &\nB=$!\n\
             echo \"$$ $A $B\" > '{0}.tmp'\nmv '{0}.tmp' '{0}'\nwait\n",
            pids.display()
        ),
    );
    let mut child = w.spawn(&["--uv", tree_uv.to_str().unwrap()]);
    let tree = wait_for_pid_list(&pids, 3);
    assert!(tree.iter().all(|p| alive(*p)), "{tree:?}");
    let killed = Instant::now();
    signal(child.id() as i32, "-KILL");
    child.wait().unwrap();
    let gone_within = |pid: i32| {
        while alive(pid) {
            if killed.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    };
    for (pid, what) in tree
        .iter()
        .zip(["installer", "its child", "its setsid child"])
    {
        assert!(
            gone_within(*pid),
            "{what} {pid} outlived the killed install"
        );
    }
    eprintln!(
        "installer tree gone {} ms after SIGKILL of install",
        killed.elapsed().as_millis()
    );
    // The next run removes the killed run's staging folder (its pid is dead) and nothing comes
    // back afterwards: no orphan is left writing into it.
    assert!(!w.leftovers().is_empty(), "the killed run staged nothing");
    let out = w.install(&[]);
    assert_ok_says(&out, &["left behind by an interrupted run"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.leftovers().is_empty(), "{:?}", w.leftovers());
    assert_ne!(w.marker_bytes().unwrap(), before);
    assert_eq!(w.import(GAMMA).unwrap(), "2.0");
}
