//! A run's life outside the rolling loop: its contract ([`settings`]),
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
pub mod settings;
mod start;

pub use resume::{resume, resume_on};
pub use settings::{DeployRequest, DeploySettings, FarmNode, RunRequest, RunSettings, RunTimeouts};
pub use start::{check, start, Checked};

/// What a run needs from its surroundings.
pub struct RunEnv<'a> {
    /// Where run journals live.
    pub state_dir: PathBuf,
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
        let window = settings.window().map_err(CommandError::bad_input)?;
        Ok(window.map(|window| {
            let (per_node, _) =
                crate::journal::estimate_per_node(&self.state_dir, settings.operation);
            WindowGuard {
                window,
                clock: self.clock.clone(),
                per_node,
            }
        }))
    }
}

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
