//! Reading what users got from IIS's own records. The logs — the W3C
//! access log, the HTTP.sys error log, the tail that follows them and the
//! rolling window — are read by the `farm-traffic` crate, which `farmctl
//! logs` shares (re-exported here); the tools' outputs are read here: the
//! requests running now ([`requests`], `appcmd list requests`), WAS's
//! events ([`events`], `wevtutil`) and the performance counters
//! ([`counters`], `typeperf`). Parsers only, built from the formats'
//! documentation and the layouts real servers print.
pub mod counters;
pub mod events;
pub mod requests;
pub mod watch;

pub use farm_traffic::{httperr, malformed, tail, w3c, window};

/// A line of a tool's output, without its line ending (CRLF or LF) and,
/// on the first line, without a UTF-8 byte-order mark.
pub(crate) fn clean_line(line: &str) -> &str {
    farm_traffic::fields::clean_line(line)
}
