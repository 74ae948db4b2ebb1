//! The HTTP.sys error log (`HTTPERR\httperr<N>.log`): what never reached
//! the W3C log — 503s of a stopped or rapid-fail-disabled pool
//! (`AppOffline`), a full queue (`QueueFull`), a worker that died with
//! requests (`Connection_Abandoned_By_AppPool`), timeouts. Columns come
//! from `#Fields`, which varies between Windows versions (`streamid` and
//! more); `s-siteid` and `s-queuename` (the app pool) are optional. Fields
//! are split on runs of spaces, as in the W3C log.
use crate::fields::{self, DateBlock, DateCache, SKIP};
use crate::malformed::{Malformed, Reason};

/// One HTTP.sys error, borrowing its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpErr<'a> {
    /// Unix seconds (UTC).
    pub second: i64,
    /// `s-reason`: `AppOffline`, `QueueFull`, `Timer_ConnectionIdle`, ...
    pub reason: &'a str,
    /// The status sent, when one was (`-` for a connection-level event).
    pub status: Option<u16>,
    pub site_id: Option<&'a str>,
    /// `s-queuename`: the application pool's request queue.
    pub queue: Option<&'a str>,
    pub uri: Option<&'a str>,
}

impl HttpErr<'_> {
    pub fn at(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }

    /// Reasons that say nothing about the application (an idle
    /// connection expiring, a client going away).
    pub fn benign(&self) -> bool {
        matches!(
            self.reason,
            "Timer_ConnectionIdle"
                | "Client_Reset"
                | "Connection_Dropped"
                | "Timer_MinBytesPerSecond"
        )
    }
}

const DATE: u8 = 0;
const TIME: u8 = 1;
const REASON: u8 = 2;
const STATUS: u8 = 3;
const SITE: u8 = 4;
const QUEUE: u8 = 5;
const URI: u8 = 6;
const SLOTS: usize = 7;

fn slot(name: &str) -> u8 {
    const NAMES: [(&str, u8); SLOTS] = [
        ("date", DATE),
        ("time", TIME),
        ("s-reason", REASON),
        ("sc-status", STATUS),
        ("s-siteid", SITE),
        ("s-queuename", QUEUE),
        ("cs-uri", URI),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or(SKIP, |(_, s)| *s)
}

/// Reads an error log line by line (the column map and `#Date` kept
/// across calls).
#[derive(Debug, Clone, Default)]
pub struct HttpErrReader {
    map: Option<Vec<u8>>,
    date: DateBlock,
    dates: DateCache,
    pub malformed: Malformed,
    pub lines: u64,
}

fn value(v: &str) -> Option<&str> {
    (!v.is_empty() && v != "-").then_some(v)
}

impl HttpErrReader {
    pub fn has_columns(&self) -> bool {
        self.map.is_some()
    }

    pub fn line<'a>(&mut self, raw: &'a str) -> Option<HttpErr<'a>> {
        let line = fields::clean_line(raw);
        if line.starts_with('#') {
            match fields::directive(line) {
                Some((name, value)) if name.eq_ignore_ascii_case("Fields") => {
                    self.map = Some(fields::field_names(value).iter().map(|n| slot(n)).collect());
                }
                Some((name, value)) if name.eq_ignore_ascii_case("Date") => self.date.set(value),
                _ => {}
            }
            return None;
        }
        if line.trim().is_empty() {
            return None;
        }
        self.lines += 1;
        match self.parse(line) {
            Ok(e) => Some(e),
            Err(reason) => {
                self.malformed.add(reason, line);
                None
            }
        }
    }

    fn parse<'a>(&mut self, line: &'a str) -> Result<HttpErr<'a>, Reason> {
        let map = match &self.map {
            Some(m) if m.contains(&TIME) && m.contains(&REASON) => m,
            _ => return Err(Reason::NoFields),
        };
        let mut v = [""; SLOTS];
        if fields::split_fields(line, map, &mut v) != map.len() {
            return Err(Reason::FieldCount);
        }
        let time = fields::parse_time(v[usize::from(TIME)]).ok_or(Reason::BadTime)?;
        let second = if map.contains(&DATE) {
            self.dates
                .days(v[usize::from(DATE)])
                .ok_or(Reason::BadDate)?
                * 86_400
                + time
        } else {
            self.date.date(time).ok_or(Reason::NoDate)?
        };
        let get = |s: u8| value(v[usize::from(s)]);
        Ok(HttpErr {
            second,
            reason: v[usize::from(REASON)],
            status: get(STATUS).and_then(|s| s.parse().ok()),
            site_id: get(SITE),
            queue: get(QUEUE),
            uri: get(URI),
        })
    }

    pub fn read<'a>(&mut self, text: &'a str) -> Vec<HttpErr<'a>> {
        text.split('\n').filter_map(|l| self.line(l)).collect()
    }
}
