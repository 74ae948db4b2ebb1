//! `--guard`: `farmctl guard` on a simulated farm behind HAProxy at
//! 20 requests/s per node, with the inventory's default rules (window 2m,
//! a decision every 30 s, 3 to confirm) unless `--window`/`--interval`
//! say otherwise: the time from a pool going bad (web02: 30 % of its
//! requests answer 500, a recycle heals it) to the guard's action and to
//! the pool proven healed. `--noise D` then runs the healthy farm for `D`
//! under a load that changes every minute (a fifth to twice the rate,
//! slow requests at random) and counts the guard's actions: none is the
//! only right number.
//!
//! `--guard --nodes N` with N above 64: no farm; the guard's own cost of
//! one evaluation over N synthetic nodes (the outlier rule over every
//! node's figures and the decision), CPU per evaluation and the memory it
//! holds. The snapshot it judges costs what `--status` measures.
use std::time::{Duration, Instant};

use farmctl::cli::{GuardArgs, Output};
use farmctl::commands::Settings;
use farmctl::farm::Farm;
use farmctl::guard::decide::{self, Figures, History, NodeSeen, Seen};
use farmctl::sandbox::Sandbox;
use farmctl::traffic::Traffic;

use super::own_cpu_seconds;

/// Requests per second each node gets.
const RATE: f64 = 20.0;

