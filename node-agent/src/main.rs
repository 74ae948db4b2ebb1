//! `farm-agent`: serves the NodeAgent gRPC API for one IIS server.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use farm_agent::audit::Audit;
use farm_agent::iis::Iis;
use farm_agent::iiscmd::CommandBackend;
use farm_agent::runner::SystemRunner;
use farm_agent::ops::OpsConfig;
use farm_agent::security::{self, TlsFiles};
use farm_agent::server::Security;
use farm_agent::sim::{config, Simulator};

#[cfg(windows)]
mod winsvc;

/// The farmctl agent for one IIS server.
#[derive(Parser, Debug, Clone)]
#[command(name = "farm-agent", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to serve gRPC on (`127.0.0.1:0` picks a free port); default
    /// the config file's `listen`, else 0.0.0.0:7443.
    #[arg(long)]
    listen: Option<String>,
    /// `iis` drives IIS with its own tools (appcmd, iisreset, sc);
    /// `sim` runs the simulator (needs --sim). Default: sim when --sim is
    /// given, iis otherwise.
    #[arg(long, value_parser = ["iis", "sim"])]
    backend: Option<String>,
    /// Run the IIS simulator described by this sim file instead of real IIS.
    #[arg(long)]
    sim: Option<PathBuf>,
    /// Agent configuration file (health files, tool paths, timeouts).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Delay between `iisreset /start` attempts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    start_retry_delay: Duration,
    /// How long new workers and services may take to come up (default:
    /// the config file's timeouts.verify, else 90s).
    #[arg(long, value_parser = humantime::parse_duration)]
    verify_timeout: Option<Duration>,
    /// How often IIS is looked at while verifying an operation.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
    /// This agent's TLS certificate (PEM).
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// This agent's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "client_ca"])]
    tls_key: Option<PathBuf>,
    /// The farm CA (PEM): clients must present a certificate it signed.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    client_ca: Option<PathBuf>,
    /// The farm CA's certificate revocation list (PEM; `farmctl certs
    /// revoke` writes one): revoked client certificates are refused.
    /// Re-read, like the certificate and key, when the file changes.
    #[arg(long, value_name = "FILE")]
    tls_crl: Option<PathBuf>,
    /// Connections served at once (default the config's
    /// `max_connections`, else 256). At the cap the connection idle the
    /// longest is closed to make room; a quarter of the cap at most per
    /// client certificate.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    max_connections: Option<u32>,
    /// Close a connection that has had no call for this long (default the
    /// config's `idle_timeout`, else 2m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_timeout: Option<std::time::Duration>,
    /// Serve plaintext gRPC without client authentication (prints a
    /// warning; every caller is an operator).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    insecure: bool,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// More logging (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Serve Prometheus metrics at `GET /metrics` on this address (a
    /// listener of its own; default the config's `metrics.listen`, else
    /// none). Keep it on loopback or a management network.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Where operation records and the lease are kept across restarts
    /// (default: the config's `state_dir`, else `%ProgramData%\farm-agent`
    /// on Windows; elsewhere memory only).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Write the log to daily files in DIR (`farm-agent.YYYY-MM-DD.log`,
    /// the last 14 kept) instead of stderr. A service defaults to
    /// `<state dir>\logs`.
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// On stop (Ctrl-C, SIGTERM, a service stop), how long a recycle or
    /// reset under way may take to finish before the agent exits anyway
    /// (the operation is then recorded as interrupted).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    stop_grace: Duration,
}

