//! Run reports (the JSON keys are a documented contract) and the
//! `Reporter` trait the engine talks to.
use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub run_id: String,
    pub action: String,
    pub farm: String,
    /// `succeeded` or `failed` (a halted run failed).
    pub outcome: String,
    pub started_at: String,
    pub duration_ms: u64,
    /// Why the run stopped before the end, if it did.
    pub halted: Option<String>,
    pub nodes: Vec<NodeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct NodeReport {
    pub name: String,
    /// `succeeded`, `failed` or `skipped`.
    pub outcome: String,
    /// Milliseconds spent in each phase.
    pub phase_ms: BTreeMap<String, u64>,
    /// Worker PIDs per pool before and after the operation.
    pub pids_before: BTreeMap<String, Vec<u32>>,
    pub pids_after: BTreeMap<String, Vec<u32>>,
    pub error: Option<String>,
    pub failed_step: Option<String>,
    /// Whether the node serves traffic at the end of the run.
    pub in_rotation: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct TrafficReport {
    pub requests_sent: u64,
    pub requests_failed: u64,
    /// Failures by kind (`503`, `connection refused`, ...).
    pub failures: BTreeMap<String, u64>,
}

impl RunReport {
    pub fn succeeded(&self) -> bool {
        self.outcome == "succeeded"
    }
}

/// Told about a run while it goes. Implementations: plain lines, progress
/// bars, JSON at the end, or nothing (tests).
pub trait Reporter: Send + Sync {
    fn run_started(&self, _run_id: &str, _action: &str, _nodes: &[String]) {}
    fn phase(&self, _node: &str, _phase: &str) {}
    fn detail(&self, _node: &str, _message: &str) {}
    fn node_finished(&self, _node: &NodeReport) {}
    fn note(&self, _message: &str) {}
    fn run_finished(&self, _report: &RunReport) {}
}

/// Says nothing.
pub struct Silent;
impl Reporter for Silent {}

/// The human summary printed at the end of a run.
pub fn summary(r: &RunReport) -> String {
    let mut out = format!(
        "{} {} of farm {}: {} in {:.1}s (run {})\n",
        r.action,
        if r.succeeded() { "done" } else { "FAILED" },
        r.farm,
        r.outcome,
        r.duration_ms as f64 / 1000.0,
        r.run_id
    );
    if let Some(h) = &r.halted {
        out.push_str(&format!("halted: {h}\n"));
    }
    for n in &r.nodes {
        let pids = n
            .pids_before
            .iter()
            .map(|(pool, before)| {
                let after = n.pids_after.get(pool).cloned().unwrap_or_default();
                format!("{pool} {:?}->{:?}", before, after)
            })
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "  {:<12} {:<9} {:<14} {}{}\n",
            n.name,
            n.outcome,
            if n.in_rotation {
                "in rotation"
            } else {
                "OUT OF ROTATION"
            },
            pids,
            n.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        ));
    }
    if let Some(t) = &r.traffic {
        out.push_str(&format!(
            "traffic: {} requests sent, {} failed{}\n",
            t.requests_sent,
            t.requests_failed,
            if t.failures.is_empty() {
                String::new()
            } else {
                format!(" ({:?})", t.failures)
            }
        ));
    }
    out
}
