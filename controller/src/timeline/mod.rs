//! A run as a picture: each node's phases with their times, the farm's
//! capacity over the run, versions and errors — read back from the
//! run's journal. Shown as text (`farmctl runs show`) or as one
//! self-contained HTML page (`--html`, see [`html`]).
pub mod html;

use std::time::SystemTime;

use farm_proto::domain::{OperationKind, Phase};
use serde::Serialize;

use crate::journal::LoadedRun;
use crate::rollout::node_returned as RETURNED;

/// One stretch of a node in one phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub phase: Phase,
    /// From the run's start, in milliseconds.
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeLine {
    pub name: String,
    /// Where the node ended: `done`, `failed`, or the phase the journal
    /// stops in.
    pub last: Phase,
    /// The node's result in the words of reports: `succeeded`, `failed`,
    /// or `unfinished` while the journal stops mid-way, `skipped` when it
    /// never started.
    pub outcome: &'static str,
    pub segments: Vec<Segment>,
    /// Milliseconds in each phase (the report's `phase_ms`).
    pub phase_ms: std::collections::BTreeMap<String, u64>,
    /// Worker PIDs per pool before and after the operation, as journaled.
    pub pids_before: std::collections::BTreeMap<String, Vec<u32>>,
    pub pids_after: std::collections::BTreeMap<String, Vec<u32>>,
    /// Whether the node was serving when the journal ends.
    pub in_rotation: bool,
    /// Why it failed, and when (ms from the start).
    pub error: Option<(u64, String)>,
    /// Deploys: the release it ended on, as far as the journal tells.
    pub version: Option<String>,
}

/// Milliseconds in each phase, as a report counts them (pending apart).
fn phase_ms(segments: &[Segment]) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for s in segments.iter().filter(|s| s.phase != Phase::Pending) {
        *m.entry(s.phase.as_str().to_string()).or_default() += s.end_ms - s.start_ms;
    }
    m
}

/// Nodes in rotation from `at_ms` on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CapacityPoint {
    pub at_ms: u64,
    pub in_rotation: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    pub run_id: String,
    pub action: OperationKind,
    pub farm: String,
    pub holder: String,
    pub started_at: String,
    pub outcome: String,
    pub halted: Option<String>,
    pub duration_ms: u64,
    /// Nodes of the farm (the capacity line's top).
    pub farm_nodes: usize,
    pub min_healthy: Option<usize>,
    /// A deploy's or rollback's release.
    pub release: Option<String>,
    pub nodes: Vec<NodeLine>,
    pub capacity: Vec<CapacityPoint>,
    /// The canary analysis, when the run had one.
    pub analysis: Option<AnalysisLine>,
    /// What each node's pools were doing before they were recycled.
    pub diagnostics: std::collections::BTreeMap<String, Vec<crate::agent::Diagnostics>>,
    /// A diagnosed node's traffic before its recycle and after it.
    pub traffic_before: std::collections::BTreeMap<String, crate::health::NodeTraffic>,
    pub traffic_after: std::collections::BTreeMap<String, crate::health::NodeTraffic>,
    /// Each time a controller took the run up again.
    pub resumes: Vec<ResumeMark>,
    /// Patch and reboot: what each node installed and its restart.
    pub patched: std::collections::BTreeMap<String, crate::journal::PatchedRecord>,
    /// The memory dumps taken of each node's pools before their recycle.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dumps: std::collections::BTreeMap<String, Vec<crate::agent::DumpView>>,
}

/// A resume: the controller before it went silent (or ended) at
/// `silent_from_ms`, another took the run up at `at_ms`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResumeMark {
    pub at_ms: u64,
    pub silent_from_ms: Option<u64>,
    pub holder: String,
}

/// A run's canary analysis as its journal tells it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisLine {
    /// Every judgement of the soak (a resumed run's too).
    pub intervals: Vec<crate::report::IntervalReport>,
    /// `None` while no verdict was reached.
    pub verdict: Option<crate::judge::Outcome>,
    pub action: Option<crate::journal::VerdictAction>,
    pub reason: Option<String>,
    pub rollback_to: Option<String>,
    /// `Some(true)` once every switched node is back.
    pub rolled_back: Option<bool>,
}

