//! The scheduler of a run: which node starts when. With the `window`
//! strategy a node starts as soon as a slot frees (one slow node does not
//! hold up the others); with `batch` the next batch waits for the whole
//! previous one. Either way [`Capacity::may_start`] is asked before every
//! start, and the run halts when failures exceed the budget, the operator
//! stops it, or the maintenance window would be overrun — finishing the
//! nodes at work, never abandoning one half-way.
//!
//! The per-node work is in [`super::node`].
use super::StepError;
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;

use farm_inventory::{OnFailure, Strategy};
use farm_proto::domain::{NodeOutcome, Phase};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::Future;
use tokio::sync::watch;
use tokio::time::Instant;

use super::node::NodeRun;
use super::reconcile::ResumePoint;
use crate::capacity::{Capacity, Out};
use crate::contract::RunSettings;
use crate::farm::Farm;
use crate::journal::{EndRecord, Journal, Record};
use crate::machine::Policy;
use crate::operator::Operator;
use crate::report::{NodeReport, Reporter, RunOutcome, RunReport};
use crate::window::WindowGuard;

mod canary;
pub use canary::AnalysisState;

/// One run over a farm: the contract it keeps, what it talks to, and where
/// it starts from. Built the same way for a new run and a resumed one.
pub struct Run<'a> {
    id: String,
    farm: &'a Farm,
    settings: &'a RunSettings,
    /// Inventory indices of the run's nodes, in order.
    nodes: Vec<usize>,
    policy: Policy,
    capacity: Capacity,
    reporter: &'a dyn Reporter,
    operator: &'a dyn Operator,
    journal: Option<&'a Journal>,
    window: Option<WindowGuard>,
    stop: Option<watch::Receiver<bool>>,
    /// Why the stop was asked, when not by the operator (a lost farm lock).
    stop_reason: Option<Arc<std::sync::Mutex<Option<String>>>>,
    /// Set by a node whose journal record could not be written: it is
    /// finished without the journal and no other node starts.
    journal_trouble: std::sync::Mutex<Option<String>>,
    /// Nodes outside the run (or finished earlier) that are out of rotation.
    out_before: usize,
    /// Failed nodes of an earlier part of the run still out of rotation.
    failed_out_before: usize,
    /// Where each node stood when an earlier controller stopped.
    resume: HashMap<usize, ResumePoint>,
    /// A resumed run: when its first controller started it (RFC 3339).
    begun_at: Option<String>,
    failures_accepted: bool,
    /// Where the canary analysis stands (a resume reads it in the journal).
    analysis_state: AnalysisState,
}

type NodeFuture<'r> = Pin<Box<dyn Future<Output = (usize, NodeReport)> + Send + 'r>>;
type StageFuture<'r> = Pin<Box<dyn Future<Output = (usize, Result<u64, StepError>)> + Send + 'r>>;

/// The scheduler's bookkeeping.
struct Progress {
    queue: VecDeque<usize>,
    reports: HashMap<usize, NodeReport>,
    out: Out,
    succeeded: usize,
    failures: u32,
    /// Batches started (batch strategy).
    batch: usize,
    /// The canaries, while they are not all back and judged (or
    /// confirmed): no other node starts.
    canary: Option<Vec<usize>>,
    /// The canary analysis, once it ran.
    analysis: Option<crate::report::AnalysisReport>,
    /// The verdict rolls the switched nodes back (to this release).
    rollback: Option<Option<String>>,
    rolled_back: Option<bool>,
    /// Pausing (`rollout.pause`): nothing starts before this.
    not_before: Option<Instant>,
    halted: Option<String>,
    /// The operator stopped the run (not a failure of it).
    stopped: bool,
    /// Deploy: nodes still to stage, in order, and what staging did (ms
    /// taken, or why it failed).
    to_stage: VecDeque<usize>,
    staged: HashMap<usize, Result<u64, StepError>>,
    /// Nodes back on the new release, judged once their stabilization
    /// period (`analysis.stabilize`) is over; each holds its slot.
    stabilizing: Vec<canary::Stabilizing>,
    /// Diagnosed nodes (`recycle --outliers`): when each was back.
    returned: HashMap<usize, Instant>,
}

