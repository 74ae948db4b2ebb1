//! Load balancer drivers behind one trait. The engine never knows which
//! load balancer it is talking to: every driver answers the same four
//! questions — drain, drained (no session left), return, seen up — and
//! lists its members for the drift check.
mod arr;
pub mod aws;
mod exec;
mod f5;
mod haproxy;
mod health_file;
pub mod http;
mod netscaler;
mod nlb;
pub mod weights;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use farm_inventory::{Inventory, LoadBalancer as LbConfig, Node};

use crate::agent::AgentApi;

pub use arr::Arr;
pub use aws::AwsElbv2;
pub use exec::Exec;
pub use f5::F5;
pub use haproxy::{Haproxy, ServerStat};
pub use health_file::HealthFile;
pub use netscaler::Netscaler;
pub use nlb::Nlb;

/// A member's state as the load balancer reports it, in the words every
/// driver maps its own vocabulary to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LbState {
    /// Takes new traffic.
    Up,
    /// Taken out gracefully: no new traffic, current work finishes.
    Draining,
    /// Administratively out (maintenance, forced offline, disabled).
    Maintenance,
    /// The LB's own health check says down.
    Down,
    /// The LB says something this driver cannot place.
    Unknown,
}

/// One member as the load balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub state: LbState,
    /// The LB's own word for it (`UP`, `DRAIN`, `user-disabled`, ...),
    /// shown to operators as is.
    pub raw: String,
}

/// A node as the load balancer sees it, for drift checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node: String,
    /// `None` when the LB does not have the node's member at all.
    pub state: Option<MemberState>,
}

impl Member {
    /// Serving traffic as far as the LB is concerned.
    pub fn serving(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.state == LbState::Up)
    }
}

/// Every node's member, asked of the load balancer for all nodes at once
/// with `state`: a node it has no member for is `None`, any other error
/// fails the whole answer.
pub(crate) async fn members_each<'a, F, Fut>(
    nodes: &'a [Node],
    state: F,
) -> Result<Vec<Member>, LbError>
where
    F: Fn(&'a Node) -> Fut,
    Fut: std::future::Future<Output = Result<MemberState, LbError>>,
{
    let all = futures::future::join_all(nodes.iter().map(state)).await;
    let mut out = Vec::with_capacity(nodes.len());
    for (n, s) in nodes.iter().zip(all) {
        let state = match s {
            Ok(s) => Some(s),
            Err(LbError::NoMember { .. }) => None,
            Err(e) => return Err(e),
        };
        out.push(Member {
            node: n.name.clone(),
            state,
        });
    }
    Ok(out)
}

/// Every node's traffic counters, read member by member (a few at a
/// time, in `nodes` order): a node the LB has no member for is `None`, any
/// other error fails the whole answer.
pub(crate) async fn traffic_each<Fut>(
    reads: impl IntoIterator<Item = Fut>,
) -> Result<Option<Vec<Option<LbTraffic>>>, LbError>
where
    Fut: std::future::Future<Output = Result<LbTraffic, LbError>>,
{
    use futures::StreamExt;
    let all: Vec<_> = futures::stream::iter(reads).buffered(16).collect().await;
    let mut out = Vec::with_capacity(all.len());
    for t in all {
        out.push(match t {
            Ok(t) => Some(t),
            Err(LbError::NoMember { .. }) => None,
            Err(e) => return Err(e),
        });
    }
    Ok(Some(out))
}

/// Reads `read` every `every` until `gone` holds (`true`) or `timeout`
/// passes (`false`); a read that fails ends the wait with its error. The
/// one poll of every driver's `wait_sessions_gone`.
pub(crate) async fn sessions_gone<T, F, Fut>(
    timeout: Duration,
    every: Duration,
    read: F,
    gone: impl Fn(&T) -> bool,
) -> Result<bool, LbError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, LbError>>,
{
    let polled = farm_proto::poll::until(timeout, every, || async {
        match read().await {
            Ok(v) => gone(&v).then_some(Ok(())),
            Err(e) => Some(Err(e)),
        }
    })
    .await;
    match polled {
        Ok(result) => result.map(|()| true),
        Err(()) => Ok(false),
    }
}

/// After a return: reads the member's state every `every` until the LB
/// says `want`, and how long since `start` that took; past `timeout`, a
/// [`LbError::NotYet`] with what it says then (`wanted` in the LB's own
/// words). The one wait of every driver's `undrain`.
pub(crate) struct MemberWait<'a> {
    pub lb: String,
    pub node: &'a Node,
    pub start: std::time::Instant,
    pub timeout: Duration,
    pub every: Duration,
    pub want: LbState,
    pub wanted: &'static str,
}

