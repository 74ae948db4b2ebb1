//! A rolling window of what users got, per site: requests, responses by
//! status class, 5xx by status.substatus, latency quantiles from
//! `time-taken`, HTTP.sys errors by reason, unreadable lines by reason —
//! in one-second buckets for the last few minutes, so memory is bounded
//! whatever the request rate. Health checks (the load balancer's health
//! file, farmctl's own probes) are counted apart and never as user traffic.
use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::httperr::HttpErr;
use crate::malformed::{Malformed, Reason};
use crate::w3c::W3cRequest;
use crate::Histogram;

/// Which requests are checks, not users.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    /// URL paths of health-check files (`/health.htm`), case-insensitive.
    pub paths: Vec<String>,
    /// User agents of probes (`farmctl-probe`), matched as prefixes.
    pub user_agents: Vec<String>,
}

impl Checks {
    pub fn is_check(&self, r: &W3cRequest<'_>) -> bool {
        let path = r.uri_stem.unwrap_or("");
        let agent = r.user_agent.unwrap_or("");
        self.paths.iter().any(|p| p.eq_ignore_ascii_case(path))
            || self
                .user_agents
                .iter()
                .any(|a| agent.starts_with(a.as_str()))
    }
}

/// One second of a site's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Bucket {
    second: i64,
    requests: u64,
    checks: u64,
    /// Responses by class: index 1..=5 for 1xx..5xx.
    classes: [u64; 6],
    /// 5xx by `status.substatus` (`500.0`, `503.2`).
    errors: BTreeMap<String, u64>,
    /// Latency bins of user requests that logged `time-taken`.
    latency: Histogram,
    httperr: BTreeMap<String, u64>,
    /// Lines read this second that could not be read, by reason.
    malformed: Malformed,
}

/// Figures of a window, as a Traffic answer carries them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Seconds the window actually covers (less than asked when the
    /// agent has not watched that long).
    pub covered_s: u64,
    pub requests: u64,
    pub checks: u64,
    /// Responses by class, 1xx..5xx.
    pub classes: [u64; 5],
    pub errors: BTreeMap<String, u64>,
    /// 5xx over user requests; `None` without requests.
    pub error_rate: Option<f64>,
    /// p50, p95, p99 in ms; `None` without timed requests.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub httperr: BTreeMap<String, u64>,
    /// The latency histogram the quantiles come from.
    pub latency: Histogram,
    /// Lines of the window that could not be read, by reason.
    pub malformed: Malformed,
    /// The user requests' URLs (`cs-uri-stem`) with their count and the
    /// sum of their `time-taken` (ms), the busiest first (at most
    /// [`URLS_KEPT`]): a node's latency compared with its peers' on the
    /// same URLs when their mixes differ.
    pub urls: Vec<(String, u64, u64)>,
}

/// URLs kept per step of the URL window, and given in [`Figures::urls`].
pub const URLS_KEPT: usize = 64;
/// The URL window's step (coarser than the per-second buckets: it holds
/// strings).
const URL_STEP_S: i64 = 10;

/// Per step, each URL's count and time taken.
#[derive(Debug, Clone, Default)]
struct UrlStep {
    start: i64,
    urls: HashMap<String, (u64, u64)>,
}

impl Figures {
    /// Every figure derived from the counts (rate, quantiles).
    pub fn derive(&mut self) {
        self.error_rate =
            (self.requests > 0).then(|| self.classes[4] as f64 / self.requests as f64);
        self.p50_ms = self.latency.quantile(0.50);
        self.p95_ms = self.latency.quantile(0.95);
        self.p99_ms = self.latency.quantile(0.99);
    }
}

/// The last `span` seconds of one site.
#[derive(Debug, Clone)]
pub struct Window {
    span: i64,
    buckets: VecDeque<Bucket>,
    url_steps: VecDeque<UrlStep>,
}

impl Window {
    pub fn new(span_s: u64) -> Self {
        Self {
            span: span_s.max(1) as i64,
            buckets: VecDeque::new(),
            url_steps: VecDeque::new(),
        }
    }

