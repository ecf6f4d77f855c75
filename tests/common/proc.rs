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

/// A TCP port that is free right now, for a server this test is about to start.
///
/// Not from `bind(0)`: that draws from the kernel's ephemeral range, which every outgoing
/// connection also uses, and between this check and the server's own bind a client socket (the
/// API server's connection to etcd, a curl) could take it. Below that range only listeners take
/// ports. One cursor per process, starting at a random place, so two tests of one binary never
/// get the same port; `scripts/lib/free_port.py` is the same rule for the scripts.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FLOOR: u32 = 15_000;
    static CURSOR: AtomicU32 = AtomicU32::new(0);
    let top = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .max(FLOOR + 1_000);
    let span = top - FLOOR;
    if CURSOR.load(Ordering::Relaxed) == 0 {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
            ^ std::process::id().wrapping_mul(2_654_435_761);
        let _ = CURSOR.compare_exchange(0, seed % span + 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let port = FLOOR + CURSOR.fetch_add(1, Ordering::Relaxed) % span;
        // The wildcard address: a port taken on any address (10.244.0.1 too) is not free.
        if std::net::TcpListener::bind(("0.0.0.0", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free TCP port in {FLOOR}..{top}");
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

/// Stop a server started with [`spawn_guarded`] (TERM to its watchdog, which passes it on) and
/// reap it; nothing when it is already stopped.
pub fn terminate(child: &std::sync::Mutex<Option<Child>>) {
    if let Some(mut child) = child.lock().unwrap().take() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
}

/// Wait until nothing accepts TCP connections on `host:port` any more, or panic after `timeout`
/// with "`what` did not stop".
pub fn wait_closed(host: &str, port: u16, what: &str, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    while std::net::TcpStream::connect((host, port)).is_ok() {
        assert!(std::time::Instant::now() < deadline, "{what} did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Run a set-up script, its stderr shown as it goes, and return its output; panic unless it
/// succeeded. `cmd` is `bash SCRIPT ARGS…`, with whatever environment it needs.
pub fn run_script(mut cmd: Command) -> std::process::Output {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(out.status.success(), "{shown} failed ({})", out.status);
    out
}
