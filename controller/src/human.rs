//! Durations as an operator reads them: `19.4s`, `2m 5s`, `350ms`.
use std::time::Duration;

/// Rounded to what matters at that size: milliseconds under a second,
/// tenths of a second under a minute, whole seconds above.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let tenths = (ms + 50) / 100;
        let (whole, frac) = (tenths / 10, tenths % 10);
        return match frac {
            0 => format!("{whole}s"),
            f => format!("{whole}.{f}s"),
        };
    }
    let s = (ms + 500) / 1000;
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, 0) => format!("{h}h"),
        (h, m, 0) => format!("{h}h {m}m"),
        (h, m, s) => format!("{h}h {m}m {s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounded_to_the_size() {
        let f = |ms| duration(Duration::from_millis(ms));
        assert_eq!(f(350), "350ms");
        assert_eq!(f(5000), "5s");
        assert_eq!(f(19_401), "19.4s");
        assert_eq!(f(6_226), "6.2s");
        assert_eq!(f(59_990), "60s");
        assert_eq!(f(125_000), "2m 5s");
        assert_eq!(f(120_000), "2m");
        assert_eq!(f(3_600_000), "1h");
        assert_eq!(f(3_725_000), "1h 2m 5s");
    }
}

/// What to say after an unknown `name` among `known` (case-insensitive):
/// ` (did you mean web01?)` when one is close, else ` (there are: a, b)`.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let known: Vec<&str> = known.into_iter().collect();
    let lower = name.to_ascii_lowercase();
    let close = known
        .iter()
        .map(|k| (strsim::jaro_winkler(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(score, _)| *score >= 0.88)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match close {
        Some((_, k)) => format!(" (did you mean {k}?)"),
        None if known.is_empty() => String::new(),
        None if known.len() > 10 => format!(" (there are: {}, ...)", known[..10].join(", ")),
        None => format!(" (there are: {})", known.join(", ")),
    }
}

#[cfg(test)]
mod suggestion_tests {
    use super::did_you_mean;

    #[test]
    fn a_close_name_is_suggested_else_what_exists_is_listed() {
        assert_eq!(
            did_you_mean("web1", ["web01", "web02"]),
            " (did you mean web01?)"
        );
        assert_eq!(
            did_you_mean("ShopPol", ["ShopPool", "ApiPool"]),
            " (did you mean ShopPool?)"
        );
        assert_eq!(
            did_you_mean("xyz", ["web01", "web02"]),
            " (there are: web01, web02)"
        );
        assert_eq!(did_you_mean("xyz", []), "");
    }
}

/// Whether stdout gets colour: a terminal, and no `NO_COLOR`.
pub fn colour_stdout() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Each line of a table or summary coloured by what it says: red when
/// something is wrong (failed, down, unreachable, stopped IIS, out of
/// rotation), yellow when a node is out on purpose or a run was stopped,
/// green when it succeeded; unchanged when `on` is false. Whole lines are
/// coloured, so columns stay aligned.
pub fn paint(text: &str, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    let red = [
        " failed ",
        "FAILED",
        "OUT OF ROTATION",
        " NO ",
        "unhealthy",
        " Stopped",
        "STOPPED ",
        " DOWN ",
        "MISSING",
        "YES:",
        "LB DISAGREES",
        "unreachable",
    ];
    let yellow = [
        " YES ",
        " DRAIN",
        " MAINT",
        "STOPPED of",
        "leased:",
        "skipped ",
    ];
    let green = [" succeeded ", " healthy", "done of"];
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        let code = if red.iter().any(|k| body.contains(k)) {
            Some("31")
        } else if yellow.iter().any(|k| body.contains(k)) {
            Some("33")
        } else if green.iter().any(|k| body.contains(k)) {
            Some("32")
        } else {
            None
        };
        match code {
            Some(c) => out.push_str(&format!("\x1b[{c}m{body}\x1b[0m{end}")),
            None => out.push_str(line),
        }
    }
    out
}

#[cfg(test)]
mod paint_tests {
    use super::paint;

    #[test]
    fn lines_are_coloured_by_state_and_never_without_a_terminal() {
        let text = "  web01        succeeded in rotation\n  web02        failed    OUT OF ROTATION\n  web03        skipped   in rotation\nheader\n";
        assert_eq!(paint(text, false), text);
        let p = paint(text, true);
        let lines: Vec<&str> = p.lines().collect();
        assert!(lines[0].starts_with("\x1b[32m"), "{p:?}");
        assert!(lines[1].starts_with("\x1b[31m"), "{p:?}");
        assert!(lines[2].starts_with("\x1b[33m"), "{p:?}");
        assert_eq!(lines[3], "header");
    }
}

/// The terminal's width when stdout is one (`COLUMNS` first), else none.
pub fn stdout_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return Some(c);
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, w)| usize::from(w))
}

/// Each line cut to `width` characters with an ellipsis, so a table row
/// never wraps mid-row; unchanged without a width.
pub fn fit(text: &str, width: Option<usize>) -> String {
    let Some(width) = width.filter(|w| *w > 1) else {
        return text.to_string();
    };
    text.split_inclusive('\n')
        .map(|line| {
            let (body, end) = match line.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (line, ""),
            };
            if body.chars().count() <= width {
                line.to_string()
            } else {
                let cut: String = body.chars().take(width - 1).collect();
                format!("{cut}…{end}")
            }
        })
        .collect()
}

#[cfg(test)]
mod fit_tests {
    use super::fit;

    #[test]
    fn long_lines_are_cut_with_an_ellipsis() {
        assert_eq!(fit("abcdef\nab\n", Some(4)), "abc…\nab\n");
        assert_eq!(fit("abcdef\n", None), "abcdef\n");
    }
}
