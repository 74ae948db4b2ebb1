//! Drives the per-node machine with real I/O: agents, load balancer,
//! probes. Nodes go in batches; the run halts when failures exceed the
//! budget, leaving every node it did not fail in rotation.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use farm_inventory::{Inventory, Node, OnFailure};
use futures::future::join_all;

use super::machine::{self, Action, Event, NodeState, Phase, Policy};
use super::plan;
use super::resume::ResumePoint;
use crate::agent::{AgentApi, Operation};
use crate::journal::{Journal, Record};
use crate::lb::{LoadBalancer, Target};
use crate::probe;
use crate::report::{NodeReport, Reporter, RunReport};

/// Asked after the canary node: go on with the others?
pub type CanaryConfirm<'a> = Box<dyn Fn(&NodeReport) -> bool + Send + Sync + 'a>;

/// Everything a run needs, resolved before it starts.
pub struct Run<'a> {
    pub run_id: String,
    pub inventory: &'a Inventory,
    /// Agents by node name.
    pub agents: HashMap<String, Arc<dyn AgentApi>>,
    pub lb: Arc<dyn LoadBalancer>,
    pub reporter: &'a dyn Reporter,
    pub policy: Policy,
    pub pools: Vec<String>,
    /// Nodes to act on, in order (indices into the inventory).
    pub selected: Vec<usize>,
    /// Nodes out of rotation before the run (skipped, but counted).
    pub already_out: Vec<usize>,
    /// Nodes out at once per batch (a ramp; the last step repeats).
    pub max_unavailable: Vec<usize>,
    pub min_healthy: usize,
    pub max_failures: u32,
    pub on_failure: OnFailure,
    /// Wait between batches.
    pub pause: Option<Duration>,
    /// Canary: the first batch is one node, then this is asked whether to
    /// go on (the command asks the operator).
    pub canary: Option<CanaryConfirm<'a>>,
    /// The maintenance window: no batch starts that would not fit.
    pub window: Option<crate::window::WindowGuard>,
    /// Every transition is written here before it is acted on.
    pub journal: Option<Arc<Journal>>,
    /// Where each node stood when an earlier controller stopped (resume).
    pub resume: HashMap<usize, ResumePoint>,
    /// Set when the operator asked to stop: no new batch is started.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
}

/// What the node's loop does next: feed an event, or act.
pub(super) enum Step {
    Event(Event),
    Act(Action),
}

