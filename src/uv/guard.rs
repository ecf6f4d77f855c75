//! The installer guard: makes the installer (uv/pip) and everything it starts die with
//! `install`, even when `install` is killed with SIGKILL and can clean up nothing itself, and
//! holds the resolver to its memory limit.
//!
//! `install` does not start the installer directly but re-runs its own binary as
//! `installer-guard --parent <pid> [--memory-limit <bytes>] -- <installer> <args…>`, as the
//! leader of a new process group. The guard
//! 1. asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), then checks the
//!    parent is still the one it was started by (it may have died before the request);
//! 2. becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): descendants orphaned below it — a
//!    build backend whose uv died, a daemonised helper that left the process group — are
//!    re-parented to the guard instead of to init, so it can still find them;
//! 3. runs the installer in its (the guard's) process group and mirrors its exit status.
//!
//! When the parent dies, or when the installer ends, the guard kills every process in its group
//! and every process re-parented to it, and their descendants (found in `/proc`:
//! [`super::procfs`]), repeatedly until none is left, then exits. A SIGTERM from a living parent
//! (its timeout or its own shutdown, sent to the whole group) is left to the installer: the
//! parent escalates to SIGKILL itself.
//!
//! ## The memory limit (`--memory-limit`, the resolver's)
//! A limit on what the installer's tree holds in memory, not on its address space: every
//! [`SAMPLE_EVERY`] the guard adds up the resident memory (`VmRSS`) of the processes it answers
//! for (the same set its sweep kills); once the sum passes the limit it kills them all, writes
//! one line to stderr ([`memory_stop`] reads it back) and exits with [`STOPPED_FOR_MEMORY`].
//! Why this and not
//! - **`RLIMIT_AS`** (what the limit was until issue 23): address space is not memory. A uv
//!   built against glibc reserves 64 MiB of it per malloc arena (up to 8 per core) and a stack
//!   per thread (~60 threads while it downloads): on 60 one-MiB wheels it needed 1.5 GiB of
//!   address space to hold 135 MiB, and aborted at the default 512Mi; the static musl uv of the
//!   image needed 512Mi. How much is reserved depends on the allocator and the machine's cores,
//!   so no address-space limit means "memory".
//! - **a cgroup**: the operator's pod cannot make one. Its containers get `/sys/fs/cgroup`
//!   read-only (and the chart runs it as non-root, read-only root, no capabilities); Kubernetes
//!   delegates no cgroup subtree to a pod (on cgroup v1 nodes, such as containerd 1.6 with
//!   cgroupfs, there is no delegation at all), and the CLI on a workstation cannot count on one.
//!   The container's own limit stays what it always was: the ceiling of the whole pod.
//! - **`RLIMIT_RSS`**: Linux ignores it. **`RLIMIT_DATA`**: per process, and still counts
//!   writable reservations (thread stacks), not what is resident.
//! - **capping the allocator's arenas** alone (`MALLOC_ARENA_MAX`): the resolver's environment
//!   sets it too ([`super::process`]), since it costs nothing and keeps glibc's reservations
//!   small, but it leaves thread stacks and other allocators counted.
//!
//! The sum errs on the safe side: pages two processes share count twice. Between two samples a
//! tree can outgrow the limit by what it faults in within [`SAMPLE_EVERY`]: uv, which reaches
//! its 135 MiB within a second, by about 15 MiB; the stop comes at the next sample.
//!
//! ## The address-space backstop
//! With a memory limit, `RLIMIT_AS` stays only as a backstop, at the memory limit plus
//! [`BACKSTOP_HEADROOM`]: reservations do not grow with what is resident but with cores,
//! threads and the allocator, so the headroom is added, not multiplied (4 GiB is nearly three
//! times the most measured: the glibc uv without an arena cap). It bounds a tree that outruns
//! the sampling by orders of magnitude, should the guard be starved of CPU, on a machine with
//! no container limit (the CLI); the watcher is what stops a resolution that merely needs more.
//! `--address-space-limit` sets it explicitly (nothing passes it today).
//!
//! The parent-death signal is tied to the thread that spawned the guard: `install` spawns it
//! from its runtime's long-lived threads, never from a short-lived blocking-pool thread.
//! Everything here is safe Rust: no `pre_exec`, no `fork`.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::prctl;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getppid, setpgid};
use tokio::signal::unix::{SignalKind, signal};

use super::procfs;
use crate::error::{Error, Result};

/// The hidden subcommand `install` runs itself as.
pub(crate) const SUBCOMMAND: &str = "installer-guard";

/// Exit code when the parent was gone (as if killed by SIGKILL).
const ORPHANED: u8 = 128 + 9;

/// Exit code when the guard stopped the installer for memory: below the 128 + signal codes it
/// mirrors, and none that uv (0, 1, 2) or pip (0–4, 23) exits with. The parent takes it for a
/// memory stop only together with the guard's line ([`memory_stop`]).
pub(crate) const STOPPED_FOR_MEMORY: u8 = 125;

/// How often the guard adds up resident memory. Each sample reads `/proc/<pid>/stat` of every
/// process on the machine (about 20 µs of kernel time each: a handful in the operator's pod, a
/// few hundred on a workstation running the CLI), so 100 ms keeps the guard at a few percent
/// of a core at worst, while uv runs.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The address-space backstop above a memory limit (see the module's documentation).
pub(crate) const BACKSTOP_HEADROOM: u64 = 4 << 30;

/// What the guard's line of a memory stop starts with, after the program's name.
const STOPPED_LINE: &str = "stopped for memory: resident";

const MIB: u64 = 1 << 20;

