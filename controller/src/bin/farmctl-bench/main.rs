//! Benchmark: a rolling recycle over simulated farms of real agent
//! processes, with fixed sim timings. Prints the total time, the time no
//! orchestrator can avoid (the ideal), the overhead per node and the ratio
//! total/ideal, all measured in one run, ending with one line per farm for
//! scripts: `nodes=N max_unavailable=M ratio=R overhead_ms_per_node=O`.
//!
//! ```text
//! cargo run --release -p farmctl --bin farmctl-bench                 # 4 and 16 nodes, HAProxy
//! cargo run --release -p farmctl --bin farmctl-bench -- --nodes 1000 --max-unavailable 10%
//! cargo run --release -p farmctl --bin farmctl-bench -- --deploy --nodes 16   # 50 MB release
//! cargo run --release -p farmctl --bin farmctl-bench -- --patch --nodes 16 --boot 60s
//! cargo run --release -p farmctl --bin farmctl-bench -- --guard --nodes 4 [--noise 30m]
//! cargo run --release -p farmctl --bin farmctl-bench -- --guard --nodes 1000
//! ```
//!
//! `--patch`: patch night (install, restart, come back) against the ideal
//! of each node's own time in sequence, with the controller's and the
//! agents' memory; see `patch.rs`.
//!
//! `--deploy`: staging throughput of a `--package-mb` package to every node
//! over mutual TLS (as many uploads at once as a deploy runs), then a
//! rolling deploy of it, with each node's time out of rotation minus what
//! no orchestrator can avoid: the switch, the recycle, the warm-up, the
//! probe window and the LB's detection.
//!
//! Unavoidable per node: the new worker's start-up and warm-up (sim
//! timings), the consecutive-success probe window ((successes-1) ×
//! interval), and the load balancer's own detection (HAProxy: measured, as
//! `lb_detect_up`; health-file: its configured detection, twice). With W
//! nodes out at once the ideal is ⌈N/W⌉ such node times: the waves a
//! perfect scheduler needs. There is no traffic, so nothing has to drain:
//! confirming the drain counts as overhead.
use std::time::{Duration, Instant};

use clap::Parser;
use farm_inventory::Strategy;
use farm_proto::domain::OperationKind;
use farmctl::commands::Settings;
use farmctl::farm::{Farm, Transport};
use farmctl::operator::AssumeYes;
use farmctl::report::{RunReport, Silent};
use farmctl::run::{self, RunRequest, RunSettings};
use farmctl::sandbox::{haproxy_binary, Sandbox, SandboxSpec};

const STARTUP: Duration = Duration::from_millis(200);
const WARMUP: Duration = Duration::from_millis(100);
/// health-file detection in the large mode (the LB's check interval).
const DETECTION: Duration = Duration::from_millis(50);

#[derive(Parser, Debug)]
#[command(name = "farmctl-bench")]
struct Args {
    /// Farm sizes to run (repeatable); default 4 and 16.
    #[arg(long = "nodes")]
    nodes: Vec<usize>,
    /// Nodes out at once: a count or a percentage (default 1).
    #[arg(long, default_value = "1")]
    max_unavailable: String,
    /// `haproxy` (default up to 64 nodes) or `health-file` (default above:
    /// a thousand servers checked every 100 ms would load the machine more
    /// than the run does).
    #[arg(long)]
    lb: Option<String>,
    /// Scheduling: `window` (the default), `batch`, or `both` (one farm,
    /// one run of each, for a ratio of the two measured together).
    #[arg(long, default_value = "window")]
    strategy: String,
    /// Benchmark a rolling deployment instead of a recycle.
    #[arg(long)]
    deploy: bool,
    /// Benchmark `farmctl status` with traffic figures instead: user
    /// requests to every node, then status snapshots timed.
    #[arg(long, conflicts_with = "deploy")]
    status: bool,
    /// The deployment's package size.
    #[arg(long, default_value_t = 50)]
    package_mb: u64,
    /// Benchmark patch night instead (install, restart, come back).
    #[arg(long, conflicts_with_all = ["deploy", "status"])]
    patch: bool,
    /// --patch: how long each simulated server takes to restart.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    boot: Duration,
    /// Benchmark `farmctl guard` instead (fault to healed at 20 req/s per
    /// node; above 64 nodes, one evaluation's own cost, synthetic).
    #[arg(long, conflicts_with_all = ["deploy", "status", "patch"])]
    guard: bool,
    /// --guard: then run the healthy farm under a changing load this long
    /// and count the guard's actions.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    noise: Duration,
    /// --guard: the rules' window and interval (the inventory's defaults
    /// otherwise).
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    #[arg(long, value_parser = humantime::parse_duration)]
    interval: Option<Duration>,
    /// Farm sizes, as in older versions (`farmctl-bench 4 16`).
    sizes: Vec<usize>,
}

