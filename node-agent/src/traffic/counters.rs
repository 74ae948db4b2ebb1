//! One-shot `typeperf "<counter>"... -sc 1`: CSV, every cell quoted, a
//! header `"(PDH-CSV 4.0)[ (zone)(bias)]","\\HOST\Object(Instance)\Counter",...`,
//! one data row (a local timestamp, then values with 6 decimals; `" "` for
//! a sample that could not be read), and trailer lines to skip. Columns
//! are mapped from the header, never by position.

/// One counter's value in a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Counter {
    /// `W3SVC_W3WP`, `Process`, `HTTP Service Request Queues`, ...
    pub object: String,
    /// `4242_ShopPool`, `w3wp#1`, `ShopPool`, `_Total`; empty for none.
    pub instance: String,
    /// `Active Requests`, `% Processor Time`, ...
    pub counter: String,
    /// `None`: the sample could not be read (`" "`, blank, `-1`).
    pub value: Option<f64>,
}

/// A value cell: a number, or unreadable. typeperf prints `" "` or
/// nothing for a sample it could not take and `-1` for an instance it
/// could not read; counters of these objects are never negative, so a
/// negative value is unreadable too — never 0, which reads as "empty".
fn value(cell: &str) -> Option<f64> {
    let v: f64 = cell.trim().parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// The counters of the first data row, paired with the header's counter
/// paths by position in one row — so a row with another count of values
/// than the header has counters is refused (said), never paired up by
/// guess.
pub fn parse(text: &str) -> Result<Vec<Counter>, String> {
    let mut rows = text
        .lines()
        .map(super::clean_line)
        .filter(|l| l.trim_start().starts_with('"'))
        .map(cells);
    let Some(header) = rows.next() else {
        return Ok(Vec::new());
    };
    if !header.first().is_some_and(|h| h.starts_with("(PDH-CSV")) {
        return Ok(Vec::new());
    }
    let Some(values) = rows.next() else {
        return Ok(Vec::new());
    };
    if values.len() != header.len() {
        return Err(format!(
            "typeperf printed {} value(s) for {} counter(s): the sample is not read",
            values.len().saturating_sub(1),
            header.len().saturating_sub(1)
        ));
    }
    Ok(header
        .iter()
        .zip(values.iter())
        .skip(1)
        .filter_map(|(name, cell)| {
            let (object, instance, counter) = split_path(name)?;
            Some(Counter {
                object,
                instance,
                counter,
                value: value(cell),
            })
        })
        .collect())
}

/// The quoted cells of a CSV line (typeperf quotes every cell).
fn cells(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line.trim().as_bytes());
    if let Some(Ok(rec)) = rdr.records().next() {
        out.extend(rec.iter().map(str::to_string));
    }
    out
}

/// `\\HOST\Object(Instance)\Counter` (or without the host, or without an
/// instance) → (object, instance, counter).
fn split_path(path: &str) -> Option<(String, String, String)> {
    let p = path
        .strip_prefix("\\\\")
        .map_or(path, |rest| rest.find('\\').map_or(rest, |i| &rest[i..]));
    let p = p.strip_prefix('\\')?;
    let (object_part, counter) = p.rsplit_once('\\')?;
    let (object, instance) = match object_part.split_once('(') {
        Some((o, rest)) => (o, rest.strip_suffix(')')?),
        None => (object_part, ""),
    };
    Some((
        object.to_string(),
        instance.to_string(),
        counter.to_string(),
    ))
}

/// `Current Application Pool State` in words.
pub fn pool_state(value: f64) -> String {
    match value.round() as i64 {
        1 => "Uninitialized",
        2 => "Initialized",
        3 => "Running",
        4 => "Disabling",
        5 => "Disabled",
        6 => "Shutdown Pending",
        7 => "Delete Pending",
        _ => "unknown",
    }
    .to_string()
}

