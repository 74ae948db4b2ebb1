//! One file per subcommand, each with `run(args, &Settings)`.
pub mod demo;
pub mod drain;
pub mod rollout;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use farm_inventory::Inventory;

use crate::agent::{AgentApi, GrpcAgent};
use crate::exit::CommandError;
use crate::report::Reporter;

/// Resolved global settings.
pub struct Settings {
    pub quiet: bool,
    /// Progress bars (stderr is a terminal and not quiet).
    pub bars: bool,
}

impl Settings {
    /// The reporter for a run's progress.
    pub fn reporter(&self) -> Box<dyn Reporter> {
        if self.quiet {
            Box::new(crate::report::Silent)
        } else if self.bars {
            Box::new(crate::progress::Bars::new())
        } else {
            Box::new(crate::progress::Lines::new())
        }
    }
}

pub fn load_inventory(path: &Path) -> Result<Inventory, CommandError> {
    Ok(farm_inventory::load(path)?)
}

/// A gRPC client per node, by node name.
pub fn connect_agents(inv: &Inventory) -> Result<HashMap<String, Arc<dyn AgentApi>>, CommandError> {
    inv.nodes
        .iter()
        .map(|n| {
            GrpcAgent::new(
                &n.agent,
                inv.agent.connect_timeout,
                inv.agent.request_timeout,
            )
            .map(|a| (n.name.clone(), Arc::new(a) as Arc<dyn AgentApi>))
            .map_err(|e| CommandError::bad_input(format!("node {}: {e}", n.name)))
        })
        .collect()
}

pub fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("farmctl: could not write JSON: {e}"),
    }
}
