//! Logging set-up: `tracing` to stderr, text for people or JSON for log pipelines.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the global subscriber. A bad filter falls back to `info` (and says so).
pub fn init(format: LogFormat, filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(error = %e, "invalid log filter; using `info`");
    }
}

/// Stderr, with every log line passed through [`crate::redact::text`]: a connection string that
/// some code path or dependency puts into a message is masked even so (the fmt layer writes each
/// event with one `write_all`).
struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(crate::redact::text(&line).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
