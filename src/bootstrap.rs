//! `bifrost-requirements bootstrap --to DIR`: the bootstrap init container's command.
//!
//! The operator image is minimal (no shell, no `cp`), so the binary copies itself and `uv` into
//! the shared `emptyDir`, where the install container — running in the worker's image — finds
//! them. Copies are atomic (temporary file, then rename) and executable by every user, so a
//! restarted init container or a different uid in the install container both work.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What `bootstrap` copies where.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Folder to copy into (created if missing).
    pub to: PathBuf,
    /// The uv executable to copy; `None`: the one shipped with this binary.
    pub uv: Option<PathBuf>,
}

/// Copy this executable and uv into `options.to`; returns the exit code.
pub(crate) fn run(options: Options) -> Result<u8> {
    let to = &options.to;
    fs::create_dir_all(to).map_err(|e| Error::io("creating", to, e))?;
    let me = std::env::current_exe().map_err(|e| Error::io("locating", "this executable", e))?;
    let uv = match &options.uv {
        Some(p) => p.clone(),
        None => crate::uv::shipped_uv().ok_or_else(|| {
            Error::Config(format!(
                "uv not found next to {} nor on PATH; pass --uv PATH",
                me.display()
            ))
        })?,
    };
    for (from, name) in [(me.as_path(), "bifrost-requirements"), (uv.as_path(), "uv")] {
        let dest = to.join(name);
        let bytes = copy_executable(from, &dest)?;
        crate::telemetry::say(
            tracing::Level::INFO,
            &format!(
                "bootstrap: copied {} to {} ({bytes} bytes)",
                from.display(),
                dest.display()
            ),
        );
    }
    Ok(0)
}

fn copy_executable(from: &Path, dest: &Path) -> Result<u64> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let copied = (|| -> io::Result<u64> {
        let n = fs::copy(from, &tmp)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, dest)?;
        Ok(n)
    })();
    copied.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io("copying into", dest, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_atomically_and_executable() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
        let dest = dir.path().join("out/uv");
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        assert_eq!(copy_executable(&src, &dest).unwrap(), 18);
        let mode = fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // Again over an existing file (a restarted init container).
        copy_executable(&src, &dest).unwrap();
        let leftovers: Vec<_> = fs::read_dir(dest.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
