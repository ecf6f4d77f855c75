//! Logging set-up: `tracing` to stderr, text for people or JSON for log pipelines.
//!
//! The choice is process-wide, like the subscriber: besides `tracing` events, the lines a
//! command writes itself ([`say`], e.g. `install`'s summary) and the output of the programs it
//! runs ([`relay`], uv's and pip's lines) follow it, so that with `--log-format json` every line
//! on stderr is one JSON object, and no line carries colour codes unless stderr is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use clap::ValueEnum;
use tracing::Level;
use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The value as `--log-format` (and `BIFROST_LOG_FORMAT`) spells it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// What this process writes on stderr, decided once by [`init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Output {
    pub format: LogFormat,
    /// Whether ANSI colour codes may be written (and asked of child programs).
    pub colour: bool,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// The output [`init`] chose (plain text without colour before it ran).
pub(crate) fn output() -> Output {
    OUTPUT.get().copied().unwrap_or(Output {
        format: LogFormat::Text,
        colour: false,
    })
}

/// Colour only for text on a terminal, and never with `NO_COLOR` set to anything non-empty
/// (<https://no-color.org>): `kubectl logs` and log pipelines read a pipe or a file.
fn colour_allowed(format: LogFormat, terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    format == LogFormat::Text && terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the global subscriber. A bad filter falls back to `info` (and says so).
pub fn init(format: LogFormat, filter: &str) {
    let colour = colour_allowed(
        format,
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = OUTPUT.set(Output { format, colour });
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e.to_string())),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(|| RedactingStderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_target(false).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(error = %e, "invalid log filter; using `info`");
    }
}

/// Write one line of a command's own report on stderr (redacted): as it is in text, as a JSON
/// object of the same shape as the `tracing` events in JSON. Unlike an event it is never
/// filtered out: it is the command's answer, not a diagnostic.
pub fn say(level: Level, message: &str) {
    let message = crate::redact::text(message);
    match output().format {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => write_json(level, "bifrost_requirements", &message, None),
    }
}

/// Relay one line of a child program's output (`program` is `uv` or `pip`), redacted: a URL
/// with a password that uv prints in an error must not reach the log. Text: `  uv | line`.
pub(crate) fn relay(program: &str, line: &str) {
    let line = crate::redact::text(line);
    match output().format {
        LogFormat::Text => eprintln!("  {program} | {line}"),
        LogFormat::Json => write_json(
            Level::INFO,
            "bifrost_requirements::installer",
            &line,
            Some(("program", program)),
        ),
    }
}

/// `s` without ANSI escape sequences (CSI `ESC [ … final`, and any other `ESC x` pair).
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        // A CSI runs through parameters and intermediates to its final byte (`@` to `~`); any
        // other escape is two characters.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

/// One JSON object in `tracing_subscriber`'s JSON layout (`timestamp`, `level`, `fields` with
/// `message`, `target`), so a pipeline parses our lines and the events alike.
fn write_json(level: Level, target: &str, message: &str, field: Option<(&str, &str)>) {
    let mut fields = serde_json::Map::new();
    fields.insert("message".into(), message.into());
    if let Some((k, v)) = field {
        fields.insert(k.into(), v.into());
    }
    let line = serde_json::json!({
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "level": level.as_str(),
        "fields": fields,
        "target": target,
    });
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_for_text_on_a_terminal_without_no_color() {
        assert!(colour_allowed(LogFormat::Text, true, None));
        // An empty NO_COLOR does not count (no-color.org).
        assert!(colour_allowed(LogFormat::Text, true, Some(OsStr::new(""))));
        assert!(!colour_allowed(
            LogFormat::Text,
            true,
            Some(OsStr::new("1"))
        ));
        assert!(!colour_allowed(
            LogFormat::Text,
            true,
            Some(OsStr::new("false"))
        ));
        assert!(!colour_allowed(LogFormat::Text, false, None));
        assert!(!colour_allowed(LogFormat::Json, true, None));
    }

    #[test]
    fn escape_sequences_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[31merror\u{1b}[0m: x \u{1b}[38;5;208mwarn\u{1b}[39m"),
            "error: x warn"
        );
        assert_eq!(strip_ansi("plain | text [1m"), "plain | text [1m");
        assert_eq!(strip_ansi("cut \u{1b}"), "cut ");
    }

    #[test]
    fn log_format_names_are_the_flag_values() {
        for f in LogFormat::value_variants() {
            let v = f.to_possible_value().expect("not skipped");
            assert_eq!(v.get_name(), f.name());
        }
    }
}
