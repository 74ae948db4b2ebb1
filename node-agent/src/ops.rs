//! The verified procedures the agent runs, built from [`Iis`] primitives.
//!
//! Both backends go through these, so a recycle or reset means the same
//! sequence of tool calls on a real server and in the simulator.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::iis::{Iis, IisStatus, PoolState, ServiceStatus, StopOutcome};

/// A progress event: the step and a line for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub step: &'static str,
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

    pub fn send(&self, step: &'static str, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(step, "{message}");
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
    pub failed_step: Option<&'static str>,
    pub pools: Vec<PoolOutcome>,
    pub services: Vec<ServiceStatus>,
    pub duration: Duration,
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
}

impl Default for OpsConfig {
    fn default() -> Self {
        Self {
            verify_timeout: Duration::from_secs(90),
            start_attempts: 3,
            start_retry_delay: Duration::from_secs(2),
            poll_interval: Duration::from_millis(100),
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
            Err(e) => Err(run.fail("status", format!("could not read IIS state: {e}"), vec![])),
        }
    }

    fn fail(
        self,
        step: &'static str,
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
        }
    }
}

/// Pools named in the request, or every pool that serves a site.
pub fn resolve_pools(status: &IisStatus, requested: &[String]) -> Result<Vec<String>, String> {
    if requested.is_empty() {
        let mut pools: Vec<String> = Vec::new();
        for s in &status.sites {
            if !s.pool.is_empty() && !pools.iter().any(|p| p.eq_ignore_ascii_case(&s.pool)) {
                pools.push(s.pool.clone());
            }
        }
        if pools.is_empty() {
            pools = status.pools.iter().map(|p| p.name.clone()).collect();
        }
        return Ok(pools);
    }
    let missing: Vec<&str> = requested
        .iter()
        .filter(|r| status.pool(r).is_none())
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        Ok(requested
            .iter()
            .map(|r| {
                status
                    .pool(r)
                    .map(|p| p.name.clone())
                    .unwrap_or_else(|| r.clone())
            })
            .collect())
    } else {
        Err(format!(
            "no such application pool(s): {}",
            missing.join(", ")
        ))
    }
}

