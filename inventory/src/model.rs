//! The checked inventory. Every value here has been validated.
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub farm: String,
    pub agent: AgentDefaults,
    pub nodes: Vec<Node>,
    pub load_balancer: LoadBalancer,
    pub sites: Vec<Site>,
    /// Pools a recycle acts on when none are named on the command line;
    /// empty means every pool that serves a site, as the agent sees it.
    pub app_pools: Vec<String>,
    pub rollout: Rollout,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentDefaults {
    pub port: u16,
    /// mutual TLS with the agents; `None` means plaintext, which the
    /// controller only accepts with `--insecure`.
    pub tls: Option<TlsFiles>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// PEM files for mutual TLS, relative paths resolved against the
/// inventory file's directory by [`crate::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    /// Host name or IP the controller reaches the node's sites on.
    pub address: String,
    /// `host:port` of the node's farm-agent.
    pub agent: String,
    pub http_port: u16,
    pub lb_server: String,
}

/// How nodes are taken out of rotation.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadBalancer {
    /// No drain at all: operations happen under traffic.
    None,
    /// The agent renames the health-check file the LB monitors at `path`;
    /// the LB notices within `detection` (its check interval × fall/rise).
    HealthFile { path: String, detection: Duration },
    /// HAProxy runtime API.
    Haproxy { admin: String, backend: String },
}

impl LoadBalancer {
    pub fn kind(&self) -> &'static str {
        match self {
            LoadBalancer::None => "none",
            LoadBalancer::HealthFile { .. } => "health-file",
            LoadBalancer::Haproxy { .. } => "haproxy",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub app_pool: Option<String>,
    pub probe: Probe,
    pub version_probe: Option<VersionProbe>,
    /// Hooks run after a deployment's switch (names the agents define).
    pub hooks: Vec<String>,
}

/// What proves a node serves a given version: `GET path` with the site's
/// Host header answers 200 and its body contains `expect` with
/// `{version}` replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionProbe {
    pub path: String,
    pub expect: String,
}

impl VersionProbe {
    /// The text the body must contain for `version`.
    pub fn expected(&self, version: &str) -> String {
        self.expect.replace("{version}", version)
    }
}

impl Site {
    /// The port this site answers on for `node`.
    pub fn port_on(&self, node: &Node) -> u16 {
        self.port.unwrap_or(node.http_port)
    }
}

/// An HTTP health probe, sent the way a load balancer or user would.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub path: String,
    pub expect_status: u16,
    pub expect_body: Option<String>,
    pub timeout: Duration,
    pub interval: Duration,
    /// Consecutive good answers needed before the node counts as healthy.
    pub successes: u32,
}

/// A number of nodes, as written: a count or a percentage of the farm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    Count(u32),
    Percent(u32),
}

impl Capacity {
    /// Resolves to a node count. Percentages round down.
    pub fn of(self, nodes: usize) -> usize {
        match self {
            Capacity::Count(n) => n as usize,
            Capacity::Percent(p) => nodes * p as usize / 100,
        }
    }

    /// Parses `3` or `25%`.
    pub fn parse(text: &str) -> Result<Capacity, String> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: u32 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a percentage like `25%`"))?;
            if v > 100 {
                return Err(format!("`{text}` is more than 100%"));
            }
            Ok(Capacity::Percent(v))
        } else {
            t.parse().map(Capacity::Count).map_err(|_| {
                format!("`{text}` is neither a node count nor a percentage like `25%`")
            })
        }
    }
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Capacity::Count(n) => write!(f, "{n}"),
            Capacity::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Nodes out of rotation at once, per batch: one value for every batch,
/// or a ramp (`[1, 2, "25%"]`: the first batch takes 1 node, the second 2,
/// every later one 25% of the farm).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ramp(pub Vec<Capacity>);

impl Ramp {
    pub fn single(c: Capacity) -> Ramp {
        Ramp(vec![c])
    }

    /// The node counts per step for a farm of `nodes`: percentages round
    /// down but never below one.
    pub fn resolve(&self, nodes: usize) -> Vec<usize> {
        self.0.iter().map(|c| c.of(nodes).max(1)).collect()
    }

    /// `2`, `25%` or `1,2,25%`.
    pub fn parse(text: &str) -> Result<Ramp, String> {
        let steps = text
            .split(',')
            .map(Capacity::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if steps.is_empty() {
            return Err("empty".into());
        }
        Ok(Ramp(steps))
    }
}

impl std::fmt::Display for Ramp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Capacity::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

farm_proto::named_enum! {
    /// What happens when failures exceed `max_failures`.
    OnFailure {
        /// Stop: later nodes are not touched.
        Halt = "halt",
        /// Go on with the other nodes (failed ones stay out; capacity is
        /// still kept); the run is reported failed.
        Continue = "continue",
    }
}

farm_proto::named_enum! {
    /// What to do when a node still has work in flight at `drain_timeout`.
    OnDrainTimeout {
        /// Fail the node (return it to rotation if healthy) and halt the run.
        Fail = "fail",
        /// Go ahead with the operation; in-flight requests may be cut.
        Proceed = "proceed",
    }
}

farm_proto::named_enum! {
    /// How nodes are scheduled.
    Strategy {
        /// A sliding window: a node starts as soon as a slot frees, so one
        /// slow node does not hold up the others.
        Window = "window",
        /// Batches with a barrier: the next batch starts when the whole
        /// previous one is back.
        Batch = "batch",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub max_unavailable: Ramp,
    pub min_healthy: Capacity,
    pub drain_timeout: Duration,
    pub on_drain_timeout: OnDrainTimeout,
    /// How long a node may take to become healthy after the operation.
    pub healthy_timeout: Duration,
    /// Upper bound for the recycle or reset on one node.
    pub operation_timeout: Duration,
    pub max_failures: u32,
    pub on_failure: OnFailure,
    /// Wait between batches (to watch the farm), if any.
    pub pause: Option<Duration>,
    /// The maintenance window runs must keep to, if any.
    pub window: Option<crate::Window>,
    /// How long an agent keeps a run's lease without renewal; if the
    /// controller dies, the agents take over after this.
    pub lease_ttl: Duration,
    pub strategy: Strategy,
    /// `iisreset /stop /timeout:N` of a reset: how long in-flight requests
    /// get before the stop is forced.
    pub stop_timeout: Duration,
}

impl Rollout {
    /// Nodes that may be out of rotation in the first batch, for a farm of
    /// `nodes`: percentages round down but never below one.
    pub fn batch_size(&self, nodes: usize) -> usize {
        self.max_unavailable.resolve(nodes)[0]
    }
}
