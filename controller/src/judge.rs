//! The canary judge: the canaries' traffic against the baseline's (the
//! nodes still on the old release) over the same minutes. Pure: figures
//! in, a judgement out, no I/O and no clock.
//!
//! Every metric tests the limit it states, with evidence both ways
//! (README, "Canary analysis"):
//! - **errors** — the 5xx rate. Bounds are put on the canaries' rate
//!   minus the baseline's (Newcombe's hybrid score method, from the two
//!   Wilson intervals: right for rare events, where a normal approximation
//!   sees nothing). The canaries *fail* when the lower bound (one-sided
//!   0.001, asked at every judgement) is above `errors.max_increase` —
//!   worse than baseline + the margin beyond chance —, *pass* when the
//!   upper bound (one-sided 0.01, asked once: only the soak's last
//!   judgement promotes) is at or below it — not worse than that beyond
//!   chance —, and are *inconclusive* between.
//! - **latency** — a quantile (`p95`/`p99`) of `time-taken`. A
//!   distribution-free interval (order statistics, z = 3.09) on each
//!   side's quantile from the pooled histograms: *fail* when the bottom of
//!   the canaries' is above the top of the baseline's by more than
//!   `latency.max_increase` (and [`LATENCY_FLOOR_MS`]); *pass* when the top
//!   of the canaries' is at or below the baseline's quantile plus the
//!   allowance; *inconclusive* between.
//! - **unanswered** — requests the load balancer sent a node that its log
//!   never recorded (hung, cut), as a share of what it sent: judged like
//!   the 5xx rate, with the same margin. A release that hangs requests
//!   logs no error.
//! - **hung** — requests running now for longer than the agent's
//!   threshold: the canaries' count against what the baseline's would be
//!   at the canaries' traffic; *fail* when more than twice that (and 2)
//!   beyond chance (Poisson, p < [`ALPHA`]); it never makes a pass alone.
//! - Fewer than `min_requests` (user requests; timed requests for latency)
//!   on either side is *inconclusive*: no data is never a pass.
//!
//! A judgement fails when any metric fails, is inconclusive when any is
//! (and none fails), and passes when every metric passes.
use farm_proto::latency::Histogram;
use serde::{Deserialize, Serialize};

/// The significance a failure needs (one-sided). Judged every interval of
/// a soak, so it is strict: ten looks at 0.001 keep a good release's false
/// rollbacks near 1 %.
pub const ALPHA: f64 = 0.001;
/// z of a one-sided 0.001 bound: a failure's evidence. It is asked at
/// every judgement of a soak, so it is strict: ten looks at 0.001 keep a
/// good release's false rollbacks near 1 %.
const Z: f64 = 3.09;
/// z of a one-sided 0.01 bound: a pass's evidence. Only the soak's last
/// judgement promotes, so it is asked once: a release worse than the limit
/// is promoted at most 1 % of the time.
const Z_PASS: f64 = 2.33;
/// Latency differences below this are never a failure: `time-taken` is in
/// whole milliseconds and a few are scheduling noise.
pub const LATENCY_FLOOR_MS: f64 = 5.0;

/// One side's traffic over the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// User requests (health checks and probes apart).
    pub requests: u64,
    /// Of those, answered 5xx.
    pub errors: u64,
    /// `time-taken` of the user requests that logged it.
    pub latency: Histogram,
    /// Requests running now for longer than the agent's threshold, summed
    /// over the side's nodes; `None` where an agent cannot say.
    pub hung: Option<u64>,
    /// Requests running now (sent, not logged yet: not unanswered),
    /// summed over the side's nodes; `None` where an agent cannot say.
    pub in_flight: Option<u64>,
    /// User requests the side's agents have read since they started (a
    /// counter); `None` where an agent cannot say.
    pub requests_total: Option<u64>,
    /// The side's nodes.
    pub nodes: u64,
}

impl Sample {
    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (None, b) if self.nodes == 0 => b,
            _ => None,
        };
        self.hung = sum(self.hung, other.hung);
        self.in_flight = sum(self.in_flight, other.in_flight);
        self.requests_total = sum(self.requests_total, other.requests_total);
        self.nodes += other.nodes;
    }

    fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

