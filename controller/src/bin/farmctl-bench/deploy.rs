//! `--deploy`: staging throughput, then a rolling deploy and each node's
//! time out of rotation beyond what no orchestrator can avoid.
use std::time::{Duration, Instant};

use farm_proto::domain::{OpStep, OperationId, OperationKind};
use farmctl::agent::Package;
use farmctl::commands::Settings;
use farmctl::farm::Farm;
use farmctl::operator::AssumeYes;
use farmctl::report::RunReport;
use farmctl::run::{self, DeployRequest, RunRequest, RunSettings};
use farmctl::sandbox::{Sandbox, SITE};
use futures::StreamExt;

use super::{mean_ms, ms, report_window, WARMUP};

/// Phases a node spends out of rotation.
const OUT: [&str; 6] = [
    "draining",
    "quiescing",
    "switching",
    "operating",
    "verifying",
    "returning",
];

pub async fn bench(
    farm: &Farm,
    sandbox: &Sandbox,
    settings: &Settings,
    (nodes, max_unavailable, lb): (usize, &str, &str),
    package_mb: u64,
) -> Result<String, String> {
    let t = Instant::now();
    let path = big_package(&sandbox.dir, package_mb).map_err(|e| format!("package: {e}"))?;
    let package = farmctl::release::read_package(&path).map_err(|e| e.to_string())?;
    eprintln!(
        "farmctl-bench: {} byte package written and hashed in {:.1}s",
        package.size,
        t.elapsed().as_secs_f64()
    );

    // Staging alone, as a deploy does it: that many uploads at once.
    let at_once = farmctl::contract::STAGING_CONCURRENCY;
    let started = Instant::now();
    let staged: Vec<Result<(), String>> = futures::stream::iter(0..nodes)
        .map(|i| stage(farm, i, "1.9.9", &package))
        .buffer_unordered(at_once)
        .collect()
        .await;
    staged.into_iter().collect::<Result<Vec<_>, _>>()?;
    let staging = started.elapsed();
    let mb = package.size as f64 / (1024.0 * 1024.0);
    let throughput = mb * nodes as f64 / staging.as_secs_f64();

    // The deploy of the same bytes as a new release, uploaded ahead.
    let mut req = RunRequest::new(OperationKind::Deploy);
    req.max_unavailable = Some(max_unavailable.into());
    req.deploy = Some(DeployRequest {
        site: SITE.into(),
        version: "2.0.0".into(),
        package: Some(path.clone()),
    });
    let run_settings = RunSettings::resolve(&farm.inventory, &req).map_err(|e| e.message)?;
    let env = settings.run_env(&AssumeYes, None);
    let started = Instant::now();
    let report = run::start(farm, &sandbox.inventory, run_settings, &env)
        .await
        .map_err(|e| e.message)?;
    let total = started.elapsed();
    if !report.succeeded() {
        return Err(format!("the deploy failed: {:?}", report.halted));
    }
    let probe = &farm.inventory.sites[0].probe;
    let probe_window = probe.interval * (probe.successes - 1);
    let out = mean_sum(&report, &OUT);
    let unavoidable = mean_ms(&report, "switching")
        + mean_ms(&report, "operating")
        + WARMUP
        + probe_window
        + mean_ms(&report, "lb_detect_up");
    let overhead = out.saturating_sub(unavoidable);
    let window = report_window(farm, max_unavailable);
    println!(
        "rolling deploy of a {mb:.0} MB release, {nodes} nodes ({lb}), max_unavailable {max_unavailable} ({window} at once)"
    );
    println!(
        "  staging alone        {:>8.0} ms  ({nodes} uploads, {at_once} at once, mTLS): {throughput:.0} MB/s in all, {:.0} MB/s per upload",
        ms(staging),
        mb / (ms(staging) / 1000.0 / nodes.div_ceil(at_once) as f64),
    );
    println!(
        "  deploy total         {:>8.0} ms  (staging per node, mean {:.0} ms, ahead of the rollout)",
        ms(total),
        ms(mean_ms(&report, "staging"))
    );
    println!(
        "  per node, mean ms    {}",
        OUT.iter()
            .chain(&["lb_detect_up"])
            .map(|p| format!("{p} {:.1}", ms(mean_ms(&report, p))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  out of rotation      {:>8.1} ms  (unavoidable {:.1}: switch + recycle + warm-up {} + probe window {} + lb detect)",
        ms(out),
        ms(unavoidable),
        WARMUP.as_millis(),
        probe_window.as_millis()
    );
    println!(
        "  overhead per node    {:>8.1} ms  (target <= 50)",
        ms(overhead)
    );
    Ok(format!(
        "deploy nodes={nodes} package_mb={mb:.0} staging_mb_per_s={throughput:.0} out_of_rotation_ms={:.1} overhead_ms_per_node={:.1}",
        ms(out),
        ms(overhead)
    ))
}

async fn stage(farm: &Farm, i: usize, version: &str, package: &Package) -> Result<(), String> {
    let id = OperationId::new("bench", &farm.node(i).name, OpStep::Stage).to_string();
    farm.agent(i)
        .stage(&id, SITE, version, package, Duration::from_secs(600))
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", farm.node(i).name))
}

/// Mean over the nodes of the sum of `phases`.
fn mean_sum(report: &RunReport, phases: &[&str]) -> Duration {
    phases.iter().map(|p| mean_ms(report, p)).sum()
}

/// A release of `mb` MiB that does not compress (as most of a real site's
/// binaries and images): a version file, a page and 1 MiB files of noise.
fn big_package(dir: &std::path::Path, mb: u64) -> std::io::Result<std::path::PathBuf> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut noise = |len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| {
                // xorshift64: fast, deterministic, incompressible enough
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect()
    };
    let blobs: Vec<(String, Vec<u8>)> = (0..mb)
        .map(|k| (format!("bin/blob{k:03}.dat"), noise(1024 * 1024)))
        .collect();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("version.txt", b"2.0.0"),
        ("index.html", b"<h1>shop 2.0.0</h1>"),
    ];
    files.extend(blobs.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    farmctl::release::write_package(&dir.join("bench-release.zip"), &files)
}
