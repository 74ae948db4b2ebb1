//! Traffic health: each node judged by what its users got, against its
//! peers over the same minutes — not against fixed thresholds. Pure: the
//! figures come from the agents' Traffic call.
//!
//! The rule (README, "Traffic health"): a node with fewer than
//! [`MIN_REQUESTS`] user requests in the window, or without a peer that
//! has that many, is "not enough data" (`outlier: null`), never healthy or
//! sick. Otherwise it is an outlier when its 5xx rate is above both three
//! times its peers' median and that median plus two percentage points, or
//! when its p95 latency is above both twice its peers' median p95 and that
//! median plus 200 ms. The pools named are those whose own site figures
//! break the same rule.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::agent::{SiteTrafficView, TrafficView};

/// Fewer user requests than this in the window is not enough to judge.
pub const MIN_REQUESTS: u64 = 50;
const ERROR_FACTOR: f64 = 3.0;
const ERROR_MARGIN: f64 = 0.02;
const LATENCY_FACTOR: f64 = 2.0;
const LATENCY_MARGIN_MS: f64 = 200.0;

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
    /// when the sites' logs could first be read. A window asked for
    /// before it covers less — "no data yet" is not "healthy".
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

/// The median of `sorted` with one copy of `left_out` taken away (a
/// node's peers: every node but itself), in O(log n): the outlier rule
/// judges a thousand nodes without sorting their peers a thousand times.
fn median_without(sorted: &[f64], left_out: Option<f64>) -> Option<f64> {
    let gone = left_out.and_then(|v| sorted.binary_search_by(|x| x.total_cmp(&v)).ok());
    let n = sorted.len() - usize::from(gone.is_some());
    if n == 0 {
        return None;
    }
    // The k-th value of the list without the removed one.
    let at = |k: usize| match gone {
        Some(g) if k >= g => sorted[k + 1],
        _ => sorted[k],
    };
    Some(if n % 2 == 1 {
        at(n / 2)
    } else {
        (at(n / 2 - 1) + at(n / 2)) / 2.0
    })
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// What breaks the rule in `(errors, p95)` against the peers' medians.
fn breaks(
    error_rate: Option<f64>,
    p95: Option<f64>,
    peer_err: Option<f64>,
    peer_p95: Option<f64>,
) -> Vec<String> {
    let mut why = Vec::new();
    if let (Some(e), Some(m)) = (error_rate, peer_err) {
        if e > (m * ERROR_FACTOR).max(m + ERROR_MARGIN) {
            why.push(format!("5xx {} vs peers' {}", pct(e), pct(m)));
        }
    }
    if let (Some(p), Some(m)) = (p95, peer_p95) {
        if p > (m * LATENCY_FACTOR).max(m + LATENCY_MARGIN_MS) {
            why.push(format!("p95 {p:.0} ms vs peers' {m:.0} ms"));
        }
    }
    why
}

/// Each node against the others (same order as `nodes`; `None`: the node
/// could not be asked).
pub fn judge(nodes: &[Option<NodeTraffic>]) -> Vec<Verdict> {
    let enough = |t: &NodeTraffic| t.requests >= MIN_REQUESTS;
    // Every node with enough data, its figures sorted once; a node's
    // peers are these without itself.
    let eligible: Vec<&NodeTraffic> = nodes.iter().flatten().filter(|t| enough(t)).collect();
    let sorted = |f: fn(&NodeTraffic) -> Option<f64>| {
        let mut v: Vec<f64> = eligible.iter().filter_map(|t| f(t)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    };
    let all_err = sorted(|t| t.error_rate);
    let all_p95 = sorted(|t| t.latency_ms.p95);
    nodes
        .iter()
        .map(|t| {
            let Some(t) = t else {
                return Verdict {
                    outlier: None,
                    reasons: vec!["no traffic figures from this node".into()],
                    pools: Vec::new(),
                };
            };
            if !enough(t) {
                return Verdict {
                    outlier: None,
                    reasons: vec![format!(
                        "not enough data: {} request(s) in {}s ({MIN_REQUESTS} needed){}",
                        t.requests,
                        t.window_s,
                        // "No data" because a log cannot be read: said.
                        t.problem
                            .as_ref()
                            .map(|p| format!("; {p}"))
                            .unwrap_or_default()
                    )],
                    pools: Vec::new(),
                };
            }
            // This node is among the eligible ones: its peers are the rest.
            if eligible.len() < 2 {
                return Verdict {
                    outlier: None,
                    reasons: vec![
                        "not enough data: no peer with enough requests to compare with".into(),
                    ],
                    pools: Vec::new(),
                };
            }
            let peer_err = median_without(&all_err, t.error_rate);
            let peer_p95 = median_without(&all_p95, t.latency_ms.p95);
            let node = breaks(t.error_rate, t.latency_ms.p95, peer_err, peer_p95);
            if node.is_empty() {
                return Verdict {
                    outlier: Some(false),
                    reasons: Vec::new(),
                    pools: Vec::new(),
                };
            }
            let mut reasons = node;
            let mut pools = Vec::new();
            for p in &t.pools {
                let pool = breaks(p.error_rate, p.latency_ms.p95, peer_err, peer_p95);
                if !pool.is_empty() && p.requests > 0 {
                    if !p.pool.is_empty() && !pools.contains(&p.pool) {
                        pools.push(p.pool.clone());
                    }
                    // Logs read offline know the site, not its pool.
                    let which = if p.pool.is_empty() {
                        format!("site {}", p.site)
                    } else {
                        format!("pool {} (site {})", p.pool, p.site)
                    };
                    reasons.push(format!("{which}: {}", pool.join(", ")));
                }
            }
            Verdict {
                outlier: Some(true),
                reasons,
                pools,
            }
        })
        .collect()
}

/// Every node's traffic over the last `last_s` seconds and its verdict.
pub async fn survey(
    farm: &crate::farm::Farm,
    last_s: u32,
) -> (Vec<Option<NodeTraffic>>, Vec<Verdict>) {
    let views = futures::future::join_all(farm.agents.iter().map(|a| a.traffic(last_s))).await;
    judged(&views)
}

/// Each node's traffic from its agent's answer, and the outlier rule's
/// verdicts on them.
pub fn judged(
    views: &[Result<TrafficView, crate::agent::AgentError>],
) -> (Vec<Option<NodeTraffic>>, Vec<Verdict>) {
    let traffic: Vec<Option<NodeTraffic>> = views
        .iter()
        .map(|t| t.as_ref().ok().and_then(NodeTraffic::from_view))
        .collect();
    let verdicts = judge(&traffic);
    (traffic, verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The median without one value, from the list sorted once, is
        /// the median of the others sorted afresh.
        #[test]
        fn the_median_without_one_is_the_median_of_the_rest(
            values in proptest::collection::vec(0u32..50, 1..40),
            pick in 0usize..40,
        ) {
            let all: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
            let mut sorted = all.clone();
            sorted.sort_by(|a, b| a.total_cmp(b));
            let k = pick % all.len();
            let mut rest: Vec<f64> = all.clone();
            rest.remove(k);
            rest.sort_by(|a, b| a.total_cmp(b));
            let expected = median_without(&rest, None);
            proptest::prop_assert_eq!(median_without(&sorted, Some(all[k])), expected);
        }
    }

    fn node(requests: u64, errors: u64, p95: f64) -> Option<NodeTraffic> {
        let mut classes = [0; 5];
        classes[1] = requests - errors;
        classes[4] = errors;
        NodeTraffic::from_view(&TrafficView {
            sites: vec![SiteTrafficView {
                site: "shop".into(),
                pool: "ShopPool".into(),
                covered_s: 60,
                requests,
                checks: 60,
                classes,
                errors: BTreeMap::new(),
                httperr: BTreeMap::new(),
                p50_ms: Some(p95 / 2.0),
                p95_ms: Some(p95),
                p99_ms: Some(p95 * 1.2),
                missing: Vec::new(),
                latency: Default::default(),
                gauges: None,
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    #[test]
    fn the_sick_node_and_pool_are_named_the_others_are_not() {
        let v = judge(&[
            node(600, 0, 20.0),
            node(600, 30, 830.0), // 5 % and 800 ms slower
            node(600, 1, 22.0),
            node(600, 0, 19.0),
        ]);
        let flags: Vec<Option<bool>> = v.iter().map(|v| v.outlier).collect();
        assert_eq!(flags, [Some(false), Some(true), Some(false), Some(false)]);
        let why = v[1].reasons.join("; ");
        assert!(why.contains("5xx 5.0% vs peers' 0.0%"), "{why}");
        assert!(why.contains("p95 830 ms vs peers' 20 ms"), "{why}");
        assert!(why.contains("pool ShopPool (site shop)"), "{why}");
    }

    #[test]
    fn too_little_traffic_is_not_enough_data_never_healthy() {
        let v = judge(&[node(600, 0, 20.0), node(10, 5, 900.0), None]);
        assert_eq!(v[1].outlier, None);
        assert!(v[1].reasons[0].contains("not enough data: 10 request(s)"));
        assert_eq!(v[2].outlier, None);
        // Alone with enough data: nothing to compare with.
        assert_eq!(v[0].outlier, None);
    }

    #[test]
    fn a_small_difference_is_not_an_outlier() {
        let v = judge(&[node(600, 6, 40.0), node(600, 12, 70.0), node(600, 9, 50.0)]);
        assert!(v.iter().all(|v| v.outlier == Some(false)), "{v:?}");
    }
}
