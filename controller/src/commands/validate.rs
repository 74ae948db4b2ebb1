//! `farmctl validate -i FILE`: 0 when the inventory is valid and every
//! file it names can be read, 2 otherwise, with every problem listed.
use crate::cli::{InventoryArgs, Output};
use crate::commands::{print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};

pub fn run(args: &InventoryArgs, settings: &Settings) -> CommandResult {
    let inv = match (farm_inventory::load(&args.inventory), args.output) {
        (Ok(inv), _) => inv,
        (Err(e), o @ (Output::Json | Output::Jsonl)) => {
            // Each error at its place, as a list; `error` the whole text.
            let errors: Vec<serde_json::Value> = match &e {
                farm_inventory::LoadError::Invalid { errors, .. } => errors
                    .iter()
                    .map(|x| {
                        serde_json::json!({
                            "path": x.path,
                            "line": x.line_col.map(|(l, _)| l),
                            "column": x.line_col.map(|(_, c)| c),
                            "message": x.message,
                        })
                    })
                    .collect(),
                other => vec![serde_json::json!({
                    "path": "", "line": null, "column": null, "message": other.to_string(),
                })],
            };
            print_json(
                o,
                &serde_json::json!({"valid": false, "error": e.to_string(), "errors": errors}),
            );
            return Ok(ExitStatus::BadInput);
        }
        (Err(e), Output::Text) => return Err(e.into()),
    };
    let (problems, warnings) = super::inventory_files::check(&inv, settings.insecure);
    if !problems.is_empty() {
        match args.output {
            o @ (Output::Json | Output::Jsonl) => print_json(
                o,
                &serde_json::json!({
                    "valid": false,
                    "error": format!("{}: {} problem(s) with the files it names", args.inventory.display(), problems.len()),
                    "errors": problems,
                    "warnings": warnings,
                }),
            ),
            Output::Text => {
                eprintln!(
                    "farmctl: {}: the inventory is well formed, but:",
                    args.inventory.display()
                );
                for p in &problems {
                    eprintln!("  {}: {}", p.path, p.message);
                }
                for w in &warnings {
                    eprintln!("  warning: {}: {}", w.path, w.message);
                }
            }
        }
        return Ok(ExitStatus::BadInput);
    }
    if args.output == Output::Text && !settings.quiet {
        for w in &warnings {
            eprintln!("farmctl: warning: {}: {}", w.path, w.message);
        }
    }
    match args.output {
        o @ (Output::Json | Output::Jsonl) => print_json(
            o,
            &serde_json::json!({
                "valid": true,
                "farm": inv.farm,
                "nodes": inv.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
                "load_balancer": inv.load_balancer.kind(),
                "warnings": warnings,
            }),
        ),
        Output::Text if !settings.quiet => println!(
            "{}: valid; farm {} with {} node(s), {} site(s), load balancer {}",
            args.inventory.display(),
            inv.farm,
            inv.nodes.len(),
            inv.sites.len(),
            inv.load_balancer.kind()
        ),
        Output::Text => {}
    }
    Ok(ExitStatus::Done)
}
