//! The checked inventory. Every value here has been validated.
use std::time::Duration;

farm_proto::message_error! {
    /// Why an inventory value does not parse.
    ValueError
}

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
    /// Canary analysis of deploys.
    pub analysis: Analysis,
    /// Patch night (`farmctl patch`, `farmctl reboot`).
    pub patch: Patch,
    /// `farmctl guard`'s rules (defaults when the section is absent).
    pub guard: Guard,
    pub notify: Vec<Notify>,
    /// Where run state lives; `None`: the local journal directory.
    pub state: Option<EtcdStore>,
}

/// Run state on etcd (`state: {store: etcd, ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdStore {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub tls: Option<TlsFiles>,
    pub user: Option<(String, Secret)>,
    /// How long the farm lock outlives a controller that went silent.
    pub lock_ttl: Duration,
}

/// A webhook told about runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub url: WebhookUrl,
    pub events: Vec<NotifyEvent>,
    pub format: NotifyFormat,
    /// One post's bound; a run waits at most this long for its last posts.
    pub timeout: Duration,
}

/// Where a webhook's URL comes from. It is a secret: never printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    Inline(String),
    Secret(Secret),
}

impl WebhookUrl {
    /// How messages name it without giving it away.
    pub fn label(&self) -> String {
        match self {
            WebhookUrl::Inline(_) => "inline url".into(),
            WebhookUrl::Secret(Secret::Env(v)) => format!("${v}"),
            WebhookUrl::Secret(Secret::File(f)) => f.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    Started,
    NodeFailed,
    Halted,
    Finished,
    /// A canary analysis reached its verdict.
    Verdict,
    /// `farmctl guard` acted on a sick pool.
    GuardActed,
    /// `farmctl guard` holds: the farm is sick (or its data missing).
    GuardHeld,
    /// `farmctl guard` stopped acting on a pool that keeps relapsing.
    GuardQuarantined,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::NodeFailed => "node_failed",
            NotifyEvent::Halted => "halted",
            NotifyEvent::Finished => "finished",
            NotifyEvent::Verdict => "verdict",
            NotifyEvent::GuardActed => "guard_acted",
            NotifyEvent::GuardHeld => "guard_held",
            NotifyEvent::GuardQuarantined => "guard_quarantined",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFormat {
    Json,
    Slack,
    Teams,
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
    /// F5 BIG-IP LTM pool, through iControl REST.
    F5(F5),
    /// Citrix NetScaler ADC, through NITRO.
    Netscaler(Netscaler),
    /// An AWS ELBv2 target group (ALB or NLB).
    AwsElbv2(AwsElbv2),
    /// IIS Application Request Routing, through the farm-agent on the ARR
    /// server.
    Arr(Arr),
    /// Windows NLB, through each node's own agent.
    Nlb,
    /// User commands.
    Exec(Exec),
}

impl LoadBalancer {
    pub fn kind(&self) -> &'static str {
        match self {
            LoadBalancer::None => "none",
            LoadBalancer::HealthFile { .. } => "health-file",
            LoadBalancer::Haproxy { .. } => "haproxy",
            LoadBalancer::F5(_) => "f5",
            LoadBalancer::Netscaler(_) => "netscaler",
            LoadBalancer::AwsElbv2(_) => "aws-elbv2",
            LoadBalancer::Arr(_) => "arr",
            LoadBalancer::Nlb => "nlb",
            LoadBalancer::Exec(_) => "exec",
        }
    }

    /// Which load balancer, in a few words (`haproxy backend shop`, `f5
    /// pool /Common/shop_pool`): part of a run's contract, so a resume
    /// against another load balancer is refused.
    pub fn describe(&self) -> String {
        match self {
            LoadBalancer::Haproxy { backend, .. } => format!("haproxy backend {backend}"),
            LoadBalancer::F5(f) => format!("f5 pool {} at {}", f.pool, f.api.url),
            LoadBalancer::Netscaler(n) => format!("netscaler at {}", n.api.url),
            LoadBalancer::AwsElbv2(a) => format!("aws-elbv2 target group {}", a.target_group_arn),
            LoadBalancer::Arr(a) => format!("arr web farm {} on {}", a.farm, a.agent),
            other => other.kind().to_string(),
        }
    }

    /// The HTTPS management API of an f5 or netscaler.
    pub fn http_api(&self) -> Option<&HttpApi> {
        match self {
            LoadBalancer::F5(f) => Some(&f.api),
            LoadBalancer::Netscaler(n) => Some(&n.api),
            _ => None,
        }
    }

    pub fn http_api_mut(&mut self) -> Option<&mut HttpApi> {
        match self {
            LoadBalancer::F5(f) => Some(&mut f.api),
            LoadBalancer::Netscaler(n) => Some(&mut n.api),
            _ => None,
        }
    }

    /// The member name a node gets without `lb_server`: the node's name,
    /// or what this load balancer calls it.
    pub fn default_member(&self, name: &str, address: &str, http_port: u16) -> String {
        match self {
            LoadBalancer::F5(_) => format!("/Common/{name}:{http_port}"),
            LoadBalancer::AwsElbv2(_) => format!("{address}:{http_port}"),
            LoadBalancer::Arr(_) => address.to_string(),
            _ => name.to_string(),
        }
    }
}

/// A load balancer's management API over HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpApi {
    /// `https://host[:port]`, no path.
    pub url: String,
    pub username: String,
    pub password: Secret,
    pub trust: Trust,
    /// One call, including its retries' waits.
    pub timeout: Duration,
}

/// Where a secret is read from when it is needed; the inventory never
/// holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Env(String),
    /// Relative to the inventory file (resolved by [`crate::load`]).
    File(std::path::PathBuf),
}

