//! One bad package fails only itself: what a failed per-package attempt leaves behind for the
//! marker, the `--json` report and the container's termination message. Pure, apart from
//! [`write_termination`].
//!
//! The termination message is one line the controller reads from the install container's
//! `state.terminated.message`:
//!
//! ```text
//! installed 13/13
//! installed 12/13; failed: xhtml2pdf (needs a C compiler)
//! installed 0/13; kept the previous install; failed: a (…), b (…)
//! nothing to install: no requirements found (…)
//! installation failed: uv failed (exit status 2); its last output:
//! ```
//!
//! `installed K/N` counts the packages of this requirements.txt the target holds after the run;
//! `; failed: ` always comes last, `name (reason)` pairs separated by `, ` (names are PEP 503
//! normalized, so they hold no `,`, `;` or parentheses). Anything else is an error's first line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::redact;

/// Where the kubelet reads a container's termination message (mounted by default).
const TERMINATION_LOG: &str = "/dev/termination-log";
/// The kubelet keeps at most this many bytes of a termination message.
const TERMINATION_LIMIT: usize = 4096;
/// Lines of an installer's output kept as a failure's error.
const EXCERPT_LINES: usize = 6;
const EXCERPT_CHARS: usize = 800;

/// A requirement that did not install on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FailedPackage {
    /// PEP 503 normalized name.
    pub name: String,
    /// The requirement as the installer read it (`xhtml2pdf==0.2.16`).
    pub requirement: String,
    /// A few words derived from the error (`needs a C compiler`).
    pub reason: String,
    /// The first useful lines of the installer's output, secrets masked.
    pub error: String,
}

impl FailedPackage {
    /// From the output of an installer run that exited non-zero.
    pub(crate) fn from_output(name: &str, requirement: &str, output: &str) -> Self {
        let error = excerpt(output);
        FailedPackage {
            name: name.into(),
            requirement: requirement.into(),
            reason: reason(&error).into(),
            error,
        }
    }

    /// An attempt stopped at the deadline `--timeout` set for the whole install.
    pub(crate) fn timed_out(name: &str, requirement: &str, after: Duration, output: &str) -> Self {
        let tail = excerpt(output);
        let mut error = format!(
            "did not finish within the {:.1} s left of --timeout; stopped its process group",
            after.as_secs_f64()
        );
        if !tail.is_empty() {
            error = format!("{error}\n{tail}");
        }
        FailedPackage {
            name: name.into(),
            requirement: requirement.into(),
            reason: "timed out".into(),
            error,
        }
    }

    /// Not tried: the earlier attempts used up `--timeout`.
    pub(crate) fn not_attempted(name: &str, requirement: &str) -> Self {
        FailedPackage {
            name: name.into(),
            requirement: requirement.into(),
            reason: "not attempted, --timeout spent".into(),
            error: "not attempted: earlier attempts used up --timeout".into(),
        }
    }
}

/// Whether a trimmed output line carries the installer's verdict (uv plain or fancy, pip).
fn useful(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    ["error:", "× ", "cause:", "because ", "hint:", "failed to "]
        .iter()
        .any(|p| lower.starts_with(p))
}

/// The first useful lines of an installer's output: from its first verdict line (uv's
/// `error: No solution found…`/`× …`, `Because … was not found`, pip's `ERROR: …`), else its
/// last lines; box-drawing prefixes dropped, at most [`EXCERPT_LINES`] lines, secrets masked.
fn excerpt(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(|l| {
            l.trim()
                .trim_start_matches(['╰', '─', '▶', '│', '├'])
                .trim()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let picked: Vec<&str> = match lines.iter().position(|l| useful(l)) {
        Some(first) => lines[first..].iter().take(EXCERPT_LINES).copied().collect(),
        None => lines[lines.len().saturating_sub(3)..].to_vec(),
    };
    let text = redact::text(&picked.join("\n"));
    shorten(&text, EXCERPT_CHARS)
}

/// A few words for the summary line, from an [`excerpt`].
pub(crate) fn reason(error: &str) -> &'static str {
    let lower = error.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "c compiler",
        "gcc",
        "cc1",
        "python.h",
        "unable to execute",
        "error: command '",
        "microsoft visual c++",
    ]) {
        "needs a C compiler"
    } else if has(&[
        "no usable wheels",
        "building from source is disabled",
        "--only-binary",
        "--no-build",
    ]) {
        "no wheel, source only"
    } else if has(&[
        "was not found in the package registry",
        "not found in the provided package locations",
        "not found in the package registry",
    ]) {
        "not found on the index"
    } else if has(&[
        "no matching distribution found",
        "could not find a version that satisfies",
    ]) {
        "no matching distribution"
    } else if has(&["hash", "mismatch"]) && has(&["mismatch", "do not match", "doesn't match"]) {
        "hash mismatch"
    } else if has(&[
        "failed to build",
        "failed to prepare",
        "subprocess-exited-with-error",
        "build backend",
    ]) {
        "build failed"
    } else if has(&[
        "connection",
        "connect error",
        "dns",
        "network",
        "timed out",
        "unreachable",
    ]) {
        "index unreachable"
    } else if has(&["no solution found", "unsatisfiable", "resolutionimpossible"]) {
        "conflicting requirements"
    } else {
        "install failed"
    }
}

