//! `farmctl resume [RUN_ID]`: continues a run whose controller stopped
//! (crash, SIGKILL, second Ctrl-C). It takes the run's leases again (same
//! run id, so an agent still holding the old lease accepts), reconciles
//! each node's journaled phase with the live node and finishes it: a
//! drained node is returned, an interrupted operation is asked for again
//! under its operation id (the agent answers with its first result) unless
//! the node's worker PIDs show it already ran. No completed operation is
//! repeated.
use std::sync::Arc;

use futures::future::join_all;

use crate::agent::Operation;
use crate::cli::ResumeArgs;
use crate::commands::rollout::{drive, finish};
use crate::commands::{connect_agents, load_inventory, Settings};
use crate::exit::{CommandError, CommandResult};
use crate::journal::{self, Journal, Record};
use crate::rollout::engine::{self, Run};
use crate::rollout::resume;

pub async fn run(args: &ResumeArgs, settings: &Settings) -> CommandResult {
    let state = journal::state_dir(settings.state_dir.as_deref());
    let loaded = journal::find(&state, args.run_id.as_deref()).map_err(CommandError::bad_input)?;
    if let Some(pid) = journal::still_running(&loaded) {
        return Err(CommandError::refused(format!(
            "run {} is still running here (farmctl process {pid}); stop it first (Ctrl-C) — \
             two controllers must not drive one run",
            loaded.run_id()
        )));
    }
    if loaded.end.is_some() {
        return Err(CommandError::bad_input(format!(
            "run {} already ended ({}); nothing to resume",
            loaded.run_id(),
            loaded.outcome()
        )));
    }
    let Record::Run {
        run_id,
        action,
        inventory,
        pools,
        ..
    } = &loaded.header
    else {
        return Err(CommandError::bad_input("the journal has no run header"));
    };
    let op = match action.as_str() {
        "recycle" => Operation::Recycle,
        "reset" => Operation::Reset,
        other => {
            return Err(CommandError::bad_input(format!(
                "unknown action `{other}` in the journal"
            )))
        }
    };
    let inv_path = args.inventory.clone().unwrap_or_else(|| inventory.clone());
    let inv = load_inventory(&inv_path)?;
    let points = resume::points(&loaded, &inv).map_err(CommandError::bad_input)?;
    let lb = crate::lb::from_inventory(&inv).map_err(|e| CommandError::bad_input(e.to_string()))?;
    let agents = connect_agents(&inv, settings)?;
    let reporter = settings.reporter();
    reporter.note(&format!(
        "resuming run {run_id} ({action}) from {}",
        loaded.path.display()
    ));

    // Every node of the run must answer before anything is done.
    let mut selected: Vec<usize> = points.keys().copied().collect();
    selected.sort();
    let unreachable: Vec<String> = join_all(selected.iter().map(|&i| {
        let (name, agent) = (
            inv.nodes[i].name.clone(),
            agents[&inv.nodes[i].name].clone(),
        );
        async move { agent.status().await.err().map(|e| format!("{name}: {e}")) }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    if !unreachable.is_empty() {
        return Err(CommandError::refused(format!(
            "cannot resume: {} (nothing was touched)",
            unreachable.join("; ")
        )));
    }
    let leases = crate::lease::acquire(
        &inv,
        &agents,
        run_id,
        &format!("farmctl resume of {action}"),
    )
    .await?;
    let journal = match Journal::reopen(&loaded.path) {
        Ok(j) => Arc::new(j),
        Err(e) => {
            leases.release().await;
            return Err(CommandError::failed(format!(
                "could not reopen the journal: {e}"
            )));
        }
    };
    let total = inv.nodes.len();
    let run = Run {
        run_id: run_id.clone(),
        inventory: &inv,
        agents,
        policy: engine::policy(&inv, op, lb.drains()),
        lb,
        reporter: &*reporter,
        pools: pools.clone(),
        selected,
        already_out: Vec::new(),
        max_unavailable: inv.rollout.max_unavailable.resolve(total),
        min_healthy: inv.rollout.min_healthy.of(total),
        max_failures: inv.rollout.max_failures,
        on_failure: inv.rollout.on_failure,
        pause: inv.rollout.pause,
        canary: None,
        window: None,
        journal: Some(journal),
        resume: points,
        stop: None,
    };
    let report = drive(run).await;
    leases.release().await;
    finish(&report, args.output)
}