/// Recycles `pools` and verifies that every pool that had a worker now runs
/// new worker processes. A stopped pool fails the operation before anything
/// is touched, unless `start_stopped` is set.
pub async fn recycle(
    iis: &dyn Iis,
    requested: &[String],
    start_stopped: bool,
    cfg: &OpsConfig,
    progress: &ProgressSink,
) -> OpResult {
    let (mut run, before) = match Run::start(iis).await {
        Ok(x) => x,
        Err(failed) => return failed,
    };
    let pools = match resolve_pools(&before, requested) {
        Ok(p) => p,
        Err(e) => return run.fail("resolve", e, before.services),
    };
    if !before.iis_running() {
        return run.fail("recycle", "IIS (W3SVC/WAS) is not running", before.services);
    }
    let stopped: Vec<&str> = pools
        .iter()
        .filter(|p| {
            before
                .pool(p)
                .is_some_and(|s| matches!(s.state, PoolState::Stopped | PoolState::Stopping))
        })
        .map(String::as_str)
        .collect();
    if !stopped.is_empty() && !start_stopped {
        return run.fail(
            "recycle",
            format!(
                "application pool(s) {} are stopped; a recycle would not start them (ask to start stopped pools)",
                stopped.join(", ")
            ),
            before.services,
        );
    }
    for name in &pools {
        let pool = before.pool(name).cloned();
        let pids_before = pool.as_ref().map(|p| p.pids()).unwrap_or_default();
        if stopped.contains(&name.as_str()) {
            progress.send("start", format!("starting stopped pool {name}"));
            if let Err(e) = iis.start_pool(name).await {
                return run.fail(
                    "start",
                    format!("could not start pool {name}: {e}"),
                    before.services,
                );
            }
        } else {
            progress.send(
                "recycle",
                format!("recycling {name} (workers {})", pid_list(&pids_before)),
            );
            if let Err(e) = iis.recycle_pool(name).await {
                return run.fail(
                    "recycle",
                    format!("could not recycle pool {name}: {e}"),
                    before.services,
                );
            }
        }
        run.pools.push(PoolOutcome {
            name: name.clone(),
            had_no_worker: pids_before.is_empty(),
            pids_before,
            pids_after: Vec::new(),
            state_after: PoolState::Unknown,
        });
    }

    progress.send("verify", "waiting for new worker processes");
    let deadline = Instant::now() + cfg.verify_timeout;
    loop {
        let now = match iis.status().await {
            Ok(s) => s,
            Err(e) => {
                return run.fail(
                    "verify",
                    format!("could not read IIS state: {e}"),
                    before.services,
                )
            }
        };
        let mut pending = Vec::new();
        for out in &mut run.pools {
            let p = now.pool(&out.name);
            out.state_after = p.map(|p| p.state).unwrap_or(PoolState::Unknown);
            out.pids_after = p.map(|p| p.pids()).unwrap_or_default();
            let replaced = out.had_no_worker
                || (!out.pids_after.is_empty()
                    && out
                        .pids_after
                        .iter()
                        .all(|pid| !out.pids_before.contains(pid)));
            if out.state_after != PoolState::Started || !replaced {
                pending.push(format!(
                    "{} is {:?} with workers {}",
                    out.name,
                    out.state_after,
                    pid_list(&out.pids_after)
                ));
            }
        }
        if pending.is_empty() {
            for out in &run.pools {
                if out.had_no_worker {
                    progress.send(
                        "verify",
                        format!("{} had no worker running; nothing to replace", out.name),
                    );
                } else {
                    progress.send(
                        "verify",
                        format!(
                            "{} workers {} -> {}",
                            out.name,
                            pid_list(&out.pids_before),
                            pid_list(&out.pids_after)
                        ),
                    );
                }
            }
            return run.succeed(now.services);
        }
        if Instant::now() >= deadline {
            return run.fail(
                "verify",
                format!(
                    "recycle not confirmed after {:?}: {}",
                    cfg.verify_timeout,
                    pending.join("; ")
                ),
                now.services,
            );
        }
        tokio::time::sleep(cfg.poll_interval).await;
    }
}

