//! Talking to a node's farm-agent: one trait, so the engine is driven by a
//! fake in tests ([`crate::testing`]) and by the tonic client ([`grpc`]) in
//! production.
mod grpc;
mod patch;

pub use grpc::{ClientTls, GrpcAgent};
pub use patch::{
    BootView, PendingView, RebootState, RebootView, UpdateFilterSpec, UpdateOutcome, UpdateView,
    UpdatesView,
};
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
pub use farm_proto::domain::{OperationKind, PoolState, ServiceState};

#[derive(Debug, Clone, thiserror::Error)]
pub enum AgentError {
    #[error("agent {addr} is unreachable: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("agent refused the call: {0}")]
    Refused(String),
    #[error("agent call failed: {0}")]
    Call(String),
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// What the call named does not exist there.
    #[error("{0}")]
    NotFound(String),
}

/// A pool as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PoolView {
    pub name: String,
    pub state: PoolState,
    pub pids: Vec<u32>,
    /// Why a stopped pool is stopped, when the agent knows (rapid-fail
    /// protection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by: Option<String>,
}

/// A run's lease on a node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseView {
    pub holder: String,
    pub run_id: String,
    pub reason: String,
    /// When the lease was taken and when it runs out unless renewed
    /// (Unix ms, the agent's clock); `None` from an agent that does not say.
    pub acquired_unix_ms: Option<u64>,
    pub expires_unix_ms: Option<u64>,
}

impl LeaseView {
    /// "web-ops@host for run R (recycle), taken 3m 2s ago, runs out in 25s"
    /// as far as the agent's clock says.
    pub fn describe(&self, now_unix_ms: u64) -> String {
        let mut s = format!("{} for run {}", self.holder, self.run_id);
        if !self.reason.is_empty() {
            s.push_str(&format!(" ({})", self.reason));
        }
        let ms = |v: u64| crate::human::duration(Duration::from_millis(v));
        if let Some(a) = self.acquired_unix_ms {
            s.push_str(&format!(
                ", taken {} ago",
                ms(now_unix_ms.saturating_sub(a))
            ));
        }
        match self.expires_unix_ms {
            Some(e) if e > now_unix_ms => {
                s.push_str(&format!(", runs out in {}", ms(e - now_unix_ms)))
            }
            Some(e) => s.push_str(&format!(
                ", ran out {} ago: its controller is silent",
                ms(now_unix_ms - e)
            )),
            None => {}
        }
        s
    }
}

/// A site as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SiteView {
    pub name: String,
    pub pool: String,
    pub physical_path: String,
    /// The release it serves, when it serves one of the agent's releases.
    pub release: Option<String>,
}

/// A node as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub node: String,
    pub backend: String,
    pub services: BTreeMap<String, ServiceState>,
    pub pools: Vec<PoolView>,
    pub sites: Vec<SiteView>,
    pub in_flight: Option<u64>,
    /// The agent's health-check file is renamed away.
    pub drained: bool,
    pub lease: Option<LeaseView>,
    /// What the agent did on its own, e.g. after a lease expired.
    pub notice: Option<String>,
    /// The server's boot (absent from an agent that cannot tell).
    pub boot: Option<BootView>,
    pub reboot_pending: Option<PendingView>,
    /// Updates that applied at the agent's last search.
    pub updates_pending: Option<u32>,
    /// How the agent's service starts with Windows (`auto`, ...).
    pub service_start: Option<String>,
}

impl NodeView {
    /// W3SVC and WAS both running.
    pub fn iis_running(&self) -> bool {
        ["W3SVC", "WAS"]
            .iter()
            .all(|s| self.services.get(*s) == Some(&ServiceState::Running))
    }

    pub fn site(&self, name: &str) -> Option<&SiteView> {
        self.sites
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
    }

    pub fn pool(&self, name: &str) -> Option<&PoolView> {
        self.pools
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Worker PIDs per pool of `pools` (every pool when empty) that has
    /// workers.
    pub fn pids_of(&self, pools: &[String]) -> BTreeMap<String, Vec<u32>> {
        self.pools
            .iter()
            .filter(|p| pools.is_empty() || pools.iter().any(|q| q.eq_ignore_ascii_case(&p.name)))
            .filter(|p| !p.pids.is_empty())
            .map(|p| (p.name.clone(), p.pids.clone()))
            .collect()
    }
}

/// What the agent reported at the end of a recycle or reset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperationReport {
    pub success: bool,
    pub error: String,
    pub failed_step: String,
    pub pools: Vec<PoolChange>,
    pub services: BTreeMap<String, ServiceState>,
    pub replayed: bool,
    /// An install's updates, and whether the server must restart.
    pub updates: Vec<UpdateOutcome>,
    pub reboot_required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolChange {
    pub name: String,
    pub pids_before: Vec<u32>,
    pub pids_after: Vec<u32>,
    pub state_after: PoolState,
    pub had_no_worker: bool,
}

impl PoolChange {
    /// Every worker is new (a pool that had none only has to be Started).
    pub fn replaced(&self) -> bool {
        self.had_no_worker
            || (!self.pids_after.is_empty()
                && self
                    .pids_after
                    .iter()
                    .all(|p| !self.pids_before.contains(p)))
    }

