//! Traffic health: each node judged by what its users got, against its
//! peers over the same minutes — not against fixed thresholds. Pure: the
//! figures come from the agents' Traffic call (and the LB's counters).
//!
//! The rule (README, "Traffic health") judges each **site and pool** of a
//! node against the same site and pool on its peers — so a sick pool does
//! not hide behind a slow site every node has — and only **beyond chance**:
//! - a unit with fewer than [`MIN_REQUESTS`] user requests in the window,
//!   or without a peer unit that has that many, is "not enough data";
//! - **errors**: its 5xx are more than the limit (3 × the peers' pooled
//!   rate, and that rate + 2 points) would give beyond chance (binomial,
//!   p < [`crate::judge::ALPHA`]): 2 errors in 60 against peers at 1 % is
//!   chance, 30 in 600 against 0 % is not;
//! - **latency**: the bottom of a 99.8 % interval on its p95 is above the
//!   limit (2 × the peers' pooled p95, and that + 200 ms) — *and* on the
//!   URLs it shares with its peers its requests take longer than theirs
//!   would (a node sent a slower mix of URLs is not sick), *and* the load
//!   balancer, where it times requests, sees it slower too.
//!
//! A node is an outlier when a unit of it is; the pools named are those
//! units'. A node whose every unit is "not enough data" is `null`.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::agent::{SiteTrafficView, TrafficView};
use farm_proto::latency::Histogram;

/// Fewer user requests than this in the window is not enough to judge.
pub const MIN_REQUESTS: u64 = 50;
const ERROR_FACTOR: f64 = 3.0;
const ERROR_MARGIN: f64 = 0.02;
const LATENCY_FACTOR: f64 = 2.0;
const LATENCY_MARGIN_MS: f64 = 200.0;
/// The share of a unit's timed requests its peers' URLs must cover for the
/// URL-mix check to speak.
const MIX_COVERAGE: f64 = 0.5;

#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// One pool's (site's) share of a node's traffic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct PoolTraffic {
    pub pool: String,
    pub site: String,
    pub requests: u64,
    pub error_rate: Option<f64>,
    pub latency_ms: Latency,
    /// The pool's request queue now and its longest over the window, its
    /// workers' CPU (%) and private bytes: `null` where the agent cannot
    /// read the performance counters.
    pub queue: Option<u64>,
    pub queue_max: Option<u64>,
    pub cpu_percent: Option<f64>,
    pub private_bytes: Option<u64>,
    /// Its user requests answered 5xx.
    pub status_5xx: u64,
    /// The latency histogram and the busiest URLs (stem, timed requests,
    /// ms summed) the rule compares with the peers'; not in JSON.
    #[serde(skip)]
    pub latency: Histogram,
    #[serde(skip)]
    pub urls: Vec<(String, u64, u64)>,
}

/// A node's traffic in `status --output json` (`nodes[].traffic`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NodeTraffic {
    /// Seconds the figures cover.
    pub window_s: u64,
    /// User requests (health checks and probes apart, in `checks`).
    pub requests: u64,
    pub checks: u64,
    pub rps: f64,
    pub status_5xx: u64,
    /// 5xx over user requests; `null` without requests.
    pub error_rate: Option<f64>,
    /// The worst site's quantiles (a node's sites are not merged).
    pub latency_ms: Latency,
    /// Requests waiting in the node's pools' HTTP.sys queues now, and the
    /// most over the window (performance counters; `null` where the agent
    /// cannot read them).
    pub queue: Option<u64>,
    pub queue_max: Option<u64>,
    /// The pools' workers: CPU (%, may pass 100 on several cores) and
    /// private bytes, summed; requests they run now.
    pub cpu_percent: Option<f64>,
    pub private_bytes: Option<u64>,
    pub active_requests: Option<u64>,
    /// HTTP.sys errors by reason.
    pub httperr: BTreeMap<String, u64>,
    /// 5xx by status.substatus.
    pub errors: BTreeMap<String, u64>,
    pub pools: Vec<PoolTraffic>,
    /// Fields the logs lack for a judgement.
    pub missing_fields: Vec<String>,
    /// Since when the figures run (RFC 3339, UTC): the agent's start, or
    /// the last recycle of a pool (its window starts again). A window
    /// asked for before it covers less — "no data yet" is not "healthy".
    pub since: Option<String>,
    /// Lines of the window the agent could not read, by reason
    /// (`field_count`, `no_fields`, `no_date`, `bad_date`, `bad_time`,
    /// `bad_status`, `too_long`).
    pub malformed: u64,
    pub malformed_reasons: BTreeMap<String, u64>,
    /// Why a log cannot be followed now (a site's folder missing or
    /// unreadable, the HTTP.sys log's): the figures are incomplete.
    pub problem: Option<String>,
}

