//! The lock: requirements.txt resolved once, by the controller, for the workers' interpreter,
//! into exactly the distributions (name, version, sha256) every pod of that content installs.
//!
//! A lock is a requirements file (`name==version --hash=sha256:…` per distribution, the whole
//! closure) behind a header of comments that says what it was resolved from and for: the
//! content's hash, the interpreter (`spec.install.python`), the indexes and whether only wheels
//! were allowed. The installer uses it only when the content hash and the interpreter match and
//! installs it with `--no-deps --require-hashes`; the controller reuses it (from its ConfigMap)
//! while all of the header matches, so a restart does not resolve again.
//!
//! Resolution runs the bundled `uv pip compile --generate-hashes` ([`Resolver`]) with a deadline,
//! a limit on the memory it holds ([`crate::uv::guard`]), a clean environment (no credentials but
//! what the index URL carries) and `--no-build`: metadata comes from wheels (or static sdist
//! metadata), never from running a build backend inside the operator. The lock keeps only the
//! hashes of the files the workers' interpreter can install ([`platform`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::egress;
use crate::requirements::{Entry, RequirementsFile, hashes_equal};
use crate::shutdown::Stop;
use crate::uv::netrc::{self, NetrcFile};
use crate::uv::process::{Invocation, RunFailure};

pub(crate) mod entries;
pub(crate) mod pins;
pub(crate) mod platform;
pub(crate) mod satisfy;

pub use entries::{Pinned, Via};

/// Key of the lock in the ConfigMap snapshot, and its file name beside the mounted payload.
pub const LOCK_FILE: &str = "requirements.lock";
/// The index uv and pip use when none is given.
pub(crate) const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// Where the public index serves its files (wheels and their PEP 658 metadata): a host of its
/// own, which the resolver's proxy must let uv reach besides the index itself.
pub(crate) const DEFAULT_FILE_ORIGIN: &str = "https://files.pythonhosted.org";
/// The resolver's default memory limit (`--resolver-memory-limit`, operator and CLI): what uv
/// and its children may hold resident together (uv holds about 115 MiB resolving the 41
/// distributions of numpy, pandas, scipy, scikit-learn and ten more from the public index).
pub(crate) const DEFAULT_MEMORY_LIMIT: &str = "512Mi";

/// What a resolution stopped for memory says to raise.
pub(crate) const MEMORY_SETTING: &str = "the resolver's memory limit: --resolver-memory-limit or \
     BIFROST_RESOLVER_MEMORY_LIMIT (the chart's resolver.memoryLimit)";

const MAGIC: &str = "# bifrost-requirements lock";

/// The workers' interpreter a lock is resolved for (`spec.install.python`).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub struct Interpreter {
    /// The workers' Python version, `3.11` (any 3.11.x) or `3.11.7`.
    pub version: String,
    /// The workers' platform as uv names it: `x86_64-manylinux_2_28` (glibc 2.28 or newer),
    /// `aarch64-manylinux_2_28`, `x86_64-unknown-linux-gnu` (glibc 2.17 or newer) or
    /// `aarch64-unknown-linux-gnu`.
    pub platform: String,
}

/// What a worker's `python3` says about itself, to compare with a lock's [`Interpreter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Worker {
    /// `3.11.2`.
    pub version: String,
    /// `platform.machine()`: `x86_64`, `aarch64`.
    pub machine: String,
    /// `platform.libc_ver()`'s version when the libc is glibc (`2.36`); `None` otherwise (musl).
    pub glibc: Option<String>,
}

/// Asks an interpreter what a lock's header is compared with: version, machine, glibc version
/// (empty: not glibc). The installer runs it with the worker's `python3`, the operator's probe
/// pod with the workers' image's (see [`Worker::parse`]).
pub(crate) const WORKER_SCRIPT: &str = "import platform, sys\n\
print('%d.%d.%d' % sys.version_info[:3])\n\
print(platform.machine())\n\
lib, version = platform.libc_ver()\n\
print(version if lib == 'glibc' else '')";

/// The glibc minors uv names a `manylinux_2_<minor>` platform for (besides 2.17, which is
/// `unknown-linux-gnu`), lowest first: a worker's platform is the newest one its glibc meets.
const MANYLINUX_MINORS: [u32; 11] = [28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40];

