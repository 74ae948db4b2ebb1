//! The boundary between the agent and IIS: one trait, two implementations
//! (the Windows command backend and the simulator).
//!
//! The trait holds only *primitive* operations, the ones `appcmd`,
//! `iisreset`, `sc` and `taskkill` offer. The procedures built from them (a
//! verified recycle, the safe reset) live in [`crate::ops`] and are shared, so
//! the simulator cannot drift from what the real backend is asked to do.
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

pub use farm_proto::domain::{PoolState, ServiceState};

pub mod host;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub state: ServiceState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub pid: u32,
    pub started_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub name: String,
    pub state: PoolState,
    pub workers: Vec<WorkerInfo>,
    /// Why a stopped pool is stopped, when WAS said (rapid-fail
    /// protection: event 5002).
    pub stopped_by: Option<String>,
}

impl PoolStatus {
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteStatus {
    pub name: String,
    pub bindings: Vec<String>,
    pub state: String,
    pub pool: String,
    /// The root virtual directory's physical path, variables expanded
    /// (empty when unknown).
    pub physical_path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IisStatus {
    pub services: Vec<ServiceStatus>,
    pub pools: Vec<PoolStatus>,
    pub sites: Vec<SiteStatus>,
}

impl IisStatus {
    pub fn pool(&self, name: &str) -> Option<&PoolStatus> {
        self.pools
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    pub fn service(&self, name: &str) -> Option<ServiceState> {
        self.services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(name))
            .map(|s| s.state)
    }

    /// W3SVC and WAS both running: IIS can serve.
    pub fn iis_running(&self) -> bool {
        ["W3SVC", "WAS"]
            .iter()
            .all(|s| self.service(s) == Some(ServiceState::Running))
    }

    /// W3SVC and WAS both stopped (or not there at all).
    pub fn iis_stopped(&self) -> bool {
        ["W3SVC", "WAS"].iter().all(|s| {
            matches!(
                self.service(s),
                Some(ServiceState::Stopped | ServiceState::NotInstalled) | None
            )
        })
    }
}

/// Errors from IIS tools or the simulator.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum IisError {
    #[error("application pool `{0}` does not exist")]
    NoSuchPool(String),
    #[error("site `{0}` does not exist")]
    NoSuchSite(String),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("`{command}` failed (exit code {code}): {message}")]
    Command {
        command: String,
        code: i32,
        message: String,
    },
    #[error("`{command}` timed out after {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("could not parse the output of `{command}`: {detail}")]
    Parse { command: String, detail: String },
    #[error("{0}")]
    Other(String),
}

/// What `iisreset /stop /timeout:N` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    Stopped,
    /// The graceful stop did not finish in time or failed; IIS may be half
    /// stopped. The message is the tool's own text.
    Failed(String),
}

