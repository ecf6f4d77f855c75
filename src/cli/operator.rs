//! Flags of the `operator` command and their conversion into [`crate::operator::Config`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse;
use crate::telemetry::LogFormat;
use crate::{tls, webhook};

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

    /// The namespace this operator runs in (the Downward API's POD_NAMESPACE): the webhook never
    /// injects pods there.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// This replica's identity in the Lease (default: POD_NAME, else hostname and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// How long a Lease is valid without renewal; a new leader takes over after it expires.
    #[arg(long, env = "BIFROST_LEASE_DURATION_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,

    /// After SIGTERM, keep serving (not ready) this long before stopping, so the API server
    /// stops calling this replica's webhook endpoint first (a pod: a few seconds; 0: stop at once).
    #[arg(long, env = "BIFROST_SHUTDOWN_DELAY", default_value = "0s", value_parser = parse::duration)]
    pub shutdown_delay: Duration,

    #[command(flatten)]
    pub webhook: WebhookArgs,

    #[command(flatten)]
    pub resolver: ResolverArgs,
}

/// How the controller resolves each content into the lock the pods install.
#[derive(Debug, Clone, Args)]
pub struct ResolverArgs {
    /// Index URLs the controller may resolve against (repeat, or comma-separated). A resource
    /// whose `spec.install.indexUrls` (default: the public index) names another is resolved by
    /// its pods instead: a resource never makes the operator fetch from an address of its
    /// choosing.
    #[arg(long = "resolver-index-url", env = "BIFROST_RESOLVER_INDEX_URLS", value_delimiter = ',',
          default_value = crate::lock::DEFAULT_INDEX)]
    pub index_urls: Vec<String>,

    /// Origins the allowed indexes serve their files from when not their own (repeat, or
    /// comma-separated; PyPI's: `https://files.pythonhosted.org`). The resolver's proxy lets uv
    /// reach these and the indexes, nothing else.
    #[arg(long = "resolver-file-origin", env = "BIFROST_RESOLVER_FILE_ORIGINS", value_delimiter = ',',
          default_value = crate::lock::DEFAULT_FILE_ORIGIN)]
    pub file_origins: Vec<String>,

    /// Resolve nothing in the operator: every resource is resolved by its pods.
    #[arg(long, env = "BIFROST_NO_RESOLVER", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_resolver: bool,

    /// Deadline of one resolution.
    #[arg(long, env = "BIFROST_RESOLVER_TIMEOUT", default_value = "120s", value_parser = parse::duration)]
    pub resolver_timeout: Duration,

    /// Memory limit of the resolver, a quantity (`512Mi`): what uv and everything it starts may
    /// hold resident together (not their address space); over it the resolution fails saying
    /// so. Keep it below the operator container's memory limit minus the operator's own use,
    /// so a runaway resolution fails alone instead of getting the operator killed.
    #[arg(long, env = "BIFROST_RESOLVER_MEMORY_LIMIT", default_value = crate::lock::DEFAULT_MEMORY_LIMIT, value_parser = parse::memory)]
    pub resolver_memory_limit: u64,

    /// The interpreter uv queries for its own environment (with `--no-build` it runs no
    /// package's code): a name on PATH or a path.
    #[arg(long, env = "BIFROST_RESOLVER_PYTHON", default_value = "python3")]
    pub resolver_python: String,

    /// uv's cache for resolutions (default: `bifrost-resolver` in the temporary folder).
    #[arg(long, env = "BIFROST_RESOLVER_CACHE_DIR")]
    pub resolver_cache_dir: Option<PathBuf>,

    /// How long a wheelhouse folder (`spec.install.wheelhouse`) of a lock that no resource and
    /// no pod uses any more is kept before it is pruned.
    #[arg(long, env = "BIFROST_WHEELHOUSE_RETENTION", default_value = "1h", value_parser = parse::duration)]
    pub wheelhouse_retention: Duration,
}

