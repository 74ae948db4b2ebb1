//! `farmctl plan recycle|reset -i FILE`: what a run would do, without
//! doing it: the batches, the capacity timeline (nodes in rotation at each
//! step, for the load balancer's backend), and an estimated duration from
//! past runs. It reaches the same verdict a run would: a plan that would
//! break min_healthy, or that preflight would refuse, exits 3.
use serde::Serialize;

use crate::agent::Operation;
use crate::cli::{Output, PlanAction, PlanArgs};
use crate::commands::rollout::{max_unavailable, select_nodes, window_guard};
use crate::commands::{connect_agents, load_inventory, print_json, Settings};
use crate::exit::{CommandError, CommandResult, ExitStatus};
use crate::{journal, lb, preflight};

#[derive(Debug, Serialize)]
struct Step {
    step: usize,
    /// The nodes this batch takes out.
    batch: Vec<String>,
    /// Every node out of rotation during the batch (with those already out).
    out: Vec<String>,
    in_rotation: usize,
    min_healthy: usize,
}

#[derive(Debug, Serialize)]
struct Plan {
    action: String,
    farm: String,
    backend: String,
    nodes: usize,
    already_out: Vec<String>,
    max_unavailable: String,
    steps: Vec<Step>,
    estimate_s: u64,
    estimate_basis: String,
    window: Option<String>,
    fits_window: Option<bool>,
}

pub async fn run(args: &PlanArgs, settings: &Settings) -> CommandResult {
    let op = match args.action {
        PlanAction::Recycle => Operation::Recycle,
        PlanAction::Reset => Operation::Reset,
    };
    let r = &args.rollout;
    let inv = load_inventory(&r.inv.inventory)?;
    let ramp = max_unavailable(&inv, r)?;
    let selected = select_nodes(&inv, &r.nodes)?;
    let window = window_guard(&inv, r, op, settings)?;
    let pools = match (op, args.pools.is_empty()) {
        (Operation::Recycle, true) => inv.app_pools.clone(),
        (Operation::Recycle, false) => args.pools.clone(),
        (Operation::Reset, _) => Vec::new(),
    };
    let lb = lb::from_inventory(&inv).map_err(|e| CommandError::bad_input(e.to_string()))?;
    let agents = connect_agents(&inv, settings)?;
    let members = lb
        .members(&inv.nodes)
        .await
        .map_err(|e| CommandError::refused(format!("load balancer: {e}")))?;
    let pf = preflight::check(&inv, &agents, &selected, &pools, lb.drains(), &members).await;
    if let Some(refused) = pf.refusal(&format!("a {} now would be refused", op.as_str())) {
        return Err(refused);
    }
    let total = inv.nodes.len();
    let steps_max = ramp.resolve(total);
    let min_healthy = inv.rollout.min_healthy.of(total);
    let batches = crate::rollout::plan::batches(
        &selected,
        total,
        pf.already_out.len(),
        &steps_max,
        min_healthy,
    )
    .map_err(|e| CommandError::refused(format!("the plan breaks the capacity policy: {e}")))?;
    let name = |i: &usize| inv.nodes[*i].name.clone();
    let already_out: Vec<String> = pf.already_out.iter().map(name).collect();
    let steps: Vec<Step> = batches
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let out: Vec<String> = already_out
                .iter()
                .cloned()
                .chain(b.iter().map(name))
                .collect();
            Step {
                step: k + 1,
                batch: b.iter().map(name).collect(),
                in_rotation: total - out.len(),
                out,
                min_healthy,
            }
        })
        .collect();
    let state = journal::state_dir(settings.state_dir.as_deref());
    let (per_node, basis) = journal::estimate_per_node(&state, op.as_str());
    let pauses = inv.rollout.pause.unwrap_or_default() * batches.len().saturating_sub(1) as u32;
    let estimate = per_node * batches.len() as u32 + pauses;
    let fits = window.as_ref().map(|w| {
        w.window
            .remaining(w.clock.now())
            .is_some_and(|left| left >= estimate)
    });
    let plan = Plan {
        action: op.as_str().into(),
        farm: inv.farm.clone(),
        backend: match &inv.load_balancer {
            farm_inventory::LoadBalancer::Haproxy { backend, .. } => backend.clone(),
            other => other.kind().to_string(),
        },
        nodes: total,
        already_out,
        max_unavailable: ramp.to_string(),
        steps,
        estimate_s: estimate.as_secs(),
        estimate_basis: format!(
            "{} per batch ({basis})",
            humantime::format_duration(std::time::Duration::from_millis(
                per_node.as_millis() as u64
            ))
        ),
        window: window.as_ref().map(|w| w.window.to_string()),
        fits_window: fits,
    };
    match r.inv.output {
        Output::Json => print_json(&plan),
        Output::Text => print!("{}", text(&plan)),
    }
    Ok(if fits == Some(false) {
        ExitStatus::Refused
    } else {
        ExitStatus::Done
    })
}

fn text(p: &Plan) -> String {
    let mut s = format!(
        "{} of farm {} ({} nodes, backend {}), max_unavailable {}:\n",
        p.action, p.farm, p.nodes, p.backend, p.max_unavailable
    );
    if !p.already_out.is_empty() {
        s.push_str(&format!(
            "  already out of rotation: {}\n",
            p.already_out.join(", ")
        ));
    }
    for st in &p.steps {
        s.push_str(&format!(
            "  step {:>2}: {:<24} in rotation {}/{} (min {})\n",
            st.step,
            st.batch.join(", "),
            st.in_rotation,
            p.nodes,
            st.min_healthy
        ));
    }
    s.push_str(&format!(
        "estimated duration: {} ({})\n",
        humantime::format_duration(std::time::Duration::from_secs(p.estimate_s.max(1))),
        p.estimate_basis
    ));
    if let (Some(w), Some(fits)) = (&p.window, p.fits_window) {
        s.push_str(&format!(
            "maintenance window {w}: {}\n",
            if fits {
                "fits in what is left"
            } else {
                "does NOT fit in what is left"
            }
        ));
    }
    s
}