impl AnalysisLine {
    /// An interval's figure for a metric: (canary, baseline).
    pub fn figure(i: &crate::report::IntervalReport, prefix: &str) -> (Option<f64>, Option<f64>) {
        i.metrics
            .iter()
            .find(|m| m.name.starts_with(prefix))
            .map_or((None, None), |m| (m.canary, m.baseline))
    }
}

fn at(t: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(t).ok()
}

/// Phases in which a node is out of rotation.
fn out_of_rotation(p: Phase) -> bool {
    !matches!(
        p,
        Phase::Pending | Phase::Staging | Phase::Staged | Phase::Done
    )
}

impl Timeline {
    pub fn of(run: &LoadedRun) -> Timeline {
        let h = &run.header;
        let start = at(&h.started_at)
            .or_else(|| run.records.first().and_then(|r| at(&r.t)))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let ms = |t: &str| {
            at(t)
                .and_then(|t| t.duration_since(start).ok())
                .map_or(0, |d| d.as_millis() as u64)
        };
        let end_ms = run
            .end
            .as_ref()
            .map(|e| ms(&e.t))
            .or_else(|| run.records.last().map(|r| ms(&r.t)))
            .unwrap_or(0);
        let settings = h.settings.as_ref();
        let release = settings
            .and_then(|s| s.deploy.as_ref())
            .map(|d| d.version.clone());
        let nodes: Vec<NodeLine> = h
            .nodes
            .iter()
            .map(|name| {
                let mine: Vec<_> = run.records.iter().filter(|r| &r.node == name).collect();
                let mut segments = Vec::new();
                for (k, r) in mine.iter().enumerate() {
                    if matches!(r.phase, Phase::Done | Phase::Failed) {
                        continue;
                    }
                    let from = ms(&r.t);
                    let to = mine.get(k + 1).map_or(end_ms, |n| ms(&n.t));
                    segments.push(Segment {
                        phase: r.phase,
                        start_ms: from,
                        end_ms: to.max(from),
                    });
                }
                let last = mine.last().map_or(Phase::Pending, |r| r.phase);
                let error = mine.iter().find(|r| r.phase == Phase::Failed).map(|r| {
                    (
                        ms(&r.t),
                        r.detail.clone().unwrap_or_else(|| "failed".into()),
                    )
                });
                let rolled_back_to = run
                    .verdict
                    .as_ref()
                    .filter(|_| run.rolled_back == Some(true))
                    .and_then(|v| v.rollback_to.clone());
                let version = release.as_ref().and_then(|v| match last {
                    Phase::Done => Some(rolled_back_to.map_or_else(
                        || v.clone(),
                        |back| format!("{back} (rolled back from {v})"),
                    )),
                    _ if mine.iter().any(|r| r.phase == Phase::Reverting) => {
                        Some("previous (switched back)".into())
                    }
                    _ => None,
                });
                let in_rotation = !mine.iter().fold(false, |out, r| out_after(out, r));
                NodeLine {
                    name: name.clone(),
                    outcome: match last {
                        Phase::Done => "succeeded",
                        Phase::Failed => "failed",
                        Phase::Pending => "skipped",
                        _ => "unfinished",
                    },
                    last,
                    phase_ms: phase_ms(&segments),
                    segments,
                    pids_before: run.pids.get(name).cloned().unwrap_or_default(),
                    pids_after: run.pids_after.get(name).cloned().unwrap_or_default(),
                    in_rotation,
                    error,
                    version,
                }
            })
            .collect();
        let farm_nodes = settings.map_or(h.nodes.len(), |s| s.farm_nodes.len().max(h.nodes.len()));
        let capacity = capacity(run, &ms, farm_nodes);
        Timeline {
            run_id: h.run_id.clone(),
            action: h.action,
            farm: settings.map_or_else(String::new, |s| s.farm.clone()),
            holder: h.holder.clone(),
            started_at: h.started_at.clone(),
            outcome: run.outcome(),
            halted: run.end.as_ref().and_then(|e| e.halted.clone()),
            duration_ms: end_ms,
            farm_nodes,
            min_healthy: settings.map(|s| s.min_healthy),
            release,
            nodes,
            capacity,
            diagnostics: run.diagnostics.clone(),
            traffic_before: run.traffic_before.clone(),
            traffic_after: run.traffic_after.clone(),
            patched: run.patched.clone(),
            dumps: run.dumps.clone(),
            resumes: run
                .resumes
                .iter()
                .map(|(r, before)| ResumeMark {
                    at_ms: ms(&r.t),
                    silent_from_ms: before.as_deref().map(&ms),
                    holder: r.holder.clone(),
                })
                .collect(),
            analysis: settings
                .and_then(|s| s.analysis.as_ref())
                .map(|_| AnalysisLine {
                    intervals: run.intervals.clone(),
                    verdict: run.verdict.as_ref().map(|v| v.verdict),
                    action: run.verdict.as_ref().map(|v| v.action),
                    reason: run.verdict.as_ref().map(|v| v.reason.clone()),
                    rollback_to: run.verdict.as_ref().and_then(|v| v.rollback_to.clone()),
                    rolled_back: run.rolled_back,
                }),
        }
    }

