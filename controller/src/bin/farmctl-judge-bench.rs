//! The canary judge alone on seeded simulated traffic, over baselines of
//! 0.2%, 1% and 2% 5xx: for good releases the false-rollback rate, for bad
//! ones (+1 and +5 points of 5xx, +20% and +100% latency at the judged
//! quantile) the detection rate, the median time to a fail verdict and —
//! what must not happen — the promotions, at 5, 20 and 100 requests/s per
//! node. One canary against three baseline nodes, the inventory's
//! defaults (soak 5m, a judgement every 30s, min_requests 100, +0.5%
//! errors, p95 +20%). Targets: false rollbacks ≤ 1% and promotions of a
//! +1-point regression ≤ 1% at every rate and baseline, the rest
//! inconclusive. Ends with one line per case for scripts.
//!
//! `cargo run --release -p farmctl --bin farmctl-judge-bench [-- --trials N]`
use farm_proto::latency::Histogram;
use farmctl::judge::{judge, Limits, Outcome, Sample};

const BASELINE_NODES: u64 = 3;
const SOAK_S: u64 = 300;
const INTERVAL_S: u64 = 30;
/// The old release's latency: log-normal around 50 ms.
const BASE_MEDIAN_MS: f64 = 50.0;
const SIGMA: f64 = 0.5;

struct Case {
    name: &'static str,
    /// 5xx points added to the baseline's rate.
    added_errors: f64,
    latency_factor: f64,
}

const CASES: [Case; 5] = [
    Case {
        name: "good",
        added_errors: 0.0,
        latency_factor: 1.0,
    },
    Case {
        name: "errors+1pt",
        added_errors: 0.01,
        latency_factor: 1.0,
    },
    Case {
        name: "errors+5pt",
        added_errors: 0.05,
        latency_factor: 1.0,
    },
    Case {
        name: "latency+20%",
        added_errors: 0.0,
        latency_factor: 1.2,
    },
    Case {
        name: "latency+100%",
        added_errors: 0.0,
        latency_factor: 2.0,
    },
];

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = rng.f64().max(f64::MIN_POSITIVE);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One second of `requests` requests of a release.
fn second(rng: &mut fastrand::Rng, s: &mut Sample, requests: u64, errors: f64, factor: f64) {
    for _ in 0..requests {
        s.requests += 1;
        if rng.f64() < errors {
            s.errors += 1;
        }
        let ms = BASE_MEDIAN_MS * factor * (SIGMA * normal(rng)).exp();
        s.latency.record(ms.round() as u64);
    }
}

/// One soak: the second the verdict fell and what it was.
fn soak(
    rng: &mut fastrand::Rng,
    case: &Case,
    base: f64,
    rps: u64,
    limits: &Limits,
) -> (Outcome, u64) {
    let mut canary = Sample {
        latency: Histogram::default(),
        ..Sample::default()
    };
    let mut baseline = Sample::default();
    for t in 1..=SOAK_S {
        second(
            rng,
            &mut canary,
            rps,
            base + case.added_errors,
            case.latency_factor,
        );
        second(rng, &mut baseline, rps * BASELINE_NODES, base, 1.0);
        if t % INTERVAL_S == 0 {
            let j = judge(&canary, &baseline, limits);
            if j.result == Outcome::Fail || t == SOAK_S {
                return (j.result, t);
            }
        }
    }
    (Outcome::Inconclusive, SOAK_S)
}

fn main() {
    let mut trials: u64 = 200;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--trials") {
        match args.get(i + 1).and_then(|v| v.parse().ok()) {
            Some(n) if n > 0 => trials = n,
            _ => {
                eprintln!("--trials needs a count above 0");
                std::process::exit(2);
            }
        }
    }
    let limits = Limits {
        min_requests: 100,
        errors_max_increase: 0.005,
        quantile: 0.95,
        latency_max_increase: 0.2,
    };
    let mut lines = Vec::new();
    let started = std::time::Instant::now();
    let mut worst_false_rollback: f64 = 0.0;
    let mut worst_promotion: f64 = 0.0;
    for base in [0.002, 0.01, 0.02] {
        println!("baseline {:.1}% 5xx:", base * 100.0);
        for rps in [5u64, 20, 100] {
            for case in &CASES {
                let mut rng = fastrand::Rng::with_seed(
                    rps * 1_000 + case.name.len() as u64 + (base * 1e4) as u64,
                );
                let mut fails = Vec::new();
                let (mut inconclusive, mut passes) = (0, 0);
                for _ in 0..trials {
                    match soak(&mut rng, case, base, rps, &limits) {
                        (Outcome::Fail, t) => fails.push(t),
                        (Outcome::Inconclusive, _) => inconclusive += 1,
                        (Outcome::Pass, _) => passes += 1,
                    }
                }
                fails.sort_unstable();
                let share = |n: usize| n as f64 / trials as f64;
                let rate = share(fails.len());
                let promoted = share(passes);
                let median = fails.get(fails.len() / 2).copied();
                let within_60 = share(fails.iter().filter(|&&t| t <= 60).count());
                if case.name == "good" {
                    worst_false_rollback = worst_false_rollback.max(rate);
                    println!(
                        "  {rps:>4} req/s  {:<13} false rollbacks {:>6.2}%  promoted {:>6.2}%  inconclusive {:>6.2}%",
                        case.name,
                        rate * 100.0,
                        promoted * 100.0,
                        share(inconclusive) * 100.0
                    );
                } else {
                    if case.name == "errors+1pt" {
                        worst_promotion = worst_promotion.max(promoted);
                    }
                    println!(
                        "  {rps:>4} req/s  {:<13} detected {:>6.2}%  within 60s {:>6.2}%  median time to fail {:>5}  promoted {:>6.2}%",
                        case.name,
                        rate * 100.0,
                        within_60 * 100.0,
                        median.map_or("-".into(), |t| format!("{t}s")),
                        promoted * 100.0
                    );
                }
                lines.push(format!(
                    "baseline={base} rps={rps} case={} trials={trials} fail_rate={rate:.4} pass_rate={promoted:.4} within_60s={within_60:.4} median_fail_s={} inconclusive_rate={:.4}",
                    case.name,
                    median.map_or("none".into(), |t| t.to_string()),
                    share(inconclusive)
                ));
            }
        }
    }
    println!(
        "worst false rollbacks {:.2}% (target <= 1%), worst promotion of a +1-point regression {:.2}% (target <= 1%)",
        worst_false_rollback * 100.0,
        worst_promotion * 100.0
    );
    println!(
        "({} trials per case in {:.1}s)",
        trials,
        started.elapsed().as_secs_f64()
    );
    for l in lines {
        println!("{l}");
    }
}