fn rate(errors: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| errors as f64 / requests as f64)
}

fn worst(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    values
        .flatten()
        .fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

impl NodeTraffic {
    /// One line for people: `240 requests in 60s, 5xx 5.0%, p95 850 ms`.
    pub fn line(&self) -> String {
        let mut s = format!("{} request(s) in {}s", self.requests, self.window_s);
        if let Some(r) = self.error_rate {
            s.push_str(&format!(", 5xx {:.1}%", r * 100.0));
        }
        if let Some(p) = self.latency_ms.p95 {
            s.push_str(&format!(", p95 {p:.0} ms"));
        }
        if let Some(q) = self.queue {
            s.push_str(&format!(", queue {q}"));
        }
        s
    }

    pub fn from_view(v: &TrafficView) -> Option<NodeTraffic> {
        if v.unavailable.is_some() {
            return None;
        }
        let sites = &v.sites;
        let window_s = sites.iter().map(|s| s.covered_s).max().unwrap_or(0);
        let requests = sites.iter().map(|s| s.requests).sum();
        let status_5xx = sites.iter().map(|s| s.classes[4]).sum();
        let mut httperr = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut missing = Vec::new();
        let gauges = pools_once(sites);
        let mut malformed_reasons: BTreeMap<String, u64> = BTreeMap::new();
        let mut problems: Vec<String> = Vec::new();
        for s in sites {
            for (k, n) in &s.malformed_reasons {
                *malformed_reasons.entry(k.clone()).or_insert(0) += n;
            }
            if let Some(p) = &s.problem {
                problems.push(format!("site {}: {p}", s.site));
            }
            for (k, n) in &s.httperr {
                *httperr.entry(k.clone()).or_insert(0) += n;
            }
            for (k, n) in &s.errors {
                *errors.entry(k.clone()).or_insert(0) += n;
            }
            for m in &s.missing {
                if !missing.contains(m) {
                    missing.push(m.clone());
                }
            }
        }
        Some(NodeTraffic {
            window_s,
            requests,
            checks: sites.iter().map(|s| s.checks).sum(),
            rps: if window_s > 0 {
                requests as f64 / window_s as f64
            } else {
                0.0
            },
            status_5xx,
            error_rate: rate(status_5xx, requests),
            latency_ms: Latency {
                p50: worst(sites.iter().map(|s| s.p50_ms)),
                p95: worst(sites.iter().map(|s| s.p95_ms)),
                p99: worst(sites.iter().map(|s| s.p99_ms)),
            },
            queue: sum(gauges.iter().map(|g| g.queue)),
            queue_max: sum(gauges.iter().map(|g| g.queue_max)),
            cpu_percent: sum(gauges.iter().map(|g| g.cpu_percent)),
            private_bytes: sum(gauges.iter().map(|g| g.private_bytes)),
            active_requests: sum(gauges.iter().map(|g| g.active_requests)),
            httperr,
            errors,
            pools: sites.iter().map(pool_traffic).collect(),
            missing_fields: missing,
            since: sites
                .iter()
                .filter_map(|s| s.since)
                .min()
                .and_then(|t| jiff::Timestamp::from_second(t).ok())
                .map(|t| t.to_string()),
            malformed: sites.iter().map(|s| s.malformed).sum(),
            malformed_reasons,
            problem: {
                problems.extend(
                    v.httperr_problem
                        .iter()
                        .map(|p| format!("HTTP.sys error log: {p}")),
                );
                (!problems.is_empty()).then(|| problems.join("; "))
            },
        })
    }
}

/// Each pool's gauges once, however many sites it serves.
fn pools_once(sites: &[SiteTrafficView]) -> Vec<&crate::agent::PoolGauges> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for s in sites {
        let pool = s.pool.to_ascii_lowercase();
        if seen.contains(&pool) {
            continue;
        }
        seen.push(pool);
        out.extend(s.gauges.as_ref());
    }
    out
}

