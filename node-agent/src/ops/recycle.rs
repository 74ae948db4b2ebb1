//! The verified recycle: every pool that had a worker runs new ones.

use super::ProcedureStep;
use super::{pid_list, wait_for, OpResult, OpsConfig, PoolOutcome, ProgressSink, Run};
use crate::iis::{Iis, IisStatus, PoolState};

farm_proto::message_error! {
    /// Pools asked for that the node does not have.
    PoolsError
}

/// Pools named in the request, or every pool that serves a site.
pub fn resolve_pools(status: &IisStatus, requested: &[String]) -> Result<Vec<String>, PoolsError> {
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
        Err(PoolsError(format!(
            "no such application pool(s): {}",
            missing.join(", ")
        )))
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
        Err(e) => return run.fail(ProcedureStep::Resolve, e, before.services),
    };
    if !before.iis_running() {
        return run.fail(
            ProcedureStep::Recycle,
            "IIS (W3SVC/WAS) is not running",
            before.services,
        );
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
            ProcedureStep::Recycle,
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
            progress.send(
                ProcedureStep::Start,
                format!("starting stopped pool {name}"),
            );
            if let Err(e) = iis.start_pool(name).await {
                return run.fail(
                    ProcedureStep::Start,
                    format!("could not start pool {name}: {e}"),
                    before.services,
                );
            }
        } else {
            progress.send(
                ProcedureStep::Recycle,
                format!("recycling {name} (workers {})", pid_list(&pids_before)),
            );
            if let Err(e) = iis.recycle_pool(name).await {
                return run.fail(
                    ProcedureStep::Recycle,
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

    progress.send(ProcedureStep::Verify, "waiting for new worker processes");
    let verified = wait_for(iis, cfg, cfg.verify_timeout, |s| {
        not_replaced(&run.pools, s).is_empty()
    })
    .await;
    let (Ok(last) | Err(last)) = &verified;
    let pending = not_replaced(&run.pools, last);
    for out in &mut run.pools {
        let p = last.pool(&out.name);
        out.state_after = p.map(|p| p.state).unwrap_or(PoolState::Unknown);
        out.pids_after = p.map(|p| p.pids()).unwrap_or_default();
    }
    let services = last.services.clone();
    if verified.is_err() {
        return run.fail(
            ProcedureStep::Verify,
            format!(
                "recycle not confirmed after {:?}: {}",
                cfg.verify_timeout,
                pending.join("; ")
            ),
            services,
        );
    }
    for out in &run.pools {
        if out.had_no_worker {
            progress.send(
                ProcedureStep::Verify,
                format!("{} had no worker running; nothing to replace", out.name),
            );
        } else {
            progress.send(
                ProcedureStep::Verify,
                format!(
                    "{} workers {} -> {}",
                    out.name,
                    pid_list(&out.pids_before),
                    pid_list(&out.pids_after)
                ),
            );
        }
    }
    run.succeed(services)
}

/// The pools of `pools` that `now` does not show Started with only new
/// workers (a pool that had none only has to be Started), described.
fn not_replaced(pools: &[PoolOutcome], now: &IisStatus) -> Vec<String> {
    pools
        .iter()
        .filter_map(|out| {
            let p = now.pool(&out.name);
            let state = p.map(|p| p.state).unwrap_or(PoolState::Unknown);
            let pids = p.map(|p| p.pids()).unwrap_or_default();
            let replaced = out.had_no_worker
                || (!pids.is_empty() && pids.iter().all(|pid| !out.pids_before.contains(pid)));
            (state != PoolState::Started || !replaced)
                .then(|| format!("{} is {state:?} with workers {}", out.name, pid_list(&pids)))
        })
        .collect()
}
