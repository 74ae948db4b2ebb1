//! `wevtutil qe System /q:"*[System[Provider[@Name='Microsoft-Windows-WAS']]]"
//! /c:N /rd:true /f:text`: WAS's events about application pools. Records
//! start at `Event[<n>]:` lines (never split on blank lines: the
//! description is free text at column 0 that may hold blank lines and
//! `Key: Value` lookalikes); fields are two-space-indented `Key: Value`.
//! The pool and process id come from the description, whose templates
//! quote the pool (`application pool '%1'`) — or not, in Event Viewer's
//! copies — so both are read.
pub use crate::iis::WasEvent;

/// Every event of the output, in its order (newest first with `/rd:true`).
pub fn parse(text: &str) -> Vec<WasEvent> {
    let mut out = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in text.lines().map(super::clean_line) {
        if is_record_start(line) {
            if let Some(lines) = current.take() {
                out.extend(record(&lines));
            }
            current = Some(Vec::new());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if let Some(lines) = current {
        out.extend(record(&lines));
    }
    out
}

fn is_record_start(line: &str) -> bool {
    line.strip_prefix("Event[")
        .and_then(|r| r.strip_suffix("]:"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn record(lines: &[&str]) -> Option<WasEvent> {
    let field = |key: &str| -> Option<String> {
        lines
            .iter()
            .take_while(|l| l.trim() != "Description:")
            .find_map(|l| {
                l.strip_prefix("  ")?
                    .strip_prefix(key)?
                    .strip_prefix(':')
                    .map(|v| v.trim().to_string())
            })
    };
    let id = field("Event ID")?.parse().ok()?;
    let level = field("Level").unwrap_or_default();
    let date = field("Date").unwrap_or_default();
    let message = lines
        .iter()
        .skip_while(|l| l.trim() != "Description:")
        .skip(1)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_string();
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

    #[test]
    fn records_split_on_their_header_not_on_blank_lines() {
        let e = parse(TEXT);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].id, 5002);
        assert!(e[0].rapid_fail());
        assert_eq!(e[0].pool.as_deref(), Some("ShopPool"));
        assert_eq!(e[0].level, "Error");
        assert_eq!(e[0].date, "2024-01-31T04:26:39.0170000Z");
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
        assert!(parse("").is_empty());
        assert!(parse("INFO: No events were found.\r\n").is_empty());
        assert!(parse("Event[x]:\n  Event ID: 5002\n").is_empty());
    }
}
