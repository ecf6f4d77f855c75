//! Command-line interface: typed arguments, each with an environment-variable fallback.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cache::{CacheConfig, DEFAULT_KEY, DEFAULT_TTL_SECONDS};
use crate::database::{DEFAULT_ENTITY_TYPE, DEFAULT_PATH, RowSelector};
use crate::policy::Policy;

const EXIT_CODES: &str = "Exit codes: 0 success; 1 internal or I/O error; 2 invalid input \
(bad requirement, policy violation, bad flag); 3 PostgreSQL unreachable or failing; \
4 Redis unreachable, failing or holding a corrupt value; 5 installation failed.";

/// Persist Bifrost's Python requirements across container restarts.
///
/// The requirements.txt row in PostgreSQL (`workspace_files`) is the source of truth; Redis
/// (`bifrost:requirements:content`) caches it for workers; every worker installs it before it
/// starts. On Kubernetes run `operator`; on hosts without Kubernetes use `warm` as the one-shot
/// init step and `install` as the worker's start-up step.
#[derive(Debug, Parser)]
#[command(name = "bifrost-requirements", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, env = "BIFROST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,bifrost_requirements=debug`).
    #[arg(long, env = "RUST_LOG", default_value = "info", global = true)]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create Bifrost's `workspace_files` table where it is missing and install the NOTIFY
    /// trigger the operator listens to. Never alters an existing table; safe to run every start.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Copy the requirements row from PostgreSQL into Redis (the one-shot init step of a
    /// docker-compose deployment). Exits 0 when warmed or when there is no row (and says which).
    Warm {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Show or change requirements.txt the way Bifrost's package install does: read the row,
    /// merge, validate, save with compare-and-swap, refresh Redis. Invalid input changes nothing.
    Requirements {
        #[command(subcommand)]
        command: RequirementsCommand,
    },
    /// Run the Kubernetes operator: the controller (validate, warm Redis, snapshot, roll out), the
    /// database mirror, leader election, and the metrics/health endpoints. Needs only a
    /// kubeconfig (in-cluster or KUBECONFIG); every flag has a default.
    Operator(OperatorArgs),
    /// Print the `WorkspaceRequirements` CustomResourceDefinition as YAML
    /// (`crds/workspacerequirements.bifrost.io.yaml` is this output).
    Crd,
    /// Install requirements.txt into a folder on PYTHONPATH before the worker starts (the init
    /// container's command; under docker compose, run it before the worker's own command).
    /// Reads Redis, then --fallback-file; checks the hash and the policy; installs with uv (or
    /// pip) into a staging folder and swaps it in; skips when the marker has the same hash.
    #[command(after_help = crate::installer::EXIT_CODES)]
    Install(InstallArgs),
    /// Copy this binary and `uv` into a folder (the injected bootstrap init container's command:
    /// the operator image has no shell, so the binary copies itself).
    Bootstrap(BootstrapArgs),
    /// Internal: run the installer so that it and its descendants die with `install` (see
    /// `installer::guard`).
    #[command(name = crate::installer::guard::SUBCOMMAND, hide = true)]
    InstallerGuard(GuardArgs),
}

/// Arguments of the hidden `installer-guard` command.
#[derive(Debug, Clone, Args)]
pub struct GuardArgs {
    /// The `install` process the guard belongs to.
    #[arg(long)]
    pub parent: i32,
    /// The installer and its arguments (after `--`).
    #[arg(required = true, num_args = 1.., last = true)]
    pub command: Vec<std::ffi::OsString>,
}

/// Settings of the `operator` command.
#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Address of the plain-HTTP endpoints /metrics, /healthz and /readyz.
    #[arg(long, env = "BIFROST_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,

    /// Disable leader election (run exactly one replica then).
    #[arg(long, env = "BIFROST_NO_LEADER_ELECTION")]
    pub no_leader_election: bool,

    /// Name of the coordination.k8s.io/v1 Lease used for leader election.
    #[arg(
        long,
        env = "BIFROST_LEASE_NAME",
        default_value = "bifrost-requirements-operator"
    )]
    pub lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace, POD_NAMESPACE, else `default`).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease (default: POD_NAME, else hostname and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease is valid without renewal; a new leader takes over after it expires.
    #[arg(long, env = "BIFROST_LEASE_DURATION_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,

    #[command(flatten)]
    pub webhook: WebhookArgs,
}

