//! `farm-agent`: serves the NodeAgent gRPC API for one IIS server.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use farm_agent::ops::OpsConfig;
use farm_agent::sim::{config, Simulator};

/// The farmctl agent for one IIS server.
#[derive(Parser, Debug)]
#[command(name = "farm-agent", version)]
struct Args {
    /// Address to serve gRPC on (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: String,
    /// Run the IIS simulator described by this sim file instead of real IIS.
    #[arg(long)]
    sim: Option<PathBuf>,
    /// Delay between `iisreset /start` attempts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    start_retry_delay: Duration,
    /// How long new workers and services may take to come up.
    #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
    verify_timeout: Duration,
    /// How often IIS is looked at while verifying an operation.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// More logging (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    init_logging(args.verbose);
    if let Err(e) = run(args).await {
        eprintln!("farm-agent: {e:#}");
        std::process::exit(2);
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(args: Args) -> anyhow::Result<()> {
    let Some(sim_path) = args.sim else {
        anyhow::bail!(
            "no IIS backend: pass --sim FILE (the Windows command backend is not built yet)"
        );
    };
    let text = std::fs::read_to_string(&sim_path)
        .with_context(|| format!("could not read sim file {}", sim_path.display()))?;
    let sim_file = config::parse(&text)
        .map_err(|e| anyhow::anyhow!("sim file {} is not valid:\n{e}", sim_path.display()))?;
    let sim = Simulator::start(sim_file)
        .await
        .context("could not open the simulated sites' ports")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // One JSON line on stdout says where everything is; scripts wait for it.
    let ready = serde_json::json!({
        "agent": addr.to_string(),
        "node": sim.node(),
        "sites": sim.sites().iter().map(|s| serde_json::json!({
            "name": s.name, "port": s.port, "host": s.host, "app_pool": s.app_pool,
        })).collect::<Vec<_>>(),
    });
    println!("{ready}");
    let cfg = OpsConfig {
        verify_timeout: args.verify_timeout,
        start_retry_delay: args.start_retry_delay,
        poll_interval: args.poll_interval,
        ..OpsConfig::default()
    };
    let node = sim.node().to_string();
    farm_agent::server::run(
        listener,
        node,
        Arc::new(sim.clone()),
        cfg,
        shutdown_signal(),
    )
    .await?;
    sim.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
