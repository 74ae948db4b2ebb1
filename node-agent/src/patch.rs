//! Patch night on the agent's side: what updates apply, installing them
//! (through the server's [`Host`], or the agent's own `patch.command`),
//! and what the Status call says of the server's boot and pending restart.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use farm_iis::host::{Boot, Host, Installed, RebootPending, UpdateFilter, Updates};
use farm_iis::IisError;

use crate::config::PatchConfig;
use crate::ops::{OpResult, ProcedureStep, ProgressSink};
use crate::runner::CommandRunner;

/// How long a read of the pending-restart signals is reused by Status.
const PENDING_FRESH: Duration = Duration::from_secs(30);

pub struct Patching {
    host: Arc<dyn Host>,
    config: PatchConfig,
    runner: Arc<dyn CommandRunner>,
    /// Updates that applied at the last search, and when (Unix ms).
    last_search: Mutex<Option<(u32, u64)>>,
    pending: Mutex<Option<(Instant, RebootPending)>>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

impl Patching {
    pub fn new(host: Arc<dyn Host>, config: PatchConfig, runner: Arc<dyn CommandRunner>) -> Self {
        Self {
            host,
            config,
            runner,
            last_search: Mutex::new(None),
            pending: Mutex::new(None),
        }
    }

    pub fn host(&self) -> &dyn Host {
        &*self.host
    }

    pub fn config(&self) -> &PatchConfig {
        &self.config
    }

    pub async fn boot(&self) -> Option<Boot> {
        self.host.boot().await
    }

    /// The pending-restart signals, read at most every 30 s.
    pub async fn pending(&self) -> RebootPending {
        if let Some((at, p)) = &*self.pending.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < PENDING_FRESH {
                return p.clone();
            }
        }
        let fresh = self.host.reboot_pending().await;
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), fresh.clone()));
        fresh
    }

    /// The updates at the last search: (count, when in Unix ms).
    pub fn last_search(&self) -> Option<(u32, u64)> {
        *self.last_search.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn searched(&self, count: usize) {
        *self.last_search.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((count as u32, now_ms()));
    }

    pub async fn search(&self, filter: &UpdateFilter) -> Result<Updates, IisError> {
        if self.config.command.is_some() {
            return Ok(Updates {
                updates: Vec::new(),
                source: "command".into(),
                notes: vec![
                    "this agent installs with its patch.command, which cannot list the updates it will take"
                        .into(),
                ],
            });
        }
        let found = self.host.search(filter).await?;
        self.searched(found.updates.len());
        Ok(found)
    }

    /// Installs what applies; the result names each update and whether
    /// the server must restart now (the install's word, or any pending
    /// signal after it).
    pub async fn install(&self, filter: &UpdateFilter, progress: &ProgressSink) -> OpResult {
        let started = Instant::now();
        let say = |line: String| progress.send(ProcedureStep::Install, line);
        let installed = match &self.config.command {
            Some(argv) => self.command(argv, &say).await,
            None => {
                self.host
                    .install(filter, self.config.install_timeout, &say)
                    .await
            }
        };
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let fail = |error: String, updates| OpResult {
            success: false,
            error: Some(error),
            failed_step: Some(ProcedureStep::Install),
            pools: Vec::new(),
            services: Vec::new(),
            duration: started.elapsed(),
            updates,
            reboot_required: false,
        };
        let installed = match installed {
            Ok(i) => i,
            Err(e) => return fail(format!("installing the updates failed: {e}"), Vec::new()),
        };
        let pending = self.pending().await;
        let reboot_required = installed.reboot_required || pending.pending;
        if let Some(failed) = installed.failures() {
            let mut r = fail(
                format!("updates did not install: {failed}"),
                installed.results,
            );
            r.reboot_required = reboot_required;
            return r;
        }
        if self.config.command.is_none() {
            self.searched(0);
        }
        say(format!(
            "{} update(s) installed{}",
            installed.results.len(),
            if reboot_required {
                format!(
                    "; a restart is needed ({})",
                    if pending.reasons.is_empty() {
                        "the install says so".to_string()
                    } else {
                        pending.reasons.join(", ")
                    }
                )
            } else {
                String::new()
            }
        ));
        OpResult {
            success: true,
            error: None,
            failed_step: None,
            pools: Vec::new(),
            services: Vec::new(),
            duration: started.elapsed(),
            updates: installed.results,
            reboot_required,
        }
    }

    /// `patch.command`: 0 and 0x240006 done, 3010 and 1641 done with a
    /// restart needed, anything else failed.
    async fn command(
        &self,
        argv: &[String],
        say: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Installed, IisError> {
        let Some((program, args)) = argv.split_first() else {
            return Err(IisError::Other("patch.command is empty".into()));
        };
        say(format!("running patch.command {program}"));
        let out = self
            .runner
            .run(program, args, self.config.install_timeout)
            .await
            .map_err(|e| IisError::Other(e.to_string()))?;
        let reboot_required = match out.code {
            Some(0) | Some(2_359_302) => false,
            Some(3010) | Some(1641) => true,
            code => {
                let text = out.text();
                let tail: String = text
                    .chars()
                    .rev()
                    .take(400)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return Err(IisError::Command {
                    command: program.clone(),
                    code: code.unwrap_or(-1),
                    message: tail.trim().to_string(),
                });
            }
        };
        Ok(Installed {
            results: Vec::new(),
            reboot_required,
            notes: vec![format!("patch.command exited {}", out.code.unwrap_or(0))],
        })
    }
}
