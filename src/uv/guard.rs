//! The installer guard: makes the installer (uv/pip) and everything it starts die with
//! `install`, even when `install` is killed with SIGKILL and can clean up nothing itself.
//!
//! `install` does not start the installer directly but re-runs its own binary as
//! `installer-guard --parent <pid> -- <installer> <args…>`, as the leader of a new process group.
//! The guard
//! 1. asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), then checks the
//!    parent is still the one it was started by (it may have died before the request);
//! 2. becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): descendants orphaned below it — a
//!    build backend whose uv died, a daemonised helper that left the process group — are
//!    re-parented to the guard instead of to init, so it can still find them;
//! 3. runs the installer in its (the guard's) process group and mirrors its exit status.
//!
//! When the parent dies, or when the installer ends, the guard kills every process in its group
//! and every process re-parented to it (found in `/proc`), repeatedly until none is left, then
//! exits. A SIGTERM from a living parent (its timeout or its own shutdown, sent to the whole
//! group) is left to the installer: the parent escalates to SIGKILL itself.
//!
//! The parent-death signal is tied to the thread that spawned the guard: `install` spawns it
//! from its runtime's long-lived threads, never from a short-lived blocking-pool thread.
//! Everything here is safe Rust: no `pre_exec`, no `fork`.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getppid, setpgid};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{Error, Result};

/// The hidden subcommand `install` runs itself as.
pub(crate) const SUBCOMMAND: &str = "installer-guard";

/// Exit code when the parent was gone (as if killed by SIGKILL).
const ORPHANED: u8 = 128 + 9;

/// Run `program args` under the guard; returns our exit code.
/// `address_space`: RLIMIT_AS of the installer (and of the guard, which has allocated what it
/// needs by then), set before it starts — safe Rust cannot set it in the child alone.
pub(crate) async fn run(
    parent: i32,
    address_space: Option<u64>,
    program: OsString,
    args: Vec<OsString>,
) -> Result<u8> {
    let setup = |what: &'static str| {
        move |e: nix::Error| Error::Install(format!("installer guard: cannot {what}: {e}"))
    };
    // Handlers first: a signal between the death-signal request and the spawn is then seen,
    // not fatal before anything was started.
    let sig_err = |e: std::io::Error| Error::Install(format!("installer guard: signals: {e}"));
    let mut term = signal(SignalKind::terminate()).map_err(sig_err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(sig_err)?;
    prctl::set_pdeathsig(Signal::SIGTERM).map_err(setup("request the parent-death signal"))?;
    if getppid().as_raw() != parent {
        // The parent died before the request took effect: nothing was started, nothing to do.
        return Ok(ORPHANED);
    }
    prctl::set_child_subreaper(true).map_err(setup("become a child subreaper"))?;
    // The sweep kills our whole group: it must be ours alone (`install` starts us as its leader;
    // run by hand, we would otherwise share the shell's).
    if getpgrp() != getpid() {
        setpgid(Pid::from_raw(0), Pid::from_raw(0)).map_err(setup("start a process group"))?;
    }

    if let Some(limit) = address_space {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit)
            .map_err(setup("limit the address space"))?;
    }
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .spawn()
        .map_err(|e| Error::Install(format!("cannot run {}: {e}", program.to_string_lossy())))?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if getppid().as_raw() != parent {
            // `install` is gone: nobody is left to stop the installer but us.
            sweep();
            // Reaped by the sweep already, normally; do not hang on it.
            let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            return Ok(ORPHANED);
        }
        // A living parent signalled the whole group: the installer got it too and the parent
        // escalates; keep mirroring the installer.
    };
    // The installer is done; helpers it left behind must not outlive this run.
    sweep();
    Ok(mirror(status))
}

/// Our exit code for the installer's status; a signal death is re-raised where it can be.
fn mirror(status: Option<ExitStatus>) -> u8 {
    let Some(status) = status else {
        return 1;
    };
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    let sig = status.signal().unwrap_or(9);
    // SIGTERM/SIGINT have our handlers; any other signal kills us the same way, so the parent
    // reports the installer's own death ("signal SIGKILL"), not an exit code.
    if let Ok(s) = Signal::try_from(sig)
        && s != Signal::SIGTERM
        && s != Signal::SIGINT
    {
        let _ = nix::sys::signal::raise(s);
    }
    128u8.saturating_add(u8::try_from(sig).unwrap_or(0))
}

/// SIGKILL every process of our group and every process re-parented to us, reaping as we go,
/// until none is left (bounded: a process that keeps forking faster than we kill is given up on
/// after a few seconds; it still dies with the group's last member).
pub(crate) fn sweep() {
    let me = getpid().as_raw();
    let group = getpgrp().as_raw();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let targets = descendants(me, group);
        for pid in &targets {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        reap();
        if targets.is_empty() || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reap every exited child (ours, or re-parented to us) without blocking.
fn reap() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Live processes (not zombies) in `group` or whose parent is `me`, except `me`.
fn descendants(me: i32, group: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            matches!(parse_stat(&stat), Some((state, ppid, pgrp))
                if state != 'Z' && state != 'X' && (ppid == me || pgrp == group))
        })
        .collect()
}

/// `(state, ppid, pgrp)` from `/proc/<pid>/stat` (the command name may hold spaces and `)`).
fn parse_stat(stat: &str) -> Option<(char, i32, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(
            parse_stat("4242 (a) b (c) S 17 4242 4242 0 -1 4194560"),
            Some(('S', 17, 4242))
        );
        assert_eq!(parse_stat("1 (init) Z 0 1 1"), Some(('Z', 0, 1)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S notanumber 1"), None);
    }
}
