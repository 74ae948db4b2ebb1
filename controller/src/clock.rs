//! The wall clock as records and reports write it. A module of its own so
//! that the journal, reports, events and the store share it without
//! depending on each other.
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, RFC 3339 in UTC with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Now, in milliseconds since the Unix epoch (the agents' lease times).
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
