//! `farmctl runs`: the runs in the state directory, newest last, with
//! their outcome (`unfinished` means the controller stopped mid-run:
//! `farmctl resume` continues it).
use serde::Serialize;

use crate::cli::{Output, RunsArgs};
use crate::commands::{print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};
use crate::journal;

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
    let state = &settings.state_dir();
    let runs: Vec<RunLine> = journal::list(state)
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