/// The guard's limits on the installer's tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Resident memory of the whole tree (bytes), watched.
    pub memory: Option<u64>,
    /// `RLIMIT_AS` of the installer (and of the guard, which has allocated what it needs by
    /// then), set before it starts — safe Rust cannot set it in the child alone. Default with a
    /// memory limit: that plus [`BACKSTOP_HEADROOM`].
    pub address_space: Option<u64>,
}

impl Limits {
    fn address_space(&self) -> Option<u64> {
        self.address_space
            .or_else(|| self.memory.map(|m| m.saturating_add(BACKSTOP_HEADROOM)))
    }
}

/// Run `program args` under the guard; returns our exit code.
pub(crate) async fn run(
    parent: i32,
    limits: Limits,
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

    if let Some(limit) = limits.address_space() {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_AS, limit, limit)
            .map_err(setup("limit the address space"))?;
    }
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .spawn()
        .map_err(|e| Error::Install(format!("cannot run {}: {e}", program.to_string_lossy())))?;
    let mut sample = tokio::time::interval(SAMPLE_EVERY);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.ok(),
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = sample.tick(), if limits.memory.is_some() => {
                let limit = limits.memory.unwrap_or(u64::MAX);
                let Some(resident) = over(limit) else { continue };
                // Everything it started goes; the line is what the parent reports.
                sweep();
                eprintln!("{}", stopped_line(&program, resident, limit));
                let _ = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                return Ok(STOPPED_FOR_MEMORY);
            }
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

/// What our tree holds resident when that is over `limit` (bytes).
fn over(limit: u64) -> Option<u64> {
    let resident = procfs::resident(&procfs::ours(getpid().as_raw(), getpgrp().as_raw()));
    (resident > limit).then_some(resident)
}

/// `installer guard: uv stopped for memory: resident 135 MiB, over the limit of 64 MiB`
/// (resident rounded up, the limit down: the first never reads as not over the second).
fn stopped_line(program: &OsStr, resident: u64, limit: u64) -> String {
    let name = std::path::Path::new(program)
        .file_name()
        .unwrap_or(program)
        .to_string_lossy();
    format!(
        "installer guard: {name} {STOPPED_LINE} {} MiB, over the limit of {} MiB",
        resident.div_ceil(MIB),
        limit / MIB
    )
}

/// What to say of an installer that `status` and its output's `tail` show was stopped for
/// memory: by the guard (`uv stopped for memory: resident …, over the limit of …`), or by the
/// address-space backstop (its allocator's own "memory allocation of N bytes failed"). `None`:
/// it failed for another reason.
pub(crate) fn memory_stop(status: ExitStatus, tail: &str) -> Option<String> {
    if status.code() == Some(i32::from(STOPPED_FOR_MEMORY)) {
        let line = tail.lines().rev().find(|l| l.contains(STOPPED_LINE))?;
        return Some(
            line.trim()
                .trim_start_matches("installer guard: ")
                .to_string(),
        );
    }
    let allocation = tail
        .lines()
        .find(|l| l.contains("memory allocation of") && l.contains("failed"))?;
    (status.signal() == Some(Signal::SIGABRT as i32)).then(|| {
        format!(
            "out of memory: {} (its address space is limited to the memory limit plus {} MiB)",
            allocation.trim(),
            BACKSTOP_HEADROOM / MIB
        )
    })
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

/// SIGKILL every process of our group, every process re-parented to us and their descendants
/// ([`procfs::tree`]), reaping as we go, until none is left (bounded: a process that keeps
/// forking faster than we kill is given up on after a few seconds; it still dies with the
/// group's last member).
pub(crate) fn sweep() {
    let me = getpid().as_raw();
    let group = getpgrp().as_raw();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let targets = procfs::ours(me, group);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn a_memory_limit_brings_a_backstop_far_above_it() {
        let limits = Limits {
            memory: Some(512 << 20),
            address_space: None,
        };
        assert_eq!(limits.address_space(), Some((512 << 20) + (4 << 30)));
        let explicit = Limits {
            address_space: Some(1 << 30),
            ..limits
        };
        assert_eq!(explicit.address_space(), Some(1 << 30));
        assert_eq!(Limits::default().address_space(), None);
        let huge = Limits {
            memory: Some(u64::MAX),
            address_space: None,
        };
        assert_eq!(huge.address_space(), Some(u64::MAX));
    }

    #[test]
    fn the_stop_line_is_read_back_as_the_parent_reports_it() {
        let line = stopped_line(OsStr::new("/opt/uv/uv"), (64 << 20) + 1, 64 << 20);
        assert_eq!(
            line,
            "installer guard: uv stopped for memory: resident 65 MiB, over the limit of 64 MiB"
        );
        let tail = format!("Resolved 3 packages\n{line}");
        assert_eq!(
            memory_stop(exited(i32::from(STOPPED_FOR_MEMORY)), &tail).as_deref(),
            Some("uv stopped for memory: resident 65 MiB, over the limit of 64 MiB")
        );
        // Our code without our line is not ours: a program may exit 125 by itself.
        assert_eq!(
            memory_stop(exited(i32::from(STOPPED_FOR_MEMORY)), "error: no"),
            None
        );
        // Our line without our code (a program that printed it) is not a stop either.
        assert_eq!(memory_stop(exited(1), &tail), None);
    }

    #[test]
    fn an_allocation_failure_under_the_backstop_is_a_memory_stop_too() {
        let aborted = ExitStatus::from_raw(Signal::SIGABRT as i32);
        let tail = "memory allocation of 1376256 bytes failed";
        let said = memory_stop(aborted, tail).expect("a memory stop");
        assert!(said.contains(tail) && said.contains("4096 MiB"), "{said}");
        assert_eq!(memory_stop(exited(1), tail), None);
        assert_eq!(memory_stop(aborted, "thread 'main' panicked"), None);
    }
}
