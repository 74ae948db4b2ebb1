//! The safe IIS reset.
use super::ProcedureStep;
use std::time::Duration;

use super::{
    one_line, services_line, wait_for, OpResult, OpsConfig, PoolOutcome, ProgressSink, Run,
};
use crate::iis::{Iis, IisStatus, PoolState, StopOutcome};

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
        ProcedureStep::Stop,
        format!("iisreset /stop /timeout:{}", stop_timeout.as_secs().max(1)),
    );
    let stop = iis.stop_iis(stop_timeout).await;
    let forced = match stop {
        Ok(StopOutcome::Stopped) => false,
        Ok(StopOutcome::Failed(msg)) => {
            progress.send(
                ProcedureStep::Stop,
                format!("graceful stop failed: {}", one_line(&msg)),
            );
            true
        }
        Err(e) => {
            progress.send(ProcedureStep::Stop, format!("graceful stop failed: {e}"));
            true
        }
    };
    if forced {
        progress.send(ProcedureStep::ForceStop, "terminating the WAS host process");
        if let Err(e) = iis.force_stop_iis().await {
            let services = iis.status().await.map(|s| s.services).unwrap_or_default();
            return run.fail(
                ProcedureStep::ForceStop,
                format!("could not terminate the WAS host: {e}; IIS may be half stopped"),
                services,
            );
        }
        match wait_for(iis, cfg, cfg.verify_timeout, |s| s.iis_stopped()).await {
            Ok(_) => progress.send(ProcedureStep::ForceStop, "W3SVC and WAS are stopped"),
            Err(s) => {
                return run.fail(
                    ProcedureStep::ForceStop,
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
            ProcedureStep::Start,
            format!(
                "iisreset /start (attempt {attempt} of {})",
                cfg.start_attempts
            ),
        );
        match iis.start_iis().await {
            Ok(()) => break,
            Err(e) if attempt < cfg.start_attempts => {
                progress.send(
                    ProcedureStep::Start,
                    format!("attempt {attempt} failed: {e}"),
                );
                attempt += 1;
                tokio::time::sleep(cfg.start_retry_delay).await;
            }
            Err(e) => {
                let services = iis.status().await.map(|s| s.services).unwrap_or_default();
                return run.fail(
                    ProcedureStep::Start,
                    format!(
                        "IIS could not be started after {attempt} attempts and is STOPPED on this node: {e}"
                    ),
                    services,
                );
            }
        }
    }

    progress.send(ProcedureStep::Verify, "waiting for W3SVC and WAS to run");
    if let Err(s) = wait_for(iis, cfg, cfg.verify_timeout, |s| s.iis_running()).await {
        return run.fail(
            ProcedureStep::Verify,
            format!(
                "IIS services not running after start ({})",
                services_line(&s)
            ),
            s.services,
        );
    }
    let all_started = |s: &IisStatus| {
        started_pools
            .iter()
            .all(|p| s.pool(p).is_some_and(|p| p.state == PoolState::Started))
    };
    let last = match wait_for(
        iis,
        cfg,
        cfg.autostart_grace.min(cfg.verify_timeout),
        all_started,
    )
    .await
    {
        Ok(s) => s,
        Err(s) => {
            // A pool that WAS did not bring back (autoStart off): start it,
            // since it was serving before the reset.
            for p in &started_pools {
                if s.pool(p).is_some_and(|p| p.state != PoolState::Started) {
                    progress.send(
                        ProcedureStep::Verify,
                        format!("starting pool {p}, which was started before the reset"),
                    );
                    if let Err(e) = iis.start_pool(p).await {
                        return run.fail(
                            ProcedureStep::Verify,
                            format!("pool {p} was started before the reset and could not be started again: {e}"),
                            s.services,
                        );
                    }
                }
            }
            match wait_for(iis, cfg, cfg.verify_timeout, all_started).await {
                Ok(s) => s,
                Err(s) => {
                    let down: Vec<&str> = started_pools
                        .iter()
                        .filter(|p| !s.pool(p).is_some_and(|p| p.state == PoolState::Started))
                        .map(String::as_str)
                        .collect();
                    return run.fail(
                        ProcedureStep::Verify,
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
        ProcedureStep::Verify,
        format!(
            "{}; {} pool(s) started",
            services_line(&last),
            started_pools.len()
        ),
    );
    run.succeed(last.services)
}
