//! `farmctl`: rolling app-pool recycles and IIS resets across an IIS farm.
//!
//! # Layout
//! - [`cli`]: argument structs; [`commands`]: one file per subcommand,
//!   thin: flags → settings → the library.
//! - [`run`]: the run contract ([`run::RunSettings`]), starting a run and
//!   resuming one.
//! - [`rollout`]: the pure per-node state machine, the capacity check, the
//!   scheduler and the per-node driver.
//! - [`farm`]: the inventory with its agents and load balancer;
//!   [`observe`]: what every node looks like, and the one definition of
//!   "serving"; [`preflight`]; [`quiesce`]: the two-sided drain check.
//! - [`agent`]: the agent client trait and its gRPC implementation;
//!   [`lb`]: load balancer drivers; [`probe`]: HTTP health probes.
//! - [`journal`]: the crash-safe run journal; [`lease`]: the farm's leases;
//!   [`window`]: maintenance windows; [`operator`]: confirmations.
//! - [`report`]: run reports and the `Reporter` trait.
//! - [`logs`]: `farmctl logs`, the logs copied off the servers read by the
//!   agent's own readers and judged by the same rule as `status`.
//! - [`sandbox`]: a simulated farm of real agent processes (demo, tests,
//!   benchmarks); [`traffic`]: an HTTP load generator; [`certfiles`]: the
//!   farm's certificate files; [`release`]: release packages; [`secret`]:
//!   passwords named in the inventory, never printed.
//! - `testing` (tests and the `test-util` feature): fakes of the agent,
//!   the load balancer and the clock.
#![forbid(unsafe_code)]

/// `print!` that never panics: a closed stdout (`farmctl ... | head -1`)
/// must not stop a run with nodes out of rotation, so what cannot be
/// written is dropped and the run goes on.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::__say!(stdout, write, $($arg)*) };
}

/// `println!` that never panics (see [`out!`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::__say!(stdout, writeln, $($arg)*) };
}

/// `eprint!` that never panics (see [`out!`]).
#[macro_export]
macro_rules! err {
    ($($arg:tt)*) => { $crate::__say!(stderr, write, $($arg)*) };
}

/// `eprintln!` that never panics (see [`out!`]).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::__say!(stderr, writeln, $($arg)*) };
}

/// The one body of [`out!`], [`outln!`], [`err!`] and [`errln!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __say {
    ($stream:ident, $how:ident, $($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = $how!(std::io::$stream().lock(), $($arg)*);
    }};
}

pub mod agent;
pub mod capacity;
pub mod certfiles;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod contract;
pub mod exit;
pub mod farm;
pub mod guard;
pub mod health;
pub mod human;
pub mod journal;
pub mod judge;
pub mod lb;
pub mod lease;
pub mod logs;
pub mod machine;
pub mod notify;
pub mod observe;
pub mod operator;
pub mod preflight;
pub mod probe;
pub mod quiesce;
pub mod release;
pub mod report;
pub mod rollout;
pub mod run;
pub mod sandbox;
pub mod secret;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod timeline;
pub mod traffic;
pub mod window;

/// Logs to stderr at `default_level`; `RUST_LOG` overrides.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only for a terminal, never with NO_COLOR: logs redirected to
    // a file stay plain.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .init();
}
