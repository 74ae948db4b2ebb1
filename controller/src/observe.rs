//! What every node looks like right now, from all three sides — its agent,
//! the load balancer, and a probe of its sites — and the one definition of
//! "serving" that preflight, `drain`, `status` and the scheduler share.
use futures::future::join_all;

use crate::agent::{AgentError, NodeView};
use crate::farm::Farm;
use crate::lb::{LbError, Member};

/// One node, observed.
#[derive(Debug, Clone)]
pub struct Observation {
    /// Inventory index.
    pub node: usize,
    pub view: Result<NodeView, AgentError>,
    /// The LB's view; `None` when the driver cannot see members.
    pub member: Option<Member>,
    /// A probe of every site, as a user would reach them.
    pub health: Result<(), crate::probe::ProbeError>,
}

/// Why a node does not serve traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutReason {
    /// Its agent does not answer.
    Unreachable(String),
    /// Its health-check file is renamed away (drained on the node).
    Drained,
    /// The load balancer does not send it traffic (its own word for why).
    LoadBalancer(String),
    /// The load balancer does not have it at all.
    NotInLoadBalancer,
    /// Its sites do not answer as expected.
    Unhealthy(String),
}

impl std::fmt::Display for OutReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutReason::Unreachable(e) => write!(f, "{e}"),
            OutReason::Drained => f.write_str("drained on the node (health file renamed)"),
            OutReason::LoadBalancer(state) => write!(f, "the load balancer has it {state}"),
            OutReason::NotInLoadBalancer => f.write_str("not in the load balancer"),
            OutReason::Unhealthy(e) => write!(f, "not healthy: {e}"),
        }
    }
}

impl Observation {
    /// Every reason the node is out of rotation; empty when it serves.
    /// `drains`: the load balancer drives drains (a renamed health file
    /// means nothing when it is `none`).
    pub fn out_reasons(&self, drains: bool) -> Vec<OutReason> {
        let mut why = Vec::new();
        match &self.view {
            Err(e) => why.push(OutReason::Unreachable(e.to_string())),
            Ok(v) if v.drained && drains => why.push(OutReason::Drained),
            Ok(_) => {}
        }
        match &self.member {
            Some(Member { state: None, .. }) => why.push(OutReason::NotInLoadBalancer),
            Some(m) if !m.serving() => why.push(OutReason::LoadBalancer(
                m.state.as_ref().map(|s| s.raw.clone()).unwrap_or_default(),
            )),
            _ => {}
        }
        if let Err(e) = &self.health {
            why.push(OutReason::Unhealthy(e.to_string()));
        }
        why
    }

    /// Takes traffic: reachable, not drained, up in the LB, healthy.
    pub fn serving(&self, drains: bool) -> bool {
        self.out_reasons(drains).is_empty()
    }

    /// Taken out of rotation on purpose (health file or LB), as `status`
    /// reports `drained`; unhealthy or unreachable nodes are not "drained".
    pub fn drained(&self, drains: bool) -> bool {
        self.out_reasons(drains).iter().any(|r| {
            matches!(
                r,
                OutReason::Drained | OutReason::LoadBalancer(_) | OutReason::NotInLoadBalancer
            )
        })
    }
}

/// The LB's members (`Ok(empty)` for drivers that cannot see them).
pub async fn members(farm: &Farm) -> Result<Vec<Member>, LbError> {
    farm.lb.members(&farm.inventory.nodes).await
}

/// Every node of the farm, observed concurrently.
pub async fn observe(farm: &Farm, members: &[Member]) -> Vec<Observation> {
    observe_asking(farm, members, None).await.0
}

/// [`observe`], and every node's traffic over the last `last_s` seconds
/// asked in the same call to its agent (`farmctl status`).
pub async fn observe_with_traffic(
    farm: &Farm,
    members: &[Member],
    last_s: u32,
) -> (
    Vec<Observation>,
    Vec<Result<crate::agent::TrafficView, AgentError>>,
) {
    let (observed, traffic) = observe_asking(farm, members, Some(last_s)).await;
    (observed, traffic.into_iter().flatten().collect())
}

async fn observe_asking(
    farm: &Farm,
    members: &[Member],
    traffic_s: Option<u32>,
) -> (
    Vec<Observation>,
    Vec<Option<Result<crate::agent::TrafficView, AgentError>>>,
) {
    let by_name: std::collections::HashMap<&str, &Member> =
        members.iter().map(|m| (m.node.as_str(), m)).collect();
    join_all(farm.inventory.nodes.iter().enumerate().map(|(i, node)| {
        let agent = farm.agent(i);
        let member = by_name.get(node.name.as_str()).map(|m| (*m).clone());
        async move {
            let asked = async {
                match traffic_s {
                    Some(s) => {
                        let (view, traffic) = agent.status_and_traffic(s).await;
                        (view, Some(traffic))
                    }
                    None => (agent.status().await, None),
                }
            };
            let ((view, traffic), health) = tokio::join!(asked, farm.probe_once(i));
            (
                Observation {
                    node: i,
                    view,
                    member,
                    health,
                },
                traffic,
            )
        }
    }))
    .await
    .into_iter()
    .unzip()
}
