//! One node's way through a run: feed the pure machine events, do the
//! actions it returns (drain, quiesce, operate, probe, return), journal
//! every transition before acting on it. A resumed node starts at its
//! journaled phase and repeats that phase's (idempotent) action, unless the
//! live node shows the interrupted operation already happened.
use super::StepError;
use farm_proto::domain::{NodeOutcome, OpStep, OperationId, Phase};
use tokio::time::Instant;

use super::reconcile::{evidence, ResumePoint};
use crate::machine::{self, Action, Event, FailedStep, Failure, NodeState, Policy, State};
use std::collections::BTreeMap;
use std::time::Duration;

use farm_inventory::Site;
use farm_proto::domain::OperationKind;

use crate::agent::{AgentApi, OperationRequest, SwitchTo};
use crate::contract::{DeploySettings, RunSettings};
use crate::farm::Farm;
use crate::journal::Journal;
use crate::lb::Target;
use crate::quiesce::{quiesce, Quiesced};
use crate::report::{NodeReport, Reporter};

/// What driving one node needs from its run.
pub(super) struct NodeRun<'r> {
    pub run_id: &'r str,
    pub farm: &'r Farm,
    pub settings: &'r RunSettings,
    pub policy: &'r Policy,
    pub reporter: &'r dyn Reporter,
    pub journal: Option<&'r Journal>,
    /// Set when a record could not be written (the run starts no new node).
    pub journal_trouble: &'r std::sync::Mutex<Option<String>>,
    /// Inventory index of the node.
    pub node: usize,
    /// Where an earlier controller left the node, when resuming.
    pub resume: Option<&'r ResumePoint>,
}

/// How a failed node's second journal record starts when it was put back
/// in rotation.
pub const RETURNED: &str = "returned to rotation";

/// Requests running at least this long are listed in a pool's diagnostics.
const DIAGNOSE_ELAPSED_MS: u64 = 500;

/// The longest a node's dump call may take (each worker is bounded by
/// the agent's own `dump.timeout`; one dump at a time on a node).
const DUMP_CALL: Duration = Duration::from_secs(15 * 60);

/// How often the LB is asked whether a node out of rotation is still out.
const DRAIN_WATCH: Duration = Duration::from_millis(500);

/// The actions during which the node is out of rotation (after the drain,
/// before the return).
fn out_of_rotation(a: &Action) -> bool {
    matches!(
        a,
        Action::Quiesce { .. }
            | Action::Switch { .. }
            | Action::Operate { .. }
            | Action::Probe { .. }
            | Action::Revert { .. }
    )
}

/// What the node's loop does next: feed an event, or act.
enum Step {
    Event(Event),
    Act(Action),
}

