//! The canary judge: the canaries' traffic against the baseline's (the
//! nodes still on the old release) over the same minutes. Pure: figures
//! in, a judgement out, no I/O and no clock.
//!
//! The rule (README, "Canary analysis"):
//! - **errors** — the 5xx rate. The canaries *fail* when their rate is
//!   above the baseline's by more than `errors.max_increase` *and* Fisher's
//!   exact test (one-sided: the canaries fail more often than the
//!   baseline) puts the difference beyond chance (p < [`ALPHA`]). Fisher's
//!   test is exact for rare events: 3 errors in 100 canary requests against
//!   none in 2,000 is a failure, where a normal approximation sees nothing.
//!   Above the limit but not yet beyond chance: *inconclusive*. At or
//!   below the limit: *pass*.
//! - **latency** — a quantile (`p95`/`p99`) of `time-taken`. A
//!   distribution-free confidence interval (order statistics, z = 3.09) is
//!   put on each side's quantile from the pooled histograms; the canaries
//!   *fail* when the bottom of theirs is above the top of the baseline's
//!   by more than `latency.max_increase` and by more than
//!   [`LATENCY_FLOOR_MS`] (IIS logs whole milliseconds). Above the limit
//!   but with overlapping intervals: *inconclusive*. Otherwise *pass*.
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
/// z of a two-sided 99.8 % interval (one-sided 0.001).
const Z: f64 = 3.09;
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
}

impl Sample {
    pub fn add(&mut self, other: &Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
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
    let mut metrics = vec![
        errors("error_rate", canary, baseline, limits),
        latency(canary, baseline, limits),
    ];
    if let Some((c, b)) = lb {
        let mut m = errors("lb_error_rate", c, b, limits);
        m.test = format!("{} (the load balancer's counts)", m.test);
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
    let p = fisher_greater(c.errors, c.requests, b.errors, b.requests);
    m.test = format!("fisher exact, one-sided: p = {p:.2e}");
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
    (m.result, m.reason) = if pc <= limit {
        (Outcome::Pass, said)
    } else if p < ALPHA {
        (
            Outcome::Fail,
            format!("{said}: above the limit beyond chance (p = {p:.1e} < {ALPHA})"),
        )
    } else {
        (
            Outcome::Inconclusive,
            format!("{said}: above the limit, but it may be chance yet (p = {p:.2})"),
        )
    };
    m
}

/// The one-sided 99.8 % interval on the `q` quantile of `h`: the values at
/// the order statistics n·q ∓ z·√(n·q·(1−q)).
fn quantile_interval(h: &Histogram, q: f64) -> Option<(f64, f64)> {
    let n = h.count() as f64;
    let spread = Z * (n * q * (1.0 - q)).sqrt();
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
    (m.result, m.reason) = if vc <= limit {
        (Outcome::Pass, said)
    } else if c_low > allowed_top {
        (
            Outcome::Fail,
            format!("{said}: above the limit beyond chance (the canaries' interval starts at {c_low:.0} ms)"),
        )
    } else {
        (
            Outcome::Inconclusive,
            format!("{said}: above the limit, but the intervals still meet"),
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
        assert!(m.test.contains("fisher"), "{}", m.test);
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
    fn a_release_like_the_old_one_passes() {
        let j = judge(&sample(600, 1, 10), &sample(1_800, 2, 10), &limits());
        assert_eq!(j.result, Outcome::Pass, "{j:?}");
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
        assert_eq!(metric(&j, "error_rate").result, Outcome::Pass);
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