#[tokio::main]
async fn main() {
    farmctl::init_logging("warn");
    let args = Args::parse();
    let mut sizes: Vec<usize> = args.nodes.iter().chain(&args.sizes).copied().collect();
    if sizes.is_empty() {
        sizes = vec![4, 16];
    }
    let mut lines = Vec::new();
    for n in sizes {
        let lb = args
            .lb
            .clone()
            .unwrap_or_else(|| if n <= 64 { "haproxy" } else { "health-file" }.into());
        if lb == "haproxy" && haproxy_binary().is_none() {
            eprintln!("farmctl-bench: haproxy is not installed (apt-get install -y haproxy)");
            std::process::exit(2);
        }
        let strategies: Vec<Strategy> = match args.strategy.as_str() {
            "window" => vec![Strategy::Window],
            "batch" => vec![Strategy::Batch],
            "both" => vec![Strategy::Window, Strategy::Batch],
            other => {
                eprintln!("farmctl-bench: --strategy {other}: use window, batch or both");
                std::process::exit(2);
            }
        };
        if args.guard && n > 64 {
            lines.push(guard::scale(n));
            continue;
        }
        let mode = if args.guard {
            let d = farm_inventory::Guard::default();
            Mode::Guard {
                noise: args.noise,
                window: args.window.unwrap_or(d.window),
                interval: args.interval.unwrap_or(d.interval),
            }
        } else if args.patch {
            Mode::Patch { boot: args.boot }
        } else if args.status {
            Mode::Status
        } else if args.deploy {
            Mode::Deploy {
                package_mb: args.package_mb,
            }
        } else {
            Mode::Recycle(strategies)
        };
        match bench(n, &args.max_unavailable, &lb, &mode).await {
            Ok(l) => lines.extend(l),
            Err(e) => {
                eprintln!("farmctl-bench: {n} nodes: {e}");
                std::process::exit(1);
            }
        }
    }
    for l in lines {
        println!("{l}");
    }
}

enum Mode {
    Recycle(Vec<Strategy>),
    Deploy {
        package_mb: u64,
    },
    Status,
    Patch {
        boot: Duration,
    },
    Guard {
        noise: Duration,
        window: Duration,
        interval: Duration,
    },
}

async fn bench(
    nodes: usize,
    max_unavailable: &str,
    lb: &str,
    mode: &Mode,
) -> Result<Vec<String>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = SandboxSpec {
        releases: matches!(mode, Mode::Deploy { .. }),
        nodes,
        lb_kind: lb.into(),
        detection: DETECTION,
        min_healthy: "1".into(),
        pool_yaml: format!(
            "    startup: {}\n    warmup: {}\n    shutdown_time_limit: 30s\n",
            humantime::format_duration(STARTUP),
            humantime::format_duration(WARMUP)
        ),
        boot_time: match mode {
            Mode::Patch { boot } => *boot,
            _ => SandboxSpec::default().boot_time,
        },
        patch_yaml: "patch:\n  reboot_delay: 1s\n  reboot_timeout: 30m\n  bake: 0s\n".into(),
        guard_yaml: match mode {
            Mode::Guard {
                window, interval, ..
            } => format!(
                "guard:\n  window: {}\n  interval: {}\n",
                humantime::format_duration(*window),
                humantime::format_duration(*interval)
            ),
            _ => String::new(),
        },
        ..SandboxSpec::default()
    };
    let t = Instant::now();
    let sandbox = Sandbox::start(&spec, dir.path())
        .await
        .map_err(|e| e.to_string())?;
    eprintln!(
        "farmctl-bench: {nodes} agents started in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let farm = Farm::connect(
        farm_inventory::load(&sandbox.inventory).map_err(|e| e.to_string())?,
        Transport::Tls,
    )
    .map_err(|e| e.message)?;
    let settings = Settings {
        quiet: true,
        insecure: false,
        state_dir: Some(dir.path().join("state")),
        state_store: None,
        clock: farmctl::window::system_clock(),
        reporter: std::sync::Arc::new(Silent),
    };
    let strategies = match mode {
        Mode::Recycle(s) => s,
        Mode::Patch { boot } => {
            let line = patch::bench(&farm, &sandbox, &settings, nodes, *boot).await;
            sandbox.stop().await;
            return line.map(|l| vec![l]);
        }
        Mode::Guard { noise, .. } => {
            let line = guard::bench(&farm, &sandbox, &settings, nodes, *noise).await;
            sandbox.stop().await;
            return line.map(|l| vec![l]);
        }
        Mode::Status => {
            let line = status_bench(&farm, &sandbox, &settings, nodes).await;
            sandbox.stop().await;
            return line.map(|l| vec![l]);
        }
        Mode::Deploy { package_mb } => {
            let line = deploy::bench(
                &farm,
                &sandbox,
                &settings,
                (nodes, max_unavailable, lb),
                *package_mb,
            )
            .await;
            sandbox.stop().await;
            return line.map(|l| vec![l]);
        }
    };
    let mut lines = Vec::new();
    for &strategy in strategies {
        let mut req = RunRequest::new(OperationKind::Recycle);
        req.max_unavailable = Some(max_unavailable.into());
        let mut run_settings =
            RunSettings::resolve(&farm.inventory, &req).map_err(|e| e.message)?;
        run_settings.strategy = strategy;
        let env = settings.run_env(&AssumeYes, None);
        let started = Instant::now();
        let report = run::start(&farm, &sandbox.inventory, run_settings, &env)
            .await
            .map_err(|e| e.message)?;
        let total = started.elapsed();
        if !report.succeeded() {
            return Err(format!("the run failed: {:?}", report.halted));
        }
        lines.push(print(
            &farm,
            &report,
            total,
            nodes,
            max_unavailable,
            lb,
            strategy,
        ));
    }
    sandbox.stop().await;
    Ok(lines)
}

