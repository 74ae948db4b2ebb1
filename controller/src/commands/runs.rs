//! `farmctl runs`: the runs in the state directory, newest last, with
//! their outcome (`unfinished` means the controller stopped mid-run:
//! `farmctl resume` continues it).
use serde::Serialize;

use crate::cli::{Output, RunShowArgs, RunsArgs, RunsCommand};
use crate::commands::{load_inventory, print_json, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::store::Store;

#[derive(Debug, Serialize)]
struct RunLine {
    run_id: String,
    action: String,
    started_at: String,
    holder: String,
    outcome: String,
    nodes_done: usize,
    nodes: usize,
    /// The same counts, named as counts everywhere (`*_count`).
    nodes_count: usize,
    nodes_done_count: usize,
    journal: String,
}

/// The store `runs` reads: `--state-store`, else the `-i` inventory's
/// `state:`, else the journal directory.
async fn store(args: &RunsArgs, settings: &Settings) -> Result<Store, CommandError> {
    let inv = args.inventory.as_deref().map(load_inventory).transpose()?;
    Store::open(
        settings.state_store.as_deref(),
        inv.as_ref(),
        &settings.state_dir(),
    )
    .await
}

pub async fn run(args: &RunsArgs, settings: &Settings) -> CommandResult {
    let store = store(args, settings).await?;
    match &args.show {
        Some(RunsCommand::Show(show)) => {
            return self::show(show, &store, args.farm.as_deref(), settings).await
        }
        Some(RunsCommand::Import(_)) => return import(&store, settings).await,
        None => {}
    }
    // (`state_dir` in JSON: the journal directory, or the store's name)
    let state = match &store {
        Store::Files(dir) => dir.display().to_string(),
        Store::Etcd(_) => store.label(),
    };
    let runs: Vec<RunLine> = store
        .list(args.farm.as_deref())
        .await
        .map_err(|e| CommandError::failed(format!("could not read the runs in {state}: {e}")))?
        .into_iter()
        .map(|r| RunLine {
            run_id: r.run_id().to_string(),
            outcome: r.outcome(),
            journal: r.path.display().to_string(),
            action: r.header.action.to_string(),
            started_at: r.header.started_at.clone(),
            holder: r.header.holder.clone(),
            nodes_done: r
                .last
                .values()
                .filter(|p| p.phase == farm_proto::domain::Phase::Done)
                .count(),
            nodes: r.header.nodes.len(),
            nodes_count: r.header.nodes.len(),
            nodes_done_count: r
                .last
                .values()
                .filter(|p| p.phase == farm_proto::domain::Phase::Done)
                .count(),
        })
        .collect();
    match args.output {
        o @ (Output::Json | Output::Jsonl) => {
            print_json(o, &serde_json::json!({ "state_dir": state, "runs": runs }))
        }
        Output::Text if runs.is_empty() => crate::outln!("no runs in {state}"),
        Output::Text => {
            crate::outln!(
                "{:<24} {:<8} {:<25} {:<11} {:<6} HOLDER",
                "RUN",
                "ACTION",
                "STARTED",
                "OUTCOME",
                "DONE"
            );
            for r in &runs {
                crate::outln!(
                    "{:<24} {:<8} {:<25} {:<11} {:<6} {}",
                    r.run_id,
                    r.action,
                    r.started_at,
                    r.outcome,
                    format!("{}/{}", r.nodes_done, r.nodes),
                    r.holder
                );
            }
        }
    }
    Ok(ExitStatus::Done)
}

/// `farmctl runs show [RUN_ID] [--html FILE]`.
async fn show(
    args: &RunShowArgs,
    store: &Store,
    farm: Option<&str>,
    settings: &Settings,
) -> CommandResult {
    let run = match &args.run_id {
        Some(id) => match store.find(farm, Some(id)).await {
            Ok(r) => r,
            Err(e) => {
                // Name what there is: the newest runs.
                let runs = store.list(farm).await.unwrap_or_default();
                let newest: Vec<String> = runs
                    .iter()
                    .rev()
                    .take(5)
                    .map(|r| format!("{} ({}, {})", r.run_id(), r.header.action, r.outcome()))
                    .collect();
                return Err(CommandError::bad_input(if newest.is_empty() {
                    format!("no run {id}: {e}; there are no runs in {}", store.label())
                } else {
                    format!(
                        "no run {id} in {}; the newest: {}",
                        store.label(),
                        newest.join(", ")
                    )
                }));
            }
        },
        None => store
            .list(farm)
            .await
            .map_err(CommandError::failed)?
            .pop()
            .ok_or_else(|| CommandError::bad_input(format!("no runs in {}", store.label())))?,
    };
    let timeline = crate::timeline::Timeline::of(&run);
    if let Some(path) = &args.html {
        std::fs::write(path, crate::timeline::html::page(&timeline)).map_err(|e| {
            CommandError::failed(format!("could not write {}: {e}", path.display()))
        })?;
        if !settings.quiet && args.output == Output::Text {
            crate::errln!("wrote {}", path.display());
        }
    }
    match args.output {
        o @ (Output::Json | Output::Jsonl) => print_json(o, &timeline),
        Output::Text => crate::out!("{}", timeline.text()),
    }
    Ok(ExitStatus::Done)
}

/// `farmctl runs import`: the local journals into the shared store.
async fn import(store: &Store, settings: &Settings) -> CommandResult {
    let Store::Etcd(etcd) = store else {
        return Err(CommandError::bad_input(
            "runs import copies into a shared store: name it with --state-store or an inventory's `state:`",
        ));
    };
    let local = crate::journal::list(&settings.state_dir());
    let (mut copied, mut skipped) = (0, Vec::new());
    for run in &local {
        let farm = crate::store::farm_of(run);
        if farm.is_empty() {
            skipped.push(format!(
                "{} (an older journal without its farm)",
                run.run_id()
            ));
            continue;
        }
        match etcd.import(&farm, run).await {
            Ok(true) => copied += 1,
            Ok(false) => skipped.push(format!("{} (already in the store)", run.run_id())),
            Err(e) => {
                return Err(CommandError::failed(format!(
                    "could not import run {}: {e} ({copied} imported before it)",
                    run.run_id()
                )))
            }
        }
    }
    crate::outln!("{copied} run(s) imported into {}", store.label());
    for s in skipped {
        crate::outln!("  skipped {s}");
    }
    Ok(ExitStatus::Done)
}
