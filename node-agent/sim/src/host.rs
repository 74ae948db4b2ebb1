//! The simulated server under the simulated IIS: its boots, updates and
//! restarts. A restart really ends the agent's process (what the sandbox
//! sees as the server going down) and the sandbox starts a new one after
//! the sim file's `boot_time`: nothing in memory survives, as on a real
//! server. What must outlive a boot — the boot's id, the updates
//! installed, a restart under way — is kept in the agent's state
//! directory (`sim-machine.json`), as Windows keeps it on its disk.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use farm_iis::host::{
    Boot, Host, Installed, RebootPending, Update, UpdateFilter, UpdateResult, Updates,
};
use farm_iis::IisError;

use crate::config::SimFile;
use crate::Simulator;

pub use farm_proto::simhost::{Machine, Rebooting, MACHINE_FILE, REBOOT_EXIT_CODE};

/// What a simulated restart does to the process once asked.
#[derive(Clone)]
pub enum RebootAction {
    /// Ends the process with [`REBOOT_EXIT_CODE`] (the agent binary).
    ExitProcess,
    /// Calls this instead (tests running an agent inside their process).
    Call(Arc<dyn Fn() + Send + Sync>),
}

pub struct SimHost {
    sim: Simulator,
    cfg: SimFile,
    state_dir: Option<PathBuf>,
    machine: Mutex<Machine>,
    action: RebootAction,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl SimHost {
    /// The server as it starts: a new boot when there is no record yet or
    /// a restart was under way (then IIS comes up cold, and the faults an
    /// update brought take effect), the same boot as before otherwise (the
    /// agent alone restarted).
    pub fn start(
        sim: &Simulator,
        cfg: &SimFile,
        state_dir: Option<&Path>,
        action: RebootAction,
    ) -> SimHost {
        let before = state_dir.and_then(Machine::load);
        let new_boot = before
            .as_ref()
            .is_none_or(|m| m.rebooting.is_some() || m.boot_id.is_empty());
        let mut machine = before.unwrap_or_default();
        if new_boot {
            let after_restart = machine.rebooting.take().is_some();
            machine.boots += 1;
            machine.boot_time_unix_ms = now_ms();
            machine.boot_id = format!(
                "{}-{}-{}",
                cfg.node, machine.boots, machine.boot_time_unix_ms
            );
            // A restart finishes what the installs left.
            machine.pending_reboot = false;
            if let Some(dir) = state_dir {
                if let Err(e) = machine.save(dir) {
                    tracing::warn!("could not record the simulated server's boot: {e}");
                }
            }
            if after_restart {
                sim.event("boot", &machine.boot_id);
                sim.cold_start();
                if cfg.patch_faults.after_reboot.any() {
                    tracing::info!(faults = ?cfg.patch_faults.after_reboot, "the server came back with its application broken (patch_faults.after_reboot)");
                    sim.set_every_pool_faults(&cfg.patch_faults.after_reboot);
                }
            }
        }
        SimHost {
            sim: sim.clone(),
            cfg: cfg.clone(),
            state_dir: state_dir.map(Path::to_path_buf),
            machine: Mutex::new(machine),
            action,
        }
    }

    fn machine(&self) -> std::sync::MutexGuard<'_, Machine> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, m: &Machine) {
        if let Some(dir) = &self.state_dir {
            if let Err(e) = m.save(dir) {
                tracing::warn!("could not record the simulated server's state: {e}");
            }
        }
    }

    fn applicable(&self, filter: &UpdateFilter) -> Vec<(Update, crate::config::SimUpdate)> {
        let installed = self.machine().installed.clone();
        self.cfg
            .updates
            .iter()
            .filter_map(|u| {
                let kb = farm_proto::updates::kb(&u.kb)?;
                let update = Update {
                    id: format!("sim-{kb}"),
                    title: if u.title.is_empty() {
                        format!("Simulated update ({kb})")
                    } else {
                        u.title.clone()
                    },
                    kb,
                    classification: farm_proto::updates::classification(&u.classification)
                        .map_or(u.classification.clone(), |c| c.0.to_string()),
                    size_bytes: u.size_mb * 1024 * 1024,
                    reboot_required: u.reboot,
                };
                (!installed.contains(&update.kb) && filter.takes(&update))
                    .then(|| (update, u.clone()))
            })
            .collect()
    }
}

