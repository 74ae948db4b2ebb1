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
    /// `None`: the sample could not be read.
    pub value: Option<f64>,
}

/// The counters of the first data row, by the header's names.
pub fn parse(text: &str) -> Vec<Counter> {
    let mut rows = text
        .lines()
        .map(super::clean_line)
        .filter(|l| l.trim_start().starts_with('"'))
        .map(cells);
    let Some(header) = rows.next() else {
        return Vec::new();
    };
    if !header.first().is_some_and(|h| h.starts_with("(PDH-CSV")) {
        return Vec::new();
    }
    let Some(values) = rows.next() else {
        return Vec::new();
    };
    header
        .iter()
        .zip(values.iter())
        .skip(1)
        .filter_map(|(name, value)| {
            let (object, instance, counter) = split_path(name)?;
            Some(Counter {
                object,
                instance,
                counter,
                value: value.trim().parse().ok(),
            })
        })
        .collect()
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
        let c = parse(SAMPLE);
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
        let c = parse(text);
        assert_eq!(c[0].counter, "Requests / Sec");
        assert_eq!(c[0].instance, "_Total");
        assert_eq!(c[0].value, Some(1996.073524));
        assert_eq!((c[1].instance.as_str(), c[1].value), ("w3wp#1", None));
        assert!(parse("Error: No valid counters.\r\n").is_empty());
        assert!(parse("").is_empty());
    }
}
