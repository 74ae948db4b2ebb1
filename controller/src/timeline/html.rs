//! One self-contained HTML page of a run: no script, no fetch — inline CSS
//! and SVG only, so it opens anywhere and can be attached to a ticket.
use std::fmt::Write;

use farm_proto::domain::Phase;

use super::Timeline;

/// Every text from the journal goes through here.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn colour(p: Phase) -> &'static str {
    match p {
        Phase::Staging => "#9e9e9e",
        Phase::Staged => "#e3e3e3",
        Phase::Draining => "#f0a30a",
        Phase::Quiescing => "#e3c800",
        Phase::Switching => "#aa00ff",
        Phase::Operating => "#1ba1e2",
        Phase::Verifying => "#60a917",
        Phase::Reverting => "#a20025",
        Phase::Returning => "#00aba9",
        Phase::Pending | Phase::Done | Phase::Failed => "#cccccc",
    }
}

const LEGEND: [Phase; 9] = [
    Phase::Staging,
    Phase::Staged,
    Phase::Draining,
    Phase::Quiescing,
    Phase::Switching,
    Phase::Operating,
    Phase::Verifying,
    Phase::Reverting,
    Phase::Returning,
];

const LEFT: f64 = 110.0;
const WIDTH: f64 = 900.0;
const ROW: f64 = 26.0;

