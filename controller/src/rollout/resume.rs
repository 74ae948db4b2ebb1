//! Picking a run up from its journal: where each node was, and whether an
//! interrupted operation already happened on the live node.
use std::collections::{BTreeMap, HashMap};

use farm_inventory::Inventory;

use std::time::Instant;

use super::engine::{Run, Step};
use super::machine::{self, Action, Event, NodeState, Phase};
use crate::agent::{AgentApi, NodeView, Operation, OperationReport, PoolChange};
use crate::journal::{LoadedRun, Record};
use crate::report::NodeReport;

/// Where a node was when the run stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    /// `pending`, `draining`, ..., `done`, `failed`.
    pub phase: String,
    /// Worker PIDs per pool just before the operation started, if it did.
    pub pids: Option<BTreeMap<String, Vec<u32>>>,
    pub detail: Option<String>,
}

/// The resume point of every node of the run, by inventory index. A node
/// of the run that the inventory no longer has is an error.
pub fn points(run: &LoadedRun, inv: &Inventory) -> Result<HashMap<usize, ResumePoint>, String> {
    let Record::Run { nodes, .. } = &run.header else {
        return Err("the journal has no run header".into());
    };
    let mut out = HashMap::new();
    for name in nodes {
        let i = inv
            .nodes
            .iter()
            .position(|n| &n.name == name)
            .ok_or_else(|| format!("node {name} of the run is not in the inventory any more"))?;
        let point = match run.last.get(name) {
            Some(Record::Phase { phase, detail, .. }) => ResumePoint {
                phase: phase.clone(),
                pids: run.pids.get(name).cloned(),
                detail: detail.clone(),
            },
            _ => ResumePoint {
                phase: "pending".into(),
                pids: None,
                detail: None,
            },
        };
        out.insert(i, point);
    }
    Ok(out)
}

/// If every pool that had workers before the operation now runs only new
/// ones (and, for a reset, IIS runs), the operation happened: the report
/// the agent would have sent. `None` when it did not (or cannot be told),
/// and the operation is to be asked for again under its operation id.
pub fn evidence(
    op: Operation,
    before: &BTreeMap<String, Vec<u32>>,
    now: &NodeView,
) -> Option<OperationReport> {
    let mut pools = Vec::new();
    for (name, old) in before {
        let p = now.pool(name)?;
        if old.is_empty() || p.pids.is_empty() || p.pids.iter().any(|pid| old.contains(pid)) {
            return None;
        }
        pools.push(PoolChange {
            name: name.clone(),
            pids_before: old.clone(),
            pids_after: p.pids.clone(),
            state_after: p.state.clone(),
            had_no_worker: false,
        });
    }
    if pools.is_empty() || (op == Operation::Reset && !now.iis_running()) {
        return None;
    }
    Some(OperationReport {
        success: true,
        pools,
        services: now.services.clone(),
        ..Default::default()
    })
}

impl Run<'_> {
    /// A node the journal says had finished before this (resumed) run.
    pub(super) fn finished_before(&self, i: usize, outcome: &str) -> NodeReport {
        let detail = self.resume.get(&i).and_then(|p| p.detail.clone());
        NodeReport {
            name: self.node(i).name.clone(),
            outcome: outcome.into(),
            in_rotation: outcome == "succeeded",
            error: detail,
            ..Default::default()
        }
    }

    /// Where the node's loop starts: a fresh node begins; a resumed one
    /// repeats the action of its phase, unless the live node shows that an
    /// interrupted operation already happened.
    pub(super) async fn start(&self, i: usize, agent: &dyn AgentApi) -> (NodeState, Step) {
        let now = Instant::now();
        let Some(point) = self.resume.get(&i) else {
            return (NodeState::new(now), Step::Event(Event::Begin));
        };
        let Some((state, action)) = machine::resume_at(&point.phase, &self.policy, now) else {
            return (NodeState::new(now), Step::Event(Event::Begin));
        };
        if let (Action::Operate { .. }, Some(before)) = (&action, &point.pids) {
            if let Ok(view) = agent.status().await {
                if let Some(report) = evidence(self.policy.operation, before, &view) {
                    self.reporter.detail(
                        &self.node(i).name,
                        "the interrupted operation had already happened (new worker PIDs)",
                    );
                    return (state, Step::Event(Event::Operated(report)));
                }
            }
        }
        (state, Step::Act(action))
    }

    /// Journals a node's new phase; entering `operating`, with the worker
    /// PIDs of the moment, so resume can tell whether the operation ran.
    pub(super) async fn journal_phase(
        &self,
        i: usize,
        agent: &dyn AgentApi,
        next: &NodeState,
    ) -> std::io::Result<()> {
        let Some(j) = &self.journal else {
            return Ok(());
        };
        let pids = if next.phase == Phase::Operating {
            agent.status().await.ok().map(|v| {
                v.pools
                    .iter()
                    .filter(|p| {
                        self.pools.is_empty()
                            || self.pools.iter().any(|q| q.eq_ignore_ascii_case(&p.name))
                    })
                    .filter(|p| !p.pids.is_empty())
                    .map(|p| (p.name.clone(), p.pids.clone()))
                    .collect()
            })
        } else {
            None
        };
        let detail = match &next.phase {
            Phase::Failed { step, reason, .. } => Some(format!("{step}: {reason}")),
            _ => None,
        };
        j.phase(&self.node(i).name, next.phase.name(), pids, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::PoolView;

    fn view(pids: &[u32]) -> NodeView {
        NodeView {
            node: "web01".into(),
            backend: "sim".into(),
            services: [("W3SVC", "RUNNING"), ("WAS", "RUNNING")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            pools: vec![PoolView {
                name: "Shop".into(),
                state: "Started".into(),
                pids: pids.to_vec(),
            }],
            in_flight: Some(0),
            drained: true,
            lease: None,
            notice: None,
        }
    }

    #[test]
    fn new_pids_prove_the_operation_ran() {
        let before = BTreeMap::from([("Shop".to_string(), vec![10])]);
        let r = evidence(Operation::Recycle, &before, &view(&[14])).unwrap();
        assert!(r.success);
        assert_eq!(r.pools[0].pids_after, [14]);
        assert!(evidence(Operation::Recycle, &before, &view(&[10])).is_none());
        assert!(
            evidence(Operation::Recycle, &before, &view(&[10, 14])).is_none(),
            "old worker still there"
        );
        assert!(evidence(Operation::Recycle, &before, &view(&[])).is_none());
        let mut stopped = view(&[14]);
        stopped.services.insert("WAS".into(), "STOPPED".into());
        assert!(evidence(Operation::Reset, &before, &stopped).is_none());
    }
}
