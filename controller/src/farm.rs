//! A farm as the controller reaches it: the checked inventory, a client
//! per node's agent (by inventory index) and the load balancer driver.
//! Built once per command; tests build it from fakes.
use std::sync::Arc;

use farm_inventory::{Inventory, Node};

use crate::agent::{AgentApi, ClientTls, GrpcAgent};
use crate::exit::CommandError;
use crate::lb::LoadBalancer;
use crate::probe::{HttpProber, Prober};

pub struct Farm {
    pub inventory: Inventory,
    /// One client per node, in inventory order.
    pub agents: Vec<Arc<dyn AgentApi>>,
    pub lb: Arc<dyn LoadBalancer>,
    pub prober: Arc<dyn Prober>,
}

/// How the controller talks to the agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Mutual TLS with the inventory's `agent.tls` (the default).
    Tls,
    /// Plaintext (`--insecure`), after a warning unless quiet.
    Insecure { quiet: bool },
}

impl Farm {
    /// Clients for every agent (mutual TLS from `agent.tls`, or plaintext
    /// only with `--insecure`) and the inventory's load balancer driver.
    pub fn connect(inventory: Inventory, transport: Transport) -> Result<Farm, CommandError> {
        let tls = match (&inventory.agent.tls, transport) {
            (Some(files), Transport::Tls) => {
                Some(ClientTls::load(files).map_err(|e| CommandError::bad_input(e.to_string()))?)
            }
            (Some(_), Transport::Insecure { .. }) => {
                return Err(CommandError::bad_input(
                    "--insecure conflicts with the inventory's agent.tls: choose one",
                ))
            }
            (None, Transport::Insecure { quiet }) => {
                if !quiet {
                    crate::errln!("farmctl: WARNING: --insecure: talking plaintext gRPC to the agents, without authentication");
                }
                None
            }
            (None, Transport::Tls) => return Err(CommandError::bad_input(
                "agent.tls is not set in the inventory: farmctl talks mutual TLS to the agents \
                     (make the files with `farmctl certs`), or pass --insecure for plaintext",
            )),
        };
        let agents = inventory
            .nodes
            .iter()
            .map(|n| {
                GrpcAgent::new(
                    &n.agent,
                    &n.name,
                    tls.as_ref(),
                    inventory.agent.connect_timeout,
                    inventory.agent.request_timeout,
                )
                .map(|a| Arc::new(a) as Arc<dyn AgentApi>)
                .map_err(|e| CommandError::bad_input(format!("node {}: {e}", n.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lb = crate::lb::from_inventory(&inventory, &agents, tls.as_ref())
            .map_err(|e| CommandError::bad_input(e.to_string()))?;
        Ok(Farm {
            inventory,
            agents,
            lb,
            prober: Arc::new(HttpProber),
        })
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.inventory.nodes[i]
    }

    pub fn agent(&self, i: usize) -> &dyn AgentApi {
        &*self.agents[i]
    }

    /// Probes node `i`'s sites once.
    pub async fn probe_once(&self, i: usize) -> Result<(), crate::probe::ProbeError> {
        self.prober.once(self.node(i), &self.inventory.sites).await
    }

    /// The index of the node called `name` (case-insensitively).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.inventory
            .nodes
            .iter()
            .position(|n| n.name.eq_ignore_ascii_case(name))
    }
}
