//! `farmctl`: parses arguments, resolves the settings and calls the
//! library. The progress bars live here ([`bars`]), not in the library.
use std::io::IsTerminal;
use std::sync::Arc;

use clap::Parser;
use farmctl::cli::Output;
use farmctl::cli::{Cli, Command};
use farmctl::commands::{self, Settings};
use farmctl::exit::ExitStatus;
use farmctl::report::{JsonLines, Lines, Reporter, Silent, Tee};

mod bars;

fn main() {
    let cli = Cli::parse();
    if let Command::Service(a) = &cli.command {
        // The Service Control Manager's thread runs the guard on a
        // runtime of its own.
        let code = match commands::service::run(&a.command) {
            Ok(()) => 0,
            Err(e) => {
                farmctl::errln!("farmctl: {e}");
                e.status.code()
            }
        };
        std::process::exit(code);
    }
    farmctl::init_logging(match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    });
    let progress: Arc<dyn Reporter> = if cli.quiet {
        Arc::new(Silent)
    } else if std::io::stderr().is_terminal() && !no_color() {
        Arc::new(bars::Bars::new())
    } else {
        Arc::new(Lines::new())
    };
    // `--output jsonl` streams the events on stdout as well.
    let reporter: Arc<dyn Reporter> = match cli.command.output() {
        Some(Output::Jsonl) => Arc::new(Tee(vec![progress, Arc::new(JsonLines::default())])),
        _ => progress,
    };
    let settings = Settings::of(&cli, reporter);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            farmctl::errln!("farmctl: could not start the async runtime: {e}");
            std::process::exit(ExitStatus::Failed.code());
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Validate(a) => commands::validate::run(a, &settings).await,
            Command::Status(a) => commands::status::run(a, &settings).await,
            Command::Guard(a) => farmctl::guard::run(a, &settings).await,
            Command::Recycle(a) => commands::rollout::recycle(a, &settings).await,
            Command::Reset(a) => commands::rollout::reset(a, &settings).await,
            Command::Patch(a) => {
                commands::rollout::restart(a, farm_proto::domain::OperationKind::Patch, &settings)
                    .await
            }
            Command::Reboot(a) => {
                commands::rollout::restart(a, farm_proto::domain::OperationKind::Reboot, &settings)
                    .await
            }
            Command::Deploy(a) => commands::deploy::run(a, &settings).await,
            Command::Rollback(a) => commands::rollback::run(a, &settings).await,
            Command::Drain(a) => commands::drain::run(a, true, &settings).await,
            Command::Undrain(a) => commands::drain::run(a, false, &settings).await,
            Command::Plan(a) => commands::plan::run(a, &settings).await,
            Command::Runs(a) => commands::runs::run(a, &settings).await,
            Command::Resume(a) => commands::resume::run(a, &settings).await,
            Command::Certs(a) => commands::certs::run(a, &settings),
            Command::Demo(a) => commands::demo::run(a, &settings).await,
            Command::Completions(a) => commands::shell::completions(a),
            Command::Man(a) => commands::shell::man(a),
            Command::Logs(a) => commands::logs::run(a, &settings).await,
            Command::Service(_) => Ok(ExitStatus::Done),
        }
    });
    let code = match result {
        Ok(status) => status.code(),
        Err(e) => {
            farmctl::errln!("farmctl: {e}");
            // A pipeline gets its answer on stdout whatever the outcome.
            match cli.command.output() {
                Some(Output::Json) => farmctl::outln!(
                    "{}",
                    serde_json::to_string_pretty(&e.answer()).unwrap_or_default()
                ),
                Some(Output::Jsonl) => JsonLines::refused(&e.answer()),
                _ => {}
            }
            e.status.code()
        }
    };
    // Dropping the runtime waits for nothing: agent clients and probes
    // are done; lingering tasks are cancelled.
    runtime.shutdown_background();
    std::process::exit(code);
}

/// `NO_COLOR` set (to anything): no colours, no bars.
fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}