/// One IIS server, as the agent drives it. Implementations do one tool
/// invocation (or its simulated equivalent) per method.
#[async_trait]
pub trait Iis: Send + Sync + 'static {
    /// `sim` or `iis`.
    fn backend(&self) -> &'static str;
    async fn status(&self) -> Result<IisStatus, IisError>;
    /// Requests being served now; `None` when the node cannot tell.
    async fn in_flight(&self) -> Result<Option<u64>, IisError>;
    /// A live feed of the in-flight count, where the backend has one; the
    /// agent polls [`Iis::in_flight`] otherwise.
    fn in_flight_feed(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// Ticks whenever the state [`Iis::status`] reports may have changed,
    /// where the backend knows (the simulator); the procedures then wait
    /// on it instead of polling. The command backend has none: appcmd
    /// tells nothing until asked.
    fn state_feed(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// `appcmd recycle apppool /apppool.name:X`.
    async fn recycle_pool(&self, pool: &str) -> Result<(), IisError>;
    /// `appcmd start apppool /apppool.name:X`.
    async fn start_pool(&self, pool: &str) -> Result<(), IisError>;
    /// `iisreset /stop /timeout:N`.
    async fn stop_iis(&self, timeout: Duration) -> Result<StopOutcome, IisError>;
    /// `taskkill /F /FI "SERVICES eq was"`: kill the host of WAS.
    async fn force_stop_iis(&self) -> Result<(), IisError>;
    /// `iisreset /start`.
    async fn start_iis(&self) -> Result<(), IisError>;
    /// `appcmd list vdir /app.name:SITE/`: the physical path of the site's
    /// root virtual directory, variables (`%SystemDrive%`) expanded.
    async fn site_path(&self, site: &str) -> Result<String, IisError>;
    /// `appcmd set vdir SITE/ /physicalPath:PATH`: new requests are served
    /// from `path` (IIS picks the change up; the pool is recycled after).
    async fn set_site_path(&self, site: &str, path: &str) -> Result<(), IisError>;
    /// Whether the load balancer's health-check file is in place.
    async fn health_file_present(&self) -> Result<bool, IisError>;
    /// Put the health-check file in place (`true`) or rename it away.
    async fn set_health_file(&self, present: bool) -> Result<(), IisError>;
    /// Where the sites' traffic records are, where the backend knows
    /// (`None`: it cannot say yet).
    fn traffic_logs(&self) -> Option<TrafficLogs> {
        None
    }
    /// Writes out what the server still buffers of its logs (HTTP.sys),
    /// so a window read next is complete. Best effort.
    async fn flush_logs(&self) {}
    /// How long each request running now has run (ms), where the backend
    /// can say (`appcmd list requests`; the simulator's own); `None`
    /// where it cannot (no Request Monitor feature).
    async fn running(&self) -> Result<Option<Vec<u64>>, IisError> {
        Ok(None)
    }
    /// Every pool's gauges now (one reading of the counters). Empty
    /// where the backend has none.
    async fn pool_gauges(&self) -> Result<Vec<PoolGauges>, IisError> {
        Ok(Vec::new())
    }
    /// What a sick pool is doing, captured before it is recycled: the
    /// requests running in it for at least `min_elapsed_ms`, its workers'
    /// CPU and memory, its queue, its recent WAS events. Whatever cannot
    /// be read is named in `notes`, the rest still given.
    async fn diagnose(
        &self,
        pool: &str,
        _min_elapsed_ms: u64,
    ) -> Result<PoolDiagnostics, IisError> {
        Ok(PoolDiagnostics {
            pool: pool.to_string(),
            notes: vec![format!(
                "the {} backend cannot diagnose a pool",
                self.backend()
            )],
            ..PoolDiagnostics::default()
        })
    }
}

/// One request running in a pool now (`appcmd list requests`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningRequest {
    pub id: String,
    pub verb: String,
    pub url: String,
    pub elapsed_ms: Option<u64>,
    pub client: Option<String>,
    /// The pipeline stage and module it is in (newer IIS only).
    pub stage: Option<String>,
    pub module: Option<String>,
}

/// A pool's gauges of the moment, from the performance counters: what
/// the node's traffic window keeps beside the logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolGauges {
    pub pool: String,
    /// Requests waiting in the pool's HTTP.sys queue (`CurrentQueueSize`).
    pub queue: Option<u64>,
    /// Requests the queue turned away since it was made (a counter).
    pub rejected: Option<u64>,
    /// Requests its workers run now.
    pub active_requests: Option<u64>,
    /// Its workers' `% Processor Time` and private bytes, summed.
    pub cpu_percent: Option<f64>,
    pub private_bytes: Option<u64>,
}

/// A worker process of a pool, from the performance counters.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerFigures {
    pub pid: u32,
    /// `% Processor Time` (may exceed 100 on several cores).
    pub cpu_percent: Option<f64>,
    pub private_bytes: Option<u64>,
    pub active_requests: Option<u64>,
}

/// A WAS event about a pool (System log, `Microsoft-Windows-WAS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasEvent {
    pub id: u32,
    pub level: String,
    /// As the log prints it (local time or UTC, 3 or 7 decimals).
    pub date: String,
    pub pool: Option<String>,
    pub pid: Option<u32>,
    pub message: String,
}

impl WasEvent {
    /// 5002: WAS disabled the pool after a series of worker failures.
    pub fn rapid_fail(&self) -> bool {
        self.id == 5002
    }
}

/// What a pool was doing when it was captured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolDiagnostics {
    pub pool: String,
    pub requests: Vec<RunningRequest>,
    pub workers: Vec<WorkerFigures>,
    /// `HTTP Service Request Queues(<pool>)\CurrentQueueSize`.
    pub queue: Option<u64>,
    /// `...\RejectedRequests` (since the queue was made).
    pub rejected: Option<u64>,
    /// `APP_POOL_WAS(<pool>)\Current Application Pool State`, in words.
    pub state: Option<String>,
    /// Newest first.
    pub events: Vec<WasEvent>,
    pub notes: Vec<String>,
}

/// Where a node's traffic records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficLogs {
    pub sites: Vec<SiteLogs>,
    /// The HTTP.sys error log's folder (`HTTPERR`).
    pub httperr_dir: Option<std::path::PathBuf>,
    /// URL paths that are health checks, not users (the LB's file).
    pub check_paths: Vec<String>,
}

/// One site's W3C log folder (`...\W3SVC<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteLogs {
    pub site: String,
    /// The IIS site id (`s-siteid` in the error log).
    pub id: u32,
    pub pool: String,
    pub w3c_dir: std::path::PathBuf,
    /// The site's `logFile/@period` as IIS says it (`Daily`, `Hourly`,
    /// `MaxSize`, ...), when known: which file names it writes.
    pub period: Option<String>,
}