impl Run<'_> {
    pub async fn execute(&self) -> RunReport {
        let started = Instant::now();
        let started_at =
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let names: Vec<String> = self
            .selected
            .iter()
            .map(|&i| self.node(i).name.clone())
            .collect();
        self.reporter
            .run_started(&self.run_id, self.policy.operation.as_str(), &names);

        let total = self.inventory.nodes.len();
        let mut reports: HashMap<usize, NodeReport> = HashMap::new();
        let mut failures = 0u32;
        let mut left_out = 0usize; // failed nodes we could not return
        let mut halted = None;
        // Resuming: nodes that had finished stay as they were; nodes caught
        // mid-way go first, together (they were out together before).
        let mut queue = std::collections::VecDeque::new();
        let mut mid_way = Vec::new();
        for &i in &self.selected {
            match self.resume.get(&i).map(|p| p.phase.as_str()) {
                None | Some("pending") => queue.push_back(i),
                Some("done") => {
                    reports.insert(i, self.finished_before(i, "succeeded"));
                }
                Some("failed") => {
                    failures += 1;
                    reports.insert(i, self.finished_before(i, "failed"));
                }
                Some(_) => mid_way.push(i),
            }
        }
        if !mid_way.is_empty() {
            let done = join_all(mid_way.iter().map(|&i| self.run_node(i))).await;
            for (i, r) in mid_way.into_iter().zip(done) {
                if r.outcome == "failed" {
                    failures += 1;
                    left_out += usize::from(!r.in_rotation);
                }
                self.reporter.node_finished(&r);
                reports.insert(i, r);
            }
        }
        let mut batch_no = 0;
        while !queue.is_empty()
            && (failures <= self.max_failures || self.on_failure == OnFailure::Continue)
        {
            if batch_no > 0 {
                if let Some(pause) = self.pause {
                    self.reporter.note(&format!(
                        "pausing {} before the next batch",
                        humantime::format_duration(pause)
                    ));
                    self.wait_or_stop(pause).await;
                }
            }
            if self.stop.as_ref().is_some_and(|s| *s.borrow()) {
                halted = Some("stopped by the operator; later nodes were not touched".into());
                break;
            }
            if let Some(why) = self.window.as_ref().and_then(|w| w.refuse()) {
                halted = Some(format!("{why}: the remaining nodes were not started"));
                break;
            }
            let mut size = plan::next_batch_size(
                total,
                self.already_out.len() + left_out,
                plan::step(&self.max_unavailable, batch_no),
                self.min_healthy,
                queue.len(),
            );
            if batch_no == 0 && self.canary.is_some() {
                size = size.min(1);
            }
            if size == 0 {
                halted = Some(format!(
                    "{left_out} failed node(s) are out of rotation; going on would break max_unavailable/min_healthy"
                ));
                break;
            }
            let batch: Vec<usize> = queue.drain(..size).collect();
            let done = join_all(batch.iter().map(|&i| self.run_node(i))).await;
            for (i, r) in batch.into_iter().zip(done) {
                if r.outcome == "failed" {
                    failures += 1;
                    if !r.in_rotation {
                        left_out += 1;
                    }
                }
                self.reporter.node_finished(&r);
                reports.insert(i, r);
            }
            if let (0, Some(confirm)) = (batch_no, &self.canary) {
                let canary = reports.values().next().cloned().unwrap_or_default();
                if canary.outcome == "succeeded" && !queue.is_empty() && !confirm(&canary) {
                    halted = Some(format!(
                        "stopped after the canary {} (not confirmed)",
                        canary.name
                    ));
                    break;
                }
            }
            batch_no += 1;
        }
        if halted.is_none() && failures > self.max_failures {
            halted = Some(format!(
                "{failures} node(s) failed (max_failures={}); later nodes were not touched",
                self.max_failures
            ));
        }
        let nodes = self
            .selected
            .iter()
            .map(|&i| {
                reports.remove(&i).unwrap_or_else(|| NodeReport {
                    name: self.node(i).name.clone(),
                    outcome: "skipped".into(),
                    in_rotation: true,
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>();
        let ok = halted.is_none() && nodes.iter().all(|n| n.outcome == "succeeded");
        let report = RunReport {
            run_id: self.run_id.clone(),
            action: self.policy.operation.as_str().into(),
            farm: self.inventory.farm.clone(),
            outcome: if ok { "succeeded" } else { "failed" }.into(),
            started_at,
            duration_ms: started.elapsed().as_millis() as u64,
            halted,
            nodes,
            traffic: None,
        };
        if let Some(j) = &self.journal {
            let end = Record::End {
                t: crate::journal::now(),
                outcome: report.outcome.clone(),
                halted: report.halted.clone(),
            };
            if let Err(e) = j.append(&end) {
                tracing::error!("could not write the end of the run to the journal: {e}");
            }
        }
        self.reporter.run_finished(&report);
        report
    }

    /// Waits `d`, or less if the operator asks to stop.
    async fn wait_or_stop(&self, d: Duration) {
        match &self.stop {
            Some(stop) => {
                let mut stop = stop.clone();
                let _ = tokio::time::timeout(d, stop.wait_for(|s| *s)).await;
            }
            None => tokio::time::sleep(d).await,
        }
    }

    pub(super) fn node(&self, i: usize) -> &Node {
        &self.inventory.nodes[i]
    }

    fn op_id(&self, i: usize, what: &str) -> String {
        format!("{}.{i}.{what}", self.run_id)
    }

    async fn run_node(&self, i: usize) -> NodeReport {
        let node = self.node(i);
        let mut report = NodeReport {
            name: node.name.clone(),
            in_rotation: true,
            ..Default::default()
        };
        let Some(agent) = self.agents.get(&node.name).cloned() else {
            report.outcome = "failed".into();
            report.error = Some(format!("no agent client for {}", node.name));
            return report;
        };
        let (mut state, mut step) = self.start(i, &*agent).await;
        if state.phase != Phase::Pending {
            report.in_rotation = false;
        }
        loop {
            let event = match step {
                Step::Event(e) => e,
                Step::Act(a) => self.perform(i, &*agent, a, &mut report).await,
            };
            let now = Instant::now();
            let (next, action) = machine::next(&self.policy, &state, event, now);
            if state.phase != Phase::Pending {
                *report
                    .phase_ms
                    .entry(state.phase.name().into())
                    .or_default() += now.duration_since(state.since).as_millis() as u64;
            }
            tracing::info!(node = %node.name, run_id = %self.run_id, phase = next.phase.name(), "transition");
            self.reporter.phase(&node.name, next.phase.name());
            // Out of rotation from the moment the drain is asked for.
            if next.phase == Phase::Draining {
                report.in_rotation = false;
            }
            if let Err(e) = self.journal_phase(i, &*agent, &next).await {
                // Without the journal a crash could not be recovered: stop
                // before acting.
                state = NodeState {
                    phase: Phase::Failed {
                        step: "journal",
                        reason: format!("could not write the run journal: {e}"),
                        restore: next.phase == Phase::Draining,
                    },
                    since: now,
                };
                break;
            }
            state = next;
            let Some(action) = action else { break };
            step = Step::Act(action);
        }
        match state.phase {
            Phase::Done => {
                report.outcome = "succeeded".into();
                report.in_rotation = true;
            }
            Phase::Failed {
                step,
                reason,
                restore,
            } => {
                report.outcome = "failed".into();
                report.failed_step = Some(step.into());
                report.error = Some(format!("{} at {step}: {reason}", node.name));
                if !self.lb.drains() {
                    report.in_rotation = true;
                } else if restore && !report.in_rotation {
                    report.in_rotation = self.restore(i, &*agent).await;
                }
            }
            _ => {}
        }
        report
    }

    /// Puts back a node whose operation never ran, if it is healthy.
    async fn restore(&self, i: usize, agent: &dyn AgentApi) -> bool {
        let node = self.node(i);
        if let Err(e) = probe::probe_node_once(node, &self.inventory.sites).await {
            self.reporter.detail(
                &node.name,
                &format!("left out of rotation: not healthy ({e})"),
            );
            return false;
        }
        let op_id = self.op_id(i, "restore");
        let target = Target {
            node,
            agent,
            op_id: &op_id,
        };
        match self.lb.undrain(&target, self.policy.return_timeout).await {
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
        i: usize,
        agent: &dyn AgentApi,
        action: Action,
        report: &mut NodeReport,
    ) -> Event {
        let node = self.node(i);
        let left = |deadline: Instant| deadline.saturating_duration_since(Instant::now());
        match action {
            Action::Drain => {
                let op_id = self.op_id(i, "drain");
                match self
                    .lb
                    .drain(&Target {
                        node,
                        agent,
                        op_id: &op_id,
                    })
                    .await
                {
                    Ok(()) => Event::Drained,
                    Err(e) => Event::DrainFailed(e.to_string()),
                }
            }
            // Quiesced means both sides agree: the LB has no session left on
            // the node and the node itself has no request in flight.
            Action::Quiesce { deadline } => {
                let t = Instant::now();
                match self.lb.wait_sessions_gone(node, left(deadline)).await {
                    Ok(true) => {}
                    Ok(false) => return Event::DrainTimedOut,
                    Err(e) => return Event::LoadUnknown(e.to_string()),
                }
                tracing::debug!(node = %node.name, lb_ms = t.elapsed().as_secs_f64() * 1000.0, "LB has no session left");
                let idle = agent.wait_idle(left(deadline)).await;
                tracing::debug!(node = %node.name, total_ms = t.elapsed().as_secs_f64() * 1000.0, "node answered in-flight");
                match idle {
                    Ok(true) => Event::Idle,
                    Ok(false) => Event::DrainTimedOut,
                    Err(e) => Event::LoadUnknown(e.to_string()),
                }
            }
            Action::Operate { deadline } => {
                let op = self.policy.operation;
                let op_id = self.op_id(i, op.as_str());
                let reporter = self.reporter;
                let name = node.name.clone();
                let progress =
                    move |step: &str, msg: &str| reporter.detail(&name, &format!("{step}: {msg}"));
                match agent
                    .operate(op, &op_id, &self.pools, left(deadline), &progress)
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
                        "{e}; no result came back, so the {} may be unfinished on the node \
                         (check `farmctl status`; `farmctl resume` finishes the run)",
                        op.as_str()
                    )),
                }
            }
            Action::Probe { deadline } => {
                match probe::wait_healthy(node, &self.inventory.sites, left(deadline)).await {
                    Ok(()) => Event::Healthy,
                    Err(e) => Event::Unhealthy(e),
                }
            }
            Action::Return { deadline } => {
                let op_id = self.op_id(i, "undrain");
                match self
                    .lb
                    .undrain(
                        &Target {
                            node,
                            agent,
                            op_id: &op_id,
                        },
                        left(deadline),
                    )
                    .await
                {
                    Ok(took) => {
                        report
                            .phase_ms
                            .insert("lb_detect_up".into(), took.as_millis() as u64);
                        Event::Returned
                    }
                    Err(e) => Event::ReturnFailed(e.to_string()),
                }
            }
        }
    }
}

/// The machine's policy for an inventory and operation.
pub fn policy(inv: &Inventory, op: Operation, drains: bool) -> Policy {
    Policy {
        operation: op,
        drains,
        drain_timeout: inv.rollout.drain_timeout,
        on_drain_timeout: inv.rollout.on_drain_timeout,
        operation_timeout: inv.rollout.operation_timeout,
        healthy_timeout: inv.rollout.healthy_timeout,
        return_timeout: inv.rollout.healthy_timeout.max(Duration::from_secs(30)),
    }
}