/// Where the admission webhook's serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    /// The operator issues a CA and certificate, keeps them in a Secret, patches `caBundle` into
    /// the MutatingWebhookConfiguration and rotates them before expiry.
    SelfManaged,
    /// Serve the mounted certificate files (issued by cert-manager, which also injects the CA);
    /// they are reloaded when they change.
    CertManager,
}

/// Settings of the mutating admission webhook (served by every operator replica).
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS admission webhook (`POST /mutate`). A taken port is logged and
    /// retried, never fatal.
    #[arg(long, env = "BIFROST_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: std::net::SocketAddr,

    /// Do not serve the admission webhook (labelled pods are then created without the installer).
    #[arg(long, env = "BIFROST_NO_WEBHOOK", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_webhook: bool,

    /// Where the serving certificate comes from.
    #[arg(long, env = "BIFROST_TLS_MODE", value_enum, default_value_t = TlsMode::SelfManaged)]
    pub tls_mode: TlsMode,

    /// cert-manager mode: the certificate file (PEM chain), reloaded when it changes.
    #[arg(
        long,
        env = "BIFROST_TLS_CERT_FILE",
        default_value = "/etc/bifrost-requirements/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// cert-manager mode: the private key file (PEM), reloaded when it changes.
    #[arg(
        long,
        env = "BIFROST_TLS_KEY_FILE",
        default_value = "/etc/bifrost-requirements/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// Self-managed mode: the Secret holding the CA bundle and serving certificate (in the
    /// webhook Service's namespace).
    #[arg(
        long,
        env = "BIFROST_TLS_SECRET_NAME",
        default_value = "bifrost-requirements-webhook-tls"
    )]
    pub tls_secret_name: String,

    /// Name of the webhook Service; the certificate covers `<name>`, `<name>.<ns>`,
    /// `<name>.<ns>.svc` and `<name>.<ns>.svc.cluster.local`.
    #[arg(
        long,
        env = "BIFROST_WEBHOOK_SERVICE_NAME",
        default_value = "bifrost-requirements-webhook"
    )]
    pub webhook_service_name: String,

    /// Namespace of the webhook Service and the certificate Secret (default: POD_NAMESPACE /
    /// --lease-namespace, else --namespace, else `default`).
    #[arg(long, env = "BIFROST_WEBHOOK_SERVICE_NAMESPACE")]
    pub webhook_service_namespace: Option<String>,

    /// More DNS names or IP addresses for the serving certificate (repeat, or comma-separate in
    /// the variable), e.g. when the API server reaches the webhook by URL.
    #[arg(
        long,
        env = "BIFROST_WEBHOOK_EXTRA_SANS",
        value_delimiter = ',',
        value_name = "NAME|IP"
    )]
    pub webhook_extra_san: Vec<String>,

    /// Self-managed mode: the MutatingWebhookConfiguration whose webhooks get the `caBundle`
    /// (a missing one is logged and retried).
    #[arg(
        long,
        env = "BIFROST_WEBHOOK_CONFIG_NAME",
        default_value = "bifrost-requirements"
    )]
    pub webhook_config_name: String,

    /// Image of the injected bootstrap init container: this operator's own image (it holds the
    /// static binary and uv at /usr/local/bin).
    #[arg(long, env = "OPERATOR_IMAGE",
          default_value = concat!("bifrost-requirements:", env!("CARGO_PKG_VERSION")))]
    pub operator_image: String,

    /// imagePullPolicy of the bootstrap init container.
    #[arg(long, env = "BIFROST_OPERATOR_IMAGE_PULL_POLICY", default_value = "IfNotPresent",
          value_parser = ["Always", "IfNotPresent", "Never"])]
    pub operator_image_pull_policy: String,

    /// Self-managed mode: validity of the CA and serving certificate; they are renewed when a
    /// third of it is left (`8760h` = one year; at least `10s`).
    #[arg(long, env = "BIFROST_CERT_VALIDITY", default_value = "8760h", value_parser = parse_validity)]
    pub cert_validity: Duration,

    /// Longest time between two checks of the certificate (files, Secret, caBundle).
    #[arg(long, env = "BIFROST_TLS_CHECK_INTERVAL", default_value = "30s", value_parser = parse_check_interval)]
    pub tls_check_interval: Duration,
}

fn parse_validity(s: &str) -> Result<Duration, String> {
    crate::duration::at_least(s, Duration::from_secs(10), "10s")
}

fn parse_check_interval(s: &str) -> Result<Duration, String> {
    crate::duration::at_least(s, Duration::from_millis(100), "100ms")
}

