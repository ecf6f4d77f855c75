//! Running the installer (uv or pip) as a child process group with a deadline.
//!
//! The child is started as the leader of a new process group, so on a timeout or when we are
//! asked to stop (SIGTERM/SIGINT) the whole tree — uv's or pip's own children, build backends —
//! gets SIGTERM, then SIGKILL after a grace period. Its stdout and stderr are forwarded line by
//! line to our stderr (our stdout is reserved for `--json`), and the last lines are kept for the
//! error message.
//!
//! The child is the installer guard ([`super::guard`]), which runs the installer itself: it is
//! what kills the tree when `install` dies without a chance to do it (SIGKILL).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::shutdown::Stop;

/// How long a process group gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// glibc's arenas for a child under a memory limit (see [`environment`]).
const MALLOC_ARENA_MAX: &str = "2";
/// Lines of output kept for the error message.
const TAIL_LINES: usize = 25;
/// What a clean environment keeps: where programs are, and which CAs an index's TLS is checked
/// against.
const KEPT_IN_CLEAN_ENV: [&str; 3] = ["PATH", "SSL_CERT_FILE", "SSL_CERT_DIR"];
/// What the installer's child keeps of our environment, by exact name (besides `LC_*`, `UV_*`
/// and `PIP_*`, which the administrator sets for uv and pip): where programs and home are, the
/// locale, temporary files, TLS trust, proxies, caches, and what compilers of a source build
/// read. Everything else — `REDIS_URL`, `DATABASE_URL`, `BIFROST_S3_SECRET_KEY`, whatever the
/// worker's image or its Secrets put there — stays with us: a build backend runs package code.
const KEPT_FOR_INSTALLERS: [&str; 32] = [
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NETRC",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "CC",
    "CXX",
    "CFLAGS",
    "CXXFLAGS",
    "CPPFLAGS",
    "LDFLAGS",
    "PKG_CONFIG_PATH",
    "SOURCE_DATE_EPOCH",
];

/// Whether the installer's child gets our variable `name` ([`KEPT_FOR_INSTALLERS`]).
fn kept_for_installers(name: &str) -> bool {
    KEPT_FOR_INSTALLERS.contains(&name)
        || ["LC_", "UV_", "PIP_"].iter().any(|p| name.starts_with(p))
}

/// One command to run.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    /// Name for log lines (`uv`, `pip`).
    pub label: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env_remove: Vec<&'static str>,
    /// Run with an empty environment but `PATH`, the TLS trust variables and `HOME` set to this
    /// folder (the resolver: no credential of ours reaches it). Without it, the child keeps only
    /// what [`kept_for_installers`] allows.
    pub clean_env: Option<PathBuf>,
    /// Set on the child after the above (index URLs and where their credentials are: uv and pip
    /// read them from the environment, which other users cannot read, unlike a command line).
    pub env: Vec<(&'static str, OsString)>,
    /// Index credentials, handed over as `NETRC` (the file lives as long as this).
    pub netrc: Option<super::netrc::NetrcFile>,
    /// Resident memory the child and everything it starts may hold together (bytes): the guard
    /// watches it and stops them all beyond it ([`super::guard`]).
    pub memory_limit: Option<u64>,
    pub cwd: PathBuf,
}