fn secs(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

pub fn page(t: &Timeline) -> String {
    let span = t.duration_ms.max(1) as f64;
    let x = |ms: u64| LEFT + ms as f64 / span * WIDTH;
    let mut h = String::new();
    let title = format!("{} of farm {} — run {}", t.action, t.farm, t.run_id);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}\
table{{border-collapse:collapse;margin:8px 0 16px}}td,th{{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}}\
.failed{{color:#a20025;font-weight:600}}.succeeded{{color:#2d7d2d;font-weight:600}}\
.legend span{{display:inline-block;margin-right:14px}}.legend i{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}}\
svg text{{font-size:12px}}#errors li{{margin:4px 0}}\
</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    let _ = writeln!(
        h,
        "<table id=\"summary\"><tr><th>outcome</th><td class=\"{}\">{}</td></tr>\
<tr><th>started</th><td>{}</td></tr><tr><th>by</th><td>{}</td></tr>\
<tr><th>duration</th><td>{}</td></tr>{}{}</table>",
        esc(&t.outcome),
        esc(&t.outcome),
        esc(&t.started_at),
        esc(&t.holder),
        secs(t.duration_ms),
        t.release
            .as_ref()
            .map(|v| format!("<tr><th>release</th><td>{}</td></tr>", esc(v)))
            .unwrap_or_default(),
        t.halted
            .as_ref()
            .map(|w| format!(
                "<tr><th>halted</th><td class=\"failed\">{}</td></tr>",
                esc(w)
            ))
            .unwrap_or_default()
            + &t.resumes
                .iter()
                .map(|r| format!(
                    "<tr class=\"resumed\"><th>resumed</th><td>at +{} by {}{}</td></tr>",
                    secs(r.at_ms),
                    esc(&r.holder),
                    r.silent_from_ms
                        .map(|f| format!(
                            " — the controller before was silent from +{} (died or stopped)",
                            secs(f)
                        ))
                        .unwrap_or_default()
                ))
                .collect::<String>()
    );

    // The timeline: one row per node, one bar per phase.
    let height = 30.0 + ROW * t.nodes.len() as f64;
    let _ = write!(
        h,
        "<h2>Timeline</h2>\n<div class=\"legend\">{}</div>\n<svg id=\"timeline\" width=\"{}\" height=\"{height}\" role=\"img\">\n",
        LEGEND
            .iter()
            .map(|p| format!("<span><i style=\"background:{}\"></i>{}</span>", colour(*p), p.as_str()))
            .collect::<Vec<_>>()
            .concat(),
        LEFT + WIDTH + 20.0
    );
    for (i, n) in t.nodes.iter().enumerate() {
        let y = 10.0 + ROW * i as f64;
        let _ = write!(
            h,
            "<g class=\"node\" data-node=\"{}\"><text x=\"4\" y=\"{}\">{}</text>",
            esc(&n.name),
            y + 15.0,
            esc(&n.name)
        );
        for s in &n.segments {
            let w = (x(s.end_ms) - x(s.start_ms)).max(1.0);
            let _ = write!(
                h,
                "<rect class=\"phase phase-{p}\" x=\"{:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"{}\"><title>{} {p}: {} (+{})</title></rect>",
                x(s.start_ms),
                ROW - 6.0,
                colour(s.phase),
                esc(&n.name),
                secs(s.end_ms - s.start_ms),
                secs(s.start_ms),
                p = s.phase.as_str(),
            );
        }
        if let Some((at, e)) = &n.error {
            let _ = write!(
                h,
                "<circle class=\"error\" cx=\"{:.1}\" cy=\"{}\" r=\"6\" fill=\"#a20025\"><title>{}</title></circle>",
                x(*at),
                y + (ROW - 6.0) / 2.0,
                esc(e)
            );
        }
        h.push_str("</g>\n");
    }
    let _ = writeln!(
        h,
        "<text x=\"{LEFT}\" y=\"{}\">0s</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text></svg>",
        height - 2.0,
        LEFT + WIDTH,
        height - 2.0,
        secs(t.duration_ms)
    );

    // Capacity: nodes in rotation over time against min_healthy.
    let cap_h = 140.0;
    let top = t.farm_nodes.max(1) as f64;
    let y = |n: usize| 10.0 + (1.0 - n as f64 / top) * (cap_h - 30.0);
    let mut points = Vec::new();
    for (k, c) in t.capacity.iter().enumerate() {
        let next = t.capacity.get(k + 1).map_or(t.duration_ms, |n| n.at_ms);
        points.push(format!("{:.1},{:.1}", x(c.at_ms), y(c.in_rotation)));
        points.push(format!("{:.1},{:.1}", x(next), y(c.in_rotation)));
    }
    let _ = write!(
        h,
        "<h2>Capacity</h2>\n<svg id=\"capacity\" width=\"{}\" height=\"{cap_h}\" role=\"img\">\
<text x=\"4\" y=\"{}\">{} nodes</text><text x=\"4\" y=\"{}\">0</text>\
<polyline class=\"in-rotation\" fill=\"none\" stroke=\"#1ba1e2\" stroke-width=\"2\" points=\"{}\"><title>nodes in rotation</title></polyline>",
        LEFT + WIDTH + 20.0,
        y(t.farm_nodes) + 4.0,
        t.farm_nodes,
        y(0) + 4.0,
        points.join(" ")
    );
    if let Some(m) = t.min_healthy {
        let _ = write!(
            h,
            "<line class=\"min-healthy\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#a20025\" stroke-dasharray=\"6 4\"><title>min_healthy {m}</title></line>\
<text x=\"4\" y=\"{:.1}\" fill=\"#a20025\">min {m}</text>",
            LEFT + WIDTH,
            y(m),
            y(m),
            y(m) + 4.0
        );
    }
    h.push_str("</svg>\n");

    if let Some(a) = &t.analysis {
        analysis(&mut h, a);
    }
    if !t.patched.is_empty() {
        h.push_str("<h2>Updates and restarts</h2>\n<table id=\"patched\"><tr><th>node</th><th>updates</th><th>restart</th></tr>");
        for (node, p) in &t.patched {
            let updates: Vec<String> = p
                .updates
                .iter()
                .map(|u| {
                    let name = if u.kb.is_empty() { &u.title } else { &u.kb };
                    let class = if u.result == "succeeded" {
                        ""
                    } else {
                        "failed"
                    };
                    format!(
                        "<span class=\"{class}\" title=\"{}\">{} {}{}</span>",
                        esc(&u.title),
                        esc(name),
                        esc(&u.result),
                        u.hresult
                            .as_deref()
                            .map(|h| format!(" ({})", esc(h)))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let restart = p.reboot.as_ref().map_or_else(
                || "none".to_string(),
                |b| {
                    format!(
                        "back after {:.1}s, IIS after {:.1}s (boot {} → {})",
                        b.back_after_ms as f64 / 1000.0,
                        b.iis_after_ms as f64 / 1000.0,
                        esc(&b.boot_before),
                        esc(&b.boot_after)
                    )
                },
            );
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(node),
                if updates.is_empty() {
                    "none".to_string()
                } else {
                    updates.join("<br>")
                },
                restart
            );
        }
        h.push_str("</table>\n");
    }
    if !t.diagnostics.is_empty() {
        h.push_str("<h2>Diagnostics before the recycle</h2>\n<div id=\"diagnostics\">");
        for (node, pools) in &t.diagnostics {
            if let Some(line) = t.traffic_change(node) {
                let _ = write!(
                    h,
                    "<p class=\"traffic\"><b>{}</b> traffic {}</p>",
                    esc(node),
                    esc(&line)
                );
            }
            for d in pools {
                let _ = write!(
                    h,
                    "<h3>{} — {}</h3><p class=\"{}\">{}</p>",
                    esc(node),
                    esc(&d.pool),
                    if d.rapid_fail { "failed" } else { "" },
                    esc(&d.line())
                );
                if !d.requests.is_empty() {
                    h.push_str("<table><tr><th>elapsed</th><th>request</th><th>client</th><th>stage</th><th>module</th></tr>");
                    for r in &d.requests {
                        let _ = write!(
                            h,
                            "<tr><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            r.elapsed_ms.map_or("?".into(), |ms| format!("{ms} ms")),
                            esc(&r.verb),
                            esc(&r.url),
                            esc(r.client.as_deref().unwrap_or("")),
                            esc(r.stage.as_deref().unwrap_or("")),
                            esc(r.module.as_deref().unwrap_or(""))
                        );
                    }
                    h.push_str("</table>");
                }
                if !d.events.is_empty() {
                    h.push_str("<ul>");
                    for e in &d.events {
                        let _ = write!(
                            h,
                            "<li>WAS {} {} {}: {}</li>",
                            e.id,
                            esc(&e.level),
                            esc(&e.date),
                            esc(&e.message)
                        );
                    }
                    h.push_str("</ul>");
                }
                for n in &d.notes {
                    let _ = write!(h, "<p><small>{}</small></p>", esc(n));
                }
            }
        }
        h.push_str("</div>\n");
    }

    // Nodes: outcome, version, error where it happened.
    h.push_str("<h2>Nodes</h2>\n<table id=\"nodes\"><tr><th>node</th><th>ended</th>");
    if t.release.is_some() {
        h.push_str("<th>version</th>");
    }
    h.push_str("<th>error</th></tr>\n");
    for n in &t.nodes {
        let _ = write!(
            h,
            "<tr data-node=\"{}\"><td>{}</td><td class=\"{}\">{}</td>",
            esc(&n.name),
            esc(&n.name),
            if n.last == Phase::Failed {
                "failed"
            } else {
                ""
            },
            n.last.as_str()
        );
        if t.release.is_some() {
            let _ = write!(
                h,
                "<td class=\"version\">{}</td>",
                esc(n.version.as_deref().unwrap_or("unchanged"))
            );
        }
        let _ = writeln!(
            h,
            "<td>{}</td></tr>",
            n.error
                .as_ref()
                .map(|(at, e)| format!("at +{}: {}", secs(*at), esc(e)))
                .unwrap_or_default()
        );
    }
    h.push_str("</table>\n");
    let errors: Vec<String> = t
        .nodes
        .iter()
        .filter_map(|n| {
            n.error.as_ref().map(|(at, e)| {
                format!(
                    "<li><b>{}</b> at +{}: {}</li>",
                    esc(&n.name),
                    secs(*at),
                    esc(e)
                )
            })
        })
        .collect();
    if !errors.is_empty() {
        let _ = write!(
            h,
            "<h2>Errors</h2>\n<ul id=\"errors\">{}</ul>\n",
            errors.join("")
        );
    }
    h.push_str("<p><small>farmctl runs show --html</small></p>\n</body></html>\n");
    h
}

/// A judgement's second into the soak, the canaries' and the baseline's value.
type Point = (f64, Option<f64>, Option<f64>);

/// One chart of a soak: the canaries' and the baseline's value of a
/// metric at each judgement.
fn chart(h: &mut String, id: &str, label: &str, points: &[Point], unit: &dyn Fn(f64) -> String) {
    let (w, ht) = (WIDTH, 120.0);
    let end = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let top = points
        .iter()
        .flat_map(|p| [p.1, p.2])
        .flatten()
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let x = |t: f64| LEFT + t / end * w;
    let y = |v: f64| 10.0 + (1.0 - v / top) * (ht - 30.0);
    let line = |pick: &dyn Fn(&Point) -> Option<f64>| {
        points
            .iter()
            .filter_map(|p| pick(p).map(|v| format!("{:.1},{:.1}", x(p.0), y(v))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        h,
        "<h3>{label}</h3>\n<svg id=\"{id}\" width=\"{}\" height=\"{ht}\" role=\"img\">\
<text x=\"4\" y=\"{:.1}\">{}</text><text x=\"4\" y=\"{:.1}\">0</text>\
<polyline class=\"canary\" fill=\"none\" stroke=\"#a20025\" stroke-width=\"2\" points=\"{}\"><title>canaries</title></polyline>\
<polyline class=\"baseline\" fill=\"none\" stroke=\"#1ba1e2\" stroke-width=\"2\" points=\"{}\"><title>baseline</title></polyline>\
<text x=\"{:.1}\" y=\"{:.1}\">{:.0}s</text></svg>\n",
        LEFT + w + 20.0,
        y(top) + 4.0,
        esc(&unit(top)),
        y(0.0) + 4.0,
        line(&|p| p.1),
        line(&|p| p.2),
        LEFT + w - 30.0,
        ht - 2.0,
        end
    );
}

/// The canary analysis: verdict, the canaries' and the baseline's error
/// rate and latency over the soak, and every judgement's figures.
fn analysis(h: &mut String, a: &super::AnalysisLine) {
    let verdict = a
        .verdict
        .map_or("no verdict (the soak was cut)", |v| v.as_str());
    let _ = write!(
        h,
        "<h2>Canary analysis</h2>\n<p id=\"verdict\" class=\"{}\">{}{}{}</p>\n\
<div class=\"legend\"><span><i style=\"background:#a20025\"></i>canaries</span><span><i style=\"background:#1ba1e2\"></i>baseline</span></div>\n",
        if a.verdict == Some(crate::judge::Outcome::Pass) { "succeeded" } else { "failed" },
        esc(verdict),
        a.reason.as_ref().map(|r| format!(": {}", esc(r))).unwrap_or_default(),
        match (a.rolled_back, &a.rollback_to) {
            (Some(true), Some(v)) => format!(" — rolled back to {}", esc(v)),
            (Some(false), _) => " — the rollback did not finish".into(),
            _ => String::new(),
        }
    );
    let figures = |prefix: &str| -> Vec<Point> {
        a.intervals
            .iter()
            .map(|i| {
                let (c, b) = super::AnalysisLine::figure(i, prefix);
                (i.elapsed_s, c, b)
            })
            .collect()
    };
    chart(
        h,
        "analysis-errors",
        "5xx rate",
        &figures("error_rate"),
        &|v| format!("{:.1}%", v * 100.0),
    );
    chart(
        h,
        "analysis-latency",
        "latency",
        &figures("latency_"),
        &|v| format!("{v:.0} ms"),
    );
    h.push_str("<table id=\"intervals\"><tr><th>at</th><th>result</th><th>metric</th><th>canaries</th><th>baseline</th><th>limit</th><th>why</th></tr>\n");
    for i in &a.intervals {
        for m in &i.metrics {
            let fmt = |v: Option<f64>| match v {
                None => "—".to_string(),
                Some(v) if m.name == "error_rate" => format!("{:.2}%", v * 100.0),
                Some(v) => format!("{v:.0} ms"),
            };
            let _ = writeln!(
                h,
                "<tr><td>{:.0}s</td><td class=\"{}\">{}</td><td>{}</td><td>{} ({} req)</td><td>{} ({} req)</td><td>{}</td><td>{}</td></tr>",
                i.elapsed_s,
                if m.result == crate::judge::Outcome::Fail { "failed" } else { "" },
                m.result,
                esc(&m.name),
                fmt(m.canary),
                m.canary_requests,
                fmt(m.baseline),
                m.baseline_requests,
                fmt(m.limit),
                esc(&m.reason)
            );
        }
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn journal_text_cannot_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
