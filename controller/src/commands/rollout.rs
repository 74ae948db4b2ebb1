//! `farmctl recycle` and `farmctl reset`: preflight, confirmation, then the
//! rolling run.
use std::io::IsTerminal;
use std::sync::Arc;

use farm_inventory::{validate::check_max_unavailable, Inventory, Ramp};

use crate::agent::Operation;
use crate::cli::{Output, RecycleArgs, RolloutArgs};
use crate::commands::{connect_agents, load_inventory, print_json, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::journal::{Journal, Record};
use crate::report::{summary, NodeReport, Reporter, RunReport};
use crate::rollout::engine::{self, Run};
use crate::{lb, preflight};

pub async fn recycle(args: &RecycleArgs, settings: &Settings) -> CommandResult {
    for p in &args.pools {
        farm_proto::names::check_pool_name(p)
            .map_err(|e| CommandError::bad_input(format!("--pool {p:?}: {e}")))?;
    }
    let inv = load_inventory(&args.rollout.inv.inventory)?;
    let pools = if args.pools.is_empty() {
        inv.app_pools.clone()
    } else {
        args.pools.clone()
    };
    let reporter = settings.reporter();
    let report = execute(
        &inv,
        &args.rollout,
        Operation::Recycle,
        pools,
        settings,
        &*reporter,
    )
    .await?;
    finish(&report, args.rollout.inv.output)
}

pub async fn reset(args: &RolloutArgs, settings: &Settings) -> CommandResult {
    let inv = load_inventory(&args.inv.inventory)?;
    let reporter = settings.reporter();
    let report = execute(
        &inv,
        args,
        Operation::Reset,
        Vec::new(),
        settings,
        &*reporter,
    )
    .await?;
    finish(&report, args.inv.output)
}

/// Prints the report and turns its outcome into the exit status.
pub fn finish(report: &RunReport, output: Output) -> CommandResult {
    match output {
        Output::Json => print_json(report),
        Output::Text => print!("{}", summary(report)),
    }
    Ok(if report.succeeded() {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

/// The run's maintenance window (`--window`, else the inventory's) with
/// the clock and the per-node estimate from past runs.
pub fn window_guard(
    inv: &Inventory,
    args: &RolloutArgs,
    op: Operation,
    settings: &Settings,
) -> Result<Option<crate::window::WindowGuard>, CommandError> {
    let window = match &args.window {
        Some(text) => Some(
            farm_inventory::Window::parse(text)
                .map_err(|e| CommandError::bad_input(format!("--window: {e}")))?,
        ),
        None => inv.rollout.window.clone(),
    };
    Ok(window.map(|window| {
        let state = crate::journal::state_dir(settings.state_dir.as_deref());
        let (per_node, _) = crate::journal::estimate_per_node(&state, op.as_str());
        crate::window::WindowGuard {
            window,
            clock: settings.clock.clone(),
            per_node,
        }
    }))
}

/// `--max-unavailable`, checked, or the inventory's.
pub fn max_unavailable(inv: &Inventory, args: &RolloutArgs) -> Result<Ramp, CommandError> {
    let Some(text) = &args.max_unavailable else {
        return Ok(inv.rollout.max_unavailable.clone());
    };
    let bad = |e: String| CommandError::bad_input(format!("--max-unavailable {text}: {e}"));
    let ramp = Ramp::parse(text).map_err(bad)?;
    for c in &ramp.0 {
        check_max_unavailable(*c, inv.nodes.len()).map_err(bad)?;
    }
    Ok(ramp)
}

/// Node indices named by `--nodes`, in inventory order (all when empty).
pub fn select_nodes(inv: &Inventory, names: &[String]) -> Result<Vec<usize>, CommandError> {
    if names.is_empty() {
        return Ok((0..inv.nodes.len()).collect());
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| {
            !inv.nodes
                .iter()
                .any(|node| node.name.eq_ignore_ascii_case(n))
        })
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(CommandError::bad_input(format!(
            "--nodes: not in the inventory: {}",
            unknown.join(", ")
        )));
    }
    Ok((0..inv.nodes.len())
        .filter(|&i| {
            names
                .iter()
                .any(|n| inv.nodes[i].name.eq_ignore_ascii_case(n))
        })
        .collect())
}

/// Preflight, confirmation and the run itself.
pub async fn execute(
    inv: &Inventory,
    args: &RolloutArgs,
    op: Operation,
    pools: Vec<String>,
    settings: &Settings,
    reporter: &dyn Reporter,
) -> Result<RunReport, CommandError> {
    max_unavailable(inv, args)?;
    if args.canary && !std::io::stdin().is_terminal() {
        return Err(CommandError::bad_input(
            "--canary asks for confirmation after the first node: it needs a terminal",
        ));
    }
    let selected = select_nodes(inv, &args.nodes)?;
    let window = window_guard(inv, args, op, settings)?;
    if let Some(why) = window.as_ref().and_then(|w| w.refuse()) {
        return Err(CommandError::refused(format!("{why}; nothing was touched")));
    }
    let lb = lb::from_inventory(inv).map_err(|e| CommandError::bad_input(e.to_string()))?;
    let agents = connect_agents(inv, settings)?;

    // The farm is ours before we look at it: a second controller is told
    // who holds it, rather than finding nodes drained by someone else.
    let run_id = new_run_id();
    let reason = format!("farmctl {} of {} node(s)", op.as_str(), selected.len());
    let leases = crate::lease::acquire(inv, &agents, &run_id, &reason).await?;
    let result = match prepare(inv, args, op, &pools, &agents, &*lb, &selected, reporter).await {
        Ok((already_out, steps, min_healthy)) => {
            let header = Record::Run {
                run_id: run_id.clone(),
                action: op.as_str().into(),
                inventory: std::path::absolute(&args.inv.inventory)
                    .unwrap_or_else(|_| args.inv.inventory.clone()),
                pools: pools.clone(),
                nodes: selected
                    .iter()
                    .map(|&i| inv.nodes[i].name.clone())
                    .collect(),
                max_unavailable: args.max_unavailable.clone(),
                started_at: crate::journal::now(),
                holder: crate::lease::holder(),
                pid: Some(std::process::id()),
            };
            let state = crate::journal::state_dir(settings.state_dir.as_deref());
            match Journal::create(&state, &header) {
                Ok(journal) => {
                    reporter.note(&format!("journal: {}", journal.path().display()));
                    let run = Run {
                        run_id,
                        inventory: inv,
                        agents,
                        policy: engine::policy(inv, op, lb.drains()),
                        lb,
                        reporter,
                        pools,
                        selected,
                        already_out,
                        max_unavailable: steps,
                        min_healthy,
                        max_failures: inv.rollout.max_failures,
                        on_failure: inv.rollout.on_failure,
                        pause: inv.rollout.pause,
                        window,
                        canary: args
                            .canary
                            .then(|| Box::new(confirm_canary) as engine::CanaryConfirm),
                        journal: Some(Arc::new(journal)),
                        resume: Default::default(),
                        stop: None,
                    };
                    Ok(drive(run).await)
                }
                Err(e) => Err(CommandError::failed(format!(
                    "could not start the run journal in {}: {e} (nothing was touched)",
                    state.display()
                ))),
            }
        }
        Err(e) => Err(e),
    };
    leases.release().await;
    result
}

/// Runs `run`, listening for Ctrl-C: the first finishes the nodes at work
/// and stops with every other node untouched; the second stops at once,
/// leaving the journal for `farmctl resume`.
pub async fn drive(mut run: Run<'_>) -> RunReport {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    run.stop = Some(stop_rx);
    let run_id = run.run_id.clone();
    let signals = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("farmctl: stopping after the nodes at work are done (Ctrl-C again to stop now)");
        stop_tx.send_replace(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("farmctl: stopped at once; the journal is kept: `farmctl resume {run_id}` continues the run");
            std::process::exit(ExitStatus::Failed.code());
        }
    });
    let report = run.execute().await;
    signals.abort();
    report
}

/// Preflight, capacity and confirmation; returns the nodes already out,
/// the batch size and min_healthy.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    inv: &Inventory,
    args: &RolloutArgs,
    op: Operation,
    pools: &[String],
    agents: &std::collections::HashMap<String, std::sync::Arc<dyn crate::agent::AgentApi>>,
    lb: &dyn crate::lb::LoadBalancer,
    selected: &[usize],
    reporter: &dyn Reporter,
) -> Result<(Vec<usize>, Vec<usize>, usize), CommandError> {
    let total = inv.nodes.len();
    let max_unavailable = max_unavailable(inv, args)?;
    reporter.note(&format!("preflight: checking {} node(s)", total));
    let members = lb.members(&inv.nodes).await.map_err(|e| {
        CommandError::refused(format!(
            "preflight refused the {}: load balancer: {e} (nothing was touched)",
            op.as_str()
        ))
    })?;
    let pf = preflight::check(inv, agents, selected, pools, lb.drains(), &members).await;
    for n in &pf.notes {
        reporter.note(n);
    }
    if let Some(refused) = pf.refusal(&format!(
        "preflight refused the {} (nothing was touched)",
        op.as_str()
    )) {
        return Err(refused);
    }
    let steps = max_unavailable.resolve(total);
    let min_healthy = inv.rollout.min_healthy.of(total);
    let batches =
        crate::rollout::plan::batches(selected, total, pf.already_out.len(), &steps, min_healthy)
            .map_err(|e| {
            CommandError::refused(format!("capacity check refused the {}: {e}", op.as_str()))
        })?;

    if !args.yes {
        confirm(inv, op, selected, batches.len()).await?;
    }
    Ok((pf.already_out, steps, min_healthy))
}

