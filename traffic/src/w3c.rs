//! The IIS W3C extended log: one line per request, written by HTTP.sys,
//! times in UTC whatever `localTimeRollover` says.
//!
//! `#Fields` decides the column order and is written again mid-file (an
//! IIS reset, a reboot, 15 minutes without requests, a change of logged
//! fields): each one resets the column map for the lines after it. Fields
//! are separated by runs of spaces; a line must have as many values as
//! `#Fields` names, else it is counted as malformed (by reason), never
//! shifted into place. A log without a `date` field (IIS 6, a custom field
//! selection) is dated by its `#Date` directive.
use crate::fields::{self, DateBlock, DateCache, SKIP};
use crate::malformed::{Malformed, Reason};

/// One request as the log has it, borrowing the line it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct W3cRequest<'a> {
    /// When it was logged, Unix seconds (UTC).
    pub second: i64,
    /// `s-sitename`: `W3SVC<id>` (or the site's name), when logged.
    pub site: Option<&'a str>,
    pub method: Option<&'a str>,
    pub uri_stem: Option<&'a str>,
    pub uri_query: Option<&'a str>,
    /// `cs-host`, when logged.
    pub host: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub client_ip: Option<&'a str>,
    pub status: u16,
    /// `sc-substatus` (500.18 is status 500, substatus 18); `None` when
    /// the field is not logged.
    pub substatus: Option<u32>,
    pub win32_status: Option<u32>,
    /// `time-taken` in milliseconds; `None` when the field is not logged.
    pub time_taken_ms: Option<u64>,
}

impl W3cRequest<'_> {
    pub fn at(&self) -> jiff::Timestamp {
        jiff::Timestamp::from_second(self.second).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
    }
}

/// What a stretch of log said besides its requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct W3cStats {
    /// Lines that could not be read, by reason.
    pub malformed: Malformed,
    /// The fields a judgement needs that the log lacks (`date` — when no
    /// `#Date` dates the lines either —, `time`, `sc-status`,
    /// `time-taken`, `sc-substatus`): reported, never guessed.
    pub missing: Vec<&'static str>,
    /// Data lines seen (read or not).
    pub lines: u64,
}

// The columns a reader keeps, as slots of one array.
const DATE: u8 = 0;
const TIME: u8 = 1;
const STATUS: u8 = 2;
const SITE: u8 = 3;
const METHOD: u8 = 4;
const STEM: u8 = 5;
const QUERY: u8 = 6;
const HOST: u8 = 7;
const AGENT: u8 = 8;
const CLIENT: u8 = 9;
const SUBSTATUS: u8 = 10;
const WIN32: u8 = 11;
const TAKEN: u8 = 12;
const SLOTS: usize = 13;

