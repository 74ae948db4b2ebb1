//! The controller's leases on the farm: taken on every reachable agent
//! before a run acts, renewed while it goes on, released at its end. An
//! agent whose lease expires (the controller died) handles its node itself.
//!
//! The first reachable node, in inventory order, is taken alone: it is the
//! gate, so of two controllers starting together only one gets past it.
//! The others are then taken all at once (a farm of a thousand nodes does
//! not wait for a thousand round trips).
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;

use crate::agent::{AgentApi, AgentError, LeaseClaim};
use crate::exit::CommandError;
use crate::farm::Farm;

pub struct LeaseSet {
    run_id: String,
    agents: Vec<(String, Arc<dyn AgentApi>)>,
    stop: watch::Sender<bool>,
    renewer: tokio::task::JoinHandle<()>,
}

/// `user@host` of whoever runs farmctl.
pub fn holder() -> String {
    // A service or a container often has no USER: the OS account then.
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .or_else(|_| std::env::var("USERNAME"))
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| whoami::fallible::username().ok())
        .unwrap_or_else(|| "unknown".into());
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

/// What one acquire did.
enum Taken {
    Yes,
    /// The agent did not answer: left out (preflight reports it).
    Unreachable,
    Refused(String),
}

async fn take(agent: &dyn AgentApi, claim: &LeaseClaim<'_>) -> Taken {
    match agent.acquire_lease(claim).await {
        Ok(()) => Taken::Yes,
        Err(AgentError::Unreachable { .. } | AgentError::Timeout(_)) => Taken::Unreachable,
        Err(AgentError::Refused(m)) => Taken::Refused(m),
        Err(other) => Taken::Refused(other.to_string()),
    }
}

/// Takes the lease on every node. Any node already leased to another run
/// refuses the whole run: the leases taken so far are given back and
/// nothing is touched.
pub async fn acquire(
    farm: &Farm,
    run_id: &str,
    reason: &str,
    ttl: Duration,
) -> Result<LeaseSet, CommandError> {
    let holder = holder();
    let claim = LeaseClaim {
        holder: &holder,
        run_id,
        reason,
        ttl,
    };
    let nodes = &farm.inventory.nodes;
    let mut taken: Vec<usize> = Vec::new();
    let mut refused: Option<(usize, String)> = None;
    let mut rest = 0..nodes.len();
    // The gate: in order, until one agent answers.
    for i in rest.by_ref() {
        match take(farm.agent(i), &claim).await {
            Taken::Yes => {
                taken.push(i);
                break;
            }
            Taken::Unreachable => {}
            Taken::Refused(m) => {
                refused = Some((i, m));
                break;
            }
        }
    }
    if refused.is_none() {
        let rest: Vec<usize> = rest.collect();
        let results = join_all(rest.iter().map(|&i| take(farm.agent(i), &claim))).await;
        for (i, r) in rest.into_iter().zip(results) {
            match r {
                Taken::Yes => taken.push(i),
                Taken::Unreachable => {}
                Taken::Refused(m) => {
                    refused.get_or_insert((i, m));
                }
            }
        }
    }
    let agents: Vec<(String, Arc<dyn AgentApi>)> = taken
        .iter()
        .map(|&i| (nodes[i].name.clone(), farm.agents[i].clone()))
        .collect();
    if let Some((i, why)) = refused {
        join_all(agents.iter().map(|(_, a)| a.release_lease(run_id))).await;
        return Err(CommandError::refused(format!(
            "{}: {why} — refusing to start; nothing was touched. If that run's controller \
             is gone, `farmctl resume RUN` continues it (on its host; `--force-takeover` from \
             another with a shared store; add `--retry-failed` or `--skip-failed` if it halted \
             on a failed node), or the lease expires within rollout.lease_ttl",
            nodes[i].name
        )));
    }
    let (stop, stopped) = watch::channel(false);
    let renewer = tokio::spawn(renew(
        agents.clone(),
        run_id.to_string(),
        holder.clone(),
        reason.to_string(),
        ttl,
        stopped,
    ));
    Ok(LeaseSet {
        run_id: run_id.to_string(),
        agents,
        stop,
        renewer,
    })
}

/// Renews every lease each ttl/3, all at once, each call bounded by ttl/3
/// so one slow agent does not delay the others' renewals. A lease that
/// expired meanwhile is taken again.
async fn renew(
    agents: Vec<(String, Arc<dyn AgentApi>)>,
    run_id: String,
    holder: String,
    reason: String,
    ttl: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let every = ttl / 3;
    // Consecutive failures per node: said once when they start (a server
    // restarting for patch night is unreachable for minutes) and once
    // when it answers again, not at every renewal.
    let mut failing = vec![0u32; agents.len()];
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stopped.changed() => return,
        }
        let (run_id, holder, reason) = (&run_id, &holder, &reason);
        let results = join_all(agents.iter().map(|(name, a)| async move {
            let renewed = tokio::time::timeout(every, async {
                match a.renew_lease(run_id, ttl).await {
                    Err(AgentError::Refused(why)) => {
                        tracing::warn!(node = %name, run_id = %run_id, "lease not renewed ({why}); taking it again");
                        let claim = LeaseClaim {
                            holder,
                            run_id,
                            reason,
                            ttl,
                        };
                        a.acquire_lease(&claim).await
                    }
                    other => other,
                }
            })
            .await;
            match renewed {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("could not renew the lease: {e}")),
                Err(_) => Some(format!("lease renewal did not answer within {every:?}")),
            }
        }))
        .await;
        for ((failed, (name, _)), result) in failing.iter_mut().zip(&agents).zip(results) {
            match result {
                None if *failed > 0 => {
                    tracing::info!(node = %name, run_id = %run_id, "the lease is renewed again after {} failed renewal(s)", *failed);
                    *failed = 0;
                }
                None => {}
                Some(e) if *failed == 0 => {
                    *failed = 1;
                    tracing::warn!(node = %name, run_id = %run_id, "{e} (said once until it answers again)");
                }
                Some(e) => {
                    *failed += 1;
                    tracing::debug!(node = %name, run_id = %run_id, "{e}");
                }
            }
        }
    }
}

impl LeaseSet {
    /// Stops renewing and gives every lease back.
    pub async fn release(self) {
        self.stop.send_replace(true);
        let _ = self.renewer.await;
        let run_id = &self.run_id;
        join_all(self.agents.iter().map(|(name, a)| async move {
            if let Err(e) = a.release_lease(run_id).await {
                tracing::warn!(node = %name, "could not release the lease: {e}");
            }
        }))
        .await;
    }
}
