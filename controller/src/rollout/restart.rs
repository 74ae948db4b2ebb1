//! A patch or reboot on one node that is out of rotation: install the
//! updates (patch), restart the server when they need it (patch) or
//! always (reboot), wait until its agent answers from a new boot, then
//! until IIS runs there — the report the machine verifies like a reset's.
//!
//! Nothing is done twice: the install and the restart carry operation
//! ids the agent answers again with their first result, and the boot the
//! node was on is journaled before the restart is asked, so a resumed
//! run goes on waiting for that restart instead of asking another.
use std::time::Duration;

use farm_proto::domain::{OpStep, OperationKind, PoolState};
use tokio::time::Instant;

use super::node::NodeRun;
use crate::agent::{AgentApi, AgentError, BootView, OperationReport, PoolChange, RebootState};
use crate::contract::PatchSettings;
use crate::machine::Event;
use crate::report::{NodeReport, RebootReport};

/// How often a restarting node is asked whether it is back.
const BACK_POLL: Duration = Duration::from_millis(500);
/// A restarting node's lease outlives the restart by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(120);

impl NodeRun<'_> {
    /// A patch's node with nothing to install and no restart pending
    /// (asked while it still serves): it is not drained at all. `None`
    /// when it has work, or the search cannot say (the install searches
    /// again, drained).
    pub(super) async fn up_to_date(&self, agent: &dyn AgentApi) -> Option<String> {
        let filter = self.settings.patch.as_ref()?.updates.as_ref()?;
        match agent.updates(filter).await {
            Ok(u) if u.updates.is_empty() && !u.pending.pending && u.source != "command" => {
                Some("up to date: no update to install and no restart pending; not drained".into())
            }
            Ok(u) => {
                let kbs: Vec<&str> = u.updates.iter().map(|x| x.kb.as_str()).collect();
                if !kbs.is_empty() {
                    self.reporter.detail(
                        &self.farm.node(self.node).name,
                        &format!("{} update(s) to install: {}", kbs.len(), kbs.join(", ")),
                    );
                }
                None
            }
            Err(e) => {
                tracing::warn!(node = %self.farm.node(self.node).name, "could not search the updates before draining: {e}");
                None
            }
        }
    }

    /// The operation of a patch or reboot, for the machine.
    pub(super) async fn restart_server(
        &self,
        agent: &dyn AgentApi,
        report: &mut NodeReport,
    ) -> Event {
        let op = self.settings.operation;
        let Some(p) = &self.settings.patch else {
            return Event::OperationFailed(format!("the run has no settings for a {op}"));
        };
        let name = self.farm.node(self.node).name.clone();
        let reporter = self.reporter;
        let say = |m: &str| reporter.detail(&name, m);
        // The boot a resumed node's restart was asked on, if it was.
        let asked_on = self.resume.and_then(|r| r.boot_before.clone());
        let mut restart = op == OperationKind::Reboot || asked_on.is_some();
        if let (Some(filter), None) = (&p.updates, &asked_on) {
            let progress = |step: &str, msg: &str| say(&format!("{step}: {msg}"));
            let installed = agent
                .install_updates(
                    &self.op_id(OpStep::Install),
                    filter,
                    p.install_timeout,
                    &progress,
                )
                .await;
            match installed {
                Ok(r) => {
                    report.updates = r.updates.clone();
                    if !r.success {
                        return Event::OperationFailed(format!(
                            "installing updates failed: {}",
                            r.error
                        ));
                    }
                    if r.updates.is_empty() && !r.reboot_required {
                        say("no update to install");
                    }
                    restart |= r.reboot_required;
                }
                Err(e) => {
                    return Event::OperationFailed(format!(
                        "installing updates: {e}; no result came back, so the install may be \
                         unfinished on the node (`farmctl resume` asks again under the same id)"
                    ))
                }
            }
        }
        // The pools running before: each must run again after.
        let before = match agent.status().await {
            Ok(v) => v,
            Err(e) => return Event::OperationFailed(format!("could not read the node: {e}")),
        };
        let running: Vec<String> = before
            .pools
            .iter()
            .filter(|p| p.state == PoolState::Started)
            .map(|p| p.name.clone())
            .collect();
        if !restart {
            say("no restart needed");
            self.journal_patched(report).await;
            return Event::Operated(report_of(&before, &running));
        }
        let boot_before = match (asked_on, before.boot.clone()) {
            (Some(b), _) => b,
            (None, Some(b)) => b,
            (None, None) => {
                return Event::OperationFailed(
                    "the agent cannot tell the server's boot, so a restart could not be proven: not restarted"
                        .into(),
                )
            }
        };
        if let Err(e) = self.journal_reboot(&boot_before).await {
            return Event::OperationFailed(format!(
                "could not write the run journal before the restart ({e}): not restarted"
            ));
        }
        // The lease must outlive the restart: an agent that comes back to
        // an expired lease would return the node to rotation itself.
        if let Err(e) = agent
            .renew_lease(self.run_id, p.reboot_timeout + LEASE_MARGIN)
            .await
        {
            tracing::warn!(node = %name, "could not extend the lease over the restart: {e}");
        }
        let asked = Instant::now();
        let asked_at = crate::clock::now();
        let comment = format!("farmctl run {}: {op} of {name}", self.run_id);
        let op_id = self.op_id(OpStep::Reboot);
        let first = agent
            .reboot(&op_id, &comment, p.reboot_delay, op == OperationKind::Patch)
            .await;
        match &first {
            Ok(v) if v.state == RebootState::Done => say("the server had already restarted"),
            Ok(_) => say(&format!(
                "restarting (in {}; boot {})",
                crate::human::duration(p.reboot_delay),
                boot_before.id
            )),
            // Down already (a resumed run): wait for it like any.
            Err(AgentError::Unreachable { .. } | AgentError::Timeout(_)) => {
                say("the server does not answer: waiting for it to come back")
            }
            Err(e) => return Event::OperationFailed(format!("could not restart the server: {e}")),
        }
        let deadline = asked + p.reboot_timeout;
        let (boot_after, back) = match self
            .until_new_boot(agent, &op_id, &comment, p, deadline)
            .await
        {
            Ok(b) => b,
            Err(e) => return Event::OperationFailed(e),
        };
        say(&format!(
            "back after {} (boot {})",
            crate::human::duration(back.duration_since(asked)),
            boot_after.id
        ));
        let view = match self.until_iis_runs(agent, &running, deadline).await {
            Ok(v) => v,
            Err(e) => return Event::OperationFailed(e),
        };
        report.reboot = Some(RebootReport {
            boot_before: boot_before.id.clone(),
            boot_after: boot_after.id.clone(),
            booted_at: boot_after.time(),
            asked_at,
            back_after_ms: back.duration_since(asked).as_millis() as u64,
            iis_after_ms: asked.elapsed().as_millis() as u64,
        });
        self.journal_patched(report).await;
        Event::Operated(report_of(&view, &running))
    }

    /// Asks after the restart under its id until the agent says the boot
    /// changed; when it first answered from the new boot.
    async fn until_new_boot(
        &self,
        agent: &dyn AgentApi,
        op_id: &str,
        comment: &str,
        p: &PatchSettings,
        deadline: Instant,
    ) -> Result<(BootView, Instant), String> {
        let name = &self.farm.node(self.node).name;
        loop {
            let last = match agent.reboot(op_id, comment, p.reboot_delay, false).await {
                Ok(v) if v.state == RebootState::Done => match v.boot_now {
                    Some(b) => return Ok((b, Instant::now())),
                    None => "the agent came back without a boot id".to_string(),
                },
                Ok(_) => "still on its old boot".to_string(),
                Err(e) => e.to_string(),
            };
            if Instant::now() + BACK_POLL > deadline {
                return Err(format!(
                    "{name} did not come back within patch.reboot_timeout ({}; last: {last}); \
                     it stays out of rotation: check its console, and that the farm-agent \
                     service starts automatically (`sc qc farm-agent`: START_TYPE AUTO_START); \
                     once it serves again, `farmctl undrain -i <inventory> {name}` returns it",
                    crate::human::duration(p.reboot_timeout)
                ));
            }
            tokio::time::sleep(BACK_POLL).await;
        }
    }

    /// Looks at the node until W3SVC and WAS run and every pool that ran
    /// before has started again (services start after the agent).
    async fn until_iis_runs(
        &self,
        agent: &dyn AgentApi,
        running: &[String],
        deadline: Instant,
    ) -> Result<crate::agent::NodeView, String> {
        loop {
            let last = match agent.status().await {
                Ok(v) => {
                    let stopped: Vec<&str> = running
                        .iter()
                        .filter(|p| v.pool(p).is_none_or(|x| x.state != PoolState::Started))
                        .map(String::as_str)
                        .collect();
                    if v.iis_running() && stopped.is_empty() {
                        return Ok(v);
                    }
                    if v.iis_running() {
                        format!("pools not started: {}", stopped.join(", "))
                    } else {
                        "W3SVC and WAS not running".to_string()
                    }
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() + BACK_POLL > deadline {
                return Err(format!(
                    "IIS did not run within patch.reboot_timeout after the restart ({last})"
                ));
            }
            tokio::time::sleep(BACK_POLL).await;
        }
    }

    async fn journal_reboot(&self, boot: &BootView) -> std::io::Result<()> {
        let Some(j) = self.journal else { return Ok(()) };
        j.append(&crate::journal::Record::Reboot(
            crate::journal::RebootRecord {
                t: crate::clock::now(),
                node: self.farm.node(self.node).name.clone(),
                boot_before: boot.clone(),
            },
        ))
        .await
    }

    async fn journal_patched(&self, report: &NodeReport) {
        let Some(j) = self.journal else { return };
        let record = crate::journal::Record::Patched(crate::journal::PatchedRecord {
            t: crate::clock::now(),
            node: report.name.clone(),
            updates: report.updates.clone(),
            reboot: report.reboot.clone(),
        });
        if let Err(e) = j.append(&record).await {
            tracing::warn!(
                "could not journal what the {} did on {}: {e}",
                self.settings.operation,
                report.name
            );
        }
    }
}

/// The node after its restart as an operation's report: its services and
/// the pools that ran before (the machine checks they run again).
fn report_of(view: &crate::agent::NodeView, running: &[String]) -> OperationReport {
    OperationReport {
        success: true,
        services: view.services.clone(),
        pools: running
            .iter()
            .map(|name| {
                let now = view.pool(name);
                PoolChange {
                    name: name.clone(),
                    pids_before: Vec::new(),
                    pids_after: now.map(|p| p.pids.clone()).unwrap_or_default(),
                    state_after: now.map_or(PoolState::Unknown, |p| p.state),
                    had_no_worker: true,
                }
            })
            .collect(),
        ..Default::default()
    }
}