    /// A user request's URL and time, in its step (bounded: a step holds
    /// at most [`URLS_KEPT`] URLs, the rest are not kept per URL).
    fn add_url(&mut self, second: i64, stem: &str, ms: u64) {
        let start = second.div_euclid(URL_STEP_S) * URL_STEP_S;
        let newest = self.url_steps.back().map_or(start, |s| s.start.max(start));
        if start <= newest - self.span {
            return;
        }
        if !self.url_steps.iter().any(|s| s.start == start) {
            let at = self
                .url_steps
                .iter()
                .position(|s| s.start > start)
                .unwrap_or(self.url_steps.len());
            self.url_steps.insert(
                at,
                UrlStep {
                    start,
                    urls: HashMap::new(),
                },
            );
        }
        while self
            .url_steps
            .front()
            .is_some_and(|s| s.start <= newest - self.span - URL_STEP_S)
        {
            self.url_steps.pop_front();
        }
        let Some(step) = self.url_steps.iter_mut().rev().find(|s| s.start == start) else {
            return;
        };
        let full = step.urls.len() >= URLS_KEPT;
        match step.urls.get_mut(stem) {
            Some(u) => {
                u.0 += 1;
                u.1 += ms;
            }
            None if full => {}
            None => {
                step.urls.insert(stem.to_string(), (1, ms));
            }
        }
    }

    fn bucket(&mut self, second: i64) -> Option<&mut Bucket> {
        // Nearly every line is of the newest second: no search for it.
        if self.buckets.back().is_some_and(|b| b.second == second) {
            return self.buckets.back_mut();
        }
        let newest = self.buckets.back().map_or(second, |b| b.second.max(second));
        if second <= newest - self.span {
            return None; // older than the window: dropped
        }
        let pos = self.buckets.iter().position(|b| b.second >= second);
        match pos {
            Some(i) if self.buckets[i].second == second => {}
            Some(i) => self.buckets.insert(
                i,
                Bucket {
                    second,
                    ..Bucket::default()
                },
            ),
            None => self.buckets.push_back(Bucket {
                second,
                ..Bucket::default()
            }),
        }
        while self
            .buckets
            .front()
            .is_some_and(|b| b.second <= newest - self.span)
        {
            self.buckets.pop_front();
        }
        self.buckets.iter_mut().find(|b| b.second == second)
    }

    pub fn add(&mut self, r: &W3cRequest<'_>, checks: &Checks) {
        let Some(b) = self.bucket(r.second) else {
            return;
        };
        if checks.is_check(r) {
            b.checks += 1;
            return;
        }
        b.requests += 1;
        let class = usize::from(r.status / 100);
        if (1..=5).contains(&class) {
            b.classes[class] += 1;
        }
        if class == 5 {
            let key = format!("{}.{}", r.status, r.substatus.unwrap_or(0));
            *b.errors.entry(key).or_default() += 1;
        }
        if let Some(ms) = r.time_taken_ms {
            b.latency.record(ms);
            if let Some(stem) = r.uri_stem {
                self.add_url(r.second, stem, ms);
            }
        }
    }

    pub fn add_httperr(&mut self, e: &HttpErr<'_>) {
        if let Some(b) = self.bucket(e.second) {
            *b.httperr.entry(e.reason.to_string()).or_default() += 1;
        }
    }

    /// Unreadable lines read at `second` (they have no time of their own).
    pub fn add_malformed(&mut self, second: i64, m: &Malformed) {
        if m.total() == 0 {
            return;
        }
        if let Some(b) = self.bucket(second) {
            b.malformed.merge(m);
        }
    }

    /// Lines too long to read, at `second`.
    pub fn add_too_long(&mut self, second: i64, count: u64) {
        if count == 0 {
            return;
        }
        if let Some(b) = self.bucket(second) {
            b.malformed.add_unseen(Reason::TooLong, count);
        }
    }