/// The sum of the figures known; `None` when none is.
fn sum<T: std::iter::Sum<T>>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
    let mut known = values.flatten().peekable();
    known.peek()?;
    Some(known.sum())
}

fn pool_traffic(s: &SiteTrafficView) -> PoolTraffic {
    PoolTraffic {
        pool: s.pool.clone(),
        site: s.site.clone(),
        requests: s.requests,
        error_rate: rate(s.classes[4], s.requests),
        latency_ms: Latency {
            p50: s.p50_ms,
            p95: s.p95_ms,
            p99: s.p99_ms,
        },
        queue: s.gauges.as_ref().and_then(|g| g.queue),
        queue_max: s.gauges.as_ref().and_then(|g| g.queue_max),
        cpu_percent: s.gauges.as_ref().and_then(|g| g.cpu_percent),
        private_bytes: s.gauges.as_ref().and_then(|g| g.private_bytes),
        status_5xx: s.classes[4],
        latency: s.latency.clone(),
        urls: s.urls.clone(),
    }
}

/// A node's verdict: `Some(true)` sick, `Some(false)` like its peers,
/// `None` not enough data; with the reasons either way.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outlier: Option<bool>,
    pub reasons: Vec<String>,
    /// The pools whose own figures break the rule.
    pub pools: Vec<String>,
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// The unit's name in words.
fn which(p: &PoolTraffic) -> String {
    if p.pool.is_empty() {
        format!("site {}", p.site)
    } else {
        format!("pool {} (site {})", p.pool, p.site)
    }
}

fn same_unit(a: &PoolTraffic, b: &PoolTraffic) -> bool {
    a.site.eq_ignore_ascii_case(&b.site) && a.pool.eq_ignore_ascii_case(&b.pool)
}

/// What one unit's judgement found.
enum Found {
    NotEnough(String),
    Like,
    Sick(Vec<String>),
}

/// What a unit's peers — the same site and pool on the other nodes with
/// enough data — did together.
#[derive(Default, Clone)]
struct Peers {
    count: usize,
    errors: u64,
    requests: u64,
    latency: Histogram,
    urls: std::collections::HashMap<String, (u64, u64)>,
}

impl Peers {
    fn add(&mut self, p: &PoolTraffic) {
        self.count += 1;
        self.errors += p.status_5xx;
        self.requests += p.requests;
        self.latency.merge(&p.latency);
        for (url, n, ms) in &p.urls {
            let e = self.urls.entry(url.clone()).or_default();
            e.0 += n;
            e.1 += ms;
        }
    }

    /// These peers without `p` (one of them): a unit's peers are every
    /// eligible unit but itself, pooled once per site and pool.
    fn without(&self, p: &PoolTraffic) -> Peers {
        let mut out = self.clone();
        out.count -= 1;
        out.errors -= p.status_5xx;
        out.requests -= p.requests;
        for (bin, n) in &p.latency.0 {
            if let Some(v) = out.latency.0.get_mut(bin) {
                *v -= n;
                if *v == 0 {
                    out.latency.0.remove(bin);
                }
            }
        }
        for (url, n, ms) in &p.urls {
            if let Some(e) = out.urls.get_mut(url) {
                e.0 -= n;
                e.1 -= ms;
            }
        }
        out
    }
}