/// `installed 12/13; failed: xhtml2pdf (needs a C compiler)`; `kept` adds that nothing was
/// swapped in (`--on-failure fail`, or nothing installed), so the previous install stays. Never longer than [`TERMINATION_LIMIT`] bytes:
/// failures that do not fit are counted (`… and 3 more`).
pub(crate) fn summary(
    installed: usize,
    total: usize,
    failed: &[FailedPackage],
    kept: bool,
) -> String {
    let mut line = format!("installed {installed}/{total}");
    if kept {
        line.push_str("; kept the previous install");
    }
    if failed.is_empty() {
        return line;
    }
    line.push_str("; failed: ");
    // Room for the longest `, … and N more`.
    let budget = TERMINATION_LIMIT - 32;
    for (i, f) in failed.iter().enumerate() {
        let item = format!("{}{} ({})", if i > 0 { ", " } else { "" }, f.name, f.reason);
        if line.len() + item.len() > budget {
            line.push_str(&format!(", … and {} more", failed.len() - i));
            break;
        }
        line.push_str(&item);
    }
    line
}

/// One line fit for the termination message: the first line of `text`, secrets masked, at most
/// [`TERMINATION_LIMIT`] bytes. A first line that announces more (`…; its last output:`) is
/// followed by the [`excerpt`] of the rest, joined with ` / `: the file replaces the log tail
/// the kubelet would otherwise show.
pub(crate) fn one_line(text: &str) -> String {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim();
    let rest = lines.collect::<Vec<_>>().join("\n");
    let line = if first.ends_with(':') && !rest.trim().is_empty() {
        format!("{first} {}", excerpt(&rest).replace('\n', " / "))
    } else {
        first.to_string()
    };
    let masked = redact::text(&line);
    if masked.len() <= TERMINATION_LIMIT {
        return masked;
    }
    let mut end = TERMINATION_LIMIT - '…'.len_utf8();
    while !masked.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &masked[..end])
}

/// `text` cut to `max` characters (`…` marks the cut).
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The termination message file: `--termination-log`, else [`TERMINATION_LOG`] when it exists
/// and we may write it (the kubelet mounts it into every container by default).
pub(crate) fn termination_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given.filter(|p| !p.as_os_str().is_empty()) {
        return Some(p.to_path_buf());
    }
    let default = Path::new(TERMINATION_LOG);
    let writable = std::fs::OpenOptions::new()
        .write(true)
        .open(default)
        .is_ok();
    writable.then(|| default.to_path_buf())
}

