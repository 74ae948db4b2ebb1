//! `farmctl`: rolling app-pool recycles and IIS resets across an IIS farm.
//!
//! # Layout
//! - [`cli`]: argument structs; [`commands`]: one file per subcommand.
//! - [`rollout`]: the pure per-node state machine, batch planning and the
//!   engine that drives them.
//! - [`agent`]: the agent client trait and its gRPC implementation.
//! - [`lb`]: load balancer drivers; [`probe`]: HTTP health probes.
//! - [`preflight`]: checks before anything is touched.
//! - [`report`]: run reports and the `Reporter` trait; [`progress`]: its
//!   line and progress-bar implementations.
//! - [`sandbox`]: a simulated farm of real agent processes (demo, tests);
//!   [`traffic`]: an HTTP load generator.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod commands;
pub mod exit;
pub mod journal;
pub mod lb;
pub mod lease;
pub mod preflight;
pub mod probe;
pub mod progress;
pub mod report;
pub mod rollout;
pub mod sandbox;
pub mod traffic;
pub mod window;

/// Logs to stderr at `default_level`; `RUST_LOG` overrides.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
