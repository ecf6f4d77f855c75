//! What the guard ([`super::guard`]) reads of `/proc`: which processes are its own and how much
//! memory they hold resident.
//!
//! Its own processes are the live ones in its process group or re-parented to it (it is a child
//! subreaper), and every descendant of those — also one that left the group with `setsid`
//! while its parent still runs, which neither rule alone finds. The parsers are pure and total:
//! a file of a process that exited while it was read, or a malformed or hostile one, gives
//! `None` (the process counts for nothing), never a panic.

use std::collections::{HashMap, HashSet};

/// Bytes per kB of `/proc/<pid>/status` (the kernel's "kB" are KiB).
const KIB: u64 = 1024;

/// The fields of `/proc/<pid>/stat` the guard uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead), …
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

impl Stat {
    /// Not a zombie nor dead: it still runs (and holds memory).
    fn live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// [`Stat`] from `/proc/<pid>/stat` (the command name in parentheses may hold spaces and `)`).
pub(crate) fn parse_stat(stat: &str) -> Option<Stat> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat { state, ppid, pgrp })
}

/// Resident bytes from `/proc/<pid>/status`: its `VmRSS:  <n> kB` line. `None` without one
/// (a kernel thread, a zombie) or when it is not a number of kB; a huge number saturates.
///
/// `VmRSS` rather than `smaps_rollup`'s `Rss`: the kernel keeps it as a counter, so reading it
/// costs the same for a process of 10 MiB and of 10 GiB, where `smaps_rollup` walks every
/// mapping — at every sample, of every process. Pages shared between two of our processes (the
/// same binary's text) count in both: the sum errs on the side of stopping early.
pub(crate) fn parse_vm_rss(status: &str) -> Option<u64> {
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?;
    let mut words = value.split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    match (words.next(), words.next()) {
        (Some("kB"), None) => Some(kib.saturating_mul(KIB)),
        _ => None,
    }
}

/// Every process in `/proc` with its [`Stat`] (threads are not listed: they share their
/// process's memory).
pub(crate) fn processes() -> Vec<(i32, Stat)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&stat)?))
        })
        .collect()
}

/// The live processes of `procs` that are `me`'s to answer for: in `group` or re-parented to
/// `me`, and all their live descendants; never `me`. Sorted.
pub(crate) fn tree(me: i32, group: i32, procs: &[(i32, Stat)]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for (pid, stat) in procs {
        if stat.live() && *pid != me {
            children.entry(stat.ppid).or_default().push(*pid);
        }
    }
    let mut found: HashSet<i32> = procs
        .iter()
        .filter(|(pid, s)| *pid != me && s.live() && (s.pgrp == group || s.ppid == me))
        .map(|(pid, _)| *pid)
        .collect();
    let mut todo: Vec<i32> = found.iter().copied().collect();
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if found.insert(*child) {
                todo.push(*child);
            }
        }
    }
    let mut pids: Vec<i32> = found.into_iter().collect();
    pids.sort_unstable();
    pids
}

/// [`tree`] of the processes running now.
pub(crate) fn ours(me: i32, group: i32) -> Vec<i32> {
    tree(me, group, &processes())
}

/// What `pids` hold resident, in bytes (one that exited meanwhile counts nothing).
pub(crate) fn resident(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| parse_vm_rss(&status))
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn live(ppid: i32, pgrp: i32) -> Stat {
        Stat {
            state: 'S',
            ppid,
            pgrp,
        }
    }

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        assert_eq!(
            parse_stat("4242 (a) b (c) S 17 4242 4242 0 -1 4194560"),
            Some(live(17, 4242))
        );
        assert_eq!(parse_stat("1 (init) Z 0 1 1").map(|s| s.state), Some('Z'));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S notanumber 1"), None);
        assert_eq!(parse_stat("1 (x)"), None);
        assert_eq!(parse_stat("1 (x) S 99999999999 1"), None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status = "Name:\tuv\nState:\tS (sleeping)\nVmPeak:\t 1413120 kB\nVmSize:\t  1413120 kB\n\
                      VmHWM:\t  123904 kB\nVmRSS:\t  121344 kB\nThreads:\t57\n";
        assert_eq!(parse_vm_rss(status), Some(121_344 * 1024));
        assert_eq!(parse_vm_rss("VmRSS:0 kB"), Some(0));
    }

    #[test]
    fn malformed_or_hostile_status_files_count_nothing() {
        for status in [
            "",
            "Name:\tkthreadd\nState:\tS (sleeping)\n",
            "VmRSS:\n",
            "VmRSS:\t kB\n",
            "VmRSS:\t12 MB\n",
            "VmRSS:\t12\n",
            "VmRSS:\t12 kB extra\n",
            "VmRSS:\t-12 kB\n",
            "VmRSS:\t1.5 kB\n",
            "VmRSS:\t0x10 kB\n",
            "VmRSS:\tNaN kB\n",
            "VmRSS:\t99999999999999999999999999 kB\n",
            "vmrss:\t12 kB\n",
            "XVmRSS:\t12 kB\n",
            "\u{0}\u{ff}VmRSS\u{fffd}",
        ] {
            assert_eq!(parse_vm_rss(status), None, "{status:?}");
        }
        // The first VmRSS line is the one: a forged second one changes nothing.
        assert_eq!(
            parse_vm_rss("VmRSS:\t8 kB\nVmRSS:\t9999999 kB\n"),
            Some(8 * 1024)
        );
    }

    #[test]
    fn huge_values_saturate() {
        let max = format!("VmRSS:\t{} kB\n", u64::MAX);
        assert_eq!(parse_vm_rss(&max), Some(u64::MAX));
        assert_eq!(parse_vm_rss("VmRSS:\t18014398509481984 kB"), Some(u64::MAX));
    }

    #[test]
    fn the_tree_is_the_group_the_orphans_and_their_descendants() {
        let me = 100;
        let procs = [
            (me, live(1, me)),
            (101, live(me, me)),   // uv, in our group
            (102, live(101, me)),  // its child, in our group
            (103, live(102, 103)), // left the group with setsid; its parent lives
            (104, live(103, 103)), // below that one
            (105, live(me, 105)),  // re-parented to us, in a group of its own
            (
                106,
                Stat {
                    state: 'Z',
                    ..live(101, me)
                },
            ), // a zombie: holds nothing, cannot be killed
            (200, live(1, 200)),   // someone else's
            (201, live(200, 200)),
        ];
        assert_eq!(tree(me, me, &procs), vec![101, 102, 103, 104, 105]);
        assert_eq!(tree(me, me, &procs[..1]), Vec::<i32>::new());
    }

    #[test]
    fn a_cycle_in_a_hostile_table_ends() {
        let procs = [(1, live(2, 9)), (2, live(1, 9)), (3, live(3, 9))];
        assert_eq!(tree(50, 9, &procs), vec![1, 2, 3]);
    }

    #[test]
    fn our_own_process_holds_memory() {
        let me = std::process::id();
        assert!(resident(&[me as i32]) > 0);
        assert_eq!(resident(&[]), 0);
        assert_eq!(resident(&[-1, 0, i32::MAX]), 0);
    }

    proptest! {
        /// Any text at all: a number of bytes or nothing, never a panic.
        #[test]
        fn any_status_file_parses_or_not(text in any::<String>(), n in any::<u64>()) {
            let _ = parse_vm_rss(&text);
            let _ = parse_stat(&text);
            let with_line = format!("{text}\nVmRSS:\t{n} kB\n");
            prop_assert!(parse_vm_rss(&with_line).is_some() || text.contains("VmRSS:"));
        }
    }
}
