//! Resuming a node that was mid-way: where it was, and whether an
//! interrupted operation already happened on the live node.
use std::collections::BTreeMap;

use farm_proto::domain::{OperationKind, Phase};

use crate::agent::{NodeView, OperationReport, PoolChange};

/// Where a node was when the run stopped, from the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    pub phase: Phase,
    /// Worker PIDs per pool just before the operation started, if it did.
    pub pids: Option<BTreeMap<String, Vec<u32>>>,
    /// A finished node's PIDs after the operation, as journaled.
    pub pids_after: Option<BTreeMap<String, Vec<u32>>>,
    /// Milliseconds the journal shows the node spent in each phase.
    pub phase_ms: BTreeMap<String, u64>,
    pub detail: Option<String>,
    /// Where a failed node failed.
    pub failed_step: Option<crate::machine::FailedStep>,
    /// The attempt at the node (1, or more once a resume retried it):
    /// its operation ids say which.
    pub attempt: u32,
    /// Patch or reboot: the boot its server was on when its restart was
    /// asked (the restart is waited for, never asked again).
    pub boot_before: Option<crate::agent::BootView>,
}

/// If every pool that had workers before the operation now runs only new
/// ones (and, for a reset, IIS runs), the operation happened: the report
/// the agent would have sent. `None` when it did not (or cannot be told),
/// and the operation is to be asked for again under its operation id.
pub fn evidence(
    op: OperationKind,
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
            state_after: p.state,
            had_no_worker: false,
        });
    }
    if pools.is_empty() || (op == OperationKind::Reset && !now.iis_running()) {
        return None;
    }
    Some(OperationReport {
        success: true,
        pools,
        services: now.services.clone(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use farm_proto::domain::{PoolState, ServiceState};

    use super::*;
    use crate::agent::PoolView;

    fn view(pids: &[u32]) -> NodeView {
        NodeView {
            node: "web01".into(),
            backend: "sim".into(),
            services: [
                ("W3SVC", ServiceState::Running),
                ("WAS", ServiceState::Running),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), *b))
            .collect(),
            pools: vec![PoolView {
                stopped_by: None,
                name: "Shop".into(),
                state: PoolState::Started,
                pids: pids.to_vec(),
            }],
            sites: vec![],
            in_flight: Some(0),
            drained: true,
            lease: None,
            notice: None,
            boot: None,
            reboot_pending: None,
            updates_pending: None,
            service_start: None,
        }
    }

    #[test]
    fn new_pids_prove_the_operation_ran() {
        let before = BTreeMap::from([("Shop".to_string(), vec![10])]);
        let r = evidence(OperationKind::Recycle, &before, &view(&[14])).unwrap();
        assert!(r.success);
        assert_eq!(r.pools[0].pids_after, [14]);
        assert!(evidence(OperationKind::Recycle, &before, &view(&[10])).is_none());
        assert!(
            evidence(OperationKind::Recycle, &before, &view(&[10, 14])).is_none(),
            "old worker still there"
        );
        assert!(evidence(OperationKind::Recycle, &before, &view(&[])).is_none());
        let mut stopped = view(&[14]);
        stopped.services.insert("WAS".into(), ServiceState::Stopped);
        assert!(evidence(OperationKind::Reset, &before, &stopped).is_none());
    }
}
