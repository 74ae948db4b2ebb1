//! The agent's command line (the binary's; the library takes
//! [`Flags`]).
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use farm_agent::agent::{BackendKind, Flags};

/// The farmctl agent for one IIS server.
#[derive(Parser, Debug, Clone)]
#[command(name = "farm-agent", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address to serve gRPC on (`127.0.0.1:0` picks a free port); default
    /// the config file's `listen`, else 0.0.0.0:7443.
    #[arg(long)]
    pub listen: Option<String>,
    /// `iis` drives IIS with its own tools (appcmd, iisreset, sc);
    /// `sim` runs the simulator (needs --sim). Default: sim when --sim is
    /// given, iis otherwise.
    #[arg(long, value_enum)]
    pub backend: Option<BackendArg>,
    /// Run the IIS simulator described by this sim file instead of real IIS.
    #[arg(long)]
    pub sim: Option<PathBuf>,
    /// Agent configuration file (health files, tool paths, timeouts).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Delay between `iisreset /start` attempts [default: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub start_retry_delay: Option<Duration>,
    /// How long new workers and services may take to come up (default:
    /// the config file's timeouts.verify, else 90s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub verify_timeout: Option<Duration>,
    /// How often IIS is looked at while verifying an operation
    /// [default: 100ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub poll_interval: Option<Duration>,
    /// This agent's TLS certificate (PEM).
    #[arg(long, requires_all = ["tls_key", "client_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// This agent's private key (PEM).
    #[arg(long, requires_all = ["tls_cert", "client_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The farm CA (PEM): clients must present a certificate it signed.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub client_ca: Option<PathBuf>,
    /// The farm CA's certificate revocation list (PEM; `farmctl certs
    /// revoke` writes one): revoked client certificates are refused.
    /// Re-read, like the certificate and key, when the file changes.
    #[arg(long, value_name = "FILE")]
    pub tls_crl: Option<PathBuf>,
    /// Connections served at once (default the config's
    /// `max_connections`, else 256). At the cap the connection idle the
    /// longest is closed to make room; a quarter of the cap at most per
    /// client certificate.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: Option<u32>,
    /// Close a connection that has had no call for this long (default the
    /// config's `idle_timeout`, else 2m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<std::time::Duration>,
    /// Serve plaintext gRPC without client authentication (prints a
    /// warning; every caller is an operator).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pub insecure: bool,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// More logging (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Serve Prometheus metrics at `GET /metrics` on this address (a
    /// listener of its own; default the config's `metrics.listen`, else
    /// none). Keep it on loopback or a management network.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Where operation records and the lease are kept across restarts
    /// (default: the config's `state_dir`, else `%ProgramData%\farm-agent`
    /// on Windows; elsewhere memory only).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// `text` for people, `json` (one object per line) for log shippers.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Write the log to daily files in DIR (`farm-agent.YYYY-MM-DD.log`,
    /// the last 14 kept) instead of stderr. A service defaults to
    /// `<state dir>\logs`.
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// On stop (Ctrl-C, SIGTERM, a service stop), how long a recycle or
    /// reset under way may take to finish before the agent exits anyway
    /// (the operation is then recorded as interrupted) [default: 60s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stop_grace: Option<Duration>,
    /// Threads serving calls [default: one per CPU]. One is plenty for a
    /// node's agent; the sandbox runs many agents on one host with 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub worker_threads: Option<u16>,
}

impl Args {
    /// The agent's async runtime, with `--worker-threads` if given.
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = self.worker_threads {
            b.worker_threads(usize::from(n));
        }
        b.enable_all().build()
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum BackendArg {
    Iis,
    Sim,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// What the command line said, for [`AgentSettings::resolve`].
    pub fn flags(&self) -> Flags {
        Flags {
            listen: self.listen.clone(),
            backend: self.backend.map(|b| match b {
                BackendArg::Iis => BackendKind::Iis,
                BackendArg::Sim => BackendKind::Sim,
            }),
            sim: self.sim.clone(),
            config: self.config.clone(),
            start_retry_delay: self.start_retry_delay,
            verify_timeout: self.verify_timeout,
            poll_interval: self.poll_interval,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
            tls_crl: self.tls_crl.clone(),
            max_connections: self.max_connections.map(|n| n as usize),
            idle_timeout: self.idle_timeout,
            insecure: self.insecure,
            audit_log: self.audit_log.clone(),
            metrics_listen: self.metrics_listen.clone(),
            state_dir: self.state_dir.clone(),
            stop_grace: self.stop_grace,
        }
    }
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// The agent as a Windows service.
    #[command(subcommand)]
    Service(ServiceCommand),
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ServiceCommand {
    /// Registers the service (automatic delayed start, restart on
    /// failure, LocalSystem unless --account), with the agent arguments
    /// after `--`; paths in them must be absolute.
    Install {
        #[arg(long, default_value = "farm-agent")]
        name: String,
        #[arg(long, default_value = "farmctl agent")]
        display_name: String,
        /// Run as this account (`DOMAIN\user`, `NT AUTHORITY\NetworkService`).
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
pub fn agent_args(given: &[String]) -> anyhow::Result<Args> {
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
