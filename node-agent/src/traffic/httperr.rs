//! The HTTP.sys error log (`HTTPERR\httperr<N>.log`): what never reached
//! the W3C log — 503s of a stopped or rapid-fail-disabled pool
//! (`AppOffline`), a full queue (`QueueFull`), a worker that died with
//! requests (`Connection_Abandoned_By_AppPool`), timeouts. Columns come
//! from `#Fields`, which varies between Windows versions (`streamid` and
//! more); `s-siteid` and `s-queuename` (the app pool) are optional.
use super::{clean_line, fields, utc};

/// One HTTP.sys error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpErr {
    pub at: jiff::Timestamp,
    /// `s-reason`: `AppOffline`, `QueueFull`, `Timer_ConnectionIdle`, ...
    pub reason: String,
    /// The status sent, when one was (`-` for a connection-level event).
    pub status: Option<u16>,
    pub site_id: Option<String>,
    /// `s-queuename`: the application pool's request queue.
    pub queue: Option<String>,
    pub uri: Option<String>,
}

impl HttpErr {
    /// Reasons that say nothing about the application (an idle
    /// connection expiring, a client going away).
    pub fn benign(&self) -> bool {
        matches!(
            self.reason.as_str(),
            "Timer_ConnectionIdle"
                | "Client_Reset"
                | "Connection_Dropped"
                | "Timer_MinBytesPerSecond"
        )
    }
}

#[derive(Debug, Clone)]
struct Columns {
    count: usize,
    date: usize,
    time: usize,
    reason: usize,
    status: Option<usize>,
    site: Option<usize>,
    queue: Option<usize>,
    uri: Option<usize>,
}

/// Reads an error log line by line (the column map kept across calls).
#[derive(Debug, Clone, Default)]
pub struct HttpErrReader {
    columns: Option<Columns>,
    pub malformed: u64,
}

fn value(tokens: &[&str], i: Option<usize>) -> Option<String> {
    let t = tokens.get(i?)?;
    (*t != "-").then(|| t.to_string())
}

impl HttpErrReader {
    pub fn line(&mut self, raw: &str) -> Option<HttpErr> {
        let line = clean_line(raw);
        if line.trim().is_empty() {
            return None;
        }
        if line.starts_with('#') {
            if let Some(names) = fields(line) {
                let at = |n: &str| names.iter().position(|f| f.eq_ignore_ascii_case(n));
                self.columns = (|| {
                    Some(Columns {
                        count: names.len(),
                        date: at("date")?,
                        time: at("time")?,
                        reason: at("s-reason")?,
                        status: at("sc-status"),
                        site: at("s-siteid"),
                        queue: at("s-queuename"),
                        uri: at("cs-uri"),
                    })
                })();
            }
            return None;
        }
        let Some(c) = &self.columns else {
            self.malformed += 1;
            return None;
        };
        let tokens: Vec<&str> = line.split(' ').collect();
        let parsed = (tokens.len() == c.count)
            .then(|| {
                Some(HttpErr {
                    at: utc(tokens[c.date], tokens[c.time])?,
                    reason: tokens.get(c.reason)?.to_string(),
                    status: value(&tokens, c.status).and_then(|s| s.parse().ok()),
                    site_id: value(&tokens, c.site),
                    queue: value(&tokens, c.queue),
                    uri: value(&tokens, c.uri),
                })
            })
            .flatten();
        if parsed.is_none() {
            self.malformed += 1;
        }
        parsed
    }

    pub fn read(&mut self, text: &str) -> Vec<HttpErr> {
        text.split('\n').filter_map(|l| self.line(l)).collect()
    }
}