fn slot(name: &str) -> u8 {
    const NAMES: [(&str, u8); SLOTS] = [
        ("date", DATE),
        ("time", TIME),
        ("sc-status", STATUS),
        ("s-sitename", SITE),
        ("cs-method", METHOD),
        ("cs-uri-stem", STEM),
        ("cs-uri-query", QUERY),
        ("cs-host", HOST),
        ("cs(User-Agent)", AGENT),
        ("c-ip", CLIENT),
        ("sc-substatus", SUBSTATUS),
        ("sc-win32-status", WIN32),
        ("time-taken", TAKEN),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map_or(SKIP, |(_, s)| *s)
}

/// The columns of the `#Fields` in force.
#[derive(Debug, Clone)]
struct Columns {
    /// Token index → slot.
    map: Vec<u8>,
    has: [bool; SLOTS],
}

impl Columns {
    fn from(names: &[String]) -> Columns {
        let map: Vec<u8> = names.iter().map(|n| slot(n)).collect();
        let mut has = [false; SLOTS];
        for s in map.iter().filter(|s| **s != SKIP) {
            has[usize::from(*s)] = true;
        }
        Columns { map, has }
    }

    fn readable(&self) -> bool {
        self.has[usize::from(TIME)] && self.has[usize::from(STATUS)]
    }
}

/// Reads a W3C log line by line; the column map and the `#Date` in force
/// live across calls, so a tail that reads a file in pieces keeps them.
#[derive(Debug, Clone, Default)]
pub struct W3cReader {
    columns: Option<Columns>,
    date: DateBlock,
    dates: DateCache,
    pub stats: W3cStats,
}

fn value(v: &str) -> Option<&str> {
    (!v.is_empty() && v != "-").then_some(v)
}

impl W3cReader {
    /// Whether a `#Fields` line has been read (a tail started mid-file
    /// knows its columns only once it read back the directives).
    pub fn has_columns(&self) -> bool {
        self.columns.is_some()
    }

    fn update_missing(&mut self) {
        let mut m = Vec::new();
        if let Some(c) = &self.columns {
            if !c.has[usize::from(DATE)] && !self.date.known() {
                m.push("date");
            }
            for (s, name) in [
                (TIME, "time"),
                (STATUS, "sc-status"),
                (TAKEN, "time-taken"),
                (SUBSTATUS, "sc-substatus"),
            ] {
                if !c.has[usize::from(s)] {
                    m.push(name);
                }
            }
        }
        self.stats.missing = m;
    }

    /// One line (without its line end): a request, or `None` — a
    /// directive, a blank line or one that cannot be read (counted by
    /// reason).
    pub fn line<'a>(&mut self, raw: &'a str) -> Option<W3cRequest<'a>> {
        // A tail's lines come without their ends; a whole text's with.
        let line = if raw.ends_with(['\r', '\n']) || raw.starts_with('\u{feff}') {
            fields::clean_line(raw)
        } else {
            raw
        };
        if line.starts_with('#') {
            match fields::directive(line) {
                Some((name, value)) if name.eq_ignore_ascii_case("Fields") => {
                    self.columns = Some(Columns::from(&fields::field_names(value)));
                    self.update_missing();
                }
                Some((name, value)) if name.eq_ignore_ascii_case("Date") => {
                    self.date.set(value);
                    self.update_missing();
                }
                _ => {}
            }
            return None;
        }
        if line.is_empty() || (line.starts_with([' ', '\t']) && line.trim().is_empty()) {
            return None;
        }
        self.stats.lines += 1;
        match self.parse(line) {
            Ok(r) => Some(r),
            Err(reason) => {
                self.stats.malformed.add(reason, line);
                None
            }
        }
    }

    fn parse<'a>(&mut self, line: &'a str) -> Result<W3cRequest<'a>, Reason> {
        let c = match &self.columns {
            Some(c) if c.readable() => c,
            _ => return Err(Reason::NoFields),
        };
        let mut v = [""; SLOTS];
        if fields::split_fields(line, &c.map, &mut v) != c.map.len() {
            return Err(Reason::FieldCount);
        }
        let has = |s: u8| c.has[usize::from(s)];
        let time = fields::parse_time(v[usize::from(TIME)]).ok_or(Reason::BadTime)?;
        let status = fields::digits(v[usize::from(STATUS)])
            .and_then(|s| u16::try_from(s).ok())
            .ok_or(Reason::BadStatus)?;
        let second = if has(DATE) {
            let days = self
                .dates
                .days(v[usize::from(DATE)])
                .ok_or(Reason::BadDate)?;
            days * 86_400 + time
        } else {
            self.date.date(time).ok_or(Reason::NoDate)?
        };
        let get = |s: u8| value(v[usize::from(s)]);
        Ok(W3cRequest {
            second,
            status,
            site: get(SITE),
            method: get(METHOD),
            uri_stem: get(STEM),
            uri_query: get(QUERY),
            host: get(HOST),
            user_agent: get(AGENT),
            client_ip: get(CLIENT),
            substatus: get(SUBSTATUS)
                .and_then(fields::digits)
                .and_then(|x| u32::try_from(x).ok()),
            win32_status: get(WIN32)
                .and_then(fields::digits)
                .and_then(|x| u32::try_from(x).ok()),
            time_taken_ms: get(TAKEN).and_then(fields::digits),
        })
    }

    /// Every request of `text` (a whole file or a piece of whole lines).
    pub fn read<'a>(&mut self, text: &'a str) -> Vec<W3cRequest<'a>> {
        text.split('\n').filter_map(|l| self.line(l)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::malformed::Reason;

    #[test]
    fn a_row_without_fields_is_malformed_and_a_missing_field_is_said() {
        let mut r = W3cReader::default();
        assert!(r
            .line("2022-01-22 00:00:01 1.2.3.4 GET / - 80 - 5.6.7.8 x - 200 0 0 31")
            .is_none());
        assert_eq!(r.stats.malformed.count(Reason::NoFields), 1);
        r.line("#Fields: date time cs-method cs-uri-stem sc-status");
        assert_eq!(r.stats.missing, ["time-taken", "sc-substatus"]);
        let q = r.line("2022-01-22 00:00:01 GET / 503").unwrap();
        assert_eq!((q.status, q.substatus, q.time_taken_ms), (503, None, None));
    }

    #[test]
    fn only_what_is_missing_is_named() {
        let mut r = W3cReader::default();
        r.line("#Fields: time cs-uri-stem sc-status sc-substatus time-taken");
        assert_eq!(r.stats.missing, ["date"]);
        r.line("#Date: 2026-12-07 10:00:00");
        assert!(r.stats.missing.is_empty(), "{:?}", r.stats.missing);
        r.line("#Fields: date cs-uri-stem");
        assert_eq!(
            r.stats.missing,
            ["time", "sc-status", "time-taken", "sc-substatus"]
        );
        assert!(r.line("2026-12-07 /").is_none());
        assert_eq!(r.stats.malformed.count(Reason::NoFields), 1);
    }

    #[test]
    fn each_reason_is_counted_apart_and_the_latest_line_kept() {
        let mut r = W3cReader::default();
        r.line("#Fields: date time sc-status time-taken");
        for bad in [
            "2026-12-07 10:00:00 200",
            "2026-13-07 10:00:00 200 5",
            "2026-12-07 10:61:00 200 5",
            "2026-12-07 10:00:00 OK 5",
        ] {
            assert!(r.line(bad).is_none(), "{bad}");
        }
        let m = &r.stats.malformed;
        assert_eq!(
            m.by_reason().into_iter().collect::<Vec<_>>(),
            [
                ("bad_date", 1),
                ("bad_status", 1),
                ("bad_time", 1),
                ("field_count", 1)
            ]
        );
        assert_eq!(
            m.sample,
            Some((Reason::BadStatus, "2026-12-07 10:00:00 OK 5".into()))
        );
        assert_eq!(r.stats.lines, 4);
    }
}
