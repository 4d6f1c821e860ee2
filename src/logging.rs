//! `tracing` output for every subcommand: text for people, JSON for log collectors; always on stderr so that
//! commands whose stdout is a protocol (CNI plugins, `runtime state`) stay parseable.

use basalt_config::{LogFormat, LogLevel};
use tracing_subscriber::EnvFilter;

pub fn init(level: LogLevel, format: LogFormat) {
    // RUST_LOG, when set, refines the configured level per module (e.g. `basalt_agent=trace`).
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a log file (the node image's agent.log) must stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