    /// `before 1,2 -> after 3`, for messages.
    pub fn summary(&self) -> String {
        let list = |v: &[u32]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            }
        };
        format!(
            "before {} -> after {}",
            list(&self.pids_before),
            list(&self.pids_after)
        )
    }
}

/// A release package on this machine, to upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Package {
    pub path: std::path::PathBuf,
    /// Hex sha256 of the file.
    pub sha256: String,
    pub size: u64,
}

/// What a Stage call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    /// The same package was there already: nothing was uploaded.
    pub already: bool,
    pub files: u64,
    pub bytes: u64,
}

/// One release kept on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseView {
    pub version: String,
    pub sha256: String,
    pub active: bool,
    pub previous: bool,
}

/// What to switch a site to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchTo {
    pub site: String,
    /// The release to serve; with `back`, the release to leave.
    pub version: String,
    pub hooks: Vec<String>,
    /// Back to what the site served before the last switch.
    pub back: bool,
}

/// One hook's run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HookRun {
    pub name: String,
    pub exit_code: i32,
    pub output: String,
    pub duration_ms: u64,
}

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switched {
    /// What the site served before (a version, or a path).
    pub previous: String,
    pub version: String,
    pub unchanged: bool,
    pub hooks: Vec<HookRun>,
}

/// A run's claim on a node: who, for which run, why, for how long
/// without renewal.
#[derive(Debug, Clone, Copy)]
pub struct LeaseClaim<'a> {
    pub holder: &'a str,
    pub run_id: &'a str,
    pub reason: &'a str,
    pub ttl: Duration,
}

/// A progress line from the agent while it works.
pub type ProgressFn<'a> = &'a (dyn Fn(&str, &str) + Send + Sync);

/// What the controller asks an agent to do to IIS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRequest {
    pub kind: OperationKind,
    /// Pools to recycle (every pool serving a site when empty).
    pub pools: Vec<String>,
    /// A reset's graceful stop timeout.
    pub stop_timeout: Duration,
}

