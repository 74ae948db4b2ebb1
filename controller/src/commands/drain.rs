//! `farmctl drain NODE` / `farmctl undrain NODE`, for on-call use: one node
//! out of (or back into) rotation through the inventory's load balancer.
//!
//! Drain refuses (exit 3) when it would leave fewer than `min_healthy` nodes
//! serving, unless `--force`; it waits until the node is quiesced (LB
//! sessions and in-flight requests gone) or drain_timeout. Undrain refuses
//! an unhealthy node unless `--force`, and waits until the LB sees it up.
use farm_proto::domain::{OpStep, OperationId};
use serde::Serialize;

use crate::capacity::{Capacity, Out};
use crate::cli::DrainArgs;
use crate::commands::{print_json, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::farm::Farm;
use crate::lb::Target;
use crate::observe;
use crate::quiesce::{quiesce, Quiesced};

#[derive(Debug, Serialize)]
struct DrainReport {
    node: String,
    /// `node`, in the words of every other output.
    name: String,
    action: &'static str,
    /// The node is out of rotation now.
    drained: bool,
    /// drain: no LB session and no request in flight any more.
    quiesced: Option<bool>,
    /// undrain: how long the LB took to report the node up.
    lb_up_ms: Option<u64>,
}

pub async fn run(args: &DrainArgs, drain: bool, settings: &Settings) -> CommandResult {
    let farm = settings.farm(&args.inv.inventory)?;
    let Some(idx) = farm.index_of(&args.node) else {
        return Err(CommandError::bad_input(format!(
            "node `{}` is not in the inventory{}",
            args.node,
            crate::human::did_you_mean(
                &args.node,
                farm.inventory.nodes.iter().map(|n| n.name.as_str())
            )
        )));
    };
    let lb = &*farm.lb;
    if !lb.drains() {
        return Err(CommandError::bad_input(
            "the inventory's load balancer is `none`: there is nothing to drain",
        ));
    }
    let node = farm.node(idx);
    let agent = farm.agent(idx);
    let step = if drain {
        OpStep::Drain
    } else {
        OpStep::Undrain
    };
    let op_id = OperationId::new(&crate::run::new_run_id(), &node.name, step).to_string();
    let target = Target {
        node,
        agent,
        op_id: &op_id,
    };
    let say = |m: &str| {
        if !settings.quiet {
            crate::errln!("{m}");
        }
    };
    let timeout = farm.inventory.rollout.drain_timeout;
    let view = check_lease(agent, &node.name, drain, args.force).await?;

    let report = if drain {
        if !args.force {
            check_capacity(&farm, idx).await?;
        }
        say(&format!("draining {} ({})", node.name, lb.name()));
        lb.drain(&target)
            .await
            .map_err(|e| CommandError::failed(format!("could not drain {}: {e}", node.name)))?;
        let quiesced = quiesce(lb, agent, node, timeout)
            .await
            .map_err(|e| CommandError::failed(format!("{}: {e}", node.name)))?
            == Quiesced::Idle;
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
            name: node.name.clone(),
            action: "drain",
            drained: true,
            quiesced: Some(quiesced),
            lb_up_ms: None,
        }
    } else {
        if !args.force {
            farm.probe_once(idx).await.map_err(|e| {
                CommandError::refused(format!(
                    "{} is not healthy ({e}); not returning it (use --force to return it anyway)",
                    node.name
                ))
            })?;
        }
        // Drained on the node itself (a Drain call to its agent, a run's
        // health-file drain) while the LB is another: the LB's health
        // check fails on the missing file, so the file comes back first.
        let health_file_lb = matches!(
            farm.inventory.load_balancer,
            farm_inventory::LoadBalancer::HealthFile { .. }
        );
        if view.as_ref().is_some_and(|v| v.drained) && !health_file_lb {
            say(&format!(
                "{} was also drained on the node itself (its health-check file is away): restoring it",
                node.name
            ));
            let id = OperationId::new(&crate::run::new_run_id(), &node.name, OpStep::Undrain)
                .to_string();
            agent.undrain(&id).await.map_err(|e| {
                CommandError::failed(format!(
                    "could not restore {}'s health-check file: {e}",
                    node.name
                ))
            })?;
        }
        say(&format!("returning {} ({})", node.name, lb.name()));
        let took = lb
            .undrain(&target, farm.inventory.rollout.healthy_timeout)
            .await
            .map_err(|e| CommandError::failed(format!("could not return {}: {e}", node.name)))?;
        say(&format!(
            "{} is back in rotation ({} ms until the LB saw it up)",
            node.name,
            took.as_millis()
        ));
        DrainReport {
            node: node.name.clone(),
            name: node.name.clone(),
            action: "undrain",
            drained: false,
            quiesced: None,
            lb_up_ms: Some(took.as_millis() as u64),
        }
    };
    if args.inv.output.structured() {
        print_json(args.inv.output, &report);
    }
    Ok(match report.quiesced {
        Some(false) => ExitStatus::Failed,
        _ => ExitStatus::Done,
    })
}

