//! Load balancer members this agent drives with local Windows tools, for
//! the controller's `arr` and `nlb` drivers: a server of an IIS ARR web
//! farm (this agent runs on the ARR server) or this node in its Windows
//! NLB cluster. Everything runs through the [`CommandRunner`]: PowerShell
//! with a fixed script or cmdlet, argv only.
pub mod arr;
pub mod nlb;

use farm_proto::domain::{ArrDrainState, LbMemberAction, LbMemberKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use farm_proto::v1 as pb;

use crate::runner::{CommandRunner, Output};

#[derive(Debug, thiserror::Error)]
pub enum LbMemberError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
}

pub struct LbMembers {
    runner: Arc<dyn CommandRunner>,
    powershell: String,
    /// One PowerShell call (a drain's own -Timeout comes on top).
    timeout: Duration,
    /// This node's name in its NLB cluster.
    node: String,
    /// How the last background `Stop-NlbClusterNode -Drain` ended, when it
    /// failed: reported by the next state call.
    nlb_drain_error: Arc<Mutex<Option<String>>>,
}

impl LbMembers {
    pub fn new(
        runner: Arc<dyn CommandRunner>,
        powershell: impl Into<String>,
        timeout: Duration,
        node: impl Into<String>,
    ) -> Self {
        Self {
            runner,
            powershell: powershell.into(),
            timeout,
            node: node.into(),
            nlb_drain_error: Arc::default(),
        }
    }

    fn args(command: String) -> Vec<String> {
        vec![
            "-NoProfile".into(),
            "-NonInteractive".into(),
            "-ExecutionPolicy".into(),
            "Bypass".into(),
            "-Command".into(),
            command,
        ]
    }

    async fn powershell(
        &self,
        command: String,
        timeout: Duration,
    ) -> Result<Output, LbMemberError> {
        self.runner
            .run(&self.powershell, &Self::args(command), timeout)
            .await
            .map_err(|e| LbMemberError::Failed(e.to_string()))
    }

    pub async fn handle(
        &self,
        req: &pb::LbMemberRequest,
    ) -> Result<pb::LbMemberReply, LbMemberError> {
        let kind: LbMemberKind = req
            .kind
            .parse()
            .map_err(|e| LbMemberError::Invalid(format!("load balancer kind: {e}")))?;
        let action: LbMemberAction = req
            .action
            .parse()
            .map_err(|e| LbMemberError::Invalid(format!("action: {e}")))?;
        match kind {
            LbMemberKind::Arr => self.arr(req, action).await,
            LbMemberKind::Nlb => self.nlb(req, action).await,
        }
    }

    async fn arr(
        &self,
        req: &pb::LbMemberRequest,
        action: LbMemberAction,
    ) -> Result<pb::LbMemberReply, LbMemberError> {
        arr::check_farm(&req.farm)?;
        arr::check_server(&req.server)?;
        // An older controller sends no mode: the default, GracefulStop.
        let mode = match req.mode.as_str() {
            "" => ArrDrainState::GracefulStop,
            m => m
                .parse()
                .map_err(|e| LbMemberError::Invalid(format!("ARR drain mode: {e}")))?,
        };
        let set = arr::new_state(action, mode);
        let out = self
            .powershell(arr::script(&req.farm, &req.server, set), self.timeout)
            .await?;
        // Exit 3/4 still print their line; any other failure is PowerShell's.
        if !matches!(out.code, Some(0 | 3 | 4)) {
            return Err(LbMemberError::Failed(format!(
                "the ARR script exited with {}: {}",
                out.code.map_or("no code".into(), |c| c.to_string()),
                first_error(&out)
            )));
        }
        let c = arr::parse(&out.stdout, &req.farm, &req.server)?;
        Ok(pb::LbMemberReply {
            state: c.state,
            healthy: c.healthy,
            current_requests: c.current_requests,
            detail: out.stdout.trim().lines().last().unwrap_or("").to_string(),
        })
    }

    async fn nlb(
        &self,
        req: &pb::LbMemberRequest,
        action: LbMemberAction,
    ) -> Result<pb::LbMemberReply, LbMemberError> {
        match action {
            LbMemberAction::State => {}
            LbMemberAction::Drain => {
                // It returns when the drain is done or its timeout ran out,
                // so it runs on while the controller watches the state.
                *self
                    .nlb_drain_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                let secs = req.drain_timeout_s.max(1);
                let command = format!("Stop-NlbClusterNode -Drain -Timeout {secs}");
                let runner = self.runner.clone();
                let (program, args) = (self.powershell.clone(), Self::args(command));
                let errors = self.nlb_drain_error.clone();
                let limit = Duration::from_secs(u64::from(secs)) + self.timeout;
                tokio::spawn(async move {
                    let failed = match runner.run(&program, &args, limit).await {
                        Ok(out) if out.code == Some(0) => None,
                        Ok(out) => {
                            Some(format!("Stop-NlbClusterNode failed: {}", first_error(&out)))
                        }
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = failed {
                        tracing::warn!("{e}");
                        *errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    }
                });
            }
            LbMemberAction::Return => {
                let out = self
                    .powershell("Start-NlbClusterNode".into(), self.timeout)
                    .await?;
                if out.code != Some(0) {
                    return Err(LbMemberError::Failed(format!(
                        "Start-NlbClusterNode failed: {}",
                        first_error(&out)
                    )));
                }
            }
        }
        let out = self
            .powershell("Get-NlbClusterNode".into(), self.timeout)
            .await?;
        if out.code != Some(0) {
            return Err(LbMemberError::Failed(format!(
                "Get-NlbClusterNode failed: {}",
                first_error(&out)
            )));
        }
        let nodes = nlb::parse_nodes(&out.stdout)?;
        let me = nlb::this_node(&nodes, &self.node)?;
        let drain_error = self
            .nlb_drain_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Ok(pb::LbMemberReply {
            state: me.state.clone(),
            healthy: true,
            current_requests: -1,
            detail: match drain_error {
                Some(e) => format!("{} {} ({e})", me.name, me.state),
                None => format!("{} {}", me.name, me.state),
            },
        })
    }
}

/// The first line of stderr (PowerShell's error record), else of stdout.
fn first_error(out: &Output) -> String {
    out.stderr
        .lines()
        .chain(out.stdout.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}
