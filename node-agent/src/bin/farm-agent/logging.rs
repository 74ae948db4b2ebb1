//! The agent's log: stderr through a lossy buffer, or daily files.
use crate::args::LogFormat;

/// Logs to stderr, or to daily files in `dir` (the guard flushes them).
pub fn init_logging(
    verbose: u8,
    format: LogFormat,
    dir: Option<&std::path::Path>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let files = dir.and_then(|dir| {
        tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("farm-agent")
            .filename_suffix("log")
            .max_log_files(14)
            .build(dir)
            .map_err(|e| {
                eprintln!(
                    "farm-agent: cannot log to {}: {e}; logging to stderr",
                    dir.display()
                )
            })
            .ok()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if let Some(files) = files {
        let (writer, guard) = tracing_appender::non_blocking(files);
        let builder = builder.with_writer(writer).with_ansi(false);
        if format == LogFormat::Json {
            builder.json().init();
        } else {
            builder.init();
        }
        return Some(guard);
    }
    // Through a bounded, lossy buffer: a stderr nobody reads (a full
    // pipe) drops log lines instead of stalling the agent.
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = builder.with_writer(writer);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        // Colour only for a terminal, and never with NO_COLOR: logs
        // redirected to a file stay plain.
        let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        builder.with_ansi(colour).init();
    }
    Some(guard)
}
