//! Run reports (the JSON keys are a documented contract), the `Reporter`
//! trait the engine talks to, and its plain-line implementation (the
//! binary adds progress bars on a terminal).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use farm_proto::domain::{NodeOutcome, OperationKind, Phase};
use serde::Serialize;

use crate::machine::FailedStep;

farm_proto::named_enum! {
    /// How a run ended.
    RunOutcome {
        Succeeded = "succeeded",
        /// Failed or halted part-way.
        Failed = "failed",
        /// The operator stopped it (Ctrl-C, `n` at the canary question):
        /// the nodes at work were finished, later ones not started. Exit 1
        /// as a failure; `farmctl resume` goes on.
        Stopped = "stopped",
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunReport {
    pub run_id: String,
    pub action: OperationKind,
    pub farm: String,
    /// `succeeded` or `failed` (a halted run failed).
    pub outcome: RunOutcome,
    pub started_at: String,
    pub duration_ms: u64,
    /// A resumed run: when its first controller started it, and the whole
    /// run's time since (controllers' silence included), where `started_at`
    /// and `duration_ms` are this controller's part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_duration_ms: Option<u64>,
    /// Why the run stopped before the end, if it did.
    pub halted: Option<String>,
    pub nodes: Vec<NodeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficReport>,
    /// The canary analysis, when the run had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisReport>,
    /// With an analysis: whether the switched nodes were rolled back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<bool>,
}

/// A canary analysis: the verdict and every interval's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AnalysisReport {
    /// `pass`, `fail` or `inconclusive`; `null` when the soak was cut
    /// (the operator stopped the run): a resume judges again.
    pub verdict: Option<crate::judge::Outcome>,
    pub reason: String,
    pub canaries: Vec<String>,
    /// The nodes still on the old release the canaries were judged against.
    pub baseline: Vec<String>,
    pub soak_s: f64,
    pub intervals: Vec<IntervalReport>,
    /// What the switched nodes go back to on a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_to: Option<String>,
}

/// One judgement of a soak, over the soak so far.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct IntervalReport {
    pub at: String,
    /// Seconds into the soak.
    pub elapsed_s: f64,
    pub result: crate::judge::Outcome,
    pub metrics: Vec<crate::judge::Metric>,
}

impl IntervalReport {
    /// One line for people: the result and each metric's figures.
    pub fn line(&self) -> String {
        let metrics: Vec<String> = self
            .metrics
            .iter()
            .map(|m| format!("{} {}: {}", m.name, m.result, m.reason))
            .collect();
        format!(
            "analysis at {:.0}s: {} — {}",
            self.elapsed_s,
            self.result,
            metrics.join("; ")
        )
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeReport {
    pub name: String,
    /// `succeeded`, `failed` or `skipped`.
    pub outcome: NodeOutcome,
    /// Milliseconds spent in each phase.
    pub phase_ms: BTreeMap<String, u64>,
    /// Worker PIDs per pool before and after the operation.
    pub pids_before: BTreeMap<String, Vec<u32>>,
    pub pids_after: BTreeMap<String, Vec<u32>>,
    pub error: Option<String>,
    pub failed_step: Option<FailedStep>,
    /// Whether the node serves traffic at the end of the run.
    pub in_rotation: bool,
    /// Deploy and rollback: the release the node serves at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Deploy: the hooks the agent ran after the switch.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::agent::HookRun>,
    /// Times the load balancer put the node back while it was out and it
    /// was drained again.
    pub lb_redrains: u32,
    /// `recycle --outliers`: what each sick pool was doing just before
    /// it was recycled.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<crate::agent::Diagnostics>,
    /// `recycle --outliers`: the node's traffic over the window before the
    /// recycle, and since it returned (at the end of the run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_before: Option<crate::health::NodeTraffic>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic_after: Option<crate::health::NodeTraffic>,
    /// The guard's action with `guard.dump`: the memory dumps taken of
    /// each pool after the node was drained and quiet, before its recycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dumps: Vec<crate::agent::DumpView>,
    /// Patch: each update the node installed, with its result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<crate::agent::UpdateOutcome>,
    /// Patch and reboot: the node's restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reboot: Option<RebootReport>,
}

/// A node's restart, as a patch or reboot saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RebootReport {
    /// The boot ids before and after.
    pub boot_before: String,
    pub boot_after: String,
    /// When the node booted (its own clock), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_at: Option<String>,
    /// When the restart was asked.
    pub asked_at: String,
    /// From the restart asked to its agent's first answer from the new
    /// boot, then to IIS running there.
    pub back_after_ms: u64,
    pub iis_after_ms: u64,
}

impl NodeReport {
    /// A node not (yet) acted on: skipped, in rotation.
    pub fn new(name: &str) -> Self {
        NodeReport {
            name: name.to_string(),
            outcome: NodeOutcome::Skipped,
            phase_ms: BTreeMap::new(),
            pids_before: BTreeMap::new(),
            pids_after: BTreeMap::new(),
            error: None,
            failed_step: None,
            in_rotation: true,
            version: None,
            hooks: Vec::new(),
            lb_redrains: 0,
            diagnostics: Vec::new(),
            traffic_before: None,
            traffic_after: None,
            dumps: Vec::new(),
            updates: Vec::new(),
            reboot: None,
        }
    }
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
        self.outcome == RunOutcome::Succeeded
    }
}

