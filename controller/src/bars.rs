//! Progress bars on a terminal (indicatif): an overall bar and a spinner
//! per node at work. Only the binary draws them; the library reports
//! through the `Reporter` trait.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use farm_proto::domain::{OperationKind, Phase};
use farmctl::report::{NodeReport, Reporter, RunReport};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// An overall bar (a clock that ticks, an ETA once a node is done, how
/// many are at work and pending) plus a spinner per node at work with the
/// time in its phase.
pub struct Bars {
    multi: MultiProgress,
    overall: ProgressBar,
    nodes: Mutex<HashMap<String, ProgressBar>>,
    at_work: Mutex<std::collections::HashSet<String>>,
}

const OVERALL: &str =
    "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} nodes {elapsed_precise} {msg}";
const OVERALL_ETA: &str =
    "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} nodes {elapsed_precise} (~{eta} left) {msg}";

impl Bars {
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template(OVERALL).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        // The clock moves while a node verifies or warms, not only when
        // one finishes.
        overall.enable_steady_tick(Duration::from_millis(500));
        Self {
            multi,
            overall,
            nodes: Mutex::new(HashMap::new()),
            at_work: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// `2 at work, 12 pending`.
    fn counts(&self) {
        let at_work = self.at_work.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
        let len = self.overall.length().unwrap_or(0);
        let pending = len.saturating_sub(self.overall.position() + at_work);
        self.overall
            .set_message(format!("{at_work} at work, {pending} pending"));
    }

    fn bar(&self, node: &str) -> ProgressBar {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .entry(node.to_string())
            .or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new_spinner());
                b.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix:<12} {msg} {elapsed}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                b.set_prefix(node.to_string());
                b.enable_steady_tick(Duration::from_millis(120));
                b
            })
            .clone()
    }
}

impl Default for Bars {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter for Bars {
    fn run_started(&self, run_id: &str, action: OperationKind, nodes: &[String]) {
        self.overall.set_length(nodes.len() as u64);
        self.overall.set_prefix(format!("{action} {run_id}"));
    }
    fn phase(&self, node: &str, phase: Phase) {
        let b = self.bar(node);
        b.set_message(phase.to_string());
        b.reset_elapsed(); // the time shown is the time in this phase
        if !matches!(phase, Phase::Staging | Phase::Staged) {
            self.at_work
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(node.to_string());
        }
        self.counts();
    }
    fn detail(&self, node: &str, message: &str) {
        self.bar(node).set_message(message.to_string());
    }
    fn node_finished(&self, n: &NodeReport) {
        let msg = match &n.error {
            Some(e) => format!("{}: {e}", n.outcome),
            None => n.outcome.to_string(),
        };
        self.bar(&n.name).finish_with_message(msg);
        self.at_work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n.name);
        if self.overall.position() == 0 {
            // Measured node times from now on: an ETA.
            if let Ok(style) = ProgressStyle::with_template(OVERALL_ETA) {
                self.overall.set_style(style);
            }
        }
        self.overall.inc(1);
        self.counts();
    }
    fn note(&self, message: &str) {
        let _ = self.multi.println(message);
    }
    fn run_finished(&self, report: &RunReport) {
        // A halted run keeps its bar where it stopped.
        if report.succeeded() {
            self.overall.finish();
        } else {
            self.overall.abandon();
        }
    }
}
