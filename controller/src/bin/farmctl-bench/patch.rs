//! `--patch`: patch night on a simulated farm whose servers take `--boot`
//! to restart. Every node installs the sandbox's two updates (0.8 s and
//! 0.2 s) and restarts once; no bake (a deliberate wait, not work).
//!
//! The ideal is each node's own unavoidable time, in sequence (one node
//! out at a time): its installs, the restart's delay, the boot, IIS's cold
//! start (start-up and warm-up), the consecutive-success probe window and
//! the LB's detection. Memory: the controller's peak (its own VmHWM) and
//! each agent's largest resident size sampled every second over the run
//! (an agent's process is new after each restart).
use std::time::{Duration, Instant};

use farm_proto::domain::OperationKind;
use farmctl::commands::Settings;
use farmctl::farm::Farm;
use farmctl::operator::AssumeYes;
use farmctl::run::{self, RunRequest, RunSettings};
use farmctl::sandbox::Sandbox;

use super::{mean_ms, ms, STARTUP, WARMUP};

/// The sandbox's updates: what installing them takes.
const INSTALL: Duration = Duration::from_millis(1000);
const REBOOT_DELAY: Duration = Duration::from_secs(1);

/// `VmRSS` or `VmHWM` of `pid` in MB (Linux).
pub fn mem_mb(pid: &str, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub async fn bench(
    farm: &Farm,
    sandbox: &Sandbox,
    settings: &Settings,
    nodes: usize,
    boot: Duration,
) -> Result<String, String> {
    let req = RunRequest::new(OperationKind::Patch);
    let run_settings = RunSettings::resolve(&farm.inventory, &req).map_err(|e| e.message)?;
    let env = settings.run_env(&AssumeYes, None);
    // Every agent's resident size, every second, while the run goes on.
    let pids = |sandbox: &Sandbox| -> Vec<Option<u32>> {
        (0..sandbox.nodes.len())
            .map(|i| sandbox.agent_pid(i))
            .collect()
    };
    let started = Instant::now();
    let run = run::start(farm, &sandbox.inventory, run_settings, &env);
    tokio::pin!(run);
    let mut agent_peak = 0.0f64;
    let report = loop {
        tokio::select! {
            r = &mut run => break r.map_err(|e| e.message)?,
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                for pid in pids(sandbox).into_iter().flatten() {
                    if let Some(mb) = mem_mb(&pid.to_string(), "VmRSS:") {
                        agent_peak = agent_peak.max(mb);
                    }
                }
            }
        }
    };
    let total = started.elapsed();
    if !report.succeeded() {
        return Err(format!("the patch failed: {:?}", report.halted));
    }
    let probe = &farm.inventory.sites[0].probe;
    let probe_window = probe.interval * (probe.successes - 1);
    let lb_detect = mean_ms(&report, "lb_detect_up");
    let per_node = INSTALL + REBOOT_DELAY + boot + STARTUP + WARMUP + probe_window + lb_detect;
    let ideal = per_node * nodes as u32;
    let own: Duration = report
        .nodes
        .iter()
        .map(|n| Duration::from_millis(n.phase_ms.values().sum()))
        .sum();
    let back: Vec<u64> = report
        .nodes
        .iter()
        .filter_map(|n| n.reboot.as_ref().map(|r| r.back_after_ms))
        .collect();
    let controller_mb = mem_mb("self", "VmHWM:").unwrap_or(0.0);
    let ratio = total.as_secs_f64() / ideal.as_secs_f64();
    let overhead_per_node = (ms(total) - ms(ideal)) / nodes as f64;
    println!(
        "rolling patch, {nodes} nodes, one at a time, {}s boot",
        boot.as_secs()
    );
    println!("  total                {:>9.0} ms", ms(total));
    println!(
        "  ideal                {:>9.0} ms  ({nodes} × {:.0} ms: install {} + restart delay {} + boot {} + startup {} + warmup {} + probe window {} + lb detect {:.0})",
        ms(ideal),
        ms(per_node),
        INSTALL.as_millis(),
        REBOOT_DELAY.as_millis(),
        boot.as_millis(),
        STARTUP.as_millis(),
        WARMUP.as_millis(),
        probe_window.as_millis(),
        ms(lb_detect)
    );
    println!(
        "  nodes' own time      {:>9.0} ms  (drain to return, summed)",
        ms(own)
    );
    println!(
        "  back after restart   {:>9.0} ms  (mean from the restart asked to the agent's first answer)",
        back.iter().sum::<u64>() as f64 / back.len().max(1) as f64
    );
    println!("  overhead per node    {overhead_per_node:>9.0} ms");
    println!("  ratio total/ideal    {ratio:>9.3}");
    println!("  controller peak      {controller_mb:>9.1} MB");
    println!("  agent peak (largest) {agent_peak:>9.1} MB");
    Ok(format!(
        "patch nodes={nodes} boot_s={} ratio={ratio:.3} overhead_ms_per_node={overhead_per_node:.0} controller_mb={controller_mb:.1} agent_mb={agent_peak:.1}",
        boot.as_secs()
    ))
}