impl<'a> Run<'a> {
    /// A run of `settings` over `farm`. Fails when a node of the contract
    /// is not in the farm (a resume checks this first).
    pub fn new(
        id: &str,
        farm: &'a Farm,
        settings: &'a RunSettings,
        reporter: &'a dyn Reporter,
        operator: &'a dyn Operator,
    ) -> Result<Self, StepError> {
        let nodes = settings
            .nodes
            .iter()
            .map(|n| {
                farm.index_of(n).ok_or_else(|| {
                    StepError(format!("node {n} of the run is not in the inventory"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Run {
            id: id.to_string(),
            farm,
            settings,
            nodes,
            policy: settings.policy(farm.lb.drains()),
            capacity: settings.capacity(),
            reporter,
            operator,
            journal: None,
            window: None,
            stop: None,
            stop_reason: None,
            journal_trouble: std::sync::Mutex::new(None),
            out_before: 0,
            failed_out_before: 0,
            resume: HashMap::new(),
            begun_at: None,
            failures_accepted: false,
            analysis_state: AnalysisState::Judge,
        })
    }

    /// Every transition is written here before it is acted on.
    pub fn journal(mut self, journal: &'a Journal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// No node starts that would not finish in the window.
    pub fn window(mut self, window: Option<WindowGuard>) -> Self {
        self.window = window;
        self
    }

    /// Set to `true` when the operator asks to stop: no new node starts.
    pub fn stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Says why the stop was asked when it was not the operator.
    pub fn stop_reason(mut self, reason: Arc<std::sync::Mutex<Option<String>>>) -> Self {
        self.stop_reason = Some(reason);
        self
    }

    /// Nodes out of rotation that are not this run's doing.
    pub fn out_before(mut self, count: usize) -> Self {
        self.out_before = count;
        self
    }

    /// Continue from where an earlier controller stopped: each node's
    /// journaled phase, and how many of its failed nodes are still out.
    /// Resuming with `--skip-failed`: the nodes that failed before are
    /// reported failed but do not count against `max_failures` again.
    pub fn failures_accepted(mut self, yes: bool) -> Self {
        self.failures_accepted = yes;
        self
    }

    /// Where the canary analysis stood when the run was cut.
    pub fn analysis(mut self, state: AnalysisState) -> Self {
        self.analysis_state = state;
        self
    }

    pub fn resuming(mut self, points: HashMap<usize, ResumePoint>, failed_out: usize) -> Self {
        self.resume = points;
        self.failed_out_before = failed_out;
        self
    }

    /// A resumed run first started at `started_at` (its journal header's
    /// time): the report gives the whole run's time beside this part's.
    pub fn begun_at(mut self, started_at: &str) -> Self {
        self.begun_at = Some(started_at.to_string());
        self
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| *s.borrow())
    }

    pub async fn execute(&self) -> RunReport {
        let started = std::time::Instant::now();
        let started_at =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let names: Vec<String> = self
            .nodes
            .iter()
            .map(|&i| self.name(i).to_string())
            .collect();
        self.reporter
            .run_started(&self.id, self.settings.operation, &names);
        // A run killed mid-soak leaves the canaries' weights changed: put
        // back before anything else (this run may be its resume or its
        // rollback).
        self.unweigh().await;

        let mut p = Progress {
            queue: VecDeque::new(),
            reports: HashMap::new(),
            out: Out {
                before: self.out_before,
                failed: self.failed_out_before,
                at_work: 0,
            },
            succeeded: 0,
            failures: 0,
            batch: 0,
            canary: None,
            analysis: None,
            rollback: None,
            rolled_back: None,
            stopped: false,
            not_before: None,
            halted: None,
            to_stage: VecDeque::new(),
            staged: HashMap::new(),
            stabilizing: Vec::new(),
            returned: HashMap::new(),
        };
        let mut at_work: FuturesUnordered<NodeFuture<'_>> = FuturesUnordered::new();
        // Resuming: finished nodes stay as they were; nodes caught mid-way
        // are out of rotation already and are finished first.
        for &i in &self.nodes {
            match self.resume.get(&i).map(|r| r.phase) {
                None | Some(Phase::Pending | Phase::Staging | Phase::Staged) => {
                    p.queue.push_back(i)
                }
                Some(Phase::Done) => {
                    p.succeeded += 1;
                    p.reports
                        .insert(i, self.finished_before(i, NodeOutcome::Succeeded));
                }
                Some(Phase::Failed) => {
                    if !self.failures_accepted {
                        p.failures += 1;
                    }
                    p.reports
                        .insert(i, self.finished_before(i, NodeOutcome::Failed));
                }
                Some(_) => {
                    p.out.at_work += 1;
                    at_work.push(Box::pin(self.run_node(i)));
                }
            }
        }
        p.canary = self
            .canary_set(&p)
            .filter(|_| self.settings.analysis.is_some() || at_work.is_empty());
        if let AnalysisState::RollBack(to) = &self.analysis_state {
            // The verdict was reached before the cut: nothing more is
            // deployed; the switched nodes go back.
            p.halted = Some("the canary analysis failed the release (before the resume)".into());
            p.queue.clear();
            p.rollback = Some(to.clone());
        }
        if self.stages() {
            p.to_stage = p.queue.clone();
        }
        let mut stagings: FuturesUnordered<StageFuture<'_>> = FuturesUnordered::new();

        let mut stop = self.stop.clone();
        loop {
            let canaries_back = p.halted.is_none()
                && at_work.is_empty()
                && p.canary
                    .as_ref()
                    .is_some_and(|c| c.iter().all(|i| p.reports.contains_key(i)));
            if canaries_back {
                if let Some(c) = p.canary.take() {
                    self.canaries_back(&mut p, c).await;
                }
            }
            if p.halted.is_none() {
                self.start_staging(&mut p, &mut stagings);
                self.fill(&mut p, &mut at_work);
            }
            if at_work.is_empty()
                && p.stabilizing.is_empty()
                && (p.halted.is_some() || p.queue.is_empty())
            {
                break;
            }
            let pause = p.not_before;
            let stable_at = p.stabilizing.iter().map(|s| s.until).min();
            tokio::select! {
                finished = at_work.next(), if !at_work.is_empty() => {
                    if let Some((i, report)) = finished {
                        self.finished(&mut p, i, report, at_work.is_empty()).await;
                    }
                }
                staged = stagings.next(), if !stagings.is_empty() => {
                    if let Some((i, result)) = staged {
                        p.staged.insert(i, result);
                    }
                }
                _ = tokio::time::sleep_until(pause.unwrap_or_else(Instant::now)), if pause.is_some() => {
                    p.not_before = None;
                }
                _ = tokio::time::sleep_until(stable_at.unwrap_or_else(Instant::now)), if stable_at.is_some() => {
                    self.stabilized(&mut p).await;
                }
                _ = async { if let Some(s) = &mut stop { let _ = s.wait_for(|s| *s).await; } },
                    if stop.as_ref().is_some_and(|s| !*s.borrow()) => {
                    // Wakes the loop so a pause ends early; fill() halts.
                    p.not_before = None;
                }
            }
        }
        if let Some(to) = p.rollback.take() {
            p.rolled_back = Some(self.roll_back(&mut p, to).await);
        }
        if p.halted.is_none() && p.failures > self.settings.max_failures {
            p.halted = Some(format!(
                "{} node(s) failed (max_failures={}); later nodes were not touched",
                p.failures, self.settings.max_failures
            ));
        }
        self.report(p, started, started_at).await
    }

    /// A deploy with a package: releases are staged ahead of the rollout.
    fn stages(&self) -> bool {
        self.settings
            .deploy
            .as_ref()
            .is_some_and(|d| d.package.is_some())
    }

    /// Keeps up to `staging_concurrency` uploads going, in queue order.
    fn start_staging<'r>(
        &'r self,
        p: &mut Progress,
        stagings: &mut FuturesUnordered<StageFuture<'r>>,
    ) {
        let limit = self
            .settings
            .deploy
            .as_ref()
            .map_or(1, |d| d.staging_concurrency.max(1));
        while stagings.len() < limit {
            let Some(i) = p.to_stage.pop_front() else {
                return;
            };
            stagings.push(Box::pin(async move { (i, self.node_run(i).stage().await) }));
        }
    }

    /// A node whose release could not be staged: failed, never drained.
    fn stage_failed(&self, p: &mut Progress, i: usize, why: String) {
        let mut r = NodeReport::new(self.name(i));
        r.outcome = NodeOutcome::Failed;
        r.failed_step = Some(crate::machine::FailedStep::Stage);
        r.error = Some(format!("{} at stage: {why}", self.name(i)));
        p.failures += 1;
        self.reporter.node_finished(&r);
        p.reports.insert(i, r);
    }

    /// Starts every node that may start now.
    fn fill<'r>(&'r self, p: &mut Progress, at_work: &mut FuturesUnordered<NodeFuture<'r>>) {
        if p.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let batch = self.settings.strategy == Strategy::Batch;
        if batch && !at_work.is_empty() {
            return; // the barrier: the whole batch is back first
        }
        let mut started = 0;
        while !p.queue.is_empty() {
            if p.failures > self.settings.max_failures
                && self.settings.on_failure == OnFailure::Halt
            {
                // Reported at the end, once the nodes at work are back.
                p.queue.clear();
                break;
            }
            if let Some(trouble) = self
                .journal_trouble
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                p.halted = Some(format!(
                    "{trouble}; the nodes at work were finished, no other node was started \
                     (`farmctl resume` continues once the journal can be written)"
                ));
                break;
            }
            if self.stop_requested() {
                let why = self
                    .stop_reason
                    .as_ref()
                    .and_then(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone());
                p.stopped = why.is_none();
                p.halted = Some(why.unwrap_or_else(|| {
                    "stopped by the operator; later nodes were not touched".into()
                }));
                break;
            }
            if let Some(c) = &p.canary {
                if !p.queue.front().is_some_and(|f| c.contains(f)) {
                    break; // the canaries go first, and alone
                }
            }
            if let Some(&front) = p.queue.front().filter(|_| self.stages()) {
                match p.staged.get(&front) {
                    None => break, // its release is still on its way
                    Some(Err(why)) => {
                        let why = why.0.clone();
                        p.queue.pop_front();
                        self.stage_failed(p, front, why);
                        continue;
                    }
                    Some(Ok(_)) => {}
                }
            }
            let limit = if batch {
                self.capacity.step(p.batch)
            } else {
                self.capacity.window(p.succeeded)
            };
            if let Err(blocked) = self.capacity.may_start(p.out, limit) {
                // Nodes at work or stabilizing free their slot later.
                if at_work.is_empty() && p.stabilizing.is_empty() {
                    p.halted = Some(format!("{blocked}; the remaining nodes were not started"));
                }
                break;
            }
            if let Some(why) = self.window.as_ref().and_then(|w| w.refuse()) {
                p.halted = Some(format!("{why}: the remaining nodes were not started"));
                break;
            }
            let Some(i) = p.queue.pop_front() else { break };
            p.out.at_work += 1;
            started += 1;
            at_work.push(Box::pin(self.run_node(i)));
        }
        if batch && started > 0 {
            p.batch += 1;
        }
    }

    /// Books a node that finished; asks after the canary; starts a pause.
    async fn finished(&self, p: &mut Progress, i: usize, mut report: NodeReport, idle: bool) {
        p.out.at_work -= 1;
        if let Some(Ok(ms)) = p.staged.get(&i) {
            report.phase_ms.insert("staging".into(), *ms);
        }
        // A node the run did not touch (a patch with nothing to do) is not
        // judged.
        let touched = !report.phase_ms.is_empty();
        if report.outcome == NodeOutcome::Succeeded && touched && self.stabilizes(p, i) {
            p.out.at_work += 1; // the slot is held until it is judged
        }
        match report.outcome {
            NodeOutcome::Succeeded => p.succeeded += 1,
            NodeOutcome::Failed => {
                p.failures += 1;
                if !report.in_rotation {
                    p.out.failed += 1;
                }
            }
            NodeOutcome::Skipped => {}
        }
        if report.outcome == NodeOutcome::Succeeded && !report.diagnostics.is_empty() {
            p.returned.insert(i, Instant::now());
        }
        self.reporter.node_finished(&report);
        p.reports.insert(i, report);
        let between_batches = self.settings.strategy == Strategy::Window || idle;
        if let (Some(pause), true) = (self.settings.pause, between_batches) {
            if !p.queue.is_empty() && p.halted.is_none() {
                self.reporter.note(&format!(
                    "pausing {} before the next node",
                    crate::human::duration(pause)
                ));
                p.not_before = Some(Instant::now() + pause);
            }
        }
    }

    /// Each diagnosed node's traffic since it returned: whether the
    /// recycle helped, as far as the time since can tell (`farmctl
    /// status` gives the full window later). Journaled.
    async fn traffic_after(&self, p: &mut Progress) {
        let asks = p.returned.iter().map(|(&i, &back)| async move {
            let since = back.elapsed().as_secs().clamp(1, 300) as u32;
            let seen = self.farm.agent(i).traffic(since).await.ok();
            (
                i,
                seen.and_then(|v| crate::health::NodeTraffic::from_view(&v)),
            )
        });
        for (i, traffic) in futures::future::join_all(asks).await {
            let Some(t) = traffic else { continue };
            self.reporter
                .detail(self.name(i), &format!("traffic after: {}", t.line()));
            if let Some(j) = self.journal {
                let record = Record::TrafficAfter(crate::journal::TrafficAfterRecord {
                    t: crate::clock::now(),
                    node: self.name(i).to_string(),
                    traffic: t.clone(),
                });
                if let Err(e) = j.append(&record).await {
                    tracing::warn!("could not journal the traffic of {}: {e}", self.name(i));
                }
            }
            if let Some(r) = p.reports.get_mut(&i) {
                r.traffic_after = Some(t);
            }
        }
    }

    async fn report(
        &self,
        mut p: Progress,
        started: std::time::Instant,
        started_at: String,
    ) -> RunReport {
        self.traffic_after(&mut p).await;
        let nodes: Vec<NodeReport> = self
            .nodes
            .iter()
            .map(|&i| {
                p.reports
                    .remove(&i)
                    .unwrap_or_else(|| NodeReport::new(self.name(i)))
            })
            .collect();
        let ok = p.halted.is_none() && nodes.iter().all(|n| n.outcome == NodeOutcome::Succeeded);
        let report = RunReport {
            run_id: self.id.clone(),
            action: self.settings.operation,
            farm: self.farm.inventory.farm.clone(),
            outcome: if ok {
                RunOutcome::Succeeded
            } else if p.stopped && nodes.iter().all(|n| n.outcome != NodeOutcome::Failed) {
                RunOutcome::Stopped
            } else {
                RunOutcome::Failed
            },
            started_at,
            duration_ms: started.elapsed().as_millis() as u64,
            run_duration_ms: self.begun_at.as_deref().map(|t| {
                humantime::parse_rfc3339_weak(t)
                    .ok()
                    .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                    .map_or(0, |d| d.as_millis() as u64)
            }),
            run_started_at: self.begun_at.clone(),
            halted: p.halted,
            nodes,
            traffic: None,
            rolled_back: p.analysis.as_ref().map(|_| p.rolled_back.unwrap_or(false)),
            analysis: p.analysis,
        };
        if let Some(j) = self.journal {
            let end = Record::End(EndRecord {
                t: crate::clock::now(),
                outcome: report.outcome,
                halted: report.halted.clone(),
            });
            if let Err(e) = j.append(&end).await {
                tracing::error!("could not write the end of the run to the journal: {e}");
            }
        }
        self.reporter.run_finished(&report);
        report
    }

    fn name(&self, i: usize) -> &str {
        &self.farm.node(i).name
    }

    fn node_run(&self, i: usize) -> NodeRun<'_> {
        NodeRun {
            run_id: &self.id,
            farm: self.farm,
            settings: self.settings,
            policy: &self.policy,
            reporter: self.reporter,
            journal: self.journal,
            journal_trouble: &self.journal_trouble,
            node: i,
            resume: self.resume.get(&i),
        }
    }

    /// Drives node `i` through its phases.
    async fn run_node(&self, i: usize) -> (usize, NodeReport) {
        (i, self.node_run(i).drive().await)
    }

    /// A node the journal says had finished before this (resumed) run.
    fn finished_before(&self, i: usize, outcome: NodeOutcome) -> NodeReport {
        let mut r = NodeReport::new(self.name(i));
        r.outcome = outcome;
        r.in_rotation = outcome == NodeOutcome::Succeeded;
        if let Some(p) = self.resume.get(&i) {
            r.error = p.detail.clone();
            r.pids_before = p.pids.clone().unwrap_or_default();
            r.pids_after = p.pids_after.clone().unwrap_or_default();
            r.phase_ms = p.phase_ms.clone();
            r.failed_step = p.failed_step;
        }
        r
    }
}
