//! The server under IIS: its boot, whether it waits for a restart, its
//! Windows updates and the restart itself. One trait, the same two
//! implementations as [`crate::Iis`] (Windows tools, the simulator), and
//! the agent's `patch.command` in front of either for installing.
use std::time::Duration;

use async_trait::async_trait;

use crate::IisError;

/// One boot of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// Stable for the boot, different after a restart.
    pub id: String,
    /// When the server started (Unix ms).
    pub time_unix_ms: u64,
}

/// Whether the server waits for a restart to finish installing, and which
/// signals say so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RebootPending {
    pub pending: bool,
    /// `cbs`, `windows-update`, `file-renames`, `sim`.
    pub reasons: Vec<String>,
    /// What could not be read.
    pub notes: Vec<String>,
}

/// Which updates a patch takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateFilter {
    /// Canonical names (`SecurityUpdates`); empty: every software update.
    pub classifications: Vec<String>,
    /// `KB5031364`; only these when not empty.
    pub include_kbs: Vec<String>,
    pub exclude_kbs: Vec<String>,
}

impl UpdateFilter {
    /// Whether `u` is taken: of a classification asked for, not excluded,
    /// and included when there is an include list. An update with
    /// several KBs is taken when one of them is.
    pub fn takes(&self, u: &Update) -> bool {
        let has = |list: &[String]| {
            list.iter()
                .any(|k| u.kb.split(',').any(|x| x.trim().eq_ignore_ascii_case(k)))
        };
        let classified = self.classifications.is_empty()
            || self
                .classifications
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&u.classification));
        classified
            && !has(&self.exclude_kbs)
            && (self.include_kbs.is_empty() || has(&self.include_kbs))
    }
}

/// An update that applies to the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub id: String,
    /// `KB5031364` (several joined by `,`; empty when it has none).
    pub kb: String,
    pub title: String,
    pub classification: String,
    pub size_bytes: u64,
    pub reboot_required: bool,
}

/// A search's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Updates {
    pub updates: Vec<Update>,
    /// `wua`, `command`, `sim`.
    pub source: String,
    pub notes: Vec<String>,
}

/// How one update's install ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateResult {
    pub kb: String,
    pub title: String,
    /// `succeeded`, `succeeded_with_errors`, `failed`, `aborted`.
    pub result: String,
    /// `0x80240022`, when it failed.
    pub hresult: Option<String>,
    pub reboot_required: bool,
}

impl UpdateResult {
    pub fn ok(&self) -> bool {
        matches!(self.result.as_str(), "succeeded" | "succeeded_with_errors")
    }
}

/// What an install did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub results: Vec<UpdateResult>,
    /// The server must restart to finish.
    pub reboot_required: bool,
    pub notes: Vec<String>,
}

impl Installed {
    /// The updates that did not install, as a sentence; `None` when all
    /// did.
    pub fn failures(&self) -> Option<String> {
        let failed: Vec<String> = self
            .results
            .iter()
            .filter(|r| !r.ok())
            .map(|r| {
                let name = if r.kb.is_empty() { &r.title } else { &r.kb };
                match &r.hresult {
                    Some(h) => format!("{name} {} ({h})", r.result),
                    None => format!("{name} {}", r.result),
                }
            })
            .collect();
        (!failed.is_empty()).then(|| failed.join(", "))
    }
}

/// One server, as patch night drives it.
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// `windows`, `sim`.
    fn backend(&self) -> &'static str;
    /// This boot of the server; `None` when it cannot be told (then a
    /// restart cannot be proven and the agent refuses one). Read once:
    /// the agent's process does not outlive the boot.
    async fn boot(&self) -> Option<Boot>;
    /// Whether a restart is pending, from every signal the server has.
    async fn reboot_pending(&self) -> RebootPending;
    /// The updates that apply now and `filter` takes (a search: minutes
    /// on a real server).
    async fn search(&self, filter: &UpdateFilter) -> Result<Updates, IisError>;
    /// Installs what [`Host::search`] finds, within `timeout`; `progress`
    /// gets a line now and then.
    async fn install(
        &self,
        filter: &UpdateFilter,
        timeout: Duration,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Installed, IisError>;
    /// Asks for a planned restart in `delay`, `comment` in the System log,
    /// its reason a hot fix (`updates`) or maintenance. Answers before the
    /// restart happens.
    async fn reboot(&self, comment: &str, delay: Duration, updates: bool) -> Result<(), IisError>;
    /// How the agent's own service starts with Windows (`auto`, ...), or
    /// `not a service`; `None` when unknown.
    fn service_start(&self) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(kb: &str, class: &str) -> Update {
        Update {
            kb: kb.into(),
            classification: class.into(),
            ..Update::default()
        }
    }

    #[test]
    fn a_filter_takes_by_classification_and_kb_lists() {
        let f = UpdateFilter {
            classifications: vec!["SecurityUpdates".into()],
            include_kbs: vec![],
            exclude_kbs: vec!["KB2".into()],
        };
        assert!(f.takes(&update("KB1", "securityupdates")));
        assert!(!f.takes(&update("KB2", "SecurityUpdates")));
        assert!(!f.takes(&update("KB3", "Updates")));
        let only = UpdateFilter {
            include_kbs: vec!["KB4".into()],
            ..UpdateFilter::default()
        };
        assert!(only.takes(&update("KB9,KB4", "Updates")));
        assert!(!only.takes(&update("KB5", "Updates")));
    }
}
