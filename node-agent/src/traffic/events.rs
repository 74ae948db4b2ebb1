//! `wevtutil qe System /q:"*[System[Provider[@Name='Microsoft-Windows-WAS']]]"
//! /c:N /rd:true /f:text`: WAS's events about application pools, in the
//! layouts Windows prints:
//!
//! - **Server 2019** and earlier: `Event[0]:`, then two-space-indented
//!   `Key: Value` lines, `Date:` in local time with three decimals and no
//!   zone, `Description:` alone on its line and the text after it at
//!   column 0.
//! - **Server 2022**: `Event[0]` without the colon, `Task`, `Level`,
//!   `Opcode`, `Keyword` and `User` merged on one line separated by `?`,
//!   `Date:` in UTC with seven decimals and `Z`, and the description's
//!   text possibly on the `Description:` line itself.
//!
//! Records start at their `Event[<n>]` line (never split on blank lines:
//! the description is free text that may hold blank lines and `Key:
//! Value` lookalikes). Values may be localized (`Level: Сведения`); the
//! event id and the date are numbers and are read as such. A record whose
//! event id cannot be read is counted, never dropped in silence. The pool
//! and process id come from the description, whose templates quote the
//! pool (`application pool '%1'`) — or not, in Event Viewer's copies — so
//! both are read.
pub use crate::iis::WasEvent;

/// What an output held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// Newest first with `/rd:true`.
    pub events: Vec<WasEvent>,
    /// Records that could not be read (no event id).
    pub unreadable: usize,
}

/// Every event of the output, in its order; local dates (no zone) are
/// the server's, in `zone`.
pub fn parse_in(text: &str, zone: &jiff::tz::TimeZone) -> Events {
    let mut out = Events::default();
    let mut current: Option<Vec<&str>> = None;
    let flush = |lines: Vec<&str>, out: &mut Events| match record(&lines, zone) {
        Some(e) => out.events.push(e),
        None => out.unreadable += 1,
    };
    for line in text.lines().map(super::clean_line) {
        if is_record_start(line) {
            if let Some(lines) = current.take() {
                flush(lines, &mut out);
            }
            current = Some(Vec::new());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if let Some(lines) = current {
        flush(lines, &mut out);
    }
    out
}

/// [`parse_in`] with the zone of the machine the agent runs on (the
/// server whose log it is).
pub fn parse(text: &str) -> Events {
    parse_in(text, &jiff::tz::TimeZone::system())
}

fn is_record_start(line: &str) -> bool {
    let line = line.trim_end();
    line.strip_prefix("Event[")
        .map(|r| r.strip_suffix(':').unwrap_or(r))
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A label: words of letters (any script), spaces, `-` and `.`.
fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_alphabetic() || c == ' ' || c == '-' || c == '.')
}

/// The record's fields in order, `?`-merged lines split, up to and with
/// `Description`; and the description's text.
fn fields_and_text<'a>(lines: &[&'a str]) -> (Vec<(&'a str, &'a str)>, String) {
    let mut fields = Vec::new();
    let mut text: Vec<&str> = Vec::new();
    let mut in_text = false;
    for line in lines {
        if in_text {
            text.push(line.trim());
            continue;
        }
        let Some(body) = line.strip_prefix("  ") else {
            // Column 0 before any description label: free text.
            in_text = true;
            text.push(line.trim());
            continue;
        };
        // Server 2022 merges fields on one line with `?`: split only a
        // line whose every piece is `Label: value` (a description may hold
        // a `?`).
        let pieces: Vec<&str> = body.split('?').collect();
        let merged = pieces.len() > 1
            && pieces
                .iter()
                .all(|p| p.split_once(':').is_some_and(|(k, _)| is_label(k.trim())));
        let parts = if merged { pieces } else { vec![body] };
        for piece in parts {
            let Some((key, value)) = piece.split_once(':') else {
                continue;
            };
            let key = key.trim();
            if !is_label(key) {
                continue;
            }
            fields.push((key, value.trim()));
            if key.eq_ignore_ascii_case("Description") {
                in_text = true;
                let value = value.trim();
                if !value.is_empty() {
                    text.push(value);
                }
            }
        }
    }
    let text = text.join(" ").trim().to_string();
    (fields, text)
}

/// `2024-01-31T04:26:39.0170000Z` (UTC) or `2020-12-14T17:09:08.940`
/// (local time of `zone`) as an instant.
pub fn event_time(date: &str, zone: &jiff::tz::TimeZone) -> Option<jiff::Timestamp> {
    let date = date.trim();
    if let Some(utc) = date.strip_suffix('Z') {
        let civil: jiff::civil::DateTime = utc.parse().ok()?;
        return civil
            .to_zoned(jiff::tz::TimeZone::UTC)
            .ok()
            .map(|z| z.timestamp());
    }
    if let Ok(t) = date.parse::<jiff::Timestamp>() {
        return Some(t); // an explicit offset
    }
    let civil: jiff::civil::DateTime = date.parse().ok()?;
    civil.to_zoned(zone.clone()).ok().map(|z| z.timestamp())
}

