//! Whether a lock is a lock *of* a requirements.txt, for one worker: checked by `install`
//! before it installs a lock, since anyone who can write the snapshot ConfigMap can write one,
//! and a stale or buggy lock would change what workers run while every status says success.
//!
//! The rules, each its own function below:
//! 1. every requirement whose marker holds for the worker's interpreter is pinned, at a version
//!    its specifier allows (a requirement whose marker is false may be absent);
//! 2. nothing is pinned that no requirement pulls in. A lock carries no dependency metadata,
//!    only uv's `# via` annotations: "pulled in" means reachable from a requirement of the file
//!    through them (`# via -r requirements.txt` on a requirement's own pin, `# via parent` on
//!    a dependency whose parent is reachable). That proves the lock consistent with the file,
//!    not the annotations true: what proves those is the digest of the lock the controller
//!    resolved, which the webhook gives each pod;
//! 3. no distribution is pinned twice.
//!
//! Markers are evaluated for CPython on Linux (the only platforms a lock names) with the
//! worker's own version and machine; `platform_release` and `platform_version` are unknown
//! (empty). Extras add no rule of their own: what an extra pulls in names its parent in `# via`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use pep508_rs::{MarkerEnvironment, MarkerEnvironmentBuilder, Requirement, VersionOrUrl};

use super::Worker;
use super::entries::{Pinned, Via};
use crate::requirements::{Entry, RequirementsFile};

/// The marker environment of `worker` (CPython on Linux).
pub(crate) fn environment(worker: &Worker) -> Result<MarkerEnvironment, String> {
    let short: String = worker
        .version
        .split('.')
        .take(2)
        .collect::<Vec<_>>()
        .join(".");
    MarkerEnvironment::try_from(MarkerEnvironmentBuilder {
        implementation_name: "cpython",
        implementation_version: &worker.version,
        os_name: "posix",
        platform_machine: &worker.machine,
        platform_python_implementation: "CPython",
        platform_release: "",
        platform_system: "Linux",
        platform_version: "",
        python_full_version: &worker.version,
        python_version: &short,
        sys_platform: "linux",
    })
    .map_err(|e| format!("the worker's Python version {:?}: {e}", worker.version))
}

/// Every way `pins` is not a lock of `content` for `env`, each naming the requirement's line or
/// the pin; empty when it is one.
pub(crate) fn problems(
    content: &RequirementsFile,
    pins: &[Pinned],
    env: &MarkerEnvironment,
) -> Vec<String> {
    let wanted = applicable(content, env);
    let mut out = duplicates(pins);
    out.extend(missing_or_outside(&wanted, pins));
    out.extend(unexplained(&wanted, pins));
    out
}

/// A requirement of the file that applies to the worker: its line, text and parsed form.
struct Wanted {
    line: usize,
    text: String,
    requirement: Requirement<pep508_rs::VerbatimUrl>,
}

/// The file's requirements whose markers hold for `env`.
fn applicable(content: &RequirementsFile, env: &MarkerEnvironment) -> Vec<Wanted> {
    content
        .lines()
        .iter()
        .filter_map(|line| match &line.entry {
            Entry::Requirement { spec, .. } => {
                // Accepted by the guarded model already (`classify`): parsed again safely.
                let requirement = Requirement::from_str(spec).ok()?;
                requirement.evaluate_markers(env, &[]).then(|| Wanted {
                    line: line.number,
                    text: line.text(),
                    requirement,
                })
            }
            _ => None,
        })
        .collect()
}

/// Rule 3: a name pinned twice (the installer would pick one; the lock must say which).
fn duplicates(pins: &[Pinned]) -> Vec<String> {
    let mut seen = HashSet::new();
    pins.iter()
        .filter(|p| !seen.insert(p.name.as_str()))
        .map(|p| format!("{} is pinned twice (lock line {})", p.name, p.line))
        .collect()
}

/// Rule 1: each applicable requirement pinned at a version it allows.
fn missing_or_outside(wanted: &[Wanted], pins: &[Pinned]) -> Vec<String> {
    let mut out = Vec::new();
    for w in wanted {
        let name = w.requirement.name.to_string();
        let at = format!("requirements.txt line {}: `{}`", w.line, w.text);
        let Some(pinned) = pins.iter().find(|p| p.name == name) else {
            out.push(format!("{at}: the lock pins no {name}"));
            continue;
        };
        if let Some(VersionOrUrl::VersionSpecifier(specifiers)) = &w.requirement.version_or_url
            && !specifiers.contains(&pinned.version)
        {
            out.push(format!(
                "{at}: the lock pins {} (lock line {}), a version it does not allow",
                pinned.pin(),
                pinned.line
            ));
        }
    }
    out
}

/// Rule 2: every pin reachable from the file's requirements through `# via`.
fn unexplained(wanted: &[Wanted], pins: &[Pinned]) -> Vec<String> {
    let roots: HashSet<String> = wanted
        .iter()
        .map(|w| w.requirement.name.to_string())
        .collect();
    // parent → the pins that name it in `# via`
    let mut children: HashMap<&str, Vec<&Pinned>> = HashMap::new();
    for p in pins {
        for v in &p.via {
            if let Via::Package(parent) = v {
                children.entry(parent.as_str()).or_default().push(p);
            }
        }
    }
    let mut reached: HashSet<&str> = HashSet::new();
    let mut todo: Vec<&Pinned> = pins.iter().filter(|p| roots.contains(&p.name)).collect();
    while let Some(p) = todo.pop() {
        if reached.insert(p.name.as_str()) {
            todo.extend(children.get(p.name.as_str()).into_iter().flatten().copied());
        }
    }
    pins.iter()
        .filter(|p| !reached.contains(p.name.as_str()))
        .map(|p| {
            let via = if p.via.is_empty() {
                "it has no `# via`".to_string()
            } else {
                format!("its `# via` names {}", describe(&p.via))
            };
            format!(
                "{} (lock line {}) is pinned but no requirement of requirements.txt pulls it in \
                 ({via})",
                p.pin(),
                p.line
            )
        })
        .collect()
}

fn describe(via: &[Via]) -> String {
    via.iter()
        .map(|v| match v {
            Via::Requirements => "requirements.txt".to_string(),
            Via::Package(name) => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
