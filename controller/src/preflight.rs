//! Checks before a run touches anything: every agent reachable, IIS
//! running, pools present, every node healthy, capacity allows the plan.
//! Any problem refuses the run (exit 3) and all of them are listed.
use std::collections::HashMap;
use std::sync::Arc;

use farm_inventory::Inventory;
use futures::future::join_all;

use crate::agent::AgentApi;
use crate::lb::Member;
use crate::probe;

/// What preflight learned.
#[derive(Debug, Default)]
pub struct Preflight {
    /// Nodes (indices) not selected that are out of rotation, unreachable
    /// or unhealthy: they count against capacity.
    pub already_out: Vec<usize>,
    /// Nodes whose agent did not answer (never selected ones: those refuse).
    pub unreachable: Vec<usize>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl Preflight {
    /// The refusal, if preflight found problems: `heading` and the list.
    pub fn refusal(&self, heading: &str) -> Option<crate::exit::CommandError> {
        (!self.problems.is_empty()).then(|| {
            let list: Vec<String> = self.problems.iter().map(|p| format!("  - {p}")).collect();
            crate::exit::CommandError::refused(format!("{heading}:\n{}", list.join("\n")))
        })
    }
}

pub async fn check(
    inv: &Inventory,
    agents: &HashMap<String, Arc<dyn AgentApi>>,
    selected: &[usize],
    pools: &[String],
    drains: bool,
    members: &[Member],
) -> Preflight {
    let checks = join_all(inv.nodes.iter().enumerate().map(|(i, node)| {
        let agent = agents.get(&node.name).cloned();
        async move {
            let is_selected = selected.contains(&i);
            let mut problems = Vec::new();
            let mut out = false;
            let mut unreachable = false;
            let Some(agent) = agent else {
                return (i, vec![format!("{}: no agent client", node.name)], true, true);
            };
            let (view, health) = tokio::join!(agent.status(), probe::probe_node_once(node, &inv.sites));
            match view {
                Err(e) => {
                    problems.push(format!("{}: {e}", node.name));
                    out = true;
                    unreachable = true;
                }
                Ok(v) => {
                    if v.drained && drains {
                        out = true;
                        if is_selected {
                            let by = v
                                .lease
                                .as_ref()
                                .map(|l| format!(" by run {} of {}", l.run_id, l.holder))
                                .unwrap_or_default();
                            problems.push(format!(
                                "{}: already drained{by} (out of rotation); undrain it first or leave it out with --nodes",
                                node.name
                            ));
                        }
                    }
                    if is_selected && !v.iis_running() {
                        problems.push(format!("{}: IIS is not running ({:?})", node.name, v.services));
                    }
                    if is_selected {
                        for p in pools {
                            match v.pool(p) {
                                None => problems.push(format!("{}: application pool `{p}` not found", node.name)),
                                Some(pv) if pv.state != "Started" => problems.push(format!(
                                    "{}: application pool `{p}` is {}",
                                    node.name, pv.state
                                )),
                                Some(_) => {}
                            }
                        }
                    }
                }
            }
            // Drift between the inventory and the load balancer.
            if let Some(m) = members.iter().find(|m| m.node == node.name) {
                match &m.state {
                    None => problems.push(format!(
                        "{}: server `{}` is not in the load balancer's backend",
                        node.name, node.lb_server
                    )),
                    Some(state) if !m.serving() => {
                        out = true;
                        if is_selected {
                            problems.push(format!(
                                "{}: the load balancer has it {state}; put it back or leave it out with --nodes",
                                node.name
                            ));
                        }
                    }
                    Some(_) => {}
                }
            }
            if let Err(e) = health {
                out = true;
                if is_selected {
                    problems.push(format!("{}: not healthy: {e}", node.name));
                }
            }
            // Only the selected nodes' problems refuse the run; the others
            // just count against capacity.
            if !is_selected {
                problems.retain(|p| p.contains("not in the load balancer"));
            }
            (i, problems, out, unreachable)
        }
    }))
    .await;
    let mut pf = Preflight::default();
    for (i, problems, out, unreachable) in checks {
        pf.problems.extend(problems);
        if unreachable {
            pf.unreachable.push(i);
        }
        if out && !selected.contains(&i) {
            pf.notes.push(format!(
                "{} is out of rotation or unhealthy; it counts against capacity",
                inv.nodes[i].name
            ));
            pf.already_out.push(i);
        }
    }
    pf
}
