//! One file per subcommand, each with `run(args, &Settings)`: resolve the
//! flags into settings, call the library, print the result.
pub mod certs;
pub mod demo;
pub mod deploy;
pub mod drain;
pub mod inventory_files;
pub mod logs;
pub mod plan;
pub mod resume;
pub mod rollback;
pub mod rollout;
pub mod runs;
pub mod service;
pub mod shell;
pub mod status;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use farm_inventory::Inventory;
use tokio::sync::watch;

use crate::exit::{CommandError, ExitStatus};
use crate::farm::{Farm, Transport};
use crate::operator::Operator;
use crate::report::Reporter;
use crate::run::RunEnv;

/// Global settings, resolved once from the flags and the environment.
#[derive(Clone)]
pub struct Settings {
    pub quiet: bool,
    /// Talk plaintext to agents (`--insecure`).
    pub insecure: bool,
    /// `--state-dir`, if given; see [`Settings::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// `--state-store` (or `FARMCTL_STATE_STORE`): run state on etcd.
    pub state_store: Option<String>,
    /// Where "now" comes from (maintenance windows).
    pub clock: Arc<dyn crate::window::Clock>,
    /// Where a run's progress goes (the binary picks bars or lines).
    pub reporter: Arc<dyn Reporter>,
}

impl Settings {
    /// The settings a command line gives, progress going to `reporter`.
    pub fn of(cli: &crate::cli::Cli, reporter: Arc<dyn Reporter>) -> Settings {
        let state = cli.state();
        Settings {
            quiet: cli.quiet,
            insecure: cli.insecure(),
            state_dir: state.state_dir,
            state_store: state.state_store,
            clock: crate::window::system_clock(),
            reporter,
        }
    }

    pub fn transport(&self) -> Transport {
        if self.insecure {
            Transport::Insecure { quiet: self.quiet }
        } else {
            Transport::Tls
        }
    }

    /// Where run journals live: `--state-dir`, else `$FARMCTL_STATE_DIR`,
    /// else the user's state directory.
    pub fn state_dir(&self) -> PathBuf {
        crate::journal::state_dir(self.state_dir.as_deref())
    }

    /// Loads the inventory and connects to its farm.
    pub fn farm(&self, inventory: &Path) -> Result<Farm, CommandError> {
        Farm::connect(load_inventory(inventory)?, self.transport())
    }

    /// What a run needs from here.
    pub fn run_env<'a>(
        &'a self,
        operator: &'a dyn Operator,
        stop: Option<watch::Receiver<bool>>,
    ) -> RunEnv<'a> {
        RunEnv {
            state_dir: self.state_dir(),
            state_store: self.state_store.clone(),
            takeover: false,
            failed: crate::run::FailedNodes::Unsaid,
            clock: self.clock.clone(),
            reporter: &*self.reporter,
            operator,
            stop,
        }
    }
}

pub fn load_inventory(path: &Path) -> Result<Inventory, CommandError> {
    Ok(farm_inventory::load(path)?)
}

/// `value` as JSON: pretty for `--output json`, one line for `jsonl`.
pub fn print_json(output: crate::cli::Output, value: &impl serde::Serialize) {
    let text = if output == crate::cli::Output::Jsonl {
        serde_json::to_string(value)
    } else {
        serde_json::to_string_pretty(value)
    };
    match text {
        Ok(s) => crate::outln!("{s}"),
        Err(e) => crate::errln!("farmctl: could not write JSON: {e}"),
    }
}

/// Runs `run` with Ctrl-C handled: the first finishes the nodes at work
/// and starts no other; the second exits at once, leaving the journal for
/// `farmctl resume`.
/// The first Ctrl-C is acknowledged at once through `reporter` (above the
/// progress bars on a terminal, a line or event otherwise).
pub async fn with_ctrl_c<T, F>(
    reporter: Arc<dyn Reporter>,
    run: impl FnOnce(watch::Receiver<bool>) -> F,
) -> T
where
    F: std::future::Future<Output = T>,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        reporter.note(
            "Ctrl-C: stopping after the nodes at work are done, no other node starts (Ctrl-C again to stop now)",
        );
        stop_tx.send_replace(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            crate::errln!(
                "farmctl: stopped at once; the journal is kept: `farmctl resume` continues the run"
            );
            std::process::exit(ExitStatus::Failed.code());
        }
    });
    let result = run(stop_rx).await;
    signals.abort();
    result
}