/// Told about a run while it goes. Implementations: plain lines, progress
/// bars, JSON at the end, or nothing (tests).
pub trait Reporter: Send + Sync {
    fn run_started(&self, _run_id: &str, _action: OperationKind, _nodes: &[String]) {}
    fn phase(&self, _node: &str, _phase: Phase) {}
    fn detail(&self, _node: &str, _message: &str) {}
    fn node_finished(&self, _node: &NodeReport) {}
    fn note(&self, _message: &str) {}
    /// A judgement of the canaries during the soak.
    fn analysis_interval(&self, interval: &IntervalReport) {
        self.note(&interval.line());
    }
    /// The canary analysis decided: `promote` or `roll_back`.
    fn analysis_verdict(&self, analysis: &AnalysisReport, action: &str) {
        self.note(&format!(
            "canary analysis: {} — {} ({})",
            analysis.verdict.map_or("cut short", |v| v.as_str()),
            if action == "promote" {
                "the release goes on to the other nodes"
            } else {
                "rolling back"
            },
            analysis.reason
        ));
    }
    fn run_finished(&self, _report: &RunReport) {}
}

/// Says nothing.
pub struct Silent;
impl Reporter for Silent {}

/// The human summary printed at the end of a run.
pub fn summary(r: &RunReport) -> String {
    let mut out = format!(
        "{} {} of farm {}: {} in {:.1}s (run {}{})\n",
        r.action,
        match r.outcome {
            RunOutcome::Succeeded => "done",
            RunOutcome::Stopped => "STOPPED",
            RunOutcome::Failed => "FAILED",
        },
        r.farm,
        r.outcome,
        r.duration_ms as f64 / 1000.0,
        r.run_id,
        match (&r.run_started_at, r.run_duration_ms) {
            (Some(at), Some(ms)) => format!(
                "; resumed: {:.1}s since it started at {at}",
                ms as f64 / 1000.0
            ),
            _ => String::new(),
        }
    );
    if let Some(h) = &r.halted {
        out.push_str(&format!("halted: {h}\n"));
        let failed = r.nodes.iter().any(|n| n.outcome == NodeOutcome::Failed);
        if r.rolled_back == Some(true) {
            out.push_str("nothing to resume: the release was rolled back; deploy a fixed one\n");
        } else {
            out.push_str(&format!(
            "to finish it: farmctl resume {}{}\n",
            r.run_id,
            if failed {
                " --retry-failed (do the failed nodes again) or --skip-failed (go on without them)"
            } else {
                ""
            }
        ));
        }
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
            "  {:<12} {:<9} {:<14} {}{}{}\n",
            n.name,
            n.outcome.as_str(),
            if n.in_rotation {
                "in rotation"
            } else {
                "OUT OF ROTATION"
            },
            n.version
                .as_ref()
                .map(|v| format!("serves {v}  "))
                .unwrap_or_default(),
            pids,
            n.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        ));
        if let Some(line) = patch_line(&n.updates, n.reboot.as_ref()) {
            out.push_str(&format!("  {:<12} {line}\n", ""));
        }
    }
    if let Some(a) = &r.analysis {
        out.push_str(&format!(
            "analysis: {} after {:.0}s on {} against {}: {}\n",
            a.verdict.map_or("cut short", |v| v.as_str()),
            a.intervals.last().map_or(0.0, |i| i.elapsed_s),
            a.canaries.join(", "),
            a.baseline.join(", "),
            a.reason
        ));
        if r.rolled_back == Some(true) {
            out.push_str(&format!(
                "rolled back: every node the release reached serves {} again\n",
                a.rollback_to.as_deref().unwrap_or("the previous release")
            ));
        }
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

/// What a patch or reboot did on a node, in one line: its updates with
/// their results, and its restart.
pub fn patch_line(
    updates: &[crate::agent::UpdateOutcome],
    reboot: Option<&RebootReport>,
) -> Option<String> {
    if updates.is_empty() && reboot.is_none() {
        return None;
    }
    let mut parts = Vec::new();
    if !updates.is_empty() {
        parts.push(format!(
            "updates: {}",
            updates
                .iter()
                .map(|u| {
                    let name = if u.kb.is_empty() { &u.title } else { &u.kb };
                    match (&u.hresult, u.result.as_str()) {
                        (_, "succeeded") => name.to_string(),
                        (Some(h), r) => format!("{name} {r} ({h})"),
                        (None, r) => format!("{name} {r}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(b) = reboot {
        parts.push(format!(
            "restarted: back after {}, IIS after {}",
            crate::human::duration(Duration::from_millis(b.back_after_ms)),
            crate::human::duration(Duration::from_millis(b.iis_after_ms))
        ));
    }
    Some(parts.join("; "))
}

/// One line per event on stderr, with the time since the run started.
pub struct Lines {
    start: Instant,
}

impl Lines {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    fn line(&self, text: &str) {
        crate::errln!("{:>8.2}s {text}", self.start.elapsed().as_secs_f64());
    }
}

impl Default for Lines {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Lines {
    fn run_started(&self, run_id: &str, action: OperationKind, nodes: &[String]) {
        self.line(&format!(
            "run {run_id}: rolling {action} of {}",
            nodes.join(", ")
        ));
    }
    fn phase(&self, node: &str, phase: Phase) {
        self.line(&format!("[{node}] {phase}"));
    }
    fn detail(&self, node: &str, message: &str) {
        self.line(&format!("[{node}]   {message}"));
    }
    fn node_finished(&self, n: &NodeReport) {
        let extra = n
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        self.line(&format!("[{}] {}{extra}", n.name, n.outcome));
    }
    fn note(&self, message: &str) {
        self.line(message);
    }
}

/// Several reporters told the same things (progress on stderr, events on
/// stdout, webhooks).
pub struct Tee(pub Vec<std::sync::Arc<dyn Reporter>>);

impl Reporter for Tee {
    fn run_started(&self, run_id: &str, action: OperationKind, nodes: &[String]) {
        self.0
            .iter()
            .for_each(|r| r.run_started(run_id, action, nodes));
    }
    fn phase(&self, node: &str, phase: Phase) {
        self.0.iter().for_each(|r| r.phase(node, phase));
    }
    fn detail(&self, node: &str, message: &str) {
        self.0.iter().for_each(|r| r.detail(node, message));
    }
    fn node_finished(&self, n: &NodeReport) {
        self.0.iter().for_each(|r| r.node_finished(n));
    }
    fn note(&self, message: &str) {
        self.0.iter().for_each(|r| r.note(message));
    }
    fn analysis_interval(&self, interval: &IntervalReport) {
        self.0.iter().for_each(|r| r.analysis_interval(interval));
    }
    fn analysis_verdict(&self, analysis: &AnalysisReport, action: &str) {
        self.0
            .iter()
            .for_each(|r| r.analysis_verdict(analysis, action));
    }
    fn run_finished(&self, report: &RunReport) {
        self.0.iter().for_each(|r| r.run_finished(report));
    }
}

/// `--output jsonl`: one JSON object per event on stdout, as it happens
/// (keys in the README). The last line, `run_finished`, carries the whole
/// report and is written by the command once the run is over.
#[derive(Default)]
pub struct JsonLines {
    run_id: std::sync::Mutex<String>,
}

impl JsonLines {
    fn emit(value: serde_json::Value) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }

    fn run_id(&self) -> String {
        self.run_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn event(&self, event: &str, mut fields: serde_json::Value) {
        fields["event"] = event.into();
        fields["time"] = crate::clock::now().into();
        let id = self.run_id();
        // Notes before the run has an id (preflight) carry null.
        fields["run_id"] = if id.is_empty() {
            serde_json::Value::Null
        } else {
            id.into()
        };
        Self::emit(fields);
    }

    /// The last line of a stream whose command was refused or failed
    /// before it had a run: `run_finished` with the outcome word and why.
    pub fn refused(answer: &serde_json::Value) {
        let mut fields = answer.clone();
        fields["event"] = "run_finished".into();
        fields["time"] = crate::clock::now().into();
        if fields.get("run_id").is_none() {
            fields["run_id"] = serde_json::Value::Null;
        }
        Self::emit(fields);
    }

    /// The last line of a run's stream.
    pub fn finished(report: &RunReport) {
        Self::emit(serde_json::json!({
            "event": "run_finished",
            "time": crate::clock::now(),
            "run_id": report.run_id,
            "outcome": report.outcome,
            "halted": report.halted,
            "duration_ms": report.duration_ms,
            "report": report,
        }));
    }
}

impl Reporter for JsonLines {
    fn run_started(&self, run_id: &str, action: OperationKind, nodes: &[String]) {
        *self.run_id.lock().unwrap_or_else(|e| e.into_inner()) = run_id.to_string();
        self.event(
            "run_started",
            serde_json::json!({
                "action": action,
                "nodes": nodes,
                "nodes_count": nodes.len(),
                "node_list": nodes.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
            }),
        );
    }
    fn phase(&self, node: &str, phase: Phase) {
        self.event(
            "phase",
            serde_json::json!({"node": node, "name": node, "phase": phase}),
        );
    }
    fn detail(&self, node: &str, message: &str) {
        self.event(
            "detail",
            serde_json::json!({"node": node, "name": node, "message": message}),
        );
    }
    fn node_finished(&self, n: &NodeReport) {
        self.event(
            "node_finished",
            serde_json::json!({
                "node": n.name,
                "name": n.name,
                "outcome": n.outcome,
                "in_rotation": n.in_rotation,
                "error": n.error,
                "failed_step": n.failed_step,
                "version": n.version,
                "phase_ms": n.phase_ms,
            }),
        );
    }
    fn note(&self, message: &str) {
        self.event("note", serde_json::json!({"message": message}));
    }
    fn analysis_interval(&self, interval: &IntervalReport) {
        self.event(
            "analysis_interval",
            serde_json::json!({
                "elapsed_s": interval.elapsed_s,
                "result": interval.result,
                "metrics": interval.metrics,
            }),
        );
    }
    fn analysis_verdict(&self, a: &AnalysisReport, action: &str) {
        self.event(
            "analysis_verdict",
            serde_json::json!({
                "verdict": a.verdict,
                "action": action,
                "reason": a.reason,
                "canaries": a.canaries,
                "baseline": a.baseline,
                "rollback_to": a.rollback_to,
            }),
        );
    }
}
