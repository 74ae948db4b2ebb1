//! `farmctl plan recycle|reset -i FILE`: what a run would do, without
//! doing it: the waves, the capacity timeline (nodes in rotation at each
//! step, for the load balancer's backend), and an estimated duration from
//! past runs. It reaches the same verdict a run would: a plan that would
//! break min_healthy, or that preflight would refuse, exits 3.
use farm_proto::domain::OperationKind;
use serde::Serialize;

use crate::cli::{Output, PlanAction, PlanArgs};
use crate::commands::rollout::request;
use crate::commands::{print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};

use crate::run::{self, RunSettings};

#[derive(Debug, Serialize)]
struct Step {
    step: usize,
    /// The nodes this step takes out.
    batch: Vec<String>,
    /// Every node out of rotation during the step (with those already out).
    out: Vec<String>,
    in_rotation: usize,
    min_healthy: usize,
}

#[derive(Debug, Serialize)]
struct PlannedNode {
    name: String,
    step: usize,
}

#[derive(Debug, Serialize)]
struct Plan {
    action: OperationKind,
    farm: String,
    backend: String,
    nodes: usize,
    /// `nodes`, named as a count; numbers as numbers beside the text.
    nodes_count: usize,
    /// The run's nodes as objects: each with the step that takes it out.
    node_list: Vec<PlannedNode>,
    already_out: Vec<String>,
    max_unavailable: String,
    max_unavailable_steps: Vec<usize>,
    strategy: &'static str,
    steps: Vec<Step>,
    estimate_s: u64,
    estimate_ms: u64,
    estimate_basis: String,
    window: Option<String>,
    fits_window: Option<bool>,
    /// What preflight noticed (nodes outside the run already out, the
    /// load balancer's own settings).
    notes: Vec<String>,
}

pub async fn run(args: &PlanArgs, settings: &Settings) -> CommandResult {
    let op = match args.action {
        PlanAction::Recycle => OperationKind::Recycle,
        PlanAction::Reset => OperationKind::Reset,
        PlanAction::Deploy => OperationKind::Deploy,
        PlanAction::Rollback => OperationKind::Rollback,
        PlanAction::Patch => OperationKind::Patch,
        PlanAction::Reboot => OperationKind::Reboot,
    };
    let r = &args.rollout;
    let mut req = request(r, op);
    req.pools = args.pools.clone();
    let farm = settings.farm(&r.inv.inventory)?;
    let need = |v: &Option<String>, flag: &str| {
        v.clone().ok_or_else(|| {
            crate::exit::CommandError::bad_input(format!("plan {op} needs --{flag}"))
        })
    };
    match args.action {
        PlanAction::Deploy => {
            req.deploy = Some(crate::run::DeployRequest {
                site: need(&args.site, "site")?,
                version: need(&args.version, "version")?,
                package: Some(args.package.clone().ok_or_else(|| {
                    crate::exit::CommandError::bad_input("plan deploy needs --package")
                })?),
            });
        }
        PlanAction::Rollback => {
            let site = need(&args.site, "site")?;
            let version = match &args.to {
                Some(v) => v.clone(),
                None => super::rollback::previous_release(&farm, &site, &r.nodes).await?,
            };
            req.deploy = Some(crate::run::DeployRequest {
                site,
                version,
                package: None,
            });
        }
        PlanAction::Recycle | PlanAction::Reset | PlanAction::Patch | PlanAction::Reboot => {}
    }
    let run = RunSettings::resolve(&farm.inventory, &req)?;
    let env = settings.run_env(&crate::operator::AssumeYes, None);
    let window = env.window_guard(&run)?;
    let checked = run::check(&farm, &run).await?;
    let waves = checked.waves;
    let total = farm.inventory.nodes.len();
    let name = |i: &usize| farm.node(*i).name.clone();
    let already_out: Vec<String> = checked.already_out.iter().map(name).collect();
    let steps: Vec<Step> = waves
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
                min_healthy: run.min_healthy,
            }
        })
        .collect();
    // The team's history when the run state is shared (etcd).
    let store = crate::store::Store::open(
        settings.state_store.as_deref(),
        Some(&farm.inventory),
        &settings.state_dir(),
    )
    .await?;
    let (per_node, basis) = match store.estimate_per_node(&farm.inventory.farm, op).await {
        // No history: what this inventory's own settings imply.
        (_, basis) if basis.starts_with("no past runs") => (
            derived_per_node(&farm.inventory, op),
            "no past runs: from the inventory's probe settings and LB detection".to_string(),
        ),
        known => known,
    };
    let pauses = run.pause.unwrap_or_default() * waves.len().saturating_sub(1) as u32;
    let estimate = per_node * waves.len() as u32 + pauses;
    let fits = window.as_ref().map(|w| {
        w.window
            .remaining(w.clock.now())
            .is_some_and(|left| left >= estimate)
    });
    let plan = Plan {
        action: op,
        farm: farm.inventory.farm.clone(),
        backend: match &farm.inventory.load_balancer {
            farm_inventory::LoadBalancer::Haproxy { backend, .. } => backend.clone(),
            other => other.describe(),
        },
        nodes: total,
        nodes_count: total,
        node_list: steps
            .iter()
            .flat_map(|s| {
                s.batch.iter().map(|n| PlannedNode {
                    name: n.clone(),
                    step: s.step,
                })
            })
            .collect(),
        already_out,
        max_unavailable: run.max_unavailable.clone(),
        max_unavailable_steps: run.max_unavailable_steps.clone(),
        strategy: run.strategy.as_str(),
        steps,
        estimate_s: estimate.as_secs(),
        estimate_ms: estimate.as_millis() as u64,
        estimate_basis: format!("{} per step ({basis})", crate::human::duration(per_node)),
        window: run.window.as_ref().map(ToString::to_string),
        fits_window: fits,
        notes: checked.notes.clone(),
    };
    match r.inv.output {
        o @ (Output::Json | Output::Jsonl) => print_json(o, &plan),
        Output::Text => crate::out!("{}", text(&plan)),
    }
    Ok(if fits == Some(false) {
        ExitStatus::Refused
    } else {
        ExitStatus::Done
    })
}

/// A node's time without history: the LB noticing the drain and the
/// return (health-file detection, else a second each), a few seconds of
/// quiesce and operation (a reset: its stop and start), and every site's
/// probe reaching `successes` good answers.
fn derived_per_node(inv: &farm_inventory::Inventory, op: OperationKind) -> std::time::Duration {
    use std::time::Duration;
    let detection = match &inv.load_balancer {
        farm_inventory::LoadBalancer::HealthFile { detection, .. } => *detection * 2,
        _ => Duration::from_secs(2),
    };
    let operation = match op {
        OperationKind::Reset => Duration::from_secs(15),
        _ => Duration::from_secs(5),
    };
    let probes: Duration = inv
        .sites
        .iter()
        .map(|s| s.probe.interval * s.probe.successes)
        .max()
        .unwrap_or(Duration::from_secs(3));
    detection + operation + probes
}

fn text(p: &Plan) -> String {
    let mut s = format!(
        "{} of farm {} ({} nodes, backend {}), max_unavailable {}, strategy {}:\n",
        p.action, p.farm, p.nodes, p.backend, p.max_unavailable, p.strategy
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
        crate::human::duration(std::time::Duration::from_secs(p.estimate_s.max(1))),
        p.estimate_basis
    ));
    for n in &p.notes {
        s.push_str(&format!("note: {n}\n"));
    }
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