fn record(lines: &[&str], zone: &jiff::tz::TimeZone) -> Option<WasEvent> {
    let (fields, message) = fields_and_text(lines);
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.to_string())
    };
    // The id by its label; labels localized: the first all-digit value
    // after the date (the layout's order is Log Name, Source, Date,
    // Event ID).
    let id: u32 = match field("Event ID") {
        Some(v) => v.parse().ok()?,
        None => fields
            .iter()
            .skip_while(|(_, v)| event_time(v, zone).is_none())
            .skip(1)
            .find_map(|(_, v)| v.parse().ok())?,
    };
    let level = field("Level").unwrap_or_default();
    let raw_date = field("Date").or_else(|| {
        fields
            .iter()
            .find(|(_, v)| event_time(v, zone).is_some())
            .map(|(_, v)| v.to_string())
    });
    // Kept as an instant (RFC 3339, UTC) when it reads as one.
    let date = match raw_date {
        Some(d) => event_time(&d, zone).map_or(d, |t| t.to_string()),
        None => String::new(),
    };
    Some(WasEvent {
        id,
        level,
        date,
        pool: pool_of(&message),
        pid: pid_of(&message),
        message,
    })
}

/// `application pool 'Shop'` or `application pool Shop`.
fn pool_of(message: &str) -> Option<String> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("application pool ")? + "application pool ".len();
    let rest = &message[at..];
    let name = match rest.strip_prefix('\'') {
        Some(quoted) => quoted.split('\'').next()?,
        None => rest.split_whitespace().next()?,
    };
    let name = name.trim_end_matches(['.', ',']);
    (!name.is_empty()).then(|| name.to_string())
}

