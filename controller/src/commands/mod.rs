//! One file per subcommand, each with `run(args, &Settings)`.
pub mod certs;
pub mod demo;
pub mod drain;
pub mod plan;
pub mod resume;
pub mod rollout;
pub mod runs;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use farm_inventory::Inventory;

use crate::agent::{AgentApi, ClientTls, GrpcAgent};
use crate::exit::CommandError;
use crate::report::Reporter;

/// Resolved global settings.
#[derive(Clone)]
pub struct Settings {
    pub quiet: bool,
    /// Talk plaintext to agents (`--insecure`).
    pub insecure: bool,
    /// Where run journals live (`--state-dir`).
    pub state_dir: Option<std::path::PathBuf>,
    /// Where "now" comes from (maintenance windows).
    pub clock: std::sync::Arc<dyn crate::window::Clock>,
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
/// A gRPC client per node, by node name: mutual TLS from the inventory's
/// `agent.tls`, or plaintext only with `--insecure`.
pub fn connect_agents(
    inv: &Inventory,
    settings: &Settings,
) -> Result<HashMap<String, Arc<dyn AgentApi>>, CommandError> {
    let tls = match (&inv.agent.tls, settings.insecure) {
        (Some(files), false) => Some(ClientTls::load(files).map_err(CommandError::bad_input)?),
        (Some(_), true) => {
            return Err(CommandError::bad_input(
                "--insecure conflicts with the inventory's agent.tls: choose one",
            ))
        }
        (None, true) => {
            if !settings.quiet {
                eprintln!("farmctl: WARNING: --insecure: talking plaintext gRPC to the agents, without authentication");
            }
            None
        }
        (None, false) => {
            return Err(CommandError::bad_input(
                "agent.tls is not set in the inventory: farmctl talks mutual TLS to the agents \
                 (make the files with `farmctl certs`), or pass --insecure for plaintext",
            ))
        }
    };
    inv.nodes
        .iter()
        .map(|n| {
            GrpcAgent::new(
                &n.agent,
                &n.name,
                tls.as_ref(),
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
