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
    /// Canary analysis of deploys.
    #[serde(default)]
    pub analysis: RawAnalysis,
    /// Patch night: which updates, how long a restart may take, the bake.
    #[serde(default)]
    pub patch: RawPatch,
    #[serde(default)]
    pub guard: RawGuard,
    /// Webhooks told about runs.
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    /// Where run state lives: the local journal directory (default) or etcd.
    pub state: Option<RawState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// `files` (default) or `etcd`.
    pub store: String,
    /// etcd: `https://host:port` (or `http://`) of the members.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// etcd: the key prefix (default `/farmctl`).
    pub prefix: Option<String>,
    /// etcd: client TLS (CA, certificate and key files).
    pub tls: Option<RawTls>,
    /// etcd: how long the farm lock outlives a silent controller.
    pub lock_ttl: Option<String>,
    /// etcd: a user with a role on the prefix.
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    /// The webhook URL (a secret: prefer `url_env` or `url_file`).
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub url_file: Option<String>,
    /// `started`, `node_failed`, `halted`, `finished` (default: all).
    pub events: Option<Vec<String>>,
    /// `json` (default), `slack` or `teams`.
    pub format: Option<String>,
    /// One post's bound (default 5s).
    pub timeout: Option<String>,
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
    /// f5, netscaler: the management address, `https://host[:port]`.
    pub url: Option<String>,
    /// f5: the pool's full path, `/Common/shop_pool`.
    pub pool: Option<String>,
    /// f5, netscaler: the API account.
    pub auth: Option<RawLbAuth>,
    /// f5, netscaler: how the management certificate is trusted.
    pub tls: Option<RawLbTls>,
    /// f5: `disable` or `force-offline`; arr: `drain` or `graceful-stop`.
    pub drain_mode: Option<String>,
    /// netscaler: what a node is — `service` (default), `server` or
    /// `servicegroup`.
    pub member: Option<String>,
    /// netscaler with `member: servicegroup`: the service group.
    pub servicegroup: Option<String>,
    /// netscaler: graceful disable's delay (NITRO `delay`).
    pub delay: Option<String>,
    /// aws-elbv2: the target group.
    pub target_group_arn: Option<String>,
    /// aws-elbv2: the region; default the ARN's.
    pub region: Option<String>,
    /// aws-elbv2: another endpoint (a VPC endpoint, a local emulator).
    pub endpoint: Option<String>,
    /// aws-elbv2: a named profile of the shared AWS config.
    pub profile: Option<String>,
    /// arr: `host:port` of the farm-agent on the ARR server.
    pub agent: Option<String>,
    /// arr: the web farm's name in ARR.
    pub farm: Option<String>,
    /// exec: argv templates.
    pub drain: Option<Vec<String>>,
    #[serde(rename = "return")]
    pub return_: Option<Vec<String>>,
    pub state: Option<Vec<String>>,
    /// f5, netscaler, aws-elbv2: one API call; exec: one command.
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLbAuth {
    pub username: String,
    /// The password comes from this environment variable...
    pub password_env: Option<String>,
    /// ...or this file (relative to the inventory), never the inventory.
    pub password_file: Option<String>,
    /// f5: `token` (default; basic when token login is not offered) or
    /// `basic`; netscaler: `login` (default, a session cookie) or `headers`.
    pub method: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLbTls {
    /// A PEM file of the CA (or the self-signed certificate) to trust.
    pub ca: Option<String>,
    /// Or the management certificate's sha256 fingerprint, pinned.
    pub fingerprint: Option<String>,
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
    /// A node step that makes no progress for this long fails.
    pub progress_deadline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub canaries: Option<i64>,
    pub soak: Option<String>,
    pub interval: Option<String>,
    pub min_requests: Option<i64>,
    #[serde(default)]
    pub errors: RawAnalysisErrors,
    #[serde(default)]
    pub latency: RawAnalysisLatency,
    /// `fail` (default), `pause` or `promote`.
    pub on_inconclusive: Option<String>,
    /// A share of a normal node's traffic for the canaries: refused (no
    /// driver sets weights yet), named so the refusal says why.
    pub canary_weight: Option<serde_yaml::Value>,
    /// Judging each later node this long after its return.
    pub stabilize: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysisErrors {
    /// `"0.5%"`, or a fraction (`0.005`).
    pub max_increase: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysisLatency {
    /// `p95` (default) or `p99`.
    pub quantile: Option<String>,
    /// `"20%"`, or a fraction (`0.2`).
    pub max_increase: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPatch {
    /// `SecurityUpdates`, `CriticalUpdates`, ... (default security,
    /// critical and rollups); `[]`: every software update.
    pub classifications: Option<Vec<String>>,
    /// Only these KBs.
    #[serde(default)]
    pub include_kbs: Vec<String>,
    #[serde(default)]
    pub exclude_kbs: Vec<String>,
    /// How long a node may take from the restart asked to its agent
    /// answering from the new boot with IIS running (default 30m).
    pub reboot_timeout: Option<String>,
    /// How long an install may take (default 2h).
    pub install_timeout: Option<String>,
    /// `shutdown /t` (default 10s).
    pub reboot_delay: Option<String>,
    /// How long each node's traffic is judged against the nodes not yet
    /// patched after its return (default 2m; `0s`: not judged).
    pub bake: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    pub window: Option<String>,
    pub interval: Option<String>,
    pub confirm: Option<i64>,
    /// A node count or `"25%"`.
    pub max_sick: Option<serde_yaml::Value>,
    pub max_actions: Option<RawGuardBudget>,
    pub cooldown: Option<String>,
    pub relapse: Option<String>,
    pub quarantine_after: Option<i64>,
    pub dump: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuardBudget {
    pub per_hour: Option<i64>,
    pub per_day: Option<i64>,
}