/// `The process id was '1111'.` or `process id of '4242'`.
fn pid_of(message: &str) -> Option<u32> {
    let lower = message.to_ascii_lowercase();
    let at = lower.find("process id ")? + "process id ".len();
    message[at..]
        .split_whitespace()
        .filter(|w| *w != "was" && *w != "of")
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()))
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's verbatim `wevtutil qe ... /f:text` record layout
    /// (TryHackMe write-up), with a WAS event after it built from the
    /// documented 5002 and 5009 templates in the same layout.
    const TEXT: &str = "Event[0]:\r\n  Log Name: System\r\n  Source: Microsoft-Windows-WAS\r\n  Date: 2024-01-31T04:26:39.0170000Z\r\n  Event ID: 5002\r\n  Task: None\r\n  Level: Error\r\n  Opcode: Info\r\n  Keyword: Classic\r\n  User: N/A\r\n  User Name: N/A\r\n  Computer: WEB01\r\n  Description:\r\nApplication pool 'ShopPool' is being automatically disabled due to a series of failures in the process(es) serving that application pool.\r\n\r\nEvent[1]:\r\n  Log Name: System\r\n  Source: Microsoft-Windows-WAS\r\n  Date: 2020-12-14T17:09:08.940\r\n  Event ID: 5009\r\n  Task: None\r\n  Level: Warning\r\n  Opcode: Info\r\n  Keyword: Classic\r\n  User: N/A\r\n  User Name: N/A\r\n  Computer: WEB01\r\n  Description:\r\nA process serving application pool 'ShopPool' terminated unexpectedly. The process id was '4242'. The process exit code was '0xc0000005'.\r\n\r\nLevel: not a field\r\n\r\nEvent[2]:\r\n  Log Name: Application\r\n  Source: WLMS\r\n  Date: 2020-12-14T17:09:08.940\r\n  Event ID: 100\r\n  Task: None\r\n  Level: Information\r\n  Opcode: Info\r\n  Keyword: Classic\r\n  User: N/A\r\n  User Name: N/A\r\n  Computer: WIN-1O0UJBNP9G7\r\n  Description:\r\nN/A\r\n";

    fn utc(text: &str) -> Events {
        parse_in(text, &jiff::tz::TimeZone::UTC)
    }

    #[test]
    fn records_split_on_their_header_not_on_blank_lines() {
        let e = utc(TEXT).events;
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].id, 5002);
        assert!(e[0].rapid_fail());
        assert_eq!(e[0].pool.as_deref(), Some("ShopPool"));
        assert_eq!(e[0].level, "Error");
        assert_eq!(e[0].date, "2024-01-31T04:26:39.017Z");
        assert_eq!(e[1].id, 5009);
        assert_eq!(e[1].pid, Some(4242));
        // A description line that looks like a field stays in the text.
        assert!(
            e[1].message.ends_with("Level: not a field"),
            "{}",
            e[1].message
        );
        assert_eq!(e[2].id, 100);
        assert_eq!(e[2].message, "N/A");
        assert_eq!(e[2].pool, None);
    }

    #[test]
    fn an_unquoted_pool_of_an_event_viewer_copy_is_read() {
        // KB 2634635's 5013 text, verbatim (no quotes around the name).
        let m = "A process serving application pool DefaultAppPool exceeded time limits during shut down. The process id was 1111.";
        assert_eq!(pool_of(m).as_deref(), Some("DefaultAppPool"));
        assert_eq!(pid_of(m), Some(1111));
        // 5074: pid first, pool second.
        let m = "A worker process with process id of '4242' serving application pool 'Shop' has requested a recycle because the worker process reached its allowed processing time limit.";
        assert_eq!(pool_of(m).as_deref(), Some("Shop"));
        assert_eq!(pid_of(m), Some(4242));
    }

    #[test]
    fn no_events_and_garbage_give_nothing() {
        assert_eq!(utc(""), Events::default());
        assert_eq!(utc("INFO: No events were found.\r\n"), Events::default());
        assert_eq!(utc("Event[x]:\n  Event ID: 5002\n"), Events::default());
        // A record without a readable id is counted, not dropped in silence.
        let e = utc("Event[0]:\n  Log Name: System\n  Event ID: five\n");
        assert_eq!((e.events.len(), e.unreadable), (0, 1));
    }

    /// Windows Server 2022's layout, written here as it prints it: no
    /// colon after `Event[n]`, five fields merged with `?`, the date in
    /// UTC with seven decimals, the description on its label's line.
    const SERVER_2022: &str = "Event[0]\r\n  Log Name: System\r\n  Source: Microsoft-Windows-WAS\r\n  Date: 2026-12-07T03:14:15.1234567Z\r\n  Event ID: 5002\r\n  Task: N/A?Level: Error?Opcode: Info?Keyword: Classic?User: N/A\r\n  User Name: N/A\r\n  Computer: WEB01.corp.example\r\n  Description: Application pool 'ShopPool' is being automatically disabled due to a series of failures in the process(es) serving that application pool.\r\n\r\nEvent[1]\r\n  Log Name: System\r\n  Source: Microsoft-Windows-WAS\r\n  Date: 2026-12-07T03:14:01.0000000Z\r\n  Event ID: 5009\r\n  Task: N/A?Level: Warning?Opcode: Info?Keyword: Classic?User: N/A\r\n  User Name: N/A\r\n  Computer: WEB01.corp.example\r\n  Description: A process serving application pool 'ShopPool' terminated unexpectedly. The process id was '4242'. The process exit code was '0xc0000005'.\r\n";

    #[test]
    fn the_server_2022_layout_is_read_whole() {
        let text = SERVER_2022.replace("'4242'.", "'4242'? Really.");
        let e = utc(&text);
        assert_eq!(e.unreadable, 0);
        assert_eq!(e.events.len(), 2);
        let rf = &e.events[0];
        assert!(rf.rapid_fail());
        assert_eq!(rf.level, "Error");
        assert_eq!(rf.pool.as_deref(), Some("ShopPool"));
        assert!(
            rf.message
                .starts_with("Application pool 'ShopPool' is being"),
            "{}",
            rf.message
        );
        assert_eq!(rf.date, "2026-12-07T03:14:15.1234567Z");
        assert_eq!((e.events[1].id, e.events[1].pid), (5009, Some(4242)));
        assert!(
            e.events[1].message.contains("'4242'? Really."),
            "{}",
            e.events[1].message
        );
    }

    /// Server 2019 prints local time without a zone: it is the server's.
    #[test]
    fn a_local_date_is_read_in_the_servers_zone() {
        let text = "Event[0]:\n  Log Name: System\n  Source: Microsoft-Windows-WAS\n  Date: 2026-07-01T10:00:00.500\n  Event ID: 5010\n  Task: None\n  Level: Warning\n  Description:\nA process serving application pool 'Api' failed to respond to a ping. The process id was '77'.\n";
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        let e = parse_in(text, &berlin).events;
        assert_eq!(e[0].date, "2026-07-01T08:00:00.5Z", "summer time, UTC+2");
        assert_eq!((e[0].pool.as_deref(), e[0].pid), (Some("Api"), Some(77)));
    }

    /// Labels in another language: the id is still found by the layout's
    /// order, the values kept as printed.
    #[test]
    fn localized_labels_and_values() {
        let text = "Event[0]:\n  Protokollname: System\n  Quelle: Microsoft-Windows-WAS\n  Datum: 2026-12-07T03:14:15.0000000Z\n  Ereignis-ID: 5002\n  Ebene: Fehler\n  Beschreibung:\nApplication pool 'Shop' is being automatically disabled.\n";
        let e = utc(text);
        assert_eq!(e.unreadable, 0);
        assert_eq!(e.events[0].id, 5002);
        assert_eq!(e.events[0].date, "2026-12-07T03:14:15Z");
        assert_eq!(e.events[0].pool.as_deref(), Some("Shop"));
    }
}
