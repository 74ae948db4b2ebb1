//! The figures of any stretch of logs — a server's site over a day, as
//! copied off the server — computed as the window computes its last
//! minutes (the same counts, the same latency bins, so the same
//! quantiles), plus what a post-mortem asks: the slowest request, the URLs
//! behind the 5xx and behind the time, and the figures minute by minute.
use std::collections::{BTreeMap, HashMap};

use farm_proto::latency::bin_of;

use crate::httperr::HttpErr;
use crate::malformed::Malformed;
use crate::w3c::W3cRequest;
use crate::window::{Checks, Figures};
use crate::Histogram;

/// Distinct URLs kept per summary; the rest are counted together (a scan
/// of random URLs cannot grow memory without bound).
pub const MAX_URLS: usize = 20_000;

/// What one URL (`cs-uri-stem`) got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlStats {
    pub requests: u64,
    pub status_5xx: u64,
    /// Sum of `time-taken` (ms).
    pub total_ms: u64,
    pub max_ms: u64,
}

impl UrlStats {
    fn merge(&mut self, o: &UrlStats) {
        self.requests += o.requests;
        self.status_5xx += o.status_5xx;
        self.total_ms += o.total_ms;
        self.max_ms = self.max_ms.max(o.max_ms);
    }
}

type FastMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Dense latency bins while reading (a summary takes millions of lines);
/// [`Histogram`] when done.
#[derive(Debug, Clone)]
struct Bins(Vec<u64>);

impl Default for Bins {
    fn default() -> Self {
        Bins(vec![0; 2048])
    }
}

impl Bins {
    fn record(&mut self, ms: u64) {
        let b = bin_of(ms) as usize;
        if b >= self.0.len() {
            self.0.resize(b + 1, 0);
        }
        self.0[b] += 1;
    }

    fn histogram(&self) -> Histogram {
        Histogram(
            self.0
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(b, n)| (b as u32, *n))
                .collect(),
        )
    }

    fn merge(&mut self, o: &Bins) {
        if o.0.len() > self.0.len() {
            self.0.resize(o.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&o.0) {
            *a += b;
        }
    }
}

/// One site's (or a whole server's) traffic over a stretch of log.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    requests: u64,
    checks: u64,
    classes: [u64; 5],
    errors: BTreeMap<String, u64>,
    httperr: BTreeMap<String, u64>,
    bins: Bins,
    pub malformed: Malformed,
    /// The slowest user request (ms).
    pub max_ms: Option<u64>,
    /// The first and last second seen (requests and errors).
    pub first: Option<i64>,
    pub last: Option<i64>,
    urls: FastMap<UrlStats>,
    /// URLs past [`MAX_URLS`], together.
    pub other_urls: UrlStats,
}

impl Summary {
    fn saw(&mut self, second: i64) {
        self.first = Some(self.first.map_or(second, |f| f.min(second)));
        self.last = Some(self.last.map_or(second, |l| l.max(second)));
    }

    pub fn add(&mut self, r: &W3cRequest<'_>, checks: &Checks) {
        self.saw(r.second);
        if checks.is_check(r) {
            self.checks += 1;
            return;
        }
        self.requests += 1;
        let class = usize::from(r.status / 100);
        let is_5xx = class == 5;
        if (1..=5).contains(&class) {
            self.classes[class - 1] += 1;
        }
        if is_5xx {
            let key = format!("{}.{}", r.status, r.substatus.unwrap_or(0));
            *self.errors.entry(key).or_default() += 1;
        }
        let ms = r.time_taken_ms;
        if let Some(ms) = ms {
            self.bins.record(ms);
            self.max_ms = Some(self.max_ms.map_or(ms, |m| m.max(ms)));
        }
        let stem = r.uri_stem.unwrap_or("-");
        let full = self.urls.len() >= MAX_URLS;
        let stats = match self.urls.get_mut(stem) {
            Some(s) => s,
            None if full => &mut self.other_urls,
            None => self.urls.entry(stem.to_string()).or_default(),
        };
        stats.requests += 1;
        stats.status_5xx += u64::from(is_5xx);
        if let Some(ms) = ms {
            stats.total_ms += ms;
            stats.max_ms = stats.max_ms.max(ms);
        }
    }

    pub fn add_httperr(&mut self, e: &HttpErr<'_>) {
        self.saw(e.second);
        *self.httperr.entry(e.reason.to_string()).or_default() += 1;
    }

