//! Reading what users got from IIS's own records: the W3C access log
//! ([`w3c`]), the HTTP.sys error log ([`httperr`]) and the requests running
//! now ([`requests`], `appcmd list requests`), WAS's events ([`events`],
//! `wevtutil`) and the performance counters ([`counters`], `typeperf`). Parsers only, built from the
//! formats' documentation and verbatim samples; every column is mapped
//! from the file's own `#Fields` line, which may change mid-file.
pub mod counters;
pub mod events;
pub mod httperr;
pub mod requests;
pub mod tail;
pub mod w3c;
pub mod watch;
pub mod window;

/// A line of a log, without its line ending (CRLF or LF) and, on the
/// first line of a file, without a UTF-8 byte-order mark.
pub(crate) fn clean_line(line: &str) -> &str {
    line.trim_start_matches('\u{feff}')
        .trim_end_matches(['\r', '\n'])
}

/// `yyyy-mm-dd` and `hh:mm:ss` (UTC in both logs) as a timestamp.
pub(crate) fn utc(date: &str, time: &str) -> Option<jiff::Timestamp> {
    let civil: jiff::civil::DateTime = format!("{date}T{time}").parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// Directive lines: `#Fields: a b c` → the field names (runs of spaces
/// split, a trailing space ignored).
pub(crate) fn fields(directive: &str) -> Option<Vec<String>> {
    let rest = directive.strip_prefix("#Fields:")?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}