/// Replace the file's content with `line` (already within the limit).
pub(crate) fn write_termination(path: &Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UV_MISSING: &str = "Using CPython 3.11.7 interpreter at: /usr/bin/python3\n\
        error: No solution found when resolving dependencies\n  \
        cause: Because bifrost-t-missing was not found in the provided package locations and \
        you require bifrost-t-missing, we can conclude that your requirements are unsatisfiable.\n";
    const UV_FANCY_SOURCE_ONLY: &str = "Using CPython 3.11.7\n  \
        × No solution found when resolving dependencies:\n  \
        ╰─▶ Because bifrost-t-src==1.0 has no usable wheels and only bifrost-t-src==1.0 is \
        available, we can conclude that all versions of bifrost-t-src cannot be used.\n\n\
        hint: Wheels are required for `bifrost-t-src` because building from source is disabled";
    const PIP_MISSING: &str = "Looking in links: /wh\n\
        ERROR: Could not find a version that satisfies the requirement x (from versions: none)\n\
        ERROR: No matching distribution found for x\n";
    const PIP_COMPILER: &str = "Collecting xhtml2pdf\n  Building wheel for pycairo\n  \
        error: subprocess-exited-with-error\n  \
        × Building wheel for pycairo (pyproject.toml) did not run successfully.\n  \
        unable to execute 'gcc': No such file or directory\n  \
        error: command 'gcc' failed with exit status 1\n";

    #[test]
    fn excerpts_start_at_the_verdict() {
        let e = excerpt(UV_MISSING);
        assert!(e.starts_with("error: No solution found"), "{e}");
        assert!(e.contains("Because bifrost-t-missing was not found"), "{e}");
        assert!(!e.contains("Using CPython"), "{e}");

        let e = excerpt(UV_FANCY_SOURCE_ONLY);
        assert!(e.starts_with("× No solution found"), "{e}");
        assert!(e.lines().nth(1).unwrap().starts_with("Because"), "{e}");

        let e = excerpt(PIP_MISSING);
        assert!(e.starts_with("ERROR: Could not find"), "{e}");
        assert_eq!(e.lines().count(), 2);

        // No verdict line: the last lines.
        assert_eq!(excerpt("a\nb\nc\nd\n"), "b\nc\nd");
        assert_eq!(excerpt(""), "");
    }

    #[test]
    fn excerpts_are_short_and_mask_secrets() {
        let long = format!(
            "error: cannot fetch https://user:s3cret@index.example/simple/x/\n{}",
            "more\n".repeat(50)
        );
        let e = excerpt(&long);
        assert!(!e.contains("s3cret"), "{e}");
        assert!(e.contains("index.example"), "{e}");
        assert_eq!(e.lines().count(), EXCERPT_LINES);
        let wide = format!("ERROR: {}", "x".repeat(5000));
        assert_eq!(excerpt(&wide).chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn reasons_in_a_few_words() {
        assert_eq!(reason(&excerpt(UV_MISSING)), "not found on the index");
        assert_eq!(
            reason(&excerpt(UV_FANCY_SOURCE_ONLY)),
            "no wheel, source only"
        );
        assert_eq!(reason(&excerpt(PIP_MISSING)), "no matching distribution");
        assert_eq!(reason(&excerpt(PIP_COMPILER)), "needs a C compiler");
        assert_eq!(
            reason("ERROR: THESE PACKAGES DO NOT MATCH THE HASHES"),
            "hash mismatch"
        );
        assert_eq!(reason("something odd"), "install failed");
    }

    fn failed(name: &str, reason: &str) -> FailedPackage {
        FailedPackage {
            name: name.into(),
            requirement: name.into(),
            reason: reason.into(),
            error: String::new(),
        }
    }

    #[test]
    fn summary_lines() {
        assert_eq!(summary(13, 13, &[], false), "installed 13/13");
        assert_eq!(
            summary(12, 13, &[failed("xhtml2pdf", "needs a C compiler")], false),
            "installed 12/13; failed: xhtml2pdf (needs a C compiler)"
        );
        assert_eq!(
            summary(
                0,
                3,
                &[
                    failed("a", "timed out"),
                    failed("b", "not found on the index")
                ],
                true
            ),
            "installed 0/3; kept the previous install; \
             failed: a (timed out), b (not found on the index)"
        );
    }

    #[test]
    fn summary_fits_the_kubelets_limit() {
        let many: Vec<_> = (0..500)
            .map(|i| failed(&format!("package-number-{i}"), "not found on the index"))
            .collect();
        let line = summary(0, 500, &many, false);
        assert!(line.len() <= TERMINATION_LIMIT, "{}", line.len());
        assert!(line.ends_with(" more"), "{line}");
        let counted: usize = line
            .rsplit_once("and ")
            .and_then(|(_, n)| n.trim_end_matches(" more").parse().ok())
            .unwrap();
        assert_eq!(line.matches(" (not found").count() + counted, 500);
    }

    #[test]
    fn one_line_is_the_first_line_masked_and_bounded() {
        assert_eq!(
            one_line("cannot read redis://:pw@cache:6379/0\nmore"),
            "cannot read redis://:***@cache:6379/0"
        );
        assert_eq!(
            one_line(
                "installation failed: uv failed (exit status 2); its last output:\n\
                      Using CPython 3.11\nerror: No solution found\n  cause: Because x was not found"
            ),
            "installation failed: uv failed (exit status 2); its last output: \
             error: No solution found / cause: Because x was not found"
        );
        let wide = "é".repeat(5000);
        let line = one_line(&wide);
        assert!(line.len() <= TERMINATION_LIMIT);
        assert!(line.ends_with('…'));
    }

    #[test]
    fn the_termination_file_is_replaced_not_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination-log");
        assert_eq!(termination_path(Some(&path)), Some(path.clone()));
        write_termination(&path, "installed 1/2; failed: a (timed out)").unwrap();
        write_termination(&path, "installed 2/2").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "installed 2/2");
    }
}