#[async_trait]
pub trait AgentApi: Send + Sync {
    async fn status(&self) -> Result<NodeView, AgentError>;
    /// The result of recycle or reset `op_id` if the agent recorded it as
    /// finished (its record outlives agent restarts when it keeps state);
    /// `None` when it does not know the id or it still runs.
    async fn finished_operation(&self, op_id: &str) -> Result<Option<OperationReport>, AgentError>;
    async fn drain(&self, op_id: &str) -> Result<(), AgentError>;
    async fn undrain(&self, op_id: &str) -> Result<(), AgentError>;
    /// Resolves `true` once the node has no request in flight, `false` if
    /// `timeout` passes first.
    async fn wait_idle(&self, timeout: Duration) -> Result<bool, AgentError>;
    async fn operate(
        &self,
        op_id: &str,
        request: &OperationRequest,
        timeout: Duration,
        progress: ProgressFn<'_>,
    ) -> Result<OperationReport, AgentError>;
    /// Takes (or, for the same run, renews) the node's lease.
    async fn acquire_lease(&self, claim: &LeaseClaim<'_>) -> Result<(), AgentError>;
    /// Extends a lease the run holds; refused when it expired meanwhile.
    async fn renew_lease(&self, run_id: &str, ttl: Duration) -> Result<(), AgentError>;
    async fn release_lease(&self, run_id: &str) -> Result<(), AgentError>;
    /// Uploads `package` as release `version` of `site` (answered at once
    /// when the same package is there).
    async fn stage(
        &self,
        op_id: &str,
        site: &str,
        version: &str,
        package: &Package,
        timeout: Duration,
    ) -> Result<Staged, AgentError>;
    /// The releases kept for `site`.
    async fn releases(&self, site: &str) -> Result<Vec<ReleaseView>, AgentError>;
    async fn switch(&self, op_id: &str, to: &SwitchTo) -> Result<Switched, AgentError>;
    /// Removes old releases (the agent keeps its `deploy.keep`); their
    /// versions.
    async fn prune(&self, op_id: &str, site: &str) -> Result<Vec<String>, AgentError>;
    /// A load balancer member this agent drives with local tools (an ARR
    /// server on the ARR box, the node itself in NLB).
    async fn lb_member(&self, _call: &LbMemberCall) -> Result<LbMemberView, AgentError> {
        Err(AgentError::Refused(
            "this agent does not drive load balancer members".into(),
        ))
    }

    /// What users got on the node's sites over the last `last_s` seconds
    /// (the agent's Traffic call). An agent that cannot say answers with
    /// `unavailable` set.
    /// What `pool` is doing now (requests running at least
    /// `min_elapsed_ms`, workers, queue, WAS events).
    async fn diagnose(&self, pool: &str, _min_elapsed_ms: u64) -> Result<Diagnostics, AgentError> {
        Ok(Diagnostics {
            pool: pool.to_string(),
            notes: vec!["this agent cannot diagnose a pool".into()],
            ..Diagnostics::default()
        })
    }

    /// A memory dump of `pool`'s workers through the agent's configured
    /// tool, within the node's dump budget, answered within `timeout`.
    async fn dump(
        &self,
        _op_id: &str,
        _pool: &str,
        _timeout: Duration,
    ) -> Result<DumpView, AgentError> {
        Err(AgentError::Refused(
            "this agent takes no memory dumps".into(),
        ))
    }

    /// The node's status and its traffic over `last_s` seconds — in one
    /// call where the agent can (`farmctl status` of a large farm).
    async fn status_and_traffic(
        &self,
        last_s: u32,
    ) -> (
        Result<NodeView, AgentError>,
        Result<TrafficView, AgentError>,
    ) {
        tokio::join!(self.status(), self.traffic(last_s))
    }

    async fn traffic(&self, _last_s: u32) -> Result<TrafficView, AgentError> {
        Ok(TrafficView {
            unavailable: Some("this agent cannot say".into()),
            ..TrafficView::default()
        })
    }

    /// The traffic with one unreadable line quoted per site (the operator
    /// role's; `validate --connect`).
    async fn traffic_quoting(&self, last_s: u32) -> Result<TrafficView, AgentError> {
        self.traffic(last_s).await
    }

    /// The updates that apply to the server and `filter` takes (a fresh
    /// search: it may take minutes).
    async fn updates(&self, _filter: &UpdateFilterSpec) -> Result<UpdatesView, AgentError> {
        Err(AgentError::Refused("this agent does not patch".into()))
    }

    /// Installs them under `op_id`; the agent answers a repeated id with
    /// the first install's result.
    async fn install_updates(
        &self,
        _op_id: &str,
        _filter: &UpdateFilterSpec,
        _timeout: Duration,
        _progress: ProgressFn<'_>,
    ) -> Result<OperationReport, AgentError> {
        Err(AgentError::Refused("this agent does not patch".into()))
    }

    /// Asks for the server's restart under `op_id` (asked again, the same
    /// id says where that restart stands and never restarts twice).
    async fn reboot(
        &self,
        _op_id: &str,
        _comment: &str,
        _delay: Duration,
        _for_updates: bool,
    ) -> Result<RebootView, AgentError> {
        Err(AgentError::Refused(
            "this agent does not restart its server".into(),
        ))
    }
}

/// One site's traffic as its agent reports it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SiteTrafficView {
    pub site: String,
    pub pool: String,
    pub covered_s: u64,
    pub requests: u64,
    pub checks: u64,
    /// 1xx..5xx.
    pub classes: [u64; 5],
    pub errors: BTreeMap<String, u64>,
    pub httperr: BTreeMap<String, u64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub missing: Vec<String>,
    /// The latency histogram of the user requests.
    pub latency: farm_proto::latency::Histogram,
    /// The pool's gauges (performance counters), when the agent reads them.
    pub gauges: Option<PoolGauges>,
    /// Lines of the window the agent could not read, by reason
    /// (`field_count`, `no_fields`, ...), and one of them quoted when
    /// asked for with the operator role.
    pub malformed: u64,
    pub malformed_reasons: BTreeMap<String, u64>,
    pub malformed_sample: Option<String>,
    /// Unreadable lines since the agent started.
    pub malformed_total: u64,
    /// Since when the figures run (Unix s); `None` while the site's log
    /// cannot be read (or from an agent too old to say).
    pub since: Option<i64>,
    /// Why the site's log cannot be followed now.
    pub problem: Option<String>,
    /// The window's busiest URLs: (stem, timed requests, their ms summed).
    pub urls: Vec<(String, u64, u64)>,
    /// User requests the agent read since it started (a counter).
    pub requests_total: u64,
}

pub use farm_proto::gauges::PoolGauges;

/// What a pool was doing when it was captured, before a recycle of it
/// (`recycle --outliers`): in the report (`nodes[].diagnostics`) and the
/// journal.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Diagnostics {
    pub pool: String,
    pub requests: Vec<RunningRequestView>,
    pub workers: Vec<WorkerView>,
    pub queue: Option<u64>,
    pub rejected: Option<u64>,
    /// `Running`, `Disabled`, ...
    pub state: Option<String>,
    /// WAS's events about the pool, newest first.
    pub events: Vec<WasEventView>,
    /// WAS disabled the pool after a series of worker failures (event
    /// 5002: rapid-fail protection).
    pub rapid_fail: bool,
    /// What could not be read, and why.
    pub notes: Vec<String>,
}