impl Worker {
    /// What [`WORKER_SCRIPT`] printed, or why it is not that.
    pub(crate) fn parse(out: &str) -> Result<Worker, String> {
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let (version, machine, glibc) = match lines.as_slice() {
            [version, machine, glibc] => (version, machine, Some(*glibc)),
            [version, machine] => (version, machine, None),
            _ => return Err(format!("unexpected answer {out:?}")),
        };
        if version.is_empty() || machine.is_empty() {
            return Err(format!("unexpected answer {out:?}"));
        }
        Ok(Worker {
            version: version.to_string(),
            machine: machine.to_string(),
            glibc: glibc.filter(|g| !g.is_empty()).map(str::to_string),
        })
    }

    /// The interpreter a lock is resolved for so that this worker can install it: its exact
    /// version, and the newest platform uv knows that its machine and glibc meet; `Err` says
    /// why there is none (a libc other than glibc, a machine uv does not resolve for).
    pub(crate) fn interpreter(&self) -> Result<Interpreter, String> {
        let glibc = self.glibc.as_deref().ok_or_else(|| {
            format!(
                "the workers' Python {} on {} does not use glibc (musl?): no lock platform fits it",
                self.version, self.machine
            )
        })?;
        let minor = glibc
            .strip_prefix("2.")
            .and_then(|m| m.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .ok_or_else(|| format!("the workers' glibc version {glibc:?} is not 2.<minor>"))?;
        let platform = match MANYLINUX_MINORS.iter().rev().find(|m| **m <= minor) {
            Some(m) => format!("{}-manylinux_2_{m}", self.machine),
            None if minor >= 17 => format!("{}-unknown-linux-gnu", self.machine),
            None => return Err(format!("the workers' glibc {glibc} is older than 2.17")),
        };
        let interpreter = Interpreter {
            version: self.version.clone(),
            platform,
        };
        interpreter
            .problems()
            .into_iter()
            .next()
            .map_or(Ok(interpreter), |(field, why)| {
                Err(format!("the workers' {field}: {why}"))
            })
    }
}

impl Interpreter {
    /// Why the fields cannot name an interpreter, naming the field.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some((field, message)) => Err(format!("spec.install.python.{field}: {message}")),
            None => Ok(()),
        }
    }

    /// Each field that names no interpreter (`version`, `platform`) and why.
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let parts: Vec<&str> = self.version.split('.').collect();
        let numeric = parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        let mut problems = Vec::new();
        if !(2..=3).contains(&parts.len()) || !numeric || parts[0] != "3" {
            problems.push((
                "version",
                format!(
                    "{:?} is not a Python 3 version such as \"3.11\" or \"3.11.7\"",
                    self.version
                ),
            ));
        }
        if let Err(m) = self.platform_parts() {
            problems.push(("platform", m));
        }
        problems
    }

    /// (machine, minimum glibc) of the platform, or why it is not one this knows.
    fn platform_parts(&self) -> Result<(&str, (u32, u32)), String> {
        let bad = || {
            format!(
                "{:?} is not one of <arch>-manylinux_2_<minor> or <arch>-unknown-linux-gnu with \
                 arch x86_64 or aarch64",
                self.platform
            )
        };
        let (arch, rest) = self.platform.split_once('-').ok_or_else(bad)?;
        if !matches!(arch, "x86_64" | "aarch64") {
            return Err(bad());
        }
        if rest == "unknown-linux-gnu" {
            return Ok((arch, (2, 17)));
        }
        let minor = rest
            .strip_prefix("manylinux_2_")
            .filter(|m| !m.is_empty() && m.len() <= 3 && m.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(bad)?;
        Ok((arch, (2, minor.parse().map_err(|_| bad())?)))
    }

    /// `CPython 3.11 x86_64-manylinux_2_28`, for messages.
    pub(crate) fn describe(&self) -> String {
        format!("Python {} {}", self.version, self.platform)
    }

    /// Why a worker's interpreter cannot use a lock resolved for this one (`None`: it can).
    pub(crate) fn mismatch(&self, worker: &Worker) -> Option<String> {
        let given: Vec<&str> = self.version.split('.').collect();
        let has: Vec<&str> = worker.version.split('.').collect();
        if has.len() < given.len() || has[..given.len()] != given[..] {
            return Some(format!(
                "the lock is for Python {}, the worker's python3 is {}",
                self.version, worker.version
            ));
        }
        let (arch, (major, minor)) = match self.platform_parts() {
            Ok(p) => p,
            Err(e) => return Some(e),
        };
        if worker.machine != arch {
            return Some(format!(
                "the lock is for {}, the worker's machine is {}",
                self.platform, worker.machine
            ));
        }
        let glibc = worker.glibc.as_deref().and_then(|v| {
            let (a, b) = v.split_once('.')?;
            Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
        });
        match glibc {
            Some(have) if have >= (major, minor) => None,
            Some(_) | None => Some(format!(
                "the lock is for {} (glibc {major}.{minor} or newer), the worker's libc is {}",
                self.platform,
                worker
                    .glibc
                    .as_deref()
                    .map_or("not glibc".to_string(), |v| format!("glibc {v}"))
            )),
        }
    }
}