impl<'a> MemberWait<'a> {
    /// Waiting for `t`'s member to serve again on `lb`.
    pub(crate) fn up(
        lb: &dyn LoadBalancer,
        t: &Target<'a>,
        start: std::time::Instant,
        timeout: Duration,
        every: Duration,
        wanted: &'static str,
    ) -> Self {
        Self {
            lb: lb.name(),
            node: t.node,
            start,
            timeout,
            every,
            want: LbState::Up,
            wanted,
        }
    }

    pub(crate) async fn until<F, Fut>(self, read: F) -> Result<Duration, LbError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<MemberState, LbError>>,
    {
        let want = self.want;
        let polled = farm_proto::poll::until(self.timeout, self.every, || async {
            match read().await {
                Ok(m) => (m.state == want).then_some(Ok(())),
                Err(e) => Some(Err(e)),
            }
        })
        .await;
        match polled {
            Ok(result) => result.map(|()| self.start.elapsed()),
            Err(()) => Err(LbError::NotYet {
                lb: self.lb,
                node: self.node.name.clone(),
                wanted: self.wanted,
                after: self.timeout,
                state: read().await?.raw,
            }),
        }
    }
}

/// A load balancer could not do what was asked. Every variant names the
/// load balancer; node-level ones name the node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LbError {
    /// Its API could not be reached or did not answer in time.
    #[error("{lb} is unreachable: {detail}")]
    Unreachable { lb: String, detail: String },
    /// It answered with an error (its own message).
    #[error("{lb}: {message}")]
    Api { lb: String, message: String },
    /// It does not have the node's member (or the pool/backend is wrong).
    #[error("{lb} has no {member} (node {node})")]
    NoMember {
        lb: String,
        node: String,
        member: String,
    },
    /// The node did not reach the wanted state in time.
    #[error("{lb} does not report {node} {wanted} after {after:?} (it says {state})")]
    NotYet {
        lb: String,
        node: String,
        wanted: &'static str,
        after: Duration,
        state: String,
    },
    /// The driver could not be set up from the inventory (a secret not
    /// set, a CA file not readable): bad input, nothing was touched.
    #[error("{lb}: {message}")]
    Config { lb: String, message: String },
    /// The drain or return went through the node's agent and it failed.
    #[error("{lb}: the agent on {node} could not {what}: {detail}")]
    Agent {
        lb: String,
        node: String,
        what: &'static str,
        detail: String,
    },
}

/// A node's traffic as the load balancer saw it: cumulative counters
/// (since the LB's start; take differences) and current gauges. `None`:
/// this LB does not count it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LbTraffic {
    /// Responses the node gave through the LB (all classes).
    pub responses: Option<u64>,
    pub status_5xx: Option<u64>,
    /// Connections to the node that failed (HAProxy `econ`).
    pub connect_errors: Option<u64>,
    /// Responses that failed or were cut (HAProxy `eresp`).
    pub response_errors: Option<u64>,
    /// Requests queued for the node now.
    pub queue: Option<u64>,
    /// Average response and total times, ms, over the LB's last requests.
    pub rtime_ms: Option<u64>,
    pub ttime_ms: Option<u64>,
    /// Requests the LB sent the node since it started (F5 `totRequests`,
    /// NetScaler `totalrequests`, HAProxy `req_tot`).
    pub requests_total: Option<u64>,
    /// Connections to the node open now (F5 `serverside.curConns`,
    /// NetScaler `curclntconnections`, HAProxy `scur`).
    pub connections: Option<u64>,
}

impl LbTraffic {
    /// What users did not get from the node, as the LB saw it: 5xx,
    /// failed connections, failed responses.
    pub fn failures(&self) -> u64 {
        self.status_5xx.unwrap_or(0)
            + self.connect_errors.unwrap_or(0)
            + self.response_errors.unwrap_or(0)
    }

    /// Requests the node was sent: answered or failed to connect.
    pub fn requests(&self) -> u64 {
        match self.responses {
            Some(r) => r + self.connect_errors.unwrap_or(0),
            None => self.requests_total.unwrap_or(0),
        }
    }

