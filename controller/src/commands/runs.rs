//! `farmctl runs`: the runs in the state directory, newest last, with
//! their outcome (`unfinished` means the controller stopped mid-run:
//! `farmctl resume` continues it).
use serde::Serialize;

use crate::cli::{Output, RunsArgs};
use crate::commands::{print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};
use crate::journal::{self, Record};

#[derive(Debug, Serialize)]
struct RunLine {
    run_id: String,
    action: String,
    started_at: String,
    holder: String,
    outcome: String,
    nodes_done: usize,
    nodes: usize,
    journal: String,
}

pub fn run(args: &RunsArgs, settings: &Settings) -> CommandResult {
    let state = journal::state_dir(settings.state_dir.as_deref());
    let runs: Vec<RunLine> = journal::list(&state)
        .into_iter()
        .map(|r| {
            let (action, started_at, holder, nodes) = match &r.header {
                Record::Run {
                    action,
                    started_at,
                    holder,
                    nodes,
                    ..
                } => (
                    action.clone(),
                    started_at.clone(),
                    holder.clone(),
                    nodes.len(),
                ),
                _ => Default::default(),
            };
            let nodes_done = r
                .last
                .values()
                .filter(|p| matches!(p, Record::Phase { phase, .. } if phase == "done"))
                .count();
            RunLine {
                run_id: r.run_id().to_string(),
                outcome: r.outcome(),
                journal: r.path.display().to_string(),
                action,
                started_at,
                holder,
                nodes_done,
                nodes,
            }
        })
        .collect();
    match args.output {
        Output::Json => print_json(&serde_json::json!({ "state_dir": state, "runs": runs })),
        Output::Text if runs.is_empty() => println!("no runs in {}", state.display()),
        Output::Text => {
            println!(
                "{:<24} {:<8} {:<25} {:<11} {:<6} HOLDER",
                "RUN", "ACTION", "STARTED", "OUTCOME", "DONE"
            );
            for r in &runs {
                println!(
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