/// After the canary node: go on with the rest?
fn confirm_canary(canary: &NodeReport) -> bool {
    let pids: Vec<String> = canary
        .pids_after
        .iter()
        .map(|(pool, p)| format!("{pool} {p:?}"))
        .collect();
    eprint!(
        "canary {} is back in rotation ({}). Go on with the other nodes? [y/N] ",
        canary.name,
        pids.join(", ")
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && matches!(answer.trim(), "y" | "Y" | "yes")
}

/// Asks on the terminal. Ctrl-C at the prompt is a "no": the command
/// returns normally, so the leases already taken are given back.
async fn confirm(
    inv: &Inventory,
    op: Operation,
    selected: &[usize],
    batches: usize,
) -> Result<(), CommandError> {
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::refused(
            "not confirmed: stdin is not a terminal; pass --yes to run without asking",
        ));
    }
    eprint!(
        "{} {} node(s) of farm {} in {batches} batch(es)? [y/N] ",
        op.as_str(),
        selected.len(),
        inv.farm
    );
    let read = tokio::task::spawn_blocking(|| {
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).map(|_| answer)
    });
    let answer = tokio::select! {
        a = read => a.ok().and_then(Result::ok).unwrap_or_default(),
        _ = tokio::signal::ctrl_c() => String::new(),
    };
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CommandError::refused("not confirmed; nothing was touched"))
    }
}

/// `20261121T105500-1a2b3c`: sortable, and short enough for operation ids.
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{stamp}-{}", &rand[..6])
}
