//! Load balancer drivers behind one trait. The engine never knows which
//! load balancer it is talking to.
mod haproxy;
mod health_file;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use farm_inventory::{Inventory, LoadBalancer as LbConfig, Node};

use crate::agent::AgentApi;

pub use haproxy::{Haproxy, ServerStat};
pub use health_file::HealthFile;

/// A node as the load balancer sees it, for drift checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    /// The LB's status for the node's server (`UP`, `DRAIN`, `MAINT`, ...);
    /// `None` when the LB does not have it.
    pub state: Option<String>,
}

impl Member {
    /// Serving traffic as far as the LB is concerned.
    pub fn serving(&self) -> bool {
        self.state
            .as_deref()
            .is_some_and(|s| s == "UP" || s == "no check" || s.starts_with("UP "))
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LbError(pub String);

/// One node as the load balancer driver needs it.
pub struct Target<'a> {
    pub node: &'a Node,
    pub agent: &'a dyn AgentApi,
    pub op_id: &'a str,
}

#[async_trait]
pub trait LoadBalancer: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Whether this driver takes nodes out of rotation at all; with `none`
    /// operations happen under traffic.
    fn drains(&self) -> bool;

    /// The LB's view of every node, for drift checks; empty when the
    /// driver cannot see the LB's membership (health-file, none).
    async fn members(&self, _nodes: &[Node]) -> Result<Vec<Member>, LbError> {
        Ok(Vec::new())
    }

    /// Waits until the LB has no session left on the node; `false` if
    /// `timeout` passes first. Drivers that cannot see sessions return
    /// `true` (the agent's in-flight count still has to reach zero).
    async fn wait_sessions_gone(&self, _node: &Node, _timeout: Duration) -> Result<bool, LbError> {
        Ok(true)
    }

    /// Stops new traffic to the node. Returns once the LB has stopped
    /// sending new requests (as far as this driver can know).
    async fn drain(&self, target: &Target<'_>) -> Result<(), LbError>;

    /// Puts the node back and waits, up to `timeout`, until the LB itself
    /// sees it up. Returns how long that took.
    async fn undrain(&self, target: &Target<'_>, timeout: Duration) -> Result<Duration, LbError>;
}

/// `kind: none`.
pub struct NoLoadBalancer;

#[async_trait]
impl LoadBalancer for NoLoadBalancer {
    fn kind(&self) -> &'static str {
        "none"
    }
    fn drains(&self) -> bool {
        false
    }
    async fn drain(&self, _: &Target<'_>) -> Result<(), LbError> {
        Ok(())
    }
    async fn undrain(&self, _: &Target<'_>, _: Duration) -> Result<Duration, LbError> {
        Ok(Duration::ZERO)
    }
}

/// Builds the driver the inventory names.
pub fn from_inventory(inv: &Inventory) -> Result<Arc<dyn LoadBalancer>, LbError> {
    match &inv.load_balancer {
        LbConfig::None => Ok(Arc::new(NoLoadBalancer)),
        LbConfig::HealthFile { path, detection } => Ok(Arc::new(HealthFile::new(
            path.clone(),
            *detection,
            inv.sites.first().and_then(|s| s.host.clone()),
        ))),
        LbConfig::Haproxy { admin, backend } => {
            Ok(Arc::new(Haproxy::new(admin.clone(), backend.clone())))
        }
    }
}
