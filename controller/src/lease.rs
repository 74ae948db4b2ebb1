//! The controller's leases on the farm: taken on every reachable agent
//! before a run acts, one node at a time in inventory order (so two
//! controllers starting together cannot each win part of the farm),
//! renewed while the run goes on, released at its end. An agent whose
//! lease expires (the controller died) handles its node itself.
use std::collections::HashMap;
use std::sync::Arc;

use farm_inventory::Inventory;
use tokio::sync::watch;

use crate::agent::{AgentApi, AgentError};
use crate::exit::CommandError;

pub struct LeaseSet {
    run_id: String,
    agents: Vec<(String, Arc<dyn AgentApi>)>,
    stop: watch::Sender<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// `user@host` of whoever runs farmctl.
pub fn holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
}

/// Takes the lease on every node, in inventory order. An agent that does
/// not answer is left out (preflight reports it). Any node already leased
/// to another run refuses the whole run: the leases taken so far are given
/// back and nothing is touched.
pub async fn acquire(
    inv: &Inventory,
    agents: &HashMap<String, Arc<dyn AgentApi>>,
    run_id: &str,
    reason: &str,
) -> Result<LeaseSet, CommandError> {
    let ttl = inv.rollout.lease_ttl;
    let holder = holder();
    let mut taken: Vec<(String, Arc<dyn AgentApi>)> = Vec::new();
    for node in &inv.nodes {
        let agent = agents[&node.name].clone();
        match agent.acquire_lease(&holder, run_id, reason, ttl).await {
            Ok(()) => taken.push((node.name.clone(), agent)),
            Err(AgentError::Unreachable { .. } | AgentError::Timeout(_)) => {}
            Err(e) => {
                for (_, a) in &taken {
                    let _ = a.release_lease(run_id).await;
                }
                let why = match e {
                    AgentError::Refused(m) => m,
                    other => other.to_string(),
                };
                return Err(CommandError::refused(format!(
                    "{}: {why} — refusing to start; nothing was touched. If that run's controller \
                     is gone, `farmctl resume` continues it (on its host), or the lease expires \
                     within rollout.lease_ttl",
                    node.name
                )));
            }
        }
    }
    let (stop, mut stopped) = watch::channel(false);
    let (agents_for_renew, run, h, r) = (
        taken.clone(),
        run_id.to_string(),
        holder,
        reason.to_string(),
    );
    let renewer = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(ttl / 3) => {}
                _ = stopped.changed() => return,
            }
            for (name, a) in &agents_for_renew {
                if let Err(e) = a.acquire_lease(&h, &run, &r, ttl).await {
                    tracing::warn!(node = %name, run_id = %run, "could not renew the lease: {e}");
                }
            }
        }
    });
    Ok(LeaseSet {
        run_id: run_id.to_string(),
        agents: taken,
        stop,
        renewer,
    })
}

impl LeaseSet {
    /// Stops renewing and gives every lease back.
    pub async fn release(self) {
        self.stop.send_replace(true);
        let _ = self.renewer.await;
        for (name, a) in &self.agents {
            if let Err(e) = a.release_lease(&self.run_id).await {
                tracing::warn!(node = %name, "could not release the lease: {e}");
            }
        }
    }
}