/// A `W3SVC_W3WP` instance's worker PID and pool (`4242_ShopPool`,
/// `4242_ShopPool#1`).
pub fn w3wp_instance(instance: &str) -> Option<(u32, String)> {
    let (pid, pool) = instance.split_once('_')?;
    let pool = pool.split('#').next().unwrap_or(pool);
    Some((pid.parse().ok()?, pool.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference's CONSTRUCTED sample of the documented format.
    const SAMPLE: &str = "\r\n\"(PDH-CSV 4.0)\",\"\\\\WEB01\\W3SVC_W3WP(4242_DefaultAppPool)\\Active Requests\",\"\\\\WEB01\\APP_POOL_WAS(DefaultAppPool)\\Current Application Pool State\"\r\n\"10/27/2014 00:34:02.522\",\"3.000000\",\"3.000000\"\r\nExiting, please wait...\r\nThe command completed successfully.\r\n";

    #[test]
    fn counters_by_header_name() {
        let c = parse(SAMPLE).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].object, "W3SVC_W3WP");
        assert_eq!(c[0].instance, "4242_DefaultAppPool");
        assert_eq!(c[0].counter, "Active Requests");
        assert_eq!(c[0].value, Some(3.0));
        assert_eq!(
            w3wp_instance(&c[0].instance),
            Some((4242, "DefaultAppPool".into()))
        );
        assert_eq!(pool_state(c[1].value.unwrap()), "Running");
    }

    #[test]
    fn a_missing_sample_a_zone_header_and_no_counters() {
        // A sample that could not be read is `" "`; a header may carry a
        // time zone; `Requests / Sec` has spaces and slashes.
        let text = "\r\n\"(PDH-CSV 4.0) (Eastern Standard Time)(300)\",\"\\\\WEB01\\W3SVC_W3WP(_Total)\\Requests / Sec\",\"\\\\WEB01\\Process(w3wp#1)\\Private Bytes\"\r\n\"10/27/2014 00:34:04.526\",\"1996.073524\",\" \"\r\n";
        let c = parse(text).unwrap();
        assert_eq!(c[0].counter, "Requests / Sec");
        assert_eq!(c[0].instance, "_Total");
        assert_eq!(c[0].value, Some(1996.073524));
        assert_eq!((c[1].instance.as_str(), c[1].value), ("w3wp#1", None));
        assert!(parse("Error: No valid counters.\r\n").unwrap().is_empty());
        assert!(parse("").unwrap().is_empty());
    }

    /// A real capture with wildcard counters: a header naming 3 counters
    /// and a row of 22 values, `-1` for unreadable instances. Pairing by
    /// position would give 3 wrong values and drop 19: refused, said.
    #[test]
    fn a_row_longer_than_its_header_is_refused_and_minus_one_is_unknown() {
        let mut row = String::from("\"12/07/2026 03:00:00.100\"");
        for v in ["-1", "3.000000", "-1", "0.000000"].iter().cycle().take(22) {
            row.push_str(&format!(",\"{v}\""));
        }
        let text = format!(
            "\r\n\"(PDH-CSV 4.0)\",\"\\\\WEB01\\HTTP Service Request Queues(*)\\CurrentQueueSize\",\"\\\\WEB01\\W3SVC_W3WP(*)\\Active Requests\",\"\\\\WEB01\\Process(*)\\ID Process\"\r\n{row}\r\n"
        );
        let e = parse(&text).unwrap_err();
        assert!(e.contains("22 value(s) for 3 counter(s)"), "{e}");
        // Where the counts agree, -1 and blanks are unknown, never 0.
        let text = "\"(PDH-CSV 4.0)\",\"\\\\W\\HTTP Service Request Queues(???3)\\CurrentQueueSize\",\"\\\\W\\HTTP Service Request Queues(Shop)\\CurrentQueueSize\",\"\\\\W\\W3SVC_W3WP(1_Shop)\\Active Requests\"\r\n\"12/07/2026 03:00:00.100\",\"-1\",\"\",\"2.000000\"\r\n";
        let c = parse(text).unwrap();
        assert_eq!(
            c.iter().map(|c| c.value).collect::<Vec<_>>(),
            [None, None, Some(2.0)]
        );
        assert_eq!(c[0].instance, "???3");
    }
}
