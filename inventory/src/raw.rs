//! The inventory file exactly as written. Only types are checked here;
//! [`crate::validate`] checks meaning.
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInventory {
    pub farm: String,
    #[serde(default)]
    pub agent: RawAgentDefaults,
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub load_balancer: Option<RawLoadBalancer>,
    #[serde(default)]
    pub sites: Vec<RawSite>,
    #[serde(default)]
    pub app_pools: Vec<String>,
    #[serde(default)]
    pub rollout: RawRollout,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgentDefaults {
    pub port: Option<i64>,
    /// mutual TLS with the agents.
    pub tls: Option<RawTls>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// The farm CA the agents' certificates must be signed by.
    pub ca: String,
    /// This controller's client certificate and key.
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: String,
    pub address: String,
    /// `host:port` of the agent; default `address:agent.port`.
    pub agent: Option<String>,
    /// Port the sites answer HTTP on, for probes; default 80.
    pub http_port: Option<i64>,
    /// The node's server name in the load balancer; default `name`.
    pub lb_server: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLoadBalancer {
    pub kind: String,
    /// health-file: the path the load balancer's HTTP monitor requests.
    pub path: Option<String>,
    /// health-file: how long the LB takes to notice the file is gone or
    /// back (its check interval × fall/rise).
    pub detection: Option<String>,
    /// haproxy: runtime API address, `host:port` or `unix:/path`.
    pub admin: Option<String>,
    /// haproxy: backend name.
    pub backend: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    pub name: String,
    /// Host header the probe sends; default none (the node address).
    pub host: Option<String>,
    /// Port override for this site; default the node's `http_port`.
    pub port: Option<i64>,
    pub app_pool: Option<String>,
    #[serde(default)]
    pub probe: RawProbe,
    /// Deployments: what proves the node serves the new version.
    pub version_probe: Option<RawVersionProbe>,
    /// Deployments: hooks to run after the switch, by the names the
    /// agents' configs define them under.
    #[serde(default)]
    pub hooks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersionProbe {
    pub path: String,
    /// Text the body must contain; `{version}` is the version deployed.
    #[serde(default)]
    pub expect: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub path: Option<String>,
    pub expect_status: Option<i64>,
    pub expect_body: Option<String>,
    pub timeout: Option<String>,
    pub interval: Option<String>,
    pub successes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    /// A count (`1`), a percentage of the nodes (`"25%"`), or a ramp of
    /// them per batch (`[1, 2, "25%"]`).
    pub max_unavailable: Option<serde_yaml::Value>,
    /// A count or a percentage; nodes that must stay in rotation.
    pub min_healthy: Option<serde_yaml::Value>,
    pub drain_timeout: Option<String>,
    pub on_drain_timeout: Option<String>,
    pub healthy_timeout: Option<String>,
    pub operation_timeout: Option<String>,
    pub max_failures: Option<i64>,
    pub on_failure: Option<String>,
    /// `02:00-05:00` or `02:00-05:00 Europe/Berlin`.
    pub window: Option<String>,
    pub pause: Option<String>,
    pub lease_ttl: Option<String>,
    /// `window` (default) or `batch`.
    pub strategy: Option<String>,
    /// A reset's graceful stop timeout (`iisreset /stop /timeout:N`).
    pub stop_timeout: Option<String>,
}
