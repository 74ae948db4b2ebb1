//! Continuing a run whose controller stopped (crash, SIGKILL, second
//! Ctrl-C). The run contract comes from the journal header, never from the
//! inventory, so a resumed run keeps the limits of the run it continues.
//! The live farm decides the rest: nodes outside the run that are out of
//! rotation count against capacity, failed nodes still out stay counted,
//! nodes caught mid-way are finished first, and no node starts outside the
//! run's window.
use std::collections::HashMap;
use std::path::Path;

use farm_proto::domain::Phase;

use crate::exit::CommandError;
use crate::farm::{Farm, Transport};
use crate::journal::{self, LoadedRun};
use crate::observe;
use crate::preflight;
use crate::report::{RunOutcome, RunReport};
use crate::rollout::engine::Run;
use crate::rollout::reconcile::ResumePoint;
use crate::store::Store;

use super::{RunEnv, RunSettings};

/// Resumes `loaded`, with `inventory` instead of the one the run started
/// from if given (it may change addresses and TLS only).
pub async fn resume(
    loaded: LoadedRun,
    inventory: Option<&Path>,
    transport: Transport,
    env: &RunEnv<'_>,
) -> Result<RunReport, CommandError> {
    let run_id = loaded.run_id().to_string();
    if let Some(pid) = journal::still_running(&loaded) {
        return Err(CommandError::refused(format!(
            "run {run_id} is still running here (farmctl process {pid}); stop it first (Ctrl-C) — \
             two controllers must not drive one run"
        )));
    }
    if let Some(end) = &loaded.end {
        let rolled_back = loaded
            .verdict
            .as_ref()
            .is_some_and(|v| v.action == crate::journal::VerdictAction::RollBack)
            && loaded.rolled_back == Some(true);
        if rolled_back {
            return Err(CommandError::bad_input(format!(
                "run {run_id} ended: its canary analysis rolled the release back ({}); nothing to resume — a new deploy starts over",
                loaded.verdict.as_ref().map_or("", |v| v.reason.as_str())
            )));
        }
        if end.outcome == RunOutcome::Succeeded {
            return Err(CommandError::bad_input(format!(
                "run {run_id} already ended ({}); nothing to resume",
                loaded.outcome()
            )));
        }
        // Halted (a failed node, the operator's stop): it goes on from
        // where it stopped; its failed nodes need a word from the operator.
        let failed: Vec<&str> = loaded
            .last
            .iter()
            .filter(|(_, r)| r.phase == Phase::Failed)
            .map(|(n, _)| n.as_str())
            .collect();
        if !failed.is_empty() && env.failed == super::FailedNodes::Unsaid {
            return Err(CommandError::bad_input(format!(
                "run {run_id} {} with {} failed: say what to do with {}: \
                 `farmctl resume {run_id} --retry-failed` does {} again, \
                 `farmctl resume {run_id} --skip-failed` leaves {} as {} and goes on with the rest",
                loaded.outcome(),
                failed.join(", "),
                if failed.len() == 1 { "it" } else { "them" },
                if failed.len() == 1 { "it" } else { "them" },
                if failed.len() == 1 { "it" } else { "them" },
                if failed.len() == 1 {
                    "it is"
                } else {
                    "they are"
                },
            )));
        }
    }
    let Some(settings) = loaded.header.settings.clone() else {
        return Err(CommandError::bad_input(format!(
            "{}: written by an older farmctl that did not record the run's limits, so it cannot \
             be resumed safely; look at the farm with `farmctl status` and start a new run",
            loaded.path.display()
        )));
    };
    let inv_path = inventory.unwrap_or(&loaded.header.inventory);
    let inv = farm_inventory::load(inv_path)?;
    settings.check_same_farm(&inv).map_err(|e| {
        CommandError::bad_input(format!(
            "cannot resume run {run_id} with inventory {}: {e}",
            inv_path.display()
        ))
    })?;
    let farm = Farm::connect(inv, transport)?;
    resume_on(&farm, &loaded, &settings, env).await
}