/// A resolved lock: what it was resolved from and for, and uv's pinned, hashed requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// SHA-256 of the requirements.txt it was resolved from (lowercase hex).
    pub content_hash: String,
    pub interpreter: Interpreter,
    /// The indexes it was resolved against (what the installers are given too).
    pub index_urls: Vec<String>,
    pub only_binary: bool,
    /// `name==version \ --hash=sha256:…` per distribution, as uv wrote it.
    pub body: String,
}

/// What a lock was (or is to be) resolved from and for: equal keys, same lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub content_hash: String,
    pub interpreter: Interpreter,
    pub index_urls: Vec<String>,
    pub only_binary: bool,
}

impl Lock {
    pub(crate) fn key(&self) -> Key {
        Key {
            content_hash: self.content_hash.clone(),
            interpreter: self.interpreter.clone(),
            index_urls: self.index_urls.clone(),
            only_binary: self.only_binary,
        }
    }

    /// The lock file: the header, then uv's lines.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{MAGIC}: install with --no-deps --require-hashes\n\
             # content-sha256: {}\n\
             # python-version: {}\n\
             # python-platform: {}\n",
            self.content_hash, self.interpreter.version, self.interpreter.platform
        );
        for url in &self.index_urls {
            out.push_str(&format!("# index-url: {}\n", crate::redact::url(url)));
        }
        out.push_str(&format!("# only-binary: {}\n", self.only_binary));
        out.push_str(&self.body);
        if !self.body.is_empty() && !self.body.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    /// A lock file as [`Lock::render`] wrote it; the error says what is missing or wrong.
    /// Index URLs are kept as written (redacted): they are compared, never fetched from here.
    pub fn parse(text: &str) -> Result<Lock, String> {
        let mut lines = text.lines();
        if !lines.next().is_some_and(|l| l.starts_with(MAGIC)) {
            return Err(format!("it does not start with {MAGIC:?}"));
        }
        let (mut hash, mut version, mut platform, mut only_binary) = (None, None, None, None);
        let mut index_urls = Vec::new();
        let mut header_lines = 1;
        for line in lines {
            let Some((field, value)) = line
                .strip_prefix("# ")
                .and_then(|l| l.split_once(": "))
                .filter(|(f, _)| !f.contains(' '))
            else {
                break;
            };
            header_lines += 1;
            let value = value.trim().to_string();
            match field {
                "content-sha256" => hash = Some(value),
                "python-version" => version = Some(value),
                "python-platform" => platform = Some(value),
                "index-url" => index_urls.push(value),
                "only-binary" => only_binary = Some(value == "true"),
                _ => return Err(format!("unknown header field {field:?}")),
            }
        }
        let missing = |f: &str| format!("the header has no {f}");
        let content_hash = hash.ok_or_else(|| missing("content-sha256"))?;
        if content_hash.len() != 64 || !content_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("content-sha256 {content_hash:?} is not a SHA-256"));
        }
        let interpreter = Interpreter {
            version: version.ok_or_else(|| missing("python-version"))?,
            platform: platform.ok_or_else(|| missing("python-platform"))?,
        };
        interpreter.check()?;
        let body: String = text
            .split_inclusive('\n')
            .skip(header_lines)
            .collect::<String>();
        Ok(Lock {
            content_hash: content_hash.to_ascii_lowercase(),
            interpreter,
            index_urls,
            only_binary: only_binary.ok_or_else(|| missing("only-binary"))?,
            body,
        })
    }

    /// Whether this lock was resolved from `hash`.
    pub fn resolves(&self, hash: &str) -> bool {
        hashes_equal(&self.content_hash, hash)
    }

    /// The pinned distributions with their hashes and `# via`, or why the body is not a lock's.
    pub fn pinned(&self) -> Result<Vec<Pinned>, String> {
        entries::parse(&self.body)
    }

    /// The pinned distributions (`name==version`), in the lock's order.
    pub fn pins(&self) -> Vec<String> {
        self.body
            .lines()
            .filter(|l| !l.starts_with([' ', '\t', '#', '-']) && !l.trim().is_empty())
            .map(|l| l.trim_end_matches('\\').trim().to_string())
            .collect()
    }
}