impl NodeRun<'_> {
    fn name(&self) -> &str {
        &self.farm.node(self.node).name
    }

    pub(super) fn op_id(&self, step: OpStep) -> String {
        // A retry's ids are its own: the agent answers a repeated id with
        // the first attempt's (failed) result.
        let attempt = self.resume.map_or(1, |r| r.attempt);
        OperationId::attempt(self.run_id, self.name(), step, attempt).to_string()
    }

    /// Drives the node to done or failed; its report.
    pub(super) async fn drive(&self) -> NodeReport {
        let i = self.node;
        let agent = self.farm.agent(i);
        let mut report = NodeReport::new(self.name());
        if self.resume.is_none() && self.settings.operation == OperationKind::Patch {
            if let Some(why) = self.up_to_date(agent).await {
                self.reporter.detail(self.name(), &why);
                report.outcome = NodeOutcome::Succeeded;
                if let Some(j) = self.journal {
                    let _ = j.phase(self.name(), Phase::Done, None, Some(why)).await;
                }
                return report;
            }
        }
        let (mut node, mut step) = self.start(agent).await;
        if self.settings.diagnose && self.resume.is_none() {
            (report.diagnostics, report.traffic_before) = self.diagnose(agent).await;
        }
        if node.state != State::Pending {
            report.in_rotation = false;
        }
        if let Some(point) = self.resume {
            // What the journal tells of the part before the resume.
            report.pids_before = point.pids.clone().unwrap_or_default();
            report.phase_ms = point.phase_ms.clone();
        }
        loop {
            let acted = Instant::now();
            let event = match step {
                Step::Event(e) => e,
                Step::Act(a) if self.policy.drains && out_of_rotation(&a) => {
                    // While the node is out, the LB is watched: a drain it
                    // forgets (a reload, a config sync) is made again.
                    let redrained = std::sync::atomic::AtomicU32::new(0);
                    let event = {
                        let work = self.perform(agent, a, &mut report);
                        tokio::pin!(work);
                        tokio::select! {
                            e = &mut work => e,
                            () = self.keep_drained(agent, &redrained) => work.await,
                        }
                    };
                    report.lb_redrains += redrained.into_inner();
                    event
                }
                Step::Act(a) => self.perform(agent, a, &mut report).await,
            };
            let act_ms = acted.elapsed().as_secs_f64() * 1000.0;
            let now = Instant::now();
            let (next, action) = machine::next(self.policy, &node, event, now);
            if node.state != State::Pending {
                *report
                    .phase_ms
                    .entry(node.phase().as_str().into())
                    .or_default() += now.duration_since(node.since).as_millis() as u64;
            }
            tracing::info!(node = %self.name(), run_id = %self.run_id, phase = %next.phase(), "transition");
            self.reporter.phase(self.name(), next.phase());
            // Out of rotation from the moment the drain is asked for.
            if next.state == State::Draining {
                report.in_rotation = false;
            }
            let journaled = Instant::now();
            let written = self.journal_phase(agent, &next, &report.pids_after).await;
            tracing::debug!(
                node = %self.name(),
                phase = %next.phase(),
                act_ms,
                journal_ms = journaled.elapsed().as_secs_f64() * 1000.0,
                "timing"
            );
            if let Err(e) = written {
                let not_ours = e.kind() == std::io::ErrorKind::PermissionDenied;
                if not_ours || next.state == State::Draining {
                    // Nothing done yet (or another controller has the farm
                    // now): without the journal a crash could not be
                    // recovered, so stop before acting.
                    node = NodeState {
                        state: State::Failed(Failure {
                            step: FailedStep::Journal,
                            reason: format!("could not write the run journal: {e}"),
                            restore: !not_ours && next.state == State::Draining,
                        }),
                        since: now,
                    };
                    break;
                }
                // The node is out of rotation: bring it back without the
                // journal (its actions repeat safely on a resume), and let
                // no other node start.
                let mut trouble = self
                    .journal_trouble
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                if trouble.is_none() {
                    *trouble = Some(format!("the run journal could not be written ({e})"));
                }
                drop(trouble);
                self.reporter.detail(
                    self.name(),
                    &format!(
                        "could not write the run journal ({e}); finishing this node without it"
                    ),
                );
            }
            node = next;
            let Some(action) = action else { break };
            step = Step::Act(action);
        }
        if let Some(d) = &self.settings.deploy {
            report.version = agent
                .status()
                .await
                .ok()
                .and_then(|v| v.site(&d.site).and_then(|s| s.release.clone()));
        }
        match node.state {
            State::Done => {
                report.outcome = NodeOutcome::Succeeded;
                report.in_rotation = true;
                if report.pids_after.is_empty() && !report.pids_before.is_empty() {
                    // Operated before a resume: the PIDs it runs now.
                    if let Ok(v) = agent.status().await {
                        report.pids_after = v.pids_of(self.settings.pools_for(self.name()));
                    }
                }
            }
            State::Failed(f) => {
                report.outcome = NodeOutcome::Failed;
                report.failed_step = Some(f.step);
                report.error = Some(format!("{} at {}: {}", self.name(), f.step, f.reason));
                if !self.farm.lb.drains() {
                    report.in_rotation = true;
                } else if f.restore && !report.in_rotation {
                    report.in_rotation = self.restore(agent).await;
                    if report.in_rotation {
                        // Still failed, but serving: the journal says so
                        // (a run's picture counts it back in rotation).
                        if let Some(j) = self.journal {
                            let note = format!("{RETURNED}: {}", f.reason);
                            let _ = j.phase(self.name(), Phase::Failed, None, Some(note)).await;
                        }
                    }
                }
            }
            _ => {}
        }
        report
    }

    /// Where the node's loop starts: a fresh node begins; a resumed one
    /// repeats the action of its phase, unless the live node shows that an
    /// interrupted operation already happened.
    async fn start(&self, agent: &dyn AgentApi) -> (NodeState, Step) {
        let now = Instant::now();
        let Some(point) = self.resume else {
            return (NodeState::new(now), Step::Event(Event::Begin));
        };
        let detail = point.detail.as_deref();
        let Some((node, action)) = machine::resume_at(point.phase, detail, self.policy, now) else {
            return (NodeState::new(now), Step::Event(Event::Begin));
        };
        if let (Action::Operate { .. }, false) =
            (&action, self.settings.operation.restarts_server())
        {
            // The agent's own record of the operation id decides first:
            // it outlives agent restarts, which PIDs do not.
            let op_id = self.op_id(self.settings.operation.into());
            if let Ok(Some(report)) = agent.finished_operation(&op_id).await {
                self.reporter.detail(
                    self.name(),
                    &format!(
                        "the interrupted operation had already {} (the agent's record of {op_id})",
                        if report.success { "happened" } else { "failed" }
                    ),
                );
                return (node, Step::Event(Event::Operated(report)));
            }
        }
        if let (Action::Operate { .. }, Some(before), false) = (
            &action,
            &point.pids,
            self.settings.operation.restarts_server(),
        ) {
            if let Ok(view) = agent.status().await {
                if let Some(report) = evidence(self.settings.operation, before, &view) {
                    self.reporter.detail(
                        self.name(),
                        "the interrupted operation had already happened (new worker PIDs)",
                    );
                    return (node, Step::Event(Event::Operated(report)));
                }
            }
        }
        (node, Step::Act(action))
    }

    /// The pools whose diagnostics and dumps are captured: the run's, or
    /// every pool of the node when the run recycles them all.
    async fn captured_pools(&self, agent: &dyn AgentApi) -> Vec<String> {
        if self.settings.pools_for(self.name()).is_empty() {
            agent
                .status()
                .await
                .map(|v| v.pools.iter().map(|p| p.name.clone()).collect())
                .unwrap_or_default()
        } else {
            self.settings.pools_for(self.name()).to_vec()
        }
    }

    /// What each pool to recycle is doing before the node is touched,
    /// said, journaled and kept for the report. Capturing never stops
    /// the recycle: what cannot be read is a note.
    async fn diagnose(
        &self,
        agent: &dyn AgentApi,
    ) -> (
        Vec<crate::agent::Diagnostics>,
        Option<crate::health::NodeTraffic>,
    ) {
        let mut out = Vec::new();
        for pool in self.captured_pools(agent).await {
            let d = match agent.diagnose(&pool, DIAGNOSE_ELAPSED_MS).await {
                Ok(d) => d,
                Err(e) => crate::agent::Diagnostics {
                    pool: pool.clone(),
                    notes: vec![format!("could not be captured: {e}")],
                    ..Default::default()
                },
            };
            self.reporter.detail(self.name(), &d.line());
            out.push(d);
        }
        // What its users got before: the window status judged it on.
        let traffic = agent
            .traffic(crate::commands::status::TRAFFIC_WINDOW_S)
            .await
            .ok()
            .and_then(|v| crate::health::NodeTraffic::from_view(&v));
        if let Some(t) = &traffic {
            self.reporter
                .detail(self.name(), &format!("traffic before: {}", t.line()));
        }
        if let Some(j) = self.journal {
            let record = crate::journal::Record::Diagnostics(crate::journal::DiagnosticsRecord {
                t: crate::clock::now(),
                node: self.name().to_string(),
                pools: out.clone(),
                traffic: traffic.clone(),
            });
            if let Err(e) = j.append(&record).await {
                tracing::warn!("could not journal the diagnostics of {}: {e}", self.name());
            }
        }
        (out, traffic)
    }

    /// With `dump` set, before a pool recycle (the node drained and its
    /// requests gone or past the drain timeout: no user request is frozen
    /// by the dump): a memory dump of each pool's workers, once per node
    /// and attempt. It is said, kept for the report and journaled; the
    /// operation's deadline is moved by the time it took. A dump that
    /// cannot be taken never stops the recycle.
    async fn dump_first(
        &self,
        agent: &dyn AgentApi,
        action: Action,
        report: &mut NodeReport,
    ) -> Action {
        let Action::Operate { deadline } = action else {
            return action;
        };
        let first = report.dumps.is_empty() && self.resume.is_none();
        if !self.settings.dump || !first || self.settings.operation.restarts_server() {
            return action;
        }
        let started = Instant::now();
        let op_id = self.op_id(OpStep::Dump);
        for pool in self.captured_pools(agent).await {
            let d = match agent.dump(&op_id, &pool, DUMP_CALL).await {
                Ok(d) => d,
                Err(e) => crate::agent::DumpView {
                    pool: pool.clone(),
                    refused: vec![format!("the agent took no dump: {e}")],
                    ..Default::default()
                },
            };
            self.reporter.detail(self.name(), &d.line());
            report.dumps.push(d);
        }
        if let Some(j) = self.journal {
            let record = crate::journal::Record::Dumps(crate::journal::DumpsRecord {
                t: crate::clock::now(),
                node: self.name().to_string(),
                pools: report.dumps.clone(),
            });
            if let Err(e) = j.append(&record).await {
                tracing::warn!("could not journal the dumps of {}: {e}", self.name());
            }
        }
        Action::Operate {
            deadline: deadline + started.elapsed(),
        }
    }

    /// Journals a node's new phase; entering `operating`, with the worker
    /// PIDs of the moment, so resume can tell whether the operation ran.
    ///
    /// A phase whose action changes the farm (drain, the operation, the
    /// return, and a failure that may put the node back) waits until its
    /// record is on disk. The others (quiescing, verifying: waits and
    /// probes; done) are handed to the writer without waiting: a crash in
    /// them resumes from the record before, whose action is safe to repeat,
    /// and the writer keeps the order, so they are on disk before anything
    /// submitted after them.
    async fn journal_phase(
        &self,
        agent: &dyn AgentApi,
        next: &NodeState,
        pids_after: &BTreeMap<String, Vec<u32>>,
    ) -> std::io::Result<()> {
        let Some(j) = self.journal else {
            return Ok(());
        };
        let pids = if next.phase() == Phase::Operating {
            agent
                .status()
                .await
                .ok()
                .map(|v| v.pids_of(self.settings.pools_for(self.name())))
        } else {
            None
        };
        let detail = match &next.state {
            State::Failed(f) => Some(format!("{}: {}", f.step, f.reason)),
            State::Reverting(f) => Some(f.reason.clone()),
            _ => None,
        };
        let ended = matches!(next.phase(), Phase::Done | Phase::Failed) && !pids_after.is_empty();
        let written = j.phase_record(crate::journal::PhaseRecord {
            t: crate::clock::now(),
            node: self.name().to_string(),
            phase: next.phase(),
            pids,
            detail,
            pids_after: ended.then(|| pids_after.clone()),
            failed_step: match &next.state {
                State::Failed(f) => Some(f.step.to_string()),
                _ => None,
            },
        });
        let failing = self
            .journal_trouble
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        match next.phase() {
            // Once the journal fails, records are still tried but not
            // waited for: the node is on its way back.
            _ if failing => Ok(()),
            Phase::Quiescing | Phase::Verifying | Phase::Done => Ok(()),
            _ => written.await,
        }
    }

    /// Deploy: puts the release on the node while it still serves — the
    /// upload is not out-of-rotation time. A release already there from the
    /// same package (a resumed run) is not uploaded again. Returns how long
    /// it took.
    pub(super) async fn stage(&self) -> Result<u64, StepError> {
        let started = Instant::now();
        let (Some(d), name) = (&self.settings.deploy, self.name()) else {
            return Ok(0);
        };
        let Some(package) = &d.package else {
            return Ok(0);
        };
        let agent = self.farm.agent(self.node);
        self.reporter.phase(name, Phase::Staging);
        if let Some(j) = self.journal {
            drop(j.phase(name, Phase::Staging, None, None));
        }
        let result = async {
            let kept = agent
                .releases(&d.site)
                .await
                .map_err(|e| StepError(format!("could not list the releases of site {}: {e}", d.site)))?;
            match kept.iter().find(|r| r.version == d.version) {
                Some(r) if r.sha256 == package.sha256 => Ok("already there".to_string()),
                Some(r) => Err(StepError(format!(
                    "release {} of site {} is already on the node from another package (sha256 {}); \
                     give this package a new version",
                    d.version, d.site, r.sha256
                ))),
                None => {
                    let op_id = self.op_id(OpStep::Stage);
                    let timeout = self.settings.timeouts.operation;
                    agent
                        .stage(&op_id, &d.site, &d.version, package, timeout)
                        .await
                        .map(|s| {
                            if s.already {
                                "already there".to_string()
                            } else {
                                format!("{} files, {} bytes", s.files, s.bytes)
                            }
                        })
                        .map_err(|e| StepError(format!("could not stage release {}: {e}", d.version)))
                }
            }
        }
        .await;
        let (phase, detail) = match &result {
            Ok(how) => {
                self.reporter
                    .detail(name, &format!("release {} staged ({how})", d.version));
                (Phase::Staged, None)
            }
            Err(e) => (Phase::Failed, Some(format!("stage: {e}"))),
        };
        if let Some(j) = self.journal {
            drop(j.phase(name, phase, None, detail));
        }
        result.map(|_| started.elapsed().as_millis() as u64)
    }

    /// The deploy's settings and its inventory site, in a deploy.
    fn deploy_site(&self) -> Option<(&DeploySettings, &Site)> {
        let d = self.settings.deploy.as_ref()?;
        let site = self
            .farm
            .inventory
            .sites
            .iter()
            .find(|s| s.name == d.site)?;
        Some((d, site))
    }

    /// The pools to recycle: the run's, or in a deploy without one named,
    /// the pool the agent says serves the site.
    async fn pools(&self, agent: &dyn AgentApi) -> Vec<String> {
        match (
            &self.settings.deploy,
            self.settings.pools_for(self.name()).is_empty(),
        ) {
            (Some(d), true) => match agent.status().await {
                Ok(v) => v
                    .site(&d.site)
                    .map(|s| s.pool.clone())
                    .filter(|p| !p.is_empty())
                    .into_iter()
                    .collect(),
                Err(_) => Vec::new(),
            },
            _ => self.settings.pools_for(self.name()).to_vec(),
        }
    }

    /// Switches the site back from the deploy's version and recycles its
    /// pool: the node serves what it did before.
    async fn revert(&self, agent: &dyn AgentApi, within: Duration) -> Result<(), StepError> {
        let Some(d) = &self.settings.deploy else {
            return Err(StepError("not a deploy".into()));
        };
        let back = SwitchTo {
            site: d.site.clone(),
            version: d.version.clone(),
            hooks: Vec::new(),
            back: true,
        };
        let sw = agent
            .switch(&self.op_id(OpStep::Revert), &back)
            .await
            .map_err(|e| e.to_string())?;
        self.reporter.detail(
            self.name(),
            &format!("switched site {} back to {}", d.site, sw.version),
        );
        let request = OperationRequest {
            kind: OperationKind::Recycle,
            pools: self.pools(agent).await,
            stop_timeout: self.settings.timeouts.stop,
        };
        let noop = |_: &str, _: &str| {};
        let r = agent
            .operate(&self.op_id(OpStep::RevertRecycle), &request, within, &noop)
            .await
            .map_err(|e| StepError(format!("recycling after switching back: {e}")))?;
        machine::verify(OperationKind::Recycle, &r)
            .map_err(|(_, e)| StepError(format!("recycling after switching back: {e}")))
    }

    /// Puts back a node that is as it was before the run (its operation
    /// never ran, or a deploy was switched back), once it is healthy and
    /// warm, as any node is returned.
    async fn restore(&self, agent: &dyn AgentApi) -> bool {
        let node = self.farm.node(self.node);
        let sites = &self.farm.inventory.sites;
        let timeout = self.policy.healthy_timeout;
        if let Err(e) = self.farm.prober.until_healthy(node, sites, timeout).await {
            self.reporter.detail(
                &node.name,
                &format!("left out of rotation: not healthy ({e})"),
            );
            return false;
        }
        let op_id = self.op_id(OpStep::Restore);
        let target = Target {
            node,
            agent,
            op_id: &op_id,
        };
        match self
            .farm
            .lb
            .undrain(&target, self.policy.return_timeout)
            .await
        {
            Ok(_) => {
                self.reporter
                    .detail(&node.name, "returned to rotation (operation not performed)");
                true
            }
            Err(e) => {
                self.reporter.detail(
                    &node.name,
                    &format!("could not be returned to rotation: {e}"),
                );
                false
            }
        }
    }

    /// Checks every [`DRAIN_WATCH`] that the LB still has the node out,
    /// and drains it again when it does not. Returns only when the driver
    /// cannot tell (then there is nothing to watch).
    async fn keep_drained(&self, agent: &dyn AgentApi, redrained: &std::sync::atomic::AtomicU32) {
        let node = self.farm.node(self.node);
        let lb = &*self.farm.lb;
        let op_id = self.op_id(OpStep::Drain);
        let target = Target {
            node,
            agent,
            op_id: &op_id,
        };
        loop {
            tokio::time::sleep(DRAIN_WATCH).await;
            match lb.still_drained(&target).await {
                Ok(None) => return,
                Ok(Some(true)) => {}
                Ok(Some(false)) => {
                    tracing::warn!(node = %node.name, lb = %lb.name(), "the load balancer forgot the drain");
                    let again = lb.drain(&target).await;
                    redrained.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    self.reporter.detail(
                        &node.name,
                        &match again {
                            Ok(()) => format!(
                                "{} had put it back in rotation; drained it again",
                                lb.name()
                            ),
                            Err(e) => format!(
                                "{} had put it back in rotation; draining it again failed: {e}",
                                lb.name()
                            ),
                        },
                    );
                }
                // A read that fails is no news: the action's own calls
                // report a load balancer that went away.
                Err(e) => tracing::debug!(node = %node.name, "drain watch: {e}"),
            }
        }
    }

    /// Does `action`, within `rollout.progress_deadline` when there is
    /// one: a step that makes no progress for that long fails the node
    /// like any failure of that step.
    async fn perform(
        &self,
        agent: &dyn AgentApi,
        action: Action,
        report: &mut NodeReport,
    ) -> Event {
        let action = self.dump_first(agent, action, report).await;
        let Some(limit) = self.settings.timeouts.progress_deadline else {
            return self.act(agent, action, report).await;
        };
        // A patch's install and restart have bounds of their own
        // (patch.install_timeout, patch.reboot_timeout).
        if matches!(action, Action::Operate { .. }) && self.settings.operation.restarts_server() {
            return self.act(agent, action, report).await;
        }
        let failed = |step: &str| {
            format!(
                "no progress in {step} within rollout.progress_deadline ({})",
                crate::human::duration(limit)
            )
        };
        let stuck = match &action {
            Action::Drain => Event::DrainFailed(failed("the drain")),
            Action::Quiesce { .. } => Event::LoadUnknown(failed("quiescing")),
            Action::Operate { .. } => Event::OperationFailed(failed("the operation")),
            Action::Probe { .. } => Event::Unhealthy(failed("the health probe")),
            Action::Return { .. } => Event::ReturnFailed(failed("the return")),
            Action::Switch { .. } => Event::SwitchFailed(failed("the switch")),
            Action::Revert { .. } => Event::RevertFailed(failed("the switch back")),
        };
        tokio::time::timeout(limit, self.act(agent, action, report))
            .await
            .unwrap_or(stuck)
    }

    async fn act(&self, agent: &dyn AgentApi, action: Action, report: &mut NodeReport) -> Event {
        let node = self.farm.node(self.node);
        let lb = &*self.farm.lb;
        let left = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
        match action {
            Action::Drain => {
                let op_id = self.op_id(OpStep::Drain);
                let target = Target {
                    node,
                    agent,
                    op_id: &op_id,
                };
                match lb.drain(&target).await {
                    Ok(()) => Event::Drained,
                    Err(e) => Event::DrainFailed(format!(
                        "could not drain {} from {}: {e}",
                        node.name,
                        lb.name()
                    )),
                }
            }
            Action::Quiesce { deadline } => match quiesce(lb, agent, node, left(deadline)).await {
                Ok(Quiesced::Idle) => Event::Idle,
                Ok(Quiesced::TimedOut) => {
                    if self.settings.timeouts.on_drain_timeout
                        == farm_inventory::OnDrainTimeout::Proceed
                    {
                        self.reporter.detail(
                            &node.name,
                            &format!(
                                "requests still in flight after drain_timeout ({}): going on (the recycle ends them)",
                                crate::human::duration(self.settings.timeouts.drain)
                            ),
                        );
                    }
                    Event::DrainTimedOut
                }
                Err(e) => Event::LoadUnknown(e.to_string()),
            },
            Action::Operate { .. } if self.settings.operation.restarts_server() => {
                self.restart_server(agent, report).await
            }
            Action::Operate { deadline } => {
                let op = self.settings.operation;
                let op_id = self.op_id(op.into());
                let request = OperationRequest {
                    kind: op,
                    pools: self.pools(agent).await,
                    stop_timeout: self.settings.timeouts.stop,
                };
                let reporter = self.reporter;
                let name = node.name.clone();
                let progress =
                    move |step: &str, msg: &str| reporter.detail(&name, &format!("{step}: {msg}"));
                match agent
                    .operate(&op_id, &request, left(deadline), &progress)
                    .await
                {
                    Ok(r) => {
                        for p in &r.pools {
                            report
                                .pids_before
                                .insert(p.name.clone(), p.pids_before.clone());
                            report
                                .pids_after
                                .insert(p.name.clone(), p.pids_after.clone());
                        }
                        Event::Operated(r)
                    }
                    // No result: the node may be half-way through it (after
                    // a lost reset, IIS may be stopped). Say so.
                    Err(e) => Event::OperationFailed(format!(
                        "{e}; no result came back, so the {op} may be unfinished on the node \
                         (check `farmctl status`; `farmctl resume` finishes the run)"
                    )),
                }
            }
            Action::Probe { deadline } => {
                let sites = &self.farm.inventory.sites;
                let prober = &self.farm.prober;
                let healthy = prober.until_healthy(node, sites, left(deadline)).await;
                let proven = match (healthy, self.deploy_site()) {
                    (Ok(()), Some((d, site))) => {
                        let (path, expect) = (&d.version_path, &d.version_expect);
                        prober
                            .until_serves(node, site, path, expect, left(deadline))
                            .await
                    }
                    (other, _) => other,
                };
                match proven {
                    Ok(()) => Event::Healthy,
                    Err(e) => Event::Unhealthy(e.to_string()),
                }
            }
            Action::Switch { .. } => {
                let Some(d) = &self.settings.deploy else {
                    return Event::SwitchFailed("not a deploy".into());
                };
                let to = SwitchTo {
                    site: d.site.clone(),
                    version: d.version.clone(),
                    hooks: d.hooks.clone(),
                    back: false,
                };
                match agent.switch(&self.op_id(OpStep::Switch), &to).await {
                    Ok(sw) => {
                        self.reporter.detail(
                            &node.name,
                            &format!("site {} {} -> {}", d.site, sw.previous, sw.version),
                        );
                        report.hooks = sw.hooks;
                        Event::Switched
                    }
                    Err(e) => Event::SwitchFailed(format!(
                        "could not switch site {} to {}: {e}",
                        d.site, d.version
                    )),
                }
            }
            Action::Revert { deadline } => match self.revert(agent, left(deadline)).await {
                Ok(()) => Event::Reverted,
                Err(e) => Event::RevertFailed(e.0),
            },
            Action::Return { deadline } => {
                let op_id = self.op_id(OpStep::Undrain);
                let target = Target {
                    node,
                    agent,
                    op_id: &op_id,
                };
                match lb.undrain(&target, left(deadline)).await {
                    Ok(took) => {
                        report
                            .phase_ms
                            .insert("lb_detect_up".into(), took.as_millis() as u64);
                        Event::Returned
                    }
                    Err(e) => Event::ReturnFailed(format!(
                        "could not return {} to {}: {e}",
                        node.name,
                        lb.name()
                    )),
                }
            }
        }
    }
}
