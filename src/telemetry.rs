//! Logging set-up: `tracing` to stderr, text for people or JSON for log pipelines.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// Install the global subscriber. A bad filter falls back to `info` (and says so).
pub fn init(format: LogFormat, filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(error = %e, "invalid log filter; using `info`");
    }
}
