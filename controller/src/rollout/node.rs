//! One node's way through a run: feed the pure machine events, do the
//! actions it returns (drain, quiesce, operate, probe, return), journal
//! every transition before acting on it. A resumed node starts at its
//! journaled phase and repeats that phase's (idempotent) action, unless the
//! live node shows the interrupted operation already happened.
use farm_proto::domain::{NodeOutcome, OpStep, OperationId, Phase};
use tokio::time::Instant;

use super::machine::{self, Action, Event, FailedStep, Failure, NodeState, Policy, State};
use super::reconcile::{evidence, ResumePoint};
use crate::agent::{AgentApi, OperationRequest};
use crate::farm::Farm;
use crate::journal::Journal;
use crate::lb::Target;
use crate::quiesce::{quiesce, Quiesced};
use crate::report::{NodeReport, Reporter};
use crate::run::RunSettings;

/// What driving one node needs from its run.
pub(super) struct NodeRun<'r> {
    pub run_id: &'r str,
    pub farm: &'r Farm,
    pub settings: &'r RunSettings,
    pub policy: &'r Policy,
    pub reporter: &'r dyn Reporter,
    pub journal: Option<&'r Journal>,
    /// Inventory index of the node.
    pub node: usize,
    /// Where an earlier controller left the node, when resuming.
    pub resume: Option<&'r ResumePoint>,
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

    fn op_id(&self, step: OpStep) -> String {
        OperationId::new(self.run_id, self.name(), step).to_string()
    }

    /// Drives the node to done or failed; its report.
    pub(super) async fn drive(&self) -> NodeReport {
        let i = self.node;
        let agent = self.farm.agent(i);
        let mut report = NodeReport::new(self.name());
        let (mut node, mut step) = self.start(agent).await;
        if node.state != State::Pending {
            report.in_rotation = false;
        }
        loop {
            let acted = Instant::now();
            let event = match step {
                Step::Event(e) => e,
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
            let written = self.journal_phase(agent, &next).await;
            tracing::debug!(
                node = %self.name(),
                phase = %next.phase(),
                act_ms,
                journal_ms = journaled.elapsed().as_secs_f64() * 1000.0,
                "timing"
            );
            if let Err(e) = written {
                // Without the journal a crash could not be recovered: stop
                // before acting.
                node = NodeState {
                    state: State::Failed(Failure {
                        step: FailedStep::Journal,
                        reason: format!("could not write the run journal: {e}"),
                        restore: next.state == State::Draining,
                    }),
                    since: now,
                };
                break;
            }
            node = next;
            let Some(action) = action else { break };
            step = Step::Act(action);
        }
        match node.state {
            State::Done => {
                report.outcome = NodeOutcome::Succeeded;
                report.in_rotation = true;
            }
            State::Failed(f) => {
                report.outcome = NodeOutcome::Failed;
                report.failed_step = Some(f.step);
                report.error = Some(format!("{} at {}: {}", self.name(), f.step, f.reason));
                if !self.farm.lb.drains() {
                    report.in_rotation = true;
                } else if f.restore && !report.in_rotation {
                    report.in_rotation = self.restore(agent).await;
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
        let Some((node, action)) = machine::resume_at(point.phase, self.policy, now) else {
            return (NodeState::new(now), Step::Event(Event::Begin));
        };
        if let (Action::Operate { .. }, Some(before)) = (&action, &point.pids) {
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
    async fn journal_phase(&self, agent: &dyn AgentApi, next: &NodeState) -> std::io::Result<()> {
        let Some(j) = self.journal else {
            return Ok(());
        };
        let pids = if next.phase() == Phase::Operating {
            agent
                .status()
                .await
                .ok()
                .map(|v| v.pids_of(&self.settings.pools))
        } else {
            None
        };
        let detail = match &next.state {
            State::Failed(f) => Some(format!("{}: {}", f.step, f.reason)),
            _ => None,
        };
        let written = j.phase(self.name(), next.phase(), pids, detail);
        match next.phase() {
            Phase::Quiescing | Phase::Verifying | Phase::Done => Ok(()),
            _ => written.await,
        }
    }

    /// Puts back a node whose operation never ran, if it is healthy.
    async fn restore(&self, agent: &dyn AgentApi) -> bool {
        let node = self.farm.node(self.node);
        if let Err(e) = self.farm.probe_once(self.node).await {
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

    async fn perform(
        &self,
        agent: &dyn AgentApi,
        action: Action,
        report: &mut NodeReport,
    ) -> Event {
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
                Ok(Quiesced::TimedOut) => Event::DrainTimedOut,
                Err(e) => Event::LoadUnknown(e.to_string()),
            },
            Action::Operate { deadline } => {
                let op = self.settings.operation;
                let op_id = self.op_id(op.into());
                let request = OperationRequest {
                    kind: op,
                    pools: self.settings.pools.clone(),
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
                match self
                    .farm
                    .prober
                    .until_healthy(node, sites, left(deadline))
                    .await
                {
                    Ok(()) => Event::Healthy,
                    Err(e) => Event::Unhealthy(e),
                }
            }
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