    /// The last `last_s` seconds up to `now` (Unix seconds).
    pub fn figures(&self, now: i64, last_s: u64) -> Figures {
        let from = now - last_s as i64;
        let mut f = Figures::default();
        let mut oldest = None;
        for b in self
            .buckets
            .iter()
            .filter(|b| b.second > from && b.second <= now)
        {
            oldest.get_or_insert(b.second);
            f.requests += b.requests;
            f.checks += b.checks;
            for c in 1..=5 {
                f.classes[c - 1] += b.classes[c];
            }
            for (k, v) in &b.errors {
                *f.errors.entry(k.clone()).or_default() += v;
            }
            for (k, v) in &b.httperr {
                *f.httperr.entry(k.clone()).or_default() += v;
            }
            f.latency.merge(&b.latency);
            f.malformed.merge(&b.malformed);
        }
        f.covered_s = oldest
            .map_or(0, |o| (now - o + 1).max(0) as u64)
            .min(last_s);
        // URLs of the steps wholly inside the window.
        let mut urls: HashMap<&str, (u64, u64)> = HashMap::new();
        for step in self
            .url_steps
            .iter()
            .filter(|s| s.start > from && s.start <= now)
        {
            for (u, (n, ms)) in &step.urls {
                let e = urls.entry(u.as_str()).or_default();
                e.0 += n;
                e.1 += ms;
            }
        }
        let mut urls: Vec<(String, u64, u64)> = urls
            .into_iter()
            .map(|(u, (n, ms))| (u.to_string(), n, ms))
            .collect();
        urls.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        urls.truncate(URLS_KEPT);
        f.urls = urls;
        f.derive();
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(second: i64, status: u16, ms: u64, path: &str) -> W3cRequest<'_> {
        W3cRequest {
            second,
            site: None,
            method: Some("GET"),
            uri_stem: Some(path),
            uri_query: None,
            host: None,
            user_agent: Some("Mozilla/5.0"),
            client_ip: None,
            status,
            substatus: Some(if status == 500 { 19 } else { 0 }),
            win32_status: Some(0),
            time_taken_ms: Some(ms),
        }
    }

    #[test]
    fn rates_quantiles_and_checks_apart() {
        let checks = Checks {
            paths: vec!["/health.htm".into()],
            user_agents: vec!["farmctl-probe".into()],
        };
        let mut w = Window::new(300);
        // 100 s of traffic: 20 requests a second, 1 in 20 a 500.19, 10 ms
        // except every 20th at 800 ms; plus a health check a second.
        for s in 0..100 {
            for i in 0..20 {
                let status = if i == 0 { 500 } else { 200 };
                let ms = if i == 1 { 800 } else { 10 };
                w.add(&req(1_000 + s, status, ms, "/shop"), &checks);
            }
            w.add(&req(1_000 + s, 200, 1, "/HEALTH.htm"), &checks);
        }
        let mut bad = Malformed::default();
        bad.add(Reason::FieldCount, "a b");
        w.add_malformed(1_099, &bad);
        w.add_too_long(1_099, 2);
        let f = w.figures(1_099, 60);
        assert_eq!(f.covered_s, 60);
        // The URLs of the window's whole 10-second steps: /shop alone
        // (the health file is a check).
        assert_eq!(f.urls.len(), 1);
        assert_eq!(f.urls[0].0, "/shop");
        assert_eq!(f.urls[0].1, 20 * 60);
        assert_eq!((f.requests, f.checks), (1_200, 60));
        assert_eq!(f.classes[4], 60);
        assert_eq!(f.errors.get("500.19"), Some(&60));
        assert!((f.error_rate.unwrap() - 0.05).abs() < 1e-9);
        assert_eq!(f.p50_ms, Some(10.0));
        let p99 = f.p99_ms.unwrap();
        assert!(
            (p99 - 800.0).abs() / 800.0 <= crate::QUANTILE_ERROR,
            "{p99}"
        );
        assert_eq!(f.malformed.total(), 3);
        assert_eq!(f.malformed.count(Reason::TooLong), 2);
    }

    #[test]
    fn old_seconds_fall_out_and_no_traffic_has_no_rates() {
        let mut w = Window::new(10);
        w.add(&req(100, 200, 5, "/"), &Checks::default());
        w.add(&req(200, 200, 5, "/"), &Checks::default());
        assert_eq!(w.buckets.len(), 1, "the window holds its span only");
        let f = w.figures(500, 60);
        assert_eq!(f.requests, 0);
        assert_eq!(f.error_rate, None);
        assert_eq!(f.p95_ms, None);
        assert_eq!(f.covered_s, 0);
    }
}