/// Prints one run's figures; returns its line for scripts.
fn print(
    farm: &Farm,
    report: &RunReport,
    total: Duration,
    nodes: usize,
    max_unavailable: &str,
    lb: &str,
    strategy: Strategy,
) -> String {
    let window = report_window(farm, max_unavailable);
    let probe = &farm.inventory.sites[0].probe;
    let probe_window = probe.interval * (probe.successes - 1);
    let lb_detect = match lb {
        "haproxy" => mean_ms(report, "lb_detect_up"),
        "health-file" => DETECTION * 2,
        _ => Duration::ZERO,
    };
    let per_node = STARTUP + WARMUP + probe_window + lb_detect;
    let waves = nodes.div_ceil(window);
    let ideal = per_node * waves as u32;
    // The run's own duration: from the first node started to the last
    // back; the rest is leases, preflight and the journal's start.
    let rolling = Duration::from_millis(report.duration_ms);
    let setup = total.saturating_sub(rolling);
    let overhead = total.saturating_sub(ideal);
    let overhead_per_node = overhead.as_secs_f64() * 1000.0 / nodes as f64;
    let ratio = total.as_secs_f64() / ideal.as_secs_f64();
    let rolling_ratio = rolling.as_secs_f64() / ideal.as_secs_f64();
    println!(
        "rolling recycle, {nodes} nodes ({lb}), max_unavailable {max_unavailable} ({window} at once), strategy {}",
        strategy.as_str()
    );
    println!(
        "  total                {:>8.0} ms  (setup: leases, preflight, journal {:.0} ms; rolling {:.0} ms)",
        ms(total),
        ms(setup),
        ms(rolling)
    );
    println!(
        "  ideal                {:>8.0} ms  ({waves} wave(s) × {:.0} ms: startup {} + warmup {} + probe window {} + lb detect {:.0})",
        ms(ideal),
        ms(per_node),
        STARTUP.as_millis(),
        WARMUP.as_millis(),
        probe_window.as_millis(),
        ms(lb_detect)
    );
    let phases = [
        "draining",
        "quiescing",
        "operating",
        "verifying",
        "returning",
    ];
    println!(
        "  per node, mean ms    {}",
        phases
            .iter()
            .map(|p| format!("{p} {:.1}", ms(mean_ms(report, p))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  overhead per node    {overhead_per_node:>8.1} ms");
    println!("  ratio total/ideal    {ratio:>8.3}");
    println!("  ratio rolling/ideal  {rolling_ratio:>8.3}");
    format!(
        "nodes={nodes} max_unavailable={window} strategy={} ratio={ratio:.3} rolling_ratio={rolling_ratio:.3} overhead_ms_per_node={overhead_per_node:.1}",
        strategy.as_str()
    )
}

mod deploy;
mod guard;
mod patch;

/// Nodes out at once in the run's first stage.
fn report_window(farm: &Farm, max_unavailable: &str) -> usize {
    farm_inventory::Ramp::parse(max_unavailable)
        .map(|r| r.resolve(farm.inventory.nodes.len())[0])
        .unwrap_or(1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The mean time of `phase` over the nodes.
fn mean_ms(report: &RunReport, phase: &str) -> Duration {
    let sum: u64 = report
        .nodes
        .iter()
        .map(|n| n.phase_ms.get(phase).copied().unwrap_or(0))
        .sum();
    Duration::from_millis(sum / report.nodes.len().max(1) as u64)
}

/// User requests per node before the status snapshots are timed.
const STATUS_REQUESTS: usize = 60;
const STATUS_RUNS: usize = 5;

/// `status` of the farm with traffic: every node serves
/// [`STATUS_REQUESTS`] user requests, then five snapshots (agents,
/// probes, LB, every node's Traffic figures and the outlier rule) are
/// timed; each must show every node's traffic.
async fn status_bench(
    farm: &Farm,
    sandbox: &Sandbox,
    settings: &Settings,
    nodes: usize,
) -> Result<String, String> {
    use futures::stream::StreamExt;
    let t = Instant::now();
    let targets: Vec<u16> = sandbox
        .nodes
        .iter()
        .flat_map(|n| std::iter::repeat_n(n.http_port, STATUS_REQUESTS))
        .collect();
    let failed = futures::stream::iter(targets)
        .map(|port| async move {
            farm_proto::http::get_as(
                "farmctl-bench-user",
                "127.0.0.1",
                port,
                Some(farmctl::sandbox::SITE_HOST),
                "/",
                Duration::from_secs(10),
            )
            .await
            .map_or(1, |(s, _)| usize::from(s != 200))
        })
        .buffer_unordered(64)
        .fold(0, |a, f| async move { a + f })
        .await;
    eprintln!(
        "farmctl-bench: {} user requests sent in {:.1}s ({failed} failed)",
        nodes * STATUS_REQUESTS,
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    let mut own_cpu = Vec::new();
    for _ in 0..STATUS_RUNS {
        let t = Instant::now();
        let cpu = own_cpu_seconds();
        let snap = farmctl::commands::status::snapshot(farm, settings).await;
        times.push(t.elapsed().as_secs_f64());
        own_cpu.push(own_cpu_seconds() - cpu);
        let without = snap
            .nodes
            .iter()
            .filter(|n| {
                n.traffic
                    .as_ref()
                    .is_none_or(|t| t.requests < STATUS_REQUESTS as u64)
            })
            .count();
        if without > 0 {
            return Err(format!("{without} node(s) without their traffic in status"));
        }
    }
    // Its parts, measured apart: every agent's status and traffic (one
    // call each) with the probes; the agents' calls alone, the probes
    // alone; the load balancer's view.
    let window = farmctl::commands::status::TRAFFIC_WINDOW_S;
    let (mut agents, mut calls, mut probes, mut lb) = (vec![], vec![], vec![], vec![]);
    for _ in 0..STATUS_RUNS {
        let (t, members) = timed(farmctl::observe::members(farm)).await;
        lb.push(t);
        let members = members.unwrap_or_default();
        agents.push(
            timed(farmctl::observe::observe_with_traffic(
                farm, &members, window,
            ))
            .await
            .0,
        );
        let ask = farm.agents.iter().map(|a| a.status_and_traffic(window));
        calls.push(timed(futures::future::join_all(ask)).await.0);
        let probe = (0..nodes).map(|i| farm.probe_once(i));
        probes.push(timed(futures::future::join_all(probe)).await.0);
    }
    println!(
        "  of which: every agent's status and traffic (one call each) with the probes (median) {:.0} ms; the load balancer's members (median) {:.0} ms",
        median_ms(&agents),
        median_ms(&lb)
    );
    println!(
        "  apart (median): the agents' status-and-traffic calls {:.0} ms; the probes of every site {:.0} ms",
        median_ms(&calls),
        median_ms(&probes)
    );
    // The first snapshot is a fresh `farmctl status`: a TLS handshake with
    // every agent; the others reuse the connections (`--watch`).
    let (median, cpu) = (median_ms(&times), median_ms(&own_cpu));
    let worst = times.iter().copied().fold(0.0, f64::max) * 1000.0;
    println!(
        "  the controller's own CPU per snapshot (median) {cpu:.0} ms; the rest of the wall time is the {nodes} agents, which share this machine's cores with it"
    );
    println!(
        "  the first snapshot (a fresh `farmctl status`: TLS handshakes with every agent) {:.0} ms, its controller CPU {:.0} ms",
        times[0] * 1000.0,
        own_cpu[0] * 1000.0
    );
    println!(
        "status of {nodes} nodes with traffic: median {median:.0} ms, worst {worst:.0} ms over {STATUS_RUNS} snapshots (each node {STATUS_REQUESTS} user requests in the window)"
    );
    Ok(format!(
        "status nodes={nodes} median_ms={median:.0} worst_ms={worst:.0} controller_cpu_ms={cpu:.0}"
    ))
}

/// How long `f` took (seconds), and what it gave.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (f64, T) {
    let t = Instant::now();
    let out = f.await;
    (t.elapsed().as_secs_f64(), out)
}

/// The median of seconds, in milliseconds.
fn median_ms(seconds: &[f64]) -> f64 {
    let mut v = seconds.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1000.0
}

/// This process's CPU time (user + system), in seconds; 0 off Linux.
fn own_cpu_seconds() -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}
