//! A run's life outside the rolling loop: its contract ([`crate::contract`]),
//! starting one ([`start`]: window, leases, preflight, capacity, the
//! operator's yes, the journal) and continuing one whose controller
//! stopped ([`resume`]). Both build the same [`crate::rollout::engine::Run`].
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::exit::CommandError;
use crate::operator::Operator;
use crate::report::Reporter;
use crate::window::{Clock, WindowGuard};

mod deploy;
mod resume;
mod start;

/// The run contract lives in [`crate::contract`]; named here as before.
pub use crate::contract::{
    DeployRequest, DeploySettings, FarmNode, RunRequest, RunSettings, RunTimeouts,
};
pub use resume::{resume, resume_on};
pub use start::{check, start, Checked};

/// What a run needs from its surroundings.
/// A halted run's failed nodes, when it is resumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FailedNodes {
    /// Not said: a resume of a run with failed nodes asks for one of the
    /// others.
    #[default]
    Unsaid,
    /// Done again from the start (`--retry-failed`), under new operation ids.
    Retry,
    /// Left as they are, outside the failure budget (`--skip-failed`).
    Skip,
}

pub struct RunEnv<'a> {
    /// Where run journals live.
    pub state_dir: PathBuf,
    /// Run state on etcd instead (`--state-store`); else the inventory's
    /// `state:` decides.
    pub state_store: Option<String>,
    /// Resume: take the farm lock over from a controller a human says is
    /// dead (`--force-takeover`).
    pub takeover: bool,
    /// Resume of a halted run: what to do with the nodes that failed.
    pub failed: FailedNodes,
    /// Where "now" comes from (maintenance windows).
    pub clock: Arc<dyn Clock>,
    pub reporter: &'a dyn Reporter,
    pub operator: &'a dyn Operator,
    /// Set to `true` to stop: no new node starts (the first Ctrl-C).
    pub stop: Option<watch::Receiver<bool>>,
}

impl RunEnv<'_> {
    /// The run's maintenance window with the clock and the per-node
    /// estimate from past runs.
    pub fn window_guard(
        &self,
        settings: &RunSettings,
    ) -> Result<Option<WindowGuard>, CommandError> {
        let (per_node, _) = crate::journal::estimate_per_node(&self.state_dir, settings.operation);
        self.window_with(settings, per_node)
    }

    /// [`Self::window_guard`] with the estimate from `store`'s history.
    pub async fn window_guard_in(
        &self,
        settings: &RunSettings,
        store: &crate::store::Store,
    ) -> Result<Option<WindowGuard>, CommandError> {
        if settings.window.is_none() {
            return Ok(None);
        }
        let (per_node, _) = store
            .estimate_per_node(&settings.farm, settings.operation)
            .await;
        self.window_with(settings, per_node)
    }

    fn window_with(
        &self,
        settings: &RunSettings,
        per_node: std::time::Duration,
    ) -> Result<Option<WindowGuard>, CommandError> {
        let window = settings.window().cloned();
        Ok(window.map(|window| WindowGuard {
            window,
            clock: self.clock.clone(),
            per_node,
        }))
    }

    /// The run's stop signal: the operator's (Ctrl-C), or the farm lock on
    /// etcd lost — then with its reason.
    pub fn stop_with_lock(
        &self,
        lock: Option<&crate::store::FarmLock>,
    ) -> (
        Option<tokio::sync::watch::Receiver<bool>>,
        Option<StopReason>,
    ) {
        let Some(lock) = lock else {
            return (self.stop.clone(), None);
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let reason: StopReason = Arc::default();
        let (mut lost, mut operator, why) = (lock.lost.clone(), self.stop.clone(), reason.clone());
        tokio::spawn(async move {
            let operator_stops = async {
                match operator.as_mut() {
                    Some(s) => {
                        let _ = s.wait_for(|v| *v).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                // (an error: the lock was given back, the run is over)
                Ok(_) = lost.wait_for(|v| *v) => {
                    *why.lock().unwrap_or_else(|e| e.into_inner()) = Some(
                        "lost the farm lock on etcd (its lease could not be kept: etcd down or \
                         out of reach); the nodes at work were finished, no other node was \
                         started (`farmctl resume` continues)"
                            .into(),
                    );
                }
                _ = operator_stops => {}
            }
            tx.send_replace(true);
        });
        (Some(rx), Some(reason))
    }
}

/// Why a run was stopped, when it was not the operator.
pub type StopReason = Arc<std::sync::Mutex<Option<String>>>;

/// `20261121T105500-1a2b3c`: sortable, and short enough for operation ids.
pub fn new_run_id() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let stamp: String = now
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(15)
        .collect();
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{stamp}-{}", &rand[..6])
}