    pub fn merge(&mut self, o: &Summary) {
        self.requests += o.requests;
        self.checks += o.checks;
        for (a, b) in self.classes.iter_mut().zip(o.classes) {
            *a += b;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.httperr {
            *self.httperr.entry(k.clone()).or_default() += v;
        }
        self.bins.merge(&o.bins);
        self.malformed.merge(&o.malformed);
        self.max_ms = self.max_ms.max(o.max_ms);
        if let Some(f) = o.first {
            self.saw(f);
        }
        if let Some(l) = o.last {
            self.saw(l);
        }
        for (url, s) in &o.urls {
            let full = self.urls.len() >= MAX_URLS;
            match self.urls.get_mut(url) {
                Some(mine) => mine.merge(s),
                None if full => self.other_urls.merge(s),
                None => {
                    self.urls.insert(url.clone(), *s);
                }
            }
        }
        self.other_urls.merge(&o.other_urls);
    }

    /// The figures as a window gives them; `covered_s` is the stretch
    /// from the first line to the last.
    pub fn figures(&self) -> Figures {
        let mut f = Figures {
            covered_s: match (self.first, self.last) {
                (Some(a), Some(b)) => (b - a + 1).max(0) as u64,
                _ => 0,
            },
            requests: self.requests,
            checks: self.checks,
            classes: self.classes,
            errors: self.errors.clone(),
            httperr: self.httperr.clone(),
            latency: self.bins.histogram(),
            malformed: self.malformed.clone(),
            urls: self
                .top_urls(crate::window::URLS_KEPT, |u| u.requests)
                .into_iter()
                .map(|(u, s)| (u, s.requests, s.total_ms))
                .collect(),
            ..Figures::default()
        };
        f.derive();
        f
    }

    /// The `n` URLs with the most of `key`, most first (ties by name).
    pub fn top_urls(&self, n: usize, key: impl Fn(&UrlStats) -> u64) -> Vec<(String, UrlStats)> {
        let mut v: Vec<(&String, &UrlStats)> =
            self.urls.iter().filter(|(_, s)| key(s) > 0).collect();
        v.sort_by(|a, b| key(b.1).cmp(&key(a.1)).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(n)
            .map(|(u, s)| (u.clone(), *s))
            .collect()
    }
}

/// One step of a series (`farmctl logs --by 1m`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    pub requests: u64,
    pub status_5xx: u64,
    pub latency: Histogram,
}

/// Figures step by step: a point per `step_s` seconds that had traffic.
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub step_s: i64,
    pub points: BTreeMap<i64, Point>,
}

impl Series {
    pub fn new(step_s: u64) -> Self {
        Series {
            step_s: step_s.max(1) as i64,
            points: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, r: &W3cRequest<'_>, checks: &Checks) {
        if checks.is_check(r) {
            return;
        }
        let start = r.second.div_euclid(self.step_s) * self.step_s;
        let p = self.points.entry(start).or_default();
        p.requests += 1;
        p.status_5xx += u64::from(r.status / 100 == 5);
        if let Some(ms) = r.time_taken_ms {
            p.latency.record(ms);
        }
    }

    pub fn merge(&mut self, o: &Series) {
        for (t, p) in &o.points {
            let mine = self.points.entry(*t).or_default();
            mine.requests += p.requests;
            mine.status_5xx += p.status_5xx;
            mine.latency.merge(&p.latency);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::w3c::W3cReader;

    #[test]
    fn a_summary_gives_what_the_window_gives_for_the_same_lines() {
        let mut text = String::from(
            "#Fields: date time cs-uri-stem cs(User-Agent) sc-status sc-substatus time-taken\n",
        );
        for i in 0..600u64 {
            let (url, status, ms) = match i % 20 {
                0 => ("/pay", 500, 900 + i),
                1 => ("/health.htm", 200, 1),
                _ => ("/", 200, 10 + i % 7),
            };
            text.push_str(&format!(
                "2026-12-07 10:{:02}:{:02} {url} Mozilla {status} 0 {ms}\n",
                i / 60,
                i % 60
            ));
        }
        let checks = Checks {
            paths: vec!["/health.htm".into()],
            user_agents: vec![],
        };
        let mut r = W3cReader::default();
        let mut s = Summary::default();
        let mut w = crate::window::Window::new(3_600);
        for q in r.read(&text) {
            s.add(&q, &checks);
            w.add(&q, &checks);
        }
        let now = s.last.unwrap();
        let (a, b) = (s.figures(), w.figures(now, 3_600));
        assert_eq!(
            (a.requests, a.checks, a.classes),
            (b.requests, b.checks, b.classes)
        );
        assert_eq!((a.errors, a.latency), (b.errors, b.latency));
        assert_eq!((a.p95_ms, a.covered_s), (b.p95_ms, 600));
        assert_eq!(s.max_ms, Some(1480));
        let top = s.top_urls(1, |u| u.status_5xx);
        assert_eq!((top[0].0.as_str(), top[0].1.status_5xx), ("/pay", 30));
        assert_eq!(s.top_urls(5, |u| u.total_ms)[0].0, "/pay");
    }
}