/// The indexes a resource resolves against: its own, or the installers' default.
pub(crate) fn effective_index_urls(index_urls: &[String]) -> Vec<String> {
    let given: Vec<String> = index_urls
        .iter()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .collect();
    if given.is_empty() {
        vec![DEFAULT_INDEX.to_string()]
    } else {
        given
    }
}

fn same_url(a: &str, b: &str) -> bool {
    a.trim().trim_end_matches('/') == b.trim().trim_end_matches('/')
}

/// How the operator resolves: the bundled uv, under limits, against the indexes its own
/// configuration allows (never one that only a resource names).
#[derive(Debug, Clone)]
pub struct Resolver {
    pub uv: PathBuf,
    /// The interpreter uv queries for its environment (it runs no package code with
    /// `--no-build`); a name on PATH or a path.
    pub python: String,
    /// Index URLs the operator may fetch from.
    pub allowed_index_urls: Vec<String>,
    /// Origins (`https://host[:port]`) the allowed indexes serve their files from, when not
    /// their own (PyPI: `https://files.pythonhosted.org`); the resolver's proxy lets uv reach
    /// them too, and nothing else.
    pub file_origins: Vec<String>,
    pub timeout: Duration,
    /// Resident memory uv and what it starts may hold together (bytes): over it, the guard
    /// stops it and the resolution fails naming [`MEMORY_SETTING`].
    pub memory_limit: u64,
    /// uv's cache (metadata, downloaded wheels), reused across resolutions.
    pub cache_dir: PathBuf,
    /// How long the wheelhouse of a lock nothing uses is kept (only resolved locks have one).
    pub wheelhouse_retention: Duration,
}

/// One resolution: a content and everything its lock depends on.
#[derive(Debug, Clone)]
pub(crate) struct Request<'a> {
    pub content: &'a str,
    pub key: &'a Key,
}

/// Why no lock came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The resolver ran and says the requirements cannot be satisfied (its message names the
    /// requirement): retrying the same content gives the same answer until the index changes.
    Unresolvable(String),
    /// The resolver could not do its job (not found, timed out, out of memory, index
    /// unreachable): worth retrying.
    Failed(String),
    /// The index serves a file a requirement's `--hash` does not pin (the message names the
    /// line and the index's hash): refused, as uv and pip refuse it without a lock.
    HashMismatch(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unresolvable(m) | Failure::Failed(m) | Failure::HashMismatch(m) => {
                f.write_str(m)
            }
        }
    }
}

impl Resolver {
    /// The resolver this binary ships: the uv next to it (else on PATH; not found, each
    /// resolution says so), its cache by default in the temporary folder.
    pub(crate) fn bundled(
        python: String,
        allowed_index_urls: Vec<String>,
        timeout: Duration,
        memory_limit: u64,
        cache_dir: Option<PathBuf>,
    ) -> Self {
        Resolver {
            uv: crate::uv::shipped_uv().unwrap_or_else(|| "uv".into()),
            python,
            allowed_index_urls,
            file_origins: vec![DEFAULT_FILE_ORIGIN.to_string()],
            timeout,
            memory_limit,
            cache_dir: cache_dir.unwrap_or_else(|| std::env::temp_dir().join("bifrost-resolver")),
            wheelhouse_retention: crate::wheelhouse::DEFAULT_RETENTION,
        }
    }

    /// The same resolver, letting uv reach `origins` for the indexes' files instead of the
    /// default (PyPI's file host).
    pub(crate) fn with_file_origins(mut self, origins: Vec<String>) -> Self {
        self.file_origins = origins;
        self
    }

    /// The same resolver, keeping unused wheelhouse folders for `retention`.
    pub(crate) fn with_wheelhouse_retention(mut self, retention: Duration) -> Self {
        self.wheelhouse_retention = retention;
        self
    }