impl ResolverArgs {
    /// The resolver, or `None` with `--no-resolver`.
    pub(crate) fn resolver(self) -> Option<crate::lock::Resolver> {
        if self.no_resolver {
            return None;
        }
        Some(
            crate::lock::Resolver::bundled(
                self.resolver_python,
                self.index_urls
                    .into_iter()
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
                self.resolver_timeout,
                self.resolver_memory_limit,
                self.resolver_cache_dir,
            )
            .with_file_origins(
                self.file_origins
                    .into_iter()
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect(),
            )
            .with_wheelhouse_retention(self.wheelhouse_retention),
        )
    }
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
    #[arg(long, env = "BIFROST_TLS_MODE", value_enum, default_value_t = tls::Mode::SelfManaged)]
    pub tls_mode: tls::Mode,

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

    /// Namespace whose pods are never injected (repeat, or comma-separate in the variable);
    /// kube-system, the operator's own namespace (--pod-namespace) and, with --namespace, every
    /// other namespace are never injected either.
    #[arg(
        long = "webhook-exclude-namespace",
        env = "BIFROST_WEBHOOK_EXCLUDE_NAMESPACES",
        value_delimiter = ',',
        value_name = "NAMESPACE"
    )]
    pub webhook_exclude_namespaces: Vec<String>,

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
    #[arg(long, env = "BIFROST_CERT_VALIDITY", default_value = "8760h", value_parser = parse::validity)]
    pub cert_validity: Duration,

    /// Longest time between two checks of the certificate (files, Secret, caBundle).
    #[arg(long, env = "BIFROST_TLS_CHECK_INTERVAL", default_value = "30s", value_parser = parse::check_interval)]
    pub tls_check_interval: Duration,
}

impl OperatorArgs {
    /// The operator's configuration; `log_format` is the process's own (`--log-format`), which
    /// the webhook passes on to the containers it injects.
    pub(crate) fn config(self, log_format: LogFormat) -> crate::operator::Config {
        let args = self;
        let webhook = webhook_config(&args, log_format);
        let lease = (!args.no_leader_election).then(|| crate::operator::LeaseConfig {
            name: args.lease_name,
            namespace: args
                .lease_namespace
                .or_else(|| args.namespace.clone())
                .unwrap_or_else(|| "default".into()),
            duration_seconds: args.lease_duration_seconds,
        });
        crate::operator::Config {
            identity: args
                .identity
                .filter(|s| !s.is_empty())
                .unwrap_or_else(crate::operator::default_identity),
            namespace: args.namespace,
            metrics_addr: args.metrics_addr,
            lease,
            webhook,
            shutdown_delay: args.shutdown_delay,
            resolver: args.resolver.resolver(),
        }
    }
}

/// The webhook's configuration from the `operator` flags; `None` when the webhook is disabled.
fn webhook_config(args: &OperatorArgs, log_format: LogFormat) -> Option<webhook::Config> {
    let w = &args.webhook;
    if w.no_webhook {
        return None;
    }
    let service_namespace = w
        .webhook_service_namespace
        .clone()
        .or_else(|| args.lease_namespace.clone())
        .or_else(|| args.namespace.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let tls = match w.tls_mode {
        tls::Mode::SelfManaged => tls::Config::SelfManaged(tls::SelfManaged {
            cert: tls::CertSpec {
                names: tls::service_names(
                    &w.webhook_service_name,
                    &service_namespace,
                    &w.webhook_extra_san,
                ),
                validity: w.cert_validity,
            },
            namespace: service_namespace,
            secret_name: w.tls_secret_name.clone(),
            webhook_config: w.webhook_config_name.clone(),
            check_interval: w.tls_check_interval,
        }),
        tls::Mode::CertManager => tls::Config::Files(tls::Files {
            cert: w.tls_cert_file.clone(),
            key: w.tls_key_file.clone(),
            interval: w.tls_check_interval,
        }),
    };
    Some(webhook::Config {
        addr: w.webhook_addr,
        settings: webhook::inject::Settings {
            operator_image: w.operator_image.clone(),
            operator_image_pull_policy: Some(w.operator_image_pull_policy.clone())
                .filter(|p| !p.is_empty()),
            log_format,
            scope: webhook::inject::Scope {
                own: args.pod_namespace.clone().filter(|n| !n.is_empty()),
                excluded: w
                    .webhook_exclude_namespaces
                    .iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
                watched: args.namespace.clone().filter(|n| !n.is_empty()),
            },
        },
        tls,
        namespace: args.namespace.clone(),
    })
}