/// The unit's errors against its peers' pooled rate: beyond the limit
/// beyond chance, or not.
fn errors_break(u: &PoolTraffic, peers: &Peers) -> Option<String> {
    let p0 = peers.errors as f64 / peers.requests.max(1) as f64;
    let limit = (p0 * ERROR_FACTOR).max(p0 + ERROR_MARGIN).min(1.0);
    let p = crate::judge::binomial_at_least(u.status_5xx, u.requests, limit);
    (p < crate::judge::ALPHA).then(|| {
        format!(
            "5xx {} ({} of {}) vs peers' {} (limit {}, p = {p:.1e})",
            pct(u.status_5xx as f64 / u.requests.max(1) as f64),
            u.status_5xx,
            u.requests,
            pct(p0),
            pct(limit)
        )
    })
}

/// The unit's requests on the URLs it shares with its peers: how long
/// they take (mean ms) and how long they would at the peers' pace; `None`
/// when the shared URLs cover too little of its traffic to say.
fn mix_adjusted(u: &PoolTraffic, peers: &Peers) -> Option<(f64, f64)> {
    let timed: u64 = u.urls.iter().map(|(_, n, _)| n).sum();
    let (mut n, mut actual, mut expected) = (0u64, 0f64, 0f64);
    for (url, un, ums) in &u.urls {
        if let Some((pn, pms)) = peers.urls.get(url).filter(|(pn, _)| *pn > 0) {
            n += un;
            actual += *ums as f64;
            expected += *un as f64 * (*pms as f64 / *pn as f64);
        }
    }
    (timed > 0 && n as f64 >= MIX_COVERAGE * timed as f64)
        .then(|| (actual / n as f64, expected / n as f64))
}

/// The unit's p95 against its peers' pooled one, beyond chance; then the
/// URL mix and the load balancer's own timing must agree it is slow
/// (`Err`: slower, but explained).
fn latency_breaks(
    u: &PoolTraffic,
    peers: &Peers,
    lb: Option<(f64, f64)>,
) -> Result<Option<String>, String> {
    let (Some(mine), Some(theirs)) = (u.latency.quantile(0.95), peers.latency.quantile(0.95))
    else {
        return Ok(None);
    };
    let limit = (theirs * LATENCY_FACTOR).max(theirs + LATENCY_MARGIN_MS);
    let Some((low, _)) = crate::judge::quantile_interval(&u.latency, 0.95) else {
        return Ok(None);
    };
    if low <= limit {
        return Ok(None);
    }
    let said = format!("p95 {mine:.0} ms vs peers' {theirs:.0} ms (limit {limit:.0} ms, at least {low:.0} ms beyond chance)");
    if let Some((actual, expected)) = mix_adjusted(u, peers) {
        if actual <= (expected * LATENCY_FACTOR).max(expected + LATENCY_MARGIN_MS) {
            return Err(format!(
                "{said}, but its URLs take what they take on its peers (mean {actual:.0} ms, {expected:.0} ms at their pace): another mix of URLs, not a sick pool"
            ));
        }
    }
    if let Some((node, peers)) = lb {
        if node <= (peers * LATENCY_FACTOR).max(peers + LATENCY_MARGIN_MS) {
            return Err(format!(
                "{said}, but the load balancer times its responses at {node:.0} ms against its peers' {peers:.0} ms: not slow for the LB's users"
            ));
        }
    }
    Ok(Some(said))
}

/// The median of `v` (`None` when empty).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Each node against the others (same order as `nodes`; `None`: the node
/// could not be asked).
pub fn judge(nodes: &[Option<NodeTraffic>]) -> Vec<Verdict> {
    judge_with_lb(nodes, &[])
}