/// What the canaries may do worse than the baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub min_requests: u64,
    /// Added 5xx rate allowed (0.005 = half a point).
    pub errors_max_increase: f64,
    /// The latency quantile judged (0.95, 0.99).
    pub quantile: f64,
    /// Relative latency increase allowed (0.2 = 20 %).
    pub latency_max_increase: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One metric's result, with the numbers it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// `error_rate` or `latency_p95` / `latency_p99`.
    pub name: String,
    /// The canaries' value (a rate, or ms); `None` without data.
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    /// The most the canaries may show.
    pub limit: Option<f64>,
    pub canary_requests: u64,
    pub baseline_requests: u64,
    pub result: Outcome,
    /// The test, and what it found (p-value or the intervals).
    pub test: String,
    /// Why, in words.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    pub result: Outcome,
    pub metrics: Vec<Metric>,
}

impl Judgement {
    /// The metrics that decided the result, in words.
    pub fn reason(&self) -> String {
        self.metrics
            .iter()
            .filter(|m| m.result == self.result)
            .map(|m| format!("{}: {}", m.name, m.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Judges the canaries against the baseline.
pub fn judge(canary: &Sample, baseline: &Sample, limits: &Limits) -> Judgement {
    judge_with_lb(canary, baseline, None, limits)
}

/// Judges the canaries against the baseline from the nodes' own logs and,
/// when the load balancer counts them, from its view too (`lb`: canary,
/// baseline): its 5xx, failed connections and failed responses, judged
/// like the 5xx rate (`lb_error_rate`) — errors a node never logged.
pub fn judge_with_lb(
    canary: &Sample,
    baseline: &Sample,
    lb: Option<(&Sample, &Sample)>,
    limits: &Limits,
) -> Judgement {
    judge_all(canary, baseline, lb, None, limits)
}

/// What the load balancer sent a side over the soak, and how many of
/// those the side answered (logged, or still running).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    pub answered: u64,
}

impl Sent {
    /// From the load balancer's count of what it sent over the soak and
    /// the side's counters at the soak's start and now: requests read
    /// since, and requests running then and now. The LB is read just
    /// before the agents each time, so what the agents read can only be
    /// more than what the LB had sent: a request is unanswered only when
    /// it is neither in the log nor running.
    pub fn between(sent: u64, start: &Sample, now: &Sample) -> Option<Sent> {
        let read = now.requests_total?.checked_sub(start.requests_total?)?;
        let answered = (read + now.in_flight?).saturating_sub(start.in_flight?);
        Some(Sent { sent, answered })
    }
}

/// Every metric: the logs' errors and latency, the load balancer's
/// errors (`lb`), the requests it sent that were never logged (`sent`),
/// and the requests hung now.
pub fn judge_all(
    canary: &Sample,
    baseline: &Sample,
    lb: Option<(&Sample, &Sample)>,
    sent: Option<(Sent, Sent)>,
    limits: &Limits,
) -> Judgement {
    let mut metrics = vec![
        errors("error_rate", canary, baseline, limits),
        latency(canary, baseline, limits),
    ];
    if let Some((c, b)) = lb {
        let mut m = errors("lb_error_rate", c, b, limits);
        m.test = format!("{} (the load balancer's counts)", m.test);
        metrics.push(m);
    }
    if let Some((c, b)) = sent {
        // Never answered: sent, neither logged nor running (the log
        // holding more than the LB sent is none unanswered).
        let side = |s: Sent| Sample {
            requests: s.sent,
            errors: s.sent.saturating_sub(s.answered),
            ..Sample::default()
        };
        let mut m = errors("unanswered_rate", &side(c), &side(b), limits);
        m.test = format!(
            "{} (sent by the load balancer, not in the node's log)",
            m.test
        );
        metrics.push(m);
    }
    if let Some(m) = hung(canary, baseline) {
        metrics.push(m);
    }
    let result = if metrics.iter().any(|m| m.result == Outcome::Fail) {
        Outcome::Fail
    } else if metrics.iter().any(|m| m.result == Outcome::Inconclusive) {
        Outcome::Inconclusive
    } else {
        Outcome::Pass
    };
    Judgement { result, metrics }
}

fn percent(rate: f64) -> String {
    format!("{:.2}%", rate * 100.0)
}

fn too_few(canary: u64, baseline: u64, min: u64, what: &str) -> Option<String> {
    if canary < min {
        Some(format!(
            "not enough data: the canaries had {canary} {what} (at least {min} needed)"
        ))
    } else if baseline < min {
        Some(format!(
            "not enough data: the baseline had {baseline} {what} (at least {min} needed)"
        ))
    } else {
        None
    }
}

fn errors(name: &str, c: &Sample, b: &Sample, limits: &Limits) -> Metric {
    let (pc, pb) = (c.error_rate(), b.error_rate());
    let limit = pb.map(|pb| pb + limits.errors_max_increase);
    let mut m = Metric {
        name: name.into(),
        canary: pc,
        baseline: pb,
        limit,
        canary_requests: c.requests,
        baseline_requests: b.requests,
        result: Outcome::Inconclusive,
        test: "fisher exact, one-sided".into(),
        reason: String::new(),
    };
    if let Some(why) = too_few(c.requests, b.requests, limits.min_requests, "requests") {
        m.reason = why;
        return m;
    }
    let (pc, pb, limit) = (pc.unwrap_or(0.0), pb.unwrap_or(0.0), limit.unwrap_or(0.0));
    let margin = limits.errors_max_increase;
    let (low, high) = difference_interval(c.errors, c.requests, b.errors, b.requests);
    m.test = format!(
        "difference of rates, Newcombe bounds (99.9% low, 99% high): {:+.2} to {:+.2} points",
        low * 100.0,
        high * 100.0
    );
    let said = format!(
        "canaries {} ({} of {}), baseline {} ({} of {}), limit {}",
        percent(pc),
        c.errors,
        c.requests,
        percent(pb),
        b.errors,
        b.requests,
        percent(limit)
    );
    let points = |d: f64| format!("{:+.2} points", d * 100.0);
    (m.result, m.reason) = if low > margin {
        (
            Outcome::Fail,
            format!(
                "{said}: worse than the limit beyond chance (at least {} over the baseline, {} allowed)",
                points(low),
                points(margin)
            ),
        )
    } else if high <= margin {
        (
            Outcome::Pass,
            format!(
                "{said}: within the limit beyond chance (at most {})",
                points(high)
            ),
        )
    } else {
        (
            Outcome::Inconclusive,
            format!(
                "{said}: not yet told from the limit ({} to {} over the baseline, {} allowed)",
                points(low),
                points(high),
                points(margin)
            ),
        )
    };
    m
}

/// The Wilson score interval of `x` in `n` at `z`.
fn wilson(x: u64, n: u64, z: f64) -> (f64, f64) {
    let (x, n) = (x as f64, n as f64);
    let p = x / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Bounds on `x/n − y/m` (Newcombe's hybrid score method, his method 10:
/// good coverage for rare events and small samples): the lower one-sided
/// at 0.001 (a failure's evidence), the upper at 0.01 (a pass's).
pub fn difference_interval(x: u64, n: u64, y: u64, m: u64) -> (f64, f64) {
    let (p1, p2) = (x as f64 / n as f64, y as f64 / m as f64);
    let d = p1 - p2;
    let ((l1, _), (_, u2)) = (wilson(x, n, Z), wilson(y, m, Z));
    let ((_, u1), (l2, _)) = (wilson(x, n, Z_PASS), wilson(y, m, Z_PASS));
    (
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    )
}

/// P(X ≥ x) for X ~ Binomial(n, p): the chance of `x` or more failures in
/// `n` if each failed with probability `p`.
pub fn binomial_at_least(x: u64, n: u64, p: f64) -> f64 {
    if x == 0 {
        return 1.0;
    }
    if x > n || p <= 0.0 {
        return if x > n {
            0.0
        } else {
            f64::from(u8::from(p > 0.0))
        };
    }
    if p >= 1.0 || x as f64 <= n as f64 * p {
        // At or below what is expected: no evidence of more.
        return 1.0;
    }
    // pmf(x), then each next term from the one before (they only fall
    // past the mean).
    let mut term = (ln_choose(n, x) + x as f64 * p.ln() + (n - x) as f64 * (1.0 - p).ln()).exp();
    let mut sum = 0.0;
    let ratio = p / (1.0 - p);
    for k in x..=n {
        sum += term;
        if term < sum * 1e-15 {
            break;
        }
        term *= (n - k) as f64 / (k + 1) as f64 * ratio;
    }
    sum.min(1.0)
}

/// P(X ≥ k) for X ~ Poisson(λ).
pub fn poisson_at_least(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    // 1 − P(X ≤ k−1), summed in log space for large λ.
    let mut term = (-lambda).exp();
    let mut below = term;
    for i in 1..k {
        term *= lambda / i as f64;
        below += term;
        if term < 1e-300 && i as f64 > lambda {
            break;
        }
    }
    (1.0 - below).clamp(0.0, 1.0)
}

/// The canaries' hung requests against what the baseline's would be at
/// the canaries' traffic.
fn hung(c: &Sample, b: &Sample) -> Option<Metric> {
    let (hc, hb) = (c.hung?, b.hung?);
    if b.nodes == 0 || c.nodes == 0 {
        return None;
    }
    // The baseline's per request (a canary at 10% weight gets a tenth).
    let per_request = if b.requests > 0 {
        hb as f64 / b.requests as f64
    } else {
        hb as f64 / b.nodes as f64
    };
    let expected = if b.requests > 0 {
        per_request * c.requests as f64
    } else {
        per_request * c.nodes as f64
    };
    let limit = (2.0 * expected).max(expected + 2.0);
    let p = poisson_at_least(hc, limit);
    let said = format!(
        "canaries {hc} hung, the baseline's rate would give {expected:.1}, limit {limit:.1}"
    );
    let (result, reason) = if hc as f64 > limit && p < ALPHA {
        (
            Outcome::Fail,
            format!("{said}: above the limit beyond chance (p = {p:.1e} < {ALPHA})"),
        )
    } else {
        (Outcome::Pass, said)
    };
    Some(Metric {
        name: "hung".into(),
        canary: Some(hc as f64),
        baseline: Some(hb as f64),
        limit: Some(limit),
        canary_requests: c.requests,
        baseline_requests: b.requests,
        result,
        test: format!("poisson, one-sided: p = {p:.2e}"),
        reason,
    })
}

/// The 99.8 % interval on the `q` quantile of `h`: the values at the
/// order statistics n·q ∓ z·√(n·q·(1−q)).
pub fn quantile_interval(h: &Histogram, q: f64) -> Option<(f64, f64)> {
    quantile_interval_at(h, q, Z)
}

fn quantile_interval_at(h: &Histogram, q: f64, z: f64) -> Option<(f64, f64)> {
    let n = h.count() as f64;
    let spread = z * (n * q * (1.0 - q)).sqrt();
    let low = (n * q - spread).floor().max(1.0) as u64;
    let high = (n * q + spread).ceil() as u64 + 1;
    Some((h.at_rank(low)?, h.at_rank(high)?))
}

fn latency(c: &Sample, b: &Sample, limits: &Limits) -> Metric {
    let q = limits.quantile;
    let name = format!("latency_p{}", (q * 100.0).round() as u32);
    let (vc, vb) = (c.latency.quantile(q), b.latency.quantile(q));
    let limit = vb.map(|vb| (vb * (1.0 + limits.latency_max_increase)).max(vb + LATENCY_FLOOR_MS));
    let (nc, nb) = (c.latency.count(), b.latency.count());
    let mut m = Metric {
        name,
        canary: vc,
        baseline: vb,
        limit,
        canary_requests: nc,
        baseline_requests: nb,
        result: Outcome::Inconclusive,
        test: "quantile confidence intervals (order statistics, 99.8%)".into(),
        reason: String::new(),
    };
    if let Some(why) = too_few(nc, nb, limits.min_requests, "timed requests") {
        m.reason = why;
        return m;
    }
    let (Some(vc), Some(vb), Some(limit), Some((c_low, c_high)), Some((b_low, b_high))) = (
        vc,
        vb,
        limit,
        quantile_interval(&c.latency, q),
        quantile_interval(&b.latency, q),
    ) else {
        m.reason = "no time-taken values".into();
        return m;
    };
    m.test = format!(
        "quantile confidence intervals (order statistics, 99.8%): canaries {c_low:.0}–{c_high:.0} ms, baseline {b_low:.0}–{b_high:.0} ms"
    );
    let said = format!("canaries {vc:.0} ms, baseline {vb:.0} ms, limit {limit:.0} ms");
    let allowed_top = (b_high * (1.0 + limits.latency_max_increase)).max(b_high + LATENCY_FLOOR_MS);
    // A pass's evidence: the top of the canaries' one-sided 99 % bound.
    let c_high = quantile_interval_at(&c.latency, q, Z_PASS).map_or(c_high, |(_, h)| h);
    (m.result, m.reason) = if c_low > allowed_top {
        (
            Outcome::Fail,
            format!("{said}: above the limit beyond chance (the canaries' interval starts at {c_low:.0} ms)"),
        )
    } else if c_high <= limit {
        (
            Outcome::Pass,
            format!("{said}: within the limit beyond chance (the canaries' interval ends at {c_high:.0} ms)"),
        )
    } else {
        (
            Outcome::Inconclusive,
            format!("{said}: not yet told from the limit (the canaries' interval reaches {c_high:.0} ms)"),
        )
    };
    m
}

/// ln C(n, k), summed (k is taken as the smaller side).
fn ln_choose(n: u64, k: u64) -> f64 {
    if k > n {
        return f64::NEG_INFINITY;
    }
    let k = k.min(n - k);
    (1..=k)
        .map(|i| ((n - k + i) as f64).ln() - (i as f64).ln())
        .sum()
}

/// Fisher's exact test, one-sided: the chance that the canaries would
/// show `x` or more of the `x + y` errors if both sides failed alike.
pub fn fisher_greater(x: u64, n_canary: u64, y: u64, n_baseline: u64) -> f64 {
    let total = n_canary + n_baseline;
    let errors = x + y;
    if errors == 0 || total == 0 {
        return 1.0;
    }
    let top = errors.min(n_canary);
    let denom = ln_choose(total, n_canary);
    let pmf = |k: u64| -> f64 {
        if errors - k > n_baseline {
            return 0.0;
        }
        (ln_choose(errors, k) + ln_choose(total - errors, n_canary - k) - denom).exp()
    };
    // Terms fall fast past the mode: stop when they no longer count.
    let mut p = 0.0;
    for k in x..=top {
        let t = pmf(k);
        p += t;
        if t < p * 1e-12 && k > x + 2 {
            break;
        }
    }
    p.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            min_requests: 100,
            errors_max_increase: 0.005,
            quantile: 0.95,
            latency_max_increase: 0.2,
        }
    }

    /// `requests` requests, `errors` of them 5xx, latencies spread evenly
    /// over `ms`..`ms`+20.
    fn sample(requests: u64, errors: u64, ms: u64) -> Sample {
        let mut latency = Histogram::default();
        for i in 0..requests {
            latency.record(ms + i % 21);
        }
        Sample {
            requests,
            errors,
            latency,
            ..Sample::default()
        }
    }

    fn metric<'a>(j: &'a Judgement, name: &str) -> &'a Metric {
        j.metrics.iter().find(|m| m.name == name).unwrap()
    }

    #[test]
    fn rare_errors_on_the_canary_fail() {
        // The case: no error in 2,000 on the baseline, 3 in 100 on
        // the canary.
        let j = judge(&sample(100, 3, 10), &sample(2_000, 0, 10), &limits());
        assert_eq!(metric(&j, "error_rate").result, Outcome::Fail, "{j:?}");
        assert_eq!(j.result, Outcome::Fail);
        let m = metric(&j, "error_rate");
        assert_eq!(m.canary, Some(0.03));
        assert_eq!(m.baseline, Some(0.0));
        assert_eq!(m.limit, Some(0.005));
        assert!(m.test.contains("Newcombe"), "{}", m.test);
    }

    #[test]
    fn no_data_is_inconclusive_never_pass() {
        let j = judge(&Sample::default(), &sample(2_000, 0, 10), &limits());
        assert_eq!(j.result, Outcome::Inconclusive);
        assert!(j.reason().contains("not enough data"), "{}", j.reason());
        let j = judge(&sample(50, 0, 10), &sample(2_000, 0, 10), &limits());
        assert_eq!(j.result, Outcome::Inconclusive);
        let j = judge(&sample(500, 0, 10), &Sample::default(), &limits());
        assert_eq!(j.result, Outcome::Inconclusive);
        assert!(j.reason().contains("baseline"), "{}", j.reason());
    }

    #[test]
    fn a_release_like_the_old_one_passes_once_the_evidence_is_there() {
        // 600 requests cannot show a release is within half a point of
        // the old one: not yet a pass.
        let j = judge(&sample(600, 1, 10), &sample(1_800, 2, 10), &limits());
        assert_eq!(
            metric(&j, "error_rate").result,
            Outcome::Inconclusive,
            "{j:?}"
        );
        let j = judge(&sample(6_000, 10, 10), &sample(18_000, 30, 10), &limits());
        assert_eq!(j.result, Outcome::Pass, "{j:?}");
    }

    /// The counter-examples: the test tests the limit it states.
    #[test]
    fn the_error_test_tests_the_stated_limit_both_ways() {
        // +0.4 points over a 1% baseline (0.5 allowed), 100 req/s per
        // node for a minute: never a failure.
        let j = judge(&sample(6_000, 84, 10), &sample(18_000, 180, 10), &limits());
        assert_ne!(metric(&j, "error_rate").result, Outcome::Fail, "{j:?}");
        // +1 point over a 1% baseline at 5 req/s per node: never a pass.
        let j = judge(&sample(150, 3, 10), &sample(450, 4, 10), &limits());
        assert_ne!(metric(&j, "error_rate").result, Outcome::Pass, "{j:?}");
        // +5 points with enough traffic: a failure.
        let j = judge(&sample(1_000, 60, 10), &sample(3_000, 30, 10), &limits());
        assert_eq!(metric(&j, "error_rate").result, Outcome::Fail, "{j:?}");
    }

    #[test]
    fn requests_that_never_answer_fail_the_canary() {
        // The LB sent 1,000 to the canary; its agent read 940 since and
        // 10 more run now than at the start; the baseline answered all.
        let counters = |total: u64, in_flight: u64| Sample {
            requests_total: Some(total),
            in_flight: Some(in_flight),
            ..Sample::default()
        };
        let c = Sent::between(1_000, &counters(5_000, 2), &counters(5_940, 12)).unwrap();
        assert_eq!(
            c,
            Sent {
                sent: 1_000,
                answered: 950
            }
        );
        let b = Sent::between(3_000, &counters(9_000, 3), &counters(11_998, 5)).unwrap();
        let j = judge_all(
            &sample(950, 0, 10),
            &sample(2_996, 0, 10),
            None,
            Some((c, b)),
            &limits(),
        );
        let m = metric(&j, "unanswered_rate");
        assert_eq!(m.result, Outcome::Fail, "{m:?}");
        assert_eq!(j.result, Outcome::Fail);
        // A node whose log holds more than it was sent (direct traffic):
        // nothing unanswered.
        let more = Sent {
            sent: 1_000,
            answered: 1_200,
        };
        let j = judge_all(
            &sample(1_200, 0, 10),
            &sample(2_996, 0, 10),
            None,
            Some((more, b)),
            &limits(),
        );
        assert_ne!(metric(&j, "unanswered_rate").result, Outcome::Fail);
        // An agent restarted (its counter went back): not said.
        assert_eq!(Sent::between(10, &counters(500, 0), &counters(20, 0)), None);
    }

    #[test]
    fn hung_requests_fail_the_canary_and_a_few_are_chance() {
        let with = |requests: u64, hung: u64, nodes: u64| Sample {
            hung: Some(hung),
            nodes,
            ..sample(requests, 0, 10)
        };
        // 62 hung on the canary against 0–1 per baseline node.
        let j = judge(&with(654, 62, 1), &with(2_100, 2, 3), &limits());
        assert_eq!(metric(&j, "hung").result, Outcome::Fail, "{j:?}");
        // A couple more than the baseline's: chance.
        let j = judge(&with(700, 2, 1), &with(2_100, 1, 3), &limits());
        assert_eq!(metric(&j, "hung").result, Outcome::Pass, "{j:?}");
        // A canary at a tenth of the traffic is judged at its share.
        let j = judge(&with(70, 10, 1), &with(2_100, 0, 3), &limits());
        assert_eq!(metric(&j, "hung").result, Outcome::Fail, "{j:?}");
        // An agent that cannot say: no hung metric.
        let j = judge(&sample(700, 0, 10), &with(2_100, 0, 3), &limits());
        assert!(j.metrics.iter().all(|m| m.name != "hung"));
    }

    #[test]
    fn binomial_tail() {
        // 2 errors in 60 against a limit of 3%: likely chance.
        let p = binomial_at_least(2, 60, 0.03);
        assert!(p > 0.5 && p < 0.6, "{p}");
        // By hand: P(X >= 2 | 3, 0.5) = 4/8.
        assert!((binomial_at_least(2, 3, 0.5) - 0.5).abs() < 1e-12);
        assert!(binomial_at_least(30, 600, 0.02) < 1e-3);
        assert_eq!(binomial_at_least(0, 10, 0.1), 1.0);
        assert_eq!(binomial_at_least(11, 10, 0.1), 0.0);
    }

    #[test]
    fn poisson_tail() {
        assert!((poisson_at_least(1, 2.0) - (1.0 - (-2.0f64).exp())).abs() < 1e-12);
        assert_eq!(poisson_at_least(0, 5.0), 1.0);
        assert!(poisson_at_least(62, 2.0) < 1e-40);
    }

    #[test]
    fn a_few_errors_more_is_not_yet_a_failure() {
        // 2 in 100 against 0 in 300: above the limit, not beyond chance.
        let j = judge(&sample(100, 2, 10), &sample(300, 0, 10), &limits());
        assert_eq!(
            metric(&j, "error_rate").result,
            Outcome::Inconclusive,
            "{j:?}"
        );
    }

    #[test]
    fn a_slower_release_fails_on_latency() {
        let j = judge(&sample(600, 0, 510), &sample(1_800, 0, 10), &limits());
        let m = metric(&j, "latency_p95");
        assert_eq!(m.result, Outcome::Fail, "{m:?}");
        assert!(m.canary.unwrap() > 500.0);
        // Slower by a few milliseconds only: below the floor, a pass.
        let j = judge(&sample(600, 0, 3), &sample(1_800, 0, 1), &limits());
        assert_eq!(metric(&j, "latency_p95").result, Outcome::Pass, "{j:?}");
    }

    #[test]
    fn errors_only_the_balancer_saw_fail_the_canary() {
        // The node's log is clean (the failures never reached IIS), the
        // LB saw 20 failed connections in 400 on the canary.
        let lb_canary = Sample {
            requests: 400,
            errors: 20,
            ..Sample::default()
        };
        let lb_baseline = Sample {
            requests: 1_200,
            errors: 0,
            ..Sample::default()
        };
        let j = judge_with_lb(
            &sample(380, 0, 10),
            &sample(1_200, 0, 10),
            Some((&lb_canary, &lb_baseline)),
            &limits(),
        );
        assert_ne!(metric(&j, "error_rate").result, Outcome::Fail);
        assert_eq!(metric(&j, "lb_error_rate").result, Outcome::Fail, "{j:?}");
        assert_eq!(j.result, Outcome::Fail);
    }

    #[test]
    fn fisher_matches_the_textbook() {
        // Hypergeometric tail computed by hand: C(100,3)/C(2100,3).
        let p = fisher_greater(3, 100, 0, 2_000);
        let exact = (100.0 * 99.0 * 98.0) / (2_100.0 * 2_099.0 * 2_098.0);
        assert!((p - exact).abs() < 1e-9, "{p} vs {exact}");
        // Fisher's tea: 3 of 4 right, one-sided p = 17/70.
        assert!((fisher_greater(3, 4, 1, 4) - 17.0 / 70.0).abs() < 1e-9);
        assert_eq!(fisher_greater(0, 100, 0, 100), 1.0);
    }
}
