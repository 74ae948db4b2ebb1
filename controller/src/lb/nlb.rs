//! `kind: nlb`: Windows Network Load Balancing, through each node's own
//! agent (`Stop-NlbClusterNode -Drain`, `Start-NlbClusterNode`,
//! `Get-NlbClusterNode` run there). NLB counts no connections: drained
//! when the node leaves `Draining` for `Stopped` (the agent's own
//! in-flight count must reach zero as well); up when `Converged`.
use farm_proto::domain::{LbMemberAction, LbMemberKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use farm_inventory::Node;

use super::{LbError, LbState, LoadBalancer, Member, MemberState, Target};
use crate::agent::{AgentApi, LbMemberCall, LbMemberView};

const POLL: Duration = Duration::from_millis(500);

pub struct Nlb {
    /// Each node's agent, by node name.
    agents: HashMap<String, Arc<dyn AgentApi>>,
    /// Stop-NlbClusterNode's own -Timeout: after it NLB drops what is left.
    drain_timeout: Duration,
}

impl Nlb {
    pub fn new(agents: HashMap<String, Arc<dyn AgentApi>>, drain_timeout: Duration) -> Nlb {
        Nlb {
            agents,
            drain_timeout,
        }
    }

    async fn call(
        &self,
        node: &Node,
        agent: Option<&dyn AgentApi>,
        action: LbMemberAction,
        op_id: &str,
    ) -> Result<LbMemberView, LbError> {
        let agent = match agent {
            Some(a) => a,
            None => self
                .agents
                .get(&node.name)
                .map(|a| a.as_ref())
                .ok_or_else(|| LbError::Config {
                    lb: self.name(),
                    message: format!("no agent for node {}", node.name),
                })?,
        };
        let call = LbMemberCall {
            op_id: op_id.to_string(),
            kind: LbMemberKind::Nlb,
            action,
            farm: String::new(),
            server: String::new(),
            mode: None,
            drain_timeout: self.drain_timeout,
        };
        agent.lb_member(&call).await.map_err(|e| LbError::Agent {
            lb: self.name(),
            node: node.name.clone(),
            what: match action {
                LbMemberAction::Drain => "drain it (Stop-NlbClusterNode -Drain)",
                LbMemberAction::Return => "return it (Start-NlbClusterNode)",
                LbMemberAction::State => "read its state (Get-NlbClusterNode)",
            },
            detail: e.to_string(),
        })
    }
}

pub fn lb_state(state: &str) -> LbState {
    match state {
        "Converged" | "Converged as DEFAULT" => LbState::Up,
        "Draining" => LbState::Draining,
        "Stopped" | "Suspended" => LbState::Maintenance,
        "Converging" => LbState::Down,
        _ => LbState::Unknown,
    }
}

#[async_trait]
impl LoadBalancer for Nlb {
    fn name(&self) -> String {
        "windows nlb".into()
    }

    fn kind(&self) -> &'static str {
        "nlb"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        let all = futures::future::join_all(
            nodes
                .iter()
                .map(|n| self.call(n, None, LbMemberAction::State, "")),
        )
        .await;
        Ok(nodes
            .iter()
            .zip(all)
            .map(|(n, v)| Member {
                node: n.name.clone(),
                // A node whose agent cannot tell is reported unknown, not
                // missing: NLB membership is the node's own.
                state: Some(match v {
                    Ok(v) => MemberState {
                        state: lb_state(&v.state),
                        raw: v.state,
                    },
                    Err(e) => MemberState {
                        state: LbState::Unknown,
                        raw: e.to_string(),
                    },
                }),
            })
            .collect())
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        self.call(t.node, Some(t.agent), LbMemberAction::Drain, t.op_id)
            .await
            .map(|_| ())
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        super::sessions_gone(
            timeout,
            POLL,
            || self.call(node, None, LbMemberAction::State, ""),
            |v| lb_state(&v.state) == LbState::Maintenance,
        )
        .await
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        self.call(t.node, Some(t.agent), LbMemberAction::Return, t.op_id)
            .await?;
        super::MemberWait::up(self, t, start, timeout, POLL, "Converged")
            .until(|| async {
                let v = self
                    .call(t.node, Some(t.agent), LbMemberAction::State, "")
                    .await?;
                Ok(MemberState {
                    state: lb_state(&v.state),
                    raw: v.detail,
                })
            })
            .await
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let v = self
            .call(t.node, Some(t.agent), LbMemberAction::State, "")
            .await?;
        Ok(Some(matches!(
            v.state.as_str(),
            "Draining" | "Stopped" | "Suspended"
        )))
    }
}
