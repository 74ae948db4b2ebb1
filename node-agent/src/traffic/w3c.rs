//! The IIS W3C extended log: one line per request, written by HTTP.sys,
//! times in UTC whatever `localTimeRollover` says. `#Fields` decides the
//! column order and is written again mid-file (an IIS reset, a reboot,
//! 15 minutes without requests, a change of logged fields): each one
//! resets the column map for the lines after it. Data lines are split on
//! single spaces and must have as many tokens as there are fields; any
//! other line is counted as malformed, never shifted into place.
use super::{clean_line, fields, utc};

/// One request as the log has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cRequest {
    pub at: jiff::Timestamp,
    /// `s-sitename`: `W3SVC<id>` (or the site's name), when logged.
    pub site: Option<String>,
    pub method: Option<String>,
    pub uri_stem: Option<String>,
    /// `cs-host`, when logged.
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
    pub status: u16,
    /// `sc-substatus` (500.18 is status 500, substatus 18); `None` when
    /// the field is not logged.
    pub substatus: Option<u32>,
    pub win32_status: Option<u32>,
    /// `time-taken` in milliseconds; `None` when the field is not logged.
    pub time_taken_ms: Option<u64>,
}

/// What a stretch of log said besides its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct W3cStats {
    /// Lines that did not fit their `#Fields` (token count, an unreadable
    /// date, time or status), or came before any `#Fields`.
    pub malformed: u64,
    /// The fields a judgement needs that the current `#Fields` lacks
    /// (`time-taken`, `sc-substatus`): reported, never guessed.
    pub missing: Vec<&'static str>,
}

/// Reads a W3C log line by line; the column map lives across calls, so a
/// tail that reads a file in pieces keeps it.
#[derive(Debug, Clone, Default)]
pub struct W3cReader {
    columns: Option<Columns>,
    pub stats: W3cStats,
}

#[derive(Debug, Clone)]
struct Columns {
    count: usize,
    date: usize,
    time: usize,
    status: usize,
    site: Option<usize>,
    method: Option<usize>,
    stem: Option<usize>,
    host: Option<usize>,
    agent: Option<usize>,
    client: Option<usize>,
    substatus: Option<usize>,
    win32: Option<usize>,
    taken: Option<usize>,
}

impl Columns {
    fn from(names: &[String]) -> Option<Columns> {
        let at = |n: &str| names.iter().position(|f| f.eq_ignore_ascii_case(n));
        Some(Columns {
            count: names.len(),
            date: at("date")?,
            time: at("time")?,
            status: at("sc-status")?,
            site: at("s-sitename"),
            method: at("cs-method"),
            stem: at("cs-uri-stem"),
            host: at("cs-host"),
            agent: at("cs(User-Agent)"),
            client: at("c-ip"),
            substatus: at("sc-substatus"),
            win32: at("sc-win32-status"),
            taken: at("time-taken"),
        })
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if self.taken.is_none() {
            m.push("time-taken");
        }
        if self.substatus.is_none() {
            m.push("sc-substatus");
        }
        m
    }
}

/// `-` is the log's "no value".
fn value(tokens: &[&str], i: Option<usize>) -> Option<String> {
    let t = tokens.get(i?)?;
    (*t != "-").then(|| t.to_string())
}

impl W3cReader {
    /// One line: a request, or `None` (a directive, a blank or malformed
    /// line — counted).
    pub fn line(&mut self, raw: &str) -> Option<W3cRequest> {
        let line = clean_line(raw);
        if line.trim().is_empty() {
            return None;
        }
        if line.starts_with('#') {
            if let Some(names) = fields(line) {
                self.columns = Columns::from(&names);
                self.stats.missing = match &self.columns {
                    Some(c) => c.missing(),
                    None => vec!["date", "time", "sc-status"],
                };
            }
            return None;
        }
        let Some(c) = &self.columns else {
            self.stats.malformed += 1;
            return None;
        };
        let tokens: Vec<&str> = line.split(' ').collect();
        if tokens.len() != c.count {
            self.stats.malformed += 1;
            return None;
        }
        let parsed = (|| {
            Some(W3cRequest {
                at: utc(tokens[c.date], tokens[c.time])?,
                status: tokens[c.status].parse().ok()?,
                site: value(&tokens, c.site),
                method: value(&tokens, c.method),
                uri_stem: value(&tokens, c.stem),
                host: value(&tokens, c.host),
                user_agent: value(&tokens, c.agent),
                client_ip: value(&tokens, c.client),
                substatus: value(&tokens, c.substatus).and_then(|v| v.parse().ok()),
                win32_status: value(&tokens, c.win32).and_then(|v| v.parse().ok()),
                time_taken_ms: value(&tokens, c.taken).and_then(|v| v.parse().ok()),
            })
        })();
        if parsed.is_none() {
            self.stats.malformed += 1;
        }
        parsed
    }

    /// Every request of `text` (a whole file or a piece of one).
    pub fn read(&mut self, text: &str) -> Vec<W3cRequest> {
        text.split('\n').filter_map(|l| self.line(l)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_without_fields_is_malformed_and_a_missing_field_is_said() {
        let mut r = W3cReader::default();
        assert!(r
            .line("2022-01-22 00:00:01 1.2.3.4 GET / - 80 - 5.6.7.8 x - 200 0 0 31")
            .is_none());
        assert_eq!(r.stats.malformed, 1);
        r.line("#Fields: date time cs-method cs-uri-stem sc-status");
        assert_eq!(r.stats.missing, ["time-taken", "sc-substatus"]);
        let q = r.line("2022-01-22 00:00:01 GET / 503").unwrap();
        assert_eq!((q.status, q.substatus, q.time_taken_ms), (503, None, None));
    }
}
