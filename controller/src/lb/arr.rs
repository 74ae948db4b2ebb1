//! `kind: arr`: IIS Application Request Routing, through the farm-agent on
//! the ARR server (its controls are local Windows APIs). A node's
//! `lb_server` is its server address in the web farm.
//!
//! drain = `SetState GracefulStop` (default: requests in flight finish,
//! nothing new) or `Drain` (affinitized clients keep coming, so it may
//! never empty); drained when ARR's `currentRequests` for the server is 0.
//! Return = `SetState Start`, then wait for `Available` and healthy.
use farm_proto::domain::{ArrDrainState, LbMemberAction, LbMemberKind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use farm_inventory::{ArrDrainMode, Node};

use super::{LbError, LbState, LoadBalancer, Member, MemberState, Target};
use crate::agent::{AgentApi, AgentError, LbMemberCall, LbMemberView};

const POLL: Duration = Duration::from_millis(200);

pub struct Arr {
    agent: Arc<dyn AgentApi>,
    addr: String,
    farm: String,
    mode: ArrDrainMode,
}

impl Arr {
    pub fn new(cfg: &farm_inventory::Arr, agent: Arc<dyn AgentApi>) -> Arr {
        Arr {
            agent,
            addr: cfg.agent.clone(),
            farm: cfg.farm.clone(),
            mode: cfg.drain_mode,
        }
    }

    async fn call(
        &self,
        node: &Node,
        action: LbMemberAction,
        op_id: &str,
    ) -> Result<LbMemberView, LbError> {
        let call = LbMemberCall {
            op_id: op_id.to_string(),
            kind: LbMemberKind::Arr,
            action,
            farm: self.farm.clone(),
            server: node.lb_server.clone(),
            mode: Some(match self.mode {
                ArrDrainMode::Drain => ArrDrainState::Drain,
                ArrDrainMode::GracefulStop => ArrDrainState::GracefulStop,
            }),
            drain_timeout: Duration::ZERO,
        };
        self.agent.lb_member(&call).await.map_err(|e| match e {
            AgentError::NotFound(m) => LbError::NoMember {
                lb: self.name(),
                node: node.name.clone(),
                member: format!("server `{}` ({m})", node.lb_server),
            },
            AgentError::Unreachable { detail, .. } => LbError::Unreachable {
                lb: format!("{} (its agent {})", self.name(), self.addr),
                detail,
            },
            other => LbError::Agent {
                lb: self.name(),
                node: node.name.clone(),
                what: match action {
                    LbMemberAction::Drain => "drain the server",
                    LbMemberAction::Return => "return the server",
                    LbMemberAction::State => "read the server's state",
                },
                detail: other.to_string(),
            },
        })
    }

    async fn state(&self, node: &Node) -> Result<LbMemberView, LbError> {
        self.call(node, LbMemberAction::State, "").await
    }
}

fn lb_state(v: &LbMemberView) -> LbState {
    match (v.state.as_str(), v.healthy) {
        ("Available", true) => LbState::Up,
        ("Available", false) => LbState::Down,
        ("Drain", _) => LbState::Draining,
        ("Unavailable", _) => LbState::Maintenance,
        _ => LbState::Unknown,
    }
}

fn raw(v: &LbMemberView) -> String {
    format!(
        "{}{}, {} request(s)",
        v.state,
        if v.healthy { "" } else { " unhealthy" },
        v.current_requests.map_or("?".into(), |n| n.to_string())
    )
}

#[async_trait]
impl LoadBalancer for Arr {
    fn name(&self) -> String {
        format!("arr web farm `{}`", self.farm)
    }

    fn kind(&self) -> &'static str {
        "arr"
    }

    fn drains(&self) -> bool {
        true
    }

    async fn members(&self, nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        super::members_each(nodes, |n| async move {
            let v = self.state(n).await?;
            Ok(MemberState {
                state: lb_state(&v),
                raw: raw(&v),
            })
        })
        .await
    }

    async fn drain(&self, t: &Target<'_>) -> Result<(), LbError> {
        self.call(t.node, LbMemberAction::Drain, t.op_id)
            .await
            .map(|_| ())
    }

    async fn wait_sessions_gone(&self, node: &Node, timeout: Duration) -> Result<bool, LbError> {
        super::sessions_gone(
            timeout,
            POLL,
            || self.state(node),
            |v| v.current_requests == Some(0),
        )
        .await
    }

    async fn undrain(&self, t: &Target<'_>, timeout: Duration) -> Result<Duration, LbError> {
        let start = Instant::now();
        self.call(t.node, LbMemberAction::Return, t.op_id).await?;
        super::MemberWait::up(self, t, start, timeout, POLL, "Available and healthy")
            .until(|| async {
                let v = self.state(t.node).await?;
                Ok(MemberState {
                    state: lb_state(&v),
                    raw: raw(&v),
                })
            })
            .await
    }

    async fn still_drained(&self, t: &Target<'_>) -> Result<Option<bool>, LbError> {
        let v = self.state(t.node).await?;
        Ok(Some(v.state != "Available"))
    }
}
