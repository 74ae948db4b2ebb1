//! The two-sided quiesce: a drained node is idle when the load balancer has
//! no session left on it **and** the node itself has no request in flight.
//! Used by the rolling engine and by `farmctl drain`.
use std::time::Duration;

use farm_inventory::Node;
use tokio::time::Instant;

use crate::agent::{AgentApi, AgentError};
use crate::lb::{LbError, LoadBalancer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quiesced {
    /// Both sides are at zero.
    Idle,
    /// `timeout` passed first.
    TimedOut,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum QuiesceError {
    #[error("could not read the load balancer's sessions: {0}")]
    Lb(#[from] LbError),
    #[error("could not read the node's in-flight requests: {0}")]
    Agent(#[from] AgentError),
}

/// Waits, up to `timeout` in all, until the LB has no session on `node`
/// and its agent reports nothing in flight.
pub async fn quiesce(
    lb: &dyn LoadBalancer,
    agent: &dyn AgentApi,
    node: &Node,
    timeout: Duration,
) -> Result<Quiesced, QuiesceError> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    if !lb.wait_sessions_gone(node, left()).await? {
        return Ok(Quiesced::TimedOut);
    }
    tracing::debug!(node = %node.name, "LB has no session left");
    Ok(if agent.wait_idle(left()).await? {
        Quiesced::Idle
    } else {
        Quiesced::TimedOut
    })
}
