//! uv, below both of its users — the installer (`install`) and the resolver (`crate::lock`):
//! finding the uv that ships with this binary ([`shipped_uv`]), running it (or pip) under a
//! deadline, a memory limit and a scrubbed environment that dies with us ([`process`], through
//! the [`guard`] subcommand, which reads `/proc` through [`procfs`]), and handing it index
//! credentials off its command line ([`netrc`]). Nothing here knows what is installed or resolved: neither user imports the
//! other.

pub(crate) mod guard;
pub(crate) mod netrc;
pub(crate) mod process;
pub(crate) mod procfs;

use std::path::{Path, PathBuf};

/// `name` as a path when it has a `/`, otherwise the first executable of that name on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let p = std::path::absolute(name).ok()?;
        return executable(&p).then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

/// The uv that ships with this binary: `uv` next to it (the operator image's layout, and the
/// folder `bootstrap` copies both into), else `uv` on `PATH`.
///
/// Next to the binary comes first because that uv is the one released and tested with this
/// binary (its flags, e.g. `--no-config`, are what the installer and the resolver pass); a uv on `PATH` is
/// whatever the worker's image happens to hold. `bootstrap` and `install` share this lookup so
/// that the uv copied into a pod is the one an install outside a pod would pick too.
pub(crate) fn shipped_uv() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|me| which(me.parent()?.join("uv").to_str()?))
        .or_else(|| which("uv"))
}
