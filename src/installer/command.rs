//! The installer's command line, and the programs it needs (the interpreter, uv).

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::options::{Installer, Options};
use super::target::Staging;
use crate::error::{Error, Result};
use crate::uv::netrc::{self, NetrcFile};
use crate::uv::process::Invocation;
use crate::uv::{shipped_uv, which};

/// Where uv and pip install, and the requirements file they read.
pub(super) struct Paths<'a> {
    pub python: &'a Path,
    pub staging: &'a Staging,
    pub requirements: &'a Path,
    /// The target folder (the cache folder's filesystem is compared with it).
    pub target: &'a Path,
    /// The requirements are a lock: exactly these distributions, each with its hashes.
    pub locked: bool,
}

/// An argv under construction.
#[derive(Default)]
struct Argv(Vec<OsString>);

impl Argv {
    fn push(&mut self, items: &[&dyn AsRef<OsStr>]) {
        self.0
            .extend(items.iter().map(|i| i.as_ref().to_os_string()));
    }
}

/// `program` with the arguments `options` ask for.
pub(super) fn invocation(options: &Options, program: PathBuf, paths: &Paths) -> Result<Invocation> {
    let mut args = Argv::default();
    match options.installer {
        Installer::Uv => uv_args(&mut args, options, paths),
        Installer::Pip => pip_args(&mut args, options, paths),
    }
    if !crate::telemetry::output().colour {
        // Their lines are relayed into our log (a pipe, `kubectl logs`): no colour codes.
        match options.installer {
            Installer::Uv => args.push(&[&"--color", &"never"]),
            Installer::Pip => args.push(&[&"--no-color"]),
        }
    }
    if paths.locked {
        // The lock is the whole closure: nothing is resolved again, and a file whose bytes
        // differ from the locked hash is refused.
        args.push(&[&"--no-deps", &"--require-hashes"]);
    }
    let netrc = index_args(&mut args, options)?;
    if let Some(cache) = &options.cache_dir {
        cache_args(&mut args, options, cache, paths.target)?;
    }
    Ok(Invocation {
        label: options.installer.name(),
        program,
        args: args.0,
        // The worker's PYTHONPATH may point at the target itself: the installer must see a
        // clean interpreter, not the packages it is about to replace.
        // RUST_LOG is ours: uv would honour it too and flood the log.
        env_remove: vec!["PYTHONPATH", "RUST_LOG"],
        clean_env: None,
        env: Vec::new(),
        netrc,
        memory_limit: None,
        cwd: paths.staging.root().to_path_buf(),
    })
}

fn uv_args(args: &mut Argv, options: &Options, paths: &Paths) {
    args.push(&[
        &"pip",
        &"install",
        &"--target",
        &paths.staging.site,
        &"--python",
        &paths.python,
        // Never pick up a uv.toml/pyproject.toml above the target or the cwd.
        &"--no-config",
        &"-r",
        &paths.requirements,
    ]);
    if options.compile_bytecode {
        args.push(&[&"--compile-bytecode"]);
    }
}

fn pip_args(args: &mut Argv, options: &Options, paths: &Paths) {
    args.push(&[
        &"-m",
        &"pip",
        &"install",
        &"--target",
        &paths.staging.site,
        &"-r",
        &paths.requirements,
        &"--disable-pip-version-check",
        &"--no-input",
        &"--no-warn-script-location",
        &"--progress-bar",
        &"off",
    ]);
    // pip compiles by default, uv does not: both follow --compile-bytecode.
    if !options.compile_bytecode {
        args.push(&[&"--no-compile"]);
    }
}

/// `items` trimmed, without the empty ones (an empty environment variable, a trailing comma).
fn given<'a>(items: impl IntoIterator<Item = &'a String>) -> impl Iterator<Item = &'a str> {
    items
        .into_iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
}

/// The index options; index credentials go into a netrc file (returned: it must outlive the
/// run), never onto the command line.
fn index_args(args: &mut Argv, options: &Options) -> Result<Option<NetrcFile>> {
    if options.only_binary {
        args.push(&[&"--only-binary", &":all:"]);
    }
    let owned = |urls: &mut dyn Iterator<Item = &String>| {
        given(urls).map(str::to_string).collect::<Vec<_>>()
    };
    let index = netrc::split(&owned(&mut options.index_url.iter()))?;
    let extra = netrc::split(&owned(&mut options.extra_index_url.iter()))?;
    for url in &index.urls {
        args.push(&[&"--index-url", url]);
    }
    for url in &extra.urls {
        args.push(&[&"--extra-index-url", url]);
    }
    let text = index.netrc + &extra.netrc;
    let netrc = if text.is_empty() {
        None
    } else {
        Some(NetrcFile::write(&text)?)
    };
    // pip ignores a plain-HTTP index on any host but localhost unless told to trust it
    // ("not a trusted or secure host"); these URLs are the ones the administrator allowed.
    if options.installer == Installer::Pip {
        let urls = options.index_url.iter().chain(&options.extra_index_url);
        for host in urls.filter_map(|u| http_host(u)) {
            args.push(&[&"--trusted-host", &host]);
        }
    }
    for link in given(&options.find_links) {
        // The installer runs in the staging folder: local paths must be absolute.
        args.push(&[&"--find-links", &absolute_location(link)?]);
    }
    if options.no_index {
        args.push(&[&"--no-index"]);
    }
    Ok(netrc)
}

