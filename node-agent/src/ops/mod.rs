//! The verified procedures the agent runs, built from [`Iis`] primitives.
//!
//! Both backends go through these, so a recycle or reset means the same
//! sequence of tool calls on a real server and in the simulator.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::iis::{Iis, IisStatus, PoolState, ServiceStatus};

mod recycle;
mod reset;

pub use recycle::{recycle, resolve_pools};
pub use reset::reset;

pub use farm_proto::domain::ProcedureStep;

/// A progress event: the step and a line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub step: ProcedureStep,
    pub message: String,
}

/// Where progress goes; a closed receiver (client gone) is not an error:
/// the operation must finish either way, never stop half-way.
#[derive(Clone)]
pub struct ProgressSink(Option<mpsc::UnboundedSender<Progress>>);

impl ProgressSink {
    pub fn new(tx: mpsc::UnboundedSender<Progress>) -> Self {
        Self(Some(tx))
    }

    pub fn discard() -> Self {
        Self(None)
    }

    pub fn send(&self, step: ProcedureStep, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(step = step.as_str(), "{message}");
        if let Some(tx) = &self.0 {
            let _ = tx.send(Progress { step, message });
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolOutcome {
    pub name: String,
    pub pids_before: Vec<u32>,
    pub pids_after: Vec<u32>,
    pub state_after: PoolState,
    pub had_no_worker: bool,
}

/// What an operation did and what was verified afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResult {
    pub success: bool,
    pub error: Option<String>,
    pub failed_step: Option<ProcedureStep>,
    pub pools: Vec<PoolOutcome>,
    pub services: Vec<ServiceStatus>,
    pub duration: Duration,
    /// InstallUpdates: each update's result, and whether the server must
    /// restart.
    pub updates: Vec<farm_iis::host::UpdateResult>,
    pub reboot_required: bool,
}

/// Timing knobs of the procedures.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    /// How long new workers / services may take to show up (IIS's
    /// startupTimeLimit is 90 s).
    pub verify_timeout: Duration,
    /// `iisreset /start` attempts before the reset is reported failed.
    pub start_attempts: u32,
    pub start_retry_delay: Duration,
    /// How often to look at IIS while verifying.
    pub poll_interval: Duration,
    /// After a reset, how long WAS gets to bring back the pools it starts
    /// itself before the agent starts the ones it did not (autoStart off).
    pub autostart_grace: Duration,
    /// `iisreset /stop /timeout:N` when the request does not say (the
    /// agent config's `timeouts.stop`).
    pub stop_timeout: Duration,
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            verify_timeout: Duration::from_secs(90),
            start_attempts: 3,
            start_retry_delay: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
            autostart_grace: Duration::from_secs(15),
            stop_timeout: Duration::from_secs(60),
        }
    }
}

struct Run {
    started: Instant,
    pools: Vec<PoolOutcome>,
}

impl Run {
    /// Starts the clock and reads IIS as it is before anything is done.
    async fn start(iis: &dyn Iis) -> Result<(Run, IisStatus), OpResult> {
        let run = Run {
            started: Instant::now(),
            pools: Vec::new(),
        };
        match iis.status().await {
            Ok(s) => Ok((run, s)),
            Err(e) => Err(run.fail(
                ProcedureStep::Status,
                format!("could not read IIS state: {e}"),
                vec![],
            )),
        }
    }

    fn fail(
        self,
        step: ProcedureStep,
        error: impl Into<String>,
        services: Vec<ServiceStatus>,
    ) -> OpResult {
        OpResult {
            success: false,
            error: Some(error.into()),
            failed_step: Some(step),
            pools: self.pools,
            services,
            duration: self.started.elapsed(),
            updates: Vec::new(),
            reboot_required: false,
        }
    }

    fn succeed(self, services: Vec<ServiceStatus>) -> OpResult {
        OpResult {
            success: true,
            error: None,
            failed_step: None,
            pools: self.pools,
            services,
            duration: self.started.elapsed(),
            updates: Vec::new(),
            reboot_required: false,
        }
    }
}

/// Looks at IIS until `cond` holds or `within` passes; returns the last
/// state seen either way. Looks again when the backend says its state
/// changed, and at least every poll interval.
async fn wait_for(
    iis: &dyn Iis,
    cfg: &OpsConfig,
    within: Duration,
    cond: impl Fn(&IisStatus) -> bool,
) -> Result<IisStatus, IisStatus> {
    let deadline = Instant::now() + within;
    let mut last = IisStatus::default();
    let mut feed = iis.state_feed();
    loop {
        if let Some(f) = &mut feed {
            f.mark_unchanged();
        }
        if let Ok(s) = iis.status().await {
            if cond(&s) {
                return Ok(s);
            }
            last = s;
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        match &mut feed {
            Some(f) => {
                let _ = tokio::time::timeout(cfg.poll_interval, f.changed()).await;
            }
            None => tokio::time::sleep(cfg.poll_interval).await,
        }
    }
}

fn services_line(s: &IisStatus) -> String {
    s.services
        .iter()
        .map(|x| format!("{} {:?}", x.name, x.state))
        .collect::<Vec<_>>()
        .join(", ")
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn pid_list(pids: &[u32]) -> String {
    if pids.is_empty() {
        "none".into()
    } else {
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}