    /// The counters' growth since `before` (a restarted LB counts again
    /// from zero: then from zero).
    pub fn since(&self, before: &LbTraffic) -> LbTraffic {
        let d = |now: Option<u64>, then: Option<u64>| match (now, then) {
            (Some(n), Some(t)) if n >= t => Some(n - t),
            (n, _) => n,
        };
        LbTraffic {
            responses: d(self.responses, before.responses),
            status_5xx: d(self.status_5xx, before.status_5xx),
            connect_errors: d(self.connect_errors, before.connect_errors),
            response_errors: d(self.response_errors, before.response_errors),
            requests_total: d(self.requests_total, before.requests_total),
            ..self.clone()
        }
    }
}

/// One node as the load balancer driver needs it.
pub struct Target<'a> {
    pub node: &'a Node,
    pub agent: &'a dyn AgentApi,
    pub op_id: &'a str,
}

#[async_trait]
pub trait LoadBalancer: Send + Sync {
    /// What to call it in messages (`haproxy backend `shop``).
    fn name(&self) -> String;

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

    /// Whether the LB still keeps the node out as it was drained — checked
    /// while the node is out, so a drain the LB forgot (a reload, a config
    /// sync) is noticed. `None` when this driver cannot tell.
    async fn still_drained(&self, _target: &Target<'_>) -> Result<Option<bool>, LbError> {
        Ok(None)
    }

    /// Each node's weight now and as configured (in `nodes` order; `None`
    /// for a node it does not know); `None` when this driver has no
    /// weights.
    async fn weights(
        &self,
        _nodes: &[Node],
    ) -> Result<Option<Vec<Option<weights::Weight>>>, LbError> {
        Ok(None)
    }

    /// Sets these absolute weights, and reads them back.
    async fn set_weights(&self, set: &[(&Node, u32)]) -> Result<(), LbError> {
        Err(LbError::Api {
            lb: self.name(),
            message: format!(
                "cannot set the weight of {}: this driver has none",
                set.first().map_or("a node", |(n, _)| n.name.as_str())
            ),
        })
    }

    /// Each node's traffic as the LB counts it (in `nodes` order; `None`
    /// for a node it does not know); `None` when this driver cannot say.
    async fn traffic(&self, _nodes: &[Node]) -> Result<Option<Vec<Option<LbTraffic>>>, LbError> {
        Ok(None)
    }

    /// What preflight should tell the operator about this LB's settings.
    async fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `kind: none`.
pub struct NoLoadBalancer;

#[async_trait]
impl LoadBalancer for NoLoadBalancer {
    fn name(&self) -> String {
        "no load balancer".into()
    }
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

/// Builds the driver the inventory names; its secrets are read here. The
/// nodes' agents (inventory order) serve `nlb`; `tls` reaches the ARR
/// server's agent.
pub fn from_inventory(
    inv: &Inventory,
    agents: &[Arc<dyn AgentApi>],
    tls: Option<&crate::agent::ClientTls>,
) -> Result<Arc<dyn LoadBalancer>, LbError> {
    let password = |api: &farm_inventory::HttpApi| {
        crate::secret::read(&api.password).map_err(|message| LbError::Config {
            lb: format!("{} {}", inv.load_balancer.kind(), api.url),
            message: format!("the password of user `{}`: {message}", api.username),
        })
    };
    match &inv.load_balancer {
        LbConfig::F5(cfg) => Ok(Arc::new(F5::new(cfg, password(&cfg.api)?)?)),
        LbConfig::Netscaler(cfg) => Ok(Arc::new(Netscaler::new(cfg, password(&cfg.api)?)?)),
        LbConfig::Exec(cfg) => Ok(Arc::new(Exec::new(cfg))),
        LbConfig::AwsElbv2(cfg) => Ok(Arc::new(AwsElbv2::new(cfg)?)),
        LbConfig::Arr(cfg) => {
            let host = cfg
                .agent
                .rsplit_once(':')
                .map_or(cfg.agent.as_str(), |(h, _)| h);
            let agent = crate::agent::GrpcAgent::new(
                &cfg.agent,
                host.trim_start_matches('[').trim_end_matches(']'),
                tls,
                inv.agent.connect_timeout,
                inv.agent.request_timeout,
            )
            .map_err(|e| LbError::Config {
                lb: inv.load_balancer.describe(),
                message: e.to_string(),
            })?;
            Ok(Arc::new(Arr::new(cfg, Arc::new(agent))))
        }
        LbConfig::Nlb => Ok(Arc::new(Nlb::new(
            inv.nodes
                .iter()
                .zip(agents)
                .map(|(n, a)| (n.name.clone(), a.clone()))
                .collect(),
            inv.rollout.drain_timeout,
        ))),
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
