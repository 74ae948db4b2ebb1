//! `farmctl logs` for people: a table per server and site, the 5xx and
//! the URLs behind them, a chart per step on the terminal, and one
//! self-contained HTML page (inline CSS and SVG, nothing fetched).
use std::fmt::Write;

use super::{LogsReport, NodeReport, Point, SiteReport, UrlRow};
use crate::timeline::html::esc;

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.0}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

/// `1.0 GB`, `12.3 MB`, `512 B`.
pub fn bytes(n: u64) -> String {
    let n = n as f64;
    for (unit, size) in [("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
        if n >= size {
            return format!("{:.1} {unit}", n / size);
        }
    }
    format!("{n} B")
}

fn pairs(m: &std::collections::BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(out: &mut String, server: &str, site: &str, requests: u64, rps: Option<f64>, s: &SiteLine) {
    let _ = writeln!(
        out,
        "{:<14} {:<10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:<20} {}",
        server,
        site,
        requests,
        rps.map_or("-".into(), |r| format!("{r:.1}")),
        s.status_5xx,
        pct(s.error_rate),
        ms(s.p50),
        ms(s.p95),
        ms(s.p99),
        s.max.map_or("-".into(), |m| m.to_string()),
        pairs(s.httperr),
        s.verdict
    );
}

struct SiteLine<'a> {
    status_5xx: u64,
    error_rate: Option<f64>,
    p50: Option<f64>,
    p95: Option<f64>,
    p99: Option<f64>,
    max: Option<u64>,
    httperr: &'a std::collections::BTreeMap<String, u64>,
    verdict: String,
}

fn verdict(n: &NodeReport) -> String {
    match n.outlier {
        Some(true) => format!("YES: {}", n.outlier_reasons.join("; ")),
        Some(false) => "no".into(),
        None => n.outlier_reasons.join("; "),
    }
}

fn urls(rows: &[UrlRow], by_time: bool) -> String {
    rows.iter()
        .take(5)
        .map(|u| {
            if by_time {
                format!(
                    "{} {:.1} s in {} request(s), max {} ms",
                    u.url,
                    u.total_ms as f64 / 1000.0,
                    u.requests,
                    u.max_ms
                )
            } else {
                format!("{} {} of {}", u.url, u.status_5xx, u.requests)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A bar of `width` characters for `v` of `max`.
fn bar(v: u64, max: u64, width: usize) -> String {
    if max == 0 {
        return String::new();
    }
    let n = ((v as f64 / max as f64) * width as f64).round() as usize;
    "█".repeat(n.min(width))
}

fn chart(out: &mut String, name: &str, points: &[Point]) {
    let max = points.iter().map(|p| p.requests).max().unwrap_or(0);
    let _ = writeln!(out, "\n{name}: per step (the bar: requests)");
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>6} {:>7}  ",
        "TIME", "REQUESTS", "5XX", "P95 MS"
    );
    for p in points {
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>6} {:>7}  {}",
            p.at.trim_end_matches('Z').replace('T', " "),
            p.requests,
            p.status_5xx,
            ms(p.p95_ms),
            bar(p.requests, max, 40)
        );
    }
}

/// The report as text.
pub fn text(r: &LogsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "read {} file(s), {}, {} line(s), {} unreadable{}; {} .. {}",
        r.files,
        bytes(r.bytes),
        r.lines,
        r.malformed,
        if r.malformed_reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", pairs(&r.malformed_reasons))
        },
        r.first.as_deref().unwrap_or("-"),
        r.last.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "\n{:<14} {:<10} {:>10} {:>8} {:>8} {:>7} {:>7} {:>7} {:>7} {:>8} {:<20} OUTLIER",
        "SERVER",
        "SITE",
        "REQUESTS",
        "REQ/S",
        "5XX",
        "5XX%",
        "P50",
        "P95",
        "P99",
        "MAX MS",
        "HTTP.SYS"
    );
    for n in &r.nodes {
        if let Some(t) = &n.traffic {
            row(
                &mut out,
                &n.name,
                "(all)",
                t.requests,
                Some(t.rps),
                &SiteLine {
                    status_5xx: t.status_5xx,
                    error_rate: t.error_rate,
                    p50: t.latency_ms.p50,
                    p95: t.latency_ms.p95,
                    p99: t.latency_ms.p99,
                    max: n.sites.iter().filter_map(|s| s.max_ms).max(),
                    httperr: &t.httperr,
                    verdict: verdict(n),
                },
            );
        }
        if n.sites.len() > 1 {
            for s in &n.sites {
                site_row(&mut out, s);
            }
        }
    }
    let mut details = String::new();
    for n in &r.nodes {
        for s in &n.sites {
            let at = format!("{} {}", n.name, s.site);
            if !s.errors.is_empty() {
                let _ = writeln!(details, "  {at}: 5xx {}", pairs(&s.errors));
            }
            if !s.top_5xx.is_empty() {
                let _ = writeln!(details, "  {at}: URLs by 5xx: {}", urls(&s.top_5xx, false));
            }
            if !s.top_time.is_empty() {
                let _ = writeln!(
                    details,
                    "  {at}: URLs by time taken: {}",
                    urls(&s.top_time, true)
                );
            }
            if s.malformed > 0 {
                let _ = writeln!(
                    details,
                    "  {at}: {} line(s) could not be read ({})",
                    s.malformed,
                    pairs(&s.malformed_reasons)
                );
            }
        }
    }
    if !details.is_empty() {
        let _ = write!(out, "\n{details}");
    }
    for n in &r.nodes {
        if let Some(points) = &n.series {
            chart(&mut out, &n.name, points);
        }
    }
    out
}

