//! `farmctl drain NODE` / `farmctl undrain NODE`, for on-call use: one node
//! out of (or back into) rotation through the inventory's load balancer.
//!
//! Drain refuses (exit 3) when it would leave fewer than `min_healthy` nodes
//! serving, unless `--force`; it waits until the node is quiesced (LB
//! sessions and in-flight requests gone) or drain_timeout. Undrain refuses
//! an unhealthy node unless `--force`, and waits until the LB sees it up.
use std::time::Instant;

use futures::future::join_all;
use serde::Serialize;

use crate::cli::{DrainArgs, Output};
use crate::commands::rollout::new_run_id;
use crate::commands::{connect_agents, load_inventory, print_json, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::lb::{self, Target};
use crate::probe;

#[derive(Debug, Serialize)]
struct DrainReport {
    node: String,
    action: &'static str,
    /// The node is out of rotation now.
    drained: bool,
    /// drain: no LB session and no request in flight any more.
    quiesced: Option<bool>,
    /// undrain: how long the LB took to report the node up.
    lb_up_ms: Option<u64>,
}

pub async fn run(args: &DrainArgs, drain: bool, settings: &Settings) -> CommandResult {
    let inv = load_inventory(&args.inv.inventory)?;
    let Some(idx) = inv
        .nodes
        .iter()
        .position(|n| n.name.eq_ignore_ascii_case(&args.node))
    else {
        return Err(CommandError::bad_input(format!(
            "node `{}` is not in the inventory",
            args.node
        )));
    };
    let node = &inv.nodes[idx];
    let lb = lb::from_inventory(&inv).map_err(|e| CommandError::bad_input(e.to_string()))?;
    if !lb.drains() {
        return Err(CommandError::bad_input(
            "the inventory's load balancer is `none`: there is nothing to drain",
        ));
    }
    let agents = connect_agents(&inv, settings)?;
    let agent = agents[&node.name].clone();
    let op_id = format!(
        "{}.{idx}.{}",
        new_run_id(),
        if drain { "drain" } else { "undrain" }
    );
    let target = Target {
        node,
        agent: &*agent,
        op_id: &op_id,
    };
    let say = |m: &str| {
        if !settings.quiet {
            eprintln!("{m}");
        }
    };

    let report = if drain {
        if !args.force {
            check_capacity(&inv, idx, &agents, &*lb).await?;
        }
        say(&format!("draining {} ({})", node.name, lb.kind()));
        lb.drain(&target)
            .await
            .map_err(|e| CommandError::failed(e.to_string()))?;
        let deadline = Instant::now() + inv.rollout.drain_timeout;
        let lb_quiet = lb
            .wait_sessions_gone(node, inv.rollout.drain_timeout)
            .await
            .map_err(|e| CommandError::failed(e.to_string()))?;
        let quiesced = lb_quiet
            && agent
                .wait_idle(deadline.saturating_duration_since(Instant::now()))
                .await
                .map_err(|e| CommandError::failed(format!("{}: {e}", node.name)))?;
        say(&if quiesced {
            format!("{} is out of rotation and idle", node.name)
        } else {
            format!(
                "{} is out of rotation but still has work in flight after drain_timeout",
                node.name
            )
        });
        DrainReport {
            node: node.name.clone(),
            action: "drain",
            drained: true,
            quiesced: Some(quiesced),
            lb_up_ms: None,
        }
    } else {
        if !args.force {
            probe::probe_node_once(node, &inv.sites)
                .await
                .map_err(|e| {
                    CommandError::refused(format!(
                    "{} is not healthy ({e}); not returning it (use --force to return it anyway)",
                    node.name
                ))
                })?;
        }
        say(&format!("returning {} ({})", node.name, lb.kind()));
        let took = lb
            .undrain(&target, inv.rollout.healthy_timeout)
            .await
            .map_err(|e| CommandError::failed(e.to_string()))?;
        say(&format!(
            "{} is back in rotation ({} ms until the LB saw it up)",
            node.name,
            took.as_millis()
        ));
        DrainReport {
            node: node.name.clone(),
            action: "undrain",
            drained: false,
            quiesced: None,
            lb_up_ms: Some(took.as_millis() as u64),
        }
    };
    if args.inv.output == Output::Json {
        print_json(&report);
    }
    Ok(match report.quiesced {
        Some(false) => ExitStatus::Failed,
        _ => ExitStatus::Done,
    })
}

/// Refuses a drain that would leave fewer than min_healthy nodes serving,
/// counting nodes already out (drained, unhealthy, unreachable, LB not UP).
async fn check_capacity(
    inv: &farm_inventory::Inventory,
    idx: usize,
    agents: &std::collections::HashMap<String, std::sync::Arc<dyn crate::agent::AgentApi>>,
    lb: &dyn lb::LoadBalancer,
) -> Result<(), CommandError> {
    let members = lb
        .members(&inv.nodes)
        .await
        .map_err(|e| CommandError::refused(format!("load balancer: {e}")))?;
    let serving = join_all(inv.nodes.iter().enumerate().filter(|(i, _)| *i != idx).map(
        |(_, n)| {
            let agent = agents[&n.name].clone();
            let lb_ok = members
                .iter()
                .find(|m| m.node == n.name)
                .is_none_or(|m| m.serving());
            async move {
                let (view, health) =
                    tokio::join!(agent.status(), probe::probe_node_once(n, &inv.sites));
                lb_ok && health.is_ok() && view.is_ok_and(|v| !v.drained)
            }
        },
    ))
    .await
    .into_iter()
    .filter(|ok| *ok)
    .count();
    let min = inv.rollout.min_healthy.of(inv.nodes.len());
    if serving < min {
        return Err(CommandError::refused(format!(
            "draining {} would leave {serving} node(s) serving, fewer than min_healthy={min} (use --force to drain anyway)",
            inv.nodes[idx].name
        )));
    }
    Ok(())
}