/// The safe IIS reset: stop with a timeout, force-terminate WAS if the stop
/// did not complete, start (retried), then verify that W3SVC and WAS run and
/// that every pool that was started before is started again. Never reports
/// success with IIS stopped; on failure names the step.
pub async fn reset(
    iis: &dyn Iis,
    stop_timeout: Duration,
    cfg: &OpsConfig,
    progress: &ProgressSink,
) -> OpResult {
    let (mut run, before) = match Run::start(iis).await {
        Ok(x) => x,
        Err(failed) => return failed,
    };
    let started_pools: Vec<String> = before
        .pools
        .iter()
        .filter(|p| p.state == PoolState::Started)
        .map(|p| p.name.clone())
        .collect();
    run.pools = before
        .pools
        .iter()
        .filter(|p| p.state == PoolState::Started)
        .map(|p| PoolOutcome {
            name: p.name.clone(),
            pids_before: p.pids(),
            pids_after: Vec::new(),
            state_after: PoolState::Unknown,
            had_no_worker: p.workers.is_empty(),
        })
        .collect();

    progress.send(
        "stop",
        format!("iisreset /stop /timeout:{}", stop_timeout.as_secs().max(1)),
    );
    let stop = iis.stop_iis(stop_timeout).await;
    let forced = match stop {
        Ok(StopOutcome::Stopped) => false,
        Ok(StopOutcome::Failed(msg)) => {
            progress.send("stop", format!("graceful stop failed: {}", one_line(&msg)));
            true
        }
        Err(e) => {
            progress.send("stop", format!("graceful stop failed: {e}"));
            true
        }
    };
    if forced {
        progress.send("force-stop", "terminating the WAS host process");
        if let Err(e) = iis.force_stop_iis().await {
            let services = iis.status().await.map(|s| s.services).unwrap_or_default();
            return run.fail(
                "force-stop",
                format!("could not terminate the WAS host: {e}; IIS may be half stopped"),
                services,
            );
        }
        match wait_for(iis, cfg, |s| s.iis_stopped()).await {
            Ok(_) => progress.send("force-stop", "W3SVC and WAS are stopped"),
            Err(s) => {
                return run.fail(
                    "force-stop",
                    format!(
                        "W3SVC/WAS still not stopped after terminating the WAS host ({})",
                        services_line(&s)
                    ),
                    s.services,
                )
            }
        }
    }

    let mut attempt = 1;
    loop {
        progress.send(
            "start",
            format!(
                "iisreset /start (attempt {attempt} of {})",
                cfg.start_attempts
            ),
        );
        match iis.start_iis().await {
            Ok(()) => break,
            Err(e) if attempt < cfg.start_attempts => {
                progress.send("start", format!("attempt {attempt} failed: {e}"));
                attempt += 1;
                tokio::time::sleep(cfg.start_retry_delay).await;
            }
            Err(e) => {
                let services = iis.status().await.map(|s| s.services).unwrap_or_default();
                return run.fail(
                    "start",
                    format!(
                        "IIS could not be started after {attempt} attempts and is STOPPED on this node: {e}"
                    ),
                    services,
                );
            }
        }
    }

    progress.send("verify", "waiting for W3SVC and WAS to run");
    if let Err(s) = wait_for(iis, cfg, |s| s.iis_running()).await {
        return run.fail(
            "verify",
            format!(
                "IIS services not running after start ({})",
                services_line(&s)
            ),
            s.services,
        );
    }
    let mut started_again = Vec::new();
    let last = match wait_for(iis, cfg, |s| {
        started_pools
            .iter()
            .all(|p| s.pool(p).is_some_and(|p| p.state == PoolState::Started))
    })
    .await
    {
        Ok(s) => s,
        Err(s) => {
            // A pool that WAS did not bring back (autoStart off): start it,
            // since it was serving before the reset.
            for p in &started_pools {
                if s.pool(p).is_some_and(|p| p.state != PoolState::Started) {
                    progress.send(
                        "verify",
                        format!("starting pool {p}, which was started before the reset"),
                    );
                    if let Err(e) = iis.start_pool(p).await {
                        return run.fail("verify", format!("pool {p} was started before the reset and could not be started again: {e}"), s.services);
                    }
                    started_again.push(p.clone());
                }
            }
            match wait_for(iis, cfg, |s| {
                started_pools
                    .iter()
                    .all(|p| s.pool(p).is_some_and(|p| p.state == PoolState::Started))
            })
            .await
            {
                Ok(s) => s,
                Err(s) => {
                    let down: Vec<&str> = started_pools
                        .iter()
                        .filter(|p| !s.pool(p).is_some_and(|p| p.state == PoolState::Started))
                        .map(String::as_str)
                        .collect();
                    return run.fail(
                        "verify",
                        format!("pool(s) {} not started after the reset", down.join(", ")),
                        s.services,
                    );
                }
            }
        }
    };
    for out in &mut run.pools {
        if let Some(p) = last.pool(&out.name) {
            out.state_after = p.state;
            out.pids_after = p.pids();
        }
    }
    progress.send(
        "verify",
        format!(
            "{}; {} pool(s) started",
            services_line(&last),
            started_pools.len()
        ),
    );
    run.succeed(last.services)
}

/// Polls IIS until `cond` holds or the verify timeout passes; returns the
/// last state seen either way.
async fn wait_for(
    iis: &dyn Iis,
    cfg: &OpsConfig,
    cond: impl Fn(&IisStatus) -> bool,
) -> Result<IisStatus, IisStatus> {
    let deadline = Instant::now() + cfg.verify_timeout;
    let mut last = IisStatus::default();
    loop {
        if let Ok(s) = iis.status().await {
            if cond(&s) {
                return Ok(s);
            }
            last = s;
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(cfg.poll_interval).await;
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