/// `bootstrap`: copy the binary and uv into the shared volume.
#[derive(Debug, Clone, Args)]
pub struct BootstrapArgs {
    /// Folder to copy into (created if missing).
    #[arg(long, env = "BIFROST_BOOTSTRAP_TO", value_name = "DIR")]
    pub to: PathBuf,

    /// The uv executable to copy. Default: `uv` next to this binary, else on PATH.
    #[arg(long, env = "BIFROST_BOOTSTRAP_UV", value_name = "PATH")]
    pub uv: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum RequirementsCommand {
    /// Print requirements.txt exactly as stored.
    Show {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Add requirements (`flask==3.0`, `requests[socks]>=2`); an entry of the same normalized
    /// name is replaced, never duplicated.
    Add {
        /// PEP 508 requirements, one per argument.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Remove packages by name (PEP 503 normalized comparison).
    Remove {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Replace requirements.txt with the content of a file (`-` for standard input).
    Set {
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

/// Where the requirements row lives.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL (`postgresql://…`; SQLAlchemy's `postgresql+asyncpg://…` is accepted).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// `workspace_files.path` of the requirements row.
    #[arg(long, env = "BIFROST_REQUIREMENTS_PATH", default_value = DEFAULT_PATH)]
    pub path: String,

    /// `workspace_files.entity_type` of the requirements row.
    #[arg(long, env = "BIFROST_REQUIREMENTS_ENTITY_TYPE", default_value = DEFAULT_ENTITY_TYPE)]
    pub entity_type: String,

    /// How long to wait for a database connection (e.g. `10s`, `500ms`).
    #[arg(long, env = "BIFROST_DATABASE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub database_timeout: Duration,
}

impl DatabaseArgs {
    pub fn selector(&self) -> RowSelector {
        RowSelector {
            path: self.path.clone(),
            entity_type: self.entity_type.clone(),
        }
    }
}

/// How to reach the Redis cache.
#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://[:password@]host:port/db`).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Redis key holding `{"content": …, "hash": …}`.
    #[arg(long, env = "BIFROST_REQUIREMENTS_REDIS_KEY", default_value = DEFAULT_KEY)]
    pub redis_key: String,

    /// TTL of the Redis key in seconds.
    #[arg(long, env = "BIFROST_REQUIREMENTS_TTL_SECONDS", default_value_t = DEFAULT_TTL_SECONDS,
          value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub ttl_seconds: u64,

    /// Timeout of each Redis connect and command.
    #[arg(long, env = "BIFROST_REDIS_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub redis_timeout: Duration,

    /// Attempts per Redis operation (exponential backoff between attempts).
    #[arg(long, env = "BIFROST_REDIS_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub redis_attempts: u32,
}

impl RedisArgs {
    /// The cache configuration, if a URL was given.
    pub fn config(&self) -> Option<CacheConfig> {
        let url = self.redis_url.as_ref()?.trim();
        if url.is_empty() {
            return None;
        }
        Some(CacheConfig {
            key: self.redis_key.clone(),
            ttl: Duration::from_secs(self.ttl_seconds),
            connect_timeout: self.redis_timeout,
            command_timeout: self.redis_timeout,
            attempts: self.redis_attempts,
            ..CacheConfig::new(url)
        })
    }
}

/// What the requirements policy allows beyond the safe default.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Index URL that requirements.txt may select with `-i/--index-url/--extra-index-url`
    /// (repeat, or comma-separate in the environment variable).
    #[arg(
        long = "allow-index-url",
        env = "BIFROST_ALLOWED_INDEX_URLS",
        value_delimiter = ','
    )]
    pub allowed_index_urls: Vec<String>,

    /// Reject `--no-binary` lines (no source builds).
    #[arg(long = "policy-only-binary", env = "BIFROST_POLICY_ONLY_BINARY")]
    pub only_binary: bool,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            allowed_index_urls: self
                .allowed_index_urls
                .iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect(),
            only_binary: self.only_binary,
        }
    }
}

/// Go's duration syntax (`1500ms`, `3s`, `1h30m`) or plain seconds: see [`crate::duration`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s)
}