/// The memory dumps asked of one pool while its node was out of rotation
/// (the guard's action with `guard.dump`): in the report
/// (`nodes[].dumps`) and the guard's decision log.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DumpView {
    pub pool: String,
    pub dumps: Vec<DumpTakenView>,
    /// Why a worker was not dumped (the budget, the disk, the size cap,
    /// the time limit, the tool), or why none could be asked.
    pub refused: Vec<String>,
    /// Dumps the node's budget still allows over the last 24 hours.
    pub left_today: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DumpTakenView {
    pub pid: u32,
    /// The file on the node.
    pub file: String,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

impl DumpView {
    /// One line for the run's output: what was written where, and why
    /// anything was not.
    pub fn line(&self) -> String {
        let mut parts: Vec<String> = self
            .dumps
            .iter()
            .map(|d| {
                format!(
                    "worker {} dumped to {} ({} MB, {:.1}s)",
                    d.pid,
                    d.file,
                    d.bytes / (1024 * 1024),
                    d.elapsed_ms as f64 / 1000.0
                )
            })
            .collect();
        parts.extend(self.refused.iter().map(|r| format!("not dumped: {r}")));
        if let Some(n) = self.left_today {
            parts.push(format!("{n} dump(s) left today"));
        }
        format!("memory dump of {}: {}", self.pool, parts.join("; "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RunningRequestView {
    pub verb: String,
    pub url: String,
    pub elapsed_ms: Option<u64>,
    pub client: Option<String>,
    pub stage: Option<String>,
    pub module: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkerView {
    pub pid: u32,
    pub cpu_percent: Option<f64>,
    pub private_bytes: Option<u64>,
    pub active_requests: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WasEventView {
    pub id: u32,
    pub level: String,
    pub date: String,
    pub pid: Option<u32>,
    pub message: String,
}

impl Diagnostics {
    /// One line for people.
    pub fn line(&self) -> String {
        let mut parts = Vec::new();
        if self.rapid_fail {
            parts.push("STOPPED BY RAPID-FAIL PROTECTION (WAS event 5002)".to_string());
        }
        let longest = self.requests.first().map(|r| {
            format!(
                " (longest {} {} {})",
                r.elapsed_ms
                    .map_or("?".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0)),
                r.verb,
                r.url
            )
        });
        parts.push(format!(
            "{} running request(s){}",
            self.requests.len(),
            longest.unwrap_or_default()
        ));
        for w in &self.workers {
            parts.push(format!(
                "worker {}: {} CPU, {} private, {} active",
                w.pid,
                w.cpu_percent.map_or("?".into(), |c| format!("{c:.1}%")),
                w.private_bytes
                    .map_or("?".into(), |b| format!("{} MB", b / (1024 * 1024))),
                w.active_requests.map_or("?".into(), |a| a.to_string())
            ));
        }
        if let Some(q) = self.queue {
            parts.push(format!("queue {q}"));
        }
        if let Some(s) = &self.state {
            parts.push(format!("state {s}"));
        }
        if !self.events.is_empty() {
            parts.push(format!(
                "WAS events {}",
                self.events
                    .iter()
                    .map(|e| e.id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        format!("diagnostics of {}: {}", self.pool, parts.join("; "))
    }
}

/// A node's traffic; `unavailable` says why there is none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficView {
    pub sites: Vec<SiteTrafficView>,
    pub unavailable: Option<String>,
    /// The HTTP.sys error log: lines the agent could not read since it
    /// started, and why it cannot follow the log now.
    pub httperr_malformed: u64,
    pub httperr_problem: Option<String>,
    /// Requests running now, those running longer than `hung_after_s`,
    /// and the oldest's age; `None` where the agent cannot say.
    pub in_flight: Option<u64>,
    pub hung: Option<u64>,
    pub hung_after_s: u32,
    pub oldest_ms: Option<u64>,
}

/// What to ask of a load balancer member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbMemberCall {
    pub op_id: String,
    pub kind: farm_proto::domain::LbMemberKind,
    pub action: farm_proto::domain::LbMemberAction,
    pub farm: String,
    pub server: String,
    /// arr drain: how (`None`: the agent's default, GracefulStop).
    pub mode: Option<farm_proto::domain::ArrDrainState>,
    /// nlb drain: Stop-NlbClusterNode's -Timeout.
    pub drain_timeout: Duration,
}

/// A load balancer member as the agent's tools report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbMemberView {
    pub state: String,
    pub healthy: bool,
    /// Requests in flight through the LB; `None` when it does not count.
    pub current_requests: Option<u64>,
    pub detail: String,
}
