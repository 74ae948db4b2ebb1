//! `farm-agent service install|uninstall|run`: the agent as a native
//! Windows service (through the workspace's `farm-winsvc`), with its
//! lifecycle in the Windows Event Log (source `farm-agent`).
//!
//! `install` registers `farm-agent.exe service run --name NAME -- ARGS`.
//! `run` is what the SCM starts: on Stop or Shutdown it lets an operation
//! under way finish within the agent's stop grace before it exits.
use std::time::Duration;

use anyhow::Context;

use crate::args::Args;

/// The Event Log source the agent writes its lifecycle to.
pub const EVENT_SOURCE: &str = "farm-agent";

pub fn install(
    name: &str,
    display_name: &str,
    account: Option<&str>,
    password_env: Option<&str>,
    agent_args: &[String],
) -> anyhow::Result<()> {
    farm_winsvc::install(&farm_winsvc::Install {
        name,
        display_name,
        description:
            "farmctl agent: recycles, resets and deploys IIS for rolling runs of a load-balanced farm",
        account,
        password_env,
        launch: farm_winsvc::launch(name, agent_args),
        event_source: EVENT_SOURCE,
    })
}

pub fn uninstall(name: &str) -> anyhow::Result<()> {
    farm_winsvc::uninstall(name, EVENT_SOURCE)
}

/// Hands the process to the SCM, which serves the agent until Stop.
pub fn run(name: &str, args: Args) -> anyhow::Result<()> {
    // Stopping may take the stop grace (an operation finishing) and the
    // server's own close.
    let stopping_hint = args
        .stop_grace
        .unwrap_or(farm_agent::agent::DEFAULT_STOP_GRACE)
        + Duration::from_secs(15);
    let service = name.to_string();
    farm_winsvc::run(
        name,
        EVENT_SOURCE,
        stopping_hint,
        Box::new(move |c| {
            let runtime = args.runtime().context("tokio runtime")?;
            let result = runtime.block_on(crate::run(
                args,
                Some(service),
                async move { (c.running)() },
                async move {
                    let _ = c.stop.await;
                },
            ));
            runtime.shutdown_timeout(Duration::from_secs(5));
            result
        }),
    )
}
