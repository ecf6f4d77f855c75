//! `requirements show --lock`: the stored requirements.txt resolved into the lock the
//! controller would give the workers' interpreter, printed instead of the file.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse;
use crate::error::{Error, Result};
use crate::lock::{self, Failure, Interpreter, Key, Lock, Request, Resolver};
use crate::policy::Policy;
use crate::requirements::content_hash;

/// Flags of `requirements show` that ask for the lock.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Print the lock instead of requirements.txt: every distribution pinned with its SHA-256
    /// hashes (the bundled `uv pip compile --generate-hashes --no-build`), behind a header
    /// naming the content hash, interpreter and indexes. Exits 1 with the resolver's message
    /// (it names the requirement) when the content cannot be resolved.
    #[arg(long, requires_all = ["python_version", "python_platform"])]
    pub lock: bool,

    /// The workers' Python version the lock is for (`3.11`, `3.11.7`).
    #[arg(long, value_name = "VERSION", requires = "lock")]
    pub python_version: Option<String>,

    /// The workers' platform the lock is for, as uv names it (`x86_64-manylinux_2_28`,
    /// `aarch64-manylinux_2_28`, `x86_64-unknown-linux-gnu`).
    #[arg(long, value_name = "PLATFORM", requires = "lock")]
    pub python_platform: Option<String>,

    /// Index to resolve against (repeat for more; the first is the main index). Default: the
    /// public index. requirements.txt may select only these with its own index lines.
    #[arg(long = "index-url", value_name = "URL", requires = "lock")]
    pub index_urls: Vec<String>,

    /// Resolve to wheels only (no source distributions), as `spec.install.onlyBinary` does.
    #[arg(long, requires = "lock")]
    pub only_binary: bool,

    /// Deadline of the resolution.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse::timeout,
          requires = "lock")]
    pub resolver_timeout: Duration,

    /// The interpreter uv queries for its own environment (it runs no package code).
    #[arg(
        long,
        value_name = "PYTHON",
        default_value = "python3",
        requires = "lock"
    )]
    pub resolver_python: String,

    /// uv's cache for the resolution (default: `bifrost-resolver` in the temporary folder).
    #[arg(long, value_name = "DIR", requires = "lock")]
    pub resolver_cache_dir: Option<PathBuf>,

    /// Memory limit of the resolver, a quantity, as the operator's: what uv and everything it
    /// starts may hold resident together (not their address space).
    #[arg(long, value_name = "QUANTITY", default_value = lock::DEFAULT_MEMORY_LIMIT,
          value_parser = parse::memory, requires = "lock")]
    pub resolver_memory_limit: u64,
}

/// What one `show --lock` resolves, checked before anything runs.
pub(crate) struct LockRequest {
    pub interpreter: Interpreter,
    pub index_urls: Vec<String>,
    pub only_binary: bool,
    pub resolver: Resolver,
}

impl LockArgs {
    /// `None` without `--lock`; an invalid interpreter is a configuration error naming the flag.
    pub(crate) fn request(self) -> Result<Option<LockRequest>> {
        if !self.lock {
            return Ok(None);
        }
        let interpreter = Interpreter {
            version: self.python_version.unwrap_or_default(),
            platform: self.python_platform.unwrap_or_default(),
        };
        // The check names the resource's fields; here they are flags.
        interpreter
            .check()
            .map_err(|e| Error::Config(e.replace("spec.install.python.", "--python-")))?;
        let index_urls = lock::effective_index_urls(&self.index_urls);
        let resolver = Resolver::bundled(
            self.resolver_python,
            index_urls.clone(),
            self.resolver_timeout,
            self.resolver_memory_limit,
            self.resolver_cache_dir,
        );
        Ok(Some(LockRequest {
            interpreter,
            index_urls,
            only_binary: self.only_binary,
            resolver,
        }))
    }
}

impl LockRequest {
    /// The lock of `content`, checked by the policy first (only the given indexes allowed);
    /// `Err(Failure)`: the resolver's own message.
    pub(crate) async fn resolve(
        &self,
        content: &str,
    ) -> Result<std::result::Result<Lock, Failure>> {
        let policy = Policy {
            allowed_index_urls: self.index_urls.clone(),
            only_binary: self.only_binary,
        };
        policy.check_content(content)?;
        let key = Key {
            content_hash: content_hash(content),
            interpreter: self.interpreter.clone(),
            index_urls: self.index_urls.clone(),
            only_binary: self.only_binary,
        };
        let stop = crate::shutdown::on_signals().1;
        Ok(self
            .resolver
            .resolve(&Request { content, key: &key }, &stop)
            .await)
    }
}
