//! The simulated server's record of its boots, shared by the simulator
//! (which writes it in the agent's state directory) and the sandbox
//! (which plays the server's firmware: it starts the agent again after a
//! simulated restart, after the boot time recorded here).
use std::path::Path;

use serde::{Deserialize, Serialize};

/// How the agent's process ends on a simulated restart (the sandbox
/// starts it again after the boot time).
pub const REBOOT_EXIT_CODE: i32 = 75;
/// The machine's record in the agent's state directory.
pub const MACHINE_FILE: &str = "sim-machine.json";

/// What the simulated server keeps across its boots.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    pub boot_id: String,
    pub boot_time_unix_ms: u64,
    /// Boots so far (1 for the first).
    pub boots: u32,
    /// KBs installed.
    pub installed: Vec<String>,
    /// An install finished that needs a restart.
    pub pending_reboot: bool,
    /// A restart asked and not done yet: the next start is a new boot.
    pub rebooting: Option<Rebooting>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rebooting {
    pub asked_unix_ms: u64,
    /// How long the restart takes (the sim file's `boot_time`).
    pub boot_time_ms: u64,
    /// It never comes back (`patch_faults.never_returns`).
    pub never: bool,
}

impl Machine {
    /// The record in `state_dir`, if there is one that reads.
    pub fn load(state_dir: &Path) -> Option<Machine> {
        let text = std::fs::read_to_string(state_dir.join(MACHINE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        // The agent makes its state directory after the simulated server
        // has booted: the server's disk is there first.
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(MACHINE_FILE);
        let tmp = path.with_extension("json.new");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)
    }
}