#[async_trait]
impl Host for SimHost {
    fn backend(&self) -> &'static str {
        "sim"
    }

    async fn boot(&self) -> Option<Boot> {
        let m = self.machine();
        Some(Boot {
            id: m.boot_id.clone(),
            time_unix_ms: m.boot_time_unix_ms,
        })
    }

    async fn reboot_pending(&self) -> RebootPending {
        let pending = self.machine().pending_reboot;
        RebootPending {
            pending,
            reasons: if pending {
                vec!["sim".into()]
            } else {
                Vec::new()
            },
            notes: Vec::new(),
        }
    }

    async fn search(&self, filter: &UpdateFilter) -> Result<Updates, IisError> {
        Ok(Updates {
            updates: self
                .applicable(filter)
                .into_iter()
                .map(|(u, _)| u)
                .collect(),
            source: "sim".into(),
            notes: Vec::new(),
        })
    }

    async fn install(
        &self,
        filter: &UpdateFilter,
        timeout: Duration,
        progress: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Installed, IisError> {
        if self.cfg.patch_faults.install_hangs {
            progress("installing: the install does not end (patch_faults.install_hangs)".into());
            tokio::time::sleep(timeout).await;
            return Err(IisError::Timeout {
                command: "install updates".into(),
                after: timeout,
            });
        }
        let todo = self.applicable(filter);
        let mut out = Installed::default();
        let total = todo.len();
        let work = async {
            for (i, (u, sim)) in todo.into_iter().enumerate() {
                progress(format!(
                    "installing {} ({} of {total}): {}",
                    u.kb,
                    i + 1,
                    u.title
                ));
                tokio::time::sleep(sim.install_time).await;
                let failed = sim.fails.clone();
                if failed.is_none() {
                    let mut m = self.machine();
                    m.installed.push(u.kb.clone());
                    m.pending_reboot |= u.reboot_required;
                    let snapshot = m.clone();
                    drop(m);
                    self.save(&snapshot);
                }
                out.results.push(UpdateResult {
                    kb: u.kb,
                    title: u.title,
                    result: if failed.is_some() {
                        "failed"
                    } else {
                        "succeeded"
                    }
                    .into(),
                    reboot_required: failed.is_none() && u.reboot_required,
                    hresult: failed,
                });
            }
        };
        if tokio::time::timeout(timeout, work).await.is_err() {
            return Err(IisError::Timeout {
                command: "install updates".into(),
                after: timeout,
            });
        }
        out.reboot_required = self.machine().pending_reboot;
        self.sim.event(
            "install",
            &out.results
                .iter()
                .map(|r| format!("{} {}", r.kb, r.result))
                .collect::<Vec<_>>()
                .join(", "),
        );
        Ok(out)
    }

    async fn reboot(&self, comment: &str, delay: Duration, _updates: bool) -> Result<(), IisError> {
        if self.state_dir.is_none() {
            return Err(IisError::Other(
                "a simulated restart needs the agent's --state-dir (the boot must outlive the process)"
                    .into(),
            ));
        }
        let snapshot = {
            let mut m = self.machine();
            if m.rebooting.is_none() {
                m.rebooting = Some(Rebooting {
                    asked_unix_ms: now_ms(),
                    boot_time_ms: self.cfg.boot_time.as_millis() as u64,
                    never: self.cfg.patch_faults.never_returns,
                });
            }
            m.clone()
        };
        self.save(&snapshot);
        self.sim.event("reboot", comment);
        let (sim, action) = (self.sim.clone(), self.action.clone());
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            tracing::warn!("the simulated server restarts now");
            sim.shutdown();
            match action {
                RebootAction::ExitProcess => std::process::exit(REBOOT_EXIT_CODE),
                RebootAction::Call(f) => f(),
            }
        });
        Ok(())
    }

    fn service_start(&self) -> Option<String> {
        // The sandbox starts the agent again after every boot.
        Some("auto".into())
    }
}