/// Resumes `loaded` on a connected farm, with the run contract `settings`
/// from its header.
pub async fn resume_on(
    farm: &Farm,
    loaded: &LoadedRun,
    settings: &RunSettings,
    env: &RunEnv<'_>,
) -> Result<RunReport, CommandError> {
    let run_id = loaded.run_id().to_string();
    let op = settings.operation;
    let to_stage = settings.nodes.iter().any(|n| {
        matches!(
            loaded.phase_of(n),
            Phase::Pending | Phase::Staging | Phase::Staged
        )
    });
    if to_stage {
        super::deploy::package_unchanged(settings)?;
    }
    env.reporter.note(&format!(
        "resuming run {run_id} ({op}) from {} with its recorded limits (max_unavailable {}, min_healthy {})",
        loaded.path.display(),
        settings.max_unavailable,
        settings.min_healthy
    ));

    let members = observe::members(farm).await.map_err(|e| {
        CommandError::refused(format!(
            "cannot resume: load balancer: {e} (nothing was touched)"
        ))
    })?;
    let observed = observe::observe(farm, &members).await;
    let timeline = crate::timeline::Timeline::of(loaded);
    let mut points = HashMap::new();
    let (mut pending, mut handled) = (Vec::new(), Vec::new());
    let mut unreachable = Vec::new();
    let mut retried = Vec::new();
    for name in &settings.nodes {
        let i = farm.index_of(name).ok_or_else(|| {
            CommandError::bad_input(format!("node {name} of the run is not in the inventory"))
        })?;
        let mut phase = loaded.phase_of(name);
        let mut attempt = loaded.attempt(name);
        // A node caught in its restart (patch, reboot) may still be down:
        // its operation waits for it, bounded by patch.reboot_timeout.
        let restarting = settings.operation.restarts_server() && phase == Phase::Operating;
        if let (Err(e), false) = (&observed[i].view, restarting) {
            unreachable.push(format!("{name}: {e}"));
        }
        if phase == Phase::Failed && env.failed == super::FailedNodes::Retry {
            // From the start, under the next attempt's operation ids; it may
            // be out of rotation already, so preflight takes it as handled.
            phase = Phase::Pending;
            attempt += 1;
            retried.push(i);
            handled.push(i);
        } else if phase == Phase::Pending {
            pending.push(i);
        } else {
            handled.push(i);
        }
        points.insert(
            i,
            ResumePoint {
                phase,
                pids: loaded.pids.get(name).cloned(),
                pids_after: loaded.pids_after.get(name).cloned(),
                phase_ms: timeline
                    .nodes
                    .iter()
                    .find(|l| &l.name == name)
                    .map(|l| l.phase_ms.clone())
                    .unwrap_or_default(),
                detail: loaded.last.get(name).and_then(|r| r.detail.clone()),
                failed_step: loaded
                    .records
                    .iter()
                    .rev()
                    .filter(|r| &r.node == name)
                    .find_map(|r| r.failed_step.as_deref()?.parse().ok()),
                attempt,
                boot_before: (phase == Phase::Operating)
                    .then(|| loaded.boots_before.get(name).cloned())
                    .flatten(),
            },
        );
    }
    if !unreachable.is_empty() {
        return Err(CommandError::refused(format!(
            "cannot resume: {} (nothing was touched)",
            unreachable.join("; ")
        )));
    }
    // The farm lock first (etcd): of two hosts resuming, one gets it.
    let store = Store::open(
        env.state_store.as_deref(),
        Some(&farm.inventory),
        &env.state_dir,
    )
    .await?;
    // And on the journal directory: of two resumes here, one goes on.
    let _driving = store.lock_run(&run_id)?;
    let lock = store
        .lock(&farm.inventory.farm, &run_id, env.takeover)
        .await?;
    let leases = match crate::lease::acquire(
        farm,
        &run_id,
        &format!("farmctl resume of {op}"),
        settings.timeouts.lease_ttl,
    )
    .await
    {
        Ok(l) => l,
        Err(e) => {
            if let Some(l) = lock {
                l.release().await;
            }
            return Err(e);
        }
    };
    let result = async {
        // A fresh preflight: the nodes still to do must be fit, and every
        // node out of rotation that is not this run's doing counts.
        let pf = preflight::check(
            farm,
            &observed,
            &pending,
            &handled,
            &|n: &str| settings.pools_for(n).to_vec(),
            settings.diagnose,
        );
        if let Some(refused) = pf.refusal("cannot resume (nothing was touched)") {
            return Err(refused);
        }
        let drains = farm.lb.drains();
        let mut out_before = pf.already_out.len();
        let mut failed_out = 0;
        for &i in &handled {
            if observed[i].serving(drains) {
                continue;
            }
            if retried.contains(&i) {
                continue; // at work again: counted as such when it starts
            }
            match points[&i].phase {
                Phase::Done => {
                    env.reporter.note(&format!(
                        "{} was done but is out of rotation now; it counts against capacity",
                        farm.node(i).name
                    ));
                    out_before += 1;
                }
                Phase::Failed => {
                    if env.failed != super::FailedNodes::Skip {
                        failed_out += 1;
                    }
                    env.reporter.note(&format!(
                        "{} failed earlier and is out of rotation: `farmctl undrain -i {} {}` returns it once it is healthy",
                        farm.node(i).name,
                        loaded.header.inventory.display(),
                        farm.node(i).name
                    ));
                }
                _ => {} // mid-way: finished first, counted as at work
            }
        }
        for n in &pf.notes {
            env.reporter.note(n);
        }
        let window = env.window_guard_in(settings, &store).await?;
        if let Some(why) = window.as_ref().and_then(|w| w.refuse()) {
            env.reporter.note(&format!(
                "{why}: the nodes caught mid-way are finished, no other node is started"
            ));
        }
        let journal = store.reopen(loaded, lock.as_ref()).await.map_err(|e| {
            CommandError::failed(format!(
                "could not reopen the journal {}: {e}",
                loaded.path.display()
            ))
        })?;
        let resumed = crate::journal::Record::Resumed(crate::journal::ResumedRecord {
            t: crate::clock::now(),
            holder: crate::lease::holder(),
            pid: Some(std::process::id()),
        });
        journal.append(&resumed).await.map_err(|e| {
            CommandError::refused(format!(
                "could not write to the journal {}: {e} (nothing was touched)",
                loaded.path.display()
            ))
        })?;
        for &i in &retried {
            let name = &farm.node(i).name;
            let attempt = points[&i].attempt;
            env.reporter
                .note(&format!("{name} failed before: done again (attempt {attempt})"));
            journal
                .phase(
                    name,
                    Phase::Pending,
                    None,
                    Some(format!("{} attempt {attempt}", crate::journal::read::RETRY)),
                )
                .await
                .map_err(|e| {
                    CommandError::refused(format!(
                        "could not write to the journal {}: {e} (nothing was touched)",
                        loaded.path.display()
                    ))
                })?;
        }
        let notifier = crate::notify::Notifier::start(&farm.inventory, env.reporter);
        let reporter = crate::notify::Notified {
            inner: env.reporter,
            notifier: notifier.as_ref(),
        };
        let mut run = Run::new(&run_id, farm, settings, &reporter, env.operator)
            .map_err(CommandError::bad_input)?
            .journal(&journal)
            .window(window)
            .out_before(out_before)
            .resuming(points, failed_out)
            .begun_at(&loaded.header.started_at)
            .failures_accepted(env.failed == super::FailedNodes::Skip)
            .analysis(crate::rollout::engine::AnalysisState::from_verdict(
                loaded.verdict.as_ref(),
            ));
        let (stop, stop_reason) = env.stop_with_lock(lock.as_ref());
        if let Some(stop) = stop {
            run = run.stop(stop);
        }
        if let Some(r) = stop_reason {
            run = run.stop_reason(r);
        }
        let mut report = run.execute().await;
        if let Some(n) = &notifier {
            n.finish().await;
        }
        super::deploy::prune(farm, settings, &run_id, &report, env.reporter).await;
        super::deploy::versions(farm, settings, &mut report).await;
        Ok(report)
    }
    .await;
    leases.release().await;
    if let Some(l) = lock {
        l.release().await;
    }
    result
}
