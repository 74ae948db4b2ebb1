//! `farmctl validate -i FILE`: 0 when the inventory is valid and every
//! file it names can be read, 2 otherwise, with every problem listed.
use crate::cli::{Output, ValidateArgs};
use crate::commands::{print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};

pub async fn run(v: &ValidateArgs, settings: &Settings) -> CommandResult {
    let args = &v.inv;
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
                crate::errln!(
                    "farmctl: {}: the inventory is well formed, but:",
                    args.inventory.display()
                );
                for p in &problems {
                    crate::errln!("  {}: {}", p.path, p.message);
                }
                for w in &warnings {
                    crate::errln!("  warning: {}: {}", w.path, w.message);
                }
            }
        }
        return Ok(ExitStatus::BadInput);
    }
    if args.output == Output::Text && !settings.quiet {
        for w in &warnings {
            crate::errln!("farmctl: warning: {}: {}", w.path, w.message);
        }
    }
    let checks = if v.connect {
        Some(connect(args, settings).await?)
    } else {
        None
    };
    let failed = checks.as_ref().is_some_and(|c| c.iter().any(|c| !c.ok));
    match args.output {
        o @ (Output::Json | Output::Jsonl) => print_json(
            o,
            &serde_json::json!({
                "checks": checks,
                "valid": true,
                "farm": inv.farm,
                "nodes": inv.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
                "nodes_count": inv.nodes.len(),
                "node_list": inv.nodes.iter().map(|n| serde_json::json!({
                    "name": n.name,
                    "address": n.address,
                    "agent": n.agent,
                    "http_port": n.http_port,
                    "lb_server": n.lb_server,
                })).collect::<Vec<_>>(),
                "load_balancer": inv.load_balancer.kind(),
                "warnings": warnings,
            }),
        ),
        Output::Text if !settings.quiet => crate::outln!(
            "{}: valid; farm {} with {} node(s), {} site(s), load balancer {}",
            args.inventory.display(),
            inv.farm,
            inv.nodes.len(),
            inv.sites.len(),
            inv.load_balancer.kind()
        ),
        Output::Text => {}
    }
    if let (Some(checks), Output::Text) = (&checks, args.output) {
        for c in checks {
            crate::outln!(
                "  [{}] {}: {}",
                if c.ok { "ok" } else { "FIX" },
                c.check,
                c.detail
            );
        }
    }
    Ok(if failed {
        ExitStatus::Failed
    } else {
        ExitStatus::Done
    })
}

/// One thing `validate --connect` tried.
#[derive(Debug, serde::Serialize)]
pub struct Check {
    pub check: String,
    pub ok: bool,
    pub detail: String,
}

/// Each agent, the load balancer and each node's sites, as `status` would
/// reach them — nothing is changed anywhere.
async fn connect(
    args: &crate::cli::InventoryArgs,
    settings: &Settings,
) -> Result<Vec<Check>, crate::exit::CommandError> {
    let farm = settings.farm(&args.inventory)?;
    let mut checks = Vec::new();
    let members = match crate::observe::members(&farm).await {
        Ok(m) => {
            let missing: Vec<&str> = m
                .iter()
                .filter(|x| x.state.is_none())
                .map(|x| x.node.as_str())
                .collect();
            checks.push(Check {
                check: format!("load balancer {}", farm.lb.name()),
                ok: missing.is_empty(),
                detail: if m.is_empty() {
                    "reachable (this driver does not list members)".into()
                } else if missing.is_empty() {
                    format!("answers; every node is a member ({})", m.len())
                } else {
                    format!(
                        "answers, but these nodes are not members: {} (check nodes[].lb_server)",
                        missing.join(", ")
                    )
                },
            });
            m
        }
        Err(e) => {
            checks.push(Check {
                check: format!("load balancer {}", farm.lb.name()),
                ok: false,
                detail: e.to_string(),
            });
            Vec::new()
        }
    };
    for o in crate::observe::observe(&farm, &members).await {
        let node = farm.node(o.node);
        checks.push(Check {
            check: format!("agent of {} ({})", node.name, node.agent),
            ok: o.view.is_ok(),
            detail: match &o.view {
                Ok(v) => format!(
                    "answers over {}; backend {}, IIS {}",
                    if settings.insecure {
                        "plaintext (--insecure)"
                    } else {
                        "mutual TLS"
                    },
                    v.backend,
                    if v.iis_running() {
                        "running"
                    } else {
                        "NOT running"
                    }
                ),
                Err(e) => e.to_string(),
            },
        });
        checks.push(Check {
            check: format!(
                "sites of {} ({}:{})",
                node.name, node.address, node.http_port
            ),
            ok: o.health.is_ok(),
            detail: match &o.health {
                Ok(()) => "every site's probe answers as expected".into(),
                Err(e) => e.to_string(),
            },
        });
    }
    Ok(checks)
}
