//! `farm-agent`: the agent on every IIS server of a farm.
//!
//! # Layout
//! - [`iis`]: the `Iis` trait (primitive IIS operations) and its types.
//! - [`ops`]: the verified recycle and the safe reset, built from those
//!   primitives and shared by every backend.
//! - [`sim`]: the simulator backend, a fake IIS serving real HTTP.
//! - [`deploy`]: releases of a site's content: staging uploads, switching
//!   the site to one, hooks, pruning.
//! - [`service`], [`idempotency`], [`convert`]: the gRPC service, the
//!   operation-id records (a repeated id answers the first result) and the
//!   wire conversions.
//! - [`config`]: the agent's config file; [`runner`]: the argv-only process
//!   runner (IIS tools, deploy hooks, LB member scripts);
//!   [`connections`]: who holds the agent's connections.
//! - [`server`]: `run(listener, ..., shutdown)`.
//! - [`state`]: the state directory: operation records and the lease,
//!   which outlive the process.
#![forbid(unsafe_code)]

pub mod agent;
pub mod audit;
pub mod config;
pub mod connections;
pub mod convert;
pub mod deploy;
pub mod dump;
pub mod idempotency;
/// The `Iis` trait (its own crate, shared with the simulator's).
pub use farm_iis as iis;
pub mod iiscmd;
pub mod lbmember;
pub mod lease;
pub mod metrics;
pub mod ops;
pub mod patch;
pub mod runner;
pub mod security;
pub mod selfprobe;
pub mod server;
pub mod service;
/// The simulator backend (its own crate, `farm-sim`).
pub use farm_sim as sim;
pub mod state;
pub mod traffic;