/// [`judge`], with the load balancer's response time per node (`rtime`,
/// in `nodes` order; empty or `None` where it does not time) as the
/// cross-check of a latency outlier.
pub fn judge_with_lb(nodes: &[Option<NodeTraffic>], rtime: &[Option<f64>]) -> Vec<Verdict> {
    // Every site and pool pooled once over the units with enough data; a
    // unit's peers are that less itself (a thousand nodes are judged
    // without pooling their peers a thousand times).
    let mut pooled: Vec<(&PoolTraffic, Peers)> = Vec::new();
    for p in nodes
        .iter()
        .flatten()
        .flat_map(|t| &t.pools)
        .filter(|p| p.requests >= MIN_REQUESTS)
    {
        match pooled.iter_mut().find(|(k, _)| same_unit(k, p)) {
            Some((_, peers)) => peers.add(p),
            None => {
                let mut peers = Peers::default();
                peers.add(p);
                pooled.push((p, peers));
            }
        }
    }
    nodes
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let Some(t) = t else {
                return Verdict {
                    outlier: None,
                    reasons: vec!["no traffic figures from this node".into()],
                    pools: Vec::new(),
                };
            };
            let lb = rtime.get(i).copied().flatten().and_then(|mine| {
                let others: Vec<f64> = rtime
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != i)
                    .filter_map(|(_, r)| *r)
                    .collect();
                median(others).map(|m| (mine, m))
            });
            let mut found = Vec::new();
            for u in t.pools.iter() {
                let f = if u.requests < MIN_REQUESTS {
                    Found::NotEnough(format!(
                        "{}: not enough data: {} request(s) in {}s ({MIN_REQUESTS} needed)",
                        which(u),
                        u.requests,
                        t.window_s
                    ))
                } else {
                    let peers = pooled
                        .iter()
                        .find(|(k, _)| same_unit(k, u))
                        .map(|(_, all)| all.without(u))
                        .unwrap_or_default();
                    if peers.count == 0 {
                        Found::NotEnough(format!(
                            "{}: not enough data: no peer serves it with enough requests to compare with",
                            which(u)
                        ))
                    } else {
                        let mut why: Vec<String> = errors_break(u, &peers).into_iter().collect();
                        match latency_breaks(u, &peers, lb) {
                            Ok(Some(w)) => why.push(w),
                            Ok(None) => {}
                            // Slower, explained: said, not sick.
                            Err(note) => found.push((u, Found::NotEnough(format!("{}: {note}", which(u))))),
                        }
                        if why.is_empty() {
                            Found::Like
                        } else {
                            Found::Sick(why)
                        }
                    }
                };
                found.push((u, f));
            }
            let sick: Vec<(&PoolTraffic, &Vec<String>)> = found
                .iter()
                .filter_map(|(u, f)| match f {
                    Found::Sick(w) => Some((*u, w)),
                    _ => None,
                })
                .collect();
            let notes: Vec<String> = found
                .iter()
                .filter_map(|(_, f)| match f {
                    Found::NotEnough(w) => Some(w.clone()),
                    _ => None,
                })
                .collect();
            let judged = found.iter().any(|(_, f)| !matches!(f, Found::NotEnough(_)));
            if !sick.is_empty() {
                let mut pools = Vec::new();
                for (u, _) in &sick {
                    if !u.pool.is_empty() && !pools.contains(&u.pool) {
                        pools.push(u.pool.clone());
                    }
                }
                let reasons = sick
                    .iter()
                    .map(|(u, w)| format!("{}: {}", which(u), w.join(", ")))
                    .collect();
                return Verdict {
                    outlier: Some(true),
                    reasons,
                    pools,
                };
            }
            if judged {
                // Like its peers; what was not judged, and why, still said.
                return Verdict {
                    outlier: Some(false),
                    reasons: notes,
                    pools: Vec::new(),
                };
            }
            let mut reasons = if notes.is_empty() {
                vec![format!(
                    "not enough data: {} request(s) in {}s ({MIN_REQUESTS} needed)",
                    t.requests, t.window_s
                )]
            } else {
                notes
            };
            if let Some(p) = &t.problem {
                reasons.push(p.clone());
            }
            Verdict {
                outlier: None,
                reasons,
                pools: Vec::new(),
            }
        })
        .collect()
}

/// Every node's traffic over the last `last_s` seconds and its verdict.
pub async fn survey(
    farm: &crate::farm::Farm,
    last_s: u32,
) -> (Vec<Option<NodeTraffic>>, Vec<Verdict>) {
    let (views, lb) = tokio::join!(
        futures::future::join_all(farm.agents.iter().map(|a| a.traffic(last_s))),
        farm.lb.traffic(&farm.inventory.nodes)
    );
    judged(&views, &rtimes(&lb.ok().flatten().unwrap_or_default()))
}

