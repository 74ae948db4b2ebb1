//! `farmctl logs`: the logs copied off the servers, read by the agent's
//! own readers (`farm-traffic`) and judged by the same rule as `status`
//! (`crate::health`) — the figures of a post-mortem and of `status` are
//! one computation.
//!
//! # Layout
//! - [`input`]: files, folders and zips as servers and sites.
//! - [`read`]: the logs read on every core into per-site summaries.
//! - this module: the report in the status traffic vocabulary.
//! - [`render`]: the text tables, the terminal chart, the HTML page.
pub mod input;
pub mod read;
pub mod render;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::agent::{SiteTrafficView, TrafficView};
use crate::health::{self, Latency, NodeTraffic};
use farm_traffic::summary::{Series, Summary, UrlStats};
use farm_traffic::window::Figures;

/// URLs listed per site.
pub const TOP_URLS: usize = 10;

/// One URL's figures in the report.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct UrlRow {
    pub url: String,
    pub requests: u64,
    pub status_5xx: u64,
    /// Sum of time-taken, ms.
    pub total_ms: u64,
    pub max_ms: u64,
}

impl UrlRow {
    fn from((url, s): (String, UrlStats)) -> Self {
        UrlRow {
            url,
            requests: s.requests,
            status_5xx: s.status_5xx,
            total_ms: s.total_ms,
            max_ms: s.max_ms,
        }
    }
}

/// One step of a series.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Point {
    /// The step's start, RFC 3339 UTC.
    pub at: String,
    pub requests: u64,
    pub status_5xx: u64,
    pub p95_ms: Option<f64>,
}

/// One site of a server.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SiteReport {
    pub site: String,
    pub requests: u64,
    pub checks: u64,
    /// Responses by class (`1xx`..`5xx`).
    pub responses: BTreeMap<String, u64>,
    pub status_5xx: u64,
    pub error_rate: Option<f64>,
    pub latency_ms: Latency,
    /// The slowest request, ms.
    pub max_ms: Option<u64>,
    /// 5xx by status.substatus.
    pub errors: BTreeMap<String, u64>,
    /// HTTP.sys errors by reason.
    pub httperr: BTreeMap<String, u64>,
    pub malformed: u64,
    pub malformed_reasons: BTreeMap<String, u64>,
    /// The URLs with the most 5xx, and with the most time taken.
    pub top_5xx: Vec<UrlRow>,
    pub top_time: Vec<UrlRow>,
    /// Per `--by` step (absent without it).
    pub series: Option<Vec<Point>>,
}

/// One server: its traffic as `status` gives a node's, judged against the
/// other servers by the same rule.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct NodeReport {
    pub name: String,
    pub traffic: Option<NodeTraffic>,
    pub outlier: Option<bool>,
    pub outlier_reasons: Vec<String>,
    pub sites: Vec<SiteReport>,
    /// The server's figures per step, its sites together.
    pub series: Option<Vec<Point>>,
}

/// `farmctl logs --output json`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct LogsReport {
    /// The first and last line read (RFC 3339, UTC).
    pub first: Option<String>,
    pub last: Option<String>,
    /// What was asked for (`--from`, `--to`, `--site`, `--by`).
    pub from: Option<String>,
    pub to: Option<String>,
    pub site: Option<String>,
    pub by_s: Option<u64>,
    pub files: usize,
    pub bytes: u64,
    pub lines: u64,
    pub malformed: u64,
    pub malformed_reasons: BTreeMap<String, u64>,
    pub nodes: Vec<NodeReport>,
}