    /// A diagnosed node's traffic before its recycle and after it, in
    /// words (`None` when neither is known).
    pub fn traffic_change(&self, node: &str) -> Option<String> {
        let before = self.traffic_before.get(node);
        let after = self.traffic_after.get(node);
        if before.is_none() && after.is_none() {
            return None;
        }
        let said = |t: Option<&crate::health::NodeTraffic>| {
            t.map_or("not known".to_string(), crate::health::NodeTraffic::line)
        };
        Some(format!(
            "before the recycle: {}; after it: {}",
            said(before),
            said(after)
        ))
    }

    /// Each node's phases with their times, and what went wrong.
    pub fn text(&self) -> String {
        let secs = |ms: u64| format!("{:.2}s", ms as f64 / 1000.0);
        let mut s = format!(
            "run {}: {} of farm {} by {}, started {}: {} in {}\n",
            self.run_id,
            self.action,
            self.farm,
            self.holder,
            self.started_at,
            self.outcome,
            secs(self.duration_ms)
        );
        if let Some(v) = &self.release {
            s.push_str(&format!("release: {v}\n"));
        }
        if let Some(h) = &self.halted {
            s.push_str(&format!("halted: {h}\n"));
        }
        for (k, r) in self.resumes.iter().enumerate() {
            let part = self
                .resumes
                .get(k + 1)
                .map_or(self.duration_ms, |next| next.at_ms)
                .saturating_sub(r.at_ms);
            s.push_str(&format!(
                "resumed at +{} by {}{}; that part took {}\n",
                secs(r.at_ms),
                r.holder,
                r.silent_from_ms
                    .map(|f| format!(
                        " (the controller before had written nothing since +{}: it died or stopped)",
                        secs(f)
                    ))
                    .unwrap_or_default(),
                secs(part)
            ));
        }
        for n in &self.nodes {
            let span = match (n.segments.first(), n.segments.last()) {
                (Some(f), Some(l)) => format!("+{} .. +{}", secs(f.start_ms), secs(l.end_ms)),
                _ => "not started".into(),
            };
            s.push_str(&format!("{:<12} {:<8} {span}", n.name, n.last.as_str()));
            if let Some(v) = &n.version {
                s.push_str(&format!("  on {v}"));
            }
            s.push('\n');
            for seg in &n.segments {
                s.push_str(&format!(
                    "    {:<10} +{:<9} {}\n",
                    seg.phase.as_str(),
                    secs(seg.start_ms),
                    secs(seg.end_ms - seg.start_ms)
                ));
            }
            if let Some((t, e)) = &n.error {
                s.push_str(&format!("    FAILED at +{}: {e}\n", secs(*t)));
            }
        }
        for (node, p) in &self.patched {
            if let Some(line) = crate::report::patch_line(&p.updates, p.reboot.as_ref()) {
                s.push_str(&format!("{node}: {line}\n"));
            }
        }
        for (node, pools) in &self.diagnostics {
            if let Some(line) = self.traffic_change(node) {
                s.push_str(&format!("{node}: traffic {line}\n"));
            }
            for d in pools {
                s.push_str(&format!("{node}: {}\n", d.line()));
                for r in &d.requests {
                    s.push_str(&format!(
                        "    {} {} {} {}\n",
                        r.elapsed_ms.map_or("?".into(), |ms| format!("{ms} ms")),
                        r.verb,
                        r.url,
                        r.module.as_deref().unwrap_or("")
                    ));
                }
                for e in &d.events {
                    s.push_str(&format!(
                        "    WAS {} {} {}: {}\n",
                        e.id, e.level, e.date, e.message
                    ));
                }
                for n in &d.notes {
                    s.push_str(&format!("    note: {n}\n"));
                }
            }
        }
        for (node, pools) in &self.dumps {
            for d in pools {
                s.push_str(&format!("{node}: {}\n", d.line()));
            }
        }
        if let Some(a) = &self.analysis {
            s.push_str(&format!(
                "canary analysis: {}{}\n",
                a.verdict
                    .map_or("no verdict (the soak was cut)", |v| v.as_str()),
                a.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ));
            for i in &a.intervals {
                s.push_str(&format!("    {}\n", i.line()));
            }
            match (a.action, a.rolled_back) {
                (Some(crate::journal::VerdictAction::RollBack), Some(true)) => {
                    s.push_str(&format!(
                        "rolled back to {}\n",
                        a.rollback_to.as_deref().unwrap_or("the previous release")
                    ))
                }
                (Some(crate::journal::VerdictAction::RollBack), _) => {
                    s.push_str("rolling back: not finished (`farmctl resume` finishes it)\n")
                }
                _ => {}
            }
        }
        let lowest = self
            .capacity
            .iter()
            .map(|c| c.in_rotation)
            .min()
            .unwrap_or(self.farm_nodes);
        s.push_str(&format!(
            "capacity: at least {lowest} of {} nodes in rotation{}\n",
            self.farm_nodes,
            self.min_healthy
                .map(|m| format!(" (min_healthy {m})"))
                .unwrap_or_default()
        ));
        s
    }
}

