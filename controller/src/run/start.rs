//! Starting a run: refused outside its window, then the farm's leases,
//! preflight and the capacity verdict, the operator's yes, the journal
//! header with the run contract — and only then the first node.
use std::path::Path;

use crate::exit::CommandError;
use crate::farm::Farm;
use crate::journal::Header;
use crate::observe;
use crate::preflight;
use crate::report::{NodeReport, RunOutcome, RunReport};
use crate::rollout::engine::Run;
use crate::rollout::plan;
use crate::store::Store;

use super::{new_run_id, RunEnv, RunSettings};

/// Runs `settings` over `farm`. Nothing is touched unless every check
/// passes; the leases are given back at the end either way.
pub async fn start(
    farm: &Farm,
    inventory: &Path,
    settings: RunSettings,
    env: &RunEnv<'_>,
) -> Result<RunReport, CommandError> {
    let op = settings.operation;
    let store = Store::open(
        env.state_store.as_deref(),
        Some(&farm.inventory),
        &env.state_dir,
    )
    .await?;
    let window = env.window_guard_in(&settings, &store).await?;
    if let Some(why) = window.as_ref().and_then(|w| w.refuse()) {
        return Err(CommandError::refused(format!("{why}; nothing was touched")));
    }
    // The farm is ours before we look at it: a second controller (on any
    // host, with a shared store) is told who holds it, rather than finding
    // nodes drained by someone else.
    let run_id = new_run_id();
    let _driving = store.lock_run(&run_id)?;
    let lock = store.lock(&farm.inventory.farm, &run_id, false).await?;
    let reason = format!("farmctl {op} of {} node(s)", settings.nodes.len());
    let t = std::time::Instant::now();
    let leases =
        match crate::lease::acquire(farm, &run_id, &reason, settings.timeouts.lease_ttl).await {
            Ok(l) => l,
            Err(e) => {
                if let Some(l) = lock {
                    l.release().await;
                }
                return Err(e);
            }
        };
    tracing::debug!(run_id = %run_id, ms = t.elapsed().as_millis() as u64, "leases taken");
    let result = async {
        let checked = prepare(farm, &settings, env).await?;
        if checked.selected.is_empty() {
            env.reporter
                .note("every node already serves the release: nothing to do; nothing was touched");
            return Ok(nothing_to_do(farm, &settings, &run_id, &checked));
        }
        // Nodes already on the release are not part of the run's contract:
        // a resume does not come back to them.
        let settings = RunSettings {
            nodes: checked
                .selected
                .iter()
                .map(|&i| farm.node(i).name.clone())
                .collect(),
            ..settings.clone()
        };
        tracing::debug!(run_id = %run_id, ms = t.elapsed().as_millis() as u64, "preflight done");
        let header = Header {
            run_id: run_id.clone(),
            action: op,
            inventory: std::path::absolute(inventory).unwrap_or_else(|_| inventory.to_path_buf()),
            pools: settings.pools.clone(),
            nodes: settings.nodes.clone(),
            started_at: crate::clock::now(),
            holder: crate::lease::holder(),
            pid: Some(std::process::id()),
            settings: Some(settings.clone()),
        };
        let journal = store
            .create(&farm.inventory.farm, &header, lock.as_ref())
            .await
            .map_err(|e| {
                CommandError::refused(format!(
                    "could not start the run journal in {}: {e} (nothing was touched)",
                    store.label()
                ))
            })?;
        env.reporter
            .note(&format!("journal: {}", journal.path().display()));
        tracing::debug!(run_id = %run_id, ms = t.elapsed().as_millis() as u64, "journal started");
        let notifier = crate::notify::Notifier::start(&farm.inventory, env.reporter);
        let reporter = crate::notify::Notified {
            inner: env.reporter,
            notifier: notifier.as_ref(),
        };
        let mut run = Run::new(&run_id, farm, &settings, &reporter, env.operator)
            .map_err(CommandError::bad_input)?
            .journal(&journal)
            .window(window)
            .out_before(checked.already_out.len());
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
        super::deploy::prune(farm, &settings, &run_id, &report, env.reporter).await;
        super::deploy::versions(farm, &settings, &mut report).await;
        add_current(farm, &mut report, &checked.current, &settings);
        Ok(report)
    }
    .await;
    let t = std::time::Instant::now();
    leases.release().await;
    if let Some(l) = lock {
        l.release().await;
    }
    tracing::debug!(ms = t.elapsed().as_millis() as u64, "leases released");
    result
}

/// What preflight found, and the waves the run will take if nothing fails.
pub struct Checked {
    /// The run's nodes (inventory indices).
    pub selected: Vec<usize>,
    /// Nodes asked for that already serve a deploy's or rollback's
    /// release: left out of the run.
    pub current: Vec<usize>,
    /// Nodes outside the run that are out of rotation.
    pub already_out: Vec<usize>,
    pub notes: Vec<String>,
    pub waves: Vec<Vec<usize>>,
}