fn rfc3339(second: i64) -> String {
    jiff::Timestamp::from_second(second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// A site's figures as the agent's Traffic call gives them.
pub fn site_view(site: &str, f: &Figures) -> SiteTrafficView {
    SiteTrafficView {
        site: site.to_string(),
        pool: String::new(),
        covered_s: f.covered_s,
        requests: f.requests,
        checks: f.checks,
        classes: f.classes,
        errors: f.errors.clone(),
        httperr: f.httperr.clone(),
        p50_ms: f.p50_ms,
        p95_ms: f.p95_ms,
        p99_ms: f.p99_ms,
        missing: Vec::new(),
        latency: f.latency.clone(),
        gauges: None,
        malformed: f.malformed.total(),
        malformed_reasons: f.malformed.reasons(),
        malformed_sample: None,
        malformed_total: f.malformed.total(),
        since: None,
        problem: None,
        urls: f.urls.clone(),
        requests_total: f.requests,
    }
}

fn points(series: &Series) -> Vec<Point> {
    series
        .points
        .iter()
        .map(|(t, p)| Point {
            at: rfc3339(*t),
            requests: p.requests,
            status_5xx: p.status_5xx,
            p95_ms: p.latency.quantile(0.95),
        })
        .collect()
}

fn site_report(site: &str, s: &read::SiteRead) -> SiteReport {
    let top = |key: fn(&UrlStats) -> u64| {
        s.summary
            .top_urls(TOP_URLS, key)
            .into_iter()
            .map(UrlRow::from)
            .collect()
    };
    SiteReport {
        max_ms: s.summary.max_ms,
        top_5xx: top(|u| u.status_5xx),
        top_time: top(|u| u.total_ms),
        series: s.series.as_ref().map(points),
        ..site_from_figures(site, &s.summary.figures())
    }
}

/// A site's figures (as a window or a summary gives them) in the report.
pub fn site_from_figures(site: &str, f: &Figures) -> SiteReport {
    SiteReport {
        site: site.to_string(),
        requests: f.requests,
        checks: f.checks,
        responses: f
            .classes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("{}xx", i + 1), *n))
            .collect(),
        status_5xx: f.classes[4],
        error_rate: f.error_rate,
        latency_ms: Latency {
            p50: f.p50_ms,
            p95: f.p95_ms,
            p99: f.p99_ms,
        },
        max_ms: None,
        errors: f.errors.clone(),
        httperr: f.httperr.clone(),
        malformed: f.malformed.total(),
        malformed_reasons: f.malformed.reasons(),
        top_5xx: Vec::new(),
        top_time: Vec::new(),
        series: None,
    }
}

/// Each server's traffic (`views`, in the order of `nodes`) judged
/// against the others' by the rule of `status`.
pub fn judged(mut nodes: Vec<NodeReport>, views: &[TrafficView]) -> Vec<NodeReport> {
    let traffic: Vec<Option<NodeTraffic>> = views.iter().map(NodeTraffic::from_view).collect();
    let verdicts = health::judge(&traffic);
    for ((n, t), v) in nodes.iter_mut().zip(traffic).zip(verdicts) {
        n.traffic = t;
        n.outlier = v.outlier;
        n.outlier_reasons = v.reasons;
    }
    nodes
}

/// The report of what was read, each server judged against the others.
pub fn report(r: &read::Read, opts: &read::Options) -> LogsReport {
    let mut first: Option<i64> = None;
    let mut last: Option<i64> = None;
    let mut nodes = Vec::new();
    let mut views = Vec::new();
    for (server, sites) in &r.servers {
        // The server over the same stretch for every site: the first to
        // the last line of any of them.
        let mut whole = Summary::default();
        let mut series: Option<Series> = None;
        for s in sites.values() {
            whole.merge(&s.summary);
            if let Some(x) = &s.series {
                series
                    .get_or_insert_with(|| Series::new(x.step_s as u64))
                    .merge(x);
            }
        }
        if let Some(f) = whole.first {
            first = Some(first.map_or(f, |x| x.min(f)));
        }
        last = last.max(whole.last);
        let covered = whole.figures().covered_s;
        let view = TrafficView {
            sites: sites
                .iter()
                .map(|(name, s)| {
                    let mut f = s.summary.figures();
                    f.covered_s = covered;
                    site_view(name, &f)
                })
                .collect(),
            ..TrafficView::default()
        };
        views.push(view);
        nodes.push(NodeReport {
            name: server.clone(),
            traffic: None,
            outlier: None,
            outlier_reasons: Vec::new(),
            sites: sites.iter().map(|(n, s)| site_report(n, s)).collect(),
            series: series.as_ref().map(points),
        });
    }
    let nodes = judged(nodes, &views);
    LogsReport {
        first: first.map(rfc3339),
        last: last.map(rfc3339),
        from: opts.from.map(rfc3339),
        to: opts.to.map(rfc3339),
        site: opts.site.clone(),
        by_s: opts.by_s,
        files: r.files,
        bytes: r.bytes,
        lines: r.lines,
        malformed: r.malformed.total(),
        malformed_reasons: r.malformed.reasons(),
        nodes,
    }
}