fn decisions(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn wait_for(
    log: &std::path::Path,
    within: Duration,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Option<Instant> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if decisions(log).iter().any(&f) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Traffic at `factor` × 20 requests/s per node, slow requests at random.
fn load(sandbox: &Sandbox, nodes: usize, factor: f64) -> Traffic {
    let mut spec = sandbox.traffic_spec();
    // Each worker waits ~`pace` between requests of a few ms.
    spec.workers = nodes.max(2);
    let per_worker = RATE * factor * nodes as f64 / spec.workers as f64;
    spec.pace = Duration::from_secs_f64(1.0 / per_worker);
    spec.slow_every = 20;
    spec.slow_ms = 200;
    spec.max_duration = Duration::from_secs(4 * 3600);
    Traffic::start(spec)
}

pub async fn bench(
    farm: &Farm,
    sandbox: &Sandbox,
    settings: &Settings,
    nodes: usize,
    noise: Duration,
) -> Result<String, String> {
    let log = sandbox.dir.join("guard.decisions.jsonl");
    let args = GuardArgs::of(sandbox.inventory.clone(), log.clone(), Output::Jsonl);
    let rules = farm.inventory.guard.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let guarding = farmctl::guard::guard_farm(farm, &args, settings, stop);
    let script = async {
        let mut traffic = load(sandbox, nodes, 1.0);
        // Over every load level (each is a generator of its own).
        let (mut sent, mut failed) = (0u64, 0u64);
        let bound = rules.window + rules.interval * (rules.confirm + 4) + Duration::from_secs(120);
        wait_for(&log, bound, |d| d["decision"] == "ok")
            .await
            .ok_or("the guard never judged the healthy farm")?;
        sandbox
            .set_pool_faults(
                "web02",
                "      error_rate: 0.3\n      healed_by_recycle: true\n",
            )
            .map_err(|e| e.to_string())?;
        let fault = Instant::now();
        let acted = wait_for(&log, bound, |d| {
            d["decision"] == "acted" && d["node"] == "web02"
        })
        .await
        .ok_or("the guard never acted on web02")?;
        let healed = wait_for(&log, bound, |d| {
            d["decision"] == "healed" && d["node"] == "web02"
        })
        .await
        .ok_or("web02 was never proven healed")?;
        let to_act = acted - fault;
        let to_heal = healed - fault;
        eprintln!(
            "guard: web02 went bad; the guard acted after {:.0} s and proved it healed after {:.0} s (window {}, a decision every {}, {} to confirm)",
            to_act.as_secs_f64(),
            to_heal.as_secs_f64(),
            humantime::format_duration(rules.window),
            humantime::format_duration(rules.interval),
            rules.confirm
        );
        let mut noisy = String::new();
        if !noise.is_zero() {
            let before = decisions(&log).len();
            let started = Instant::now();
            let mut phase = 0u32;
            while started.elapsed() < noise {
                // A fifth to twice the rate, a new level every minute.
                let factor = [1.0, 0.2, 2.0, 0.6, 1.5, 0.3][phase as usize % 6];
                let phase_report = traffic.stop().await;
                sent += phase_report.requests_sent;
                failed += phase_report.requests_failed;
                traffic = load(sandbox, nodes, factor);
                phase += 1;
                let left = noise.saturating_sub(started.elapsed());
                tokio::time::sleep(left.min(Duration::from_secs(60))).await;
            }
            let during: Vec<serde_json::Value> = decisions(&log).split_off(before);
            let count = |k: &str| during.iter().filter(|d| d["decision"] == k).count();
            eprintln!(
                "guard: {} of noisy healthy farm ({} load levels): {} decisions, {} acted, {} quarantined, {} held, {} watching",
                humantime::format_duration(noise),
                phase,
                during.len(),
                count("acted"),
                count("quarantined"),
                count("held"),
                count("watching")
            );
            noisy = format!(
                " noise_s={} noise_actions={} noise_watching={}",
                noise.as_secs(),
                count("acted") + count("quarantined"),
                count("watching")
            );
        }
        let last = traffic.stop().await;
        eprintln!(
            "guard: {} requests sent, {} failed (the sick pool's 500s among them)",
            sent + last.requests_sent,
            failed + last.requests_failed
        );
        Ok::<String, String>(format!(
            "guard nodes={nodes} rate_per_node={RATE} fault_to_action_s={:.0} fault_to_healed_s={:.0}{noisy}",
            to_act.as_secs_f64(),
            to_heal.as_secs_f64()
        ))
    };
    tokio::pin!(guarding);
    let line = tokio::select! {
        r = script => r,
        r = &mut guarding => return Err(format!("the guard stopped: {:?}", r.err().map(|e| e.message))),
    };
    stop_tx.send_replace(true);
    let _ = guarding.await;
    line
}

/// One node's synthetic traffic: `requests` over one site, some 5xx,
/// latency around `ms`.
fn synthetic(i: usize, sick: bool) -> NodeSeen {
    let requests = 2400 + (i as u64 * 7919) % 300;
    NodeSeen {
        name: format!("web{i:04}"),
        serving: true,
        in_rotation: true,
        outlier: Some(sick),
        pools: if sick {
            vec!["ShopPool".into()]
        } else {
            vec![]
        },
        reasons: vec![],
        figures: Figures {
            requests,
            error_rate: Some(if sick { 0.2 } else { 0.002 }),
            p95_ms: Some(40.0 + (i % 13) as f64),
            in_flight: Some(3),
        },
        pool_figures: Default::default(),
    }
}

fn views(nodes: usize) -> Vec<Result<farmctl::agent::TrafficView, farmctl::agent::AgentError>> {
    use farmctl::agent::{SiteTrafficView, TrafficView};
    (0..nodes)
        .map(|i| {
            let mut latency = farm_proto::latency::Histogram::default();
            let requests = 2400 + (i as u64 * 7919) % 300;
            for k in 0..requests {
                latency.record(20 + (k * 31 + i as u64) % 60);
            }
            let errors = if i == 7 { requests / 5 } else { requests / 500 };
            Ok(TrafficView {
                sites: vec![SiteTrafficView {
                    site: "shop".into(),
                    pool: "ShopPool".into(),
                    covered_s: 120,
                    requests,
                    checks: 24,
                    classes: [0, requests - errors, 0, 0, errors],
                    p50_ms: latency.quantile(0.5),
                    p95_ms: latency.quantile(0.95),
                    p99_ms: latency.quantile(0.99),
                    latency,
                    urls: vec![("/".into(), requests, requests * 45)],
                    ..SiteTrafficView::default()
                }],
                ..TrafficView::default()
            })
        })
        .collect()
}

/// The guard's own work per evaluation over `nodes` synthetic nodes.
pub fn scale(nodes: usize) -> String {
    let rss = |k: &str| super::patch::mem_mb("self", k).unwrap_or(0.0);
    let before = rss("VmRSS:");
    let views = views(nodes);
    let rtime = vec![None; nodes];
    let rules = farm_inventory::Guard::default();
    let mut hist = History::default();
    let rounds = 50;
    let cpu = own_cpu_seconds();
    let wall = Instant::now();
    let mut acted = 0;
    for r in 0..rounds {
        let (_, verdicts) = farmctl::health::judged(&views, &rtime);
        let seen = Seen {
            nodes: verdicts
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let mut n = synthetic(i, v.outlier == Some(true));
                    n.outlier = v.outlier;
                    n.pools = v.pools.clone();
                    n
                })
                .collect(),
            run: None,
            min_healthy: nodes / 2,
        };
        let now = 1_800_000_000_000 + r * 30_000;
        let (_, act) = decide::evaluate(&rules, &mut hist, &seen, now);
        acted += usize::from(act.is_some());
    }
    let cpu_ms = (own_cpu_seconds() - cpu) * 1000.0 / rounds as f64;
    let wall_ms = wall.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
    let after = rss("VmHWM:");
    eprintln!(
        "guard over {nodes} synthetic nodes: {cpu_ms:.1} ms of CPU per evaluation ({wall_ms:.1} ms wall), {:.1} MB held by the figures and the history (peak {after:.0} MB), {acted} action(s) over {rounds} evaluations",
        (after - before).max(0.0)
    );
    format!(
        "guard_scale nodes={nodes} cpu_ms_per_evaluation={cpu_ms:.1} mem_mb={:.1} actions={acted}",
        (after - before).max(0.0)
    )
}