    /// Origins of `index_urls` and the file origins: all the resolver and the wheelhouse reach.
    pub(crate) fn proxy_origins(&self, index_urls: &[String]) -> Vec<egress::Origin> {
        index_urls
            .iter()
            .chain(&self.file_origins)
            .filter_map(|u| egress::origin(u))
            .collect()
    }

    /// The first of `index_urls` the operator may not fetch from, if any.
    pub(crate) fn refused_index(&self, index_urls: &[String]) -> Option<String> {
        index_urls
            .iter()
            .find(|u| !self.allowed_index_urls.iter().any(|a| same_url(a, u)))
            .map(|u| crate::redact::url(u))
    }

    /// Resolve `request.content` into a lock; `stop` ends uv early (the operator shutting
    /// down).
    pub(crate) async fn resolve(
        &self,
        request: &Request<'_>,
        stop: &Stop,
    ) -> Result<Lock, Failure> {
        let key = request.key;
        if let Some(url) = self.refused_index(&key.index_urls) {
            return Err(Failure::Failed(format!(
                "index {url} is not among the operator's resolver index URLs"
            )));
        }
        let work = tempfile::Builder::new()
            .prefix("bifrost-resolve-")
            .tempdir()
            .map_err(|e| Failure::Failed(format!("cannot create a working folder: {e}")))?;
        let input = work.path().join("requirements.txt");
        let output = work.path().join(LOCK_FILE);
        let file = RequirementsFile::parse(request.content);
        std::fs::write(&input, resolver_text(&file)?)
            .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", input.display())))?;
        let mut invocation = self
            .invocation(key, work.path(), &input, &output)
            .map_err(|e| Failure::Failed(e.to_string()))?;
        // Every request uv sends goes through a proxy that forwards only to these indexes and
        // their file hosts: an index's redirect elsewhere is refused there, not followed.
        let proxy = egress::Proxy::start(self.proxy_origins(&key.index_urls))
            .await
            .map_err(|e| Failure::Failed(format!("cannot start the resolver's proxy: {e}")))?;
        for var in egress::PROXY_VARIABLES {
            invocation.env.push((var, proxy.url().into()));
        }
        // The proxy reads inside HTTPS too (an index page's `file://` links): uv trusts the
        // proxy's one-resolution CA, and only it; the proxy checks the real index.
        let ca = work.path().join("proxy-ca.pem");
        std::fs::write(&ca, proxy.ca_pem())
            .map_err(|e| Failure::Failed(format!("cannot write {}: {e}", ca.display())))?;
        invocation.env.push(("SSL_CERT_FILE", ca.into()));
        invocation.env_remove.push("SSL_CERT_DIR");
        tracing::info!(
            hash = %&key.content_hash[..12.min(key.content_hash.len())],
            "resolving for {}: {}",
            key.interpreter.describe(),
            crate::redact::text(&invocation.display())
        );
        let pylock = work.path().join(platform::PYLOCK);
        let ran = platform::compile_twice(&invocation, &pylock, self.timeout, stop).await;
        if let Some(refused) = proxy.refused().first() {
            return Err(Failure::Failed(format!(
                "an index led the resolver to {refused}: refused by the resolver's proxy, \
                 uv was handed nothing from it"
            )));
        }
        match ran {
            Ok(()) => {}
            Err(RunFailure::Exited { status, tail }) if status.code() == Some(1) => {
                return Err(Failure::Unresolvable(with_hint(resolver_message(&tail))));
            }
            Err(e) => return Err(Failure::Failed(describe_failure(e, self.timeout))),
        }
        let body = std::fs::read_to_string(&output)
            .map_err(|e| Failure::Failed(format!("uv wrote no lock: {e}")))?;
        let lock = Lock {
            content_hash: key.content_hash.clone(),
            interpreter: key.interpreter.clone(),
            index_urls: key.index_urls.clone(),
            only_binary: key.only_binary,
            body,
        };
        let pinned = lock
            .pinned()
            .map_err(|e| Failure::Failed(format!("uv wrote a lock this cannot read: {e}")))?;
        pins::check(&file, &pinned).map_err(Failure::HashMismatch)?;
        let (version, platform) = (&key.interpreter.version, &key.interpreter.platform);
        let body = std::fs::read_to_string(&pylock)
            .map_err(|e| e.to_string())
            .and_then(|pylock| platform::for_interpreter(&lock.body, &pylock, version, platform))
            .map_err(|e| Failure::Failed(format!("uv's files for the workers' Python: {e}")))?;
        Ok(Lock { body, ..lock })
    }

