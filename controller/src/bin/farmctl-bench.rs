//! Benchmark: a rolling recycle over 4 and 16 simulated nodes behind a real
//! HAProxy, with fixed sim timings. Prints the total time, the sum of the
//! waits no orchestrator can avoid, the overhead per node and the ratio,
//! all measured in one run, ending with one line per farm size for
//! scripts: `nodes=N ratio=R overhead_ms_per_node=M`.
//!
//! `cargo run --release -p farmctl --bin farmctl-bench [-- 4 16]`
//!
//! Unavoidable per node: the new worker's start-up and warm-up (sim
//! timings), the consecutive-success probe window ((successes-1) ×
//! interval), and the time until HAProxy's own check reported the node UP.
//! There is no traffic, so nothing has to drain: the time spent confirming
//! the drain (LB sessions and in-flight at zero) is counted as overhead.
use std::time::{Duration, Instant};

use farmctl::agent::Operation;
use farmctl::cli::{InventoryArgs, Output, RolloutArgs};
use farmctl::commands::rollout::execute;
use farmctl::commands::Settings;
use farmctl::report::Silent;
use farmctl::sandbox::{haproxy_binary, Sandbox, SandboxSpec};

const STARTUP: Duration = Duration::from_millis(200);
const WARMUP: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() {
    farmctl::init_logging("warn");
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![4, 16] } else { sizes };
    if haproxy_binary().is_none() {
        eprintln!("farmctl-bench: haproxy is not installed (apt-get install -y haproxy)");
        std::process::exit(2);
    }
    let mut lines = Vec::new();
    for n in sizes {
        match bench(n).await {
            Ok(line) => lines.push(line),
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

async fn bench(nodes: usize) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let spec = SandboxSpec {
        nodes,
        lb_kind: "haproxy".into(),
        min_healthy: "1".into(),
        pool_yaml: format!(
            "    startup: {}\n    warmup: {}\n    shutdown_time_limit: 30s\n",
            humantime::format_duration(STARTUP),
            humantime::format_duration(WARMUP)
        ),
        ..SandboxSpec::default()
    };
    let sandbox = Sandbox::start(&spec, dir.path())
        .await
        .map_err(|e| e.to_string())?;
    let inv = farm_inventory::load(&sandbox.inventory).map_err(|e| e.to_string())?;
    let args = RolloutArgs {
        inv: InventoryArgs {
            inventory: sandbox.inventory.clone(),
            output: Output::Json,
        },
        nodes: Vec::new(),
        max_unavailable: None,
        canary: false,
        window: None,
        yes: true,
    };
    let settings = Settings {
        quiet: true,
        insecure: false,
        state_dir: Some(dir.path().join("state")),
        clock: farmctl::window::system_clock(),
        bars: false,
    };
    let started = Instant::now();
    let report = execute(
        &inv,
        &args,
        Operation::Recycle,
        inv.app_pools.clone(),
        &settings,
        &Silent,
    )
    .await
    .map_err(|e| e.message)?;
    let total = started.elapsed();
    sandbox.stop().await;
    if !report.succeeded() {
        return Err(format!("the run failed: {:?}", report.halted));
    }

    let probe = &inv.sites[0].probe;
    let probe_window = probe.interval * (probe.successes - 1);
    let phase = |name: &str| -> Duration {
        Duration::from_millis(
            report
                .nodes
                .iter()
                .map(|n| n.phase_ms.get(name).copied().unwrap_or(0))
                .sum(),
        )
    };
    let fixed = (STARTUP + WARMUP + probe_window) * nodes as u32;
    let quiesce = phase("quiescing");
    let lb_detect = phase("lb_detect_up");
    let unavoidable = fixed + lb_detect;
    let overhead = total.saturating_sub(unavoidable);
    let per_node = overhead.as_secs_f64() * 1000.0 / nodes as f64;
    let ratio = total.as_secs_f64() / unavoidable.as_secs_f64();
    println!("rolling recycle, {nodes} nodes behind haproxy, max_unavailable 1");
    println!(
        "  total                {:>8.0} ms",
        total.as_secs_f64() * 1000.0
    );
    println!(
        "  unavoidable          {:>8.0} ms  (startup+warmup {} ms, probe window {} ms, lb detect {} ms; drain confirmation took {} ms, counted as overhead)",
        unavoidable.as_secs_f64() * 1000.0,
        ((STARTUP + WARMUP) * nodes as u32).as_millis(),
        (probe_window * nodes as u32).as_millis(),
        lb_detect.as_millis(),
        quiesce.as_millis()
    );
    let mut phases: std::collections::BTreeMap<&str, u64> = Default::default();
    for n in &report.nodes {
        for (k, v) in &n.phase_ms {
            *phases.entry(k.as_str()).or_default() += v;
        }
    }
    let in_phases: u64 = phases
        .iter()
        .filter(|(k, _)| **k != "lb_detect_up")
        .map(|(_, v)| v)
        .sum();
    println!(
        "  per node, mean ms    {}  (outside the node phases: {} ms in all)",
        phases
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", *v as f64 / nodes as f64))
            .collect::<Vec<_>>()
            .join(", "),
        total.as_millis() as u64 - in_phases.min(total.as_millis() as u64)
    );
    println!("  overhead per node    {per_node:>8.1} ms");
    println!("  ratio total/unavoid. {ratio:>8.3}");
    Ok(format!(
        "nodes={nodes} ratio={ratio:.3} overhead_ms_per_node={per_node:.0}"
    ))
}