/// Whether a node is out of rotation after record `r`, `was_out` before it.
fn out_after(was_out: bool, r: &crate::journal::PhaseRecord) -> bool {
    match r.phase {
        // Failed where it was; a second record says it was put back.
        Phase::Failed => was_out && !r.detail.as_deref().is_some_and(|d| d.starts_with(RETURNED)),
        p => out_of_rotation(p),
    }
}

/// Nodes in rotation over the run: every change of the number of nodes
/// out (the run's own; nodes out before it are not in its journal).
fn capacity(run: &LoadedRun, ms: &dyn Fn(&str) -> u64, total: usize) -> Vec<CapacityPoint> {
    let mut out_now: std::collections::BTreeMap<&str, bool> = Default::default();
    let mut points = vec![CapacityPoint {
        at_ms: 0,
        in_rotation: total,
    }];
    for r in &run.records {
        let out = out_after(out_now.get(r.node.as_str()).copied().unwrap_or(false), r);
        out_now.insert(&r.node, out);
        let n = total.saturating_sub(out_now.values().filter(|o| **o).count());
        let t = ms(&r.t);
        match points.last_mut() {
            Some(last) if last.in_rotation == n => {}
            Some(last) if last.at_ms == t => last.in_rotation = n,
            _ => points.push(CapacityPoint {
                at_ms: t,
                in_rotation: n,
            }),
        }
    }
    points
}