/// How a management certificate is trusted: never silently unverified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A PEM file (relative paths resolved by [`crate::load`]).
    Ca(std::path::PathBuf),
    /// The certificate's sha256, 32 bytes.
    Fingerprint(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct F5 {
    pub api: HttpApi,
    /// `/Common/shop_pool`.
    pub pool: String,
    pub drain_mode: F5DrainMode,
    /// Token login first (and basic when the device offers no token
    /// login), or basic only.
    pub token_login: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F5DrainMode {
    /// `session: user-disabled`: persistent clients may still come.
    Disable,
    /// `state: user-down` too: no new connections at all.
    ForceOffline,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netscaler {
    pub api: HttpApi,
    pub member: NetscalerMember,
    /// Graceful disable's delay: after it, connections left are cut.
    pub delay: Option<Duration>,
    /// A login session (cookie) or the user and password on every call.
    pub login: bool,
}

/// What a node's `lb_server` names on a NetScaler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetscalerMember {
    Service,
    Server,
    /// A member of this service group; `lb_server` is `server:port`.
    ServiceGroup(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsElbv2 {
    pub target_group_arn: String,
    pub region: String,
    pub endpoint: Option<String>,
    pub profile: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arr {
    /// `host:port` of the farm-agent on the ARR server.
    pub agent: String,
    /// The web farm.
    pub farm: String,
    pub drain_mode: ArrDrainMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArrDrainMode {
    /// `SetState Drain`: affinitized clients keep coming.
    Drain,
    /// `SetState GracefulStop`: requests in flight finish, nothing new.
    GracefulStop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub drain: Vec<String>,
    pub return_: Vec<String>,
    pub state: Vec<String>,
    pub timeout: Duration,
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
    pub fn parse(text: &str) -> Result<Capacity, ValueError> {
        let t = text.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: u32 = p
                .trim()
                .parse()
                .map_err(|_| ValueError(format!("`{text}` is not a percentage like `25%`")))?;
            if v > 100 {
                return Err(ValueError(format!("`{text}` is more than 100%")));
            }
            Ok(Capacity::Percent(v))
        } else {
            t.parse().map(Capacity::Count).map_err(|_| {
                ValueError(format!(
                    "`{text}` is neither a node count nor a percentage like `25%`"
                ))
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
    pub fn parse(text: &str) -> Result<Ramp, ValueError> {
        let steps = text
            .split(',')
            .map(Capacity::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if steps.is_empty() {
            return Err(ValueError("empty".into()));
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

farm_proto::named_enum! {
    /// What a canary analysis that reaches no verdict does.
    OnInconclusive {
        /// Roll the canaries back, as for a failure (default).
        Fail = "fail",
        /// Ask on a terminal; without one, fail.
        Pause = "pause",
        /// Go on with the rollout.
        Promote = "promote",
    }
}

farm_proto::named_enum! {
    /// The latency quantile a canary analysis judges.
    LatencyQuantile {
        P95 = "p95",
        P99 = "p99",
    }
}

impl LatencyQuantile {
    pub fn value(self) -> f64 {
        match self {
            LatencyQuantile::P95 => 0.95,
            LatencyQuantile::P99 => 0.99,
        }
    }
}

/// Canary analysis of a deploy (`analysis:`): the first `canaries` nodes
/// serve the new release for `soak` while their traffic is judged against
/// the nodes still on the old one. Without `soak` there is no analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub canaries: u32,
    pub soak: Option<Duration>,
    /// A judgement every `interval` of the soak.
    pub interval: Duration,
    /// User requests (each side) below which a window is not enough data.
    pub min_requests: u64,
    /// The 5xx rate the canaries may add over the baseline (0.005).
    pub errors_max_increase: f64,
    pub latency_quantile: LatencyQuantile,
    /// The relative latency increase allowed at that quantile (0.2).
    pub latency_max_increase: f64,
    pub on_inconclusive: OnInconclusive,
    /// Each node after the canaries is judged this long after its return.
    pub stabilize: Option<Duration>,
    /// The canaries' share of a normal node's traffic during the soak, in
    /// percent (HAProxy only).
    pub canary_weight: Option<u32>,
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            canaries: 1,
            soak: None,
            interval: Duration::from_secs(30),
            min_requests: 100,
            errors_max_increase: 0.005,
            latency_quantile: LatencyQuantile::P95,
            latency_max_increase: 0.2,
            on_inconclusive: OnInconclusive::Fail,
            stabilize: None,
            canary_weight: None,
        }
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
    /// A node step that makes no progress for this long fails.
    pub progress_deadline: Option<Duration>,
}

impl Rollout {
    /// Nodes that may be out of rotation in the first batch, for a farm of
    /// `nodes`: percentages round down but never below one.
    pub fn batch_size(&self, nodes: usize) -> usize {
        self.max_unavailable.resolve(nodes)[0]
    }
}

/// Patch night: which updates a patch installs, and the bounds of each
/// node's restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// Canonical names; empty: every software update.
    pub classifications: Vec<String>,
    /// `KB5031364`.
    pub include_kbs: Vec<String>,
    pub exclude_kbs: Vec<String>,
    /// From the restart asked to the agent answering from a new boot with
    /// IIS running.
    pub reboot_timeout: Duration,
    pub install_timeout: Duration,
    pub reboot_delay: Duration,
    /// Each node's traffic judged against the unpatched ones for this
    /// long after its return; `None`: not judged.
    pub bake: Option<Duration>,
}

impl Default for Patch {
    fn default() -> Self {
        Patch {
            classifications: farm_proto::updates::DEFAULT_CLASSIFICATIONS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            include_kbs: Vec::new(),
            exclude_kbs: Vec::new(),
            reboot_timeout: Duration::from_secs(30 * 60),
            install_timeout: Duration::from_secs(2 * 3600),
            reboot_delay: Duration::from_secs(10),
            bake: Some(Duration::from_secs(120)),
        }
    }
}

/// `guard:`: when `farmctl guard` recycles a sick pool on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Guard {
    /// The traffic figures are judged over this window.
    pub window: Duration,
    /// How often the farm is evaluated.
    pub interval: Duration,
    /// Consecutive evaluations a pool must be an outlier before it is acted on.
    pub confirm: u32,
    /// More outliers than this: the farm is sick, the guard holds.
    pub max_sick: Capacity,
    pub per_hour: u32,
    pub per_day: u32,
    /// Per pool, from its last action; doubled for each relapse.
    pub cooldown: Duration,
    /// Sick again within this of an action: a relapse.
    pub relapse: Duration,
    /// Relapses after which the guard stops acting on a pool.
    pub quarantine_after: u32,
    /// Each action also takes a memory dump of the pool's workers once the
    /// node is out of rotation and quiet, through the agent's `dump:` tool
    /// and within its budget.
    pub dump: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            window: Duration::from_secs(120),
            interval: Duration::from_secs(30),
            confirm: 3,
            max_sick: Capacity::Percent(25),
            per_hour: 3,
            per_day: 10,
            cooldown: Duration::from_secs(600),
            relapse: Duration::from_secs(1800),
            quarantine_after: 2,
            dump: false,
        }
    }
}