/// `install`: flags of the worker's start-up step; every flag has a `BIFROST_INSTALL_*`
/// environment fallback (flag names are a contract with the webhook and with compose files).
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Folder to install into; put it on the worker's PYTHONPATH. Created if missing; may be a
    /// mount point (an emptyDir). Holds `.bifrost-requirements.json`, the marker.
    #[arg(long, env = "BIFROST_INSTALL_TARGET", value_name = "DIR")]
    pub target: PathBuf,

    /// Which program installs the packages.
    #[arg(long, env = "BIFROST_INSTALL_INSTALLER", value_enum,
          default_value_t = crate::installer::InstallerKind::Uv)]
    pub installer: crate::installer::InstallerKind,

    /// The worker's Python interpreter (name on PATH or path); wheels are chosen for its ABI.
    #[arg(
        long,
        env = "BIFROST_INSTALL_PYTHON",
        default_value = "python3",
        value_name = "PYTHON"
    )]
    pub python: String,

    /// The uv executable. Default: `uv` on PATH, then `uv` next to this binary.
    #[arg(long, env = "BIFROST_INSTALL_UV", value_name = "PATH")]
    pub uv: Option<String>,

    /// Used when Redis is down or lacks the key: the ConfigMap snapshot, either plain
    /// requirements.txt (checked against a sibling file `hash` if present) or the JSON payload.
    #[arg(long, env = "BIFROST_INSTALL_FALLBACK_FILE", value_name = "FILE")]
    pub fallback_file: Option<PathBuf>,

    /// The hash this worker was admitted for (`sha256:` prefix accepted). A source holding it is
    /// preferred; if none does, the newest (Redis) is installed and a warning says so.
    #[arg(long, env = "BIFROST_INSTALL_EXPECTED_HASH", value_name = "SHA256",
          value_parser = crate::installer::parse_expected_hash)]
    pub expected_hash: Option<String>,

    /// What a failure does: `fail` exits non-zero (halts a rolling update), `continue` warns and
    /// exits 0 so the worker starts with the target as it was. Invalid flags always fail.
    #[arg(long, env = "BIFROST_INSTALL_ON_FAILURE", value_enum,
          default_value_t = crate::installer::OnFailure::Fail)]
    pub on_failure: crate::installer::OnFailure,

    /// Deadline for the installer process (`300`, `90s`, `5m`); on expiry its whole process
    /// group is stopped (SIGTERM, then SIGKILL).
    #[arg(long, env = "BIFROST_INSTALL_TIMEOUT", default_value = "300s", allow_hyphen_values = true,
          value_parser = crate::installer::parse_timeout, value_name = "DURATION")]
    pub timeout: Duration,

    /// Overall deadline for reading Redis (connect and GET, retries included).
    #[arg(long, env = "BIFROST_INSTALL_REDIS_DEADLINE", default_value = "15s",
          allow_hyphen_values = true, value_parser = crate::installer::parse_timeout,
          value_name = "DURATION")]
    pub redis_deadline: Duration,

    /// Installer cache folder (e.g. a shared volume): warm caches make installs much faster.
    #[arg(long, env = "BIFROST_INSTALL_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Package index to install from (also allowed in requirements.txt `-i` lines).
    #[arg(long, env = "BIFROST_INSTALL_INDEX_URL", value_name = "URL")]
    pub index_url: Option<String>,

    /// Additional index (repeat, or comma-separate in the environment variable).
    #[arg(
        long,
        env = "BIFROST_INSTALL_EXTRA_INDEX_URL",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub extra_index_url: Vec<String>,

    /// Folder or URL of wheels to install from (repeat, or comma-separate in the variable).
    #[arg(
        long,
        env = "BIFROST_INSTALL_FIND_LINKS",
        value_delimiter = ',',
        value_name = "DIR|URL"
    )]
    pub find_links: Vec<String>,

    /// Do not use any package index (only --find-links).
    #[arg(long, env = "BIFROST_INSTALL_NO_INDEX",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub no_index: bool,

    /// Install wheels only, never build from source (also rejects `--no-binary` lines).
    #[arg(id = "install_only_binary", long = "only-binary", env = "BIFROST_INSTALL_ONLY_BINARY",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub only_binary: bool,

    /// Compile .pyc files at install time (slower install, faster first import). Off by
    /// default: a pod's install is on every start's critical path, while Python compiles only
    /// the modules a worker imports, once, into the writable target.
    #[arg(long, env = "BIFROST_INSTALL_COMPILE_BYTECODE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub compile_bytecode: bool,

    /// Print one JSON result object on stdout (progress stays on stderr).
    #[arg(long, env = "BIFROST_INSTALL_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub json: bool,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(
            parse_duration("3 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }
}