fn cache_args(args: &mut Argv, options: &Options, cache: &Path, target: &Path) -> Result<()> {
    let cache = &std::path::absolute(cache)
        .map_err(|e| Error::io("resolving the cache folder", cache, e))?;
    std::fs::create_dir_all(cache).map_err(|e| Error::io("creating the cache folder", cache, e))?;
    args.push(&[&"--cache-dir", cache]);
    // uv hardlinks from its cache; across filesystems it would warn and copy anyway.
    if options.installer == Installer::Uv && std::env::var_os("UV_LINK_MODE").is_none() {
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        if dev(cache) != dev(target) {
            args.push(&[&"--link-mode", &"copy"]);
        }
    }
    Ok(())
}

/// A `--find-links` value as the installer must see it from another working directory: URLs
/// as they are, local paths made absolute.
fn absolute_location(link: &str) -> Result<OsString> {
    if link.contains("://") {
        return Ok(link.into());
    }
    std::path::absolute(link)
        .map(PathBuf::into_os_string)
        .map_err(|e| Error::io("resolving --find-links", link, e))
}

/// `host[:port]` of a plain-HTTP URL (credentials dropped), for pip's `--trusted-host`.
fn http_host(url: &str) -> Option<String> {
    let rest = url.trim().strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

/// `--uv`, else [`shipped_uv`].
pub(super) fn find_uv(given: Option<&str>) -> Result<PathBuf> {
    if let Some(given) = given.map(str::trim).filter(|s| !s.is_empty()) {
        return which(given)
            .ok_or_else(|| Error::Install(format!("--uv {given}: not found or not executable")));
    }
    shipped_uv().ok_or_else(|| {
        Error::Install(
            "uv not found next to bifrost-requirements nor on PATH; pass --uv PATH or use --installer pip"
                .into(),
        )
    })
}

/// The interpreter `name` (a path, or a name on PATH), with a message saying where it looked.
pub(super) fn require_python(name: &str, found: Option<PathBuf>) -> Result<PathBuf> {
    found.ok_or_else(|| {
        let where_ = if name.contains('/') { "" } else { " on PATH" };
        Error::Install(format!(
            "Python interpreter {name} not found{where_}; pass --python with the worker's interpreter"
        ))
    })
}

/// `3.11.7`: asks the interpreter itself (isolated mode: no PYTHONPATH, no user site).
pub(super) async fn python_version(python: &Path) -> Result<String> {
    ask(
        python,
        "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        None,
    )
    .await
}

/// The user site the interpreter puts on `sys.path` when run with `PYTHONUSERBASE=base`
/// (`base/lib/python3.11/site-packages` on Linux): asked, not guessed, since the layout belongs
/// to the interpreter (its version, a distribution's patches). `site` reads `PYTHONUSERBASE`
/// from the environment even in isolated mode, so the answer is the worker's.
pub(super) async fn user_site(python: &Path, base: &Path) -> Result<PathBuf> {
    let site = PathBuf::from(
        ask(
            python,
            "import site; print(site.getusersitepackages())",
            Some(("PYTHONUSERBASE", base)),
        )
        .await?,
    );
    if !site.is_absolute() || !site.starts_with(base) || site == base {
        return Err(Error::Install(format!(
            "{} reports the user site {} for PYTHONUSERBASE={}, which is not a folder inside \
             it; use --target instead",
            python.display(),
            site.display(),
            base.display()
        )));
    }
    Ok(site)
}

/// Run `python -I -c code` and return its trimmed stdout.
pub(super) async fn ask(python: &Path, code: &str, env: Option<(&str, &Path)>) -> Result<String> {
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(["-I", "-c", code])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| Error::Install(format!("{} did not answer within 60 s", python.display())))?
        .map_err(|e| Error::Install(format!("cannot run {}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(Error::Install(format!(
            "{} does not run ({}): {}",
            python.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_index_hosts_for_pip() {
        assert_eq!(
            http_host("http://10.244.0.1:8080/simple/").as_deref(),
            Some("10.244.0.1:8080")
        );
        assert_eq!(
            http_host("http://user:pw@index.local?x").as_deref(),
            Some("index.local")
        );
        assert_eq!(http_host("https://pypi.org/simple/"), None);
        assert_eq!(http_host("http://"), None);
    }

    #[test]
    fn which_finds_programs() {
        assert!(which("sh").is_some());
        assert!(which("/bin/sh").is_some());
        assert!(which("definitely-not-a-program-here").is_none());
        assert!(which("").is_none());
    }
}