impl Invocation {
    /// The command line, for logs.
    pub(crate) fn display(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Why the child did not succeed.
#[derive(Debug)]
pub(crate) enum RunFailure {
    Spawn(std::io::Error),
    Exited { status: ExitStatus, tail: String },
    TimedOut { after: Duration, tail: String },
    Interrupted { signal: Signal },
}

/// Run to completion, or until `timeout`, or until a stop signal.
pub(crate) async fn run(
    inv: &Invocation,
    timeout: Duration,
    stop: &Stop,
) -> Result<(), RunFailure> {
    let mut cmd = guarded(inv);
    cmd.current_dir(&inv.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    environment(&mut cmd, inv);
    if !crate::telemetry::output().colour {
        // Their output is relayed into our log; uv and pip honour NO_COLOR (the flags in
        // `command` say the same to versions that do not).
        cmd.env("NO_COLOR", "1");
    }
    let mut child = cmd.spawn().map_err(RunFailure::Spawn)?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(forward(s, inv.label, tail.clone()))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(forward(s, inv.label, tail.clone()))),
    ];

    enum End {
        Exited(std::io::Result<ExitStatus>),
        TimedOut,
        Signal(Signal),
    }
    let end = tokio::select! {
        status = child.wait() => End::Exited(status),
        _ = tokio::time::sleep(timeout) => End::TimedOut,
        sig = stop.signalled() => End::Signal(sig),
    };
    if !matches!(end, End::Exited(_)) {
        stop_group(&mut child, pgid, inv.label).await;
    }
    // Output still in the pipes belongs to the log; do not wait forever on a stray holder.
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let tail = tail_text(&tail);
    match end {
        End::Exited(Ok(status)) if status.success() => Ok(()),
        End::Exited(Ok(status)) => Err(RunFailure::Exited { status, tail }),
        End::Exited(Err(e)) => Err(RunFailure::Spawn(e)),
        End::TimedOut => Err(RunFailure::TimedOut {
            after: timeout,
            tail,
        }),
        End::Signal(signal) => Err(RunFailure::Interrupted { signal }),
    }
}

/// The child's environment: the clean one, or ours scrubbed to what installs need; then what
/// the invocation sets (index URLs, `NETRC`).
fn environment(cmd: &mut tokio::process::Command, inv: &Invocation) {
    cmd.env_clear();
    match &inv.clean_env {
        Some(home) => {
            cmd.env("HOME", home);
            for var in KEPT_IN_CLEAN_ENV {
                if let Some(value) = std::env::var_os(var) {
                    cmd.env(var, value);
                }
            }
        }
        None => {
            cmd.envs(
                std::env::vars_os()
                    .filter(|(name, _)| name.to_str().is_some_and(kept_for_installers)),
            );
        }
    }
    for var in &inv.env_remove {
        cmd.env_remove(var);
    }
    if inv.memory_limit.is_some() {
        // A glibc build of uv (`pip install uv`) reserves 64 MiB of address space per malloc
        // arena, up to 8 per core; two keep its reservations small at no cost to a resolution
        // (none of its threads waits long for the allocator). musl ignores it.
        cmd.env("MALLOC_ARENA_MAX", MALLOC_ARENA_MAX);
    }
    cmd.envs(inv.env.iter().map(|(k, v)| (k, v)));
    if let Some(netrc) = &inv.netrc {
        cmd.env("NETRC", netrc.path());
    }
}

/// The installer's command, run under [`super::guard`] (our own binary) so that a SIGKILL of
/// `install` still takes the installer's whole tree with it. Without a path to our own binary
/// (no `/proc`), the installer runs directly: a clean stop still ends its group.
fn guarded(inv: &Invocation) -> tokio::process::Command {
    match std::env::current_exe() {
        Ok(me) => {
            let mut cmd = tokio::process::Command::new(me);
            cmd.arg(super::guard::SUBCOMMAND)
                .arg("--parent")
                .arg(std::process::id().to_string());
            if let Some(limit) = inv.memory_limit {
                cmd.arg("--memory-limit").arg(limit.to_string());
            }
            cmd.arg("--").arg(&inv.program).args(&inv.args);
            cmd
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot find our own binary; running the installer unguarded");
            let mut cmd = tokio::process::Command::new(&inv.program);
            cmd.args(&inv.args);
            cmd
        }
    }
}

/// SIGTERM the group, wait for the leader up to [`GRACE`], then SIGKILL whatever is left.
async fn stop_group(child: &mut tokio::process::Child, pgid: Option<Pid>, label: &str) {
    let Some(pgid) = pgid else {
        let _ = child.kill().await;
        return;
    };
    tracing::debug!(pgid = pgid.as_raw(), "stopping the {label} process group");
    let _ = killpg(pgid, Signal::SIGTERM);
    let _ = tokio::time::timeout(GRACE, child.wait()).await;
    // Children that ignored SIGTERM (or outlived the leader) end here; ESRCH when none are left.
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
}

async fn forward(
    stream: impl AsyncRead + Unpin,
    label: &'static str,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                let line = line.trim_end();
                if line.is_empty() {
                    continue;
                }
                // Redacted and without escape sequences (uv and pip are told not to colour, a
                // stand-in may anyway) here: the tail ends up in the error message, the `--json`
                // report and the termination message too.
                let line = crate::telemetry::strip_ansi(&crate::redact::text(line));
                crate::telemetry::relay(label, &line);
                let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let t = tail.lock().unwrap_or_else(|p| p.into_inner());
    t.iter().cloned().collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_installers_keep_what_installs_need_and_none_of_our_secrets() {
        for kept in [
            "PATH",
            "HOME",
            "SSL_CERT_FILE",
            "HTTPS_PROXY",
            "no_proxy",
            "LC_ALL",
            "UV_INDEX_URL",
            "PIP_INDEX_URL",
            "UV_LINK_MODE",
            "CC",
        ] {
            assert!(kept_for_installers(kept), "{kept}");
        }
        for dropped in [
            "REDIS_URL",
            "BIFROST_REDIS_URL",
            "DATABASE_URL",
            "BIFROST_S3_SECRET_KEY",
            "BIFROST_S3_ACCESS_KEY",
            "AWS_SECRET_ACCESS_KEY",
            "KUBERNETES_SERVICE_HOST",
            "PYTHONPATH",
            "RUST_LOG",
            "path",
            "UVX",
        ] {
            assert!(!kept_for_installers(dropped), "{dropped}");
        }
    }

    proptest! {
        /// Any name outside the list and its three prefixes is dropped.
        #[test]
        fn only_listed_names_and_prefixes_are_kept(name in "[A-Za-z_][A-Za-z0-9_]{0,20}") {
            let listed = KEPT_FOR_INSTALLERS.contains(&name.as_str())
                || name.starts_with("LC_") || name.starts_with("UV_") || name.starts_with("PIP_");
            prop_assert_eq!(kept_for_installers(&name), listed);
        }
    }
}
