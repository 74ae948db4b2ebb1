//! The audit log: one JSON line per request (and per rejected TLS
//! handshake), appended and flushed before the answer goes out.
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

pub struct Audit {
    file: Mutex<std::fs::File>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Entry {
    /// RFC 3339, UTC.
    pub time: String,
    /// Client certificate subject CN (`insecure` without TLS).
    pub identity: String,
    pub role: Option<String>,
    pub peer: Option<String>,
    /// `Status`, `Recycle`, ..., or `tls-handshake`.
    pub call: String,
    pub pools: Vec<String>,
    pub operation_id: Option<String>,
    /// `ok`, `denied: ...`, `invalid: ...`, `failed: ...`, `rejected: ...`.
    pub outcome: String,
    pub duration_ms: u64,
    /// What a deployment call was about (site, version, hooks and their
    /// output), when it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Audit {
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Audit {
            file: Mutex::new(file),
        })
    }

    pub fn record(&self, entry: &Entry) {
        let Ok(line) = serde_json::to_string(entry) else {
            return;
        };
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if writeln!(f, "{line}").and_then(|_| f.flush()).is_err() {
            tracing::error!("could not write the audit log");
        }
    }
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Names as they go into the log: bounded and escaped.
pub fn clean(s: &str) -> String {
    let t: String = s.chars().take(80).collect();
    t.escape_debug().to_string()
}

/// Elapsed milliseconds.
pub fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}