#[derive(clap::Subcommand, Debug, Clone)]
enum Command {
    /// The agent as a Windows service.
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
enum ServiceCommand {
    /// Registers the service (automatic delayed start, restart on
    /// failure, LocalSystem unless --account), with the agent arguments
    /// after `--`; paths in them must be absolute.
    Install {
        #[arg(long, default_value = "farm-agent")]
        name: String,
        #[arg(long, default_value = "farmctl agent")]
        display_name: String,
        /// Run as this account (`DOMAIN\\user`, `NT AUTHORITY\\NetworkService`).
        #[arg(long)]
        account: Option<String>,
        /// The account's password, from this environment variable.
        #[arg(long, requires = "account")]
        password_env: Option<String>,
        /// The agent's own arguments, e.g. `-- --config C:\\farm-agent\\agent.yaml`.
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Stops (if running) and removes the service.
    Uninstall {
        #[arg(long, default_value = "farm-agent")]
        name: String,
    },
    /// What the Service Control Manager starts; not for use by hand.
    Run {
        #[arg(long, default_value = "farm-agent")]
        name: String,
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
}

/// The agent arguments given to `service install|run`, parsed and checked.
fn agent_args(given: &[String]) -> anyhow::Result<Args> {
    let args = Args::try_parse_from(
        std::iter::once("farm-agent".to_string()).chain(given.iter().cloned()),
    )
    .map_err(|e| anyhow::anyhow!("the agent arguments after `--`: {e}"))?;
    if args.command.is_some() {
        anyhow::bail!("the agent arguments after `--` may not hold another `service` command");
    }
    // A service starts in C:\Windows\System32: a relative path would
    // point there, not where it was typed.
    let paths = [
        ("--config", &args.config),
        ("--sim", &args.sim),
        ("--tls-cert", &args.tls_cert),
        ("--tls-key", &args.tls_key),
        ("--client-ca", &args.client_ca),
        ("--tls-crl", &args.tls_crl),
        ("--audit-log", &args.audit_log),
        ("--state-dir", &args.state_dir),
        ("--log-dir", &args.log_dir),
    ];
    for (flag, p) in paths {
        if let Some(p) = p {
            if !p.is_absolute() {
                anyhow::bail!(
                    "{flag} {}: a service needs an absolute path (it starts in the system folder)",
                    p.display()
                );
            }
        }
    }
    Ok(args)
}

fn main() {
    let args = Args::parse();
    let code = match args.command.clone() {
        Some(Command::Service(cmd)) => service(cmd),
        None => {
            let _log = init_logging(args.verbose, &args.log_format, args.log_dir.as_deref());
            tokio::runtime::Runtime::new()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run(args, async {}, shutdown_signal())))
        }
    };
    if let Err(e) = code {
        eprintln!("farm-agent: {e:#}");
        // 3: another agent holds the state directory; 2: anything else.
        let in_use = e.chain().any(|c| {
            matches!(
                c.downcast_ref::<farm_agent::state::OpenError>(),
                Some(farm_agent::state::OpenError::InUse(_))
            )
        });
        std::process::exit(if in_use { 3 } else { 2 });
    }
}

#[cfg(windows)]
fn service(cmd: ServiceCommand) -> anyhow::Result<()> {
    match cmd {
        ServiceCommand::Install {
            name,
            display_name,
            account,
            password_env,
            agent_args: given,
        } => {
            agent_args(&given)?;
            winsvc::install(
                &name,
                &display_name,
                account.as_deref(),
                password_env.as_deref(),
                &given,
            )
        }
        ServiceCommand::Uninstall { name } => winsvc::uninstall(&name),
        ServiceCommand::Run {
            name,
            agent_args: given,
        } => {
            let args = agent_args(&given)?;
            let log_dir = args.log_dir.clone().or_else(|| {
                args.state_dir
                    .clone()
                    .or_else(farm_agent::state::default_dir)
                    .map(|d| d.join("logs"))
            });
            let _log = init_logging(args.verbose, &args.log_format, log_dir.as_deref());
            winsvc::run(&name, args)
        }
    }
}

#[cfg(not(windows))]
fn service(cmd: ServiceCommand) -> anyhow::Result<()> {
    if let ServiceCommand::Install {
        agent_args: given, ..
    }
    | ServiceCommand::Run {
        agent_args: given, ..
    } = &cmd
    {
        agent_args(given)?;
    }
    anyhow::bail!("`farm-agent service` is for Windows; elsewhere run farm-agent under your service manager (systemd, ...)")
}

/// Logs to stderr, or to daily files in `dir` (the guard flushes them).
fn init_logging(
    verbose: u8,
    format: &str,
    dir: Option<&std::path::Path>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let files = dir.and_then(|dir| {
        tracing_appender::rolling::Builder::new()
            .rotation(tracing_appender::rolling::Rotation::DAILY)
            .filename_prefix("farm-agent")
            .filename_suffix("log")
            .max_log_files(14)
            .build(dir)
            .map_err(|e| {
                eprintln!(
                    "farm-agent: cannot log to {}: {e}; logging to stderr",
                    dir.display()
                )
            })
            .ok()
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if let Some(files) = files {
        let (writer, guard) = tracing_appender::non_blocking(files);
        let builder = builder.with_writer(writer).with_ansi(false);
        if format == "json" {
            builder.json().init();
        } else {
            builder.init();
        }
        return Some(guard);
    }
    // Through a bounded, lossy buffer: a stderr nobody reads (a full
    // pipe) drops log lines instead of stalling the agent.
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = builder.with_writer(writer);
    if format == "json" {
        builder.json().init();
    } else {
        // Colour only for a terminal, and never with NO_COLOR: logs
        // redirected to a file stay plain.
        let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        builder.with_ansi(colour).init();
    }
    Some(guard)
}

/// Serves until `shutdown`; `ready` runs once the agent listens.
async fn run(
    args: Args,
    ready: impl std::future::Future<Output = ()>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("could not read agent config {}", path.display()))?;
            farm_agent::config::parse(&text)
                .map_err(|e| anyhow::anyhow!("agent config {} is not valid: {e}", path.display()))?
        }
        None => farm_agent::config::parse("{}").map_err(anyhow::Error::msg)?,
    };
    let backend = args
        .backend
        .clone()
        .unwrap_or_else(|| if args.sim.is_some() { "sim" } else { "iis" }.into());
    let listen = args.listen.clone().unwrap_or_else(|| config.listen.clone());
    // A flag wins over the config file, which wins over the default.
    let cfg = OpsConfig {
        verify_timeout: args.verify_timeout.unwrap_or(config.timeouts.verify),
        stop_timeout: config.timeouts.stop,
        start_retry_delay: args.start_retry_delay,
        poll_interval: args.poll_interval,
        ..OpsConfig::default()
    };
    let mut lb_members = None;
    let (node, iis, sim, sites): (String, Arc<dyn Iis>, Option<Simulator>, serde_json::Value) =
        if backend == "sim" {
            let Some(sim_path) = &args.sim else {
                anyhow::bail!("--backend sim needs --sim FILE");
            };
            let text = std::fs::read_to_string(sim_path)
                .with_context(|| format!("could not read sim file {}", sim_path.display()))?;
            let sim_file = config::parse(&text).map_err(|e| {
                anyhow::anyhow!("sim file {} is not valid:\n{e}", sim_path.display())
            })?;
            let sim = Simulator::start(sim_file)
                .await
                .context("could not open the simulated sites' ports")?;
            let sites = sim
            .sites()
            .iter()
            .map(|s| serde_json::json!({"name": s.name, "port": s.port, "host": s.host, "app_pool": s.app_pool}))
            .collect();
            (
                sim.node().to_string(),
                Arc::new(sim.clone()),
                Some(sim),
                sites,
            )
        } else {
            let node = config.node.clone().unwrap_or_else(host_name);
            lb_members = Some(Arc::new(farm_agent::lbmember::LbMembers::new(
                Arc::new(SystemRunner),
                config.tools.powershell.clone(),
                config.timeouts.command,
                node.clone(),
            )));
            let backend = CommandBackend::new(
                Arc::new(SystemRunner),
                config.tools.clone(),
                config.timeouts.clone(),
                config.health_files.clone(),
            );
            (node, Arc::new(backend), None, serde_json::json!([]))
        };
    let mut security = security_settings(&args, &config)?;
    let metrics_listen = args
        .metrics_listen
        .clone()
        .or_else(|| config.metrics.as_ref().map(|m| m.listen.clone()));
    let metrics = match &metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("could not listen on {addr} for metrics"))?;
            Some((listener, Arc::new(farm_agent::metrics::Metrics::default())))
        }
        None => None,
    };
    security.metrics = metrics.as_ref().map(|(_, m)| m.clone());
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("could not listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let metrics_addr = metrics
        .as_ref()
        .and_then(|(l, _)| l.local_addr().ok())
        .map(|a| a.to_string());
    let state = match args
        .state_dir
        .clone()
        .or_else(|| config.state_dir.clone())
        .or_else(farm_agent::state::default_dir)
    {
        Some(dir) => Some(
            farm_agent::state::StateDir::open(&dir)
                .with_context(|| format!("could not use the state directory {}", dir.display()))?,
        ),
        None => None,
    };
    // One JSON line on stdout says where everything is; scripts wait for
    // it. A closed or broken stdout (a service, a pipe whose reader left)
    // must not stop the agent: the line is lost, nothing else.
    {
        use std::io::Write;
        let line = serde_json::json!({"agent": addr.to_string(), "node": node, "backend": backend, "sites": sites, "metrics": metrics_addr});
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
    let deployments = config.deploy.clone().map(|d| {
        Arc::new(farm_agent::deploy::Deployments::new(
            d,
            iis.clone(),
            Arc::new(SystemRunner),
        ))
    });
    let mut service = farm_agent::service::AgentService::new(node, iis.clone(), cfg)
        .with_deployments(deployments)
        .with_lb_members(lb_members);
    if let Some(state) = state {
        service = service.with_state(Arc::new(state));
    }
    if let Some((listener, m)) = metrics {
        let leases = service.leases();
        let live: farm_agent::metrics::LiveFn = Arc::new(move || {
            let (iis, leases) = (iis.clone(), leases.clone());
            Box::pin(async move {
                farm_agent::metrics::Live {
                    in_flight: iis.in_flight().await.ok().flatten(),
                    drained: !iis.health_file_present().await.unwrap_or(true),
                    leased: leases.current().is_some(),
                }
            })
        });
        tokio::spawn(farm_agent::metrics::serve(
            listener,
            m,
            live,
            std::future::pending(),
        ));
    }
    let busy = service.busy();
    let (stop_server, server_stops) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(farm_agent::server::serve(
        listener,
        service,
        security,
        async {
            let _ = server_stops.await;
        },
    ));
    ready.await;
    tokio::select! {
        served = &mut server => {
            served.context("the server task failed")??;
            anyhow::bail!("the server stopped on its own");
        }
        _ = shutdown => {}
    }
    // A recycle or reset under way finishes first (bounded); holding the
    // lock then keeps another from starting while the server closes.
    let operation = match tokio::time::timeout(args.stop_grace, busy.lock()).await {
        Ok(guard) => {
            tracing::info!("stopping: no operation under way");
            Some(guard)
        }
        Err(_) => {
            tracing::error!(
                "stopping with a recycle or reset still under way after {}: it is recorded as interrupted",
                humantime::format_duration(args.stop_grace)
            );
            None
        }
    };
    let _ = stop_server.send(());
    // Open streams (WatchLoad) are not waited for long; past the grace,
    // hardly at all.
    let close = if operation.is_some() {
        Duration::from_secs(5)
    } else {
        Duration::from_millis(500)
    };
    let _ = tokio::time::timeout(close, server).await;
    drop(operation);
    if let Some(sim) = sim {
        sim.shutdown();
    }
    Ok(())
}

/// mTLS unless --insecure says otherwise, the roles, the audit log.
fn security_settings(
    args: &Args,
    config: &farm_agent::config::AgentConfig,
) -> anyhow::Result<Security> {
    let files = match (&args.tls_cert, &args.tls_key, &args.client_ca) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: ca.clone(),
            crl: args.tls_crl.clone(),
        }),
        _ => config.tls.clone().map(|mut t| {
            if args.tls_crl.is_some() {
                t.crl = args.tls_crl.clone();
            }
            t
        }),
    };
    if args.tls_crl.is_some() && files.is_none() {
        anyhow::bail!(
            "--tls-crl needs TLS (--tls-cert, --tls-key, --client-ca or the config's `tls`)"
        );
    }
    let tls = match (&files, args.insecure) {
        (Some(_), true) => anyhow::bail!("--insecure conflicts with the config file's `tls`: choose one"),
        (Some(f), false) => Some(security::server_config(f).map_err(anyhow::Error::msg)?),
        (None, true) => {
            tracing::warn!(
                "--insecure: serving plaintext gRPC without client authentication; \
                 anyone who can reach this port can recycle or reset IIS"
            );
            None
        }
        (None, false) => anyhow::bail!(
            "no TLS configured: give --tls-cert, --tls-key and --client-ca (or `tls:` in the config file; \
             `farmctl certs` makes them), or --insecure for plaintext"
        ),
    };
    let audit = match args.audit_log.as_ref().or(config.audit_log.as_ref()) {
        Some(path) => Some(Arc::new(Audit::open(path).with_context(|| {
            format!("could not open the audit log {}", path.display())
        })?)),
        None => None,
    };
    Ok(Security {
        tls,
        reload: files,
        max_connections: args
            .max_connections
            .map(|n| n as usize)
            .or(config.max_connections)
            .unwrap_or(0),
        idle_timeout: args.idle_timeout.or(config.idle_timeout),
        authz: config.authorization.clone(),
        audit,
        metrics: None,
    })
}

fn host_name() -> String {
    std::env::var("COMPUTERNAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "localhost".into())
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