fn site_row(out: &mut String, s: &SiteReport) {
    row(
        out,
        "",
        &s.site,
        s.requests,
        None,
        &SiteLine {
            status_5xx: s.status_5xx,
            error_rate: s.error_rate,
            p50: s.latency_ms.p50,
            p95: s.latency_ms.p95,
            p99: s.latency_ms.p99,
            max: s.max_ms,
            httperr: &s.httperr,
            verdict: String::new(),
        },
    );
}

/// An SVG line chart of `values` (one per step), `w`×`h`.
fn svg_line(title: &str, values: &[(String, f64)], colour: &str) -> String {
    let (w, h, pad) = (560.0, 140.0, 30.0);
    let max = values
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let n = values.len().max(2) - 1;
    let pts: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            let x = pad + (w - 2.0 * pad) * i as f64 / n as f64;
            let y = h - pad - (h - 2.0 * pad) * v / max;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let first = values.first().map(|(t, _)| t.as_str()).unwrap_or("");
    let last = values.last().map(|(t, _)| t.as_str()).unwrap_or("");
    format!(
        r##"<figure><figcaption>{}</figcaption><svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"><line x1="{pad}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/><text x="{pad}" y="{ty}" font-size="10">{}</text><text x="{x1}" y="{ty}" font-size="10" text-anchor="end">{}</text><text x="4" y="{pad}" font-size="10">{max:.0}</text><polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/></svg></figure>"##,
        esc(title),
        esc(first),
        esc(last),
        pts.join(" "),
        y0 = h - pad,
        x1 = w - pad,
        ty = h - 10.0,
    )
}

/// The report as one self-contained HTML page.
pub fn html(r: &LogsReport) -> String {
    let mut out = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>farmctl logs</title><style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#eee}td.l{text-align:left}figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-size:12px}.sick{background:#fdd}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>IIS logs</h1><p>{} file(s), {}, {} line(s), {} unreadable; {} to {}</p>",
        r.files,
        esc(&bytes(r.bytes)),
        r.lines,
        r.malformed,
        esc(r.first.as_deref().unwrap_or("-")),
        esc(r.last.as_deref().unwrap_or("-"))
    );
    out.push_str("<table><tr><th>server</th><th>site</th><th>requests</th><th>5xx</th><th>5xx %</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>HTTP.sys</th><th>outlier</th></tr>");
    for n in &r.nodes {
        for (k, s) in n.sites.iter().enumerate() {
            let sick = n.outlier == Some(true);
            let _ = write!(
                out,
                "<tr{}><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
                if sick { " class=\"sick\"" } else { "" },
                if k == 0 { esc(&n.name) } else { String::new() },
                esc(&s.site),
                s.requests,
                s.status_5xx,
                pct(s.error_rate),
                ms(s.latency_ms.p50),
                ms(s.latency_ms.p95),
                ms(s.latency_ms.p99),
                s.max_ms.map_or("-".into(), |m| m.to_string()),
                esc(&pairs(&s.httperr)),
                if k == 0 { esc(&verdict(n)) } else { String::new() }
            );
        }
    }
    out.push_str("</table>");
    for n in &r.nodes {
        let Some(points) = &n.series else { continue };
        let _ = write!(out, "<h2>{}</h2>", esc(&n.name));
        let series = |f: &dyn Fn(&Point) -> f64| -> Vec<(String, f64)> {
            points.iter().map(|p| (p.at.clone(), f(p))).collect()
        };
        out.push_str(&svg_line(
            "requests per step",
            &series(&|p| p.requests as f64),
            "#1f77b4",
        ));
        out.push_str(&svg_line(
            "5xx per step",
            &series(&|p| p.status_5xx as f64),
            "#d62728",
        ));
        out.push_str(&svg_line(
            "p95 ms per step",
            &series(&|p| p.p95_ms.unwrap_or(0.0)),
            "#2ca02c",
        ));
        for s in &n.sites {
            if s.top_5xx.is_empty() && s.top_time.is_empty() {
                continue;
            }
            let _ = write!(out, "<h3>{} {}</h3><table><tr><th>URL</th><th>requests</th><th>5xx</th><th>time s</th><th>max ms</th></tr>", esc(&n.name), esc(&s.site));
            let mut seen = std::collections::BTreeSet::new();
            for u in s.top_5xx.iter().chain(&s.top_time) {
                if seen.insert(u.url.clone()) {
                    let _ = write!(
                        out,
                        "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td></tr>",
                        esc(&u.url),
                        u.requests,
                        u.status_5xx,
                        u.total_ms as f64 / 1000.0,
                        u.max_ms
                    );
                }
            }
            out.push_str("</table>");
        }
    }
    out.push_str("</body></html>\n");
    out
}
