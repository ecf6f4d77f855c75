//! Child processes that die with the test binary.
//!
//! Rust's test harness has no global teardown, so a server kept in a `static` would outlive the
//! test process. Every server is therefore started under a tiny POSIX-shell watchdog that polls the
//! test process and stops the server (TERM, then KILL) once the test process is gone.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Start `program args…` under a watchdog tied to this process. Output goes to `log`.
pub fn spawn_guarded(program: &str, args: &[&str], envs: &[(&str, &str)], log: &Path) -> Child {
    spawn_guarded_in(program, args, envs, log, None)
}

/// Like [`spawn_guarded`]; when the test process is gone the watchdog also removes `cleanup`.
pub fn spawn_guarded_in(
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    log: &Path,
    cleanup: Option<&Path>,
) -> Child {
    let log_file = std::fs::File::create(log).expect("create log file");
    let err_file = log_file.try_clone().expect("clone log file");
    let script = r#"
        owner=$1; shift
        "$@" &
        child=$!
        trap 'kill -TERM $child 2>/dev/null; wait $child; exit 0' TERM INT
        while kill -0 "$owner" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
        if ! kill -0 "$owner" 2>/dev/null && kill -0 "$child" 2>/dev/null; then
          kill -TERM "$child" 2>/dev/null
          # `break`, not `exit`: the folder below must still be removed.
          for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$child" 2>/dev/null || break; sleep 0.5; done
          kill -KILL "$child" 2>/dev/null
        fi
        wait $child
        # The test process is gone: remove its temporary folder (statics are never dropped).
        if ! kill -0 "$owner" 2>/dev/null && [ -n "$WATCHDOG_CLEANUP" ]; then rm -rf "$WATCHDOG_CLEANUP"; fi
    "#;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.env(
        "WATCHDOG_CLEANUP",
        cleanup.map(|p| p.as_os_str()).unwrap_or_default(),
    );
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"))
}

/// A TCP port that is free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// Wait until something accepts TCP connections on `port`, or panic with the log's tail.
pub fn wait_for_port(port: u16, what: &str, log: &Path, timeout: std::time::Duration) {
    wait_for_addr("127.0.0.1", port, what, log, timeout)
}

/// [`wait_for_port`] on another address (a bridge's host address).
pub fn wait_for_addr(host: &str, port: u16, what: &str, log: &Path, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect((host, port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = tail
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    panic!("{what} did not listen on {host}:{port} within {timeout:?}; log tail:\n{tail}");
}
