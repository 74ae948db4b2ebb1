//! `farmctl service install|uninstall|run`: `farmctl guard` as a native
//! Windows service, through the same service support as the agent
//! (`farm-winsvc`), its lifecycle in the Windows Event Log (source
//! `farmctl`).
//!
//! `install` registers `farmctl.exe service run --name NAME -- guard ...`;
//! `run` is what the SCM starts: it runs the guard until Stop or
//! Shutdown, and lets an action under way finish before it exits (as
//! Ctrl-C does in a terminal).
use crate::cli::{Cli, Command, ServiceCommand};
use crate::exit::CommandError;

/// The Event Log source the guard service writes its lifecycle to.
pub const EVENT_SOURCE: &str = "farmctl";

/// The command line a service runs, parsed and checked: `guard` only,
/// every path absolute (a service starts in the system folder).
pub fn guard_command(given: &[String]) -> Result<Cli, CommandError> {
    use clap::Parser;
    let cli =
        Cli::try_parse_from(std::iter::once("farmctl".to_string()).chain(given.iter().cloned()))
            .map_err(|e| {
                CommandError::bad_input(format!(
                    "the command line after `--`: {}",
                    e.render().to_string().trim()
                ))
            })?;
    let Command::Guard(g) = &cli.command else {
        return Err(CommandError::bad_input(
            "the command line after `--` must be a `guard` command (`-- guard -i C:\\farm\\farm.yaml`): only the guard runs as a service",
        ));
    };
    let paths = [
        ("-i", Some(&g.inv.inventory)),
        ("--log", g.log.as_ref()),
        ("--state-dir", g.state.state_dir.as_ref()),
        ("--state-dir", cli.state.state_dir.as_ref()),
    ];
    for (flag, p) in paths {
        if let Some(p) = p.filter(|p| !p.is_absolute()) {
            return Err(CommandError::bad_input(format!(
                "{flag} {}: a service needs an absolute path (it starts in the system folder)",
                p.display()
            )));
        }
    }
    Ok(cli)
}

/// Checks the guard command line (wherever this runs: a bad one is said
/// before anything else), then does the service command.
pub fn run(cmd: &ServiceCommand) -> Result<(), CommandError> {
    let guard = match cmd {
        ServiceCommand::Install { command_line, .. } | ServiceCommand::Run { command_line, .. } => {
            Some(guard_command(command_line)?)
        }
        ServiceCommand::Uninstall { .. } => None,
    };
    windows::run(cmd, guard)
}

#[cfg(not(windows))]
mod windows {
    use super::*;

    pub fn run(_cmd: &ServiceCommand, _guard: Option<Cli>) -> Result<(), CommandError> {
        Err(CommandError::bad_input(
            "`farmctl service` is for Windows; elsewhere run `farmctl guard` under your service manager (a systemd unit: see the README's guard section)",
        ))
    }
}

#[cfg(windows)]
mod windows {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::commands::Settings;

    /// Stopping may wait for an action under way (a drain, a recycle, a
    /// return).
    const STOPPING_HINT: Duration = Duration::from_secs(300);

    fn failed(e: anyhow::Error) -> CommandError {
        CommandError::failed(format!("{e:#}"))
    }

    pub fn run(cmd: &ServiceCommand, guard: Option<Cli>) -> Result<(), CommandError> {
        match cmd {
            ServiceCommand::Install {
                name,
                display_name,
                account,
                password_env,
                command_line,
            } => {
                farm_winsvc::install(&farm_winsvc::Install {
                    name,
                    display_name,
                    description: "farmctl guard: recycles a pool sick compared with its peers, one at a time, behind the load balancer",
                    account: account.as_deref(),
                    password_env: password_env.as_deref(),
                    launch: farm_winsvc::launch(name, command_line),
                    event_source: EVENT_SOURCE,
                })
                .map_err(failed)
            }
            ServiceCommand::Uninstall { name } => {
                farm_winsvc::uninstall(name, EVENT_SOURCE).map_err(failed)
            }
            ServiceCommand::Run { name, .. } => {
                let Some(cli) = guard else {
                    return Err(CommandError::bad_input("not a guard command"));
                };
                let settings = Settings::of(&cli, Arc::new(crate::report::Silent));
                let Command::Guard(args) = cli.command else {
                    return Err(CommandError::bad_input("not a guard command"));
                };
                farm_winsvc::run(
                    name,
                    EVENT_SOURCE,
                    STOPPING_HINT,
                    Box::new(move |c| {
                        let runtime = tokio::runtime::Runtime::new()?;
                        let result = runtime.block_on(async move {
                            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                            tokio::spawn(async move {
                                let _ = c.stop.await;
                                stop_tx.send_replace(true);
                            });
                            let farm = settings.farm(&args.inv.inventory)?;
                            (c.running)();
                            crate::guard::guard_farm(&farm, &args, &settings, stop_rx).await
                        });
                        runtime.shutdown_timeout(Duration::from_secs(5));
                        result.map(|_| ()).map_err(|e| anyhow::anyhow!("{e}"))
                    }),
                )
                .map_err(failed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn only_a_guard_with_absolute_paths_runs_as_a_service() {
        let abs = if cfg!(windows) { r"C:\farm" } else { "/farm" };
        let ok = guard_command(&line(&format!(
            "--insecure guard -i {abs}/farm.yaml --state-dir {abs}/state --log {abs}/g.jsonl"
        )))
        .unwrap();
        assert!(matches!(ok.command, Command::Guard(_)));
        let e = guard_command(&line(&format!("recycle -i {abs}/farm.yaml --yes"))).unwrap_err();
        assert!(e.message.contains("must be a `guard` command"), "{e}");
        let e = guard_command(&line("guard -i farm.yaml")).unwrap_err();
        assert!(
            e.message
                .contains("-i farm.yaml: a service needs an absolute path"),
            "{e}"
        );
        let e = guard_command(&line(&format!("guard -i {abs}/f.yaml --log g.jsonl"))).unwrap_err();
        assert!(e.message.contains("--log g.jsonl"), "{e}");
        let e = guard_command(&line(&format!("guard -i {abs}/f.yaml --bogus"))).unwrap_err();
        assert!(e.message.contains("--bogus"), "{e}");
        assert_eq!(e.status, crate::exit::ExitStatus::BadInput);
    }
}
