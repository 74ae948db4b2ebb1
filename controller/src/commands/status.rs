//! `farmctl status -i FILE`: every agent queried concurrently, every node
//! probed. Exit 0 when every node is reachable and healthy, 1 otherwise.
use std::collections::BTreeMap;

use futures::future::join_all;
use serde::Serialize;

use crate::agent::PoolView;
use crate::cli::{InventoryArgs, Output};
use crate::commands::{connect_agents, load_inventory, print_json, Settings};
use crate::exit::{CommandResult, ExitStatus};
use crate::probe;

/// One node in `status --output json` (keys are a documented contract).
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub agent: String,
    pub reachable: bool,
    pub drained: Option<bool>,
    /// The load balancer's status for the node (`UP`, `DRAIN`, `MAINT`,
    /// `DOWN`, ...), when the driver can see it.
    pub lb_state: Option<String>,
    pub healthy: bool,
    pub in_flight: Option<u64>,
    pub services: BTreeMap<String, String>,
    pub pools: Vec<PoolView>,
    pub error: Option<String>,
    /// `holder`, `run_id`, `reason`, when a run holds the node.
    pub lease: Option<crate::agent::LeaseView>,
    /// What the agent did on its own (expired lease).
    pub notice: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    farm: String,
    nodes: Vec<NodeStatus>,
}

pub async fn run(args: &InventoryArgs, settings: &Settings) -> CommandResult {
    let inv = load_inventory(&args.inventory)?;
    let agents = connect_agents(&inv, settings)?;
    let lb = crate::lb::from_inventory(&inv)
        .map_err(|e| crate::exit::CommandError::bad_input(e.to_string()))?;
    let (members, lb_error) = match lb.members(&inv.nodes).await {
        Ok(m) => (m, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let nodes = join_all(inv.nodes.iter().map(|n| {
        let agent = agents[&n.name].clone();
        let sites = &inv.sites;
        let member = members.iter().find(|m| m.node == n.name).cloned();
        async move {
            let (view, health) = tokio::join!(agent.status(), probe::probe_node_once(n, sites));
            let mut s = NodeStatus {
                name: n.name.clone(),
                agent: n.agent.clone(),
                reachable: view.is_ok(),
                drained: None,
                lb_state: member
                    .as_ref()
                    .map(|m| m.state.clone().unwrap_or_else(|| "MISSING".into())),
                healthy: health.is_ok(),
                in_flight: None,
                services: BTreeMap::new(),
                pools: Vec::new(),
                error: None,
                lease: None,
                notice: None,
            };
            match view {
                Ok(v) => {
                    let lb_out = member.as_ref().is_some_and(|m| !m.serving());
                    s.drained = Some(v.drained || lb_out);
                    s.in_flight = v.in_flight;
                    s.services = v.services;
                    s.pools = v.pools;
                    s.lease = v.lease;
                    s.notice = v.notice;
                    s.error = health.err();
                }
                Err(e) => s.error = Some(e.to_string()),
            }
            s
        }
    }))
    .await;
    if let Some(e) = &lb_error {
        eprintln!("farmctl: load balancer: {e}");
    }
    let all_well = lb_error.is_none() && nodes.iter().all(|n| n.reachable && n.healthy);
    match args.output {
        Output::Json => print_json(&StatusReport {
            farm: inv.farm.clone(),
            nodes,
        }),
        Output::Text => print!("{}", table(&nodes)),
    }
    Ok(if all_well {
        ExitStatus::Done
    } else {
        ExitStatus::Failed
    })
}

fn table(nodes: &[NodeStatus]) -> String {
    let mut out = format!(
        "{:<12} {:<9} {:<8} {:<8} {:<8} {:<8} {:<9} {}\n",
        "NODE", "REACHABLE", "DRAINED", "LB", "W3SVC", "WAS", "IN-FLIGHT", "POOLS / HEALTH"
    );
    for n in nodes {
        let pools = n
            .pools
            .iter()
            .map(|p| {
                let pids: Vec<String> = p.pids.iter().map(u32::to_string).collect();
                format!("{} {} [{}]", p.name, p.state, pids.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ");
        let svc = |name: &str| n.services.get(name).cloned().unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<12} {:<9} {:<8} {:<8} {:<8} {:<8} {:<9} {}{}\n",
            n.name,
            if n.reachable { "yes" } else { "NO" },
            n.drained.map_or("-", |d| if d { "YES" } else { "no" }),
            n.lb_state.as_deref().unwrap_or("-"),
            svc("W3SVC"),
            svc("WAS"),
            n.in_flight.map_or("?".to_string(), |v| v.to_string()),
            pools,
            match (&n.error, n.healthy) {
                (Some(e), _) => format!(" | {e}"),
                (None, true) => " | healthy".to_string(),
                (None, false) => " | unhealthy".to_string(),
            }
        ));
    }
    out
}