    fn invocation(
        &self,
        key: &Key,
        work: &Path,
        input: &Path,
        output: &Path,
    ) -> crate::Result<Invocation> {
        // Index credentials go into a private netrc file, never onto uv's command line.
        let indexes = netrc::split(&key.index_urls)?;
        let netrc = match indexes.netrc.is_empty() {
            true => None,
            false => Some(NetrcFile::write(&indexes.netrc)?),
        };
        let mut args: Vec<OsString> = [
            "pip",
            "compile",
            "--no-config",
            "--no-header",
            "--generate-hashes",
            // uv's alias of `--only-binary :all:`: the lock holds wheels only, whatever the
            // resource allows the pods to build, so nothing is ever built in the operator.
            "--no-build",
            "--no-python-downloads",
            "--color",
            "never",
            "--python",
            &self.python,
            "--python-version",
            &key.interpreter.version,
            "--python-platform",
            &key.interpreter.platform,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        for (i, url) in indexes.urls.iter().enumerate() {
            args.push(
                if i == 0 {
                    "--index-url"
                } else {
                    "--extra-index-url"
                }
                .into(),
            );
            args.push(url.into());
        }
        args.extend([
            "--cache-dir".into(),
            self.cache_dir.clone().into_os_string(),
            "-o".into(),
            output.as_os_str().to_owned(),
            input.file_name().unwrap_or_default().to_owned(),
        ]);
        Ok(Invocation {
            label: "uv",
            program: self.uv.clone(),
            args,
            env_remove: Vec::new(),
            clean_env: Some(work.to_path_buf()),
            env: Vec::new(),
            netrc,
            memory_limit: Some(self.memory_limit),
            cwd: work.to_path_buf(),
        })
    }
}

/// What uv reads: the text the policy checked and the installers read
/// ([`RequirementsFile::installer_text`]: continuations joined as pip joins them, comments
/// dropped, options canonical), so a file that passed the policy cannot fail to parse here. A
/// line the model could not read is refused naming it (callers resolve checked content only).
fn resolver_text(file: &RequirementsFile) -> Result<String, Failure> {
    let invalid = file.lines().iter().find_map(|l| match &l.entry {
        Entry::Invalid(why) => Some(format!("line {}: `{}`: {why}", l.number, l.text())),
        Entry::Location(_) => Some(format!(
            "line {}: `{}`: a URL or path is never resolved by the operator",
            l.number,
            l.text()
        )),
        _ => None,
    });
    match invalid {
        Some(why) => Err(Failure::Unresolvable(why)),
        None => Ok(file.installer_text()),
    }
}

/// uv's own explanation from its output: from `error:` on (the solver's "Because …" lines name
/// the requirement), without the progress lines before it.
fn resolver_message(tail: &str) -> String {
    let from = tail.find("error:").unwrap_or(0);
    let message = tail[from..].trim();
    if message.is_empty() {
        "uv could not resolve the requirements (no message)".into()
    } else {
        message.to_string()
    }
}

/// uv's message, plus what to do when it failed for want of a wheel: the operator never builds,
/// the pods may.
fn with_hint(message: String) -> String {
    if message.contains("no usable wheels") || message.contains("building from source is disabled")
    {
        format!(
            "{message}\n(the operator resolves from wheels only and never builds a source \
             distribution; spec.install.resolve: Pod lets the pods resolve and build it)"
        )
    } else {
        message
    }
}

fn describe_failure(failure: RunFailure, timeout: Duration) -> String {
    match failure {
        RunFailure::Spawn(e) => format!("cannot run uv: {e}"),
        RunFailure::Exited { status, tail } => match crate::uv::guard::memory_stop(status, &tail) {
            Some(stop) => format!("{stop}; raise {MEMORY_SETTING}"),
            None => format!("uv failed ({status}): {}", resolver_message(&tail)),
        },
        RunFailure::TimedOut { .. } => {
            format!("uv did not finish within the {timeout:?} deadline")
        }
        RunFailure::Interrupted { signal } => format!("interrupted by {signal}"),
    }
}

#[cfg(test)]
mod tests;