/// The load balancer's response time per node, where it times them.
pub fn rtimes(lb: &[Option<crate::lb::LbTraffic>]) -> Vec<Option<f64>> {
    lb.iter()
        .map(|t| t.as_ref().and_then(|t| t.rtime_ms).map(|v| v as f64))
        .collect()
}

/// Each node's traffic from its agent's answer, and the outlier rule's
/// verdicts on them (`rtime`: the LB's response time per node, the
/// cross-check of a latency outlier).
pub fn judged(
    views: &[Result<TrafficView, crate::agent::AgentError>],
    rtime: &[Option<f64>],
) -> (Vec<Option<NodeTraffic>>, Vec<Verdict>) {
    let traffic: Vec<Option<NodeTraffic>> = views
        .iter()
        .map(|t| t.as_ref().ok().and_then(NodeTraffic::from_view))
        .collect();
    let verdicts = judge_with_lb(&traffic, rtime);
    (traffic, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One site's traffic: `requests`, `errors` of them 5xx, latency
    /// spread around `ms`, all on `url`.
    fn site(
        name: &str,
        pool: &str,
        requests: u64,
        errors: u64,
        ms: u64,
        url: &str,
    ) -> SiteTrafficView {
        let mut classes = [0; 5];
        classes[1] = requests - errors;
        classes[4] = errors;
        let mut latency = Histogram::default();
        let mut total = 0;
        for i in 0..requests {
            let v = ms + i % 11;
            latency.record(v);
            total += v;
        }
        SiteTrafficView {
            site: name.into(),
            pool: pool.into(),
            covered_s: 60,
            requests,
            checks: 60,
            classes,
            p50_ms: latency.quantile(0.5),
            p95_ms: latency.quantile(0.95),
            p99_ms: latency.quantile(0.99),
            latency,
            urls: vec![(url.to_string(), requests, total)],
            ..SiteTrafficView::default()
        }
    }

    fn node(sites: Vec<SiteTrafficView>) -> Option<NodeTraffic> {
        NodeTraffic::from_view(&TrafficView {
            sites,
            ..TrafficView::default()
        })
    }

    fn shop(requests: u64, errors: u64, ms: u64) -> Option<NodeTraffic> {
        node(vec![site("shop", "ShopPool", requests, errors, ms, "/")])
    }

    fn flags(v: &[Verdict]) -> Vec<Option<bool>> {
        v.iter().map(|v| v.outlier).collect()
    }

    #[test]
    fn the_sick_node_and_pool_are_named_the_others_are_not() {
        let v = judge(&[
            shop(600, 0, 20),
            shop(600, 30, 830),
            shop(600, 1, 22),
            shop(600, 0, 19),
        ]);
        assert_eq!(
            flags(&v),
            [Some(false), Some(true), Some(false), Some(false)]
        );
        let why = v[1].reasons.join("; ");
        assert!(
            why.contains("pool ShopPool (site shop): 5xx 5.0% (30 of 600) vs peers' 0.1%"),
            "{why}"
        );
        assert!(why.contains("p95 840 ms vs peers'"), "{why}");
        assert_eq!(v[1].pools, ["ShopPool"]);
    }

    #[test]
    fn too_little_traffic_is_not_enough_data_never_healthy() {
        let v = judge(&[shop(600, 0, 20), shop(10, 5, 900), None]);
        assert_eq!(v[1].outlier, None);
        assert!(
            v[1].reasons[0].contains("not enough data: 10 request(s)"),
            "{:?}",
            v[1].reasons
        );
        assert_eq!(v[2].outlier, None);
        // Alone with enough data: nothing to compare with.
        assert_eq!(v[0].outlier, None);
        assert!(v[0].reasons[0].contains("no peer"), "{:?}", v[0].reasons);
    }

    #[test]
    fn a_small_difference_is_not_an_outlier() {
        let v = judge(&[shop(600, 6, 40), shop(600, 12, 70), shop(600, 9, 50)]);
        assert!(v.iter().all(|v| v.outlier == Some(false)), "{v:?}");
    }

    /// 2 errors in 60 (binomial p ≈ 0.12 against peers at 1%) was flagged
    /// and recycled: it is chance.
    #[test]
    fn two_errors_in_sixty_against_one_percent_is_chance() {
        let v = judge(&[shop(60, 2, 20), shop(6_000, 60, 20), shop(6_000, 60, 20)]);
        assert_eq!(v[0].outlier, Some(false), "{v:?}");
        // 45 in 600 against 1% is not (the limit is 3%).
        let v = judge(&[shop(600, 45, 20), shop(6_000, 60, 20), shop(6_000, 60, 20)]);
        assert_eq!(v[0].outlier, Some(true), "{v:?}");
    }

    /// A sick pool hid behind a slow site every node has: ShopPool at
    /// ~900 ms against ~0 ms on its peers, each node's reports site at
    /// ~1,500 ms. Judged per site and pool, ShopPool is named.
    #[test]
    fn a_sick_pool_behind_a_slow_site_every_node_has() {
        let with = |shop_ms: u64| {
            node(vec![
                site("shop", "ShopPool", 600, 0, shop_ms, "/"),
                site("reports", "ReportsPool", 300, 0, 1_488, "/report"),
            ])
        };
        let v = judge(&[with(903), with(1), with(1), with(1)]);
        assert_eq!(
            flags(&v),
            [Some(true), Some(false), Some(false), Some(false)],
            "{v:?}"
        );
        assert_eq!(v[0].pools, ["ShopPool"]);
    }

    /// A node sent another mix of URLs (`/slow?ms=400`) is not sick: on
    /// the URLs it shares with its peers it is as fast as they are.
    #[test]
    fn another_url_mix_is_not_an_outlier() {
        let mixed = |slow: u64| {
            let mut s = site("shop", "ShopPool", 600, 0, 10, "/");
            // `slow` of its requests are /slow at 400 ms.
            for _ in 0..slow {
                s.latency.record(400);
            }
            s.requests += slow;
            s.classes[1] += slow;
            s.urls.push(("/slow".into(), slow, 400 * slow));
            node(vec![s])
        };
        // Every node serves some /slow; web01 a lot more of it.
        let v = judge(&[mixed(400), mixed(5), mixed(5), mixed(5)]);
        assert_eq!(v[0].outlier, Some(false), "{v:?}");
        assert!(
            v[0].reasons.join(" ").contains("another mix of URLs"),
            "{v:?}"
        );
        // The same mix, but its / is slow: sick.
        let mut slow_root = site("shop", "ShopPool", 600, 0, 700, "/");
        for _ in 0..5 {
            slow_root.latency.record(400);
        }
        slow_root.urls.push(("/slow".into(), 5, 2_000));
        let v = judge(&[node(vec![slow_root]), mixed(5), mixed(5), mixed(5)]);
        assert_eq!(v[0].outlier, Some(true), "{v:?}");
    }

    /// The load balancer times the node like its peers: its users do not
    /// see the latency its log shows (requests that came around the LB).
    #[test]
    fn the_load_balancers_timing_is_the_cross_check() {
        let nodes = [
            shop(600, 0, 900),
            shop(600, 0, 20),
            shop(600, 0, 20),
            shop(600, 0, 20),
        ];
        let v = judge_with_lb(&nodes, &[Some(1.0), Some(2.0), Some(1.0), Some(2.0)]);
        assert_eq!(v[0].outlier, Some(false), "{v:?}");
        assert!(
            v[0].reasons.join(" ").contains("load balancer times"),
            "{v:?}"
        );
        let v = judge_with_lb(&nodes, &[Some(950.0), Some(2.0), Some(1.0), Some(2.0)]);
        assert_eq!(v[0].outlier, Some(true), "{v:?}");
    }

    /// A thousand nodes judged in one go (each unit's peers pooled once).
    #[test]
    fn a_thousand_nodes() {
        let mut nodes: Vec<_> = (0..1_000).map(|_| shop(600, 6, 20)).collect();
        nodes[7] = shop(600, 60, 20);
        let v = judge(&nodes);
        let sick: Vec<usize> = v
            .iter()
            .enumerate()
            .filter(|(_, v)| v.outlier == Some(true))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(sick, [7]);
    }
}