/// Observes the farm and judges a run of `settings` on it: refused (exit
/// 3, nothing touched) when preflight finds a problem or no node could be
/// taken out without breaking the capacity policy. `farmctl plan` shows
/// the same verdict a run reaches.
pub async fn check(farm: &Farm, settings: &RunSettings) -> Result<Checked, CommandError> {
    let op = settings.operation;
    let members = observe::members(farm).await.map_err(|e| {
        CommandError::refused(format!(
            "preflight refused the {op}: load balancer: {e} (nothing was touched)"
        ))
    })?;
    let observed = observe::observe(farm, &members).await;
    let mut selected: Vec<usize> = settings
        .nodes
        .iter()
        .filter_map(|n| farm.index_of(n))
        .collect();
    let current = super::deploy::up_to_date(farm, settings, &selected).await;
    selected.retain(|i| !current.contains(i));
    let mut pf = preflight::check(
        farm,
        &observed,
        &selected,
        &[],
        &|n: &str| settings.pools_for(n).to_vec(),
        settings.diagnose,
    );
    pf.notes.extend(farm.lb.notes().await);
    if let Some(d) = &settings.deploy {
        for &i in &current {
            pf.notes.push(format!(
                "{} already serves release {} of site {}; it is left out of the run",
                farm.node(i).name,
                d.version,
                d.site
            ));
        }
    }
    pf.problems
        .extend(super::deploy::missing_releases(farm, settings, &selected).await);
    if let Some(refused) = pf.refusal(&format!("preflight refused the {op} (nothing was touched)"))
    {
        return Err(refused);
    }
    if let Some(a) = &settings.analysis {
        if selected.len() <= a.canaries {
            return Err(CommandError::refused(format!(
                "the canary analysis needs nodes still on the old release to compare with: the {op} has {} node(s) to do and {} canary(ies) (deploy without --soak, or to more nodes); nothing was touched",
                selected.len(),
                a.canaries
            )));
        }
    }
    let waves = plan::waves(
        &selected,
        &settings.capacity(),
        pf.already_out.len(),
        settings.strategy,
        settings.canary,
    )
    .map_err(|e| CommandError::refused(format!("capacity check refused the {op}: {e}")))?;
    Ok(Checked {
        selected,
        current,
        already_out: pf.already_out,
        notes: pf.notes,
        waves,
    })
}

/// Preflight, the capacity verdict and the operator's yes.
async fn prepare(
    farm: &Farm,
    settings: &RunSettings,
    env: &RunEnv<'_>,
) -> Result<Checked, CommandError> {
    env.reporter.note(&format!(
        "preflight: checking {} node(s)",
        farm.inventory.nodes.len()
    ));
    let checked = check(farm, settings).await?;
    for n in &checked.notes {
        env.reporter.note(n);
    }
    if checked.selected.is_empty() {
        return Ok(checked);
    }
    let question = format!(
        "{} {} node(s) of farm {} in {} step(s)?",
        settings.operation,
        checked.selected.len(),
        farm.inventory.farm,
        checked.waves.len()
    );
    if !env.operator.confirm_run(&question).await {
        return Err(CommandError::refused(
            "not confirmed; nothing was touched (without a terminal, pass --yes to run without asking)",
        ));
    }
    Ok(checked)
}

/// The report of a run with nothing to do: every node asked for already
/// serves the release.
fn nothing_to_do(
    farm: &Farm,
    settings: &RunSettings,
    run_id: &str,
    checked: &Checked,
) -> RunReport {
    let mut report = RunReport {
        run_id: run_id.to_string(),
        action: settings.operation,
        farm: farm.inventory.farm.clone(),
        outcome: RunOutcome::Succeeded,
        started_at: crate::clock::now(),
        duration_ms: 0,
        run_started_at: None,
        run_duration_ms: None,
        halted: None,
        nodes: Vec::new(),
        traffic: None,
        analysis: None,
        rolled_back: None,
    };
    add_current(farm, &mut report, &checked.current, settings);
    report
}

/// The nodes left out because they already serve the release, as skipped
/// nodes on that release, in inventory order with the rest.
fn add_current(farm: &Farm, report: &mut RunReport, current: &[usize], settings: &RunSettings) {
    let Some(d) = &settings.deploy else { return };
    for &i in current {
        let mut n = NodeReport::new(&farm.node(i).name);
        n.version = Some(d.version.clone());
        report.nodes.push(n);
    }
    report
        .nodes
        .sort_by_key(|n| farm.index_of(&n.name).unwrap_or(usize::MAX));
}
