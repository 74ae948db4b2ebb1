//! `farm-agent`: serves the NodeAgent gRPC API for one IIS server. The
//! binary parses the command line, sets up logging and signals, and hands
//! the rest to the library ([`farm_agent::agent`]).
use clap::Parser;
use farm_agent::agent::{self, AgentSettings, Ready};

mod args;
mod logging;
#[cfg(windows)]
mod winsvc;

use args::{agent_args, Args, Command, ServiceCommand};
use logging::init_logging;

fn main() {
    let args = Args::parse();
    let code = match args.command.clone() {
        Some(Command::Service(cmd)) => service(cmd),
        None => {
            let _log = init_logging(args.verbose, args.log_format, args.log_dir.as_deref());
            args.runtime()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(run(args, None, async {}, shutdown_signal())))
        }
    };
    if let Err(e) = code {
        eprintln!("farm-agent: {e:#}");
        // 3: another agent holds the state directory; 2: anything else.
        let in_use = e.chain().any(|c| {
            c.downcast_ref::<agent::RunError>()
                .is_some_and(|r| r.state_dir_in_use())
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
            let _log = init_logging(args.verbose, args.log_format, log_dir.as_deref());
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
/// Resolves the settings and serves until `shutdown`; `ready` runs once
/// the agent listens (a service reports itself running then).
async fn run(
    args: Args,
    service: Option<String>,
    ready: impl std::future::Future<Output = ()>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut settings = AgentSettings::load(&args.flags())?;
    settings.service_name = service;
    let (listening, told) = tokio::sync::oneshot::channel::<()>();
    let on_ready = move |r: &Ready| {
        // One JSON line on stdout says where everything is; scripts wait
        // for it. A closed or broken stdout (a service, a pipe whose
        // reader left) must not stop the agent: the line is lost, nothing
        // else.
        use std::io::Write;
        if let Ok(line) = serde_json::to_string(r) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
        let _ = listening.send(());
    };
    let ready = async {
        if told.await.is_ok() {
            ready.await;
        }
    };
    let (served, ()) = tokio::join!(agent::run(settings, on_ready, shutdown), ready);
    if served? == agent::Ended::Rebooted {
        // What a restart does to the process; the sandbox (the simulated
        // server's "firmware") starts it again after the boot time.
        std::process::exit(farm_agent::sim::host::REBOOT_EXIT_CODE);
    }
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
