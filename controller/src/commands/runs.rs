//! `farmctl runs`: the runs in the state directory, newest last, with
//! their outcome (`unfinished` means the controller stopped mid-run:
//! `farmctl resume` continues it).
use serde::Serialize;

use crate::cli::{Output, RunShowArgs, RunsArgs, RunsCommand};
use crate::commands::{print_json, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
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
    if let Some(RunsCommand::Show(show)) = &args.show {
        return self::show(show, settings);
    }
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
        o @ (Output::Json | Output::Jsonl) => {
            print_json(o, &serde_json::json!({ "state_dir": state, "runs": runs }))
        }
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

/// `farmctl runs show [RUN_ID] [--html FILE]`.
fn show(args: &RunShowArgs, settings: &Settings) -> CommandResult {
    let state = settings.state_dir();
    let run = match &args.run_id {
        Some(id) => journal::find(&state, Some(id)).map_err(CommandError::bad_input)?,
        None => journal::list(&state)
            .pop()
            .ok_or_else(|| CommandError::bad_input(format!("no runs in {}", state.display())))?,
    };
    let timeline = crate::timeline::Timeline::of(&run);
    if let Some(path) = &args.html {
        std::fs::write(path, crate::timeline::html::page(&timeline)).map_err(|e| {
            CommandError::failed(format!("could not write {}: {e}", path.display()))
        })?;
        if !settings.quiet && args.output == Output::Text {
            eprintln!("wrote {}", path.display());
        }
    }
    match args.output {
        o @ (Output::Json | Output::Jsonl) => print_json(o, &timeline),
        Output::Text => print!("{}", timeline.text()),
    }
    Ok(ExitStatus::Done)
}
