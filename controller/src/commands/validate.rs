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
                match (c.ok, c.warning) {
                    (false, _) => "FIX",
                    (true, true) => "warn",
                    (true, false) => "ok",
                },
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
    /// Not wrong now, but a run would trip on it (an agent that would not
    /// start again after a restart).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
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
                warning: false,
            });
            m
        }
        Err(e) => {
            checks.push(Check {
                check: format!("load balancer {}", farm.lb.name()),
                ok: false,
                detail: e.to_string(),
                warning: false,
            });
            Vec::new()
        }
    };
    let observed = crate::observe::observe(&farm, &members).await;
    let logs = futures::future::join_all(
        farm.agents
            .iter()
            .map(|a| a.traffic_quoting(crate::commands::status::LOG_CHECK_WINDOW_S)),
    )
    .await;
    for (o, traffic) in observed.into_iter().zip(logs) {
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
            warning: false,
        });
        if let Some(start) = o.view.as_ref().ok().and_then(|v| v.service_start.clone()) {
            if !matches!(start.as_str(), "auto" | "delayed-auto") {
                checks.push(Check {
                    check: format!("restart of {}", node.name),
                    ok: true,
                    detail: if start == "not a service" {
                        "the agent does not run as a Windows service: nothing starts it after a restart (patch, reboot); `farm-agent service install` sets it to start automatically".into()
                    } else {
                        format!("the agent's service starts `{start}`: after a restart (patch, reboot) it would not answer; `sc config <service> start= auto`")
                    },
                    warning: true,
                });
            }
        }
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
            warning: false,
        });
        if o.view.is_ok() {
            if let Ok(t) = &traffic {
                let (ok, detail) = logs_check(t);
                checks.push(Check {
                    check: format!("logs of {}", node.name),
                    ok,
                    detail,
                    warning: false,
                });
            }
        }
    }
    Ok(checks)
}

/// Unreadable lines past this share of a site's window fail the check.
const MAX_UNREADABLE: f64 = 0.01;

/// Whether the agent can follow every site's log and read its lines: a
/// folder it cannot read, or more than 1% of a window's lines unreadable
/// (quoting one), is to fix before traffic health can be trusted.
fn logs_check(t: &crate::agent::TrafficView) -> (bool, String) {
    if let Some(why) = &t.unavailable {
        return (true, format!("traffic health not available: {why}"));
    }
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for s in &t.sites {
        if let Some(p) = &s.problem {
            bad.push(format!("site {}: {p}", s.site));
            continue;
        }
        let lines = s.requests + s.checks + s.malformed;
        let share = if lines > 0 {
            s.malformed as f64 / lines as f64
        } else {
            0.0
        };
        if share > MAX_UNREADABLE {
            let reasons: Vec<String> = s
                .malformed_reasons
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            bad.push(format!(
                "site {}: {} of {} line(s) ({:.1}%) could not be read ({}); {}",
                s.site,
                s.malformed,
                lines,
                share * 100.0,
                reasons.join(", "),
                match &s.malformed_sample {
                    Some(line) => format!("for example: {line}"),
                    None => "(a line is quoted to the operator role)".into(),
                }
            ));
        } else if lines == 0 {
            good.push(format!("site {}: no line yet", s.site));
        } else {
            good.push(format!("site {}: {lines} line(s) read", s.site));
        }
    }
    if let Some(p) = &t.httperr_problem {
        bad.push(format!("HTTP.sys error log: {p}"));
    }
    if bad.is_empty() {
        (true, good.join("; "))
    } else {
        (false, bad.join("; "))
    }
}
