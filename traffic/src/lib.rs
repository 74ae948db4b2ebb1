//! What users got, read from IIS's own records as real servers write them.
//!
//! # Layout
//! - [`fields`]: the pieces every log shares — line ends and BOM, the
//!   directives (`#Fields`, `#Date`), fields split on runs of spaces, UTC
//!   dates and times read without allocating.
//! - [`malformed`]: lines that cannot be read, counted by reason, one
//!   kept to quote.
//! - [`lines`]: bytes into whole lines, a line longer than
//!   [`lines::MAX_LINE`] dropped and counted, so memory stays bounded.
//! - [`w3c`] and [`httperr`]: the W3C access log and the HTTP.sys error
//!   log, every column mapped from the file's own `#Fields`.
//! - [`names`]: which log file is which (daily, hourly, weekly, monthly,
//!   size-rolled; `httperrN`), and their order.
//! - [`tail`]: a log folder followed as IIS writes it, right from any
//!   starting point: the directives in force where it starts are read
//!   back, every file that grows is read, a truncation starts over.
//! - [`window`]: the rolling per-second window the agent keeps.
//! - [`summary`]: the same figures over any stretch of copied logs
//!   (`farmctl logs`).
//!
//! The agent's Traffic call and `farmctl logs` run this one computation.
#![forbid(unsafe_code)]

pub mod fields;
pub mod httperr;
pub mod lines;
pub mod malformed;
pub mod names;
pub mod summary;
pub mod tail;
pub mod w3c;
pub mod window;

pub use farm_proto::latency::{Histogram, QUANTILE_ERROR};