/// Refuses to touch a node a run holds: the run drains and returns it
/// itself, and an on-call change under it would break its capacity count
/// (or return a node it is recycling). With an LB the controller drives
/// directly the agent's own lease check is never asked, so it is asked
/// here. `--force` does not override a lease: taking over a dead run's
/// nodes is `farmctl resume --force-takeover`'s job.
async fn check_lease(
    agent: &dyn crate::agent::AgentApi,
    node: &str,
    drain: bool,
    force: bool,
) -> Result<Option<crate::agent::NodeView>, CommandError> {
    let verb = if drain { "draining" } else { "returning" };
    match agent.status().await {
        Ok(view) => match &view.lease {
            Some(lease) => Err(CommandError::refused(format!(
                "not {verb} {node}: it is leased to {}. A run holds it; it returns the \
                 node itself. If that run's controller is gone, `farmctl resume {}` \
                 finishes it (or `farmctl resume {} --force-takeover` from another \
                 host); the lease also runs out by itself, and its dead-man switch \
                 returns a health-file drain",
                lease.describe(crate::clock::now_unix_ms()),
                lease.run_id,
                lease.run_id,
            ))),
            None => Ok(Some(view)),
        },
        Err(e) if force => {
            crate::errln!(
                "farmctl: WARNING: could not ask {node}'s agent whether a run holds the node ({e}); {verb} it anyway (--force)"
            );
            Ok(None)
        }
        Err(e) => Err(CommandError::refused(format!(
            "not {verb} {node}: could not ask its agent whether a run holds the node ({e}); \
             --force {} it without asking",
            if drain { "drains" } else { "returns" }
        ))),
    }
}

/// Refuses a drain that would leave fewer than min_healthy nodes serving,
/// counting every other node that does not serve now.
async fn check_capacity(farm: &Farm, idx: usize) -> Result<(), CommandError> {
    let members = observe::members(farm)
        .await
        .map_err(|e| CommandError::refused(format!("load balancer: {e}")))?;
    let drains = farm.lb.drains();
    let out = observe::observe(farm, &members)
        .await
        .iter()
        .filter(|o| o.node != idx && !o.serving(drains))
        .count();
    let total = farm.inventory.nodes.len();
    // On-call drains answer to min_healthy only.
    let capacity = Capacity::new(
        total,
        farm.inventory.rollout.min_healthy.of(total),
        &[total],
    );
    let out = Out {
        before: out,
        ..Out::default()
    };
    capacity.may_start(out, total).map_err(|blocked| {
        CommandError::refused(format!(
            "not draining {}: {blocked} (use --force to drain anyway)",
            farm.node(idx).name
        ))
    })
}

/// The guard's quarantine: the node out of rotation through the load
/// balancer, refused when that would leave fewer than `min_healthy`
/// serving or a run holds it.
pub async fn quarantine(farm: &Farm, name: &str) -> Result<(), CommandError> {
    let idx = farm
        .index_of(name)
        .ok_or_else(|| CommandError::bad_input(format!("node `{name}` is not in the inventory")))?;
    if !farm.lb.drains() {
        return Err(CommandError::refused(
            "the inventory's load balancer is `none`: there is nothing to drain",
        ));
    }
    check_lease(farm.agent(idx), name, true, false).await?;
    check_capacity(farm, idx).await?;
    let node = farm.node(idx);
    let op_id = OperationId::new(&crate::run::new_run_id(), name, OpStep::Drain).to_string();
    let target = Target {
        node,
        agent: farm.agent(idx),
        op_id: &op_id,
    };
    farm.lb
        .drain(&target)
        .await
        .map_err(|e| CommandError::failed(format!("could not drain {name}: {e}")))
}
