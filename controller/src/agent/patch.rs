//! Patch night as the controller sees a node: its boot, its pending
//! restart, the updates that apply, what an install did, and where a
//! restart stands.
use serde::{Deserialize, Serialize};

/// One boot of a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootView {
    pub id: String,
    /// When it started (Unix ms, the node's clock; 0 unknown).
    pub time_unix_ms: u64,
}

impl BootView {
    /// RFC 3339 of the boot time, when known.
    pub fn time(&self) -> Option<String> {
        (self.time_unix_ms > 0).then(|| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.time_unix_ms),
            )
            .to_string()
        })
    }
}

/// Whether a server waits for a restart, and which signals say so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingView {
    pub pending: bool,
    pub reasons: Vec<String>,
}

/// Which updates a patch takes (the inventory's `patch:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateFilterSpec {
    pub classifications: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_kbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_kbs: Vec<String>,
}

/// An update that applies to a server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdateView {
    pub kb: String,
    pub title: String,
    pub classification: String,
    pub size_bytes: u64,
    pub reboot_required: bool,
}

/// A search's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpdatesView {
    pub updates: Vec<UpdateView>,
    pub pending: PendingView,
    pub boot: Option<BootView>,
    /// `wua`, `command`, `sim`.
    pub source: String,
    pub notes: Vec<String>,
}

/// How one update's install ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateOutcome {
    pub kb: String,
    pub title: String,
    /// `succeeded`, `succeeded_with_errors`, `failed`, `aborted`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hresult: Option<String>,
    pub reboot_required: bool,
}

/// Where a restart asked of an agent stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootState {
    /// Asked; the server is still on the boot it was asked on.
    Rebooting,
    /// The server came back from it.
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootView {
    pub state: RebootState,
    pub boot_before: Option<BootView>,
    pub boot_now: Option<BootView>,
}
